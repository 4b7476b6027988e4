//! The Helm chart lints and renders to manifests the API server accepts.

use crate::support::{client, namespace, run, run_status};

#[tokio::test]
async fn the_chart_lints_and_its_manifests_pass_a_server_dry_run() {
    let client = client().await;
    let ns = namespace(&client, "chart").await;
    run("helm", &["lint", "charts/healing-guard-operator"], None);
    let rendered = run(
        "helm",
        &[
            "template",
            "hgo",
            "charts/healing-guard-operator",
            "--namespace",
            &ns,
        ],
        None,
    );
    let (ok, stdout, stderr) = run_status(
        "kubectl",
        &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
        Some(&rendered),
    );
    assert!(ok, "server dry-run failed:\n{stderr}\n{stdout}");
    for kind in [
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "deployment",
        "service",
    ] {
        assert!(
            stdout.contains(&format!("{kind}.")) || stdout.contains(&format!("{kind}/")),
            "{kind} missing:\n{stdout}"
        );
    }
}

/// With its values on, the chart ships the alert rules and the dashboard
/// exactly as the files `make test` checks (promtool, tests/observability.rs).
#[test]
fn the_chart_ships_the_checked_rules_and_dashboard() {
    let rendered = run(
        "helm",
        &[
            "template",
            "hgo",
            "charts/healing-guard-operator",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.serviceAlerts=true",
            "--set",
            "prometheusRule.labels.release=prometheus",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
        None,
    );
    let file = |path: &str| {
        std::fs::read_to_string(format!("charts/healing-guard-operator/{path}")).unwrap()
    };
    let as_yaml = |text: &str| serde_yaml::from_str::<serde_json::Value>(text).unwrap();
    let mut rules = Vec::new();
    let mut dashboard = None;
    for document in serde_yaml::Deserializer::from_str(&rendered) {
        let object = <serde_json::Value as serde::Deserialize>::deserialize(document).unwrap();
        match object["kind"].as_str() {
            Some("PrometheusRule") => {
                assert_eq!(object["metadata"]["labels"]["release"], "prometheus");
                rules.push(object["spec"].clone());
            }
            Some("ConfigMap")
                if object["metadata"]["name"] == "hgo-healing-guard-operator-dashboard" =>
            {
                assert_eq!(object["metadata"]["labels"]["grafana_dashboard"], "1");
                dashboard = Some(
                    object["data"]["healing-guard-operator.json"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            _ => {}
        }
    }
    assert_eq!(
        rules,
        [
            as_yaml(&file("rules/operator.rules.yaml")),
            as_yaml(&file("rules/service.rules.yaml"))
        ]
    );
    let shipped: serde_json::Value = serde_json::from_str(&dashboard.unwrap()).unwrap();
    let checked: serde_json::Value =
        serde_json::from_str(&file("dashboards/healing-guard-operator.json")).unwrap();
    assert_eq!(shipped, checked);
    // Off by default: nothing needs the Prometheus Operator's CRDs.
    let plain = run(
        "helm",
        &["template", "hgo", "charts/healing-guard-operator"],
        None,
    );
    assert!(!plain.contains("PrometheusRule") && !plain.contains("grafana_dashboard"));
}
