//! The ladder at work on a real control plane: a bad rollout rolled back and
//! verified, a dry run that changes nothing, an exhausted ladder escalated.

use std::time::Duration;

use healing_guard_operator::crd::{Incident, Phase, RemediationPolicy, StepResult};
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{
    Operator, client, create_deployment, eventually, eventually_within, incident_where, namespace,
    operator_requests, operator_requests_since, phase_of, reconciled_now, until_past,
};

async fn setup(
    prefix: &str,
    mode: &str,
    actions: Value,
    timeout: &str,
) -> (Client, String, Operator) {
    setup_spec(prefix, crash_policy(mode, actions, timeout)).await
}

/// The spec of a policy guarding Deployments labelled `guarded=yes` whose one
/// rule, `crash`, runs `actions` on the first restart (hold-down 3 s).
pub(crate) fn crash_policy(mode: &str, actions: Value, timeout: &str) -> Value {
    json!({
        "mode": mode,
        "targets": [{"kind": "Deployment", "selector": {"matchLabels": {"guarded": "yes"}}}],
        "rules": [{
            "name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
            "severity": "P0", "type": "ServiceOutage", "actions": actions,
            "verify": {"timeout": timeout, "holdDown": "3s"}
        }]
    })
}

/// A namespace, the operator watching it, and the policy `guard` with `spec`.
pub(crate) async fn setup_spec(prefix: &str, spec: Value) -> (Client, String, Operator) {
    let client = client().await;
    let ns = namespace(&client, prefix).await;
    let operator = Operator::start(&ns).await;
    policy_with(&client, &ns, spec).await;
    (client, ns, operator)
}

/// A healthy Deployment `api` of 3 (revision 1), then a bad release whose pods crash (revision 2).
pub(crate) async fn bad_release(client: &Client, ns: &str) -> Api<Deployment> {
    bad_release_of(client, ns, "api").await
}

/// As [`bad_release`], of the Deployment `name` (image `registry.local/NAME:1`, then `:2`).
pub(crate) async fn bad_release_of(client: &Client, ns: &str, name: &str) -> Api<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"guarded": "yes"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": format!("registry.local/{name}:1")}]}}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    eventually(&format!("{name} revision 1 available"), || {
        let api = api.clone();
        async move {
            api.get(name)
                .await
                .ok()?
                .status?
                .available_replicas
                .filter(|n| *n == 3)
        }
    })
    .await;
    let bad = json!({"spec": {"template": {
        "metadata": {"labels": {"healing-guard.io/inject": "crashloop"}},
        "spec": {"containers": [{"name": "app", "image": format!("registry.local/{name}:2")}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&bad))
        .await
        .unwrap();
    api
}

pub(crate) async fn incident_in_phase(client: &Client, ns: &str, phases: &[Phase]) -> Incident {
    incident_where(
        client,
        ns,
        "api-crashloop",
        &format!("in {phases:?}"),
        |i| phase_of(i).is_some_and(|p| phases.contains(&p)),
    )
    .await
}

#[tokio::test]
async fn a_bad_rollout_is_rolled_back_verified_and_resolved() {
    let (client, ns, operator) = setup(
        "fix-rollback",
        "Auto",
        json!([{"action": "rollback"}]),
        "2m",
    )
    .await;
    let deployments = bad_release(&client, &ns).await;

    let incident = incident_in_phase(&client, &ns, &[Phase::Resolved]).await;
    let status = incident.status.unwrap();
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    let step = &status.steps[0];
    assert_eq!(
        step.result,
        StepResult::Succeeded,
        "{step:?}\n{}",
        operator.logs()
    );
    assert_eq!(
        step.changes,
        ["Deployment/api rolled back from revision 2 to revision 1"]
    );
    assert!(status.milestones.mitigated_at.is_some() && status.milestones.resolved_at.is_some());
    assert!(status.timeline.iter().any(|e| e.reason == "Remediated"));

    // The Deployment runs revision 1's template again and names the step that changed it.
    let deployment = deployments.get("api").await.unwrap();
    let template = deployment.spec.unwrap().template;
    assert_eq!(
        template.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.local/api:1")
    );
    assert!(
        !template
            .metadata
            .unwrap()
            .labels
            .unwrap()
            .contains_key("healing-guard.io/inject")
    );
    let annotations = deployment.metadata.annotations.unwrap();
    assert_eq!(
        annotations.get("healing-guard.io/remediation-step"),
        Some(&step.id)
    );
    assert_eq!(
        annotations
            .get("healing-guard.io/incident")
            .map(String::as_str),
        Some("api-crashloop")
    );

    let metrics = operator.metrics().await;
    for series in [
        "healing_guard_remediation_steps_total{action=\"rollback\",result=\"Succeeded\"} 1",
        "healing_guard_time_to_mitigate_seconds_count 1",
        "healing_guard_time_to_resolve_seconds_count 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} missing:\n{metrics}"
        );
    }

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually("a RemediationApplied event on the Deployment", || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default().fields("regarding.name=api"))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("RemediationApplied"))
        }
    })
    .await;
}

