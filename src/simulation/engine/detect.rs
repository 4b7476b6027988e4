//! The prober's checks and the detector: what each look at the world
//! makes of it, written into incidents as the detector's writer would.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{ProbeRun, Simulation};
use crate::{
    crd::Incident,
    detector::{
        guarded::guarding_policy,
        report::Report,
        write_plan::{DetectionPlan, WriteMemory, WritePlan},
    },
    signals::{prober::ProbeReport, tracker::Outcome as ProbeOutcome},
    simulation::world::{State, WorkloadKey},
};

impl Simulation<'_> {
    /// The probes' checks due by `now`, as the prober makes them.
    pub(super) fn check_probes(&mut self, now: Timestamp) -> bool {
        let mut moved = false;
        let mut state = self.world.state();
        for run in &mut self.probes {
            // Every check due by now, each at its own time (the clock may
            // have jumped over checks that could change nothing).
            while run.next <= now {
                let at = run.next;
                run.next = at
                    .checked_add(
                        run.probe
                            .every
                            .as_std()
                            .max(std::time::Duration::from_secs(1)),
                    )
                    .unwrap_or(now);
                let outcome = ProbeOutcome {
                    passed: run.passing,
                    inconclusive: false,
                    value: None,
                    detail: if run.passing {
                        "passed (simulated)".into()
                    } else {
                        "failed (simulated)".into()
                    },
                    at,
                };
                let probe = &run.probe;
                let tracker = state.probes.entry(run.key.clone()).or_default();
                let (failing, healthy) =
                    (tracker.failing, tracker.healthy(probe.success_threshold));
                let change =
                    tracker.record(outcome, probe.failure_threshold, probe.success_threshold);
                moved |= failing != tracker.failing
                    || healthy != tracker.healthy(probe.success_threshold);
                // A check that changed nothing can only clear an incident
                // still open: with none open, the detector has nothing to do.
                let tracker = tracker.clone();
                let namespace = run.key.0.as_str();
                if change == crate::signals::tracker::Change::None
                    && !state
                        .incidents
                        .values()
                        .any(|i| i.namespace().as_deref() == Some(namespace) && i.is_open())
                {
                    continue;
                }
                let report = ProbeReport {
                    key: run.key.clone(),
                    probe: Arc::clone(probe),
                    change,
                    tracker,
                };
                let (written, incidents) = (&self.written, &state.incidents);
                let open =
                    |namespace: &str, key: &str| open_uncleared(written, incidents, namespace, key);
                self.sensing.probe_result(&run.policy, &report, open, at);
            }
        }
        moved
    }

    /// Whether a probe's next check can change anything: it is to fail,
    /// or it is not yet healthy, or an incident is open (its verification
    /// may read it). Otherwise the clock need not stop for it.
    pub(super) fn matters(&self, run: &ProbeRun, state: &State) -> bool {
        let healthy = state
            .probes
            .get(&run.key)
            .is_some_and(|t| !t.failing && t.healthy(run.probe.success_threshold));
        !run.passing || !healthy || state.incidents.values().any(|i| i.is_open())
    }

    /// The detector looks at every guarded workload and writes what it saw.
    pub(super) fn detect(&mut self, now: Timestamp) -> bool {
        let mut state = self.world.state();
        let policies = state.policies.clone();
        let incidents = state.incidents.clone();
        let keys: Vec<WorkloadKey> = state.workloads.keys().cloned().collect();
        for key in keys {
            let Some(sim) = state.workloads.get_mut(&key) else {
                continue;
            };
            let due = self.rechecks.get(&key).is_some_and(|at| *at <= now);
            if self.looked_at.get(&key) == Some(&sim.version()) && !due {
                continue;
            }
            self.looked_at.insert(key.clone(), sim.version());
            let workload = sim.object();
            let checked = &self.world.checked;
            let Some(policy) =
                guarding_policy(policies.iter().cloned(), &workload, |p| checked.valid(p))
            else {
                continue;
            };
            let pods = sim.pods();
            let written = &self.written;
            let open =
                |namespace: &str, key: &str| open_uncleared(written, &incidents, namespace, key);
            match self
                .sensing
                .evaluate(&workload, &policy, pods.iter(), open, now)
            {
                Some(at) => {
                    self.rechecks.insert(key, at);
                }
                None => {
                    self.rechecks.remove(&key);
                }
            }
        }
        drop(state);
        let mut moved = false;
        let mut deferred = false;
        for (key, report) in self.sensing.take_pending() {
            match self.write(&report, now) {
                Written::Done(changed) => moved |= changed,
                Written::Deferred => {
                    deferred = true;
                    self.sensing.queue(key, report);
                }
            }
        }
        self.flush_at = deferred.then(|| {
            now.checked_add(std::time::Duration::from_secs(1))
                .unwrap_or(now)
        });
        moved
    }

    /// Writes one report as the detector's writer would.
    pub(super) fn write(&mut self, report: &Report, now: Timestamp) -> Written {
        let mut state = self.world.state();
        let same_key: Vec<Arc<Incident>> = state
            .incidents
            .values()
            .filter(|i| {
                i.namespace().as_deref() == Some(report.namespace.as_str())
                    && i.spec.source.dedup_key.as_deref() == Some(report.key().as_str())
            })
            .cloned()
            .collect();
        let stored = |name: &str| {
            state
                .incidents
                .get(&(report.namespace.clone(), name.to_owned()))
                .cloned()
        };
        let plan = self.written.plan(report, &same_key, stored, now);
        let detection = match plan {
            WritePlan::Nothing => return Written::Done(false),
            WritePlan::Create(incident) => {
                let name = incident.name_any();
                let id = (report.namespace.clone(), name.clone());
                if !state.incidents.contains_key(&id) {
                    self.log.push(format!(
                        "{:>6}s  detector opened {name} ({}, {})",
                        self.offset(now),
                        report.rule,
                        report.severity
                    ));
                    state.store(*incident);
                }
                self.written.created(report, &name);
                let stored = state.incidents.get(&id).cloned();
                self.written
                    .plan_detection(report, &name, false, stored.as_deref(), now)
            }
            WritePlan::Detection(plan) => plan,
        };
        match detection {
            DetectionPlan::Unchanged => Written::Done(false),
            DetectionPlan::Deferred => Written::Deferred,
            DetectionPlan::Patch(patch) => {
                let id = patch.id();
                let Some(current) = state.incidents.get(&id).cloned() else {
                    self.written.forget(&id);
                    return Written::Done(false);
                };
                let mut incident = Incident::clone(&current);
                incident
                    .status
                    .get_or_insert_with(Default::default)
                    .detection = Some(patch.detection.clone());
                if patch.reopen {
                    self.log.push(format!(
                        "{:>6}s  detector reopened {}",
                        self.offset(now),
                        id.1
                    ));
                }
                state.store(incident);
                self.written.wrote(*patch, now);
                Written::Done(true)
            }
        }
    }
}

pub(super) enum Written {
    /// Written, or nothing to write; whether an incident changed.
    Done(bool),
    Deferred,
}

/// Whether an incident of that key is open with its signal not yet cleared,
/// as the detector's writer would tell.
pub(super) fn open_uncleared(
    written: &WriteMemory,
    incidents: &BTreeMap<(String, String), Arc<Incident>>,
    namespace: &str,
    key: &str,
) -> bool {
    let same_key: Vec<Arc<Incident>> = incidents
        .values()
        .filter(|i| {
            i.namespace().as_deref() == Some(namespace)
                && i.spec.source.dedup_key.as_deref() == Some(key)
        })
        .cloned()
        .collect();
    written.open_uncleared(namespace, &same_key)
}
