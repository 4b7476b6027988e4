//! The detector's own pod watches: one per namespace that holds a guarded
//! workload, so pods elsewhere cost nothing. Each runs in its own task,
//! keeps its namespace's pods (their facts, not whole objects) in the
//! shared [`GuardedPods`], which indexes them by guarded selector and where
//! the incident controller reads them too, and tells the detector what
//! changed. Beside each, a watch of the namespace's Warning events keeps
//! them for the incidents' evidence ([`WarningEvents`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    core::Selector,
    runtime::{WatchStreamExt, watcher},
};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::{
    pod::{GuardedPods, PodFacts, PodSelector, facts_event},
    warnings::WarningEvents,
};

/// What one of the pod watches tells the detector, once the shared stores
/// hold it.
pub enum PodChange {
    /// The watch of this namespace has its first complete list.
    Synced(String),
    /// A pod of this namespace changed or went.
    Pod(String, Arc<PodFacts>),
}

/// Starts the watch for the pods of a namespace; the task ends when
/// aborted or when the detector is gone.
fn spawn_pod_watch(
    client: &Client,
    pods: &GuardedPods,
    namespace: String,
    sender: mpsc::Sender<PodChange>,
) -> AbortHandle {
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let config = watcher::Config::default().any_semantic();
    let mut filler = pods.register(&namespace);
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
            let change = match filler.apply(event) {
                watcher::Event::InitDone => PodChange::Synced(namespace.clone()),
                watcher::Event::Apply(pod) | watcher::Event::Delete(pod) => {
                    PodChange::Pod(namespace.clone(), pod)
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

/// The detector's pod watches, one per namespace.
pub struct PodWatches {
    client: Client,
    sender: mpsc::Sender<PodChange>,
    pods: GuardedPods,
    warnings: WarningEvents,
    watches: HashMap<String, PodWatch>,
}

struct PodWatch {
    handle: AbortHandle,
    /// The namespace's Warning event watch, which lives as long.
    warnings: AbortHandle,
    /// Its first complete LIST has arrived: before that, a missing pod
    /// may only not be loaded yet. Kept here as well as in the store,
    /// since it follows the channel's order: the store is marked before
    /// its `Synced` is sent, and a stopped watch's last changes may still
    /// be queued ahead of it.
    synced: bool,
}

impl PodWatches {
    pub fn new(
        client: Client,
        pods: GuardedPods,
        warnings: WarningEvents,
        sender: mpsc::Sender<PodChange>,
    ) -> Self {
        PodWatches {
            client,
            sender,
            pods,
            warnings,
            watches: HashMap::new(),
        }
    }

    /// Watches exactly the namespaces of the `desired` selectors, and
    /// indexes their pods by those selectors.
    pub fn sync(&mut self, desired: BTreeMap<PodSelector, Selector>) {
        let namespaces: BTreeSet<&str> = desired.keys().map(|k| k.namespace.as_str()).collect();
        let (pods, warnings) = (&self.pods, &self.warnings);
        self.watches.retain(|namespace, watch| {
            let keep = namespaces.contains(namespace.as_str());
            if !keep {
                watch.handle.abort();
                watch.warnings.abort();
                pods.unregister(namespace);
                warnings.unwatch(namespace);
            }
            keep
        });
        for namespace in namespaces {
            if !self.watches.contains_key(namespace) {
                tracing::debug!(namespace, "watching pods");
                let handle = spawn_pod_watch(
                    &self.client,
                    &self.pods,
                    namespace.to_owned(),
                    self.sender.clone(),
                );
                let watch = PodWatch {
                    handle,
                    warnings: self.warnings.watch(&self.client, namespace),
                    synced: false,
                };
                self.watches.insert(namespace.to_owned(), watch);
            }
        }
        self.pods.select(&desired);
    }

    /// Takes note of a change; None when it is of a watch stopped since, or
    /// a pod's change before its watch has synced (nothing to evaluate yet).
    pub fn apply(&mut self, change: PodChange) -> Option<PodChange> {
        match &change {
            PodChange::Synced(namespace) => self.watches.get_mut(namespace)?.synced = true,
            PodChange::Pod(namespace, _) => {
                if !self.watches.get(namespace)?.synced {
                    return None;
                }
            }
        }
        Some(change)
    }

    /// The pods of a selector, once its namespace's watch has synced.
    pub fn pods(&self, key: &PodSelector) -> Option<Vec<Arc<PodFacts>>> {
        self.pods.pods(key, |_| true)
    }

    /// How many namespaces are watched.
    pub fn watched(&self) -> usize {
        self.watches.len()
    }

    /// Stops every watch.
    pub fn stop(&self) {
        for (namespace, watch) in &self.watches {
            watch.handle.abort();
            watch.warnings.abort();
            self.pods.unregister(namespace);
            self.warnings.unwatch(namespace);
        }
    }
}
