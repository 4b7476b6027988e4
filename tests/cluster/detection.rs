//! Failing guarded pods open incidents on their own: one per target and
//! symptom, classified by the first matching rule, with evidence.

use std::time::Duration;

use healing_guard_operator::crd::{Incident, Phase, RemediationPolicy, SourceKind};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Pod,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{
    Operator, client, create_deployment, eventually, eventually_within, incident_where, namespace,
    phase_of,
};

/// One rule per symptom, most specific first; NotReady last, since every
/// failing pod is also not Ready.
fn all_rules() -> Value {
    json!([
        {"name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 2}, "severity": "P0", "type": "ServiceOutage", "actions": [{"action": "restart"}]},
        {"name": "oom", "when": {"symptom": "OOMKilled"}, "severity": "P1", "type": "ResourceExhaustion", "actions": [{"action": "scale", "scale": {"increment": 1}}]},
        {"name": "image", "when": {"symptom": "ImagePullBackOff"}, "severity": "P1", "type": "ServiceOutage", "actions": [{"action": "restart"}]},
        {"name": "failed", "when": {"symptom": "PodFailed"}, "severity": "P2", "type": "ServiceOutage", "actions": [{"action": "restart"}]},
        {"name": "evicted", "when": {"symptom": "Evicted"}, "severity": "P2", "type": "ResourceExhaustion", "actions": [{"action": "restart"}]},
        {"name": "stuck", "when": {"symptom": "ProgressDeadlineExceeded"}, "severity": "P0", "type": "ServiceOutage", "actions": [{"action": "restart"}]},
        {"name": "unavailable", "when": {"symptom": "ReplicasUnavailable", "belowRatio": 0.5, "sustainedFor": "2s"}, "severity": "P1", "type": "PerformanceDegradation", "actions": [{"action": "restart"}]},
        {"name": "notready", "when": {"symptom": "NotReady", "sustainedFor": "3s"}, "severity": "P3", "type": "PerformanceDegradation", "actions": [{"action": "restart"}]}
    ])
}

fn policy(name: &str, kind: &str, rules: Value, detection: Value) -> RemediationPolicy {
    serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"name": name},
        "spec": {
            "mode": "DryRun",
            "targets": [{"kind": kind, "selector": {"matchLabels": {"guarded": "yes"}}}],
            "rules": rules,
            "detection": detection
        }
    }))
    .unwrap()
}

/// P0 ServiceOutage on the first restart.
fn crash_rule() -> Value {
    json!({"name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1}, "severity": "P0", "type": "ServiceOutage", "actions": [{"action": "restart"}]})
}

/// A workload of `kind` whose pods carry `inject` (a kwok failure stage) if given.
fn workload(kind: &str, name: &str, replicas: i32, inject: Option<&str>, guarded: bool) -> Value {
    let mut pod_labels = json!({"app": name});
    if let Some(inject) = inject {
        pod_labels["healing-guard.io/inject"] = inject.into();
    }
    let labels = if guarded {
        json!({"guarded": "yes"})
    } else {
        json!({})
    };
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": {"containers": [{"name": "app", "image": format!("registry.local/{name}:1")}]}
        }
    });
    if kind == "StatefulSet" {
        spec["serviceName"] = name.into();
    }
    json!({"metadata": {"name": name, "labels": labels}, "spec": spec})
}

async fn incidents(client: &Client, ns: &str) -> Vec<Incident> {
    let api: Api<Incident> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Waits for the incident with that dedup key to be Triggered with its evidence.
async fn incident_for(client: &Client, ns: &str, key: &str) -> Incident {
    eventually_within(
        &format!("an incident for {key}"),
        Duration::from_secs(90),
        || async move {
            incidents(client, ns).await.into_iter().find(|i| {
                i.spec.source.dedup_key.as_deref() == Some(key)
                    && i.status
                        .as_ref()
                        .is_some_and(|s| s.evidence.is_some() && s.detection.is_some())
            })
        },
    )
    .await
}

async fn setup(
    prefix: &str,
    kind: &str,
    rules: Value,
    detection: Value,
) -> (Client, String, Operator) {
    let client = client().await;
    let ns = namespace(&client, prefix).await;
    let operator = Operator::start(&ns).await;
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns);
    policies
        .create(
            &PostParams::default(),
            &policy("guard", kind, rules, detection),
        )
        .await
        .unwrap();
    (client, ns, operator)
}

