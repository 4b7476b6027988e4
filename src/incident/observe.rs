//! Observe: read the world an incident's next decision depends on, once,
//! before anything is decided. Shared stores first (the policy, the
//! incidents on the same target and policy); the API only for what no store
//! holds (the target's pods, evidence, what the pending step's plan reads)
//! and for the target itself when a step is about to change it at the
//! start of a reconcile, so the write is decided on its latest state (see
//! [`TargetRead`] for the passes that follow).

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{evidence, world::World};
use crate::{
    crd::{Evidence, Incident, RemediationPolicy, StepResult, WorkflowStage},
    names::INCIDENT_ANNOTATION,
    pod::PodFacts,
    reconcile::Error,
    remediation::{actions, ladder, safety},
    workload::Workload,
};

/// What one reconcile knows of the world.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Whole seconds: the API server stores times at that precision, and a
    /// status compared against a round-tripped one must not differ by nanos.
    pub now: Timestamp,
    /// The incident's RemediationPolicy, if it names one that exists.
    pub policy: Option<Arc<RemediationPolicy>>,
    /// That policy's problems (none: it is valid).
    pub policy_problems: Arc<Vec<crate::validation::Problem>>,
    /// The target; None when it does not exist.
    pub workload: Option<Workload>,
    /// The target's pods (those its owner references tie to it).
    pub pods: Vec<PodFacts>,
    /// What the pending step's plan reads.
    pub inputs: actions::AnyInputs,
    /// Steps that changed the same target, across all its incidents.
    pub target_steps: Vec<safety::AppliedStep>,
    /// Another open incident on the same target whose step awaits
    /// approval, and that step: no automatic action on the target meanwhile.
    pub approval_pending: Option<(String, String)>,
    /// Another incident whose step the target carries and that has not
    /// concluded yet: it holds the target (one actor per target).
    pub target_holder: Option<String>,
    /// Steps that changed something under the same policy.
    pub policy_steps: Vec<safety::AppliedStep>,
    /// Captured when the incident has none yet and is open.
    pub evidence: Option<Evidence>,
    /// For a rule whose symptom is a failing probe: how that probe stands.
    pub probe: Option<ProbeHealth>,
    /// How the probes the rule's verification also waits for stand.
    pub verify_probes: Vec<ProbeHealth>,
    /// The last result of each probe verification reads, in words.
    pub probe_results: Vec<String>,
    /// An open incident on a workload the policy's targets depend on: its
    /// name and target. Actions wait for it.
    pub dependency_down: Option<(String, crate::crd::WorkloadRef)>,
    /// The Job of the step verifying, if it is a `runJob` step (or a
    /// restore waiting for its Job).
    pub job: Option<actions::run_job::Outcome>,
    /// Whether the probe a restore verifies its data with passes.
    pub workflow_probe: Option<bool>,
    /// The GitOps object the target's labels name (or the incident's
    /// current hold names), when the target is reconciled from Git.
    pub gitops_owner: Option<crate::crd::GitOpsOwner>,
    /// That object as read, when a step Git would undo is about to run or
    /// the incident holds (or just lifted) its sync.
    pub sync: Option<crate::gitops::SyncRead>,
}

/// How a probe stands, for verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeHealth {
    Failing,
    /// Passed its success threshold in a row.
    Healthy,
    /// Not running (yet), or not enough results since it started.
    Unknown,
}

/// Where a step about to run reads its target from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetRead {
    /// The API, as the target is now.
    Fresh,
    /// The shared store: in a pass that follows one of the same reconcile
    /// (which changed nothing in the world, and recorded or approved the
    /// step). The write is conditional on the version read, so a store
    /// behind the target costs a conflict, and the pass is made again on a
    /// fresh read.
    Stored,
}

