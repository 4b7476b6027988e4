//! The detector's own watches: one per guarded workload's pod selector, so
//! unguarded pods cost nothing. Each runs in its own task, keeps its pods
//! (their facts, not whole objects) in a store of the shared
//! [`GuardedPods`], where the incident controller reads them too, and tells
//! the detector what changed, tagged with its selector.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::pod::{GuardedPods, PodFacts, PodSelector, facts_event};

/// What one of the pod watches tells the detector, once its store holds it.
pub enum PodChange {
    /// The watch of this selector has its first complete list.
    Synced(PodSelector),
    /// A pod of this selector changed or went.
    Pod(PodSelector, Box<PodFacts>),
}

/// Starts the watch for the pods of a selector; the task ends when aborted
/// or when the detector is gone.
fn spawn_pod_watch(
    client: &Client,
    pods: &GuardedPods,
    key: PodSelector,
    sender: mpsc::Sender<PodChange>,
) -> AbortHandle {
    let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
    let config = watcher::Config::default()
        .any_semantic()
        .labels(&key.selector);
    let mut filler = pods.register(key.clone());
    let task = tokio::spawn(async move {
        let mut events = watcher(api, config)
            .default_backoff()
            .map(|event| event.map(facts_event))
            .boxed();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                // The watcher retries with backoff; an undecodable object or a
                // lost connection must not end detection.
                Err(error) => {
                    tracing::warn!(%error, "pod watch error; retrying");
                    continue;
                }
            };
            filler.apply(&event);
            let change = match event {
                watcher::Event::InitDone => PodChange::Synced(key.clone()),
                watcher::Event::Apply(pod) | watcher::Event::Delete(pod) => {
                    PodChange::Pod(key.clone(), Box::new(pod))
                }
                watcher::Event::Init | watcher::Event::InitApply(_) => continue,
            };
            if sender.send(change).await.is_err() {
                return;
            }
        }
    });
    task.abort_handle()
}

/// The detector's pod watches, one per selector.
pub struct PodWatches {
    client: Client,
    sender: mpsc::Sender<PodChange>,
    pods: GuardedPods,
    watches: HashMap<PodSelector, PodWatch>,
}

struct PodWatch {
    handle: AbortHandle,
    /// Its first complete LIST has arrived: before that, a missing pod
    /// may only not be loaded yet.
    synced: bool,
}

impl PodWatches {
    pub fn new(client: Client, pods: GuardedPods, sender: mpsc::Sender<PodChange>) -> Self {
        PodWatches {
            client,
            sender,
            pods,
            watches: HashMap::new(),
        }
    }

    /// Watches exactly the `desired` selectors: new ones start, the rest stop.
    pub fn sync(&mut self, desired: BTreeSet<PodSelector>) {
        let pods = &self.pods;
        self.watches.retain(|key, watch| {
            let keep = desired.contains(key);
            if !keep {
                watch.handle.abort();
                pods.unregister(key);
            }
            keep
        });
        for key in desired {
            if !self.watches.contains_key(&key) {
                tracing::debug!(%key, "watching pods");
                let handle =
                    spawn_pod_watch(&self.client, &self.pods, key.clone(), self.sender.clone());
                let watch = PodWatch {
                    handle,
                    synced: false,
                };
                self.watches.insert(key, watch);
            }
        }
    }

    /// Takes note of a change; None when it is of a watch stopped since, or
    /// a pod's change before its watch has synced (nothing to evaluate yet).
    pub fn apply(&mut self, change: PodChange) -> Option<PodChange> {
        match &change {
            PodChange::Synced(key) => self.watches.get_mut(key)?.synced = true,
            PodChange::Pod(key, _) => {
                if !self.watches.get(key)?.synced {
                    return None;
                }
            }
        }
        Some(change)
    }

    /// The pods of a selector, once its watch has synced.
    pub fn pods(&self, key: &PodSelector) -> Option<Vec<std::sync::Arc<PodFacts>>> {
        self.watches.get(key).filter(|w| w.synced)?;
        self.pods.pods(key, |_| true)
    }

    /// How many selectors are watched.
    pub fn watched(&self) -> usize {
        self.watches.len()
    }

    /// Stops every watch.
    pub fn stop(&self) {
        for (key, watch) in &self.watches {
            watch.handle.abort();
            self.pods.unregister(key);
        }
    }
}
