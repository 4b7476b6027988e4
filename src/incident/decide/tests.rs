//! Every phase, every step result, approvals, safety refusals and a
//! policy edited under a running ladder, each as one reconcile: an
//! incident and an observation in, a decision out. Each test arranges its
//! world with [`World`], then decides and looks at the decision.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};

use super::*;
use crate::crd::{ActionKind, StepRecord, WorkloadRef};
use crate::incident::decision::{
    AFTER_RECORD, BREAKER_RECHECK, NEEDS_HUMAN, REMEDIATION_BLOCKED, TARGET_MISSING,
};
use crate::incident::settle::{MAX_APPLY_FAILURES, settle, settle_gave_up, settle_refused};
use crate::pod::PodFacts;
use crate::remediation::safety::AppliedStep;
use crate::{
    crd::RemediationPolicy,
    names::{REVISION_ANNOTATION, STEP_ANNOTATION},
    remediation::actions::{AnyInputs, rollback},
};

mod hostile;

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
        Observation {
            now: at(now),
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

#[test]
fn a_new_incident_opens_records_its_first_step_and_counts_once() {
    let (new, seen) = World::new().at("2026-01-01T00:00:05Z");

    let decision = decide(&new, &seen);

    assert_eq!(decision.status.phase, Some(Phase::Mitigating));
    assert!(decision.status.evidence.is_some(), "evidence before acting");
    let step = last_step(&decision);
    assert_eq!(
        (step.name.as_str(), step.result, step.rule.as_deref()),
        ("rollback", StepResult::Pending, Some("crash"))
    );
    assert_eq!(step.id, "0123abcd-0-rollback-1");
    assert_eq!(decision.effect, None, "recorded first, run next time");
    assert_eq!(reasons(&decision), ["Triggered", "StepRecorded"]);
    assert_eq!(
        decision.tallies,
        [Tally::Opened {
            source: "Detected",
            rule: "crash".into()
        }]
    );
    assert_eq!(decision.requeue, Some(AFTER_RECORD));
}

#[test]
fn a_pending_step_is_planned_then_settled_as_applied() {
    let (pending, seen) = pending_rollback()
        .rollback_history()
        .at("2026-01-01T00:00:06Z");

    let decision = decide(&pending, &seen);

    let effect = decision.effect.clone().unwrap();
    assert!(!effect.dry_run && !effect.follow_up);
    assert!(effect.planned.change.get::<rollback::Rollback>().is_some());
    assert_eq!(
        last_step(&decision).result,
        StepResult::Pending,
        "nothing is recorded as done before it is done"
    );
    assert!(decision.events.is_empty());

    let settled = settle(decision, vec![], &pending, at("2026-01-01T00:00:06Z"));
    let step = last_step(&settled);
    assert_eq!(step.result, StepResult::Verifying);
    assert_eq!(
        step.changes,
        ["Deployment/api rolled back from revision 2 to revision 1"]
    );
    assert_eq!(reasons(&settled), ["StepApplied"]);
    assert_eq!(settled.workload_events[0].reason, "RemediationApplied");
    assert!(settled.tallies.is_empty(), "counted when the verdict is in");
}

#[test]
fn a_step_found_on_the_workload_after_a_crash_is_not_applied_again() {
    let (pending, seen) = pending_rollback()
        .target(api_carrying_the_rollback(false))
        .at("2026-01-01T00:00:06Z");

    let decision = decide(&pending, &seen);

    assert_eq!(decision.effect, None);
    assert_eq!(last_step(&decision).result, StepResult::Verifying);
}

#[test]
fn verification_holds_then_resolves_with_its_metrics() {
    let unhealthy = verifying_rollback("2026-01-01T00:00:06Z");
    let healthy = unhealthy.clone().ready();
    let verifying = unhealthy.incident();

    let first = decide(&verifying, &healthy.seen_at("2026-01-01T00:00:30Z"));
    assert_eq!(first.status.phase, Some(Phase::Monitoring));
    assert_eq!(
        last_step(&first).healthy_since,
        Some(Time(at("2026-01-01T00:00:30Z")))
    );
    assert_eq!(first.requeue, Some(Duration::from_secs(61)));

    let holding = after(verifying, &first);
    let early = decide(&holding, &healthy.seen_at("2026-01-01T00:01:00Z"));
    assert_eq!(
        early.status, first.status,
        "nothing until the hold-down ends"
    );

    let done = decide(&holding, &healthy.seen_at("2026-01-01T00:01:30Z"));
    assert_eq!(done.status.phase, Some(Phase::Resolved));
    assert_eq!(last_step(&done).result, StepResult::Succeeded);
    assert_eq!(
        done.status.milestones.mitigated_at,
        Some(Time(at("2026-01-01T00:00:30Z")))
    );
    assert_eq!(reasons(&done), ["Remediated"]);
    assert!(matches!(
        done.tallies.as_slice(),
        [
            Tally::StepEnded {
                result: StepResult::Succeeded,
                ..
            },
            Tally::Mitigated { seconds: 30.0 },
            Tally::Resolved { seconds: 90.0 },
        ]
    ));

    let relapse = decide(&holding, &unhealthy.seen_at("2026-01-01T00:01:00Z"));
    assert_eq!(relapse.status.phase, Some(Phase::Mitigating));
    assert_eq!(last_step(&relapse).healthy_since, None);
}

#[test]
fn a_step_that_does_not_help_fails_the_next_is_recorded_then_the_ladder_exhausts() {
    let world = verifying_rollback("2026-01-01T00:00:00Z");
    let (verifying, seen) = world.at("2026-01-01T00:05:00Z");
    let failed = decide(&verifying, &seen);
    assert_eq!(last_step(&failed).result, StepResult::Failed);
    assert_eq!(reasons(&failed), ["StepFailed"]);
    assert!(matches!(
        failed.tallies.as_slice(),
        [Tally::StepEnded {
            result: StepResult::Failed,
            ..
        }]
    ));

    let next = decide(
        &after(verifying, &failed),
        &world.seen_at("2026-01-01T00:05:01Z"),
    );
    assert_eq!(last_step(&next).name, "restart");
    assert_eq!(last_step(&next).id, "0123abcd-1-restart-1");

    let exhausted = World::new()
        .phase("Mitigating")
        .step("rollback", "Failed", "2026-01-01T00:00:00Z")
        .step("restart", "Failed", "2026-01-01T00:05:01Z");
    let (both_failed, seen) = exhausted.at("2026-01-01T00:11:00Z");
    let escalated = decide(&both_failed, &seen);
    assert_eq!(escalated.status.phase, Some(Phase::Escalated));
    assert!(crate::conditions::is_true(
        &escalated.status.conditions,
        NEEDS_HUMAN
    ));
    assert_eq!(escalated.tallies, [Tally::LadderExhausted]);
    let again = decide(
        &after(both_failed, &escalated),
        &exhausted.seen_at("2026-01-01T00:12:00Z"),
    );
    assert!(
        again.events.is_empty() && again.tallies.is_empty(),
        "escalated once"
    );
    assert_eq!(again.status, escalated.status);
}

#[test]
fn dry_run_walks_the_ladder_without_changing_the_phase() {
    let world = World::new().mode("DryRun");
    let (new, seen) = world.at("2026-01-01T00:00:05Z");
    let opened = decide(&new, &seen);
    assert_eq!(opened.status.phase, Some(Phase::Triggered));

    let pending = after(new, &opened);
    let planned = decide(
        &pending,
        &world
            .clone()
            .rollback_history()
            .seen_at("2026-01-01T00:00:06Z"),
    );
    assert!(planned.effect.as_ref().unwrap().dry_run);
    let settled = settle(planned, vec![], &pending, at("2026-01-01T00:00:06Z"));
    assert_eq!(last_step(&settled).result, StepResult::DryRun);
    assert!(settled.workload_events.is_empty(), "nothing changed");
    assert!(matches!(
        settled.tallies.as_slice(),
        [Tally::StepEnded {
            result: StepResult::DryRun,
            ..
        }]
    ));

    let walked = world
        .phase("Triggered")
        .step("rollback", "DryRun", "2026-01-01T00:00:06Z")
        .step("restart", "DryRun", "2026-01-01T00:00:07Z");
    let (both, seen) = walked.at("2026-01-01T00:00:08Z");
    let complete = decide(&both, &seen);
    assert_eq!(reasons(&complete), ["DryRunComplete"]);
    assert_eq!(complete.status.phase, Some(Phase::Triggered));
    let again = decide(
        &after(both, &complete),
        &walked.seen_at("2026-01-01T00:00:09Z"),
    );
    assert!(again.events.is_empty());
}

#[test]
fn a_step_that_needs_approval_waits_for_it() {
    let world = World::new().mode("RequireApproval");
    let (new, seen) = world.at("2026-01-01T00:00:05Z");
    let opened = decide(&new, &seen);
    assert_eq!(last_step(&opened).result, StepResult::AwaitingApproval);
    assert_eq!(opened.status.phase, Some(Phase::Triggered));

    let waiting = after(new, &opened);
    let still = decide(&waiting, &world.seen_at("2026-01-01T00:10:00Z"));
    assert_eq!(last_step(&still).result, StepResult::AwaitingApproval);
    assert_eq!(still.effect, None);

    let mut approved = waiting.clone();
    approved.spec.approvals = vec![crate::crd::Approval {
        step: "rollback".into(),
        by: "alice".into(),
        round: None,
    }];
    let go = decide(&approved, &world.seen_at("2026-01-01T00:10:01Z"));
    assert_eq!(last_step(&go).result, StepResult::Pending);
    assert_eq!(go.status.phase, Some(Phase::Mitigating));
}

#[test]
fn the_safety_limits_hold_a_step_back_and_say_why() {
    let world = World::new()
        .policy(policy(
            "Auto",
            json!([{"action": "rollback"}, {"action": "restart"}]),
            json!({"cooldown": "5m", "circuitBreakerThreshold": 2}),
        ))
        .phase("Mitigating")
        .step("rollback", "Failed", "2026-01-01T00:00:00Z");
    let step = |minute: i64, result| AppliedStep {
        started: at("2026-01-01T00:00:00Z") + k8s_openapi::jiff::SignedDuration::from_mins(minute),
        finished: None,
        result,
    };

    let (failed_before, cooling) = world
        .clone()
        .target_steps(vec![step(0, StepResult::Failed)])
        .at("2026-01-01T00:02:00Z");
    let held = decide(&failed_before, &cooling);
    assert_eq!(held.status.steps.len(), 1, "no new step");
    let blocked = blocked_condition(&held);
    assert_eq!(
        (blocked.status.as_str(), blocked.reason.as_str()),
        ("True", "SafetyLimit")
    );
    assert_eq!(held.requeue, Some(Duration::from_secs(181)));
    assert_eq!(reasons(&held), [REMEDIATION_BLOCKED]);

    let broken = world
        .clone()
        .policy_steps(vec![
            step(0, StepResult::Failed),
            step(10, StepResult::Failed),
        ])
        .seen_at("2026-01-01T01:00:00Z");
    let refused = decide(&failed_before, &broken);
    assert!(has_condition_reason(&refused, "CircuitBreakerOpen"));
    assert_eq!(refused.requeue, Some(BREAKER_RECHECK));

    let allowed = decide(
        &after(failed_before, &held),
        &world.seen_at("2026-01-01T01:00:00Z"),
    );
    assert_eq!(allowed.status.steps.len(), 2);
    assert_eq!(blocked_condition(&allowed).status, "False");
}

#[test]
fn the_ready_floor_refuses_a_step_and_the_ladder_goes_on() {
    // Both ready, maxUnavailable 25% of 2 rounds to 0: the floor holds.
    // A pod crash-loops still (the rule's symptom), ready between crashes.
    let world = World::new()
        .policy(policy(
            "Auto",
            json!([{"action": "restart"}, {"action": "scale", "scale": {"replicas": 4}}]),
            json!({"minReadyReplicas": 2}),
        ))
        .phase("Mitigating")
        .step("restart", "Pending", "2026-01-01T00:00:05Z")
        .pods(vec![crashing_pod()]);
    let (pending, seen) = world.clone().ready().at("2026-01-01T00:00:06Z");
    let fine = decide(&pending, &seen);
    assert!(fine.effect.is_some());

    let mut recreating = api(true, json!({}));
    if let Workload::Deployment(d) = &mut recreating {
        let d = Arc::make_mut(d);
        d.spec.as_mut().unwrap().strategy =
            Some(serde_json::from_value(json!({"type": "Recreate"})).unwrap());
    }
    let refused = decide(
        &pending,
        &world.target(recreating).seen_at("2026-01-01T00:00:06Z"),
    );
    assert_eq!(refused.effect, None);
    assert_eq!(last_step(&refused).result, StepResult::Failed);
    assert_eq!(reasons(&refused), ["StepRefused"]);
}

#[test]
fn a_policy_edited_under_a_running_ladder_never_runs_the_recorded_step_as_another_action() {
    // Recorded as a rollback; then the rule's first step became a scale of the same name.
    let world = pending_rollback().policy(policy(
        "Auto",
        json!([{"name": "rollback", "action": "scale", "scale": {"replicas": 5}}, {"action": "restart"}]),
        json!({}),
    ));
    let (pending, seen) = world.at("2026-01-01T00:00:06Z");

    let decision = decide(&pending, &seen);

    assert_eq!(
        decision.effect, None,
        "the scale never runs in the rollback's place"
    );
    assert_eq!(last_step(&decision).result, StepResult::Skipped);
    assert_eq!(reasons(&decision), ["StepSkipped"]);
    // The next reconcile goes on with the ladder as it now is.
    let next = decide(
        &after(pending, &decision),
        &world.seen_at("2026-01-01T00:00:07Z"),
    );
    let step = last_step(&next);
    assert_eq!(
        (step.name.as_str(), step.action),
        ("rollback", ActionKind::Scale)
    );
}

#[test]
fn a_missing_target_waits_and_a_closed_incident_does_nothing() {
    let (new, nowhere) = World::new().no_target().at("2026-01-01T00:00:05Z");
    let missing = decide(&new, &nowhere);
    assert!(missing.status.steps.is_empty());
    assert!(missing.requeue.is_some_and(|r| r <= TARGET_MISSING));

    let (resolved, seen) = World::new()
        .phase("Resolved")
        .step("rollback", "Succeeded", "2026-01-01T00:00:00Z")
        .at("2026-01-01T00:30:00Z");
    let decision = decide(&resolved, &seen);
    assert_eq!(decision.effect, None);
    assert!(decision.events.is_empty() && decision.tallies.is_empty());
    assert_eq!(decision.status.steps, resolved.status.unwrap().steps);
}

#[test]
fn a_pod_by_pod_restart_goes_on_batch_by_batch_while_it_verifies() {
    let unready = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({
        "metadata": {"name": "api-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]}}))
    .unwrap()
    .into();
    let (verifying, seen) = World::new()
        .policy(policy(
            "Auto",
            json!([{"action": "restart", "restart": {"method": "DeletePods"}}]),
            json!({}),
        ))
        .phase("Mitigating")
        .step("restart", "Verifying", "2026-01-01T00:00:05Z")
        .pods(vec![unready])
        .at("2026-01-01T00:00:06Z");

    let decision = decide(&verifying, &seen);

    let effect = decision.effect.clone().unwrap();
    assert!(effect.follow_up);
    let settled = settle(
        decision,
        vec!["pod api-1 evicted".into()],
        &verifying,
        seen.now,
    );
    let step = last_step(&settled);
    assert_eq!(step.result, StepResult::Verifying);
    assert_eq!(step.changes, ["something changed", "pod api-1 evicted"]);
    assert!(settled.events.is_empty());
}

#[test]
fn responders_close_an_incident_whatever_the_ladder_is_doing() {
    let (mut verifying, seen) =
        verifying_rollback("2026-01-01T00:00:06Z").at("2026-01-01T00:01:00Z");
    verifying.metadata.generation = Some(2);
    verifying.spec.resolution = Some(crate::crd::Resolution {
        by: "bob".into(),
        root_cause: "bad config".into(),
        summary: "fixed by hand".into(),
        follow_ups: Vec::new(),
    });

    let decision = decide(&verifying, &seen);

    assert_eq!(decision.status.phase, Some(Phase::Resolved));
    assert_eq!(decision.effect, None);
    assert!(matches!(
        decision.tallies.as_slice(),
        [Tally::Resolved { seconds: 60.0 }]
    ));
}

#[test]
fn a_step_verifying_when_its_policy_went_away_still_concludes() {
    let gone = verifying_rollback("2026-01-01T00:00:06Z")
        .ready()
        .without_policy();
    let (verifying, seen) = gone.at("2026-01-01T00:00:30Z");
    let holding = decide(&verifying, &seen);
    assert_eq!(holding.status.phase, Some(Phase::Monitoring));

    let done = decide(
        &after(verifying, &holding),
        &gone.seen_at("2026-01-01T00:01:30Z"),
    );
    assert_eq!(done.status.phase, Some(Phase::Resolved));
    assert_eq!(last_step(&done).result, StepResult::Succeeded);
}

#[test]
fn a_pending_step_whose_policy_is_gone_waits_and_resumes_when_it_is_back() {
    let world = pending_rollback();
    let (pending, gone) = world.clone().without_policy().at("2026-01-01T00:00:06Z");
    let waiting = decide(&pending, &gone);
    assert_eq!(waiting.effect, None);
    assert_eq!(
        last_step(&waiting).result,
        StepResult::Pending,
        "not skipped"
    );
    assert_eq!(blocked_condition(&waiting).reason, "PolicyNotFound");
    assert_eq!(reasons(&waiting), [REMEDIATION_BLOCKED]);
    assert!(waiting.requeue.is_some());

    let back = world
        .clone()
        .rollback_history()
        .seen_at("2026-01-01T00:05:00Z");
    let resumed = decide(&after(pending.clone(), &waiting), &back);
    assert!(resumed.effect.is_some());
    let condition = blocked_condition(&resumed);
    assert_eq!(
        condition.status, "False",
        "unblocked once the policy is back: {condition:?}"
    );

    let mut renamed = pending;
    renamed.spec.rule = Some("gone".into());
    let no_rule = decide(&renamed, &world.seen_at("2026-01-01T00:00:06Z"));
    assert!(has_condition_reason(&no_rule, "RuleNotFound"));
}

#[test]
fn a_reopened_incident_runs_its_ladder_again() {
    let (mut reopened, seen) = World::new()
        .phase("Resolved")
        .step("rollback", "Succeeded", "2026-01-01T00:00:06Z")
        .at("2026-01-01T00:10:00Z");
    let status = reopened.status.as_mut().unwrap();
    status.detection = Some(crate::crd::DetectionStatus {
        reopens: 1,
        ..Default::default()
    });

    let decision = decide(&reopened, &seen);

    assert_eq!(decision.status.phase, Some(Phase::Mitigating));
    let step = last_step(&decision);
    assert_eq!(
        (step.name.as_str(), step.attempt, step.result),
        ("rollback", 2, StepResult::Pending)
    );
    assert_eq!(step.id, "0123abcd-1-rollback-2");
    assert_eq!(reasons(&decision), ["Reopened", "StepRecorded"]);
}

#[test]
fn an_approval_counts_for_its_round_only() {
    // Resolved after round 1, whose rollback was approved; then it reopens.
    let (mut reopened, seen) = World::new()
        .mode("RequireApproval")
        .phase("Resolved")
        .step("rollback", "Succeeded", "2026-01-01T00:00:06Z")
        .approved("rollback", "alice")
        .at("2026-01-01T00:10:00Z");
    let status = reopened.status.as_mut().unwrap();
    status.detection = Some(crate::crd::DetectionStatus {
        reopens: 1,
        ..Default::default()
    });
    let waiting = decide(&reopened, &seen);
    let step = last_step(&waiting);
    assert_eq!(
        (step.attempt, step.result),
        (2, StepResult::AwaitingApproval),
        "round 1's approval does not run round 2's step"
    );
    assert!(
        step.message.as_deref().unwrap().contains("round: 2"),
        "{step:?}"
    );

    let mut approved = reopened.clone();
    approved.status = Some(waiting.status.clone());
    approved.spec.approvals.push(crate::crd::Approval {
        step: "rollback".into(),
        by: "alice".into(),
        round: Some(2),
    });
    let go = decide(&approved, &seen);
    assert_eq!(last_step(&go).result, StepResult::Pending);

    // Withdrawn before the step ran: it waits again, and says so.
    let mut withdrawn = approved.clone();
    withdrawn.status = Some(go.status.clone());
    withdrawn.spec.approvals.pop();
    let held = decide(&withdrawn, &seen);
    assert_eq!(held.effect, None);
    assert_eq!(last_step(&held).result, StepResult::AwaitingApproval);
    assert!(
        reasons(&held).contains(&"ApprovalWithdrawn"),
        "{:?}",
        reasons(&held)
    );
}

#[test]
fn a_change_the_api_server_refuses_for_good_fails_the_step() {
    let (pending, seen) = pending_rollback()
        .rollback_history()
        .at("2026-01-01T00:00:06Z");
    let planned = decide(&pending, &seen);

    let refused = settle_refused(planned, "422 spec.template: Invalid value", seen.now);

    assert_eq!(refused.effect, None);
    let step = last_step(&refused);
    assert_eq!(step.result, StepResult::Failed);
    assert!(
        step.message
            .as_deref()
            .unwrap()
            .contains("422 spec.template"),
        "{step:?}"
    );
    assert_eq!(reasons(&refused), ["StepRefused"]);
    assert!(refused.workload_events.is_empty());
}

#[test]
fn a_config_that_already_matches_its_snapshot_is_skipped_not_counted() {
    use crate::remediation::actions::restore_config;
    let config: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}})).unwrap();
    let (pending, seen) = World::new()
        .policy(policy(
            "Auto",
            json!([{"action": "restoreConfig", "restoreConfig": {"configMap": "cfg"}}, {"action": "restart"}]),
            json!({}),
        ))
        .phase("Mitigating")
        .step("restoreConfig", "Pending", "2026-01-01T00:00:05Z")
        .inputs(AnyInputs::of(restore_config::Inputs {
            current: Some(config.clone()),
            snapshot: Some(config),
            ignored: Vec::new(),
        }))
        .at("2026-01-01T00:00:06Z");

    let decision = decide(&pending, &seen);

    assert_eq!(decision.effect, None);
    let step = last_step(&decision);
    assert_eq!(step.result, StepResult::Skipped);
    assert!(
        step.changes.iter().all(|c| c == "something changed"),
        "nothing added"
    );
    assert!(decision.tallies.is_empty());
}