/// Reads what the next decision about `incident` needs, from `world`.
pub async fn observe<W: World>(
    world: &W,
    incident: &Incident,
    read: TargetRead,
) -> Result<Observation, Error> {
    let namespace = incident
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let now = world.now();
    let spec = &incident.spec;
    let policy = incident
        .policy_name()
        .and_then(|name| world.policy(&namespace, name));
    let status = incident.status.as_ref();
    let open = incident.is_open();

    // The step about to be applied, if any: its plan reads the target fresh.
    let target = &spec.target;
    let stored = world.stored_workload(&namespace, target.kind, &target.name);
    let guarded = ladder::guards(policy.as_deref(), stored.as_ref());
    let ladder = ladder::resolve(incident, policy.as_deref(), guarded);
    let pending = status
        .and_then(|s| s.steps.last())
        .filter(|record| record.result == StepResult::Pending)
        .and_then(|record| ladder.as_ref()?.rung_of(record));

    let workload = match (pending, read) {
        (Some(_), TargetRead::Fresh) => {
            world
                .read_workload(&namespace, target.kind, &target.name)
                .await?
        }
        (Some(_), TargetRead::Stored) | (None, _) => stored,
    };
    let pods = match &workload {
        Some(workload) => world.pods_of(workload).await?,
        None => Vec::new(),
    };
    let account = policy
        .as_ref()
        .and_then(|p| p.spec.service_account_name.as_deref());
    let inputs = match (pending, &workload) {
        (Some(rung), Some(workload)) => world.inputs(account, rung, workload).await?,
        _ => actions::AnyInputs::default(),
    };

    let policy_name = policy.as_ref().map(|p| p.name_any());
    let others = Others::read(
        &world.incidents_in(&namespace),
        incident,
        policy.as_deref(),
        workload.as_ref(),
    );
    let hold = status
        .and_then(|s| s.sync_holds.last())
        .filter(|h| h.is_held() || (open && h.is_verifying()));
    let gitops_owner = hold.map(|h| h.owner.clone()).or_else(|| {
        workload
            .as_ref()
            .and_then(|w| crate::gitops::owner_of(w.labels(), w.annotations()))
    });
    let undone_by_git = pending.is_some_and(|rung| rung.act().undone_by_git());
    let capturing = open && status.and_then(|s| s.evidence.as_ref()).is_none();
    let sync = match &gitops_owner {
        Some(owner) if hold.is_some() || undone_by_git || capturing => {
            Some(world.sync(&namespace, account, owner, target).await?)
        }
        _ => None,
    };
    let evidence = match status.and_then(|s| s.evidence.as_ref()) {
        None if open => Some(
            world
                .evidence(
                    &namespace,
                    target,
                    workload.as_ref(),
                    &pods,
                    status
                        .and_then(|s| s.detection.as_ref())
                        .map(|d| d.affected_pods.as_slice())
                        .unwrap_or_default(),
                    now,
                )
                .await,
        )
        .map(|captured| evidence::with_sync(captured, sync.as_ref())),
        _ => None,
    };
    let probes = Probes {
        world,
        namespace: &namespace,
        policy: policy.as_deref(),
        policy_name: policy_name.as_deref().unwrap_or_default(),
    };
    let rule = ladder.as_ref().and_then(|l| l.rule.as_ref());
    let probe = rule
        .filter(|rule| rule.when.symptom == crate::crd::Symptom::ProbeFailing)
        .and_then(|rule| rule.when.probe.as_deref())
        .map(|probe| probes.health(probe));
    let verify_probes = rule
        .map(|rule| {
            rule.verify
                .probes
                .iter()
                .map(|p| probes.health(p))
                .collect()
        })
        .unwrap_or_default();
    let mut probe_results = probes.results(rule);
    // A runJob step verifies by its Job first.
    let job = match status.and_then(|s| s.steps.last()).filter(|r| {
        r.result == StepResult::Verifying
            && (actions::resolve(r.action).verified_by_job()
                || r.workflow
                    .as_ref()
                    .is_some_and(|w| w.stage == WorkflowStage::AwaitRestore))
    }) {
        Some(record) => {
            let (outcome, lines) = world.job_outcome(&namespace, account, &record.id).await?;
            probe_results.splice(0..0, lines);
            probe_results.truncate(MAX_PROBE_RESULTS);
            Some(outcome)
        }
        None => None,
    };
    let workflow_probe = status
        .and_then(|s| s.steps.last())
        .filter(|r| {
            r.workflow
                .as_ref()
                .is_some_and(|w| w.stage == WorkflowStage::VerifyData)
        })
        .and_then(|r| ladder.as_ref()?.rung_of(r))
        .and_then(|rung| rung.action.restore_data.as_ref()?.verify_probe.clone())
        .map(|probe| probes.health(&probe) == ProbeHealth::Healthy);
    let Others {
        target_steps,
        approval_pending,
        target_holder,
        policy_steps,
        dependency_down,
    } = others;
    let policy_problems = policy
        .as_deref()
        .map(|p| world.policy_problems(p))
        .unwrap_or_default();
    Ok(Observation {
        now,
        policy,
        policy_problems,
        workload,
        pods,
        inputs,
        target_steps,
        approval_pending,
        target_holder,
        policy_steps,
        evidence,
        probe,
        verify_probes,
        job,
        workflow_probe,
        probe_results,
        dependency_down,
        gitops_owner,
        sync,
    })
}

