//! Policies tested before merge, against the real thing: one scenario run
//! twice, live on the control plane and as a policy test case on the
//! virtual clock, must come to the same incidents, phases and ledger; and
//! the live incident, recorded, replays the same against its own policy.

use std::time::Duration;

use healing_guard_operator::{
    crd::{Incident, IncidentStatus},
    simulation::{self, Format, engine, load},
};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::remediation::{bad_release, crash_policy, setup_spec};
use crate::support::{eventually_within, phase_of};

/// What must agree between the live incident and the simulated one: its
/// name, rule, severity, type and phase; each step's name, action, result
/// and what it changed; the milestones reached; and the order of the
/// timeline's reasons (when each happened differs: the clocks differ).
fn course(incident: &Incident) -> serde_json::Value {
    let status = incident.status.clone().unwrap_or_default();
    let IncidentStatus {
        steps,
        milestones,
        timeline,
        ..
    } = &status;
    let mut reasons: Vec<&str> = timeline.iter().map(|e| e.reason.as_str()).collect();
    // The detector's own updates (counts) are as many as its writes.
    reasons.dedup();
    json!({
        "name": incident.name_any(),
        "rule": incident.spec.source.rule.clone().or(incident.spec.rule.clone()),
        "severity": incident.spec.severity,
        "type": incident.spec.incident_type,
        "phase": phase_of(incident),
        "steps": steps.iter().map(|s| json!({
            "name": s.name, "action": s.action, "result": s.result, "attempt": s.attempt,
            "changes": s.changes.iter().map(|c| without_times(c)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "milestones": {
            "acknowledged": milestones.acknowledged_at.is_some(),
            "mitigated": milestones.mitigated_at.is_some(),
            "resolved": milestones.resolved_at.is_some(),
        },
        "timeline": reasons,
    })
}

/// `line` with each time in it (`2026-12-07T06:56:47Z`) as `<time>`.
fn without_times(line: &str) -> String {
    let bytes = line.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let mut out = String::new();
    let mut i = 0;
    while i < line.len() {
        let fits = bytes.len() >= i + shape.len()
            && shape.iter().zip(&bytes[i..]).all(|(want, got)| match want {
                b'd' => got.is_ascii_digit(),
                other => other == got,
            });
        if fits {
            let mut end = i + shape.len();
            while end < bytes.len() && (bytes[end] == b'.' || bytes[end].is_ascii_digit()) {
                end += 1;
            }
            if bytes.get(end) == Some(&b'Z') {
                end += 1;
            }
            out.push_str("<time>");
            i = end;
        } else {
            let c = line[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[tokio::test]
async fn a_scenario_live_and_as_a_policy_test_case_agree() {
    // The ladder: a restart (which cannot fix a bad release), then a
    // rollback (which does). The same policy, live and in the test.
    let actions = json!([{"action": "restart", "timeout": "5s"}, {"action": "rollback"}]);
    let mut spec = crash_policy("Auto", actions, "1m");
    spec["safety"] = json!({"cooldown": "1s"});
    let (client, ns, operator) = setup_spec("policy-test-live", spec.clone()).await;
    bad_release(&client, &ns).await;
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let live = eventually_within("the incident resolved", Duration::from_secs(180), || {
        let api = api.clone();
        async move {
            let incident = api.get("api-crashloop").await.ok()?;
            (phase_of(&incident) == Some(healing_guard_operator::crd::Phase::Resolved))
                .then_some(incident)
        }
    })
    .await;
    let incidents: Vec<String> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();

    // The same scenario as a test case: the workload as bad_release makes
    // it, its pods crash-looping (the rule counts from one restart), the
    // restart changing nothing and the rollback fixing it.
    let dir = tempfile::tempdir().unwrap();
    let policy = json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
        "metadata": {"name": "guard", "namespace": ns}, "spec": spec,
    });
    std::fs::write(
        dir.path().join("policy.yaml"),
        serde_yaml::to_string(&policy).unwrap(),
    )
    .unwrap();
    let test_file = json!({
        "policies": ["policy.yaml"],
        "workloads": [{"name": "api", "namespace": ns, "labels": {"guarded": "yes"}, "replicas": 3,
                       "revisions": ["registry.local/api:1", "registry.local/api:2"], "rollout": "3s"}],
        "cases": [{
            "name": "a bad release crash-loops",
            "timeline": [{"at": "0s", "pods": {"workload": "api", "state": "CrashLoopBackOff", "restarts": 1}}],
            "steps": [{"step": "restart", "outcome": "Fails"}, {"step": "rollback", "outcome": "Recovers"}],
            "expect": [{"at": "10m", "incidents": [{"name": "api-crashloop", "phase": "Resolved"}]}],
        }],
    });
    let path = dir.path().join("test.yaml");
    std::fs::write(&path, serde_yaml::to_string(&test_file).unwrap()).unwrap();
    let loaded = load::load(&path).unwrap();
    let simulated = engine::simulate(&loaded, &loaded.file.cases[0]);
    assert!(
        simulated.failures.is_empty(),
        "{:#?}\n{}",
        simulated.failures,
        simulated.log.join("\n")
    );
    let names: Vec<String> = simulated.incidents.iter().map(|i| i.name_any()).collect();
    assert_eq!(names, incidents, "the same incidents");
    let test_case = simulated
        .incidents
        .iter()
        .find(|i| i.name_any() == "api-crashloop")
        .unwrap();
    let (live_course, test_course) = (course(&live), course(test_case));
    eprintln!(
        "live:\n{}\nas a test case:\n{}",
        serde_json::to_string_pretty(&live_course).unwrap(),
        serde_json::to_string_pretty(&test_course).unwrap()
    );
    assert_eq!(live_course, test_course, "{}", operator.logs());

    // The live incident, recorded as `kubectl get inc -o yaml` gives it,
    // replays against its own policy the same way.
    let records = dir.path().join("records.yaml");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [live]});
    std::fs::write(&records, serde_yaml::to_string(&list).unwrap()).unwrap();
    let replayed = simulation::replay(&dir.path().join("policy.yaml"), &[records], Format::Json);
    assert!(replayed.passed, "{}", replayed.summary);
    let replayed: serde_json::Value = serde_json::from_str(&replayed.output).unwrap();
    assert_eq!(
        replayed[0]["differences"],
        json!([]),
        "{}",
        serde_json::to_string_pretty(&replayed).unwrap()
    );
}