#[test]
fn a_change_that_keeps_failing_fails_the_step() {
    let (pending, seen) = pending_rollback()
        .rollback_history()
        .at("2026-01-01T00:00:06Z");
    let planned = decide(&pending, &seen);

    let given_up = settle_gave_up(planned, MAX_APPLY_FAILURES, "500 etcd timeout", seen.now);

    let step = last_step(&given_up);
    assert_eq!(step.result, StepResult::Failed);
    assert!(
        step.message
            .as_deref()
            .unwrap()
            .contains("failed 5 times in a row"),
        "{step:?}"
    );
    assert_eq!(reasons(&given_up), ["StepRefused"]);
}

#[test]
fn an_approval_waiting_on_the_target_holds_every_other_action_on_it() {
    let (new, seen) = World::new()
        .approval_pending("api-oomkilled", "scale")
        .at("2026-01-01T00:00:05Z");

    let held = decide(&new, &seen);

    assert!(held.status.steps.is_empty(), "nothing recorded to run");
    let blocked = blocked_condition(&held);
    assert_eq!(blocked.reason, "AwaitingApprovalOnTarget");
    assert!(blocked.message.contains("api-oomkilled"), "{blocked:?}");
}

#[test]
fn a_step_a_responder_approved_is_not_held_by_another_waiting_approval() {
    // Both incidents on one target wait for approval; the responder
    // approves this one: it runs (the gate holds automatic actions only).
    let waiting = World::new()
        .mode("RequireApproval")
        .phase("Triggered")
        .step("rollback", "AwaitingApproval", "2026-01-01T00:00:05Z")
        .approval_pending("api-oomkilled", "scale");
    let approved = waiting.clone().approved("rollback", "commander");
    let seen = waiting.seen_at("2026-01-01T00:00:06Z");

    let run = decide(&approved.incident(), &seen);
    assert_eq!(last_step(&run).result, StepResult::Pending, "approved runs");
    // Not approved, the same step stays held.
    let held = decide(&waiting.incident(), &seen);
    assert_eq!(last_step(&held).result, StepResult::AwaitingApproval);
}

