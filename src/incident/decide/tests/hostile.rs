//! Hostile and malformed manifests: a valid policy and incident with
//! random fields replaced by random values (huge and negative
//! numbers, durations of any length, far-future times, wrong types,
//! deleted keys). Whatever decodes goes through validation, the
//! ladder, the detector's classifier, the lifecycle and a whole
//! reconcile decision; none of it may panic.

use proptest::prelude::*;

use super::*;
use crate::{incident::lifecycle, validation};

/// Every path to a value in `value`, objects' keys and arrays' items.
fn paths(value: &Value, here: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(here.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let mut next = here.clone();
                next.push(key.clone());
                paths(child, next, out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                let mut next = here.clone();
                next.push(index.to_string());
                paths(child, next, out);
            }
        }
        _ => {}
    }
}

fn set(root: &mut Value, path: &[String], new: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = root;
    for step in parents {
        at = match at {
            Value::Object(map) => match map.get_mut(step) {
                Some(next) => next,
                None => return,
            },
            Value::Array(items) => {
                match step.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(next) => next,
                    None => return,
                }
            }
            _ => return,
        };
    }
    match (at, new) {
        (Value::Object(map), Some(value)) => {
            map.insert(last.clone(), value);
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (Value::Array(items), Some(value)) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *slot = value;
            }
        }
        _ => {}
    }
}

fn hostile_value() -> impl Strategy<Value = Option<Value>> {
    let words = prop::sample::select(vec![
        "P0",
        "P3",
        "Auto",
        "DryRun",
        "RequireApproval",
        "Deployment",
        "StatefulSet",
        "rollback",
        "scale",
        "restart",
        "restoreConfig",
        "CrashLoopBackOff",
        "NotReady",
        "Pending",
        "Verifying",
        "Succeeded",
        "Failed",
        "AwaitingApproval",
        "Resolved",
        "Escalated",
        "Declined",
        "Monitoring",
        "",
        "api",
        "guard",
        "crash",
    ]);
    prop_oneof![
        Just(None),
        any::<i64>().prop_map(|n| Some(json!(n))),
        prop::num::f64::NORMAL.prop_map(|n| Some(json!(n))),
        "[0-9]{1,25}(\\.[0-9]{1,5})?(ns|us|ms|s|m|h|d)?".prop_map(|t| Some(json!(t))),
        "(0001|1970|2026|9999)-(01|12)-(01|31)T(00|23):(00|59):(00|59)Z"
            .prop_map(|t| Some(json!(t))),
        ".{0,40}".prop_map(|t| Some(json!(t))),
        words.prop_map(|w| Some(json!(w))),
        Just(Some(json!([]))),
        Just(Some(json!({}))),
        Just(Some(Value::Null)),
        Just(Some(json!(true))),
    ]
}

fn full_policy() -> Value {
    json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
        "metadata": {"name": "guard", "namespace": "hg",
            "annotations": {"healing-guard.io/circuit-breaker-reset": "2026-01-01T00:00:00Z"}},
        "spec": {
            "mode": "Auto", "priority": 1,
            "incidents": {"allowedActions": ["scale", "restart"]},
            "safety": {"cooldown": "1m", "maxActions": 3, "window": "1h",
                "minReadyReplicas": 1, "circuitBreakerThreshold": 2},
            "detection": {"holdDown": "1m", "reopenWindow": "10m", "flapThreshold": 2,
                "keepClosed": 3, "maxClosedAge": "24h"},
            "targets": [{"kind": "Deployment", "names": ["api"],
                "selector": {"matchLabels": {"app": "api"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}}],
            "rules": [{"name": "crash",
                "when": {"symptom": "CrashLoopBackOff", "minRestarts": 2, "sustainedFor": "10s"},
                "severity": "P1", "type": "ServiceOutage",
                "actions": [
                    {"action": "rollback", "rollback": {"to": "LastHealthy"}, "timeout": "2m"},
                    {"action": "scale", "name": "more", "scale": {"increment": 2, "maxReplicas": 8,
                        "resources": {"container": "app", "limits": {"memory": "2Gi"}}}},
                    {"action": "restart", "restart": {"method": "DeletePods", "maxUnavailable": 1}},
                    {"action": "restoreConfig", "restoreConfig": {"configMap": "cfg"}, "mode": "RequireApproval"}
                ],
                "verify": {"timeout": "5m", "holdDown": "1m"}}]
        }
    })
}

