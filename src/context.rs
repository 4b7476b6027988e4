//! The state every reconcile shares.

use std::sync::Arc;

use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tracing::warn;

use crate::metrics::Metrics;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "healing-guard-operator";

/// Shared by all reconciles: the client, the event recorder and the metrics.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter::from(FIELD_MANAGER);
        let recorder = Recorder::new(client.clone(), reporter);
        Context {
            client,
            recorder,
            metrics,
        }
    }

    /// Publishes an Event about an object. A failed publish is logged, not
    /// returned: the status already holds the record and must not be redone.
    pub async fn publish<K>(&self, object: &K, event: Event)
    where
        K: Resource<DynamicType = ()>,
    {
        let reference = object.object_ref(&());
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            warn!(%error, reason = %event.reason, "could not publish event");
        }
    }
}

/// An Event to publish, decided by pure code and published after the status
/// change it describes was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: String,
    pub action: String,
    pub note: String,
}

impl PlannedEvent {
    pub fn normal(reason: &str, action: &str, note: impl Into<String>) -> Self {
        PlannedEvent {
            warning: false,
            reason: reason.into(),
            action: action.into(),
            note: note.into(),
        }
    }

    pub fn warning(reason: &str, action: &str, note: impl Into<String>) -> Self {
        PlannedEvent {
            warning: true,
            reason: reason.into(),
            action: action.into(),
            note: note.into(),
        }
    }

    pub fn into_event(self) -> Event {
        Event {
            type_: if self.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: self.reason,
            note: Some(self.note),
            action: self.action,
            secondary: None,
        }
    }
}