#[test]
fn another_incidents_unconcluded_step_on_the_target_holds_it() {
    let (pending, seen) = pending_rollback()
        .rollback_history()
        .target_holder("api-notready")
        .at("2026-01-01T00:00:06Z");

    let held = decide(&pending, &seen);

    assert_eq!(held.effect, None, "no second actor");
    assert_eq!(last_step(&held).result, StepResult::Pending);
    assert!(
        held.status
            .conditions
            .iter()
            .any(|c| c.reason == "TargetBusy" && c.message.contains("api-notready"))
    );
}

#[test]
fn a_target_that_recovered_gets_no_new_step_and_its_pending_one_is_skipped() {
    let (new, seen) = World::new().ready().at("2026-01-01T00:00:05Z");
    let opened = decide(&new, &seen);
    assert!(opened.status.steps.is_empty(), "nothing to fix: no step");

    let (pending, seen) = pending_rollback().ready().at("2026-01-01T00:05:06Z");
    let skipped = decide(&pending, &seen);
    assert_eq!(skipped.effect, None, "no rollback of a healthy workload");
    let step = last_step(&skipped);
    assert_eq!(step.result, StepResult::Skipped);
    assert!(step.changes.iter().all(|c| c == "something changed"));
}

#[test]
fn a_recovery_that_is_the_pending_steps_own_doing_is_verified_not_skipped() {
    let (pending, seen) = pending_rollback()
        .target(api_carrying_the_rollback(true))
        .at("2026-01-01T00:00:06Z");

    let decision = decide(&pending, &seen);

    assert_eq!(last_step(&decision).result, StepResult::Verifying);
}

