//! Failing guarded pods open incidents on their own: one per target and
//! symptom, classified by the first matching rule, with evidence.

use std::time::Duration;

use healing_guard_operator::crd::{Incident, Phase, RemediationPolicy, SourceKind};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::Pod,
    },
    jiff::SignedDuration,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{
    Operator, client, create_deployment, eventually, eventually_within, incident_where, namespace,
    phase_of, until_past,
};

/// One rule per symptom, most specific first; NotReady last, since every
/// failing pod is also not Ready.
fn all_rules() -> Value {
    json!([
        {"name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 2}, "severity": "P0", "type": "ServiceOutage", "actions": [{"action": "restart"}]},
        {"name": "oom", "when": {"symptom": "OOMKilled"}, "severity": "P1", "type": "ResourceExhaustion", "actions": [{"action": "scale", "scale": {"increment": 1, "maxReplicas": 5}}]},
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

/// The Incidents in `ns`; none while the API does not answer (for polling).
async fn incidents(client: &Client, ns: &str) -> Vec<Incident> {
    let api: Api<Incident> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// The names of the Incidents in `ns`, sorted; panics if the API does not
/// answer (an assertion that nothing was opened must not pass on an error).
async fn incident_names(client: &Client, ns: &str) -> Vec<String> {
    let api: Api<Incident> = Api::namespaced(client.clone(), ns);
    let mut names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|i| i.metadata.name)
        .collect();
    names.sort();
    names
}

/// The current restart count (all containers) of each pod of `app`.
async fn restarts(client: &Client, ns: &str, app: &str) -> Vec<i32> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Ok(list) = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
    else {
        return Vec::new();
    };
    list.items
        .iter()
        .map(|pod| {
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref());
            statuses
                .into_iter()
                .flatten()
                .map(|c| c.restart_count)
                .sum()
        })
        .collect()
}

/// The detection occurrences an Incident counts so far.
fn occurrences(incident: &Incident) -> i64 {
    incident
        .status
        .as_ref()
        .and_then(|s| s.detection.as_ref())
        .map_or(0, |d| d.occurrences)
}

/// Asserts that the Deployment `suspect`, which crash-loops but no policy
/// guards, has no Incident, once the detector has provably had its chance to
/// open one. The proof is `canary`, a guarded Deployment that crash-loops the
/// same way (created with or after `suspect`): its Incident is open, so the
/// detector is watching and acting; every pod of `suspect` has restarted at
/// least as often as the canary's pods had when the canary's evidence was
/// captured (after its detection); and the detector has since counted
/// another restart of the canary's into its Incident, so it has acted on
/// whatever it saw up to the moment `suspect` was as far gone as the canary.
async fn assert_no_incident_for(client: &Client, ns: &str, suspect: &str, canary: &str) {
    let key = format!("Deployment/{canary}/CrashLoopBackOff");
    let detected = incident_for(client, ns, &key).await;
    let evidence = detected.status.as_ref().unwrap().evidence.as_ref().unwrap();
    let canary_restarts = evidence.pods.iter().map(|p| p.restarts).max().unwrap();
    assert!(canary_restarts >= 1, "{evidence:?}");
    eventually(
        &format!("the pods of {suspect} to restart {canary_restarts} times"),
        || async move {
            let counts = restarts(client, ns, suspect).await;
            (!counts.is_empty() && counts.iter().all(|n| *n >= canary_restarts)).then_some(())
        },
    )
    .await;
    let api: Api<Incident> = Api::namespaced(client.clone(), ns);
    let name = detected.metadata.name.clone().unwrap();
    let counted = occurrences(&api.get(&name).await.unwrap());
    eventually(
        &format!("the detector to count another restart of {canary}"),
        || {
            let (api, name) = (api.clone(), name.clone());
            async move { (occurrences(&api.get(&name).await.ok()?) > counted).then_some(()) }
        },
    )
    .await;
    let all: Vec<Incident> = api.list(&ListParams::default()).await.unwrap().items;
    let opened: Vec<_> = all
        .iter()
        .filter(|i| i.spec.target.name == suspect)
        .map(|i| &i.metadata.name)
        .collect();
    assert!(
        opened.is_empty(),
        "{suspect} is not guarded, yet: {opened:?}"
    );
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
        let opened = incident_for(&client, &ns, &key).await;
        // The two pods may fail a flush apart: wait until both are counted.
        let incident = incident_where(
            &client,
            &ns,
            opened.metadata.name.as_deref().unwrap(),
            "both failing pods counted",
            |i| {
                i.status
                    .as_ref()
                    .and_then(|s| s.detection.as_ref())
                    .is_some_and(|d| d.affected_pods.len() >= 2)
            },
        )
        .await;
        check(&incident, name, severity, incident_type, rule);
        let status = incident.status.unwrap();
        let detection = status.detection.unwrap();
        assert_eq!(detection.affected_pods.len(), 2, "{key}: {detection:?}");
        assert!(detection.affected_pods.iter().all(|p| p.starts_with(name)));
        let evidence = status.evidence.unwrap();
        // The pods detection named come first (the one named when the
        // evidence was taken heads the list); a replacement may already be
        // starting behind them.
        let failing: Vec<_> = evidence
            .pods
            .iter()
            .filter(|p| detection.affected_pods.contains(&p.name))
            .collect();
        assert_eq!(failing.len(), 2, "{key}: {evidence:?}");
        assert!(failing.iter().all(|p| !p.ready), "{key}: {evidence:?}");
        assert!(
            detection.affected_pods.contains(&evidence.pods[0].name),
            "{key}: {evidence:?}"
        );
        let first_ready = evidence
            .pods
            .iter()
            .position(|p| p.ready)
            .unwrap_or(evidence.pods.len());
        assert!(
            evidence.pods[first_ready..]
                .iter()
                .all(|p| !detection.affected_pods.contains(&p.name)),
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
            // Log capture is off by default: the gap is noted (with it on,
            // kwok's nodes serve none: see tests/cluster/operations.rs).
            assert!(
                evidence.notes.iter().any(|n| n.contains("not captured")),
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
    let sts_created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(sts).unwrap(),
        )
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap()
        .0;
    let incident = incident_for(&client, &ns, "StatefulSet/postgres/ReplicasUnavailable").await;
    check(&incident, "postgres", "P0", "ServiceOutage", "db-down");
    assert_eq!(
        incident.metadata.name.as_deref(),
        Some("postgres-sts-unavailable")
    );
    let detected = incident.spec.detected_at.unwrap().0;
    let created = incident.metadata.creation_timestamp.unwrap().0;
    // sustainedFor 3s: the StatefulSet cannot be short before it exists, so
    // the rule cannot match before 3 s after its creation. (All three times
    // are whole seconds, cut off alike, which keeps the 3 s.)
    assert!(
        detected.duration_since(sts_created) >= SignedDuration::from_secs(3),
        "detected at {detected}, only {} after the StatefulSet was created at {sts_created}",
        detected.duration_since(sts_created)
    );
    // The Incident is written upon detection, not before.
    assert!(
        created >= detected,
        "created at {created}, before its detection at {detected}"
    );
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
    let other = eventually("the second target's incident", || {
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
    // The pods go on restarting. Once the detector has counted later restarts
    // of both targets into the incidents they have, it has had its chance to
    // open another; stop early if it did.
    let counted = [
        (
            incident.metadata.name.clone().unwrap(),
            occurrences(&incident),
        ),
        (other.metadata.name.clone().unwrap(), occurrences(&other)),
    ];
    let counted = &counted;
    eventually("later restarts of both targets counted", || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let all = incidents(&client, &ns).await;
            let grown = |(name, before): &(String, i64)| {
                all.iter()
                    .any(|i| i.metadata.name.as_ref() == Some(name) && occurrences(i) > *before)
            };
            (all.len() > 2 || counted.iter().all(grown)).then_some(())
        }
    })
    .await;
    let names = incident_names(&client, &ns).await;
    assert_eq!(names, ["other-crashloop", "wide-crashloop"], "{names:?}");
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
    // Guarded and failing the same way: the canary that shows the detector looked.
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "guarded", 1, Some("crashloop"), true),
    )
    .await;
    assert_no_incident_for(&client, &ns, "stray", "guarded").await;
    assert_eq!(
        incident_names(&client, &ns).await,
        ["guarded-crashloop"],
        "only the guarded Deployment has an incident"
    );
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
    eventually("the policy to be gone", || {
        let policies = policies.clone();
        async move { matches!(policies.get_opt("guard").await, Ok(None)).then_some(()) }
    })
    .await;
    // Another policy, for the canary only, made after the deletion: the
    // detector sees policy changes in order, so once the canary's incident is
    // open it has also seen "guard" go.
    let mut canary_policy = policy("canary", "Deployment", json!([crash_rule()]), json!({}));
    canary_policy.spec.targets[0].selector =
        serde_json::from_value(json!({"matchLabels": {"canary": "yes"}})).unwrap();
    policies
        .create(&PostParams::default(), &canary_policy)
        .await
        .unwrap();
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "later", 1, Some("crashloop"), true),
    )
    .await;
    let mut canary = workload("Deployment", "canary", 1, Some("crashloop"), false);
    canary["metadata"]["labels"] = json!({"canary": "yes"});
    create_deployment(&client, &ns, canary).await;
    assert_no_incident_for(&client, &ns, "later", "canary").await;
    let names = incident_names(&client, &ns).await;
    assert_eq!(
        names,
        ["canary-crashloop", "guarded-crashloop"],
        "no policy, no detection\n{}",
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

    // Back within the reopen window: the same incident reopens; past the
    // flap threshold (1) it is Flapping and goes to a person.
    set_inject(&client, &ns, "api", Some("crashloop")).await;
    let reopened = wait_phase(&client, &ns, &name, Phase::Escalated).await;
    let status = reopened.status.unwrap();
    assert_eq!(status.detection.as_ref().unwrap().reopens, 1);
    assert!(status.timeline.iter().any(|e| e.reason == "Reopened"));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Flapping" && c.status == "True")
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "NeedsHuman" && c.reason == "Flapping")
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
    // The detector compares a returning signal with resolvedAt as written:
    // one seen from resolvedAt + reopenWindow (20 s) on no longer reopens.
    let window_end = resolved_at + SignedDuration::from_secs(20);
    until_past(window_end).await;
    set_inject(&client, &ns, "api", Some("crashloop")).await;
    let second = wait_phase(&client, &ns, &format!("{name}-2"), Phase::Triggered).await;
    let returned = second.spec.detected_at.clone().unwrap().0;
    assert!(
        returned >= window_end,
        "the signal returned at {returned}, within the window ending {window_end}"
    );
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

