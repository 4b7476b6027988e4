//! The detector: watches what policies guard and opens, updates, reopens and
//! clears Incidents from what it sees. Event-driven: the shared watches of
//! policies and workloads and its own pod watches feed it, and a timer wakes
//! it only when a `sustainedFor` period runs out.

pub mod alerts;
pub mod dedup;
mod guarded;
pub mod probes;
pub mod report;
mod signals;
pub mod symptoms;
pub mod watches;
pub mod writer;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use strum::IntoEnumIterator;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, time::DelayQueue};
use tracing::{debug, info, warn};

use self::{
    report::Report,
    symptoms::{Evaluation, Signal},
    watches::PodWatches,
    writer::{Writer, Written},
};
use crate::{
    context::{Context, Watches},
    crd::{RemediationPolicy, Symptom, WorkloadKind, WorkloadRef},
    k8s::shared::Change,
    remediation::known_good,
    signals::prober::Prober,
    workload::Workload,
};

/// How often collected reports are written; repeats within it are coalesced.
/// A signal that appears is written at once (see `Detector::urgent`).
const FLUSH_EVERY: Duration = Duration::from_millis(500);

type WorkloadId = (WorkloadKind, String, String);

fn id_of(workload: &Workload) -> WorkloadId {
    (workload.kind(), workload.namespace(), workload.name())
}

struct Detector {
    watches: Watches,
    writer: Writer,
    pod_watches: PodWatches,
    /// The guarded workloads, as the shared watches last saw them.
    workloads: HashMap<WorkloadId, Workload>,
    evaluations: HashMap<WorkloadId, Evaluation>,
    short_since: HashMap<WorkloadId, Timestamp>,
    timers: DelayQueue<WorkloadId>,
    timer_keys: HashMap<WorkloadId, tokio_util::time::delay_queue::Key>,
    pending: BTreeMap<(String, String), Report>,
    noticed: HashMap<(String, String), Timestamp>,
    /// Since when each workload has been healthy (no signal, every replica ready).
    healthy_since: HashMap<WorkloadId, Timestamp>,
    /// Workloads whose config was snapshotted in their current healthy period.
    snapshotted: BTreeSet<WorkloadId>,
    /// Workloads due a config snapshot.
    snapshot_jobs: BTreeSet<WorkloadId>,
    /// Only a current leader writes what it found.
    ctx: Arc<Context>,
    /// The probes of the guarding policies.
    prober: Prober,
    /// What Alertmanager said, to recognise repeats.
    alert_memory: alerts::AlertMemory,
    /// A signal appeared since the last flush: it is written as soon as the
    /// event that showed it is handled, not at the next tick (detection
    /// latency is what the runbook's clock starts from).
    urgent: bool,
}

