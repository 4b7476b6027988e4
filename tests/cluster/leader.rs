//! Two replicas: only the lease holder acts, and the standby takes over.

use healing_guard_operator::crd::{Incident, Phase};
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::support::{Operator, client, eventually_within, incident_where, namespace, phase_of};

fn declared(name: &str) -> Incident {
    serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": name},
        "spec": {"title": "declared", "severity": "P2", "type": "ServiceOutage",
                 "target": {"kind": "Deployment", "name": "api"}}
    }))
    .unwrap()
}

fn reconciles(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("healing_guard_reconciles_total{controller=\"incident\"}")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn only_the_leader_acts_and_a_standby_takes_over() {
    let client = client().await;
    let ns = namespace(&client, "leader").await;
    let args = [
        "--leader-elect",
        "--leader-election-namespace",
        ns.as_str(),
        "--lease-duration",
        "4",
    ];
    let first = Operator::start_with(&ns, &args).await;
    eventually_within(
        "the first replica to lead",
        std::time::Duration::from_secs(30),
        || {
            let led = first.logs().contains("became leader");
            async move { led.then_some(()) }
        },
    )
    .await;
    let second = Operator::start_with(&ns, &args).await;

    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    incidents
        .create(&PostParams::default(), &declared("one"))
        .await
        .unwrap();
    incident_where(&client, &ns, "one", "Triggered", |i| {
        phase_of(i) == Some(Phase::Triggered)
    })
    .await;
    assert!(reconciles(&first.metrics().await) >= 1.0);
    assert_eq!(
        reconciles(&second.metrics().await),
        0.0,
        "the standby must not act"
    );
    assert!(!second.logs().contains("became leader"));

    // The leader dies without releasing the lease: the standby takes over once it expires.
    first.kill();
    eventually_within(
        "the standby to lead",
        std::time::Duration::from_secs(30),
        || {
            let led = second.logs().contains("became leader");
            async move { led.then_some(()) }
        },
    )
    .await;
    incidents
        .create(&PostParams::default(), &declared("two"))
        .await
        .unwrap();
    incident_where(&client, &ns, "two", "Triggered", |i| {
        phase_of(i) == Some(Phase::Triggered)
    })
    .await;
    assert!(reconciles(&second.metrics().await) >= 1.0);
}
