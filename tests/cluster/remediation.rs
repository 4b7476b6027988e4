//! The ladder at work on a real control plane: a bad rollout rolled back and
//! verified, a dry run that changes nothing, an exhausted ladder escalated.

use std::time::Duration;

use healing_guard_operator::crd::{Incident, Phase, RemediationPolicy, StepResult};
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{Operator, client, eventually, eventually_within, namespace};

async fn setup(
    prefix: &str,
    mode: &str,
    actions: Value,
    timeout: &str,
) -> (Client, String, Operator) {
    let client = client().await;
    let ns = namespace(&client, prefix).await;
    let operator = Operator::start(&ns).await;
    let policy: RemediationPolicy = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"name": "guard"},
        "spec": {
            "mode": mode,
            "targets": [{"kind": "Deployment", "selector": {"matchLabels": {"guarded": "yes"}}}],
            "rules": [{
                "name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                "severity": "P0", "type": "ServiceOutage", "actions": actions,
                "verify": {"timeout": timeout, "holdDown": "3s"}
            }]
        }
    }))
    .unwrap();
    Api::<RemediationPolicy>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    (client, ns, operator)
}

/// A healthy Deployment of 3 (revision 1), then a bad release whose pods crash (revision 2).
async fn bad_release(client: &Client, ns: &str) -> Api<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api", "labels": {"guarded": "yes"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                         "spec": {"containers": [{"name": "app", "image": "registry.local/api:1"}]}}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    eventually("revision 1 available", || {
        let api = api.clone();
        async move {
            api.get("api")
                .await
                .ok()?
                .status?
                .available_replicas
                .filter(|n| *n == 3)
        }
    })
    .await;
    let bad = json!({"spec": {"template": {
        "metadata": {"labels": {"healing-guard.io/inject": "crashloop"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/api:2"}]}}}});
    api.patch("api", &PatchParams::default(), &Patch::Strategic(&bad))
        .await
        .unwrap();
    api
}

async fn incident_in_phase(client: &Client, ns: &str, phases: &[Phase]) -> Incident {
    let api: Api<Incident> = Api::namespaced(client.clone(), ns);
    eventually_within(
        &format!("the incident in {phases:?}"),
        Duration::from_secs(120),
        || {
            let api = api.clone();
            async move {
                let incident = api.get("api-crashloop").await.ok()?;
                let phase = incident.status.as_ref()?.phase?;
                phases.contains(&phase).then_some(incident)
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_bad_rollout_is_rolled_back_verified_and_resolved() {
    let (client, ns, operator) = setup(
        "fix-rollback",
        "Auto",
        json!([{"action": "rollback"}]),
        "2m",
    )
    .await;
    let deployments = bad_release(&client, &ns).await;

    let incident = incident_in_phase(&client, &ns, &[Phase::Resolved]).await;
    let status = incident.status.unwrap();
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    let step = &status.steps[0];
    assert_eq!(
        step.result,
        StepResult::Succeeded,
        "{step:?}\n{}",
        operator.logs()
    );
    assert_eq!(
        step.changes,
        ["Deployment/api rolled back from revision 2 to revision 1"]
    );
    assert!(status.milestones.mitigated_at.is_some() && status.milestones.resolved_at.is_some());
    assert!(status.timeline.iter().any(|e| e.reason == "Remediated"));

    // The Deployment runs revision 1's template again and names the step that changed it.
    let deployment = deployments.get("api").await.unwrap();
    let template = deployment.spec.unwrap().template;
    assert_eq!(
        template.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.local/api:1")
    );
    assert!(
        !template
            .metadata
            .unwrap()
            .labels
            .unwrap()
            .contains_key("healing-guard.io/inject")
    );
    let annotations = deployment.metadata.annotations.unwrap();
    assert_eq!(
        annotations.get("healing-guard.io/remediation-step"),
        Some(&step.id)
    );
    assert_eq!(
        annotations
            .get("healing-guard.io/incident")
            .map(String::as_str),
        Some("api-crashloop")
    );

    let metrics = operator.metrics().await;
    for series in [
        "healing_guard_remediation_steps_total{action=\"rollback\",result=\"Succeeded\"} 1",
        "healing_guard_time_to_mitigate_seconds_count 1",
        "healing_guard_time_to_resolve_seconds_count 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} missing:\n{metrics}"
        );
    }

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually("a RemediationApplied event on the Deployment", || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default().fields("regarding.name=api"))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("RemediationApplied"))
        }
    })
    .await;
}

#[tokio::test]
async fn dry_run_plans_and_records_but_changes_nothing() {
    let actions = json!([{"action": "rollback"}, {"action": "scale", "scale": {"increment": 2, "maxReplicas": 8}}]);
    let (client, ns, _operator) = setup("fix-dryrun", "DryRun", actions, "2m").await;
    let deployments = bad_release(&client, &ns).await;
    let generation = deployments.get("api").await.unwrap().metadata.generation;

    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let incident = eventually_within("the dry run to complete", Duration::from_secs(120), || {
        let api = api.clone();
        async move {
            let incident = api.get("api-crashloop").await.ok()?;
            let done = incident
                .status
                .as_ref()?
                .timeline
                .iter()
                .any(|e| e.reason == "DryRunComplete");
            done.then_some(incident)
        }
    })
    .await;
    let status = incident.status.unwrap();
    let results: Vec<_> = status.steps.iter().map(|s| s.result).collect();
    assert_eq!(results, [StepResult::DryRun, StepResult::DryRun]);
    assert_eq!(
        status.steps[0].changes,
        ["Deployment/api rolled back from revision 2 to revision 1"]
    );
    assert_eq!(status.steps[1].changes, ["Deployment/api replicas 3 -> 5"]);
    let deployment = deployments.get("api").await.unwrap();
    assert_eq!(
        deployment.metadata.generation, generation,
        "a dry run changes nothing"
    );
    assert_eq!(deployment.spec.unwrap().replicas, Some(3));
}

#[tokio::test]
async fn a_ladder_that_does_not_help_ends_escalated() {
    // A restart does not fix a crashing release: verification times out, and nothing more is done.
    let (client, ns, _operator) =
        setup("fix-exhaust", "Auto", json!([{"action": "restart"}]), "5s").await;
    bad_release(&client, &ns).await;
    let incident = incident_in_phase(&client, &ns, &[Phase::Escalated]).await;
    let status = incident.status.unwrap();
    assert_eq!(status.steps.len(), 1);
    assert_eq!(status.steps[0].result, StepResult::Failed);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "NeedsHuman" && c.status == "True")
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = Api::<Incident>::namespaced(client.clone(), &ns)
        .get("api-crashloop")
        .await
        .unwrap();
    assert_eq!(
        later.status.unwrap().steps.len(),
        1,
        "an escalated incident gets no more automatic steps"
    );
}