/// Runs the detector until `shutdown` is cancelled; `alerts` are the
/// deliveries of the Alertmanager webhook, each answered once recorded.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: CancellationToken,
    mut alerts: mpsc::Receiver<alerts::Intake>,
) {
    debug!("detector starting");
    let watches = ctx.watches.clone();
    // Subscribed before anything is awaited, so no change is missed.
    let mut policy_changes = watches.policies.changes();
    let mut policy_generations = HashMap::new();
    let mut deployment_changes = watches.deployments.changes();
    let mut statefulset_changes = watches.statefulsets.changes();
    let mut incident_changes = watches.incidents.changes();
    let (sender, mut inputs) = mpsc::channel(1024);
    let (probe_sender, mut probe_results) = mpsc::channel(256);
    let mut detector = Detector {
        watches: watches.clone(),
        writer: Writer::new(
            ctx.client.clone(),
            ctx.metrics.clone(),
            watches.incidents.store(),
        ),
        pod_watches: PodWatches::new(ctx.client.clone(), ctx.pods.clone(), sender),
        workloads: HashMap::new(),
        evaluations: HashMap::new(),
        short_since: HashMap::new(),
        timers: DelayQueue::new(),
        timer_keys: HashMap::new(),
        pending: BTreeMap::new(),
        noticed: HashMap::new(),
        healthy_since: HashMap::new(),
        snapshotted: BTreeSet::new(),
        snapshot_jobs: BTreeSet::new(),
        ctx: ctx.clone(),
        prober: Prober::new(ctx.probe_handles(), probe_sender),
        alert_memory: alerts::AlertMemory::default(),
        urgent: false,
    };
    // Dedup is derived from the Incidents in the API: wait until they are
    // known, and what is guarded until the policies and workloads are.
    let stores_ready = watches.ready();
    tokio::select! {
        ready = stores_ready => if let Err(error) = ready {
            warn!(%error, "detector cannot start");
            return;
        },
        () = shutdown.cancelled() => return,
    }
    detector.policies_changed();
    info!("detector started");
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(change) = policy_changes.next() => {
                // What is guarded follows the policies' specs, not their status.
                if spec_changed(&mut policy_generations, &change) {
                    // A policy guards only workloads of its own namespace.
                    let namespace = match &change {
                        Change::Applied(policy) | Change::Deleted(policy) => policy.namespace(),
                        Change::Resynced => None,
                    };
                    detector.policies_changed_in(namespace.as_deref());
                }
            }
            Some(change) = deployment_changes.next() => detector.workload_changed(change.map(Workload::Deployment)),
            Some(change) = statefulset_changes.next() => detector.workload_changed(change.map(Workload::StatefulSet)),
            Some(change) = incident_changes.next() => detector.incident_changed(&change),
            Some(input) = inputs.recv() => detector.pod_event(input),
            Some(result) = probe_results.recv() => detector.probe_result(&result),
            Some(intake) = alerts.recv() => {
                let recorded = detector.alerts_delivered(&intake.notification).await;
                // The webhook may have given up waiting: then it answered 5xx.
                let _ = intake.reply.send(recorded);
            }
            Some(expired) = futures::future::poll_fn(|cx| detector.timers.poll_expired(cx)) => {
                let id = expired.into_inner();
                detector.timer_keys.remove(&id);
                detector.evaluate(&id);
            }
            _ = flush.tick() => detector.flush().await,
        }
        if detector.urgent {
            detector.flush().await;
        }
    }
    detector.flush().await;
    detector.pod_watches.stop();
    detector.prober.stop();
    info!("detector stopped");
}

/// Whether a policy change can change what is guarded: a new spec
/// (generation), a deletion or a resync; `seen` remembers generations.
fn spec_changed(
    seen: &mut HashMap<(Option<String>, Option<String>), Option<i64>>,
    change: &Change<RemediationPolicy>,
) -> bool {
    match change {
        Change::Applied(policy) => {
            let key = (
                policy.metadata.namespace.clone(),
                policy.metadata.name.clone(),
            );
            seen.insert(key, policy.metadata.generation) != Some(policy.metadata.generation)
        }
        Change::Deleted(policy) => {
            seen.remove(&(
                policy.metadata.namespace.clone(),
                policy.metadata.name.clone(),
            ));
            true
        }
        Change::Resynced => true,
    }
}

impl Detector {
    /// The writer forgets deleted incidents at once, and after a resync
    /// every incident it no longer finds.
    fn incident_changed(&mut self, change: &Change<crate::crd::Incident>) {
        match change {
            Change::Applied(_) => {}
            Change::Deleted(incident) => self.writer.forget(&(
                incident.namespace().unwrap_or_default(),
                incident.name_any(),
            )),
            Change::Resynced => self.writer.prune(),
        }
    }

    /// How many entries it keeps about workloads, pending reports and
    /// incidents (not the pods it watches: those are the cluster's state).
    fn remembered(&self) -> usize {
        self.workloads.len()
            + self.evaluations.len()
            + self.short_since.len()
            + self.timer_keys.len()
            + self.pending.len()
            + self.noticed.len()
            + self.healthy_since.len()
            + self.snapshotted.len()
            + self.snapshot_jobs.len()
            + self.pod_watches.watched()
            + self.writer.remembered()
    }

