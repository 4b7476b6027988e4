//! A small world for the detector's tests, on a virtual clock: the
//! Deployment `api` in `hg`, its pods, the policy `guard` that guards it
//! (rule `crash` on CrashLoopBackOff) and the incidents of that signal.

use std::time::Duration;

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use serde_json::json;

use super::report::Report;
use crate::{
    crd::{Incident, IncidentStatus, IncidentType, Phase, RemediationPolicy, Severity, Symptom},
    pod::PodFacts,
    workload::Workload,
};

/// The dedup key of `api` crash-looping.
pub const CRASH_KEY: &str = "Deployment/api/CrashLoopBackOff";
/// The policy's reopen window.
pub const REOPEN_WINDOW: Duration = Duration::from_secs(1800);

/// `seconds` after the start of the virtual clock.
pub fn at(seconds: i64) -> Timestamp {
    let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    start + SignedDuration::from_secs(seconds)
}

/// `guard`: restarts `api` when it crash-loops; a 2 minute hold-down, a
/// 30 minute reopen window.
pub fn policy() -> RemediationPolicy {
    serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
        "metadata": {"name": "guard", "namespace": "hg"},
        "spec": {
            "targets": [{"kind": "Deployment", "names": ["api"]}],
            "detection": {"holdDown": "2m", "reopenWindow": "30m"},
            "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff"},
                "severity": "P1", "type": "ServiceOutage", "actions": [{"action": "restart"}]}],
        }
    }))
    .unwrap()
}

/// `api` with 2 replicas desired, `available` of them available.
pub fn api(available: i32) -> Workload {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api", "namespace": "hg", "uid": "d-1", "generation": 1},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "app", "image": "api:1"}]}}},
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
            "readyReplicas": available, "availableReplicas": available},
    }))
    .unwrap();
    deployment.into()
}

/// A pod of `api` that has restarted `restarts` times: crash-looping, or
/// running and ready.
pub fn pod(name: &str, restarts: i32, crashing: bool) -> PodFacts {
    let (state, ready) = if crashing {
        (json!({"waiting": {"reason": "CrashLoopBackOff"}}), false)
    } else {
        (json!({"running": {}}), true)
    };
    let ready_condition = if ready { "True" } else { "False" };
    serde_json::from_value::<Pod>(json!({
        "metadata": {"name": name, "namespace": "hg", "labels": {"app": "api", "pod-template-hash": "h"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-h", "uid": "r"}]},
        "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": ready_condition, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [{"name": "app", "image": "api:1", "imageID": "",
                "ready": ready, "restartCount": restarts, "state": state}]}
    }))
    .unwrap()
    .into()
}

/// What the detector says when `pods` of `api` crash-loop at `now`.
pub fn crash_report(now: Timestamp, pods: &[&str], occurrences: i64) -> Report {
    Report {
        rule: "crash".into(),
        severity: Severity::P1,
        incident_type: IncidentType::ServiceOutage,
        occurrences,
        pods: pods.iter().map(|p| (*p).to_owned()).collect(),
        detail: format!("{}: CrashLoopBackOff", pods.first().unwrap_or(&"-")),
        cleared: false,
        ..clear_report(now)
    }
}

/// That `api` stopped crash-looping at `now`.
pub fn clear_report(now: Timestamp) -> Report {
    Report::clear(
        ("hg".into(), api(2).reference()),
        (Symptom::CrashLoopBackOff, None),
        "guard".into(),
        REOPEN_WINDOW,
        now,
    )
}

/// An incident of `api` crash-looping, in `phase`, resolved at `resolved_at`.
pub fn incident(name: &str, phase: Option<Phase>, resolved_at: Option<Timestamp>) -> Incident {
    let mut incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": name, "namespace": "hg"},
        "spec": {"title": "t", "severity": "P1", "type": "ServiceOutage",
            "target": {"kind": "Deployment", "name": "api"},
            "source": {"kind": "Detected", "policy": "guard", "rule": "crash", "dedupKey": CRASH_KEY}}
    }))
    .unwrap();
    let mut status = IncidentStatus {
        phase,
        ..Default::default()
    };
    status.milestones.resolved_at = resolved_at.map(Time);
    incident.status = Some(status);
    incident
}