#[tokio::test]
async fn dry_run_plans_and_records_but_changes_nothing() {
    let actions = json!([
        {"action": "rollback"},
        {"action": "scale", "scale": {"increment": 2, "maxReplicas": 8}},
        {"action": "restart", "restart": {"method": "DeletePods", "maxUnavailable": 1}}
    ]);
    let (client, ns, _operator) = setup("fix-dryrun", "DryRun", actions, "2m").await;
    let deployments = bad_release(&client, &ns).await;
    let generation = deployments.get("api").await.unwrap().metadata.generation;

    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let incident = eventually_within("the dry run to complete", Duration::from_secs(120), || {
        let api = api.clone();
        async move {
            let incident = api.get("api-crashloop").await.ok()?;
            let done = incident
                .status
                .as_ref()?
                .timeline
                .iter()
                .any(|e| e.reason == "DryRunComplete");
            done.then_some(incident)
        }
    })
    .await;
    let status = incident.status.unwrap();
    let results: Vec<_> = status.steps.iter().map(|s| s.result).collect();
    assert_eq!(
        results,
        [StepResult::DryRun, StepResult::DryRun, StepResult::DryRun]
    );
    // What would have happened, and that it did not.
    assert_eq!(
        status.steps[0].changes,
        ["dry run, nothing changed: Deployment/api rolled back from revision 2 to revision 1"]
    );
    assert_eq!(
        status.steps[1].changes,
        ["dry run, nothing changed: Deployment/api replicas 3 -> 5"]
    );
    // A restart by eviction says what it would do, not that pods went.
    assert_eq!(
        status.steps[2].changes,
        ["dry run, nothing changed: Deployment/api pods evicted, at most 1 unavailable at a time"]
    );
    let deployment = deployments.get("api").await.unwrap();
    assert_eq!(
        deployment.metadata.generation, generation,
        "a dry run changes nothing"
    );
    assert_eq!(deployment.spec.unwrap().replicas, Some(3));
}

/// Waits until the cooldown (`safety.cooldown`) after the incident's latest
/// step has run out, by the step's recorded start: from then on no limit but
/// the one under test could hold a further step back. The start is kept in
/// whole seconds, and the cooldown runs from the end of that second.
async fn past_cooldown(incident: &Incident, cooldown: Duration) {
    let latest = incident
        .status
        .as_ref()
        .and_then(|s| s.steps.iter().filter_map(|s| s.started_at.as_ref()).max())
        .unwrap()
        .0;
    let end_of_its_second = Duration::from_secs(1);
    until_past(latest.checked_add(end_of_its_second + cooldown).unwrap()).await;
}

#[tokio::test]
async fn a_ladder_that_does_not_help_ends_escalated() {
    // A restart does not fix a crashing release: verification times out, and nothing more is done.
    let mut spec = crash_policy("Auto", json!([{"action": "restart"}]), "5s");
    // Not the default 5 min: a further step must not be hidden behind the cooldown.
    spec["safety"] = json!({"cooldown": "1s"});
    let (client, ns, _operator) = setup_spec("fix-exhaust", spec).await;
    bad_release(&client, &ns).await;
    let incident = incident_in_phase(&client, &ns, &[Phase::Escalated]).await;
    let status = incident.status.as_ref().unwrap();
    assert_eq!(status.steps.len(), 1);
    assert_eq!(status.steps[0].result, StepResult::Failed);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "NeedsHuman" && c.status == "True")
    );
    // The pods still crash. Past the cooldown, the operator looks again.
    past_cooldown(&incident, Duration::from_secs(1)).await;
    let later = reconciled_now(&client, &ns, "api-crashloop").await;
    let status = later.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Escalated));
    assert_eq!(
        status.steps.len(),
        1,
        "an escalated incident gets no more automatic steps: {:?}",
        status.steps
    );
}

/// A policy whose ladder is `steps` restarts (which cannot fix a crashing
/// release), each failing after 3 s, with the given safety limits.
pub(crate) fn restarting_spec(steps: usize, safety: Value) -> Value {
    let actions: Vec<Value> = (1..=steps)
        .map(|i| json!({"name": format!("restart-{i}"), "action": "restart"}))
        .collect();
    let mut spec = crash_policy("Auto", json!(actions), "3s");
    spec["safety"] = safety;
    spec
}

/// The incident once its RemediationBlocked condition carries `reason`.
pub(crate) async fn blocked(client: &Client, ns: &str, reason: &str) -> Incident {
    incident_where(
        client,
        ns,
        "api-crashloop",
        &format!("blocked with {reason}"),
        |i| {
            i.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "RemediationBlocked" && c.status == "True" && c.reason == reason
                })
            })
        },
    )
    .await
}

pub(crate) fn applied(incident: &Incident) -> usize {
    incident.status.as_ref().map_or(0, |s| {
        s.steps.iter().filter(|s| !s.changes.is_empty()).count()
    })
}

#[tokio::test]
async fn a_crash_that_goes_on_gets_no_more_actions_than_the_budget() {
    let safety =
        json!({"cooldown": "1s", "maxActions": 2, "window": "1h", "circuitBreakerThreshold": 10});
    let (client, ns, _operator) = setup_spec("fix-budget", restarting_spec(5, safety)).await;
    bad_release(&client, &ns).await;
    let incident = blocked(&client, &ns, "SafetyLimit").await;
    let steps = incident.status.as_ref().unwrap().steps.clone();
    assert_eq!(applied(&incident), 2, "{steps:?}");
    // The pods keep crashing; nothing more happens within the window, also
    // once the cooldown is over and the operator has looked again.
    past_cooldown(&incident, Duration::from_secs(1)).await;
    let later = reconciled_now(&client, &ns, "api-crashloop").await;
    assert_eq!(later.status.as_ref().unwrap().steps, steps);
    assert_eq!(applied(&later), 2);
    let blocked_by = later
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "RemediationBlocked")
        .unwrap();
    // Past the cooldown, a SafetyLimit is the budget.
    assert_eq!(
        (blocked_by.status.as_str(), blocked_by.reason.as_str()),
        ("True", "SafetyLimit"),
        "{}",
        blocked_by.message
    );
}

