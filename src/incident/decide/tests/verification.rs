//! Verification: a step is held until the target is healthy for the
//! rule's hold-down, by its pods or its probes; a target that recovered on
//! its own gets no new step.

use super::*;

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

    // Healthy since 00:00:30, kept in whole seconds, may mean 00:00:30.999:
    // the minute has surely passed only at 00:01:31.
    let at_the_stored_minute = decide(&holding, &healthy.seen_at("2026-01-01T00:01:30Z"));
    assert_eq!(at_the_stored_minute.status, first.status);
    let done = decide(&holding, &healthy.seen_at("2026-01-01T00:01:31Z"));
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
            Tally::Resolved { seconds: 91.0 },
        ]
    ));

    let relapse = decide(&holding, &unhealthy.seen_at("2026-01-01T00:01:00Z"));
    assert_eq!(relapse.status.phase, Some(Phase::Mitigating));
    assert_eq!(last_step(&relapse).healthy_since, None);
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
        &gone.seen_at("2026-01-01T00:01:31Z"),
    );
    assert_eq!(done.status.phase, Some(Phase::Resolved));
    assert_eq!(last_step(&done).result, StepResult::Succeeded);
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