    /// Classifies a workload and its pods, and turns what changed into reports.
    fn evaluate(&mut self, id: &WorkloadId) {
        let Some(workload) = self.workloads.get(id) else {
            return;
        };
        let Some(policy) = self.guarding_policy(workload) else {
            self.forget(id);
            return;
        };
        let Some(pod_key) = workload.pod_selector() else {
            return;
        };
        let Some(watched) = self.pod_watches.pods(&pod_key) else {
            return;
        };
        let now = Timestamp::now();
        let (desired, available) = workload.replicas();
        let short_since = if available < desired {
            Some(*self.short_since.entry(id.clone()).or_insert(now))
        } else {
            self.short_since.remove(id);
            None
        };
        let pods = watched
            .iter()
            .map(AsRef::as_ref)
            .filter(|pod| workload.owns(*pod));
        let evaluation = symptoms::evaluate(&policy.spec.rules, workload, pods, short_since, now);
        let previous = self.evaluations.remove(id).unwrap_or_default();
        let namespace = id.1.clone();
        let target = WorkloadRef {
            kind: id.0,
            name: id.2.clone(),
        };
        let policy_name = policy.name_any();
        let reopen_window = policy.spec.detection.reopen_window.as_std();

        for symptom in Symptom::iter().filter(|s| s.is_observed()) {
            let key = dedup::dedup_key(id.0, &id.2, symptom, None);
            let pending_key = (namespace.clone(), key.clone());
            match evaluation.signals.get(&symptom) {
                Some(signal) => {
                    let occurrences = new_occurrences(previous.signals.get(&symptom), signal);
                    if occurrences == 0 {
                        continue;
                    }
                    if !previous.signals.contains_key(&symptom) {
                        self.urgent = true;
                    }
                    let Some(rule) = policy.spec.rules.get(signal.rule) else {
                        continue;
                    };
                    let noticed = *self.noticed.entry(pending_key.clone()).or_insert(now);
                    let report = Report {
                        namespace: namespace.clone(),
                        target: target.clone(),
                        symptom,
                        probe: None,
                        policy: policy_name.clone(),
                        rule: rule.name.clone(),
                        severity: rule.severity,
                        incident_type: rule.incident_type,
                        reopen_window,
                        occurrences,
                        pods: signal.pods.keys().cloned().collect(),
                        detail: signal.detail.clone(),
                        first_seen: now,
                        last_seen: now,
                        cleared: false,
                        noticed,
                    };
                    self.queue(pending_key, report);
                }
                None => {
                    self.noticed.remove(&pending_key);
                    let was_active = previous.signals.contains_key(&symptom);
                    let pending_active = self.pending.get(&pending_key).is_some_and(|r| !r.cleared);
                    let open = || !self.writer.open_uncleared(&namespace, &key).is_empty();
                    if !(was_active || pending_active || open()) {
                        continue;
                    }
                    let report = Report::clear(
                        (namespace.clone(), target.clone()),
                        (symptom, None),
                        policy_name.clone(),
                        reopen_window,
                        now,
                    );
                    self.queue(pending_key, report);
                }
            }
        }

        // Healthy long enough: its config is known-good, worth a snapshot.
        let mut recheck_at = evaluation.recheck_at;
        if evaluation.signals.is_empty() && desired > 0 && available >= desired {
            let since = *self.healthy_since.entry(id.clone()).or_insert(now);
            let due = since
                .checked_add(policy.spec.detection.hold_down.as_std())
                .unwrap_or(Timestamp::MAX);
            if now >= due {
                if !self.snapshotted.contains(id) {
                    self.snapshot_jobs.insert(id.clone());
                }
            } else {
                recheck_at = Some(recheck_at.map_or(due, |r| r.min(due)));
            }
        } else {
            self.healthy_since.remove(id);
            self.snapshotted.remove(id);
        }
        if let Some(timer) = self.timer_keys.remove(id) {
            self.timers.remove(&timer);
        }
        if let Some(at) = recheck_at {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(100);
            let timer = self.timers.insert(id.clone(), wait);
            self.timer_keys.insert(id.clone(), timer);
        }
        self.evaluations.insert(id.clone(), evaluation);
    }

