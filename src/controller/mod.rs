//! Runs the operator's parts: waits for the CRDs, starts the shared watches,
//! then drives the controllers (the incident pipeline, the policy and
//! notifier controllers, readiness) and the detector until shutdown. The
//! parts themselves live in their own folders; this only wires them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Client, CustomResourceExt, ResourceExt,
    api::ListParams,
    runtime::{
        Controller,
        reflector::{ObjectRef, Store},
    },
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    context::{Context, Settings, Watches},
    crd::{EscalationPolicy, Incident, NotificationChannel, RemediationPolicy, WorkloadKind},
    k8s::Scope,
    leader::Fence,
    metrics::Metrics,
    names::{BREAKER_RESET_ANNOTATION, POLICY_LABEL},
    server::Health,
    workload::Workload,
};
use crate::{
    incident,
    notifier::{self, readiness},
    policy,
};

/// Errors that stop the operator from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read {kind}: {source} (does the operator's RBAC allow it?)")]
    Forbidden {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// How often the start-up looks again for the CRDs.
const CRD_RECHECK: Duration = Duration::from_secs(2);

/// Reconciles running at once, per controller. Unbounded, a burst (1,000
/// policies or incidents created together) ran hundreds of reconciles at
/// once, each on a TLS connection of its own, which the client's pool then
/// kept: some 25 MiB of buffers for 1,000 policies. The API server answers
/// no faster with more in flight.
const INCIDENT_CONCURRENCY: u16 = 16;
const POLICY_CONCURRENCY: u16 = 8;
const NOTIFIER_CONCURRENCY: u16 = 8;
const READINESS_CONCURRENCY: u16 = 4;

/// Blocks until both kinds are served in the scope (their CRDs installed
/// and established), saying so while it waits. It reads only the kinds
/// themselves: the operator needs no access to CustomResourceDefinitions.
pub async fn wait_for_crds(client: &Client, scope: &Scope) -> Result<(), StartError> {
    let one = ListParams::default().limit(1);
    let mut said = false;
    loop {
        let policies = scope
            .api::<RemediationPolicy>(client)
            .list_metadata(&one)
            .await
            .map_err(|e| (RemediationPolicy::crd_name(), e));
        let incidents = scope
            .api::<Incident>(client)
            .list_metadata(&one)
            .await
            .map_err(|e| (Incident::crd_name(), e));
        match policies.and(incidents) {
            Ok(_) => return Ok(()),
            Err((kind, kube::Error::Api(status))) if matches!(status.code, 401 | 403) => {
                return Err(StartError::Forbidden {
                    kind,
                    source: kube::Error::Api(status),
                });
            }
            Err((kind, error)) => {
                if !said {
                    info!(crd = kind, %error, "waiting for the CRD to be installed and served");
                    said = true;
                }
                tokio::time::sleep(CRD_RECHECK).await;
            }
        }
    }
}

/// Runs the controllers (incidents, policies, the notifier) and the
/// detector until `shutdown` is cancelled: the kube client for the API, the
/// HTTP client for notification receivers and probes, and the deliveries of
/// the Alertmanager webhook. Every write passes `fence`; the caller drops this future the moment the
/// fence reports leadership lost, which cancels the work in flight.
pub async fn run(
    (client, remediators, http, alerts): (
        Client,
        crate::authority::Remediators,
        reqwest::Client,
        tokio::sync::mpsc::Receiver<crate::detector::alerts::Intake>,
    ),
    settings: Settings,
    metrics: Arc<Metrics>,
    scope: Scope,
    fence: Arc<Fence>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let (watches, drive_watches) = Watches::start(&client, &scope);
    let drive_watches = tokio::spawn(drive_watches);
    // Nothing is decided from a half-filled store.
    tokio::select! {
        ready = watches.ready() => if let Err(error) = ready {
            warn!(%error, "the shared watches stopped before they were filled");
            return;
        },
        () = shutdown.cancelled() => {
            drive_watches.abort();
            return;
        }
    }
    let _ = metrics.incident_store.set(watches.incidents.store());
    let ctx = Arc::new(Context::new(
        (client, remediators),
        http,
        settings,
        metrics,
        watches.clone(),
        fence,
    ));
    let policy_config = kube::runtime::controller::Config::default()
        .debounce(Duration::from_millis(500))
        .concurrency(POLICY_CONCURRENCY);
    // Incidents: a short debounce folds a burst of events (a rollout's
    // status updates) into one reconcile without delaying a first step; a
    // detected incident waits for the detector's status write itself
    // (`incident::reconcile`), not for a fixed delay.
    let incident_config = kube::runtime::controller::Config::default()
        .debounce(Duration::from_millis(20))
        .concurrency(INCIDENT_CONCURRENCY);

    let incidents =
        Controller::for_shared_stream(watches.incidents.applied(), watches.incidents.store())
            // Verification reacts to the rollout itself, not to a timer.
            .watches_shared_stream(
                watches.deployments.touched(),
                incidents_targeting(&watches, WorkloadKind::Deployment),
            )
            .watches_shared_stream(
                watches.statefulsets.touched(),
                incidents_targeting(&watches, WorkloadKind::StatefulSet),
            )
            // One incident's step on a target moves the others on it (one actor
            // per target, an approval gate that holds for all).
            .watches_shared_stream(watches.incidents.touched(), siblings(&watches))
            // An incident on a dependency opening or closing holds or frees its dependents.
            .watches_shared_stream(watches.incidents.touched(), dependents(&watches))
            // A policy edited mid-incident (kept in Git) re-plans its incidents.
            .watches_shared_stream(watches.policies.applied(), incidents_under(&watches))
            // A probe passing or failing moves the verification of steps waiting on it.
            .reconcile_on(incidents_of_probes(&ctx))
            .with_config(incident_config)
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(incident::reconcile, incident::error_policy, ctx.clone())
            .for_each(|result| async move { log_result("incident", result) });

    let policies =
        Controller::for_shared_stream(watches.policies.applied(), watches.policies.store())
            // A workload appearing or relabelled can change what a policy matches.
            .watches_shared_stream(
                watches.deployments.touched(),
                policies_in_namespace(&watches),
            )
            .watches_shared_stream(
                watches.statefulsets.touched(),
                policies_in_namespace(&watches),
            )
            // Another policy's targets decide which of two overlapping policies guards.
            .watches_shared_stream(watches.policies.touched(), neighbours(&watches))
            // Incidents move the policy's lastTriggered and circuit breaker.
            .watches_shared_stream(watches.incidents.touched(), policy_of_incident)
            .with_config(policy_config)
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(policy::reconcile, policy::error_policy, ctx.clone())
            .for_each(|result| async move { log_result("remediationpolicy", result) });

    // What people are told: its own controller, so a slow receiver never
    // holds remediation. A channel or escalation policy edited re-plans.
    let notifier =
        Controller::for_shared_stream(watches.incidents.applied(), watches.incidents.store())
            .watches_shared_stream(
                watches.channels.applied(),
                incidents_in_namespace_of(&watches),
            )
            .watches_shared_stream(
                watches.escalations.applied(),
                incidents_in_namespace_of(&watches),
            )
            .with_config(
                kube::runtime::controller::Config::default()
                    .debounce(Duration::from_millis(200))
                    .concurrency(NOTIFIER_CONCURRENCY),
            )
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(notifier::reconcile, notifier::error_policy, ctx.clone())
            .for_each(|result| async move { log_result("notifier", result) });

    // Whether channels can send and escalation policies can page, before
    // an incident needs them.
    let channels =
        Controller::for_shared_stream(watches.channels.applied(), watches.channels.store())
            .with_config(
                kube::runtime::controller::Config::default().concurrency(READINESS_CONCURRENCY),
            )
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(
                readiness::reconcile_channel,
                readiness::channel_error_policy,
                ctx.clone(),
            )
            .for_each(|result| async move { log_result("notificationchannel", result) });
    let escalations =
        Controller::for_shared_stream(watches.escalations.applied(), watches.escalations.store())
            // A channel added or removed can make a person reachable or not.
            .watches_shared_stream(
                watches.channels.touched(),
                escalations_in_namespace_of(&watches),
            )
            .with_config(
                kube::runtime::controller::Config::default().concurrency(READINESS_CONCURRENCY),
            )
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(
                readiness::reconcile_escalation,
                readiness::escalation_error_policy,
                ctx.clone(),
            )
            .for_each(|result| async move { log_result("escalationpolicy", result) });

    let detector = {
        let shutdown = shutdown.clone();
        let ctx = ctx.clone();
        async move {
            crate::detector::run(ctx, shutdown.clone(), alerts).await;
            if !shutdown.is_cancelled() {
                health.detector_stopped();
            }
        }
    };

    info!(
        namespace = scope.namespace.as_deref().unwrap_or("<all>"),
        "controllers started"
    );
    tokio::join!(
        incidents,
        policies,
        notifier,
        channels,
        escalations,
        detector
    );
    drive_watches.abort();
    info!("controllers stopped");
}

/// Maps an incident to the open incidents whose policy depends on its target.
fn dependents(
    watches: &Watches,
) -> impl Fn(Arc<Incident>) -> Vec<ObjectRef<Incident>> + Send + Sync + 'static {
    let incidents = watches.incidents.store();
    let policies = watches.policies.store();
    move |changed| {
        let namespace = changed.namespace();
        let depending: Vec<String> = policies
            .state_filter(|p| {
                p.namespace() == namespace && p.spec.depends_on.contains(&changed.spec.target)
            })
            .iter()
            .map(|p| p.name_any())
            .collect();
        if depending.is_empty() {
            return Vec::new();
        }
        open_incidents(&incidents, |incident| {
            incident.namespace() == namespace
                && incident
                    .policy_name()
                    .is_some_and(|p| depending.contains(p))
        })
    }
}

