//! The simulated world the incident pipeline runs in: the same
//! [`World`](crate::incident::world::World) the live controller reads and
//! writes, backed by the case's workloads and incidents on a virtual clock.
//! A step's change is made the way the case says it turns out.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::{
    case::{Outcome, StepOutcome},
    cluster::SimWorkload,
};
use crate::{
    context::PlannedEvent,
    crd::{
        ActionKind, EscalationPolicy, Evidence, GitOpsOwner, Incident, IncidentStatus,
        NotificationChannel, RemediationPolicy, WorkloadKind, WorkloadRef,
    },
    incident::{
        act::{ActError, HeldFor},
        decision::{Decision, Effect},
        world::{RevertOutcome, World},
    },
    pod::PodFacts,
    reconcile::Error,
    remediation::{
        actions::{self, ApplyError, run_job::Outcome as JobOutcome, scale::Scale},
        ladder::Rung,
    },
    signals::{prober::ProbeKey, tracker::Tracker},
    workload::Workload,
};

/// A workload's key: namespace, kind, name.
pub type WorkloadKey = (String, WorkloadKind, String);

/// An Event the pipeline published, with when and on which incident.
#[derive(Clone, Debug)]
pub struct Published {
    pub at: Timestamp,
    pub incident: String,
    pub event: PlannedEvent,
}

/// Everything the simulated world holds.
#[derive(Default)]
pub struct State {
    pub now: Option<Timestamp>,
    pub policies: Vec<Arc<RemediationPolicy>>,
    pub channels: Vec<Arc<NotificationChannel>>,
    pub escalations: Vec<Arc<EscalationPolicy>>,
    pub workloads: BTreeMap<WorkloadKey, SimWorkload>,
    pub incidents: BTreeMap<(String, String), Arc<Incident>>,
    pub probes: HashMap<ProbeKey, Tracker>,
    pub outcomes: Vec<StepOutcome>,
    pub events: Vec<Published>,
    /// Targets a recovering step healed: their probes pass from then on.
    pub healed: Vec<WorkloadRef>,
    /// The incident's steps whose Jobs failed (a `runJob` that fails).
    pub failed_jobs: Vec<String>,
    pub versions: u64,
}

impl State {
    pub fn now(&self) -> Timestamp {
        self.now.unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// Stores an incident as the API server would: a new resourceVersion,
    /// and a new generation when its spec changed.
    pub fn store(&mut self, mut incident: Incident) -> Arc<Incident> {
        self.versions += 1;
        incident.metadata.resource_version = Some(self.versions.to_string());
        let key = (
            incident.namespace().unwrap_or_default(),
            incident.name_any(),
        );
        let generation = match self.incidents.get(&key) {
            Some(stored) if stored.spec == incident.spec => stored.metadata.generation,
            Some(stored) => Some(stored.metadata.generation.unwrap_or(0) + 1),
            None => Some(1),
        };
        incident.metadata.generation = generation;
        if incident.metadata.uid.is_none() {
            incident.metadata.uid = Some(format!("uid-{}", self.versions));
        }
        if incident.metadata.creation_timestamp.is_none() {
            incident.metadata.creation_timestamp = Some(Time(self.now()));
        }
        let stored = Arc::new(incident);
        self.incidents.insert(key, Arc::clone(&stored));
        stored
    }

    /// The outcome the case gives a step of an incident, in its round.
    fn outcome_of(&self, incident: &str, step: &str, attempt: i32) -> Option<&StepOutcome> {
        self.outcomes.iter().find(|o| {
            o.step == step
                && o.incident.as_deref().is_none_or(|i| i == incident)
                && o.attempt.is_none_or(|a| a == attempt)
        })
    }
}

/// The simulated world, shared by the pipeline's passes.
#[derive(Default)]
pub struct SimWorld {
    state: Mutex<State>,
    /// The policies' problems, checked once for all the cases of a file
    /// (as the live operator checks each generation once).
    pub checked: Arc<crate::validation::Checked>,
}

impl SimWorld {
    pub fn new(state: State, checked: Arc<crate::validation::Checked>) -> Self {
        SimWorld {
            state: Mutex::new(state),
            checked,
        }
    }

