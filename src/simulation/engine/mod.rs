//! One case on a virtual clock: the timeline's inputs change the simulated
//! world, and the operator's own parts react in the order the live
//! operator's do (the detector writes what it sees, the incident pipeline
//! reconciles, the notifier records and sends) until nothing moves; then
//! the clock jumps to the next time anything is due.
//!
//! - [`inputs`]: what the timeline changes;
//! - [`detect`]: the prober's checks and the detector, its writes;
//! - [`reconcile`]: the incident pipeline;
//! - [`notify`]: the notifier.

mod detect;
mod inputs;
mod notify;
mod reconcile;

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{
    case::{Case, Input, WorkloadSpec},
    cluster::SimWorkload,
    expect::{self, Failure, Sent},
    load::Loaded,
    output::CaseResult,
    world::{SimWorld, State, WorkloadKey},
};
use crate::{
    crd::{Incident, Probe, RemediationPolicy},
    detector::{sensing::Sensing, write_plan::WriteMemory},
};

/// When every case begins: a fixed time, so that a case's output never
/// depends on the day it runs.
pub const EPOCH: &str = "2026-01-01T00:00:00Z";
/// How long a case runs after its last input or expectation, by default.
const AFTERWARDS: std::time::Duration = std::time::Duration::from_secs(3600);
/// The most rounds at one time before the clock moves on: the parts keep
/// reacting to each other only while something changes.
const MAX_ROUNDS: usize = 20;
/// The most times the clock moves in one case (a guard against a loop).
const MAX_TICKS: usize = 20_000;

/// Runs one case of a loaded test file; `verbose` keeps what happened
/// even when it passes.
pub fn run(loaded: &Loaded, case: &Case, verbose: bool) -> CaseResult {
    let problems = super::check::case(loaded, case);
    if !problems.is_empty() {
        return CaseResult {
            name: case.name.clone(),
            passed: false,
            failures: problems
                .into_iter()
                .map(|problem| Failure {
                    at: None,
                    subject: "the case as written".into(),
                    expected: serde_json::json!("a case that can run and can fail"),
                    got: serde_json::json!(problem),
                })
                .collect(),
            timeline: Vec::new(),
            incidents: Vec::new(),
        };
    }
    let simulated = simulate(loaded, case);
    let timeline = if simulated.failures.is_empty() && !verbose {
        Vec::new()
    } else {
        simulated.log
    };
    CaseResult {
        name: case.name.clone(),
        passed: simulated.failures.is_empty(),
        failures: simulated.failures,
        timeline,
        incidents: simulated.incidents,
    }
}

/// What a case came to.
pub struct Simulated {
    pub failures: Vec<Failure>,
    /// The incidents at the end, by name.
    pub incidents: Vec<Arc<Incident>>,
    pub sent: Vec<Sent>,
    /// What happened, line by line.
    pub log: Vec<String>,
}

/// Runs a case (checked before) to its end.
pub fn simulate(loaded: &Loaded, case: &Case) -> Simulated {
    let start = EPOCH.parse::<Timestamp>().unwrap_or(Timestamp::UNIX_EPOCH);
    let mut sim = Simulation::new(loaded, case, start);
    let failures = sim.run();
    let incidents = sim.world.state().incidents.values().cloned().collect();
    Simulated {
        failures,
        incidents,
        sent: sim.sent,
        log: sim.log,
    }
}

/// A probe of a policy, and when it checks next.
struct ProbeRun {
    policy: Arc<RemediationPolicy>,
    probe: Arc<Probe>,
    key: crate::signals::prober::ProbeKey,
    next: Timestamp,
    passing: bool,
}

struct Simulation<'a> {
    case: &'a Case,
    start: Timestamp,
    world: SimWorld,
    sensing: Sensing,
    written: WriteMemory,
    /// When each workload's detector timer runs out.
    rechecks: BTreeMap<WorkloadKey, Timestamp>,
    /// The version of each workload the detector last looked at: like the
    /// live one, it looks again when a workload or its pods change, or
    /// its timer runs out.
    looked_at: BTreeMap<WorkloadKey, u64>,
    /// A report deferred (counts only, written a moment ago): the live
    /// detector flushes every 500 ms, so it is looked at again.
    flush_at: Option<Timestamp>,
    /// When each incident is reconciled again, unless it changes first.
    incident_wakes: BTreeMap<(String, String), Timestamp>,
    /// The version of each incident its last reconcile saw.
    reconciled: BTreeMap<(String, String), String>,
    notifier_wakes: BTreeMap<(String, String), Timestamp>,
    notified: BTreeMap<(String, String), String>,
    probes: Vec<ProbeRun>,
    sent: Vec<Sent>,
    log: Vec<String>,
}

