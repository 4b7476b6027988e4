//! The API server restarted in the middle of a remediation: nothing is lost
//! and nothing repeated. It disturbs every test sharing the control plane,
//! so `make test` runs this module on a control plane of its own (the other
//! run skips it).

use std::process::Command;

use healing_guard_operator::crd::{Phase, StepResult};
use serde_json::json;

use crate::{
    remediation::{bad_release, crash_policy, incident_in_phase, setup_spec},
    support::{incident_where, repo},
};

fn restart_apiserver() {
    let status = Command::new(repo().join("cluster/restart.sh"))
        .arg("kube-apiserver")
        .status()
        .expect("cluster/restart.sh runs (HGO_CLUSTER_DIR is set by with-cluster.sh)");
    assert!(status.success(), "the API server came back");
}

#[tokio::test]
async fn apiserver_restart_mid_remediation_loses_nothing_and_repeats_nothing() {
    let mut spec = crash_policy("Auto", json!([{"action": "rollback"}]), "2m");
    spec["safety"] = json!({"cooldown": "1s"});
    let (client, ns, operator) = setup_spec("restart-api", spec).await;
    let deployments = bad_release(&client, &ns).await;
    // Between the step's record and its change: the apply-to-status window.
    incident_where(&client, &ns, "api-crashloop", "a step recorded", |i| {
        i.status.as_ref().is_some_and(|s| !s.steps.is_empty())
    })
    .await;
    tokio::task::spawn_blocking(restart_apiserver)
        .await
        .unwrap();

    let incident = incident_in_phase(&client, &ns, &[Phase::Resolved]).await;
    let status = incident.status.unwrap();
    let results: Vec<StepResult> = status.steps.iter().map(|s| s.result).collect();
    assert_eq!(results, [StepResult::Succeeded], "{:?}", status.steps);
    // One rollback makes revision 3; a repeated one would have gone back to 2.
    let deployment = deployments.get("api").await.unwrap();
    let revision =
        deployment.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"].clone();
    assert_eq!(revision, "3", "{}", operator.logs());
}
