//! One case on a virtual clock: the timeline's inputs change the simulated
//! world, and the operator's own parts react in the order the live
//! operator's do (the detector writes what it sees, the incident pipeline
//! reconciles, the notifier records and sends) until nothing moves; then
//! the clock jumps to the next time anything is due.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::{
    case::{Case, Input, WorkloadSpec},
    cluster::{PodsShow, SimWorkload},
    expect::{self, Failure, Sent},
    load::Loaded,
    output::CaseResult,
    world::{SimWorld, State, WorkloadKey},
};
use crate::{
    crd::{Incident, Probe, RemediationPolicy},
    detector::{
        guarded::guarding_policy,
        report::Report,
        sensing::Sensing,
        write_plan::{DetectionPlan, WriteMemory, WritePlan},
    },
    incident::world::World as _,
    notifier::{compose, plan as notify},
    signals::{
        alerts::{Alert, Notification},
        prober::ProbeReport,
        tracker::Outcome as ProbeOutcome,
    },
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

/// Runs one case of a loaded test file.
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
            world: SimWorld::new(state),
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

    /// A timeline input changes the world.
    fn apply(&mut self, input: &Input, now: Timestamp) {
        let mut state = self.world.state();
        let namespace_of =
            |state: &State, name: &str| state.workloads.keys().find(|(_, _, n)| n == name).cloned();
        if let Some(pods) = &input.pods
            && let Some(key) = namespace_of(&state, &pods.workload)
            && let Some(sim) = state.workloads.get_mut(&key)
        {
            sim.show(
                PodsShow {
                    state: pods.state,
                    restarts: pods.restarts,
                    count: pods.count,
                },
                now,
            );
        }
        if let Some(available) = &input.available
            && let Some(key) = namespace_of(&state, &available.workload)
            && let Some(sim) = state.workloads.get_mut(&key)
        {
            sim.set_available(Some(available.replicas));
        }
        if let Some(name) = &input.rollout_stuck
            && let Some(key) = namespace_of(&state, name)
            && let Some(sim) = state.workloads.get_mut(&key)
        {
            sim.set_stuck(true);
        }
        if let Some(release) = &input.release
            && let Some(key) = namespace_of(&state, &release.workload)
            && let Some(sim) = state.workloads.get_mut(&key)
        {
            sim.release(&release.image, now);
        }
        if let Some(changed) = &input.config_changed
            && let Some(key) = namespace_of(&state, &changed.workload)
            && let Some(sim) = state.workloads.get_mut(&key)
        {
            sim.config_maps.insert(
                changed.config_map.clone(),
                crate::remediation::actions::ConfigAssumed::Changed,
            );
        }
        for probe in &input.probes {
            for run in self.probes.iter_mut().filter(|r| {
                r.probe.name == probe.name && probe.policy.as_ref().is_none_or(|p| *p == r.key.1)
            }) {
                run.passing = probe.passing;
                run.next = now;
            }
        }
        let responders = |state: &mut State, name: &str, change: &dyn Fn(&mut Incident)| {
            let found = state
                .incidents
                .iter()
                .find(|((_, n), _)| n == name)
                .map(|(_, i)| Incident::clone(i));
            if let Some(mut incident) = found {
                change(&mut incident);
                state.store(incident);
            }
        };
        let at = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
        if let Some(declared) = &input.declare {
            let mut incident = crate::crd::Incident::clone(declared);
            incident.status = None;
            if incident.metadata.namespace.is_none() {
                incident.metadata.namespace = state.policies.first().and_then(|p| p.namespace());
            }
            self.log.push(format!(
                "{:>6}s  {} declared",
                self.offset(now),
                incident.name_any()
            ));
            state.store(incident);
        }
        if let Some(ack) = &input.acknowledge {
            let mut value = ack.value.clone();
            value.at.get_or_insert(at.clone());
            responders(&mut state, &ack.incident, &|i| {
                i.spec.acknowledged = Some(value.clone());
            });
        }
        if let Some(approve) = &input.approve {
            responders(&mut state, &approve.incident, &|i| {
                i.spec.approvals.push(approve.value.clone());
            });
        }
        if let Some(resolve) = &input.resolve {
            responders(&mut state, &resolve.incident, &|i| {
                i.spec.resolution = Some(resolve.value.clone());
            });
        }
        if let Some(decline) = &input.decline {
            responders(&mut state, &decline.incident, &|i| {
                i.spec.declined = Some(decline.value.clone());
            });
        }
        drop(state);
        if !input.alerts.is_empty() {
            self.deliver_alerts(input, now);
        }
    }

    /// Alertmanager delivers the input's alerts.
    fn deliver_alerts(&mut self, input: &Input, now: Timestamp) {
        let alerts = input
            .alerts
            .iter()
            .map(|alert| Alert {
                status: alert.status.clone(),
                labels: alert.labels.clone(),
                annotations: BTreeMap::new(),
                starts_at: self.start.to_string(),
                fingerprint: alert
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            })
            .collect();
        let notification = Notification {
            version: "4".into(),
            status: "firing".into(),
            receiver: "healing-guard-operator".into(),
            alerts,
        };
        let policies: Vec<Arc<RemediationPolicy>> = self
            .world
            .state()
            .policies
            .iter()
            .filter(|p| !p.spec.alerts.is_empty())
            .filter(|p| self.world.checked.valid(p))
            .cloned()
            .collect();
        for report in self.sensing.alert_reports(&notification, &policies, now) {
            let key = (report.namespace.clone(), report.key());
            self.sensing.queue(key, report);
        }
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

    /// The probes' checks due by `now`, as the prober makes them.
    fn check_probes(&mut self, now: Timestamp) -> bool {
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
    fn matters(&self, run: &ProbeRun, state: &State) -> bool {
        let healthy = state
            .probes
            .get(&run.key)
            .is_some_and(|t| !t.failing && t.healthy(run.probe.success_threshold));
        !run.passing || !healthy || state.incidents.values().any(|i| i.is_open())
    }

    /// The detector looks at every guarded workload and writes what it saw.
    fn detect(&mut self, now: Timestamp) -> bool {
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
    fn write(&mut self, report: &Report, now: Timestamp) -> Written {
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

    /// Reconciles each incident that changed, is due, or whose world moved.
    fn reconcile_incidents(&mut self, now: Timestamp, world_moved: bool) -> bool {
        let mut moved = false;
        let (incidents, policies) = {
            let state = self.world.state();
            let incidents: Vec<Arc<Incident>> = state.incidents.values().cloned().collect();
            (incidents, state.policies.clone())
        };
        let id_of = |i: &Incident| (i.namespace().unwrap_or_default(), i.name_any());
        // As the live controller's watches map them: an incident's change
        // wakes the others on its target, and those whose policy depends
        // on its target.
        let changed: Vec<&Arc<Incident>> = incidents
            .iter()
            .filter(|i| self.reconciled.get(&id_of(i)) != i.resource_version().as_ref())
            .collect();
        let woken = |incident: &Incident| {
            let namespace = incident.namespace();
            let depends_on = |target: &crate::crd::WorkloadRef| {
                incident.policy_name().is_some_and(|name| {
                    policies.iter().any(|p| {
                        p.name_any() == *name
                            && p.namespace() == namespace
                            && p.spec.depends_on.contains(target)
                    })
                })
            };
            incident.is_open()
                && changed.iter().any(|other| {
                    other.namespace() == namespace
                        && other.name_any() != incident.name_any()
                        && (other.spec.target == incident.spec.target
                            || depends_on(&other.spec.target))
                })
        };
        let chosen: Vec<Arc<Incident>> = incidents
            .iter()
            .filter(|incident| {
                let id = id_of(incident);
                let changed = self.reconciled.get(&id) != incident.resource_version().as_ref();
                let due = self.incident_wakes.get(&id).is_some_and(|at| *at <= now);
                changed || due || (world_moved && incident.is_open()) || woken(incident)
            })
            .cloned()
            .collect();
        for incident in chosen {
            let id = id_of(&incident);
            let version = incident.resource_version().unwrap_or_default();
            let before = incident.status.clone();
            let requeue = futures::executor::block_on(crate::incident::reconcile_in(
                &self.world,
                Arc::clone(&incident),
            ));
            let latest = self.world.state().incidents.get(&id).cloned();
            let after_version = latest
                .as_ref()
                .and_then(|i| i.resource_version())
                .unwrap_or_default();
            if let Some(latest) = &latest {
                self.note_changes(now, &id.1, before.as_ref(), latest);
            }
            moved |= after_version != version;
            self.reconciled.insert(id.clone(), after_version);
            match requeue {
                Ok(Some(wait)) => {
                    self.incident_wakes
                        .insert(id, now.checked_add(wait).unwrap_or(now));
                }
                Ok(None) => {
                    self.incident_wakes.remove(&id);
                }
                Err(error) => {
                    self.log.push(format!(
                        "{:>6}s  reconcile of {} failed: {error}",
                        self.offset(now),
                        id.1
                    ));
                    self.incident_wakes.insert(
                        id,
                        now.checked_add(std::time::Duration::from_secs(5))
                            .unwrap_or(now),
                    );
                }
            }
        }
        moved
    }

    /// Lines for what a reconcile changed: the phase, each step's result.
    fn note_changes(
        &mut self,
        now: Timestamp,
        name: &str,
        before: Option<&crate::crd::IncidentStatus>,
        latest: &Incident,
    ) {
        let Some(after) = latest.status.as_ref() else {
            return;
        };
        let at = self.offset(now);
        if before.and_then(|b| b.phase) != after.phase {
            self.log.push(format!(
                "{at:>6}s  {name} phase {}",
                after.phase.map(|p| p.as_str()).unwrap_or("-")
            ));
        }
        for (index, step) in after.steps.iter().enumerate() {
            let was = before.and_then(|b| b.steps.get(index)).map(|s| s.result);
            if was != Some(step.result) {
                self.log.push(format!(
                    "{at:>6}s  {name} step {} ({}) {}{}",
                    step.name,
                    step.action,
                    step.result.as_str(),
                    step.message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
        }
    }

    /// The notifier records and sends for each incident.
    fn notify(&mut self, now: Timestamp) -> bool {
        let mut moved = false;
        let ids: Vec<(String, String)> = self.world.state().incidents.keys().cloned().collect();
        for id in ids {
            // Record, then send: two moves at most per round.
            for _ in 0..3 {
                let state = self.world.state();
                let Some(incident) = state.incidents.get(&id).cloned() else {
                    break;
                };
                let version = incident.resource_version().unwrap_or_default();
                let due = self.notifier_wakes.get(&id).is_some_and(|at| *at <= now);
                if self.notified.get(&id) == Some(&version) && !due {
                    break;
                }
                let policy = incident
                    .policy_name()
                    .and_then(|name| {
                        state.policies.iter().find(|p| {
                            p.name_any() == *name && p.namespace().as_deref() == Some(id.0.as_str())
                        })
                    })
                    .cloned();
                let names = notify::wiring_names(&incident, policy.as_deref());
                let wiring = notify::Wiring::resolve(
                    &names,
                    |name| {
                        state
                            .channels
                            .iter()
                            .find(|c| {
                                c.name_any() == name
                                    && c.namespace().as_deref() == Some(id.0.as_str())
                            })
                            .cloned()
                    },
                    |name| {
                        state
                            .escalations
                            .iter()
                            .find(|e| {
                                e.name_any() == name
                                    && e.namespace().as_deref() == Some(id.0.as_str())
                            })
                            .cloned()
                    },
                );
                drop(state);
                let decided = notify::plan(&incident, &wiring, self.world.now());
                self.notified.insert(id.clone(), version);
                match decided.next {
                    notify::Move::Report => {
                        let recorded = incident.communication().cloned().unwrap_or_default();
                        let next = notify::reported(
                            &recorded,
                            crate::communication::report::config_map_name(&incident),
                        );
                        self.store_communication(&incident, next);
                        moved = true;
                    }
                    notify::Move::AwaitChange => {
                        self.notifier_wakes.remove(&id);
                        break;
                    }
                    notify::Move::Record { next, .. } => {
                        self.store_communication(&incident, *next);
                        moved = true;
                    }
                    notify::Move::Send { by_channel, wake } => {
                        self.send(&incident, &wiring, &by_channel, now);
                        self.notifier_wakes
                            .insert(id.clone(), now.checked_add(wake).unwrap_or(now));
                        moved = true;
                    }
                    notify::Move::Wait(wait) => {
                        self.notifier_wakes
                            .insert(id.clone(), now.checked_add(wait).unwrap_or(now));
                        break;
                    }
                }
            }
        }
        moved
    }

    fn store_communication(&self, incident: &Incident, next: crate::crd::CommunicationStatus) {
        let mut state = self.world.state();
        let id = (
            incident.namespace().unwrap_or_default(),
            incident.name_any(),
        );
        let Some(current) = state.incidents.get(&id).cloned() else {
            return;
        };
        let mut changed = Incident::clone(&current);
        changed
            .status
            .get_or_insert_with(Default::default)
            .communication = Some(next);
        state.store(changed);
    }

    /// Sends what is due, each message as its channel would receive it;
    /// every receiver takes it.
    fn send(
        &mut self,
        incident: &Incident,
        wiring: &notify::Wiring,
        by_channel: &BTreeMap<String, Vec<usize>>,
        now: Timestamp,
    ) {
        let mut recorded = incident.communication().cloned().unwrap_or_default();
        let at = self.offset(now);
        for (name, indexes) in by_channel {
            let Some(channel) = wiring.channels.get(name) else {
                continue;
            };
            let templates = channel.spec.templates.clone();
            for &index in indexes {
                let Some(delivery) = recorded.outbox.get(index).cloned() else {
                    continue;
                };
                let outcome = match compose::compose(
                    incident,
                    &channel.spec,
                    &templates,
                    &delivery,
                    &recorded,
                    now,
                ) {
                    Ok(composed) => {
                        let text = if delivery.event == crate::crd::NotifyEvent::Paged {
                            delivery
                                .key
                                .rsplit('/')
                                .next()
                                .unwrap_or_default()
                                .to_owned()
                        } else {
                            composed.text.clone()
                        };
                        self.sent.push(Sent {
                            at,
                            channel: name.clone(),
                            incident: incident.name_any(),
                            event: delivery.event,
                            text,
                        });
                        self.log.push(format!(
                            "{at:>6}s  {} told {name}: {}",
                            incident.name_any(),
                            delivery.event
                        ));
                        receiver_answer(&composed, incident)
                    }
                    Err(outcome) => outcome,
                };
                if let Some(slot) = recorded.outbox.get_mut(index) {
                    *slot = crate::communication::outbox::settle(&delivery, &outcome, now);
                }
            }
        }
        self.store_communication(incident, recorded);
    }
}

/// What a receiver answers a message it takes: a status page names the
/// incident it opened, so the next update goes to it.
fn receiver_answer(
    composed: &compose::Composed,
    incident: &Incident,
) -> crate::communication::send::Outcome {
    let external_ref = match &composed.request {
        compose::Request::StatusPage { opened, .. } => Some(
            opened
                .clone()
                .unwrap_or_else(|| format!("simulated-{}", incident.name_any())),
        ),
        _ => None,
    };
    crate::communication::send::Outcome::Accepted { external_ref }
}

enum Written {
    /// Written, or nothing to write; whether an incident changed.
    Done(bool),
    Deferred,
}

/// Whether an incident of that key is open with its signal not yet cleared,
/// as the detector's writer would tell.
fn open_uncleared(
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
