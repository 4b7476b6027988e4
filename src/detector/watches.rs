//! The detector's own watches: one per guarded workload's pod selector, so
//! unguarded pods cost nothing. Each runs in its own task and forwards its
//! events, tagged with its selector, to the detector.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::workload::PodSelector;

/// An event from one of the pod watches.
pub struct PodEvent(pub PodSelector, pub watcher::Event<Pod>);

/// Starts the watch for the pods of a selector; the task ends when aborted
/// or when the detector is gone.
pub fn spawn_pod_watch(
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
