//! `kubectl apply` of an Incident: the operator picks it up, and responders
//! acknowledge it through spec.

use healing_guard_operator::crd::{Incident, Phase};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::support::{Operator, client, eventually, namespace, repo, run};

/// A count from the metrics text, for a line that starts with `series`.
fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn an_applied_incident_is_triggered_then_acknowledged() {
    let client = client().await;
    let ns = namespace(&client, "incident").await;
    let operator = Operator::start(&ns).await;

    let text = std::fs::read_to_string(repo().join("examples/incidents/api-outage.yaml")).unwrap();
    let mut manifest: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    manifest["metadata"]["namespace"] = ns.as_str().into();
    let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
    run(
        "kubectl",
        &["apply", "-f", "-"],
        Some(&serde_yaml::to_string(&manifest).unwrap()),
    );

    // The printer columns show the operator's work within seconds.
    let started = std::time::Instant::now();
    let row = eventually("the Incident to show phase Triggered", || {
        let (name, ns) = (name.clone(), ns.clone());
        async move {
            let table = run("kubectl", &["get", "inc", &name, "-n", &ns], None);
            table.contains("Triggered").then_some(table)
        }
    })
    .await;
    println!("Triggered after {:?}:\n{row}", started.elapsed());
    let mut lines = row.lines();
    let header: Vec<_> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SEVERITY", "TYPE", "PHASE", "TARGET", "AGE"]
    );
    let columns: Vec<_> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &columns[..5],
        [
            name.as_str(),
            "P0",
            "ServiceOutage",
            "Triggered",
            "healing-guard"
        ]
    );

    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let status = incidents.get(&name).await.unwrap().status.unwrap();
    let detected = status.milestones.detected_at.expect("detectedAt is set");
    let sla = status.sla.expect("deadlines are set");
    assert_eq!(
        sla.acknowledge_by.0.duration_since(detected.0).as_secs(),
        15 * 60
    );
    assert_eq!(status.timeline[0].reason, "Triggered");

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let selector = format!("regarding.name={name}");
    eventually("a Triggered event", || {
        let (events, selector) = (events.clone(), selector.clone());
        async move {
            let list = events
                .list(&ListParams::default().fields(&selector))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("Triggered"))
        }
    })
    .await;

    run(
        "kubectl",
        &[
            "patch",
            "inc",
            &name,
            "-n",
            &ns,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"acknowledged":{"by":"alice"}}}"#,
        ],
        None,
    );
    let status = eventually("the Incident to be Acknowledged", || {
        let incidents = incidents.clone();
        let name = name.clone();
        async move {
            let status = incidents.get(&name).await.ok()?.status?;
            (status.phase == Some(Phase::Acknowledged)).then_some(status)
        }
    })
    .await;
    assert!(status.milestones.acknowledged_at.is_some());
    assert!(
        status
            .timeline
            .iter()
            .any(|e| e.reason == "Acknowledged" && e.message.contains("alice"))
    );

    let metrics = operator.metrics().await;
    let reconciles = metric_value(
        &metrics,
        "healing_guard_reconciles_total{controller=\"incident\"}",
    );
    assert!(
        reconciles >= 2.0,
        "expected at least 2 incident reconciles:\n{metrics}\nlogs:\n{}",
        operator.logs()
    );
    let durations = metric_value(
        &metrics,
        "healing_guard_reconcile_duration_seconds_count{controller=\"incident\"}",
    );
    assert_eq!(durations, reconciles);

    let log = operator.log.clone();
    assert!(
        operator.terminate(),
        "the operator did not exit cleanly on SIGTERM"
    );
    let logs = std::fs::read_to_string(log).unwrap();
    assert!(logs.contains("shut down cleanly"), "{logs}");
}

