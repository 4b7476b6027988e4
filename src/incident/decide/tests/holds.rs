//! What holds a step back, and says why: approvals (for their round),
//! the safety limits, the ready floor, another incident's step or approval
//! on the target, a dependency that is down.

use super::*;

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
    // Five minutes from the end of the stored second it began in.
    assert_eq!(held.requeue, Some(Duration::from_secs(182)));
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
fn an_approval_counts_for_its_round_only() {
    // Resolved after round 1, whose steps were approved; then it reopens.
    // The rollback did not last: round 2 goes on with the restart.
    let (mut reopened, seen) = World::new()
        .mode("RequireApproval")
        .phase("Resolved")
        .step("rollback", "Succeeded", "2026-01-01T00:00:06Z")
        .approved("rollback", "alice")
        .approved("restart", "alice")
        .at("2026-01-01T00:10:00Z");
    let status = reopened.status.as_mut().unwrap();
    status.detection = Some(crate::crd::DetectionStatus {
        reopens: 1,
        ..Default::default()
    });
    let waiting = decide(&reopened, &seen);
    let step = last_step(&waiting);
    assert_eq!(
        (step.name.as_str(), step.attempt, step.result),
        ("restart", 2, StepResult::AwaitingApproval),
        "round 1's approval does not run round 2's step"
    );
    assert!(
        step.message.as_deref().unwrap().contains("round: 2"),
        "{step:?}"
    );

    let mut approved = reopened.clone();
    approved.status = Some(waiting.status.clone());
    approved.spec.approvals.push(crate::crd::Approval {
        step: "restart".into(),
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