    fn queue(&mut self, key: (String, String), report: Report) {
        let merged = self.take_merged(&key, report);
        self.pending.insert(key, merged);
    }

    /// `report` with what is still pending for its key folded in (and
    /// taken out of the queue): a report written at once must carry what
    /// waits, or the waiting one, written later, would undo it (a deferred
    /// count flushed after a clear would mark the signal back).
    fn take_merged(&mut self, key: &(String, String), report: Report) -> Report {
        match self.pending.remove(key) {
            // A clear after a not-yet-written signal keeps the signal's data.
            Some(mut existing)
                if report.cleared && !existing.cleared && existing.occurrences > 0 =>
            {
                existing.absorb(Report {
                    occurrences: 0,
                    ..report
                });
                existing
            }
            Some(mut existing) => {
                existing.absorb(report);
                existing
            }
            None => report,
        }
    }

    /// Takes the config snapshots that are due.
    async fn snapshot(&mut self) {
        let jobs = std::mem::take(&mut self.snapshot_jobs);
        for id in jobs {
            let Some(workload) = self.workloads.get(&id) else {
                continue;
            };
            let config_maps = workload
                .template()
                .map(known_good::config_maps_used)
                .unwrap_or_default();
            let label = format!("{}/{}", id.0, id.2);
            // Taken as the namespace's remediator: the snapshots are
            // ConfigMaps of that namespace.
            let account = self
                .guarding_policy(workload)
                .and_then(|p| p.spec.service_account_name.clone());
            let client = match self.ctx.remediator(&id.1, account.as_deref()) {
                Ok(client) => client,
                Err(error) => {
                    warn!(workload = %label, %error, "config snapshot cannot be taken");
                    continue;
                }
            };
            let revision = workload.revision().map(str::to_owned);
            if let Some(revision) = revision
                && let Err(error) =
                    known_good::record_healthy_revision(&client, &id.1, &id.2, &revision).await
            {
                warn!(workload = %label, %error, "could not record the healthy revision; retrying");
                self.snapshot_jobs.insert(id);
                continue;
            }
            match known_good::take(&client, &id.1, &label, &config_maps, Timestamp::now()).await {
                Ok(_) => {
                    self.snapshotted.insert(id);
                }
                Err(error) => {
                    warn!(workload = %label, %error, "config snapshot failed; retrying");
                    self.snapshot_jobs.insert(id);
                }
            }
        }
    }

    async fn flush(&mut self) {
        self.urgent = false;
        if self.ctx.may_write().is_err() {
            // No longer the leader: what is pending is dropped, not written
            // late; the next leader sees the same failures for itself.
            self.pending.clear();
            self.snapshot_jobs.clear();
            return;
        }
        self.snapshot().await;
        let pending = std::mem::take(&mut self.pending);
        for (key, report) in pending {
            match self.writer.write(report.clone()).await {
                Ok(Written::Done) => {}
                Ok(Written::Deferred) => self.queue(key, report),
                Err(error) => {
                    warn!(key = %key.1, namespace = %key.0, %error, "could not record signal; retrying");
                    self.queue(key, report);
                }
            }
        }
        let entries = self.remembered();
        self.ctx
            .metrics
            .detector_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

/// New observations in a signal: pods newly showing it, pods restarting again,
/// or the signal itself appearing.
fn new_occurrences(previous: Option<&Signal>, current: &Signal) -> i64 {
    let Some(previous) = previous else {
        return i64::try_from(current.pods.len().max(1)).unwrap_or(i64::MAX);
    };
    let count = current
        .pods
        .iter()
        .filter(|(pod, restarts)| {
            previous
                .pods
                .get(*pod)
                .is_none_or(|before| *restarts > before)
        })
        .count();
    i64::try_from(count).unwrap_or(i64::MAX)
}