impl<'a> Simulation<'a> {
    fn new(loaded: &'a Loaded, case: &'a Case, start: Timestamp) -> Self {
        let namespace = loaded
            .policies
            .first()
            .and_then(|p| p.namespace())
            .unwrap_or_else(|| "default".into());
        let mut workloads: BTreeMap<WorkloadKey, SimWorkload> = BTreeMap::new();
        let specs: Vec<&WorkloadSpec> = loaded
            .file
            .workloads
            .iter()
            .chain(&case.workloads)
            .collect();
        for spec in specs {
            let ns = spec.namespace.clone().unwrap_or_else(|| namespace.clone());
            let key = (ns.clone(), spec.kind, spec.name.clone());
            workloads.insert(key, SimWorkload::new(spec, &ns, start));
        }
        let probes = loaded
            .policies
            .iter()
            .flat_map(|policy| {
                policy.spec.probes.iter().map(move |probe| ProbeRun {
                    policy: Arc::clone(policy),
                    probe: Arc::new(probe.clone()),
                    key: (
                        policy.namespace().unwrap_or_default(),
                        policy.name_any(),
                        probe.name.clone(),
                    ),
                    next: start,
                    passing: true,
                })
            })
            .collect();
        let state = State {
            now: Some(start),
            policies: loaded.policies.clone(),
            channels: loaded.channels.clone(),
            escalations: loaded.escalations.clone(),
            workloads,
            outcomes: case.steps.clone(),
            ..State::default()
        };
        Simulation {
            case,
            start,
            world: SimWorld::new(state, Arc::clone(&loaded.checked)),
            sensing: Sensing::default(),
            written: WriteMemory::default(),
            rechecks: BTreeMap::new(),
            looked_at: BTreeMap::new(),
            flush_at: None,
            incident_wakes: BTreeMap::new(),
            reconciled: BTreeMap::new(),
            notifier_wakes: BTreeMap::new(),
            notified: BTreeMap::new(),
            probes,
            sent: Vec::new(),
            log: Vec::new(),
        }
    }

    fn at(&self, offset: std::time::Duration) -> Timestamp {
        self.start.checked_add(offset).unwrap_or(self.start)
    }

    fn offset(&self, time: Timestamp) -> u64 {
        u64::try_from(time.duration_since(self.start).as_secs()).unwrap_or(0)
    }

    fn run(&mut self) -> Vec<Failure> {
        let case = self.case;
        let last = case
            .timeline
            .iter()
            .map(|i| i.at.as_std())
            .chain(case.expect.iter().map(|e| e.at.as_std()))
            .max()
            .unwrap_or_default();
        let end = self.at(case.until.map_or(last + AFTERWARDS, |u| u.as_std()));
        let mut inputs: Vec<&Input> = case.timeline.iter().collect();
        inputs.sort_by_key(|i| i.at.as_std());
        let mut failures = Vec::new();
        let mut now = self.start;
        let mut reached_end = false;
        for _ in 0..MAX_TICKS {
            self.world.state().now = Some(now);
            let start = self.start;
            for input in inputs
                .iter()
                .filter(|i| start.checked_add(i.at.as_std()).ok() == Some(now))
            {
                self.apply(input, now);
            }
            self.settle(now);
            for expectation in case.expect.iter().filter(|e| self.at(e.at.as_std()) == now) {
                let state = self.world.state();
                let seen: Vec<&Incident> = state.incidents.values().map(AsRef::as_ref).collect();
                failures.extend(expect::incidents(
                    &expectation.at.to_string(),
                    &expectation.incidents,
                    &seen,
                ));
            }
            let Some(next) = self.next_time(now, &inputs, end) else {
                reached_end = true;
                break;
            };
            now = next;
        }
        if !reached_end {
            failures.push(Failure {
                at: Some(format!("{}s", self.offset(now))),
                subject: "the case".into(),
                expected: serde_json::json!(format!("runs to {}s", self.offset(end))),
                got: serde_json::json!(format!(
                    "stopped after {MAX_TICKS} moves of the clock (something requeues too often)"
                )),
            });
        }
        if let Some(wanted) = &case.messages {
            failures.extend(expect::messages(wanted, &self.sent));
        }
        if let Some(wanted) = &case.pages {
            failures.extend(expect::pages(wanted, &self.sent));
        }
        failures
    }

    /// The next time anything is due, up to `end`.
    fn next_time(&self, now: Timestamp, inputs: &[&Input], end: Timestamp) -> Option<Timestamp> {
        let state = self.world.state();
        let due = inputs
            .iter()
            .map(|i| self.at(i.at.as_std()))
            .chain(self.case.expect.iter().map(|e| self.at(e.at.as_std())))
            .chain(self.rechecks.values().copied())
            .chain(self.incident_wakes.values().copied())
            .chain(self.notifier_wakes.values().copied())
            .chain(
                self.probes
                    .iter()
                    .filter(|p| self.matters(p, &state))
                    .map(|p| p.next),
            )
            .chain(self.flush_at)
            .chain(
                state
                    .workloads
                    .values()
                    .filter_map(SimWorkload::rolls_out_at),
            )
            .filter(|at| *at > now)
            .min()?;
        (due <= end).then_some(due)
    }

    /// Lets every part react at `now` until nothing changes.
    fn settle(&mut self, now: Timestamp) {
        for _ in 0..MAX_ROUNDS {
            let mut moved = self.roll_out(now);
            moved |= self.check_probes(now);
            moved |= self.detect(now);
            moved |= self.reconcile_incidents(now, moved);
            moved |= self.notify(now);
            if !moved {
                break;
            }
        }
    }

    /// Rollouts that finish by `now`.
    fn roll_out(&mut self, now: Timestamp) -> bool {
        let mut state = self.world.state();
        let mut moved = false;
        for sim in state.workloads.values_mut() {
            moved |= sim.settle(now);
        }
        // A recovered target's probes pass from then on.
        let healed = std::mem::take(&mut state.healed);
        drop(state);
        for target in healed {
            for run in self.probes.iter_mut().filter(|r| r.probe.target == target) {
                run.passing = true;
            }
        }
        moved
    }
}