fn check(incident: &Incident, target: &str, severity: &str, incident_type: &str, rule: &str) {
    let spec = &incident.spec;
    assert_eq!(spec.target.name, target);
    assert_eq!(spec.severity.to_string(), severity);
    assert_eq!(spec.incident_type.to_string(), incident_type);
    assert_eq!(spec.source.kind, SourceKind::Detected);
    assert_eq!(spec.source.rule.as_deref(), Some(rule));
    assert_eq!(spec.source.policy.as_deref(), Some("guard"));
    let status = incident.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Triggered));
    let detection = status.detection.as_ref().unwrap();
    assert!(detection.occurrences >= 1);
    assert!(detection.first_seen_at.is_some() && detection.last_seen_at.is_some());
}

#[tokio::test]
async fn each_pod_symptom_opens_a_classified_incident_with_evidence() {
    let (client, ns, _operator) = setup("detect-pods", "Deployment", all_rules(), json!({})).await;
    let cases = [
        (
            "crashy",
            "crashloop",
            "CrashLoopBackOff",
            "P0",
            "ServiceOutage",
            "crash",
            "CrashLoopBackOff",
        ),
        (
            "oomy",
            "oomkilled",
            "OOMKilled",
            "P1",
            "ResourceExhaustion",
            "oom",
            "CrashLoopBackOff",
        ),
        (
            "pully",
            "imagepull",
            "ImagePullBackOff",
            "P1",
            "ServiceOutage",
            "image",
            "ImagePullBackOff",
        ),
        (
            "faily",
            "failed",
            "PodFailed",
            "P2",
            "ServiceOutage",
            "failed",
            "Error",
        ),
        (
            "evicty",
            "evicted",
            "Evicted",
            "P2",
            "ResourceExhaustion",
            "evicted",
            "Error",
        ),
        (
            "slowy",
            "notready",
            "NotReady",
            "P3",
            "PerformanceDegradation",
            "notready",
            "",
        ),
    ];
    for (name, inject, ..) in &cases {
        if terminal(inject) {
            // Pods created Failed would be replaced, and fail, without end;
            // as in life, running pods fail (or are evicted) and get replaced.
            create_deployment(&client, &ns, workload("Deployment", name, 2, None, true)).await;
        } else {
            create_deployment(
                &client,
                &ns,
                workload("Deployment", name, 2, Some(inject), true),
            )
            .await;
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for (name, inject, ..) in cases.iter().filter(|c| terminal(c.1)) {
        let running = eventually("2 running pods to fail", || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels(&format!("app={name}")))
                    .await
                    .ok()?;
                let running: Vec<String> = list
                    .items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                (running.len() == 2).then_some(running)
            }
        })
        .await;
        for pod in running {
            let patch = json!({"metadata": {"labels": {"healing-guard.io/inject": inject}}});
            pods.patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    }
    for (name, _, symptom, severity, incident_type, rule, pod_reason) in cases {
        let key = format!("Deployment/{name}/{symptom}");
        let incident = incident_for(&client, &ns, &key).await;
        check(&incident, name, severity, incident_type, rule);
        let status = incident.status.unwrap();
        let detection = status.detection.unwrap();
        assert_eq!(detection.affected_pods.len(), 2, "{key}: {detection:?}");
        assert!(detection.affected_pods.iter().all(|p| p.starts_with(name)));
        let evidence = status.evidence.unwrap();
        // Replacements of failed pods may already run; the failing ones come first.
        let failing: Vec<_> = evidence.pods.iter().filter(|p| !p.ready).collect();
        assert_eq!(failing.len(), 2, "{key}: {evidence:?}");
        assert!(
            evidence.pods[..2].iter().all(|p| !p.ready),
            "{key}: {evidence:?}"
        );
        if !pod_reason.is_empty() {
            assert!(
                failing
                    .iter()
                    .all(|p| p.reason.as_deref() == Some(pod_reason)),
                "{key}: {:?}",
                evidence.pods
            );
        }
        assert_eq!(evidence.revision.as_deref(), Some("1"), "{key}");
        assert!(
            evidence.rollout_history[0].starts_with("revision 1:"),
            "{key}: {:?}",
            evidence.rollout_history
        );
        if inject_has_logs(name) {
            // kwok nodes serve no logs: the gap is noted, not fatal.
            assert!(
                evidence.notes.iter().any(|n| n.contains("not available")),
                "{key}: {:?}",
                evidence.notes
            );
        }
        let incident_name = incident.metadata.name.unwrap();
        assert_eq!(incident_name, format!("{name}-{}", slug(symptom)));
    }
}

