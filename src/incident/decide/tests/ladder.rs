//! The ladder's run, one reconcile at a time: a step recorded, planned,
//! applied, failed, skipped or refused; dry runs, reopens, a policy edited
//! or gone under a running ladder, responders closing the incident,
//! declared incidents' proposed steps. Steps that go on over many
//! reconciles are in `long_steps`.

use super::*;

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
    // The step runs in this reconcile: its Event is how that went; the
    // timeline records it now.
    assert_eq!(reasons(&decision), ["Triggered"]);
    let timeline: Vec<&str> = decision
        .status
        .timeline
        .iter()
        .map(|e| e.reason.as_str())
        .collect();
    assert_eq!(timeline, ["Triggered", "StepRecorded"]);
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
    // One Event for the change, on the workload; the timeline has it too.
    assert!(reasons(&settled).is_empty());
    assert_eq!(settled.workload_events[0].reason, "RemediationApplied");
    assert_eq!(
        settled.status.timeline.last().map(|e| e.reason.as_str()),
        Some("StepApplied")
    );
    assert!(settled.tallies.is_empty(), "counted when the verdict is in");
}

/// `api` with a release written that the Deployment controller has not
/// seen yet.
fn api_with_an_unseen_release() -> Workload {
    let mut workload = api(false, json!({}));
    if let Workload::Deployment(d) = &mut workload {
        Arc::make_mut(d).metadata.generation = Some(3);
    }
    workload
}

#[test]
fn a_rollback_waits_for_the_deployment_controller_then_fails_if_it_never_catches_up() {
    let world = pending_rollback()
        .rollback_history()
        .target(api_with_an_unseen_release());

    let (pending, seen) = world.clone().at("2026-01-01T00:00:06Z");
    let waiting = decide(&pending, &seen);
    assert_eq!(waiting.effect, None, "nothing planned from a stale history");
    assert_eq!(last_step(&waiting).result, StepResult::Pending);
    assert!(waiting.events.is_empty(), "a short wait is not news");
    assert_eq!(waiting.requeue, Some(AFTER_CHANGE));

    let (pending, seen) = world.at("2026-01-01T00:00:35Z");
    let failed = decide(&pending, &seen);
    assert_eq!(failed.effect, None);
    assert_eq!(last_step(&failed).result, StepResult::Failed);
    assert_eq!(
        last_step(&failed).message.as_deref(),
        Some(
            "the Deployment controller has not yet seen generation 3 (it last saw 2), so the rollout history is not settled"
        )
    );
    assert_eq!(reasons(&failed)[0], "StepRefused");
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
fn a_reopened_incident_counts_the_fix_that_did_not_last_as_failed_and_goes_on_after_it() {
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
    let relapsed = &decision.status.steps[0];
    assert_eq!(relapsed.result, StepResult::Failed);
    assert!(relapsed.relapsed_at.is_some());
    assert_eq!(
        relapsed.message.as_deref(),
        Some(
            "the fix did not last: the signal returned after the incident resolved; counted as failed"
        )
    );
    let step = last_step(&decision);
    assert_eq!(
        (step.name.as_str(), step.attempt, step.result),
        ("restart", 2, StepResult::Pending),
        "round 2 goes on after the rollback, not with it again"
    );
    assert_eq!(step.id, "0123abcd-1-restart-2");
    assert_eq!(reasons(&decision), ["Reopened"]);

    // The restart did not last either: nothing is left to try.
    let mut again = after(reopened, &decision);
    let status = again.status.as_mut().unwrap();
    status.steps[1].result = StepResult::Succeeded;
    status.phase = Some(Phase::Resolved);
    status.detection = Some(crate::crd::DetectionStatus {
        reopens: 2,
        ..Default::default()
    });
    let decision = decide(&again, &seen);
    assert_eq!(decision.status.steps.len(), 2);
    assert_eq!(decision.status.steps[1].result, StepResult::Failed);
    assert_eq!(decision.status.phase, Some(Phase::Escalated));
    assert!(
        decision
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == NEEDS_HUMAN && c.reason == "LadderExhausted"),
        "{:?}",
        decision.status.conditions
    );
}