#[tokio::test]
async fn a_detected_incident_deleted_by_a_human_opens_again_if_the_signal_goes_on() {
    let rules = json!([crash_rule()]);
    let (client, ns, _operator) = setup("detect-deleted", "Deployment", rules, json!({})).await;
    // A long name (as long as its ReplicaSets' and pods' names still fit):
    // the incident's title is cut to fit, its name stays valid.
    let name = format!("api-{}", "x".repeat(226));
    // Its pods' labels stay short (labels stop at 63 characters).
    let mut long = workload("Deployment", "long", 1, Some("crashloop"), true);
    long["metadata"]["name"] = json!(name);
    create_deployment(&client, &ns, long).await;
    let key = format!("Deployment/{name}/CrashLoopBackOff");
    let first = incident_for(&client, &ns, &key).await;
    assert!(
        first.spec.title.len() <= 256 && first.spec.title.ends_with("..."),
        "{}",
        first.spec.title
    );
    let incident_name = first.metadata.name.clone().unwrap();
    let uid = first.metadata.uid.clone();
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    api.delete(&incident_name, &Default::default())
        .await
        .unwrap();
    // The pods go on crashing: the signal opens it again (a new object).
    let again = eventually_within("the incident opened again", Duration::from_secs(60), || {
        let api = api.clone();
        let incident_name = incident_name.clone();
        let uid = uid.clone();
        async move {
            let incident = api.get(&incident_name).await.ok()?;
            (incident.metadata.uid != uid).then_some(incident)
        }
    })
    .await;
    assert_eq!(again.spec.source.dedup_key.as_deref(), Some(key.as_str()));
}