#[tokio::test]
async fn the_circuit_breaker_opens_stays_open_and_a_human_resets_it() {
    let safety =
        json!({"cooldown": "1s", "maxActions": 10, "window": "1h", "circuitBreakerThreshold": 2});
    let (client, ns, _operator) = setup_spec("fix-breaker", restarting_spec(4, safety)).await;
    bad_release(&client, &ns).await;
    let incident = blocked(&client, &ns, "CircuitBreakerOpen").await;
    assert_eq!(applied(&incident), 2);
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("the policy to show its breaker open", || {
        let policies = policies.clone();
        async move {
            policies
                .get("guard")
                .await
                .ok()?
                .status?
                .circuit_breaker
                .filter(|b| b.open)
        }
    })
    .await;
    // Past the cooldown, the operator looks again: the breaker holds.
    let steps = incident.status.as_ref().unwrap().steps.clone();
    past_cooldown(&incident, Duration::from_secs(1)).await;
    let later = reconciled_now(&client, &ns, "api-crashloop").await;
    assert_eq!(
        later.status.as_ref().unwrap().steps,
        steps,
        "the breaker stays open"
    );
    assert!(
        later.status.unwrap().conditions.iter().any(|c| {
            c.type_ == "RemediationBlocked"
                && c.status == "True"
                && c.reason == "CircuitBreakerOpen"
        }),
        "the breaker stays open"
    );
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);

    // A human resets it: the ladder goes on.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let reset =
        json!({"metadata": {"annotations": {"healing-guard.io/circuit-breaker-reset": now}}});
    policies
        .patch("guard", &PatchParams::default(), &Patch::Merge(&reset))
        .await
        .unwrap();
    eventually_within(
        "a third step after the reset",
        Duration::from_secs(90),
        || {
            let api = api.clone();
            async move {
                api.get("api-crashloop")
                    .await
                    .ok()
                    .filter(|i| applied(i) >= 3)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn killing_the_operator_mid_remediation_never_applies_a_step_twice() {
    let (client, ns, operator) =
        setup("fix-chaos", "Auto", json!([{"action": "rollback"}]), "2m").await;
    operator.kill();
    let deployments = bad_release(&client, &ns).await;
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    // Start, let it work for a moment, SIGKILL; again and again, at varying points.
    let mut kills = 0;
    let mut mid_step = 0;
    for round in 0..20u64 {
        let operator = Operator::start(&ns).await;
        // Killed a varying moment after the step is recorded, or (once the
        // incident is older) after the operator has had a moment to work.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            let last = api
                .get("api-crashloop")
                .await
                .ok()
                .and_then(|i| i.status?.steps.last().map(|s| s.result));
            if last.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis((round * 97) % 700)).await;
        operator.kill();
        kills += 1;
        let status = api.get("api-crashloop").await.ok().and_then(|i| i.status);
        let last = status
            .as_ref()
            .and_then(|s| s.steps.last())
            .map(|s| s.result);
        if matches!(last, Some(StepResult::Pending | StepResult::Verifying)) {
            mid_step += 1;
        }
        if status.and_then(|s| s.phase) == Some(Phase::Resolved) {
            break;
        }
    }
    assert!(
        mid_step > 0,
        "no kill landed while a step was recorded and unfinished ({kills} kills)"
    );
    let _operator = Operator::start(&ns).await;
    let incident = incident_in_phase(&client, &ns, &[Phase::Resolved]).await;
    let status = incident.status.unwrap();
    assert_eq!(
        status.steps.len(),
        1,
        "after {kills} kills: {:?}",
        status.steps
    );
    assert_eq!(status.steps[0].result, StepResult::Succeeded);
    // One rollback makes revision 3; a second would have gone back to the bad revision 2.
    let deployment = deployments.get("api").await.unwrap();
    let revision =
        deployment.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"].clone();
    assert_eq!(revision, "3", "after {kills} kills");
    let image = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("registry.local/api:1"));
}

pub(crate) async fn policy_with(client: &Client, ns: &str, spec: Value) {
    let policy: RemediationPolicy = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
        "metadata": {"name": "guard"}, "spec": spec
    }))
    .unwrap();
    Api::<RemediationPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
}

