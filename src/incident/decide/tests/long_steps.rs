//! Steps that go on over many reconciles: a pod-by-pod restart, batch by
//! batch while it verifies, and a restoreData workflow, one closed mid-way
//! included.

use super::*;

/// A pod of the Deployment, Ready or not.
fn pod(name: &str, ready: &str) -> crate::pod::PodFacts {
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"),
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"conditions": [{"type": "Ready", "status": ready}]}}))
    .unwrap()
    .into()
}

#[test]
fn a_pod_by_pod_restart_evicts_its_first_batch_with_the_mark_and_saves_both_at_once() {
    let (pending, seen) = World::new()
        .policy(policy(
            "Auto",
            json!([{"action": "restart", "restart": {"method": "DeletePods"}}]),
            json!({}),
        ))
        .phase("Mitigating")
        .step("restart", "Pending", "2026-01-01T00:00:05Z")
        .pods(vec![pod("api-1", "False"), pod("api-2", "True")])
        .at("2026-01-01T00:00:06Z");

    let decision = decide(&pending, &seen);

    let effect = decision.effect.clone().unwrap();
    assert!(!effect.follow_up);
    let batch = effect
        .first_batch
        .clone()
        .expect("the first batch, with the mark");
    assert_eq!(batch.summary, "evict pods api-1", "the failing pod first");
    assert_eq!(last_step(&decision).replacing, ["uid-api-1", "uid-api-2"]);
    let settled = settle(
        decision,
        vec!["pod api-1 evicted".into()],
        &pending,
        seen.now,
    );
    let step = last_step(&settled);
    assert_eq!(step.result, StepResult::Verifying);
    assert_eq!(
        step.changes,
        [
            "Deployment/api pods evicted, at most 1 unavailable at a time",
            "pod api-1 evicted"
        ]
    );
}

#[test]
fn a_pod_by_pod_restart_goes_on_batch_by_batch_while_it_verifies() {
    let (verifying, seen) = World::new()
        .policy(policy(
            "Auto",
            json!([{"action": "restart", "restart": {"method": "DeletePods"}}]),
            json!({}),
        ))
        .phase("Mitigating")
        .step("restart", "Verifying", "2026-01-01T00:00:05Z")
        .pods(vec![pod("api-1", "False")])
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
fn a_restore_under_way_when_its_incident_is_resolved_brings_its_writers_back_then_ends() {
    let (mut closed, seen) = World::new()
        .phase("Resolved")
        .step("restoreData", "Verifying", "2026-01-01T00:00:06Z")
        .at("2026-01-01T00:01:00Z");
    let workflow = |stage: &str, wound_down: bool| -> Option<crate::crd::Workflow> {
        serde_json::from_value(json!({"stage": stage, "woundDown": wound_down,
            "replicas": [{"kind": "Deployment", "name": "api", "replicas": 3}]}))
        .ok()
    };
    closed.status.as_mut().unwrap().steps[0].workflow = workflow("VerifyData", false);

    // The data is not verified: the writers come back next.
    let decision = decide(&closed, &seen);
    let step = last_step(&decision);
    assert_eq!(step.result, StepResult::Verifying);
    assert_eq!(step.workflow, workflow("ScaleBack", true));
    assert!(
        step.changes.last().is_some_and(|c| c.starts_with(
            "the incident was closed mid-restore: before the restored data was verified"
        )),
        "{:?}",
        step.changes
    );
    assert!(reasons(&decision).contains(&"RestoreWoundDown"));

    // Scaled back to the recorded replicas, as a change.
    closed.status = Some(decision.status);
    let decision = decide(&closed, &seen);
    let effect = decision.effect.as_ref().unwrap();
    assert_eq!(effect.then, Some(WorkflowStage::Done));
    assert!(!effect.dry_run);

    // Once they are back, the step ends: it did not bring recovery.
    let mut back = closed.clone();
    back.status.as_mut().unwrap().steps[0].workflow = workflow("Done", true);
    let decision = decide(&back, &seen);
    let step = last_step(&decision);
    assert_eq!(step.result, StepResult::Failed);
    assert!(
        step.message
            .as_deref()
            .is_some_and(|m| m.starts_with("stopped: the incident was closed mid-restore")),
        "{step:?}"
    );
    // An open restore at Done is verified as usual, not ended.
    let (mut open, seen) = World::new()
        .phase("Mitigating")
        .step("restoreData", "Verifying", "2026-01-01T00:00:06Z")
        .at("2026-01-01T00:01:00Z");
    open.status.as_mut().unwrap().steps[0].workflow = workflow("Done", false);
    let decision = decide(&open, &seen);
    assert_ne!(last_step(&decision).result, StepResult::Failed);
}