    /// The state, to read or change between passes.
    pub fn state(&self) -> MutexGuard<'_, State> {
        // One thread runs a simulation: a poisoned lock only follows a
        // panic that already failed it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl World for SimWorld {
    fn now(&self) -> Timestamp {
        let now = self.state().now();
        Timestamp::from_second(now.as_second()).unwrap_or(now)
    }

    fn policy(&self, namespace: &str, name: &str) -> Option<Arc<RemediationPolicy>> {
        self.state()
            .policies
            .iter()
            .find(|p| p.namespace().as_deref() == Some(namespace) && p.name_any() == name)
            .cloned()
    }

    fn policy_problems(&self, policy: &RemediationPolicy) -> Arc<Vec<crate::validation::Problem>> {
        self.checked.policy(policy)
    }

    fn stored_workload(&self, namespace: &str, kind: WorkloadKind, name: &str) -> Option<Workload> {
        self.state()
            .workloads
            .get_mut(&(namespace.to_owned(), kind, name.to_owned()))
            .map(SimWorkload::object)
    }

    async fn read_workload(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
    ) -> Result<Option<Workload>, Error> {
        Ok(self.stored_workload(namespace, kind, name))
    }

    async fn pods_of(&self, workload: &Workload) -> Result<Vec<PodFacts>, Error> {
        let key = (workload.namespace(), workload.kind(), workload.name());
        Ok(self
            .state()
            .workloads
            .get_mut(&key)
            .map(|w| w.pods().as_ref().clone())
            .unwrap_or_default())
    }