pub(crate) async fn label_pods(
    client: &Client,
    ns: &str,
    selector: &str,
    count: usize,
    inject: &str,
) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let names = eventually("running pods to label", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            let running: Vec<String> = list
                .items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .filter_map(|p| p.metadata.name)
                .collect();
            (running.len() >= count).then_some(running)
        }
    })
    .await;
    for name in names.iter().take(count) {
        let patch = json!({"metadata": {"labels": {"healing-guard.io/inject": inject}}});
        pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

async fn resolved(client: &Client, ns: &str, name: &str) -> Incident {
    incident_where(client, ns, name, "resolved", |i| {
        phase_of(i) == Some(Phase::Resolved)
    })
    .await
}

#[tokio::test]
async fn a_crashing_postgres_pod_is_restarted() {
    let client = client().await;
    let ns = namespace(&client, "fix-postgres").await;
    let _operator = Operator::start(&ns).await;
    policy_with(&client, &ns, json!({
        "mode": "Auto",
        "targets": [{"kind": "StatefulSet", "names": ["postgres"]}],
        "rules": [{"name": "db-crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                   "severity": "P0", "type": "ServiceOutage",
                   "actions": [{"action": "restart", "restart": {"method": "DeletePods", "maxUnavailable": 1}}],
                   "verify": {"timeout": "1m", "holdDown": "3s"}}]
    })).await;
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "postgres"},
        "spec": {"replicas": 1, "serviceName": "postgres", "selector": {"matchLabels": {"app": "postgres"}},
                 "template": {"metadata": {"labels": {"app": "postgres"}},
                              "spec": {"containers": [{"name": "postgres", "image": "postgres:16"}]}}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    // The database process crashes; the pod, not the spec, is broken.
    label_pods(&client, &ns, "app=postgres", 1, "crashloop").await;
    let incident = resolved(&client, &ns, "postgres-sts-crashloop").await;
    let step = &incident.status.unwrap().steps[0];
    assert_eq!(step.result, StepResult::Succeeded, "{step:?}");
    assert!(
        step.changes.iter().any(|c| c == "pod postgres-0 evicted"),
        "{:?}",
        step.changes
    );
}

/// The pods a remediation reads come from the detector's watch, not from a
/// LIST per reconcile: a whole DeletePods remediation, from detection to
/// resolution, lists the target's pods only as its one watch starts.
#[tokio::test]
async fn a_remediation_reads_pods_from_the_watch_not_by_listing() {
    let actions = json!([{"action": "restart", "restart": {"method": "DeletePods"}}]);
    let (client, ns, _operator) = setup("fix-nolist", "Auto", actions, "1m").await;
    create_deployment(&client, &ns, json!({
        "metadata": {"name": "api", "labels": {"guarded": "yes"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.local/api:1"}]}}}
    }))
    .await;
    label_pods(&client, &ns, "app=api", 1, "crashloop").await;
    let incident = resolved(&client, &ns, "api-crashloop").await;
    let status = incident.status.unwrap();
    let step = &status.steps[0];
    assert_eq!(step.result, StepResult::Succeeded, "{step:?}");
    // Pods are replaced one at a time, the crashing one first, each once.
    let evicted: Vec<&String> = step
        .changes
        .iter()
        .filter(|c| c.ends_with(" evicted"))
        .collect();
    let distinct: std::collections::BTreeSet<&&String> = evicted.iter().collect();
    assert!(
        !evicted.is_empty() && distinct.len() == evicted.len(),
        "{:?}",
        step.changes
    );
    assert_eq!(
        step.replacing.len(),
        3,
        "the pods found when applied: {step:?}"
    );
    assert!(
        status.evidence.as_ref().is_some_and(|e| e.pods.len() == 3),
        "evidence still describes every pod: {:?}",
        status.evidence
    );
    let requests = operator_requests(&ns);
    let count = |verb: &str, resource: &str| {
        requests
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    // The pod watch's first list (and one more should it restart).
    assert!(count("list", "pods") <= 2, "{requests:#?}");
    // Every eviction made is in the ledger, once: a batch's record is not
    // lost to another writer's status update.
    assert_eq!(
        count("create", "pods/eviction"),
        evicted.len(),
        "{requests:#?}"
    );
    // Evidence reads the rollout history and the Warning events once.
    assert!(count("list", "replicasets") <= 1, "{requests:#?}");
    assert!(count("list", "events") <= 1, "{requests:#?}");
}

/// Every request one remediated incident costs, as `make bench` counts
/// them (benches/detection/requests.rs): the bench's incident (a DeletePods
/// restart of one crash-looping pod, Auto, verified, resolved), from the
/// crash to the report, by verb and resource, watches apart. A request
/// more is a regression to explain.
#[tokio::test]
async fn one_remediated_incident_costs_these_requests_and_no_more() {
    let spec = json!({
        "mode": "Auto",
        "targets": [{"kind": "Deployment", "selector": {"matchLabels": {"guarded": "yes"}}}],
        "rules": [{
            "name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
            "severity": "P1", "type": "ServiceOutage",
            "actions": [{"action": "restart", "restart": {"method": "DeletePods"}}],
            // Longer than the bench's 1 s, well past the detector's 500 ms
            // flush of a clear: the signal's clear is written before the
            // resolution, not folded away by it, on a loaded machine too.
            "verify": {"timeout": "2m", "holdDown": "3s"}
        }],
        // As the bench's: its floor of ready replicas keeps the restart to the failing pod.
        "safety": {"cooldown": "0s", "circuitBreakerThreshold": 100, "minReadyReplicas": 6}
    });
    let (client, ns, _operator) = setup_spec("requests", spec).await;
    create_deployment(&client, &ns, json!({
        "metadata": {"name": "api", "labels": {"guarded": "yes"}},
        "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"terminationGracePeriodSeconds": 0,
                                       "containers": [{"name": "app", "image": "registry.local/api:1"}]}}}
    }))
    .await;
    // The operator has seen the pods running before the crash.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let since = k8s_openapi::jiff::Timestamp::now();
    label_pods(&client, &ns, "app=api", 1, "crashloop").await;
    let incident = resolved(&client, &ns, "api-crashloop").await;
    let step = &incident.status.as_ref().unwrap().steps[0];
    assert_eq!(step.result, StepResult::Succeeded, "{step:?}");
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &ns);
    eventually("the report", || {
        let config_maps = config_maps.clone();
        async move { config_maps.get_opt("api-crashloop-report").await.ok()? }
    })
    .await;
    // Whatever follows the resolution (its Events) has landed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The policy controller's look at its policy (its remediator's grants,
    // its status) follows the incident's changes, however many of them a
    // batch folds into: per policy, not per incident (0.06 per incident in
    // the bench).
    let per_policy = [
        "create selfsubjectaccessreviews",
        "patch remediationpolicies/status",
    ];
    let requests: std::collections::BTreeMap<String, usize> = operator_requests_since(&ns, since)
        .into_iter()
        .filter(|((verb, _), _)| verb != "watch")
        .map(|((verb, resource), n)| (format!("{verb} {resource}"), n))
        .filter(|(request, _)| !per_policy.contains(&request.as_str()))
        .collect();
    let expected: std::collections::BTreeMap<String, usize> = [
        // The detector's Incident; the report (the notifier, as the remediator).
        ("create incidents", 1),
        ("create configmaps", 1),
        // Triggered and Remediated on the Incident, RemediationApplied on
        // the Deployment.
        ("create events", 3),
        ("create pods/eviction", 1),
        // The step's mark on the Deployment.
        ("patch deployments", 1),
        // The detector: its detection, then the signal's clear; the incident
        // controller: the step recorded (with the first phase), applied (the
        // mark and the first batch), Monitoring, Resolved; the notifier: the
        // report.
        // Evidence reads nothing: the target from the shared store, the
        // Warning events from the watch of the namespace's, and a first
        // revision's rollout history needs no read.
        ("patch incidents/status", 7),
    ]
    .into_iter()
    .map(|(request, n)| (request.to_owned(), n))
    .collect();
    assert_eq!(
        requests,
        expected,
        "total {}",
        requests.values().sum::<usize>()
    );
}