/// How many probe results an observation keeps, for the ledger.
const MAX_PROBE_RESULTS: usize = 6;

/// What the other incidents in the namespace say about acting now, from
/// the shared store.
struct Others {
    target_steps: Vec<safety::AppliedStep>,
    approval_pending: Option<(String, String)>,
    target_holder: Option<String>,
    policy_steps: Vec<safety::AppliedStep>,
    dependency_down: Option<(String, crate::crd::WorkloadRef)>,
}

impl Others {
    /// From the namespace's incidents.
    fn read(
        incidents: &[Arc<Incident>],
        incident: &Incident,
        policy: Option<&RemediationPolicy>,
        workload: Option<&Workload>,
    ) -> Self {
        let target = &incident.spec.target;
        let name = incident.name_any();
        let on_target = same_namespace(incidents, |other| other.spec.target == *target);
        let mut target_steps = safety::applied_steps(on_target.iter().map(AsRef::as_ref));
        // Steps of other incidents about to run count too; this incident's
        // own pending step is the one being decided.
        target_steps.extend(safety::pending_steps(
            on_target
                .iter()
                .filter(|other| other.name_any() != name)
                .map(AsRef::as_ref),
        ));
        let approval_pending = on_target
            .iter()
            .filter(|other| other.name_any() != name)
            .filter(|other| other.is_open())
            .filter_map(|other| {
                let step = other.status.as_ref()?.steps.last()?;
                (step.result == StepResult::AwaitingApproval)
                    .then(|| (other.name_any(), step.name.clone()))
            })
            .next();
        let target_holder = workload.and_then(|w| holder(w, &name, &on_target));
        let policy_steps = match policy.map(ResourceExt::name_any) {
            Some(policy) => safety::applied_steps(
                same_namespace(incidents, |other| other.policy_name() == Some(&policy))
                    .iter()
                    .map(AsRef::as_ref),
            ),
            None => Vec::new(),
        };
        let depends_on = policy
            .map(|p| p.spec.depends_on.as_slice())
            .unwrap_or_default();
        let dependency_down = depends_on.iter().find_map(|dependency| {
            same_namespace(incidents, |other| {
                other.spec.target == *dependency && other.is_open() && other.name_any() != name
            })
            .into_iter()
            .map(|other| other.name_any())
            .min()
            .map(|other| (other, dependency.clone()))
        });
        Others {
            target_steps,
            approval_pending,
            target_holder,
            policy_steps,
            dependency_down,
        }
    }
}

/// How the policy's probes stand, as the prober last saw them.
struct Probes<'a, W> {
    world: &'a W,
    namespace: &'a str,
    policy: Option<&'a RemediationPolicy>,
    policy_name: &'a str,
}

impl<W: World> Probes<'_, W> {
    fn key(&self, probe: &str) -> (String, String, String) {
        (
            self.namespace.to_owned(),
            self.policy_name.to_owned(),
            probe.to_owned(),
        )
    }

    /// A probe's rule is verified by the probe, not by pods; and a rule may
    /// name probes its verification waits for as well.
    fn health(&self, probe: &str) -> ProbeHealth {
        let threshold = self
            .policy
            .and_then(|p| p.spec.probes.iter().find(|spec| spec.name == probe))
            .map_or(1, |spec| spec.success_threshold);
        match self.world.probe(&self.key(probe)) {
            Some(tracker) if tracker.failing => ProbeHealth::Failing,
            Some(tracker) if tracker.healthy(threshold) => ProbeHealth::Healthy,
            _ => ProbeHealth::Unknown,
        }
    }

    /// The last result of each probe the rule reads, in words.
    fn results(&self, rule: Option<&crate::crd::PolicyRule>) -> Vec<String> {
        rule.into_iter()
            .flat_map(|rule| rule.when.probe.iter().chain(rule.verify.probes.iter()))
            .filter_map(|probe| {
                let last = self.world.probe(&self.key(probe))?.last?;
                let verdict = if last.inconclusive {
                    "inconclusive"
                } else if last.passed {
                    "passed"
                } else {
                    "failed"
                };
                Some(format!(
                    "probe {probe} {verdict} at {}: {}",
                    last.at, last.detail
                ))
            })
            .take(MAX_PROBE_RESULTS)
            .collect()
    }
}

