//! What the detector remembers of what it saw, and what it makes of each new
//! look: which signals appeared, repeated or stopped (reports, queued until
//! written), when to look at a workload again, and when one has been healthy
//! long enough for a config snapshot. Pure: the clock is an argument, so the
//! live detector and a replay on a virtual clock run the same code.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use strum::IntoEnumIterator;

use super::{
    alerts::AlertMemory,
    dedup, probes,
    report::Report,
    symptoms::{self, Evaluation, Signal},
};
use crate::{
    crd::{RemediationPolicy, Symptom, WorkloadKind, WorkloadRef},
    pod::PodFacts,
    signals::{alerts::Notification, prober::ProbeReport, tracker::Change as ProbeChange},
    workload::Workload,
};

/// A guarded workload: kind, namespace, name.
pub type WorkloadId = (WorkloadKind, String, String);

/// Where a report waits: namespace and dedup key.
pub type ReportKey = (String, String);

pub fn id_of(workload: &Workload) -> WorkloadId {
    (workload.kind(), workload.namespace(), workload.name())
}

/// The detector's memory of workloads and signals.
#[derive(Default)]
pub struct Sensing {
    evaluations: HashMap<WorkloadId, Evaluation>,
    /// Since when each workload has had fewer replicas available than desired.
    short_since: HashMap<WorkloadId, Timestamp>,
    /// Reports not yet written.
    pending: BTreeMap<ReportKey, Report>,
    /// When each signal going on was first seen, for the latency metric.
    noticed: HashMap<ReportKey, Timestamp>,
    /// Since when each workload has been healthy (no signal, every replica ready).
    healthy_since: HashMap<WorkloadId, Timestamp>,
    /// Workloads whose config was snapshotted in their current healthy period.
    snapshotted: BTreeSet<WorkloadId>,
    /// Workloads due a config snapshot.
    snapshot_jobs: BTreeSet<WorkloadId>,
    /// What Alertmanager said, to recognise repeats.
    alert_memory: AlertMemory,
    /// A signal appeared since the pending reports were last taken: it is
    /// written as soon as the event that showed it is handled, not at the
    /// next tick (detection latency is what the runbook's clock starts from).
    urgent: bool,
}

