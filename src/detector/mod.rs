//! The detector: watches what policies guard and opens, updates, reopens and
//! clears Incidents from what it sees. Event-driven: the shared watches of
//! policies and workloads and its own pod watches feed it, and a timer wakes
//! it only when a `sustainedFor` period runs out.

pub mod alerts;
pub mod dedup;
#[cfg(test)]
mod fixtures;
pub mod guarded;
pub mod probes;
pub mod report;
pub mod sensing;
mod signals;
pub mod symptoms;
#[cfg(test)]
mod tests;
pub mod watches;
pub mod write_plan;
pub mod writer;

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, time::DelayQueue};
use tracing::{debug, info, warn};

use self::{
    sensing::{Sensing, WorkloadId},
    watches::PodWatches,
    writer::{Writer, Written},
};
use crate::{
    context::{Context, Watches},
    crd::RemediationPolicy,
    k8s::shared::Change,
    remediation::known_good,
    signals::prober::Prober,
    workload::Workload,
};

/// How often collected reports are written; repeats within it are coalesced.
/// A signal that appears is written at once (see `Sensing::is_urgent`).
const FLUSH_EVERY: Duration = Duration::from_millis(500);

struct Detector {
    watches: Watches,
    writer: Writer,
    pod_watches: PodWatches,
    /// The guarded workloads, as the shared watches last saw them.
    workloads: HashMap<WorkloadId, Workload>,
    /// What it saw and has yet to write.
    sensing: Sensing,
    timers: DelayQueue<WorkloadId>,
    timer_keys: HashMap<WorkloadId, tokio_util::time::delay_queue::Key>,
    /// Only a current leader writes what it found.
    ctx: Arc<Context>,
    /// The probes of the guarding policies.
    prober: Prober,
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
        pod_watches: PodWatches::new(
            ctx.client.clone(),
            ctx.pods.clone(),
            ctx.warnings.clone(),
            sender,
        ),
        workloads: HashMap::new(),
        sensing: Sensing::default(),
        timers: DelayQueue::new(),
        timer_keys: HashMap::new(),
        ctx: ctx.clone(),
        prober: Prober::new(ctx.probe_handles(), probe_sender),
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
        if detector.sensing.is_urgent() {
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
            + self.sensing.remembered()
            + self.timer_keys.len()
            + self.pod_watches.watched()
            + self.writer.remembered()
    }

    /// Classifies a workload and its pods, and turns what changed into
    /// reports; sets its timer if a period is running.
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
        let writer = &self.writer;
        let recheck_at = self.sensing.evaluate(
            workload,
            &policy,
            watched.iter().map(AsRef::as_ref),
            |namespace, key| writer.open_uncleared(namespace, key),
            now,
        );
        if let Some(timer) = self.timer_keys.remove(id) {
            self.timers.remove(&timer);
        }
        if let Some(at) = recheck_at {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(100);
            let timer = self.timers.insert(id.clone(), wait);
            self.timer_keys.insert(id.clone(), timer);
        }
    }

    /// Takes the config snapshots that are due.
    async fn snapshot(&mut self) {
        let jobs = self.sensing.take_snapshot_jobs();
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
                self.sensing.snapshot_failed(id);
                continue;
            }
            match known_good::take(&client, &id.1, &label, &config_maps, Timestamp::now()).await {
                Ok(_) => self.sensing.snapshot_taken(id),
                Err(error) => {
                    warn!(workload = %label, %error, "config snapshot failed; retrying");
                    self.sensing.snapshot_failed(id);
                }
            }
        }
    }

    async fn flush(&mut self) {
        if self.ctx.may_write().is_err() {
            self.sensing.drop_unwritten();
            return;
        }
        self.snapshot().await;
        let pending = self.sensing.take_pending();
        for (key, report) in pending {
            match self.writer.write(report.clone()).await {
                Ok(Written::Done) => {}
                Ok(Written::Deferred) => self.sensing.queue(key, report),
                Err(error) => {
                    warn!(key = %key.1, namespace = %key.0, %error, "could not record signal; retrying");
                    self.sensing.queue(key, report);
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