/// The incident that holds the target: the one its mark names (written
/// with the workload's resourceVersion, so two writers cannot both hold it),
/// while that incident is open and its marked step has not concluded. An
/// incident the store does not show yet, or a step it does not show yet,
/// still holds: a lagging cache never releases a lock.
fn holder(workload: &Workload, me: &str, on_target: &[Arc<Incident>]) -> Option<String> {
    let holder = workload.annotations().get(INCIDENT_ANNOTATION)?;
    if holder == me {
        return None;
    }
    let step = workload.applied_step()?;
    let Some(incident) = on_target.iter().find(|i| i.name_any() == *holder) else {
        // Deleted, or the mark is from an incident on another namespace's
        // copy: nothing to wait for.
        return None;
    };
    let status = incident.status.as_ref()?;
    if status.phase.is_some_and(|p| p.is_closed()) {
        return None;
    }
    let concluded = status.steps.iter().any(|s| {
        s.id == step
            && matches!(
                s.result,
                StepResult::Succeeded
                    | StepResult::Failed
                    | StepResult::Skipped
                    | StepResult::DryRun
            )
    });
    (!concluded).then(|| holder.clone())
}

/// The namespace's incidents that satisfy `keep`.
fn same_namespace(
    incidents: &[Arc<Incident>],
    keep: impl Fn(&Incident) -> bool,
) -> Vec<Arc<Incident>> {
    incidents
        .iter()
        .filter(|other| keep(other))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::{Value, json};

    use super::*;
    use crate::names::STEP_ANNOTATION;

    fn marked_by(incident: &str, step: &str) -> Workload {
        let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "api",
            "annotations": {INCIDENT_ANNOTATION: incident, STEP_ANNOTATION: step}}}))
        .unwrap();
        d.into()
    }

    fn other(phase: &str, step_result: Option<&str>) -> Arc<Incident> {
        let mut status = json!({"phase": phase});
        if let Some(result) = step_result {
            status["steps"] = json!([{"id": "s-1", "name": "restart", "action": "restart",
                "attempt": 1, "result": result}]);
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
                "metadata": {"name": "api-notready"},
                "spec": {"title": "t", "severity": "P1", "type": "ServiceOutage",
                         "target": {"kind": "Deployment", "name": "api"}},
                "status": status,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_target_is_held_until_the_marking_incidents_step_concludes() {
        let mark = marked_by("api-notready", "s-1");
        let cases: [(Vec<Arc<Incident>>, Option<&str>); 6] = [
            (
                vec![other("Mitigating", Some("Verifying"))],
                Some("api-notready"),
            ),
            (
                vec![other("Mitigating", Some("Pending"))],
                Some("api-notready"),
            ),
            // The store has not caught up with the step yet: still held.
            (vec![other("Mitigating", None)], Some("api-notready")),
            (vec![other("Mitigating", Some("Failed"))], None),
            (vec![other("Resolved", Some("Verifying"))], None),
            // Gone: nothing to wait for.
            (vec![], None),
        ];
        for (on_target, expected) in cases {
            let seen: Vec<Value> = on_target
                .iter()
                .map(|i| serde_json::to_value(&i.status).unwrap())
                .collect();
            assert_eq!(
                holder(&mark, "api-crashloop", &on_target).as_deref(),
                expected,
                "{seen:?}"
            );
        }
        assert_eq!(
            holder(
                &mark,
                "api-notready",
                &[other("Mitigating", Some("Verifying"))]
            ),
            None,
            "an incident never waits for itself"
        );
    }
}