    fn incidents_in(&self, namespace: &str) -> Vec<Arc<Incident>> {
        self.state()
            .incidents
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, incident)| Arc::clone(incident))
            .collect()
    }

    async fn inputs(
        &self,
        _account: Option<&str>,
        rung: &Rung,
        workload: &Workload,
    ) -> Result<actions::AnyInputs, Error> {
        let key = (workload.namespace(), workload.kind(), workload.name());
        let state = self.state();
        let assumed = match state.workloads.get(&key) {
            Some(sim) => actions::Assumed {
                replica_sets: sim.replica_sets(),
                last_healthy: sim.healthy_revision,
                config_maps: sim.config_maps.clone(),
            },
            None => actions::Assumed::default(),
        };
        Ok(rung.act().assumed(&rung.action, workload, &assumed))
    }

    async fn sync(
        &self,
        _namespace: &str,
        _account: Option<&str>,
        _owner: &GitOpsOwner,
        _target: &WorkloadRef,
    ) -> Result<crate::gitops::SyncRead, Error> {
        // No GitOps controller runs in a test: its object reads as gone.
        Ok(crate::gitops::SyncRead::Missing)
    }

    /// What the live capture reads, from the simulated workload: its
    /// revision and rollout history, its pods (no events, no logs).
    async fn evidence(
        &self,
        namespace: &str,
        target: &WorkloadRef,
        _workload: Option<&Workload>,
        pods: &[PodFacts],
        affected: &[String],
        now: Timestamp,
    ) -> Evidence {
        let key = (namespace.to_owned(), target.kind, target.name.clone());
        let mut state = self.state();
        let Some(sim) = state.workloads.get_mut(&key) else {
            return Evidence {
                captured_at: Some(Time(now)),
                notes: vec![format!("{target} not found")],
                ..Evidence::default()
            };
        };
        let workload = sim.object();
        let (described, omitted) = crate::incident::evidence::pods_evidence(pods, affected);
        Evidence {
            captured_at: Some(Time(now)),
            revision: workload.revision().map(str::to_owned),
            rollout_history: crate::incident::evidence::history_lines(
                workload.metadata().uid.as_deref(),
                &sim.replica_sets(),
            ),
            pods: described,
            omitted: i64::try_from(omitted).unwrap_or(i64::MAX),
            notes: vec!["simulated: no events or logs".into()],
            ..Evidence::default()
        }
    }

    fn probe(&self, key: &ProbeKey) -> Option<Tracker> {
        self.state().probes.get(key).cloned()
    }

    async fn job_outcome(
        &self,
        _namespace: &str,
        _account: Option<&str>,
        step_id: &str,
    ) -> Result<(JobOutcome, Vec<String>), Error> {
        let failed = self.state().failed_jobs.iter().any(|id| id == step_id);
        Ok(if failed {
            (
                JobOutcome::Failed("the case says it fails".into()),
                Vec::new(),
            )
        } else {
            (JobOutcome::Succeeded, Vec::new())
        })
    }

    fn backoff_left(&self, _key: &str) -> Option<Duration> {
        None
    }

    fn backoff_failures(&self, _key: &str) -> u32 {
        0
    }

    fn backoff_reset(&self, _key: &str) {}

    async fn hold_finalizer(
        &self,
        incident: &Arc<Incident>,
        hold: bool,
    ) -> Result<Arc<Incident>, Error> {
        let finalizer = crate::incident::wind_down::WRITERS_DOWN_FINALIZER;
        let has = incident.finalizers().iter().any(|f| f == finalizer);
        if has == hold {
            return Ok(Arc::clone(incident));
        }
        let mut changed = Incident::clone(incident);
        let finalizers = changed.metadata.finalizers.get_or_insert_with(Vec::new);
        finalizers.retain(|f| f != finalizer);
        if hold {
            finalizers.push(finalizer.to_owned());
        }
        Ok(self.state().store(changed))
    }

    async fn mark(
        &self,
        incident: &Incident,
        status: &IncidentStatus,
    ) -> Result<Arc<Incident>, Error> {
        Ok(save(&mut self.state(), incident, status))
    }

    async fn act(
        &self,
        _account: Option<&str>,
        workload: &Workload,
        effect: &Effect,
        held_for: HeldFor<'_>,
    ) -> Result<Vec<String>, ActError> {
        let lines = effect.notes.clone();
        if effect.hold_only || effect.dry_run {
            return Ok(lines);
        }
        let incident = held_for
            .holder
            .split_once('/')
            .map_or(held_for.holder, |(_, name)| name)
            .to_owned();
        let mut state = self.state();
        let now = state.now();
        let step = state
            .incidents
            .get(&(workload.namespace(), incident.clone()))
            .and_then(|i| i.status.as_ref()?.steps.get(effect.entry).cloned());
        let Some(step) = step else {
            return Ok(lines);
        };
        let outcome = state
            .outcome_of(&incident, &step.name, step.attempt)
            .map(|o| (o.outcome, o.message.clone()));
        let (outcome, message) = outcome.unwrap_or((Outcome::Fails, None));
        if outcome == Outcome::Refused {
            let why = message.unwrap_or_else(|| "refused (as the case says)".into());
            return Err(ActError::Apply(ApplyError::Foreign(why)));
        }
        let key = (workload.namespace(), workload.kind(), workload.name());
        let Some(sim) = state.workloads.get_mut(&key) else {
            return Ok(lines);
        };
        let recovers = outcome == Outcome::Recovers;
        let mark = Some((incident.clone(), step.id.clone()));
        match step.action {
            ActionKind::Rollback => {
                let to = effect
                    .planned
                    .change
                    .get::<actions::rollback::Rollback>()
                    .map(|c| c.revision);
                sim.roll_back(to);
                sim.roll(recovers, mark, now);
            }
            ActionKind::Scale => {
                if let Some(replicas) = effect
                    .planned
                    .change
                    .get::<Scale>()
                    .and_then(|c| c.body["spec"]["replicas"].as_i64())
                    .and_then(|r| i32::try_from(r).ok())
                {
                    sim.scale_to(replicas);
                }
                // New resources are a new pod template.
                let body = effect.planned.change.get::<Scale>().map(|c| &c.body);
                if body.is_some_and(|b| !b["spec"]["template"].is_null()) {
                    sim.new_template(("healing-guard.io/simulated-change", step.id.clone()));
                }
                sim.roll(recovers, mark, now);
            }
            ActionKind::RestoreConfig => {
                if outcome == Outcome::Recovers {
                    for state in sim.config_maps.values_mut() {
                        *state = actions::ConfigAssumed::Unchanged;
                    }
                }
                sim.roll(recovers, mark, now);
            }
            ActionKind::Restart => {
                use actions::restart::{Change, Restart};
                match effect.planned.change.get::<Restart>() {
                    // DeletePods marks, then evicts its first batch (if
                    // any); its other batches follow.
                    Some(change @ Change::Apply(_)) if !change.stamps_template() => {
                        if effect.first_batch.is_some() {
                            sim.evict(recovers, mark, now);
                        } else {
                            sim.set_mark(mark);
                        }
                    }
                    Some(Change::EvictPods(_) | Change::EvictStuck { .. }) => {
                        sim.evict(recovers, mark, now);
                    }
                    _ => {
                        // A rollout restart stamps the pod template.
                        let stamp = now.to_string();
                        sim.new_template((crate::names::RESTARTED_AT_ANNOTATION, stamp));
                        sim.roll(recovers, mark, now);
                    }
                }
            }
            ActionKind::Patch
                if effect
                    .planned
                    .change
                    .get::<actions::patch::PatchObject>()
                    .is_some_and(|c| c.patches(&workload.kind().to_string(), &sim.name)) =>
            {
                sim.roll(recovers, mark, now);
            }
            ActionKind::RunJob | ActionKind::RestoreData => {
                if !recovers {
                    state.failed_jobs.push(step.id.clone());
                } else if let Some(sim) = state.workloads.get_mut(&key) {
                    sim.recover(now);
                }
            }
            _ if recovers => sim.recover(now),
            _ => {}
        }
        if outcome == Outcome::Recovers {
            state.healed.push(WorkloadRef {
                kind: workload.kind(),
                name: workload.name(),
            });
        }
        // The ledger reads as the live one: what the case says of the
        // outcome shows in how verification goes, not in a line of its own.
        Ok(lines)
    }

    async fn resume(
        &self,
        _namespace: &str,
        _account: Option<&str>,
        _owner: &GitOpsOwner,
    ) -> Result<(), ActError> {
        Ok(())
    }

    async fn push_revert(
        &self,
        _namespace: &str,
        _account: Option<&str>,
        _plan: &crate::gitops::revert::RevertPlan,
    ) -> Result<RevertOutcome, ActError> {
        Ok(Err("no Git server in a test".into()))
    }

    async fn record(
        &self,
        incident: &Incident,
        _workload: Option<&Workload>,
        decision: Decision,
        _changed: bool,
    ) -> Result<Option<Arc<Incident>>, Error> {
        let mut state = self.state();
        let at = state.now();
        let name = incident.name_any();
        let saved = (incident.status.as_ref() != Some(&decision.status))
            .then(|| save(&mut state, incident, &decision.status));
        for event in decision.events {
            state.events.push(Published {
                at,
                incident: name.clone(),
                event,
            });
        }
        Ok(saved)
    }

    async fn after_apply(&self) {}
}

/// Saves the incident controller's part of a status onto the stored
/// incident (the detector's and notifier's parts are theirs).
fn save(state: &mut State, incident: &Incident, status: &IncidentStatus) -> Arc<Incident> {
    let key = (
        incident.namespace().unwrap_or_default(),
        incident.name_any(),
    );
    let mut latest = state
        .incidents
        .get(&key)
        .map_or_else(|| incident.clone(), |i| Incident::clone(i));
    let kept = latest.status.take().unwrap_or_default();
    latest.status = Some(IncidentStatus {
        detection: kept.detection,
        communication: kept.communication,
        ..status.clone()
    });
    state.store(latest)
}