#[test]
fn a_change_the_api_server_refuses_for_good_fails_the_step() {
    let (pending, seen) = pending_rollback()
        .rollback_history()
        .at("2026-01-01T00:00:06Z");
    let planned = decide(&pending, &seen);

    let refused = settle_refused(
        planned,
        "the API server refused the change",
        "422 spec.template: Invalid value",
        seen.now,
    );

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
fn a_reopened_incident_whose_ledger_is_full_goes_to_a_human() {
    let mut world = World::new().phase("Resolved");
    for _ in 0..crate::crd::MAX_STEPS {
        world = world.step("rollback", "Failed", "2026-01-01T00:00:06Z");
    }
    let (mut reopened, seen) = world.at("2026-01-01T00:10:00Z");
    let status = reopened.status.as_mut().unwrap();
    status.detection = Some(crate::crd::DetectionStatus {
        reopens: 1,
        ..Default::default()
    });

    let decision = decide(&reopened, &seen);

    assert_eq!(decision.status.steps.len(), crate::crd::MAX_STEPS);
    assert_eq!(decision.status.phase, Some(Phase::Escalated));
    let needs_human = decision
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == NEEDS_HUMAN)
        .unwrap();
    assert_eq!(needs_human.reason, "LedgerFull");
    assert!(
        needs_human
            .message
            .starts_with("the ledger holds its most steps (50) after 2 round(s)"),
        "{}",
        needs_human.message
    );
    assert_eq!(reasons(&decision), ["Reopened", "Escalated"]);
}

#[test]
fn a_declared_incident_on_a_healthy_looking_target_proposes_its_step_and_runs_it_once_approved() {
    let declared = |world: World| {
        let mut world = world;
        world.incident.spec.source = serde_json::from_value(json!({"kind": "Manual"})).unwrap();
        world
    };
    // Detected: a target that recovered gets no automatic action.
    let (detected, seen) = World::new()
        .phase("Triggered")
        .ready()
        .at("2026-01-01T00:00:05Z");
    let decision = decide(&detected, &seen);
    assert!(decision.status.steps.is_empty());

    // Declared: the step is proposed, waiting for a person, and says why.
    let (incident, seen) = declared(World::new().phase("Triggered").ready())
        .rollback_history()
        .at("2026-01-01T00:00:05Z");
    let decision = decide(&incident, &seen);
    let step = last_step(&decision);
    assert_eq!(
        (step.name.as_str(), step.result),
        ("rollback", StepResult::AwaitingApproval),
        "even under an Auto policy"
    );
    assert_eq!(
        step.message.as_deref(),
        Some(
            "the rule's symptom CrashLoopBackOff is not present on Deployment/api; this incident \
             was declared by a person, so its step is proposed: approve it in spec.approvals \
             ({step: rollback, by: <you>}) to run it anyway"
        )
    );
    assert!(decision.effect.is_none());

    // Approved: it runs, healthy-looking target or not.
    let mut approved = after(incident, &decision);
    approved.spec.approvals =
        serde_json::from_value(json!([{"step": "rollback", "by": "commander"}])).unwrap();
    let decision = decide(&approved, &seen);
    assert_eq!(last_step(&decision).result, StepResult::Pending);
    let pending = after(approved, &decision);
    let decision = decide(&pending, &seen);
    assert!(
        decision.effect.is_some(),
        "planned: {:?}",
        last_step(&decision)
    );
}

#[test]
fn a_declared_incidents_pending_step_whose_symptom_went_waits_for_a_person_instead_of_being_skipped()
 {
    let (mut pending, seen) = World::new()
        .phase("Mitigating")
        .step("rollback", "Pending", "2026-01-01T00:00:05Z")
        .ready()
        .at("2026-01-01T00:00:06Z");
    pending.spec.source = serde_json::from_value(json!({"kind": "Manual"})).unwrap();
    let decision = decide(&pending, &seen);
    assert!(decision.effect.is_none());
    let step = last_step(&decision);
    assert_eq!(step.result, StepResult::AwaitingApproval);
    assert!(
        step.message
            .as_deref()
            .is_some_and(|m| m.starts_with("the rule's symptom CrashLoopBackOff is not present")),
        "{step:?}"
    );
}