#[tokio::test]
async fn an_exhausted_webhook_worker_is_scaled_within_bounds() {
    let client = client().await;
    let ns = namespace(&client, "fix-scale").await;
    let _operator = Operator::start(&ns).await;
    policy_with(&client, &ns, json!({
        "mode": "Auto",
        "targets": [{"kind": "Deployment", "names": ["webhook-worker"]}],
        "rules": [{"name": "workers-exhausted", "when": {"symptom": "ReplicasUnavailable", "belowRatio": 0.5, "sustainedFor": "2s"},
                   "severity": "P1", "type": "IntegrationFailure",
                   "actions": [{"action": "scale", "scale": {"replicas": 5, "maxReplicas": 5}}],
                   "verify": {"timeout": "1m", "holdDown": "3s"}}]
    })).await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "webhook-worker"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "webhook-worker"}},
                 "template": {"metadata": {"labels": {"app": "webhook-worker"}},
                              "spec": {"containers": [{"name": "worker", "image": "worker:1"}]}}}
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    // Two of three workers stop answering: 1/3 available.
    label_pods(&client, &ns, "app=webhook-worker", 2, "notready").await;
    let incident = resolved(&client, &ns, "webhook-worker-unavailable").await;
    let step = &incident.status.unwrap().steps[0];
    assert_eq!(step.result, StepResult::Succeeded, "{step:?}");
    assert_eq!(step.changes, ["Deployment/webhook-worker replicas 3 -> 5"]);
    assert_eq!(
        deployments
            .get("webhook-worker")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(5)
    );
}

#[tokio::test]
async fn when_the_first_step_does_not_help_the_second_does() {
    let actions = json!([{"action": "restart", "timeout": "5s"}, {"action": "rollback"}]);
    let mut spec = crash_policy("Auto", actions, "1m");
    spec["safety"] = json!({"cooldown": "1s"});
    let (client, ns, _operator) = setup_spec("fix-ladder", spec).await;
    bad_release(&client, &ns).await;
    let incident = resolved(&client, &ns, "api-crashloop").await;
    let results: Vec<_> = incident
        .status
        .unwrap()
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.result))
        .collect();
    assert_eq!(
        results,
        [
            ("restart".to_owned(), StepResult::Failed),
            ("rollback".to_owned(), StepResult::Succeeded)
        ]
    );
}

#[tokio::test]
async fn require_approval_waits_then_runs_when_approved() {
    let (client, ns, _operator) = setup(
        "fix-approval",
        "RequireApproval",
        json!([{"action": "rollback"}]),
        "2m",
    )
    .await;
    let deployments = bad_release(&client, &ns).await;
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    eventually_within(
        "the step to await approval",
        Duration::from_secs(90),
        || {
            let api = api.clone();
            async move {
                let status = api.get("api-crashloop").await.ok()?.status?;
                (status.steps.first()?.result == StepResult::AwaitingApproval).then_some(())
            }
        },
    )
    .await;
    // The operator looks again, and still waits.
    let later = reconciled_now(&client, &ns, "api-crashloop").await;
    let results: Vec<_> = later
        .status
        .unwrap()
        .steps
        .iter()
        .map(|s| s.result)
        .collect();
    assert_eq!(
        results,
        [StepResult::AwaitingApproval],
        "nothing runs before approval"
    );
    let revision = |d: Deployment| {
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"].clone()
    };
    assert_eq!(
        revision(deployments.get("api").await.unwrap()),
        "2",
        "nothing runs before approval"
    );

    let approve = json!({"spec": {"approvals": [{"step": "rollback", "by": "alice"}]}});
    api.patch(
        "api-crashloop",
        &PatchParams::default(),
        &Patch::Merge(&approve),
    )
    .await
    .unwrap();
    let incident = resolved(&client, &ns, "api-crashloop").await;
    assert_eq!(
        incident.status.unwrap().steps[0].result,
        StepResult::Succeeded
    );
    assert_eq!(revision(deployments.get("api").await.unwrap()), "3");
}

