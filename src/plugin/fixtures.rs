//! Incidents for the plugin's tests, built as the API server returns them.
#![allow(clippy::unwrap_used)]

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::crd::Incident;

/// The tests' "now".
pub fn now() -> Timestamp {
    "2026-12-07T03:00:00Z".parse().unwrap()
}

/// `now` moved by `seconds`, as the API writes times.
pub fn at(seconds: i64) -> String {
    Timestamp::from_second(now().as_second() + seconds)
        .unwrap()
        .to_string()
}

/// An incident created `age` seconds ago; `status` as JSON (null for none).
pub fn incident(namespace: &str, name: &str, severity: &str, age: i64, status: Value) -> Incident {
    let mut object = json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": at(-age),
                     "resourceVersion": "1"},
        "spec": {"title": format!("{name} is down"), "severity": severity,
                 "type": "ServiceOutage", "target": {"kind": "Deployment", "name": "api"}},
    });
    if !status.is_null() {
        object["status"] = status;
    }
    serde_json::from_value(object).unwrap()
}

/// An incident with this phase and nothing else in its status.
pub fn in_phase(namespace: &str, name: &str, severity: &str, age: i64, phase: &str) -> Incident {
    incident(namespace, name, severity, age, json!({"phase": phase}))
}