/// The open incidents of a probe's policy, each time the probe's standing
/// changes: their verification may wait on it.
fn incidents_of_probes(
    ctx: &Context,
) -> impl futures::Stream<Item = ObjectRef<Incident>> + Send + 'static {
    let store = ctx.watches.incidents.store();
    let changes = ctx.probes.changes();
    futures::stream::unfold(changes, |mut changes| async move {
        loop {
            match changes.recv().await {
                Ok(key) => return Some((key, changes)),
                // Missed some: the next change still arrives.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .flat_map(move |(namespace, policy, _)| {
        let refs = open_incidents(&store, |incident| {
            incident.namespace().as_deref() == Some(namespace.as_str())
                && incident.policy_name() == Some(&policy)
        });
        futures::stream::iter(refs)
    })
}

/// Maps a channel to the escalation policies of its namespace.
fn escalations_in_namespace_of(
    watches: &Watches,
) -> impl Fn(Arc<NotificationChannel>) -> Vec<ObjectRef<EscalationPolicy>> + Send + Sync + 'static {
    let store = watches.escalations.store();
    move |channel| {
        let namespace = channel.namespace();
        store
            .state_filter(|policy| policy.namespace() == namespace)
            .iter()
            .map(|policy| ObjectRef::from_obj(policy.as_ref()))
            .collect()
    }
}