#[tokio::test]
async fn an_unacknowledged_incident_breaches_its_deadline_with_nothing_else_happening() {
    let client = client().await;
    let ns = namespace(&client, "deadline").await;
    let operator = Operator::start(&ns).await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    // Declared after the fact: noticed 14m56s ago, so the P0 deadline (15 min) is 4 s away.
    let detected = Timestamp::now() - SignedDuration::from_secs(14 * 60 + 56);
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": "late"},
        "spec": {
            "title": "Webhooks failing", "severity": "P0", "type": "IntegrationFailure",
            "target": {"kind": "Deployment", "name": "webhook-worker"},
            "detectedAt": Time(detected)
        }
    }))
    .unwrap();
    incidents
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();
    let triggered = eventually("Triggered", || {
        let incidents = incidents.clone();
        async move {
            incidents
                .get("late")
                .await
                .ok()?
                .status
                .filter(|s| s.phase == Some(Phase::Triggered))
        }
    })
    .await;
    assert!(
        !triggered.sla.unwrap().acknowledge_breached,
        "not yet breached when it opens"
    );
    let metrics = operator.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "healing_guard_open_incidents{severity=\"P0\",type=\"IntegrationFailure\",phase=\"Triggered\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "healing_guard_incidents_opened_total{source=\"Manual\",rule=\"\"}"
        ),
        1.0
    );

    // Nothing touches the incident; the operator requeued itself for the deadline.
    let status = eventually("the AckSLABreached condition", || {
        let incidents = incidents.clone();
        async move {
            let status = incidents.get("late").await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "AckSLABreached" && c.status == "True")
                .then_some(status)
        }
    })
    .await;
    assert!(status.sla.unwrap().acknowledge_breached);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually("a Warning AckSLABreached event", || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default().fields("regarding.name=late"))
                .await
                .ok()?;
            list.items.into_iter().find(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("AckSLABreached")
            })
        }
    })
    .await;
    let metrics = operator.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "healing_guard_sla_breaches_total{severity=\"P0\",deadline=\"acknowledge\"}"
        ),
        1.0,
        "{metrics}"
    );
}

/// A declared incident whose target looks healthy (the outage is seen from
/// outside: a bad release whose pods do not crash) proposes its rule's
/// step, says why it waits, and runs it once a person approves: the
/// rollback brings the previous release back and the incident resolves.
#[tokio::test]
async fn a_declared_incident_on_a_healthy_looking_target_proposes_its_step_and_runs_it_once_approved()
 {
    use healing_guard_operator::crd::StepResult;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};

    let client = client().await;
    let ns = namespace(&client, "declared-healthy").await;
    let _operator = Operator::start(&ns).await;
    crate::remediation::policy_with(
        &client,
        &ns,
        crate::remediation::crash_policy("Auto", json!([{"action": "rollback"}]), "1m"),
    )
    .await;
    // Revision 1, then a release whose pods run fine but serve errors.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api", "labels": {"guarded": "yes"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.local/api:1"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let image = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap_or_default()
    };
    let rolled_out = |version: &'static str| {
        let deployments = deployments.clone();
        move || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("api").await.ok()?;
                let status = d.status.clone()?;
                (image(&d) == format!("registry.local/api:{version}")
                    && status.updated_replicas == Some(2)
                    && status.available_replicas == Some(2))
                .then_some(())
            }
        }
    };
    eventually("revision 1 available", rolled_out("1")).await;
    let release = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "registry.local/api:2"}]}}}});
    deployments
        .patch("api", &PatchParams::default(), &Patch::Strategic(&release))
        .await
        .unwrap();
    eventually("revision 2 available", rolled_out("2")).await;

    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "api-errors"},
        "spec": {"title": "the API answers 503 since release 2", "severity": "P1",
                 "type": "ServiceOutage", "target": {"kind": "Deployment", "name": "api"},
                 "policy": "guard", "rule": "crash"}
    }))
    .unwrap();
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    incidents
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();
    let proposed =
        crate::support::incident_where(&client, &ns, "api-errors", "the step proposed", |i| {
            i.status
                .as_ref()
                .and_then(|s| s.steps.first())
                .is_some_and(|s| s.result == StepResult::AwaitingApproval)
        })
        .await;
    let step = &proposed.status.as_ref().unwrap().steps[0];
    assert_eq!(
        step.message.as_deref(),
        Some(
            "the rule's symptom CrashLoopBackOff is not present on Deployment/api; this incident \
             was declared by a person, so its step is proposed: approve it in spec.approvals \
             ({step: rollback, by: <you>}) to run it anyway"
        )
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        image(&deployments.get("api").await.unwrap()),
        "registry.local/api:2",
        "nothing runs before the approval"
    );

    let approve = json!({"spec": {"approvals": [{"step": "rollback", "by": "commander"}]}});
    incidents
        .patch(
            "api-errors",
            &PatchParams::default(),
            &Patch::Merge(&approve),
        )
        .await
        .unwrap();
    eventually("revision 1 back", rolled_out("1")).await;
    let resolved = crate::support::incident_where(&client, &ns, "api-errors", "resolved", |i| {
        crate::support::phase_of(i) == Some(Phase::Resolved)
    })
    .await;
    assert_eq!(
        resolved.status.unwrap().steps[0].result,
        StepResult::Succeeded
    );
}
