//! The RemediationPolicy controller reports Ready, or why not.

use healing_guard_operator::crd::RemediationPolicy;
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::support::{Operator, client, eventually, namespace};

fn policy(name: &str, target_kind: &str, actions: serde_json::Value) -> RemediationPolicy {
    serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"name": name},
        "spec": {
            "mode": "Auto",
            "targets": [{"kind": target_kind, "selector": {"matchLabels": {"tier": "api"}}}],
            "rules": [{
                "name": "crashloop",
                "when": {"symptom": "CrashLoopBackOff", "minRestarts": 3},
                "severity": "P0",
                "type": "ServiceOutage",
                "actions": actions
            }]
        }
    }))
    .unwrap()
}

fn api_deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"tier": "api"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.local/api:1"}]}
            }
        }
    }))
    .unwrap()
}

/// (status, reason, message) of the Ready condition once the status describes
/// the current generation.
async fn ready_condition(
    api: &Api<RemediationPolicy>,
    name: &str,
    reason: &str,
) -> (String, String) {
    eventually(
        &format!("policy {name} Ready reason {reason}"),
        || async move {
            let policy = api.get(name).await.ok()?;
            let status = policy.status?;
            (status.observed_generation == policy.metadata.generation).then_some(())?;
            let ready = status.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (ready.reason == reason).then_some((ready.status, ready.message))
        },
    )
    .await
}

#[tokio::test]
async fn policies_report_ready_or_why_not() {
    let client = client().await;
    let ns = namespace(&client, "policy").await;
    let operator = Operator::start(&ns).await;
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &api_deployment("api"))
        .await
        .unwrap();

    // Valid, and it matches the one Deployment.
    let valid = policy(
        "valid",
        "Deployment",
        json!([{"action": "rollback"}, {"action": "restart"}]),
    );
    policies
        .create(&PostParams::default(), &valid)
        .await
        .unwrap();
    let (status, message) = ready_condition(&policies, "valid", "Valid").await;
    assert_eq!(status, "True");
    assert_eq!(message, "guards 1 workload(s) with 1 rule(s)");
    assert_eq!(
        policies
            .get("valid")
            .await
            .unwrap()
            .status
            .unwrap()
            .matched_targets,
        Some(1)
    );

    // Schema-valid but impossible: rollback on a StatefulSet.
    let invalid = policy("invalid", "StatefulSet", json!([{"action": "rollback"}]));
    policies
        .create(&PostParams::default(), &invalid)
        .await
        .unwrap();
    let (status, message) = ready_condition(&policies, "invalid", "InvalidSpec").await;
    assert_eq!(status, "False");
    assert!(
        message.contains("spec.rules[0].actions[0].action: rollback cannot apply to a StatefulSet (spec.targets[0])"),
        "{message}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually("a Warning event on the invalid policy", || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default().fields("regarding.name=invalid"))
                .await
                .ok()?;
            list.items.into_iter().find(|e| {
                e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("InvalidSpec")
            })
        }
    })
    .await;

    // Valid but guarding nothing yet; a matching workload appearing makes it Ready.
    let mut waiting = policy("waiting", "Deployment", json!([{"action": "restart"}]));
    waiting.spec.targets[0].selector =
        serde_json::from_value(json!({"matchLabels": {"tier": "worker"}})).unwrap();
    policies
        .create(&PostParams::default(), &waiting)
        .await
        .unwrap();
    let (status, message) = ready_condition(&policies, "waiting", "NoMatchingTargets").await;
    assert_eq!(status, "False");
    assert!(message.contains("no Deployment in namespace"), "{message}");
    let mut worker = api_deployment("worker");
    worker.metadata.labels = Some([("tier".to_owned(), "worker".to_owned())].into());
    deployments
        .create(&PostParams::default(), &worker)
        .await
        .unwrap();
    let (status, _) = ready_condition(&policies, "waiting", "Valid").await;
    assert_eq!(status, "True");

    let metrics = operator.metrics().await;
    assert!(
        metrics.contains("healing_guard_reconciles_total{controller=\"remediationpolicy\"}"),
        "{metrics}"
    );
}

/// The Overlapping condition of a policy, once it is set to `status`.
async fn overlapping(
    api: &Api<RemediationPolicy>,
    name: &str,
    status: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    eventually(
        &format!("policy {name} Overlapping={status}"),
        || async move {
            let policy = api.get(name).await.ok()?;
            policy
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Overlapping" && c.status == status)
        },
    )
    .await
}

#[tokio::test]
async fn two_policies_selecting_one_workload_both_say_which_guards_it() {
    let client = client().await;
    let ns = namespace(&client, "policy-overlap").await;
    let _operator = Operator::start(&ns).await;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &api_deployment("api"))
        .await
        .unwrap();
    let api: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns);
    let restart = json!([{"action": "restart"}]);
    api.create(
        &PostParams::default(),
        &policy("guard", "Deployment", restart.clone()),
    )
    .await
    .unwrap();
    let mut urgent = policy("urgent", "Deployment", json!([{"action": "rollback"}]));
    urgent.spec.priority = 10;
    api.create(&PostParams::default(), &urgent).await.unwrap();

    let shadowed = overlapping(&api, "guard", "True").await;
    assert_eq!(shadowed.reason, "Shadowed");
    assert!(
        shadowed.message.contains("Deployment/api")
            && shadowed.message.contains("urgent guards them"),
        "{shadowed:?}"
    );
    let shadowing = overlapping(&api, "urgent", "True").await;
    assert_eq!(shadowing.reason, "Shadowing");
    assert!(
        shadowing.message.contains("this policy guards them"),
        "{shadowing:?}"
    );
    // A Warning Event on both.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    for name in ["guard", "urgent"] {
        eventually(&format!("an overlap Event on {name}"), || {
            let events = events.clone();
            async move {
                let list = events
                    .list(&ListParams::default().fields(&format!("regarding.name={name}")))
                    .await
                    .ok()?;
                list.items.into_iter().find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && matches!(e.reason.as_deref(), Some("Shadowed" | "Shadowing"))
                })
            }
        })
        .await;
    }
    // The shadowing policy goes: the other says the overlap is over.
    api.delete("urgent", &Default::default()).await.unwrap();
    let over = overlapping(&api, "guard", "False").await;
    assert_eq!(over.reason, "NoOverlap");
}