impl Sensing {
    /// Classifies a workload and those of `pods` it owns by the policy
    /// guarding it, and queues what changed since the last look as reports.
    /// `open_uncleared(namespace, key)` says whether an incident of that
    /// key is open with its signal not yet marked cleared (a clear then has
    /// something to do). Returns when to look again, if a period is running.
    pub fn evaluate<'p>(
        &mut self,
        workload: &Workload,
        policy: &RemediationPolicy,
        pods: impl IntoIterator<Item = &'p PodFacts>,
        open_uncleared: impl Fn(&str, &str) -> bool,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let id = id_of(workload);
        let (desired, available) = workload.replicas();
        let short_since = if available < desired {
            Some(*self.short_since.entry(id.clone()).or_insert(now))
        } else {
            self.short_since.remove(&id);
            None
        };
        let pods = pods.into_iter().filter(|pod| workload.owns(pod));
        let evaluation = symptoms::evaluate(&policy.spec.rules, workload, pods, short_since, now);
        let previous = self.evaluations.remove(&id).unwrap_or_default();
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
                    if !(was_active || pending_active || open_uncleared(&namespace, &key)) {
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
                if !self.snapshotted.contains(&id) {
                    self.snapshot_jobs.insert(id.clone());
                }
            } else {
                recheck_at = Some(recheck_at.map_or(due, |r| r.min(due)));
            }
        } else {
            self.healthy_since.remove(&id);
            self.snapshotted.remove(&id);
        }
        self.evaluations.insert(id, evaluation);
        recheck_at
    }

    /// A probe's result of `policy`: opens, counts or clears its incident.
    /// Whether it queued a report.
    pub fn probe_result(
        &mut self,
        policy: &RemediationPolicy,
        result: &ProbeReport,
        open_uncleared: impl Fn(&str, &str) -> bool,
        now: Timestamp,
    ) -> bool {
        let namespace = &result.key.0;
        let key = dedup::dedup_key(
            result.probe.target.kind,
            &result.probe.target.name,
            Symptom::ProbeFailing,
            Some(&result.key.2),
        );
        let pending_key = (namespace.clone(), key);
        let open = open_uncleared(namespace, &pending_key.1)
            || self.pending.get(&pending_key).is_some_and(|r| !r.cleared);
        let Some(report) = probes::report_for(policy, result, open, now) else {
            return false;
        };
        if !report.cleared && result.change == ProbeChange::Failed {
            self.urgent = true;
        }
        self.queue(pending_key, report);
        true
    }

    /// The reports an Alertmanager delivery makes for `policies` (valid
    /// ones). They are written at once: fold each into what waits for its
    /// key with `take_merged` first.
    pub fn alert_reports(
        &mut self,
        notification: &Notification,
        policies: &[std::sync::Arc<RemediationPolicy>],
        now: Timestamp,
    ) -> Vec<Report> {
        self.alert_memory.reports(notification, policies, now)
    }

    /// Queues a report, folded into what already waits for its key.
    pub fn queue(&mut self, key: ReportKey, report: Report) {
        let merged = self.take_merged(&key, report);
        self.pending.insert(key, merged);
    }

    /// `report` with what is still pending for its key folded in (and
    /// taken out of the queue): a report written at once must carry what
    /// waits, or the waiting one, written later, would undo it (a deferred
    /// count flushed after a clear would mark the signal back).
    pub fn take_merged(&mut self, key: &ReportKey, report: Report) -> Report {
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

    /// The reports waiting to be written.
    pub fn pending(&self) -> &BTreeMap<ReportKey, Report> {
        &self.pending
    }

    /// Takes the reports to write; those that cannot be written yet go
    /// back with `queue`. Takes the urgency with them.
    pub fn take_pending(&mut self) -> BTreeMap<ReportKey, Report> {
        self.urgent = false;
        std::mem::take(&mut self.pending)
    }

    /// Whether a signal appeared since the pending reports were last taken.
    pub fn is_urgent(&self) -> bool {
        self.urgent
    }

    /// Takes the config snapshots that are due.
    pub fn take_snapshot_jobs(&mut self) -> BTreeSet<WorkloadId> {
        std::mem::take(&mut self.snapshot_jobs)
    }

    /// A workload's config was snapshotted: not again in this healthy period.
    pub fn snapshot_taken(&mut self, id: WorkloadId) {
        self.snapshotted.insert(id);
    }

    /// A snapshot could not be taken: it is due again.
    pub fn snapshot_failed(&mut self, id: WorkloadId) {
        self.snapshot_jobs.insert(id);
    }

    /// Drops what waits to be written: a replica that is no longer the
    /// leader writes nothing late; the next leader sees the same failures
    /// for itself.
    pub fn drop_unwritten(&mut self) {
        self.urgent = false;
        self.pending.clear();
        self.snapshot_jobs.clear();
    }

    /// Forgets a workload no longer guarded; its reports not yet written
    /// are dropped.
    pub fn forget(&mut self, id: &WorkloadId) {
        self.evaluations.remove(id);
        self.short_since.remove(id);
        self.healthy_since.remove(id);
        self.snapshotted.remove(id);
        self.snapshot_jobs.remove(id);
        self.pending.retain(|(namespace, _), report| {
            !(report.target.kind == id.0 && *namespace == id.1 && report.target.name == id.2)
        });
        let prefix = format!("{}/{}/", id.0, id.2);
        self.noticed
            .retain(|(namespace, key), _| !(*namespace == id.1 && key.starts_with(&prefix)));
    }

    /// How many entries it keeps about workloads and pending reports.
    pub fn remembered(&self) -> usize {
        self.evaluations.len()
            + self.short_since.len()
            + self.pending.len()
            + self.noticed.len()
            + self.healthy_since.len()
            + self.snapshotted.len()
            + self.snapshot_jobs.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::fixtures::{CRASH_KEY, api, at, pod, policy};

    fn crash_key() -> ReportKey {
        ("hg".to_owned(), CRASH_KEY.to_owned())
    }

    const NOTHING_OPEN: fn(&str, &str) -> bool = |_, _| false;

    #[test]
    fn a_crashlooping_pod_queues_a_report_and_only_new_restarts_count_again() {
        let (policy, mut sensing) = (policy(), Sensing::default());
        let crashing = [pod("api-1", 5, true), pod("api-2", 0, false)];
        sensing.evaluate(&api(1), &policy, &crashing, NOTHING_OPEN, at(0));
        let report = &sensing.pending()[&crash_key()];
        assert_eq!(
            (report.occurrences, report.cleared, report.rule.as_str()),
            (1, false, "crash")
        );
        assert_eq!(report.pods, ["api-1"]);
        assert_eq!((report.first_seen, report.noticed), (at(0), at(0)));
        assert!(sensing.is_urgent(), "a new signal is written at once");
        assert_eq!(sensing.take_pending().len(), 1);
        assert!(!sensing.is_urgent());

        // Looked at again with nothing new: nothing to say.
        sensing.evaluate(&api(1), &policy, &crashing, NOTHING_OPEN, at(5));
        assert!(sensing.pending().is_empty());
        // It restarted again: a repeat, counted, not urgent; still noticed at t0.
        let again = [pod("api-1", 6, true), pod("api-2", 0, false)];
        sensing.evaluate(&api(1), &policy, &again, NOTHING_OPEN, at(12));
        let report = &sensing.pending()[&crash_key()];
        assert_eq!((report.occurrences, report.last_seen), (1, at(12)));
        assert_eq!(report.noticed, at(0));
        assert!(!sensing.is_urgent());
    }

    #[test]
    fn a_signal_that_stops_queues_a_clear_and_a_pending_one_keeps_its_data() {
        let (policy, mut sensing) = (policy(), Sensing::default());
        sensing.evaluate(
            &api(1),
            &policy,
            &[pod("api-1", 5, true)],
            NOTHING_OPEN,
            at(0),
        );
        // Healthy before the report was written: the clear carries its counts.
        sensing.evaluate(
            &api(2),
            &policy,
            &[pod("api-1", 5, false)],
            NOTHING_OPEN,
            at(3),
        );
        let report = &sensing.take_pending()[&crash_key()];
        assert_eq!(
            (report.cleared, report.occurrences, report.last_seen),
            (true, 1, at(3))
        );
        // Healthy, and nothing open: nothing more to clear.
        sensing.evaluate(
            &api(2),
            &policy,
            &[pod("api-1", 5, false)],
            NOTHING_OPEN,
            at(4),
        );
        assert!(sensing.pending().is_empty());
        // An incident still open from before (a restart): it is cleared.
        let open = |namespace: &str, key: &str| namespace == "hg" && key == CRASH_KEY;
        sensing.evaluate(&api(2), &policy, &[pod("api-1", 5, false)], open, at(5));
        assert!(sensing.pending()[&crash_key()].cleared);
    }

    #[test]
    fn a_workload_healthy_for_the_hold_down_is_due_one_snapshot() {
        let (policy, mut sensing) = (policy(), Sensing::default());
        let healthy = [pod("api-1", 0, false), pod("api-2", 0, false)];
        let recheck = sensing.evaluate(&api(2), &policy, &healthy, NOTHING_OPEN, at(0));
        assert_eq!(
            recheck,
            Some(at(120)),
            "looked at again when the hold-down ends"
        );
        assert!(sensing.take_snapshot_jobs().is_empty());
        assert_eq!(
            sensing.evaluate(&api(2), &policy, &healthy, NOTHING_OPEN, at(120)),
            None
        );
        let jobs = sensing.take_snapshot_jobs();
        assert_eq!(jobs.len(), 1);
        let id = jobs.into_iter().next().unwrap();
        sensing.snapshot_taken(id);
        sensing.evaluate(&api(2), &policy, &healthy, NOTHING_OPEN, at(130));
        assert!(
            sensing.take_snapshot_jobs().is_empty(),
            "once per healthy period"
        );
        // Unhealthy, then healthy again: a new period, a new snapshot.
        sensing.evaluate(&api(1), &policy, &healthy, NOTHING_OPEN, at(140));
        sensing.evaluate(&api(2), &policy, &healthy, NOTHING_OPEN, at(150));
        sensing.evaluate(&api(2), &policy, &healthy, NOTHING_OPEN, at(270));
        assert_eq!(sensing.take_snapshot_jobs().len(), 1);
    }

    #[test]
    fn an_unguarded_workload_is_forgotten_with_what_it_had_not_written() {
        let (policy, mut sensing) = (policy(), Sensing::default());
        sensing.evaluate(
            &api(1),
            &policy,
            &[pod("api-1", 5, true)],
            NOTHING_OPEN,
            at(0),
        );
        assert!(sensing.remembered() > 0);
        sensing.forget(&id_of(&api(1)));
        assert_eq!(sensing.remembered(), 0);
    }
}
