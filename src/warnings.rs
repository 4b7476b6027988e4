//! The Warning events of the namespaces that hold guarded workloads, kept as
//! they change: one watch per namespace, beside its pod watch, started and
//! stopped with it. An incident's evidence reads them here instead of
//! listing them: a field-selected LIST of events is a scan of every event of
//! the namespace in the API server's cache (about 0.12 s at 10,000 pods,
//! where each pod left a `Scheduled` event), and it stood on the way to the
//! first step.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::{
    Api, Client,
    api::ObjectMeta,
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use tokio::task::AbortHandle;

/// The Warning events of each watched namespace.
#[derive(Clone, Default)]
pub struct WarningEvents {
    namespaces: Arc<RwLock<HashMap<String, NamespaceWarnings>>>,
}

struct NamespaceWarnings {
    store: Store<Event>,
    /// Its first complete list has arrived.
    synced: Arc<AtomicBool>,
}

impl WarningEvents {
    /// Starts keeping the Warning events of `namespace` (replacing any
    /// watch of it before); the task ends when aborted.
    pub fn watch(&self, client: &Client, namespace: &str) -> AbortHandle {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        self.namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                namespace.to_owned(),
                NamespaceWarnings {
                    store,
                    synced: synced.clone(),
                },
            );
        let api: Api<Event> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default()
            .fields("type=Warning")
            .any_semantic();
        let task = tokio::spawn(async move {
            let events = watcher(api, config)
                .default_backoff()
                .modify(slim)
                .reflect(writer);
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => synced.store(true, Ordering::Release),
                    Ok(_) => {}
                    // The watcher retries with backoff; until it is back,
                    // evidence may miss the newest Warning, as a list would.
                    Err(error) => tracing::warn!(%error, "Warning event watch error; retrying"),
                }
            }
        });
        task.abort_handle()
    }

    /// Forgets the Warning events of `namespace` (its watch is stopped by
    /// whoever holds its handle).
    pub fn unwatch(&self, namespace: &str) {
        self.namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(namespace);
    }

    /// The Warning events of `namespace` about any of `names`, once its
    /// watch has listed them all; None when it is not watched or not
    /// synced yet (then they are listed).
    pub fn about(&self, namespace: &str, names: &BTreeSet<String>) -> Option<Vec<Arc<Event>>> {
        let namespaces = self
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = namespaces.get(namespace)?;
        if !entry.synced.load(Ordering::Acquire) {
            return None;
        }
        Some(entry.store.state_filter(|event| {
            event
                .involved_object
                .name
                .as_ref()
                .is_some_and(|name| names.contains(name))
        }))
    }
}

/// Keeps of an event what evidence shows (its object, reason, message,
/// count and time) and what the store needs (its name and namespace).
fn slim(event: &mut Event) {
    let metadata = std::mem::take(&mut event.metadata);
    let involved = std::mem::take(&mut event.involved_object);
    *event = Event {
        metadata: ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            kind: involved.kind,
            name: involved.name,
            ..ObjectReference::default()
        },
        reason: event.reason.take(),
        message: event.message.take(),
        count: event.count,
        last_timestamp: event.last_timestamp.take(),
        type_: event.type_.take(),
        ..Event::default()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slim_keeps_what_evidence_shows_and_the_key() {
        let mut event: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-1.17", "namespace": "hg", "uid": "u",
                         "managedFields": [{"manager": "kubelet"}], "annotations": {"a": "b"}},
            "involvedObject": {"kind": "Pod", "name": "api-1", "uid": "p", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "message": "Back-off restarting failed container",
            "count": 7, "type": "Warning", "lastTimestamp": "2026-01-01T00:00:00Z",
            "source": {"component": "kubelet"}, "reportingComponent": "kubelet"
        }))
        .unwrap();
        slim(&mut event);
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "api-1.17", "namespace": "hg"},
                "involvedObject": {"kind": "Pod", "name": "api-1"},
                "reason": "BackOff", "message": "Back-off restarting failed container",
                "count": 7, "type": "Warning", "lastTimestamp": "2026-01-01T00:00:00Z"
            })
        );
    }
}
