//! decide's tests, each one reconcile: an incident and an observation in,
//! a decision out. This file holds the world a test arranges ([`World`])
//! and the helpers the tests share; the tests stand by concern: the
//! ladder's run, what holds a step, verification, and hostile manifests.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};

use super::*;
use crate::crd::{ActionKind, StepRecord, WorkloadRef};
use crate::incident::decision::{
    AFTER_CHANGE, AFTER_RECORD, BREAKER_RECHECK, NEEDS_HUMAN, REMEDIATION_BLOCKED, TARGET_MISSING,
};
use crate::incident::settle::{MAX_APPLY_FAILURES, settle, settle_gave_up, settle_refused};
use crate::pod::PodFacts;
use crate::remediation::safety::AppliedStep;
use crate::{
    crd::RemediationPolicy,
    names::{REVISION_ANNOTATION, STEP_ANNOTATION},
    remediation::actions::{AnyInputs, rollback},
};

mod gitops;
mod holds;
mod hostile;
mod ladder;
mod long_steps;
mod verification;

const UID: &str = "0123abcd-0000-0000-0000-000000000000";

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// What one reconcile is given. By default: a new incident under the
/// `crash` rule of a two-step Auto policy, its target `api` rolled out
/// halfway with nothing ready. [`World::at`] hands out the incident and the
/// observation at a time; a clone goes on to the next reconcile.
#[derive(Clone)]
struct World {
    incident: Incident,
    seen: Observation,
}

impl World {
    fn new() -> Self {
        let incident = serde_json::from_value(json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-crashloop", "namespace": "hg", "uid": UID, "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"title": "CrashLoopBackOff on Deployment/api", "severity": "P1",
                "type": "ServiceOutage", "target": {"kind": "Deployment", "name": "api"},
                "policy": "guard", "rule": "crash",
                "source": {"kind": "Detected", "policy": "guard", "rule": "crash",
                    "dedupKey": "Deployment/api/CrashLoopBackOff"}},
        }))
        .unwrap();
        let seen = Observation {
            // Every test says when it decides (see `seen_at`).
            now: at("2026-01-01T00:00:00Z"),
            policy: Some(two_steps("Auto")),
            policy_problems: Arc::default(),
            workload: Some(api(false, json!({}))),
            pods: Vec::new(),
            inputs: AnyInputs::default(),
            target_steps: Vec::new(),
            approval_pending: None,
            target_holder: None,
            policy_steps: Vec::new(),
            evidence: Some(crate::crd::Evidence::default()),
            probe: None,
            verify_probes: Vec::new(),
            probe_results: Vec::new(),
            dependency_down: None,
            job: None,
            workflow_probe: None,
            gitops_owner: None,
            sync: None,
        };
        World { incident, seen }
    }

    /// The incident as an earlier reconcile left it: in `phase`, detected
    /// at midnight, its evidence taken, no steps yet.
    fn phase(mut self, phase: &str) -> Self {
        self.incident.status = Some(
            serde_json::from_value(json!({"phase": phase,
                "milestones": {"detectedAt": "2026-01-01T00:00:00Z"}, "evidence": {}, "steps": []}))
            .unwrap(),
        );
        self
    }

    /// One more step in the status, named after its action.
    fn step(mut self, action: &str, result: &str, started: &str) -> Self {
        let record = serde_json::from_value(json!({"id": format!("0123abcd-0-{action}-1"),
            "name": action, "action": action, "rule": "crash", "attempt": 1, "result": result,
            "startedAt": started, "changes": ["something changed"]}))
        .unwrap();
        let status = self
            .incident
            .status
            .as_mut()
            .expect("a phase before the steps");
        status.steps.push(record);
        self
    }

    /// A responder's approval of `step` in the incident's spec.
    fn approved(mut self, step: &str, by: &str) -> Self {
        self.incident.spec.approvals.push(crate::crd::Approval {
            step: step.into(),
            by: by.into(),
            round: None,
        });
        self
    }

    /// The two-step policy in another mode.
    fn mode(self, mode: &str) -> Self {
        self.policy(two_steps(mode))
    }

    fn policy(mut self, policy: Arc<RemediationPolicy>) -> Self {
        self.seen.policy = Some(policy);
        self
    }

    /// The incident's RemediationPolicy deleted.
    fn without_policy(mut self) -> Self {
        self.seen.policy = None;
        self
    }

    fn target(mut self, workload: Workload) -> Self {
        self.seen.workload = Some(workload);
        self
    }

    /// The target rolled out and every replica ready.
    fn ready(self) -> Self {
        self.target(api(true, json!({})))
    }

    /// The target deleted.
    fn no_target(mut self) -> Self {
        self.seen.workload = None;
        self
    }

    fn pods(mut self, pods: Vec<PodFacts>) -> Self {
        self.seen.pods = pods;
        self
    }

    /// What the pending step's plan reads.
    fn inputs(mut self, inputs: AnyInputs) -> Self {
        self.seen.inputs = inputs;
        self
    }

    /// What a rollback plans from: the target's two revisions.
    fn rollback_history(self) -> Self {
        self.inputs(history())
    }

    /// Steps any incident applied to the target (the cooldown counts them).
    fn target_steps(mut self, steps: Vec<AppliedStep>) -> Self {
        self.seen.target_steps = steps;
        self
    }

    /// Steps applied under the policy (its circuit breaker counts them).
    fn policy_steps(mut self, steps: Vec<AppliedStep>) -> Self {
        self.seen.policy_steps = steps;
        self
    }

    /// Another incident on the target whose `step` awaits approval.
    fn approval_pending(mut self, incident: &str, step: &str) -> Self {
        self.seen.approval_pending = Some((incident.into(), step.into()));
        self
    }

    /// Another incident whose step the target carries, not yet concluded.
    fn target_holder(mut self, incident: &str) -> Self {
        self.seen.target_holder = Some(incident.into());
        self
    }

    /// An open `incident` on `target`, which the policy's targets depend on.
    fn dependency_down(mut self, incident: &str, target: WorkloadRef) -> Self {
        self.seen.dependency_down = Some((incident.into(), target));
        self
    }

    fn incident(&self) -> Incident {
        self.incident.clone()
    }

    fn seen_at(&self, now: &str) -> Observation {
        // The policy's problems as the World would tell them.
        let policy_problems = Arc::new(
            self.seen
                .policy
                .as_ref()
                .map(|p| crate::validation::policy(&p.spec))
                .unwrap_or_default(),
        );
        Observation {
            now: at(now),
            policy_problems,
            ..self.seen.clone()
        }
    }

    /// The incident, and what the reconcile at `now` observes.
    fn at(&self, now: &str) -> (Incident, Observation) {
        (self.incident(), self.seen_at(now))
    }
}

