//! The chart's dashboard and alert rules ask only for metrics the operator
//! exports: a renamed metric would leave a panel empty and an alert silent
//! without anyone noticing. Every alert is labelled as kube-prometheus's
//! Alertmanager routes it and links its runbook. (`cluster/check-rules.sh`,
//! run by `make test`, checks and unit-tests the rules with promtool.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use healing_guard_operator::metrics::Metrics;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/healing-guard-operator");

/// Metrics with one sample in every family: an empty family is not rendered.
fn every_family() -> Metrics {
    use healing_guard_operator::metrics::{
        ActionLabels, KindLabels, OpenedLabels, PageLabels, SeverityLabels, SlaLabels, StepLabels,
    };
    let metrics = Metrics::default();
    drop(metrics.count_and_time("incident"));
    metrics.count_error("incident", "conflict");
    metrics.count_notification("Slack", "Opened", "sent");
    metrics.set_circuit_breaker("ns", "policy", true);
    let incident: healing_guard_operator::crd::Incident =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "i", "namespace": "ns"},
            "spec": {"title": "t", "severity": "P0", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"}},
            "status": {"phase": "Triggered"}
        }))
        .unwrap();
    metrics.count_open_incidents(&[std::sync::Arc::new(incident)]);
    let severity = SeverityLabels {
        severity: "P0".into(),
    };
    metrics
        .sla_breaches
        .get_or_create(&SlaLabels {
            severity: "P0".into(),
            deadline: "acknowledge",
        })
        .inc();
    metrics.detection_latency.observe(0.1);
    metrics
        .incidents_opened
        .get_or_create(&OpenedLabels {
            source: "Detected",
            rule: "r".into(),
        })
        .inc();
    metrics
        .steps
        .get_or_create(&StepLabels {
            action: "rollback",
            result: "Succeeded",
        })
        .inc();
    metrics
        .step_duration
        .get_or_create(&ActionLabels { action: "rollback" })
        .observe(1.0);
    metrics.time_to_mitigate.observe(1.0);
    metrics.time_to_resolve.observe(1.0);
    metrics.ladder_exhaustions.inc();
    metrics.fenced_writes.inc();
    metrics.detector_entries.set(1);
    metrics
        .delivery_latency
        .get_or_create(&KindLabels { kind: "Slack" })
        .observe(0.1);
    metrics
        .pages
        .get_or_create(&PageLabels {
            step: 0,
            role: "primary".into(),
        })
        .inc();
    metrics
        .time_to_acknowledge
        .get_or_create(&severity)
        .observe(60.0);
    metrics.count_probe_check("http", "passed", Some(0.01));
    metrics
        .probe_failing
        .get_or_create(&healing_guard_operator::metrics::ProbeKeyLabels {
            namespace: "ns".into(),
            policy: "policy".into(),
            probe: "health".into(),
        })
        .set(1);
    metrics
}

/// The sample names the operator exports: each family's name with the
/// suffixes of its type.
fn exported() -> BTreeSet<String> {
    let text = every_family().render().unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#") || words.next() != Some("TYPE") {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// Every `healing_guard_...` name in `text`.
fn asked_for(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("healing_guard_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // The bare prefix is prose ("healing_guard_* metrics"), not a name.
        if end > "healing_guard_".len() {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_and_the_rules_ask_only_for_exported_metrics() {
    let exported = exported();
    assert!(
        exported.contains("healing_guard_notifications_total")
            && exported.contains("healing_guard_time_to_acknowledge_seconds_bucket"),
        "the operator's families are read: {exported:?}"
    );
    let dashboard =
        std::fs::read_to_string(format!("{CHART}/dashboards/healing-guard-operator.json")).unwrap();
    let rules = std::fs::read_to_string(format!("{CHART}/rules/operator.rules.yaml")).unwrap();
    for (file, text) in [("dashboard", &dashboard), ("operator.rules.yaml", &rules)] {
        let asked = asked_for(text);
        assert!(asked.len() >= 5, "{file} asks for {asked:?}");
        let unknown: Vec<&String> = asked.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} asks for metrics nobody exports: {unknown:?}"
        );
    }
}

#[test]
fn the_dashboard_is_well_formed() {
    let text =
        std::fs::read_to_string(format!("{CHART}/dashboards/healing-guard-operator.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "healing-guard-operator");
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
}

/// What `severity` each of the runbook's levels (`priority`) is, in the
/// values kube-prometheus routes and inhibits by (why, in
/// rules/operator.rules.yaml).
fn severity_of(priority: &str) -> Option<&'static str> {
    match priority {
        "P0" | "P1" => Some("critical"),
        "P2" => Some("warning"),
        "P3" => Some("info"),
        _ => None,
    }
}

#[test]
fn every_alert_has_a_kube_prometheus_severity_a_priority_and_a_runbook() {
    let docs = "https://github.com/healing-guard/healing-guard-operator/blob/main/docs";
    let mut alerts = 0;
    let mut problems = Vec::new();
    for file in ["operator.rules.yaml", "service.rules.yaml"] {
        let text = std::fs::read_to_string(format!("{CHART}/rules/{file}")).unwrap();
        let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        for rule in rules["groups"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|group| group["rules"].as_sequence().unwrap())
        {
            let Some(alert) = rule["alert"].as_str() else {
                continue; // a recording rule
            };
            alerts += 1;
            let label = |name: &str| rule["labels"][name].as_str().unwrap_or("(none)");
            let (severity, priority) = (label("severity"), label("priority"));
            match severity_of(priority) {
                None => problems.push(format!(
                    "{file}: {alert}: priority {priority}, not one of P0 to P3"
                )),
                Some(expected) if severity != expected => problems.push(format!(
                    "{file}: {alert}: severity {severity}, but a {priority} is {expected}"
                )),
                Some(_) => {}
            }
            let runbook = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or("(none)");
            let expected = format!("{docs}/alerts.md#{}", alert.to_lowercase());
            if runbook != expected {
                problems.push(format!(
                    "{file}: {alert}: runbook_url {runbook}, not {expected}"
                ));
            }
        }
    }
    assert!(alerts >= 12, "only {alerts} alerts read");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
