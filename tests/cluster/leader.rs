//! Two replicas: only the lease holder acts, and the standby takes over.

use healing_guard_operator::crd::{Incident, Phase};
use kube::{Api, api::PostParams};
use serde_json::json;

use std::time::Duration;

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

#[tokio::test]
async fn a_leader_cut_off_from_its_lease_stops_before_anyone_could_take_over() {
    use k8s_openapi::api::{coordination::v1::Lease, rbac::v1::Role};
    use kube::api::{Patch, PatchParams};

    let client = client().await;
    let ns = namespace(&client, "fence").await;
    let args = [
        "--leader-elect",
        "--leader-election-namespace",
        ns.as_str(),
        "--lease-duration",
        "6",
    ];
    let mut leader = Operator::start_with(&ns, &args).await;
    eventually_within("the replica to lead", Duration::from_secs(30), || {
        let led = leader.logs().contains("became leader");
        async move { led.then_some(()) }
    })
    .await;
    let standby = Operator::start_with(&ns, &args).await;

    // Its API access to its Lease is cut (the chart's lease role for this
    // release loses its rules), so its renewals fail from now on.
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    let name = format!("op-{ns}-healing-guard-operator-leader-election");
    let full_rules = roles.get(&name).await.unwrap().rules.unwrap();
    let set_rules = |rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>| {
        let roles = roles.clone();
        let name = name.clone();
        async move {
            let patch = serde_json::json!({"rules": rules});
            roles
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    set_rules(Vec::new()).await;

    // It stops acting on its own, and exits.
    let status = eventually_within(
        "the cut-off leader to exit",
        Duration::from_secs(30),
        || {
            let exited = leader.exited();
            async move { exited }
        },
    )
    .await;
    assert!(!status.success(), "a lost lease is an error exit");
    let stopped = leader
        .logged_at("lost the lease")
        .unwrap_or_else(|| panic!("no loss logged:\n{}", leader.logs()));
    // Before anyone could take over: its last renewal plus the lease duration.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = leases
        .get(&format!("op-{ns}-healing-guard-operator"))
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    let renewed = spec.renew_time.unwrap().0;
    let expires = renewed
        .checked_add(Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap()).unwrap(),
        ))
        .unwrap();
    assert!(
        stopped < expires,
        "stopped at {stopped}, the lease it held ran until {expires}"
    );
    assert!(
        !standby.logs().contains("became leader"),
        "nobody can take the lease without access to it"
    );

    // Access restored: the standby takes over, after the stopped leader.
    set_rules(full_rules).await;
    eventually_within("the standby to lead", Duration::from_secs(30), || {
        let led = standby.logs().contains("became leader");
        async move { led.then_some(()) }
    })
    .await;
    let took_over = standby.logged_at("became leader").unwrap();
    assert!(stopped < took_over, "{stopped} < {took_over}");
}
