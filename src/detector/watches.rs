//! The detector's own watches: one per guarded workload's pod selector, so
//! unguarded pods cost nothing. Each runs in its own task and forwards its
//! events, tagged with its selector, to the detector, which folds them into
//! [`PodWatches`].

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::workload::PodSelector;

/// An event from one of the pod watches.
pub struct PodEvent(pub PodSelector, pub watcher::Event<Pod>);

/// Starts the watch for the pods of a selector; the task ends when aborted
/// or when the detector is gone.
fn spawn_pod_watch(
    client: &Client,
    key: PodSelector,
    sender: mpsc::Sender<PodEvent>,
) -> AbortHandle {
    let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
    let config = watcher::Config::default()
        .any_semantic()
        .labels(&key.selector);
    let task = tokio::spawn(async move {
        let mut events = watcher(api, config)
            .default_backoff()
            .modify(|pod| pod.metadata.managed_fields = None)
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if sender.send(PodEvent(key.clone(), event)).await.is_err() {
                        return;
                    }
                }
                // The watcher retries with backoff; an undecodable object or a
                // lost connection must not end detection.
                Err(error) => tracing::warn!(%error, "pod watch error; retrying"),
            }
        }
    });
    task.abort_handle()
}

/// One pod watch: its task, and the pods it has seen.
struct PodWatch {
    handle: AbortHandle,
    /// Its first complete LIST has arrived: before that, a missing pod
    /// may only not be loaded yet.
    synced: bool,
    pods: HashMap<String, Pod>,
    seen_in_init: Option<BTreeSet<String>>,
}

/// What a pod event means for the workloads of its selector.
pub enum PodChange {
    /// Nothing to evaluate yet.
    Nothing,
    /// The watch of this selector has its first complete list.
    Synced(PodSelector),
    /// A pod of this selector changed or went.
    Pod(PodSelector, Box<Pod>),
}

/// The detector's pod watches, one per selector, and their pods.
pub struct PodWatches {
    client: Client,
    sender: mpsc::Sender<PodEvent>,
    watches: HashMap<PodSelector, PodWatch>,
}

impl PodWatches {
    pub fn new(client: Client, sender: mpsc::Sender<PodEvent>) -> Self {
        PodWatches {
            client,
            sender,
            watches: HashMap::new(),
        }
    }

    /// Watches exactly the `desired` selectors: new ones start, the rest stop.
    pub fn sync(&mut self, desired: BTreeSet<PodSelector>) {
        self.watches.retain(|key, watch| {
            let keep = desired.contains(key);
            if !keep {
                watch.handle.abort();
            }
            keep
        });
        for key in desired {
            if !self.watches.contains_key(&key) {
                tracing::debug!(%key, "watching pods");
                let handle = spawn_pod_watch(&self.client, key.clone(), self.sender.clone());
                let watch = PodWatch {
                    handle,
                    synced: false,
                    pods: HashMap::new(),
                    seen_in_init: None,
                };
                self.watches.insert(key, watch);
            }
        }
    }

    /// Folds an event into its watch's pods.
    pub fn apply(&mut self, PodEvent(key, event): PodEvent) -> PodChange {
        let Some(watch) = self.watches.get_mut(&key) else {
            return PodChange::Nothing;
        };
        let changed = match event {
            watcher::Event::Init => {
                watch.seen_in_init = Some(BTreeSet::new());
                return PodChange::Nothing;
            }
            watcher::Event::InitApply(pod) => {
                let name = pod.name_any();
                if let Some(seen) = &mut watch.seen_in_init {
                    seen.insert(name.clone());
                }
                watch.pods.insert(name, pod);
                return PodChange::Nothing;
            }
            watcher::Event::InitDone => {
                let seen = watch.seen_in_init.take().unwrap_or_default();
                watch.pods.retain(|name, _| seen.contains(name));
                watch.synced = true;
                return PodChange::Synced(key);
            }
            watcher::Event::Apply(pod) => {
                watch.pods.insert(pod.name_any(), pod.clone());
                pod
            }
            watcher::Event::Delete(pod) => {
                watch.pods.remove(&pod.name_any());
                pod
            }
        };
        if watch.synced {
            PodChange::Pod(key, Box::new(changed))
        } else {
            PodChange::Nothing
        }
    }

    /// The pods of a selector, once its watch has synced.
    pub fn pods(&self, key: &PodSelector) -> Option<impl Iterator<Item = &Pod>> {
        self.watches
            .get(key)
            .filter(|w| w.synced)
            .map(|w| w.pods.values())
    }

    /// How many selectors are watched.
    pub fn watched(&self) -> usize {
        self.watches.len()
    }

    /// Stops every watch.
    pub fn stop(&self) {
        for watch in self.watches.values() {
            watch.handle.abort();
        }
    }
}