/// A namespace watched by the operator, a policy restoring the ConfigMap
/// `healing-guard-config` when `api` crash-loops, the ConfigMap with good
/// content, and `api` reading it, healthy long enough to be snapshotted.
async fn config_restore_setup(
    prefix: &str,
) -> (
    Client,
    String,
    Operator,
    Api<k8s_openapi::api::core::v1::ConfigMap>,
    Value,
) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let client = client().await;
    let ns = namespace(&client, prefix).await;
    let operator = Operator::start(&ns).await;
    policy_with(&client, &ns, json!({
        "mode": "Auto",
        "targets": [{"kind": "Deployment", "names": ["api"]}],
        "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                   "severity": "P0", "type": "DataCorruption",
                   "actions": [{"action": "restoreConfig", "restoreConfig": {"configMap": "healing-guard-config"}}],
                   "verify": {"timeout": "1m", "holdDown": "3s"}}],
        "detection": {"holdDown": "2s"}
    })).await;
    let good = json!({"DATABASE_URL": "postgresql://healing_user@postgres:5432/healing_guard", "LOG_LEVEL": "info"});
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let config: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "healing-guard-config"}, "data": good}))
            .unwrap();
    config_maps
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "api:1",
                                  "envFrom": [{"configMapRef": {"name": "healing-guard-config"}}]}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    // Healthy for the hold-down: the operator keeps a known-good copy.
    let snapshot = eventually("a known-good snapshot", || {
        let config_maps = config_maps.clone();
        async move {
            let list = config_maps
                .list(
                    &ListParams::default()
                        .labels("healing-guard.io/snapshot-of=healing-guard-config"),
                )
                .await
                .ok()?;
            list.items.into_iter().next()
        }
    })
    .await;
    assert_eq!(serde_json::to_value(&snapshot.data).unwrap(), good);
    (client, ns, operator, config_maps, good)
}

#[tokio::test]
async fn a_corrupted_config_is_restored_from_its_snapshot_and_the_workload_recovers() {
    let (client, ns, _operator, config_maps, good) = config_restore_setup("fix-config").await;

    // Someone corrupts the config; the app, reading it, crashes.
    let corrupt = json!({"data": {"DATABASE_URL": "###corrupted###"}});
    config_maps
        .patch(
            "healing-guard-config",
            &PatchParams::default(),
            &Patch::Merge(&corrupt),
        )
        .await
        .unwrap();
    label_pods(&client, &ns, "app=api", 2, "crashloop").await;

    let incident = resolved(&client, &ns, "api-crashloop").await;
    let step = &incident.status.unwrap().steps[0];
    assert_eq!(step.result, StepResult::Succeeded, "{step:?}");
    assert!(
        step.changes
            .iter()
            .any(|c| c.contains("content from snapshot hg-snapshot-healing-guard-config-")),
        "{:?}",
        step.changes
    );
    let restored = config_maps.get("healing-guard-config").await.unwrap();
    assert_eq!(serde_json::to_value(&restored.data).unwrap(), good);
}

#[tokio::test]
async fn a_deleted_config_map_is_created_again_from_its_snapshot() {
    let (client, ns, _operator, config_maps, good) = config_restore_setup("fix-config-gone").await;

    // Someone deletes the config; the app, missing it, crashes.
    config_maps
        .delete("healing-guard-config", &Default::default())
        .await
        .unwrap();
    label_pods(&client, &ns, "app=api", 2, "crashloop").await;

    let incident = resolved(&client, &ns, "api-crashloop").await;
    let step = &incident.status.unwrap().steps[0];
    assert_eq!(step.result, StepResult::Succeeded, "{step:?}");
    assert!(
        step.changes.iter().any(|c| c.starts_with(
            "ConfigMap/healing-guard-config was missing: created again from snapshot hg-snapshot-healing-guard-config-"
        )),
        "{:?}",
        step.changes
    );
    let restored = config_maps.get("healing-guard-config").await.unwrap();
    assert_eq!(serde_json::to_value(&restored.data).unwrap(), good);
    assert_eq!(
        restored
            .annotations()
            .get("healing-guard.io/incident")
            .map(String::as_str),
        Some("api-crashloop")
    );
}

#[tokio::test]
async fn config_snapshots_beyond_five_are_pruned_oldest_first() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let client = client().await;
    let ns = namespace(&client, "fix-prune").await;
    let _operator = Operator::start(&ns).await;
    policy_with(&client, &ns, json!({
        "mode": "Auto",
        "targets": [{"kind": "Deployment", "names": ["api"]}],
        "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff"},
                   "severity": "P0", "type": "DataCorruption",
                   "actions": [{"action": "restoreConfig", "restoreConfig": {"configMap": "api-config"}}]}],
        "detection": {"holdDown": "2s"}
    })).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let create = |value: Value| {
        let config_maps = config_maps.clone();
        async move {
            let config: ConfigMap = serde_json::from_value(value).unwrap();
            // As the operator writes its snapshots: they count as its own.
            let params = PostParams {
                dry_run: false,
                field_manager: Some("healing-guard-operator-snapshot".into()),
            };
            config_maps.create(&params, &config).await.unwrap();
        }
    };
    create(json!({"metadata": {"name": "api-config"}, "data": {"LOG_LEVEL": "info"}})).await;
    // Five older snapshots of earlier content, the oldest on January 1st.
    for day in 1..=5 {
        create(
            json!({"metadata": {"name": format!("hg-snapshot-api-config-{day}"),
            "labels": {"healing-guard.io/snapshot-of": "api-config"},
            "annotations": {"healing-guard.io/taken-at": format!("2026-01-0{day}T00:00:00Z")}},
            "data": {"LOG_LEVEL": format!("debug-{day}")}}),
        )
        .await;
    }
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "api:1",
                                  "envFrom": [{"configMapRef": {"name": "api-config"}}]}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    // Healthy: a sixth snapshot of today's content, and the oldest goes.
    let names = eventually("a new snapshot and the oldest pruned", || {
        let config_maps = config_maps.clone();
        async move {
            let list = config_maps
                .list(&ListParams::default().labels("healing-guard.io/snapshot-of=api-config"))
                .await
                .ok()?;
            let mut names: Vec<String> = list
                .items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect();
            names.sort();
            let taken = names
                .iter()
                .any(|n| !n.ends_with(char::is_numeric) || n.len() > 24);
            (taken && names.len() == 5).then_some(names)
        }
    })
    .await;
    assert!(
        !names.contains(&"hg-snapshot-api-config-1".to_owned()),
        "the oldest is pruned: {names:?}"
    );
    assert!(
        names.contains(&"hg-snapshot-api-config-2".to_owned()),
        "{names:?}"
    );
}