/// The open incidents of the store that satisfy `keep`, as trigger refs.
fn open_incidents(
    store: &Store<Incident>,
    keep: impl Fn(&Incident) -> bool,
) -> Vec<ObjectRef<Incident>> {
    store
        .state_filter(|incident| incident.is_open() && keep(incident))
        .iter()
        .map(|incident| ObjectRef::from_obj(incident.as_ref()))
        .collect()
}

/// Whether what a mapper reads of an object changed since it last looked
/// (remembered in `seen`): status echoes must not trigger. A poisoned lock
/// only loses the filter: every change then triggers.
fn changed<K, V>(seen: &Mutex<HashMap<ObjectRef<K>, V>>, key: ObjectRef<K>, value: V) -> bool
where
    K: kube::Resource<DynamicType = ()>,
    V: PartialEq + Clone,
{
    seen.lock()
        .map(|mut seen| seen.insert(key, value.clone()) != Some(value))
        .unwrap_or(true)
}

/// Maps a workload to the open incidents that target it.
fn incidents_targeting<K>(
    watches: &Watches,
    kind: WorkloadKind,
) -> impl Fn(Arc<K>) -> Vec<ObjectRef<Incident>> + Send + Sync + 'static
where
    K: kube::Resource,
{
    let store = watches.incidents.store();
    move |workload| {
        let namespace = workload.meta().namespace.clone();
        let name = workload.meta().name.clone().unwrap_or_default();
        open_incidents(&store, |incident| {
            incident.metadata.namespace == namespace
                && incident.spec.target.kind == kind
                && incident.spec.target.name == name
        })
    }
}

/// What an incident reads of its policy: the spec's generation and the
/// circuit-breaker reset.
type PolicyAsRead = (Option<i64>, Option<String>);

