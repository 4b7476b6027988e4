//! What the operator says about itself while it works: no ERROR lines for
//! conditions it expects and records, and a detector whose memory goes back
//! to where it was once the workloads and incidents it tracked are gone.

use std::time::Duration;

use healing_guard_operator::crd::{Incident, RemediationPolicy};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::DeleteParams};
use serde_json::json;

use crate::{
    remediation::{bad_release, crash_policy, policy_with},
    support::{Launch, Operator, client, eventually, eventually_within, namespace},
};

/// The operator's `healing_guard_detector_entries` gauge.
async fn detector_entries(operator: &Operator) -> Option<i64> {
    let text = operator.try_metrics().await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("healing_guard_detector_entries "))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn logs_missing_on_a_node_are_evidence_not_an_error_line() {
    let client = client().await;
    let ns = namespace(&client, "ops-quiet").await;
    // RUST_LOG unset: the filter a production install runs with.
    let launch = Launch {
        log_filter: "",
        capture_logs: true,
        ..Launch::namespaced(&ns)
    };
    let operator = Operator::launch(&launch).await.unwrap();
    policy_with(
        &client,
        &ns,
        crash_policy("DryRun", json!([{"action": "restart"}]), "1m"),
    )
    .await;
    bad_release(&client, &ns).await;

    // kwok's nodes run no kubelet: the log fetch fails, and the evidence says so.
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let notes = eventually("the evidence to note the missing logs", || {
        let incidents = incidents.clone();
        async move {
            let incident = incidents.get("api-crashloop").await.ok()?;
            let notes = incident.status?.evidence?.notes;
            notes
                .iter()
                .any(|n| n.contains("not available"))
                .then_some(notes)
        }
    })
    .await;
    let logs = operator.logs();
    assert!(
        logs.contains("incident opened"),
        "the default filter keeps the operator's own progress: {logs}"
    );
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "an expected, recorded condition ({notes:?}) logged as an error: {errors:#?}"
    );
}

#[tokio::test]
async fn the_detector_forgets_workloads_and_incidents_once_they_are_gone() {
    let client = client().await;
    let ns = namespace(&client, "ops-forget").await;
    let operator = Operator::start(&ns).await;
    let baseline = eventually("the detector's gauge", || detector_entries(&operator)).await;

    policy_with(
        &client,
        &ns,
        crash_policy("DryRun", json!([{"action": "restart"}]), "1m"),
    )
    .await;
    bad_release(&client, &ns).await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    eventually("the incident", || {
        let incidents = incidents.clone();
        async move { incidents.get("api-crashloop").await.ok() }
    })
    .await;
    let busy = detector_entries(&operator).await.unwrap();
    assert!(
        busy > baseline,
        "tracking a workload and its incident takes entries ({busy} vs {baseline})"
    );

    // The workload, its incident and the policy go: so does what the detector kept.
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .delete("api", &DeleteParams::default())
        .await
        .unwrap();
    Api::<RemediationPolicy>::namespaced(client.clone(), &ns)
        .delete("guard", &DeleteParams::default())
        .await
        .unwrap();
    incidents
        .delete("api-crashloop", &DeleteParams::default())
        .await
        .unwrap();
    eventually_within(
        "the detector's entries back to where they were",
        Duration::from_secs(30),
        || async {
            let now = detector_entries(&operator).await?;
            (now == baseline).then_some(now)
        },
    )
    .await;
}