#[tokio::test]
async fn restore_config_without_a_snapshot_is_refused_with_a_reason() {
    let (client, ns, _operator) = setup(
        "fix-nosnap",
        "Auto",
        json!([{"action": "restoreConfig", "restoreConfig": {"configMap": "missing-config"}}]),
        "1m",
    )
    .await;
    bad_release(&client, &ns).await;
    let incident = incident_in_phase(&client, &ns, &[Phase::Escalated]).await;
    let step = &incident.status.unwrap().steps[0];
    assert_eq!(step.result, StepResult::Failed);
    assert_eq!(
        step.message.as_deref(),
        Some("no known-good snapshot of ConfigMap missing-config yet")
    );
}

#[tokio::test]
async fn rollback_to_last_healthy_skips_every_bad_release() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let actions = json!([{"action": "rollback", "rollback": {"to": "LastHealthy"}}]);
    let mut spec = crash_policy("Auto", actions, "1m");
    spec["detection"] = json!({"holdDown": "2s"});
    let (client, ns, _operator) = setup_spec("fix-lasthealthy", spec).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api", "labels": {"guarded": "yes"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.local/api:1"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    eventually("revision 1 recorded as healthy", || {
        let config_maps = config_maps.clone();
        async move {
            let known = config_maps.get("healing-guard-known-good").await.ok()?;
            (known.data?.get("deployment.api")? == "1").then_some(())
        }
    })
    .await;
    // Two bad releases in a row: "previous" would be the first bad one.
    for image in ["registry.local/api:2", "registry.local/api:3"] {
        let bad = json!({"spec": {"template": {
            "metadata": {"labels": {"healing-guard.io/inject": "crashloop"}},
            "spec": {"containers": [{"name": "app", "image": image}]}}}});
        deployments
            .patch("api", &PatchParams::default(), &Patch::Strategic(&bad))
            .await
            .unwrap();
    }
    let incident = resolved(&client, &ns, "api-crashloop").await;
    let step = &incident.status.unwrap().steps[0];
    assert_eq!(
        step.changes,
        ["Deployment/api rolled back from revision 3 to revision 1"]
    );
    let image = deployments
        .get("api")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("registry.local/api:1"));
}

#[tokio::test]
async fn a_declared_incident_with_its_own_actions_runs_them() {
    let client = client().await;
    let ns = namespace(&client, "fix-manual").await;
    let _operator = Operator::start(&ns).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "healing-guard"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "api:1"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    // The policy that guards it lets responders bring their own scale steps.
    policy_with(
        &client,
        &ns,
        json!({
            "mode": "Auto",
            "incidents": {"allowedActions": ["scale"]},
            "targets": [{"kind": "Deployment", "names": ["healing-guard"]}],
            "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff"},
                       "severity": "P1", "type": "ServiceOutage", "actions": [{"action": "restart"}]}]
        }),
    )
    .await;
    // Runbook "High Response Times": scale the application to 8, by hand.
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "slow-api"},
        "spec": {
            "title": "p95 latency above 2 s", "severity": "P2", "type": "PerformanceDegradation",
            "target": {"kind": "Deployment", "name": "healing-guard"},
            "policy": "guard",
            "actions": [{"action": "scale", "scale": {"replicas": 8, "maxReplicas": 8}}]
        }
    }))
    .unwrap();
    Api::<Incident>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();
    let resolved = resolved(&client, &ns, "slow-api").await;
    let step = &resolved.status.unwrap().steps[0];
    assert_eq!(step.changes, ["Deployment/healing-guard replicas 3 -> 8"]);
    assert_eq!(step.result, StepResult::Succeeded);
    assert_eq!(
        deployments
            .get("healing-guard")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(8)
    );
}

