//! Hostile input and authority, as a careless or hostile user would try it:
//! an Incident cannot do more than its policy allows, an invalid policy or
//! incident does nothing, and a snapshot the operator did not write is
//! never restored.

use std::time::Duration;

use healing_guard_operator::crd::{Incident, Phase, RemediationPolicy, StepResult};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    remediation::{bad_release, crash_policy, incident_in_phase, policy_with, setup_spec},
    support::{Operator, client, eventually, incident_where, namespace, phase_of},
};

/// A Deployment `api` of 3 replicas, ready.
async fn api_of_three(client: &Client, ns: &str) -> Api<Deployment> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "api:1"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    deployments
}

async fn declare(client: &Client, ns: &str, name: &str, spec: Value) {
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    Api::<Incident>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();
}

fn dry_run_complete(incident: &Incident) -> bool {
    incident
        .status
        .as_ref()
        .is_some_and(|s| s.timeline.iter().any(|e| e.reason == "DryRunComplete"))
}

async fn replicas(deployments: &Api<Deployment>) -> Option<i32> {
    deployments.get("api").await.unwrap().spec.unwrap().replicas
}

#[tokio::test]
async fn an_incident_cannot_do_more_than_its_policy_allows() {
    let client = client().await;
    let ns = namespace(&client, "authority").await;
    let _operator = Operator::start(&ns).await;
    let deployments = api_of_three(&client, &ns).await;
    // The policy asks for approval, and lets incidents bring their own scale only.
    policy_with(
        &client,
        &ns,
        json!({
            "mode": "RequireApproval",
            "incidents": {"allowedActions": ["scale"]},
            "targets": [{"kind": "Deployment", "names": ["api"]}],
            "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff"},
                       "severity": "P1", "type": "ServiceOutage", "actions": [{"action": "restart"}],
                       "verify": {"timeout": "1m", "holdDown": "2s"}}]
        }),
    )
    .await;
    let scale_to =
        |n: i32| json!([{"action": "scale", "scale": {"replicas": n, "maxReplicas": n}}]);
    let spec = |actions: Value, policy: Option<&str>| {
        let mut spec = json!({
            "title": "p95 latency above 2 s", "severity": "P2", "type": "PerformanceDegradation",
            "target": {"kind": "Deployment", "name": "api"}, "mode": "Auto", "actions": actions
        });
        if let Some(policy) = policy {
            spec["policy"] = policy.into();
        }
        spec
    };

    // No policy named: the incident's own Auto scale is only a dry run.
    declare(&client, &ns, "no-policy", spec(scale_to(8), None)).await;
    let alone = incident_where(
        &client,
        &ns,
        "no-policy",
        "a complete dry run",
        dry_run_complete,
    )
    .await;
    let step = &alone.status.unwrap().steps[0];
    assert_eq!(step.result, StepResult::DryRun);
    assert!(
        step.message
            .as_deref()
            .is_some_and(|m| m.contains("no RemediationPolicy is named: a dry run only")),
        "{step:?}"
    );

    // An action the policy does not allow incidents: a dry run, and why.
    let restart = json!([{"action": "restart"}]);
    declare(&client, &ns, "not-allowed", spec(restart, Some("guard"))).await;
    let refused = incident_where(
        &client,
        &ns,
        "not-allowed",
        "a complete dry run",
        dry_run_complete,
    )
    .await;
    let step = &refused.status.unwrap().steps[0];
    assert_eq!(step.result, StepResult::DryRun);
    assert!(
        step.message
            .as_deref()
            .is_some_and(|m| m.contains("does not allow incidents their own restart")),
        "{step:?}"
    );
    assert_eq!(replicas(&deployments).await, Some(3), "nothing changed");

    // An allowed action: the incident's Auto does not loosen the policy's approval.
    declare(&client, &ns, "allowed", spec(scale_to(5), Some("guard"))).await;
    let waiting = incident_where(&client, &ns, "allowed", "waiting for approval", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.first())
            .is_some_and(|s| s.result == StepResult::AwaitingApproval)
    })
    .await;
    assert_eq!(waiting.status.unwrap().steps.len(), 1);
    assert_eq!(replicas(&deployments).await, Some(3), "not before approval");
    let approve = json!({"spec": {"approvals": [{"step": "scale", "by": "commander"}]}});
    Api::<Incident>::namespaced(client.clone(), &ns)
        .patch("allowed", &PatchParams::default(), &Patch::Merge(&approve))
        .await
        .unwrap();
    incident_where(&client, &ns, "allowed", "resolved", |i| {
        phase_of(i) == Some(Phase::Resolved)
    })
    .await;
    assert_eq!(replicas(&deployments).await, Some(5));
}