fn terminal(inject: &str) -> bool {
    matches!(inject, "failed" | "evicted")
}

fn inject_has_logs(name: &str) -> bool {
    name == "crashy"
}

fn slug(symptom: &str) -> &'static str {
    match symptom {
        "CrashLoopBackOff" => "crashloop",
        "OOMKilled" => "oomkilled",
        "ImagePullBackOff" => "imagepull",
        "PodFailed" => "podfailed",
        "Evicted" => "evicted",
        "NotReady" => "notready",
        _ => "?",
    }
}

#[tokio::test]
async fn workload_symptoms_open_incidents() {
    let (client, ns, _operator) =
        setup("detect-workloads", "Deployment", all_rules(), json!({})).await;
    // Never becomes available: the controller-manager reports ProgressDeadlineExceeded.
    let mut stuck = workload("Deployment", "stuck", 2, Some("notready"), true);
    stuck["spec"]["progressDeadlineSeconds"] = 5.into();
    create_deployment(&client, &ns, stuck).await;
    let incident = incident_for(&client, &ns, "Deployment/stuck/ProgressDeadlineExceeded").await;
    check(&incident, "stuck", "P0", "ServiceOutage", "stuck");
    assert!(
        incident
            .status
            .unwrap()
            .detection
            .unwrap()
            .affected_pods
            .is_empty()
    );

    // Available replicas below half of desired.
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "thin", 3, Some("notready"), true),
    )
    .await;
    let incident = incident_for(&client, &ns, "Deployment/thin/ReplicasUnavailable").await;
    check(
        &incident,
        "thin",
        "P1",
        "PerformanceDegradation",
        "unavailable",
    );
    assert!(
        incident
            .status
            .unwrap()
            .detection
            .unwrap()
            .message
            .unwrap()
            .contains("0/3 replicas available")
    );
}

#[tokio::test]
async fn a_statefulset_below_its_ready_replicas_opens_an_incident() {
    let rules = json!([
        {"name": "db-down", "when": {"symptom": "ReplicasUnavailable", "belowRatio": 1.0, "sustainedFor": "3s"},
         "severity": "P0", "type": "ServiceOutage", "actions": [{"action": "restart", "restart": {"method": "DeletePods"}}]}
    ]);
    let (client, ns, _operator) = setup("detect-sts", "StatefulSet", rules, json!({})).await;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let sts = workload("StatefulSet", "postgres", 2, Some("notready"), true);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(sts).unwrap(),
    )
    .await
    .unwrap();
    let incident = incident_for(&client, &ns, "StatefulSet/postgres/ReplicasUnavailable").await;
    check(&incident, "postgres", "P0", "ServiceOutage", "db-down");
    assert_eq!(
        incident.metadata.name.as_deref(),
        Some("postgres-sts-unavailable")
    );
    let detected = incident.spec.detected_at.unwrap().0;
    let created = incident.metadata.creation_timestamp.unwrap().0;
    // sustainedFor 3s: not before the StatefulSet was 3 s short.
    assert!(created.duration_since(detected).as_secs() >= 0);
}