/// An incident mitigating, whose first step (a rollback) was recorded at
/// 00:00:05 and has not run yet.
fn pending_rollback() -> World {
    World::new()
        .phase("Mitigating")
        .step("rollback", "Pending", "2026-01-01T00:00:05Z")
}

/// An incident mitigating, whose rollback was applied at `started` and is
/// being verified.
fn verifying_rollback(started: &str) -> World {
    World::new()
        .phase("Mitigating")
        .step("rollback", "Verifying", started)
}

fn policy(mode: &str, actions: Value, safety: Value) -> Arc<RemediationPolicy> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
            "metadata": {"name": "guard", "namespace": "hg"},
            "spec": {
                "mode": mode,
                "safety": safety,
                "targets": [{"kind": "Deployment", "names": ["api"]}],
                "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff"},
                    "severity": "P1", "type": "ServiceOutage", "actions": actions,
                    "verify": {"timeout": "5m", "holdDown": "1m"}}],
            }
        }))
        .unwrap(),
    )
}

fn two_steps(mode: &str) -> Arc<RemediationPolicy> {
    policy(
        mode,
        json!([{"action": "rollback"}, {"action": "restart"}]),
        json!({}),
    )
}

/// The incident as the previous reconcile left it.
fn after(mut incident: Incident, decision: &Decision) -> Incident {
    incident.status = Some(decision.status.clone());
    incident
}

/// A Deployment at revision 2 (revision 1 in its history): rolled out
/// and ready, or with its rollout stuck halfway and nothing ready.
fn api(ready: bool, annotations: Value) -> Workload {
    let (ready_replicas, updated) = if ready { (2, 2) } else { (0, 1) };
    let mut annotations = annotations;
    annotations[REVISION_ANNOTATION] = json!("2");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api", "namespace": "hg", "uid": "d-1", "generation": 2,
            "annotations": annotations},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "app", "image": "api:2"}]}}},
        "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": updated,
            "readyReplicas": ready_replicas, "availableReplicas": ready_replicas},
    }))
    .unwrap();
    deployment.into()
}

/// `api` carrying the pending rollback's mark: the step was applied.
fn api_carrying_the_rollback(ready: bool) -> Workload {
    api(ready, json!({STEP_ANNOTATION: "0123abcd-0-rollback-1"}))
}

fn history() -> AnyInputs {
    let set = |revision: &str| -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("api-{revision}"), "annotations": {REVISION_ANNOTATION: revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "d-1"}]},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "app", "image": format!("api:{revision}")}]}}}
        }))
        .unwrap()
    };
    AnyInputs::of(rollback::Inputs {
        replica_sets: vec![set("1"), set("2")],
        last_healthy: None,
    })
}

/// A pod of `api` in CrashLoopBackOff, the `crash` rule's symptom.
fn crashing_pod() -> PodFacts {
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({
        "metadata": {"name": "api-1", "labels": {"pod-template-hash": "h"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-h", "uid": "r"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "app", "image": "i", "imageID": "",
            "ready": false, "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    }))
    .unwrap()
    .into()
}

fn reasons(decision: &Decision) -> Vec<&str> {
    decision.events.iter().map(|e| e.reason.as_str()).collect()
}

fn last_step(decision: &Decision) -> &StepRecord {
    decision.status.steps.last().unwrap()
}

fn blocked_condition(decision: &Decision) -> &Condition {
    decision
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == REMEDIATION_BLOCKED)
        .unwrap()
}

fn has_condition_reason(decision: &Decision, reason: &str) -> bool {
    decision
        .status
        .conditions
        .iter()
        .any(|c| c.reason == reason)
}
