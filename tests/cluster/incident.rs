//! `kubectl apply` of an Incident: the operator picks it up, and responders
//! acknowledge it through spec.

use healing_guard_operator::crd::{Incident, Phase};
use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::ListParams};

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