#[tokio::test]
async fn fifty_failing_pods_open_one_incident_and_two_targets_two() {
    let rules = json!([crash_rule()]);
    let (client, ns, _operator) = setup("detect-dedup", "Deployment", rules, json!({})).await;
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "wide", 50, Some("crashloop"), true),
    )
    .await;
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "other", 1, Some("crashloop"), true),
    )
    .await;

    let incident = eventually_within(
        "50 affected pods on one incident",
        Duration::from_secs(120),
        || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let all = incidents(&client, &ns).await;
                let wide = all.into_iter().find(|i| i.spec.target.name == "wide")?;
                wide.status.as_ref()?.evidence.as_ref()?;
                let detection = wide.status.as_ref()?.detection.as_ref()?;
                let seen = detection.affected_pods.len() as i64 + detection.affected_pods_omitted;
                (seen == 50).then_some(wide)
            }
        },
    )
    .await;
    let detection = incident.status.as_ref().unwrap().detection.clone().unwrap();
    assert_eq!(detection.affected_pods.len(), 20, "the list is bounded");
    assert_eq!(detection.affected_pods_omitted, 30);
    assert!(detection.occurrences >= 50, "{}", detection.occurrences);
    let size = serde_json::to_vec(&incident).unwrap().len();
    assert!(size < 100 * 1024, "incident is {size} bytes");
    let evidence = incident.status.as_ref().unwrap().evidence.clone().unwrap();
    assert!(evidence.pods.len() <= 20);

    // Exactly one incident per target: wide and other.
    eventually("the second target's incident", || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            incidents(&client, &ns)
                .await
                .into_iter()
                .find(|i| i.spec.target.name == "other")
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = incidents(&client, &ns).await;
    let names: Vec<_> = all
        .iter()
        .map(|i| i.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn two_symptoms_of_one_target_open_two_incidents() {
    let rules = json!([
        {"name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1}, "severity": "P0", "type": "ServiceOutage", "actions": [{"action": "restart"}]},
        {"name": "unavailable", "when": {"symptom": "ReplicasUnavailable", "belowRatio": 0.5}, "severity": "P1", "type": "ServiceOutage", "actions": [{"action": "restart"}]}
    ]);
    let (client, ns, _operator) = setup("detect-two", "Deployment", rules, json!({})).await;
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "api", 2, Some("crashloop"), true),
    )
    .await;
    incident_for(&client, &ns, "Deployment/api/CrashLoopBackOff").await;
    incident_for(&client, &ns, "Deployment/api/ReplicasUnavailable").await;
    assert_eq!(incidents(&client, &ns).await.len(), 2);
    // The policy shows when its rules last opened an incident.
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("the policy's lastTriggered", || {
        let policies = policies.clone();
        async move { policies.get("guard").await.ok()?.status?.last_triggered }
    })
    .await;
}

#[tokio::test]
async fn unguarded_pods_open_nothing_and_deleting_the_policy_stops_detection() {
    let rules = json!([crash_rule()]);
    let (client, ns, operator) = setup("detect-scope", "Deployment", rules, json!({})).await;
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "stray", 1, Some("crashloop"), false),
    )
    .await;
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "guarded", 1, Some("crashloop"), true),
    )
    .await;
    incident_for(&client, &ns, "Deployment/guarded/CrashLoopBackOff").await;
    let all = incidents(&client, &ns).await;
    assert_eq!(all.len(), 1, "only the guarded Deployment has an incident");
    let metrics = operator.metrics().await;
    let count = |series: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        count("healing_guard_incidents_opened_total{source=\"Detected\",rule=\"crash\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        count("healing_guard_detection_latency_seconds_count"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        count(
            "healing_guard_open_incidents{severity=\"P0\",type=\"ServiceOutage\",phase=\"Triggered\"}"
        ),
        1.0,
        "{metrics}"
    );

    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns);
    policies
        .delete("guard", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "later", 1, Some("crashloop"), true),
    )
    .await;
    // A crashloop pod reaches 1 restart within seconds; give it ample time.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let all = incidents(&client, &ns).await;
    assert_eq!(
        all.len(),
        1,
        "no policy, no detection: {:?}\n{}",
        all.iter().map(|i| &i.metadata.name).collect::<Vec<_>>(),
        operator.logs()
    );
}