#[tokio::test]
async fn an_invalid_policy_guards_nothing_until_it_is_fixed() {
    // Two steps with one name: the schema cannot see it, the controller can.
    let twice = json!([{"action": "restart"}, {"action": "restart"}]);
    let mut spec = crash_policy("Auto", twice, "1m");
    spec["detection"] = json!({"holdDown": "2s"});
    let (client, ns, _operator) = setup_spec("hostile-inert", spec).await;
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns);
    let message = eventually("the policy reported invalid", || {
        let policies = policies.clone();
        async move {
            let policy = policies.get("guard").await.ok()?;
            let ready = policy
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.reason == "InvalidSpec")?;
            Some(ready.message)
        }
    })
    .await;
    assert!(
        message.starts_with("spec.rules[0].actions[1].name: step name \"restart\" is used twice"),
        "{message}"
    );
    assert!(message.ends_with("the policy guards nothing until this is fixed"));

    // Its workload fails; an invalid policy opens nothing.
    bad_release(&client, &ns).await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        incidents.get_opt("api-crashloop").await.unwrap().is_none(),
        "an invalid policy detected a failure"
    );

    // Fixed: the failure that goes on is detected now.
    let fixed = json!({"spec": {"rules": [{"name": "crash",
        "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
        "severity": "P0", "type": "ServiceOutage", "actions": [{"action": "restart"}],
        "verify": {"timeout": "1m", "holdDown": "3s"}}]}});
    policies
        .patch("guard", &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .unwrap();
    eventually("the incident once the policy is valid", || {
        let incidents = incidents.clone();
        async move { incidents.get_opt("api-crashloop").await.ok()? }
    })
    .await;
}

#[tokio::test]
async fn an_incident_whose_own_ladder_is_invalid_runs_nothing_and_says_why() {
    let client = client().await;
    let ns = namespace(&client, "hostile-ladder").await;
    let _operator = Operator::start(&ns).await;
    let deployments = api_of_three(&client, &ns).await;
    declare(
        &client,
        &ns,
        "twice",
        json!({
            "title": "restart twice", "severity": "P2", "type": "ServiceOutage",
            "target": {"kind": "Deployment", "name": "api"},
            "actions": [{"action": "scale", "scale": {"replicas": 4, "maxReplicas": 4}},
                        {"action": "scale", "scale": {"replicas": 5, "maxReplicas": 5}}]
        }),
    )
    .await;
    let blocked = incident_where(&client, &ns, "twice", "blocked as invalid", |i| {
        i.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "RemediationBlocked" && c.status == "True" && c.reason == "InvalidSpec"
            })
        })
    })
    .await;
    let status = blocked.status.unwrap();
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "RemediationBlocked")
        .unwrap();
    assert!(
        condition
            .message
            .starts_with("spec.actions[1].name: step name \"scale\" is used twice"),
        "{}",
        condition.message
    );
    assert!(status.steps.is_empty(), "nothing recorded, nothing run");
    assert_eq!(replicas(&deployments).await, Some(3));
}

#[tokio::test]
async fn a_snapshot_the_operator_did_not_take_is_never_restored() {
    let actions =
        json!([{"action": "restoreConfig", "restoreConfig": {"configMap": "api-config"}}]);
    let (client, ns, _operator) =
        setup_spec("hostile-snapshot", crash_policy("Auto", actions, "1m")).await;
    // Someone plants a "snapshot" with content of their choosing.
    let planted: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "planted", "labels": {"healing-guard.io/snapshot-of": "api-config"},
                     "annotations": {"healing-guard.io/taken-at": "2026-01-01T00:00:00Z"}},
        "data": {"DATABASE_URL": "postgresql://attacker@evil:5432/x"}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &planted)
        .await
        .unwrap();
    bad_release(&client, &ns).await;
    let incident = incident_in_phase(&client, &ns, &[Phase::Escalated]).await;
    let step = &incident.status.unwrap().steps[0];
    assert_eq!(step.result, StepResult::Failed);
    assert_eq!(
        step.message.as_deref(),
        Some(
            "no known-good snapshot of ConfigMap api-config that the operator took; ignored planted, \
             labelled as snapshots but written by someone else"
        )
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("api-config")
            .await
            .unwrap()
            .is_none(),
        "nothing was restored from it"
    );
}