/// A core/v1 Warning event about `object` (a Deployment), as a controller
/// would record it.
fn warning_about(
    ns: &str,
    object: &str,
    reason: &str,
    message: &str,
) -> k8s_openapi::api::core::v1::Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{object}.{}", reason.to_lowercase())},
        "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": object, "namespace": ns},
        "reason": reason, "message": message, "type": "Warning", "count": 3,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "tester"}
    }))
    .unwrap()
}

/// The evidence names the Warning events about the target and its pods,
/// and no others; the operator keeps them from a watch of the namespace's
/// Warning events (started with its pod watch) and lists none.
#[tokio::test]
async fn evidence_names_the_targets_warning_events_kept_by_a_watch_not_listed() {
    use k8s_openapi::api::core::v1::Event;
    let (client, ns, _operator) = setup(
        "evidence-events",
        "Deployment",
        json!([crash_rule()]),
        json!({}),
    )
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    for (object, reason, message) in [
        ("api", "QuotaExceeded", "exceeded quota: compute"),
        ("other", "FailedCreate", "not about the target"),
    ] {
        events
            .create(
                &PostParams::default(),
                &warning_about(&ns, object, reason, message),
            )
            .await
            .unwrap();
    }
    create_deployment(
        &client,
        &ns,
        workload("Deployment", "api", 1, Some("crashloop"), true),
    )
    .await;
    let incident = incident_for(&client, &ns, "Deployment/api/CrashLoopBackOff").await;
    let evidence = incident.status.unwrap().evidence.unwrap();
    assert!(
        evidence
            .events
            .contains(&"Deployment/api QuotaExceeded: exceeded quota: compute (x3)".to_owned()),
        "{evidence:?}"
    );
    assert!(
        evidence.events.iter().all(|line| !line.contains("other")),
        "{evidence:?}"
    );
    // The watch's own LIST comes when the namespace is first guarded; the
    // evidence, after the Incident's create, reads the watch's store.
    let requests = crate::support::operator_request_log(&ns);
    let opened = requests
        .iter()
        .find(|r| r.verb == "create" && r.resource == "incidents")
        .map(|r| r.received)
        .unwrap();
    let lists: Vec<_> = requests
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "events")
        .map(|r| r.received)
        .collect();
    assert!(
        !lists.is_empty(),
        "the watch lists the Warning events first"
    );
    assert!(
        lists.iter().all(|at| *at < opened),
        "events listed after the incident opened at {opened}: {lists:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.verb == "watch" && r.resource == "events")
    );
}