/// The runbook's "scale database resources" on a StatefulSet whose pod is
/// OOM-killed in a loop: the StatefulSet controller waits for the broken
/// pod instead of replacing it (OrderedReady), so the raised resources would
/// never reach it. The step finishes the job: the pod left on the old
/// revision is evicted, comes back on the new one with 4Gi, and the
/// incident resolves.
#[tokio::test]
async fn raised_resources_reach_a_statefulset_pod_stuck_on_its_old_revision() {
    use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};

    let (client, ns, _operator) = setup_spec(
        "sts-oom",
        json!({
            "mode": "Auto",
            "targets": [{"kind": "StatefulSet", "names": ["postgres"]}],
            "rules": [{"name": "oom-killed", "when": {"symptom": "OOMKilled"},
                       "severity": "P1", "type": "ResourceExhaustion",
                       "actions": [{"name": "raise-resources", "action": "scale", "scale": {"resources": {
                           "container": "postgres",
                           "requests": {"memory": "4Gi", "cpu": "2000m"},
                           "limits": {"memory": "4Gi", "cpu": "2000m"}}}}],
                       "verify": {"timeout": "2m", "holdDown": "3s"}}]
        }),
    )
    .await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "postgres"},
        "spec": {"replicas": 1, "serviceName": "postgres",
                 "selector": {"matchLabels": {"app": "postgres"}},
                 "template": {"metadata": {"labels": {"app": "postgres",
                                                      "healing-guard.io/inject": "oomkilled-below-4gi"}},
                              "spec": {"containers": [{"name": "postgres", "image": "registry.local/postgres:15",
                                                       "resources": {"requests": {"memory": "1Gi"},
                                                                     "limits": {"memory": "1Gi"}}}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();

    let incident = incident_where(&client, &ns, "postgres-sts-oomkilled", "resolved", |i| {
        phase_of(i) == Some(Phase::Resolved)
    })
    .await;
    let step = &incident.status.as_ref().unwrap().steps[0];
    assert_eq!(step.result, StepResult::Succeeded);
    let changes = step.changes.join("\n");
    let line = "pod postgres-0 evicted: not Ready on an older revision, which the StatefulSet \
                controller waits for instead of replacing; it comes back on revision postgres-";
    assert!(changes.contains(line), "{line:?} not in:\n{changes}");
    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .get("postgres-0")
        .await
        .unwrap();
    let limits = pod.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap()
        .limits
        .unwrap();
    assert_eq!(
        limits["memory"].0, "4Gi",
        "the raised limit reached the running pod"
    );
}

/// A fix that holds only for a moment: the pods start, look healthy for a
/// few seconds, then crash again. Each restart "recovers" for the hold-down
/// and the incident resolves, then reopens. The fix that did not last
/// counts as failed and the next round goes on after it; past the flap
/// threshold the incident goes to a person (Escalated, NeedsHuman
/// Flapping) and nothing more runs, with the budget wide open.
#[tokio::test]
async fn a_fix_that_does_not_last_escalates_instead_of_looping() {
    let (client, ns, _operator) = setup_spec(
        "flapping",
        json!({
            "mode": "Auto",
            "targets": [{"kind": "Deployment", "selector": {"matchLabels": {"guarded": "yes"}}}],
            "safety": {"cooldown": "1s", "maxActions": 20, "window": "10m"},
            "detection": {"flapThreshold": 2},
            "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                       "severity": "P1", "type": "ServiceOutage",
                       "actions": [{"name": "first", "action": "restart"},
                                   {"name": "second", "action": "restart"},
                                   {"name": "third", "action": "restart"}],
                       "verify": {"timeout": "1m", "holdDown": "2s"}}]
        }),
    )
    .await;
    create_deployment(
        &client,
        &ns,
        json!({"metadata": {"name": "api", "labels": {"guarded": "yes"}},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                        "template": {"metadata": {"labels": {"app": "api"}},
                                     "spec": {"containers": [{"name": "app", "image": "registry.local/api:1"}]}}}}),
    )
    .await;
    // The application starts, looks healthy, and crashes 4 s later: every
    // pod of `api` Ready for 4 s is made to crash-loop (kwok's injection).
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let crasher = tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list(&ListParams::default().labels("app=api")).await {
                for pod in list.items {
                    let ready_since = pod.status.as_ref().and_then(|s| {
                        s.conditions
                            .iter()
                            .flatten()
                            .find(|c| c.type_ == "Ready" && c.status == "True")
                            .and_then(|c| c.last_transition_time.clone())
                    });
                    let injected = pod.labels().contains_key("healing-guard.io/inject");
                    if let Some(since) = ready_since
                        && !injected
                        && k8s_openapi::jiff::Timestamp::now()
                            .duration_since(since.0)
                            .as_secs()
                            >= 4
                    {
                        let crash = json!({"metadata": {"labels": {"healing-guard.io/inject": "crashloop"}}});
                        let _ = pods
                            .patch(
                                &pod.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&crash),
                            )
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let escalated = incident_where(&client, &ns, "api-crashloop", "escalated", |i| {
        phase_of(i) == Some(Phase::Escalated)
    })
    .await;
    let status = escalated.status.as_ref().unwrap();
    let ledger: Vec<_> = status
        .steps
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.attempt,
                s.result,
                s.relapsed_at.is_some(),
            )
        })
        .collect();
    assert_eq!(
        ledger,
        [
            ("first", 1, StepResult::Failed, true),
            ("second", 2, StepResult::Failed, true),
        ],
        "each fix that did not last counted as failed; round 2 went on after the first"
    );
    let needs_human = status
        .conditions
        .iter()
        .find(|c| c.type_ == "NeedsHuman")
        .unwrap();
    assert_eq!(needs_human.reason, "Flapping");
    assert!(
        needs_human
            .message
            .starts_with("reopened 2 times (threshold 2)"),
        "{}",
        needs_human.message
    );
    // Nothing more runs, though the budget would allow it.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let later = Api::<Incident>::namespaced(client.clone(), &ns)
        .get("api-crashloop")
        .await
        .unwrap();
    assert_eq!(later.status.as_ref().unwrap().steps.len(), 2);
    assert_eq!(phase_of(&later), Some(Phase::Escalated));
    crasher.abort();
}