/// Maps a policy to the others of its namespace whose overlap it can
/// change: those selecting a workload it selects now or selected before.
/// A policy that selects nothing, now or before, moves no other (1,000
/// policies created one by one would otherwise reconcile a million times).
fn neighbours(
    watches: &Watches,
) -> impl Fn(Arc<RemediationPolicy>) -> Vec<ObjectRef<RemediationPolicy>> + Send + Sync + 'static {
    /// A policy's generation and the workloads it selected, as last seen.
    type Seen = (Option<i64>, Vec<(WorkloadKind, String)>);
    let watches = watches.clone();
    let seen: Mutex<HashMap<ObjectRef<RemediationPolicy>, Seen>> = Mutex::default();
    move |policy| {
        let store = watches.policies.store();
        let key = ObjectRef::from_obj(policy.as_ref());
        let namespace = policy.namespace().unwrap_or_default();
        // Deleted policies leave the store; what they selected looks again.
        let deleted = store.get(&key).is_none();
        let workloads = watches.workloads(Some(&namespace));
        let selection: Vec<(WorkloadKind, String)> = if deleted {
            Vec::new()
        } else {
            workloads
                .iter()
                .filter(|w| policy.spec.targets.iter().any(|t| w.is_selected_by(t)))
                .map(|w| (w.kind(), w.name()))
                .collect()
        };
        let generation = policy.metadata.generation;
        let before = {
            let Ok(mut seen) = seen.lock() else {
                return Vec::new();
            };
            let before = if deleted {
                seen.remove(&key)
            } else {
                seen.insert(key, (generation, selection.clone()))
            };
            match before {
                Some((was, selected)) if was == generation && !deleted => {
                    if selected == selection {
                        return Vec::new();
                    }
                    selected
                }
                Some((_, selected)) => selected,
                None => Vec::new(),
            }
        };
        let affected: Vec<&Workload> = workloads
            .iter()
            .filter(|w| {
                let id = (w.kind(), w.name());
                selection.contains(&id) || before.contains(&id)
            })
            .collect();
        if affected.is_empty() {
            return Vec::new();
        }
        store
            .state_filter(|other| {
                other.metadata.namespace == policy.metadata.namespace
                    && other.metadata.name != policy.metadata.name
                    && affected
                        .iter()
                        .any(|w| other.spec.targets.iter().any(|t| w.is_selected_by(t)))
            })
            .iter()
            .map(|other| ObjectRef::from_obj(other.as_ref()))
            .collect()
    }
}

/// Maps an incident to the other open incidents on its target.
fn siblings(
    watches: &Watches,
) -> impl Fn(Arc<Incident>) -> Vec<ObjectRef<Incident>> + Send + Sync + 'static {
    let store = watches.incidents.store();
    move |incident| {
        open_incidents(&store, |other| {
            other.metadata.namespace == incident.metadata.namespace
                && other.spec.target == incident.spec.target
                && other.metadata.name != incident.metadata.name
        })
    }
}

/// Maps a policy to the open incidents that run under it, when what they
/// read of it changed: its spec, or its circuit-breaker reset (its status,
/// written on every incident change, would only echo back).
fn incidents_under(
    watches: &Watches,
) -> impl Fn(Arc<RemediationPolicy>) -> Vec<ObjectRef<Incident>> + Send + Sync + 'static {
    let store = watches.incidents.store();
    let seen: Mutex<HashMap<ObjectRef<RemediationPolicy>, PolicyAsRead>> = Mutex::default();
    move |policy| {
        let read = (
            policy.metadata.generation,
            policy.annotations().get(BREAKER_RESET_ANNOTATION).cloned(),
        );
        if !changed(&seen, ObjectRef::from_obj(policy.as_ref()), read) {
            return Vec::new();
        }
        let name = policy.name_any();
        open_incidents(&store, |incident| {
            incident.metadata.namespace == policy.metadata.namespace
                && incident.policy_name() == Some(&name)
        })
    }
}

/// Maps a channel or escalation policy to the open incidents of its
/// namespace, when its spec changed (not its status).
fn incidents_in_namespace_of<K>(
    watches: &Watches,
) -> impl Fn(Arc<K>) -> Vec<ObjectRef<Incident>> + Send + Sync + 'static
where
    K: kube::Resource<DynamicType = ()> + 'static,
{
    let store = watches.incidents.store();
    let seen: Mutex<HashMap<ObjectRef<K>, Option<i64>>> = Mutex::default();
    move |object| {
        if !changed(
            &seen,
            ObjectRef::from_obj(object.as_ref()),
            object.meta().generation,
        ) {
            return Vec::new();
        }
        let namespace = object.meta().namespace.clone();
        open_incidents(&store, |incident| incident.metadata.namespace == namespace)
    }
}

/// Maps a workload to the policies of its namespace.
fn policies_in_namespace<K>(
    watches: &Watches,
) -> impl Fn(Arc<K>) -> Vec<ObjectRef<RemediationPolicy>> + Send + Sync + 'static
where
    K: kube::Resource,
{
    let store = watches.policies.store();
    move |workload| {
        let namespace = workload.meta().namespace.clone();
        store
            .state_filter(|policy| policy.metadata.namespace == namespace)
            .iter()
            .map(|policy| ObjectRef::from_obj(policy.as_ref()))
            .collect()
    }
}

/// The policy an incident runs under: the one that opened it, or the one it names.
fn policy_of_incident(incident: Arc<Incident>) -> Option<ObjectRef<RemediationPolicy>> {
    let policy = incident
        .labels()
        .get(POLICY_LABEL)
        .or(incident.policy_name())?;
    let namespace = incident.namespace()?;
    Some(ObjectRef::new(policy).within(&namespace))
}

fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(controller: &str, result: Result<T, E>) {
    // Reconcile errors are logged by the error policies; these are scheduling and watch errors.
    if let Err(error) = result {
        warn!(controller, %error, "controller stream error");
    }
}