#[test]
fn a_symptom_with_a_sustained_period_counts_at_once_in_verification() {
    let rule: PolicyRule = serde_json::from_value(json!({"name": "short",
        "when": {"symptom": "ReplicasUnavailable", "belowRatio": 0.5, "sustainedFor": "2s"},
        "severity": "P1", "type": "ServiceOutage", "actions": []}))
    .unwrap();
    let mut short = api(true, json!({}));
    if let Workload::Deployment(d) = &mut short {
        let d = Arc::make_mut(d);
        d.spec.as_mut().unwrap().replicas = Some(3);
        d.status = Some(
            serde_json::from_value(json!({"observedGeneration": 2,
            "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1, "availableReplicas": 1}))
            .unwrap(),
        );
    }
    assert_eq!(
        health(
            &short,
            &[],
            Some(&rule),
            None,
            &[],
            at("2026-01-01T00:00:00Z")
        ),
        Health::Unhealthy
    );
}

#[test]
fn a_dependency_that_is_down_holds_every_action_until_it_is_resolved() {
    let world = World::new();
    let postgres = WorkloadRef {
        kind: crate::crd::WorkloadKind::StatefulSet,
        name: "postgres".into(),
    };
    let (new, down) = world
        .clone()
        .dependency_down("postgres-sts-probe-db", postgres)
        .at("2026-01-01T00:00:05Z");
    let held = decide(&new, &down);
    assert!(
        held.status.steps.is_empty(),
        "no step while the database is down"
    );
    let blocked = blocked_condition(&held);
    assert_eq!(blocked.reason, "DependencyDown");
    assert!(
        blocked.message.contains("postgres-sts-probe-db"),
        "{}",
        blocked.message
    );

    // Resolved: the ladder starts where it would have.
    let resumed = decide(&after(new, &held), &world.seen_at("2026-01-01T00:00:05Z"));
    assert_eq!(last_step(&resumed).name, "rollback");
    let condition = blocked_condition(&resumed);
    assert_eq!(condition.status, "False", "{condition:?}");
}

#[test]
fn a_probes_rule_is_verified_by_the_probe_not_the_pods() {
    use Health::{Healthy, Unhealthy};
    use ProbeHealth as Probe;
    let rule: PolicyRule = serde_json::from_value(json!({"name": "db-down",
        "when": {"symptom": "ProbeFailing", "probe": "db"},
        "severity": "P0", "type": "ServiceOutage", "actions": []}))
    .unwrap();
    // Every pod ready and the rollout complete: that says nothing of the database.
    let ready = api(true, json!({}));
    let now = at("2026-01-01T00:00:00Z");
    // The probe's state, and whether the detector has cleared the signal.
    for (case, probe, cleared, expected) in [
        ("failing, cleared", Probe::Failing, true, Unhealthy),
        ("passing, not cleared", Probe::Healthy, false, Healthy),
        // Just started: the detector's clear decides.
        ("unknown, not cleared", Probe::Unknown, false, Unhealthy),
        ("unknown, cleared", Probe::Unknown, true, Healthy),
    ] {
        let verdict = health(&ready, &[], Some(&rule), Some((probe, cleared)), &[], now);
        assert_eq!(verdict, expected, "probe {case}");
    }

    // A pod rule that also waits for a probe: ready pods are not enough.
    let crash: PolicyRule = serde_json::from_value(json!({"name": "crash",
        "when": {"symptom": "CrashLoopBackOff"}, "severity": "P0", "type": "ServiceOutage",
        "actions": [], "verify": {"probes": ["health"]}}))
    .unwrap();
    for (case, verify_probe, expected) in [
        ("passing", Probe::Healthy, Healthy),
        ("unknown", Probe::Unknown, Unhealthy),
        ("failing", Probe::Failing, Unhealthy),
    ] {
        let verdict = health(&ready, &[], Some(&crash), None, &[verify_probe], now);
        assert_eq!(verdict, expected, "verify probe {case}");
    }
}