fn full_incident() -> Value {
    json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "api-crashloop", "namespace": "hg", "uid": UID, "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"title": "CrashLoopBackOff on Deployment/api", "severity": "P1",
            "severityReason": "r", "type": "ServiceOutage",
            "target": {"kind": "Deployment", "name": "api"},
            "detectedAt": "2026-01-01T00:00:00Z", "policy": "guard", "rule": "crash",
            "mode": "Auto",
            "actions": [{"action": "scale", "scale": {"replicas": 4, "maxReplicas": 4}}],
            "source": {"kind": "Detected", "policy": "guard", "rule": "crash",
                "dedupKey": "Deployment/api/CrashLoopBackOff"},
            "acknowledged": {"by": "alice", "note": "on it"},
            "approvals": [{"step": "scale", "by": "bob"}],
            "resolution": null, "declined": null},
        "status": {"phase": "Mitigating", "reopensHandled": 1,
            "milestones": {"detectedAt": "2026-01-01T00:00:00Z", "acknowledgedAt": "2026-01-01T00:01:00Z"},
            "sla": {"acknowledgeBy": "2026-01-01T01:00:00Z", "resolveBy": "2026-01-02T00:00:00Z"},
            "detection": {"symptom": "CrashLoopBackOff", "occurrences": 5, "reopens": 2,
                "firstSeenAt": "2026-01-01T00:00:00Z", "lastSeenAt": "2026-01-01T00:05:00Z",
                "affectedPods": ["api-1"], "affectedPodsOmitted": 0},
            "evidence": {},
            "steps": [
                {"id": "a-0-scale-1", "name": "scale", "action": "scale", "rule": "crash", "attempt": 1,
                 "result": "Verifying", "startedAt": "2026-01-01T00:02:00Z",
                 "healthySince": "2026-01-01T00:03:00Z", "changes": ["x"]},
                {"id": "a-1-more-2", "name": "more", "action": "scale", "rule": "crash", "attempt": 2,
                 "result": "Pending", "startedAt": "2026-01-01T00:04:00Z", "changes": []}
            ],
            "timeline": [{"at": "2026-01-01T00:00:00Z", "reason": "Triggered", "message": "m"}]}
    })
}

fn mutated(base: Value, mutations: &[(prop::sample::Index, Option<Value>)]) -> Value {
    let mut value = base;
    for (index, new) in mutations {
        let mut all = Vec::new();
        paths(&value, Vec::new(), &mut all);
        let path = index.get(&all).clone();
        set(&mut value, &path, new.clone());
    }
    value
}

#[test]
fn no_manifest_can_panic_a_reconcile() {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let (policies, incidents, decided) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let mutations = || prop::collection::vec((any::<prop::sample::Index>(), hostile_value()), 0..4);
    let cases = (mutations(), mutations(), any::<bool>(), any::<bool>());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(1000));
    runner
        .run(
            &cases,
            |(policy_mutations, incident_mutations, ready, late)| {
                let policy_json = mutated(full_policy(), &policy_mutations);
                let incident_json = mutated(full_incident(), &incident_mutations);
                let policy = serde_json::from_value::<RemediationPolicy>(policy_json)
                    .ok()
                    .map(Arc::new);
                let now = if late {
                    "9999-12-01T00:00:00Z"
                } else {
                    "2026-01-01T00:10:00Z"
                };
                let workload = api(ready, json!({}));
                if let Some(policy) = &policy {
                    policies.fetch_add(1, Relaxed);
                    let _ = validation::policy(&policy.spec);
                    let _ = symptoms::evaluate(
                        &policy.spec.rules,
                        &workload,
                        [crashing_pod()].iter(),
                        Some(at(now)),
                        at(now),
                    );
                }
                let Ok(incident) = serde_json::from_value::<Incident>(incident_json) else {
                    return Ok(());
                };
                incidents.fetch_add(1, Relaxed);
                let _ = validation::incident(&incident.spec);
                let settings = policy
                    .as_ref()
                    .map(|p| p.spec.detection.clone())
                    .unwrap_or_default();
                let _ = lifecycle::plan(&incident, &settings, at(now));
                let mut observed = World::new()
                    .target(workload)
                    .pods(vec![crashing_pod()])
                    .rollback_history()
                    .seen_at(now);
                // The policy as it decoded, if it did.
                observed.policy = policy.clone();
                let first = decide(&incident, &observed);
                // And the reconcile after it, from what it decided.
                observed.inputs = AnyInputs::default();
                let _ = decide(&after(incident, &first), &observed);
                if policy.is_some() {
                    decided.fetch_add(1, Relaxed);
                }
                Ok(())
            },
        )
        .unwrap();
    // Enough of the hostile objects decode to reach the code under test.
    let (policies, incidents, decided) = (
        policies.into_inner(),
        incidents.into_inner(),
        decided.into_inner(),
    );
    assert!(policies >= 250, "only {policies} of 1000 policies decoded");
    assert!(
        incidents >= 300,
        "only {incidents} of 1000 incidents decoded"
    );
    assert!(decided >= 60, "only {decided} reconciles had both");
}
