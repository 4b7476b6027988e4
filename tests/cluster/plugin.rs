//! `kubectl healing-guard`, as responders type it, through kubectl's own
//! plugin lookup: the on-call responder declares and acknowledges, the
//! commander approves the step the policy holds for approval, the responder
//! may not approve, and the timeline and report read back - each as the
//! user the API server knows, checked by the chart's admission policy.

use healing_guard_operator::crd::{Phase, StepResult};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::{
    admission::install_admission,
    remediation::{label_pods, policy_with},
    support::{Operator, client, incident_where, namespace, phase_of, user_kubeconfig},
};

/// `kubectl healing-guard ARGS` as `user`, with the plugin on PATH.
fn plugin(user: &str, ns: &str, args: &[&str]) -> (bool, String, String) {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-healing_guard"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubeconfig = user_kubeconfig(user);
    let output = std::process::Command::new("kubectl")
        .arg("healing-guard")
        .args(["--namespace", ns])
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn responders_act_through_kubectl_as_themselves() {
    let client = client().await;
    let ns = namespace(&client, "plugin").await;
    install_admission(&ns);
    let _operator = Operator::start(&ns).await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "api:1"}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    // Steps wait for a commander's approval.
    policy_with(
        &client,
        &ns,
        json!({"mode": "RequireApproval",
               "targets": [{"kind": "Deployment", "names": ["api"]}],
               "rules": [{"name": "slow", "when": {"symptom": "CrashLoopBackOff"},
                          "severity": "P1", "type": "PerformanceDegradation",
                          "actions": [{"action": "scale", "scale": {"replicas": 3, "maxReplicas": 3}}],
                          "verify": {"timeout": "1m", "holdDown": "2s"}}]}),
    )
    .await;

    let (ok, out, err) = plugin(
        "responder",
        &ns,
        &[
            "declare",
            "slow-api",
            "--title",
            "p95 above 2 s",
            "--severity",
            "p1",
            "--type",
            "PerformanceDegradation",
            "--target",
            "deploy/api",
            "--policy",
            "guard",
            "--rule",
            "slow",
        ],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "incident slow-api declared");
    let (ok, out, err) = plugin("responder", &ns, &["ack", "slow-api", "--note", "looking"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "incident slow-api acknowledged by responder");
    // The API's pods are failing: the rule's step is proposed, and held.
    label_pods(&client, &ns, "app=api", 2, "crashloop").await;
    incident_where(&client, &ns, "slow-api", "waiting for approval", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.first())
            .is_some_and(|s| s.result == StepResult::AwaitingApproval)
    })
    .await;

    // The responder may not approve; the commander may, as themselves.
    let (ok, _, err) = plugin("responder", &ns, &["approve", "slow-api", "scale"]);
    assert!(!ok);
    assert!(err.contains("spec.approvals"), "{err}");
    let (ok, out, err) = plugin("commander", &ns, &["approve", "slow-api", "scale"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "step scale of incident slow-api approved by commander"
    );
    let done = incident_where(&client, &ns, "slow-api", "the scale applied", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.first())
            .is_some_and(|s| !s.changes.is_empty())
    })
    .await;
    assert_eq!(done.spec.approvals[0].by, "commander");

    let (ok, out, err) = plugin("responder", &ns, &["timeline", "slow-api"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Acknowledged") && out.contains("scale"),
        "{out}"
    );
    let (ok, out, err) = plugin(
        "commander",
        &ns,
        &[
            "resolve",
            "slow-api",
            "--root-cause",
            "too few replicas for the load",
            "--summary",
            "scaled to 3",
            "--follow-up",
            "autoscale the API",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "incident slow-api resolved by commander");
    incident_where(&client, &ns, "slow-api", "resolved", |i| {
        phase_of(i) == Some(Phase::Resolved)
    })
    .await;
    let (ok, out, err) = plugin("responder", &ns, &["report", "slow-api"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("# Post-incident report: p95 above 2 s"),
        "{out}"
    );
    assert!(out.contains("- autoscale the API"), "{out}");
    // A mistyped target is refused before anything is sent.
    let (ok, _, err) = plugin(
        "responder",
        &ns,
        &[
            "declare",
            "x",
            "--title",
            "t",
            "--severity",
            "P2",
            "--type",
            "ServiceOutage",
            "--target",
            "api",
        ],
    );
    assert!(!ok && err.contains("--target must be"), "{err}");
}
