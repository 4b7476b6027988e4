//! The state every reconcile shares: the client, the event recorder, the
//! metrics, and the shared watches (one per resource kind).

use std::{future::Future, sync::Arc};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{
    Client, Resource,
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
};
use tracing::warn;

use crate::{
    authority::Remediators,
    crd::{EscalationPolicy, Incident, NotificationChannel, RemediationPolicy},
    k8s::{Scope, backoff::Backoffs, shared::Shared},
    leader::{Fence, Fenced},
    metrics::Metrics,
    names::FIELD_MANAGER,
    signals::prober::{ProbeHandles, ProbeStates},
    workload::Workload,
};

/// One watch per kind the operator reads, each a store and a fan-out of
/// changes; the controllers and the detector all read these.
#[derive(Clone)]
pub struct Watches {
    pub incidents: Shared<Incident>,
    pub policies: Shared<RemediationPolicy>,
    pub deployments: Shared<Deployment>,
    pub statefulsets: Shared<StatefulSet>,
    pub channels: Shared<NotificationChannel>,
    pub escalations: Shared<EscalationPolicy>,
}

impl Watches {
    /// The watches of everything in `scope`, and the future that drives
    /// them (until dropped).
    pub fn start(client: &Client, scope: &Scope) -> (Self, impl Future<Output = ()> + use<>) {
        let config = || watcher::Config::default().any_semantic();
        let (incidents, incidents_driver) = Shared::watch(scope.api(client), config());
        let (policies, policies_driver) = Shared::watch(scope.api(client), config());
        let (deployments, deployments_driver) = Shared::watch(scope.api(client), config());
        let (statefulsets, statefulsets_driver) = Shared::watch(scope.api(client), config());
        let (channels, channels_driver) = Shared::watch(scope.api(client), config());
        let (escalations, escalations_driver) = Shared::watch(scope.api(client), config());
        let drivers = async move {
            tokio::join!(
                incidents_driver,
                policies_driver,
                deployments_driver,
                statefulsets_driver,
                channels_driver,
                escalations_driver
            );
        };
        (
            Watches {
                incidents,
                policies,
                deployments,
                statefulsets,
                channels,
                escalations,
            },
            drivers,
        )
    }
}

impl Watches {
    /// The Deployments and StatefulSets the stores hold, of one namespace
    /// (every namespace: None), as workloads.
    pub fn workloads(&self, namespace: Option<&str>) -> Vec<Workload> {
        let ours = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            namespace.is_none_or(|ns| meta.namespace.as_deref() == Some(ns))
        };
        let deployments = self.deployments.store().state_filter(|d| ours(&d.metadata));
        let statefulsets = self
            .statefulsets
            .store()
            .state_filter(|s| ours(&s.metadata));
        deployments
            .into_iter()
            .map(Workload::Deployment)
            .chain(statefulsets.into_iter().map(Workload::StatefulSet))
            .collect()
    }

    /// Waits until every store holds its first complete LIST: before that,
    /// a missing policy or incident may only not be loaded yet.
    pub async fn ready(&self) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        self.incidents.store().wait_until_ready().await?;
        self.policies.store().wait_until_ready().await?;
        self.deployments.store().wait_until_ready().await?;
        self.statefulsets.store().wait_until_ready().await?;
        self.channels.store().wait_until_ready().await?;
        self.escalations.store().wait_until_ready().await
    }
}

/// Shared by all reconciles.
#[derive(Clone)]
pub struct Context {
    /// The operator's own identity: reads what it watches, writes its own kinds.
    pub client: Client,
    /// Acting as a namespace's remediator: every change in a namespace.
    pub remediators: Arc<Remediators>,
    /// For the receivers of notifications (the same TLS provider as kube's).
    pub http: reqwest::Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub watches: Watches,
    /// Retry delays of the objects whose last reconcile failed.
    pub backoffs: Arc<Backoffs>,
    /// The gate every write passes: only a current leader writes.
    pub fence: Arc<Fence>,
    /// The latest state of every running probe.
    pub probes: Arc<ProbeStates>,
    /// The channels being sent to now, so that their messages are not
    /// taken for ones a stopped process left in doubt.
    pub sending: Arc<crate::communication::in_flight::InFlight>,
    /// One rate limit and queue per channel, across incidents.
    pub channel_limits: Arc<crate::communication::channel_limits::ChannelLimits>,
    /// The pods of guarded workloads, which the detector's pod watches keep.
    pub pods: crate::pod::GuardedPods,
    /// The Warning events of the same namespaces, for evidence.
    pub warnings: crate::warnings::WarningEvents,
    /// Each policy generation's problems, checked once.
    pub checked: Arc<crate::validation::Checked>,
}

/// What the operator was started with that changes what it does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// Copy the failing container's last log lines into the evidence. Off by
    /// default: logs may hold what should not be in an Incident, and reading
    /// them needs `pods/log`.
    pub capture_logs: bool,
}

impl Context {
    pub fn new(
        (client, remediators): (Client, Remediators),
        http: reqwest::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        watches: Watches,
        fence: Arc<Fence>,
    ) -> Self {
        let reporter = Reporter::from(FIELD_MANAGER);
        let recorder = Recorder::new(client.clone(), reporter);
        Context {
            client,
            remediators: Arc::new(remediators),
            http,
            settings,
            recorder,
            metrics,
            watches,
            backoffs: Arc::default(),
            fence,
            probes: Arc::default(),
            sending: Arc::default(),
            channel_limits: Arc::default(),
            pods: crate::pod::GuardedPods::default(),
            warnings: crate::warnings::WarningEvents::default(),
            checked: Arc::default(),
        }
    }

    /// A client acting as the remediator of `namespace` (the account a
    /// policy names, else the default).
    pub fn remediator(
        &self,
        namespace: &str,
        account: Option<&str>,
    ) -> Result<Client, crate::authority::AuthorityError> {
        self.remediators.client(namespace, account)
    }

    /// The handles the probes run with.
    pub fn probe_handles(&self) -> ProbeHandles {
        ProbeHandles {
            remediators: self.remediators.clone(),
            http: self.http.clone(),
            states: self.probes.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The one gate of every write: Ok while this replica is the current
    /// leader (or does not elect); a dropped write is counted.
    pub fn may_write(&self) -> Result<(), Fenced> {
        self.fence.check().inspect_err(|_| {
            self.metrics.fenced_writes.inc();
        })
    }

    /// Publishes an Event about an object. A failed publish is logged, not
    /// returned: the status already holds the record and must not be redone.
    pub async fn publish<K>(&self, object: &K, event: Event)
    where
        K: Resource<DynamicType = ()>,
    {
        if self.may_write().is_err() {
            return;
        }
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