/// Heals or breaks a Deployment by changing its pod template's inject label.
async fn set_inject(client: &Client, ns: &str, name: &str, inject: Option<&str>) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"template": {"metadata": {"labels": {"healing-guard.io/inject": inject}}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> Incident {
    incident_where(client, ns, name, &format!("{phase:?}"), |i| {
        phase_of(i) == Some(phase)
    })
    .await
}

#[tokio::test]
async fn a_cleared_signal_auto_resolves_returns_reopen_and_later_ones_link() {
    let rules = json!([
        {"name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1}, "severity": "P1", "type": "ServiceOutage", "actions": [{"action": "restart"}]}
    ]);
    let detection =
        json!({"autoResolve": true, "holdDown": "2s", "reopenWindow": "20s", "flapThreshold": 1});
    let (client, ns, _operator) = setup("detect-reopen", "Deployment", rules, detection).await;
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "api", 1, Some("crashloop"), true),
    )
    .await;
    let first = incident_for(&client, &ns, "Deployment/api/CrashLoopBackOff").await;
    let name = first.metadata.name.clone().unwrap();

    // The pods heal: the signal clears, holds for 2 s, and the incident resolves by itself.
    set_inject(&client, &ns, "api", None).await;
    let resolved = wait_phase(&client, &ns, &name, Phase::Resolved).await;
    let status = resolved.status.unwrap();
    assert!(status.detection.unwrap().cleared_at.is_some());
    assert!(
        status.timeline.iter().any(|e| e.reason == "AutoResolved"),
        "{:?}",
        status.timeline
    );

    // Back within the reopen window: the same incident reopens and is marked Flapping.
    set_inject(&client, &ns, "api", Some("crashloop")).await;
    let reopened = wait_phase(&client, &ns, &name, Phase::Triggered).await;
    let status = reopened.status.unwrap();
    assert_eq!(status.detection.as_ref().unwrap().reopens, 1);
    assert!(status.timeline.iter().any(|e| e.reason == "Reopened"));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Flapping" && c.status == "True")
    );
    let all: Vec<_> = incidents(&client, &ns)
        .await
        .into_iter()
        .map(|i| i.metadata.name.unwrap())
        .collect();
    assert_eq!(all, std::slice::from_ref(&name));

    // Heal, resolve, wait past the window, break again: a new incident links to the old.
    set_inject(&client, &ns, "api", None).await;
    let resolved = wait_phase(&client, &ns, &name, Phase::Resolved).await;
    let resolved_at = resolved.status.unwrap().milestones.resolved_at.unwrap().0;
    let elapsed = k8s_openapi::jiff::Timestamp::now()
        .duration_since(resolved_at)
        .as_secs();
    tokio::time::sleep(Duration::from_secs((21 - elapsed).max(0) as u64)).await;
    set_inject(&client, &ns, "api", Some("crashloop")).await;
    let second = wait_phase(&client, &ns, &format!("{name}-2"), Phase::Triggered).await;
    assert_eq!(
        second.spec.source.previous_incident.as_deref(),
        Some(name.as_str())
    );
    assert_eq!(
        wait_phase(&client, &ns, &name, Phase::Resolved)
            .await
            .status
            .unwrap()
            .detection
            .unwrap()
            .reopens,
        1
    );
}

#[tokio::test]
async fn restarting_the_operator_while_pods_fail_opens_no_duplicate() {
    let rules = json!([crash_rule()]);
    let (client, ns, operator) = setup("detect-restart", "Deployment", rules, json!({})).await;
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "api", 3, Some("crashloop"), true),
    )
    .await;
    let incident = incident_for(&client, &ns, "Deployment/api/CrashLoopBackOff").await;
    let before = incident.status.unwrap().detection.unwrap().occurrences;
    assert!(operator.terminate());

    let _operator = Operator::start(&ns).await;
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let name = incident.metadata.name.unwrap();
    // The new operator keeps counting the same incident as pods keep restarting.
    eventually_within(
        "occurrences to grow after the restart",
        Duration::from_secs(60),
        || {
            let (api, name) = (api.clone(), name.clone());
            async move {
                let occurrences = api.get(&name).await.ok()?.status?.detection?.occurrences;
                (occurrences > before).then_some(())
            }
        },
    )
    .await;
    assert_eq!(incidents(&client, &ns).await.len(), 1);
}
