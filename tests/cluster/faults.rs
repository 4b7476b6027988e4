//! Faults and runbook scenarios a careful on-call engineer would try: what
//! a step depends on vanishing mid-remediation, the API server refusing a
//! change for good, a release re-applied after its rollback, a config that
//! needs no restoring, a target that does not exist.

use healing_guard_operator::crd::{Incident, IncidentStatus, Phase, RemediationPolicy, StepResult};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    remediation::{
        applied, bad_release, blocked, crash_policy, incident_in_phase, label_pods, policy_with,
        restarting_spec, setup_spec,
    },
    support::{Operator, client, eventually, incident_where, namespace, phase_of, reconciled_now},
};

fn has_condition(incident: &Incident, type_: &str, reason: &str) -> bool {
    incident
        .status
        .as_ref()
        .is_some_and(|s| condition_true(s, type_, reason))
}

fn condition_true(status: &IncidentStatus, type_: &str, reason: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True" && c.reason == reason)
}

#[tokio::test]
async fn deleting_the_policy_while_a_step_verifies_still_resolves_the_incident() {
    // A hold-down long enough to delete the policy while the rollback verifies.
    let mut spec = crash_policy("Auto", json!([{"action": "rollback"}]), "2m");
    spec["rules"][0]["verify"]["holdDown"] = json!("8s");
    let (client, ns, _operator) = setup_spec("fault-nopolicy", spec).await;
    bad_release(&client, &ns).await;
    incident_where(&client, &ns, "api-crashloop", "a step verifying", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.last())
            .is_some_and(|s| s.result == StepResult::Verifying)
    })
    .await;
    Api::<RemediationPolicy>::namespaced(client.clone(), &ns)
        .delete("guard", &DeleteParams::default())
        .await
        .unwrap();
    // The rollback worked: verification concludes from the recorded step.
    let incident = incident_in_phase(&client, &ns, &[Phase::Resolved]).await;
    let step = &incident.status.unwrap().steps[0];
    assert_eq!(step.result, StepResult::Succeeded, "{step:?}");
}

#[tokio::test]
async fn a_pending_step_whose_policy_is_gone_waits_and_resumes_when_it_is_back() {
    // Every step waits for approval; the policy goes while one waits.
    let spec = crash_policy("RequireApproval", json!([{"action": "rollback"}]), "2m");
    let (client, ns, _operator) = setup_spec("fault-policyback", spec.clone()).await;
    bad_release(&client, &ns).await;
    incident_where(
        &client,
        &ns,
        "api-crashloop",
        "a step awaiting approval",
        |i| {
            i.status
                .as_ref()
                .and_then(|s| s.steps.last())
                .is_some_and(|s| s.result == StepResult::AwaitingApproval)
        },
    )
    .await;
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns);
    policies
        .delete("guard", &DeleteParams::default())
        .await
        .unwrap();
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let approve = json!({"spec": {"approvals": [{"step": "rollback", "by": "alice"}]}});
    incidents
        .patch(
            "api-crashloop",
            &PatchParams::default(),
            &Patch::Merge(&approve),
        )
        .await
        .unwrap();
    let waiting = incident_where(&client, &ns, "api-crashloop", "blocked: no policy", |i| {
        has_condition(i, "RemediationBlocked", "PolicyNotFound")
    })
    .await;
    let steps = &waiting.status.unwrap().steps;
    assert!(
        steps.iter().all(|s| s.changes.is_empty()),
        "nothing ran without its policy: {steps:?}"
    );
    // Back from Git: the approved step runs and the incident resolves.
    policy_with(&client, &ns, spec).await;
    let incident = incident_in_phase(&client, &ns, &[Phase::Resolved]).await;
    let status = incident.status.unwrap();
    assert_eq!(status.steps.last().unwrap().result, StepResult::Succeeded);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "RemediationBlocked" && c.status == "False"),
        "{:?}",
        status.conditions
    );
}

#[tokio::test]
async fn a_change_the_api_server_refuses_for_good_fails_the_step_and_escalates() {
    // Each quantity is valid, so the policy's schema takes them; together
    // they are not (a request above its limit), and the Deployment's
    // validation refuses the change for good.
    let actions = json!([{"action": "scale", "scale": {"resources": {
        "limits": {"memory": "1Gi"}, "requests": {"memory": "2Gi"}}}}]);
    let mut spec = crash_policy("Auto", actions, "1m");
    spec["safety"] = json!({"cooldown": "1s"});
    let (client, ns, _operator) = setup_spec("fault-invalid", spec).await;
    bad_release(&client, &ns).await;
    let incident = incident_in_phase(&client, &ns, &[Phase::Escalated]).await;
    let status = incident.status.unwrap();
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    let step = &status.steps[0];
    assert_eq!(step.result, StepResult::Failed, "{step:?}");
    let message = step.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("the API server refused the change")
            && message.contains("must be less than or equal to memory limit"),
        "the server's own reason: {message}"
    );
    assert!(condition_true(&status, "NeedsHuman", "LadderExhausted"));
}

/// A GitOps self-heal puts the bad release back after its rollback: the
/// rollback did not last. It counts as failed, the ladder has nothing after
/// it, and the incident goes to a person instead of rolling back again in a
/// loop against the GitOps controller.
#[tokio::test]
async fn a_release_reapplied_after_its_rollback_goes_to_a_person_instead_of_looping() {
    let mut spec = crash_policy("Auto", json!([{"action": "rollback"}]), "2m");
    spec["safety"] = json!({"cooldown": "1s"});
    let (client, ns, _operator) = setup_spec("fault-reopen", spec).await;
    let deployments = bad_release(&client, &ns).await;
    incident_in_phase(&client, &ns, &[Phase::Resolved]).await;
    // A GitOps self-heal puts the bad release back.
    let bad = json!({"spec": {"template": {
        "metadata": {"labels": {"healing-guard.io/inject": "crashloop"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/api:2"}]}}}});
    deployments
        .patch("api", &PatchParams::default(), &Patch::Strategic(&bad))
        .await
        .unwrap();
    let incident = incident_in_phase(&client, &ns, &[Phase::Escalated]).await;
    let status = incident.status.unwrap();
    let rounds: Vec<(i32, StepResult, bool)> = status
        .steps
        .iter()
        .map(|s| (s.attempt, s.result, s.relapsed_at.is_some()))
        .collect();
    assert_eq!(
        rounds,
        [(1, StepResult::Failed, true)],
        "{:?}",
        status.timeline
    );
    assert!(status.timeline.iter().any(|e| e.reason == "Reopened"));
    assert!(condition_true(&status, "NeedsHuman", "LadderExhausted"));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
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
    assert_eq!(
        image.as_deref(),
        Some("registry.local/api:2"),
        "not rolled back a second time"
    );
}

#[tokio::test]
async fn a_config_that_matches_its_snapshot_is_not_restored_and_the_ladder_moves_on() {
    let client = client().await;
    let ns = namespace(&client, "fault-samecfg").await;
    let _operator = Operator::start(&ns).await;
    policy_with(&client, &ns, json!({
        "mode": "Auto",
        "targets": [{"kind": "Deployment", "names": ["api"]}],
        "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                   "severity": "P1", "type": "ServiceOutage",
                   "actions": [{"action": "restoreConfig", "restoreConfig": {"configMap": "cfg"}},
                               {"action": "restart", "restart": {"method": "DeletePods", "maxUnavailable": 2}}],
                   "verify": {"timeout": "1m", "holdDown": "3s"}}],
        "detection": {"holdDown": "2s"}
    })).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let config: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"mode": "good"}}))
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
                                  "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    eventually("a known-good snapshot", || {
        let config_maps = config_maps.clone();
        async move {
            let list = config_maps
                .list(&ListParams::default().labels("healing-guard.io/snapshot-of=cfg"))
                .await
                .ok()?;
            list.items.into_iter().next()
        }
    })
    .await;
    // The pods crash, but the config is as it was when they were healthy.
    label_pods(&client, &ns, "app=api", 2, "crashloop").await;
    let incident = incident_in_phase(&client, &ns, &[Phase::Resolved]).await;
    let status = incident.status.unwrap();
    let results: Vec<(&str, StepResult)> = status
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.result))
        .collect();
    assert_eq!(
        results,
        [
            ("restoreConfig", StepResult::Skipped),
            ("restart", StepResult::Succeeded)
        ]
    );
    let skipped = &status.steps[0];
    assert!(skipped.changes.is_empty(), "nothing restored: {skipped:?}");
    assert!(
        skipped
            .message
            .as_deref()
            .is_some_and(|m| m.contains("nothing to restore")),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn an_incident_on_a_missing_target_says_so_and_acts_when_it_appears() {
    let client = client().await;
    let ns = namespace(&client, "fault-notarget").await;
    let _operator = Operator::start(&ns).await;
    // The policy that will guard the worker lets incidents bring a scale.
    policy_with(
        &client,
        &ns,
        json!({"mode": "Auto", "incidents": {"allowedActions": ["scale"]},
               "targets": [{"kind": "Deployment", "names": ["worker"]}],
               "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff"},
                          "severity": "P2", "type": "ServiceOutage", "actions": [{"action": "restart"}]}]}),
    )
    .await;
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "ghost"},
        "spec": {"title": "the worker is gone", "severity": "P2", "type": "ServiceOutage",
                 "target": {"kind": "Deployment", "name": "worker"}, "policy": "guard",
                 "actions": [{"action": "scale", "scale": {"replicas": 2}}]}
    }))
    .unwrap();
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    incidents
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();
    let waiting = incident_where(&client, &ns, "ghost", "blocked: no target", |i| {
        has_condition(i, "RemediationBlocked", "TargetNotFound")
    })
    .await;
    assert!(waiting.status.unwrap().steps.is_empty());
    let worker: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "worker"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "worker"}},
                 "template": {"metadata": {"labels": {"app": "worker"}},
                              "spec": {"containers": [{"name": "app", "image": "worker:1"}]}}}
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &worker)
        .await
        .unwrap();
    incident_where(&client, &ns, "ghost", "the scale applied", |i| {
        phase_of(i).is_some()
            && i.status
                .as_ref()
                .and_then(|s| s.steps.first())
                .is_some_and(|s| !s.changes.is_empty())
    })
    .await;
    let replicas = deployments
        .get("worker")
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas;
    assert_eq!(replicas, Some(2));
}

#[tokio::test]
async fn a_pod_killed_for_its_memory_opens_one_incident_and_its_approval_gate_holds() {
    let client = client().await;
    let ns = namespace(&client, "fault-oom").await;
    let _operator = Operator::start(&ns).await;
    // The example PostgreSQL policy's shape: an automatic pod restart for a
    // crash loop, and a resources change that needs approval for OOM kills.
    policy_with(
        &client,
        &ns,
        json!({
            "mode": "Auto",
            "safety": {"cooldown": "1s"},
            "targets": [{"kind": "StatefulSet", "names": ["postgres"]}],
            "rules": [
                {"name": "db-crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                 "severity": "P0", "type": "ServiceOutage",
                 "actions": [{"action": "restart", "restart": {"method": "DeletePods"}}]},
                {"name": "db-oom", "when": {"symptom": "OOMKilled"},
                 "severity": "P1", "type": "ResourceExhaustion",
                 "actions": [{"action": "scale", "mode": "RequireApproval",
                              "scale": {"resources": {"limits": {"memory": "4Gi"}}}}]}
            ]
        }),
    )
    .await;
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
    label_pods(&client, &ns, "app=postgres", 1, "oomkilled").await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let uid = pods.get("postgres-0").await.unwrap().metadata.uid;
    // The detector has counted the kills again since it opened the incident:
    // it has seen the crash loop between them more than once.
    incident_where(
        &client,
        &ns,
        "postgres-sts-oomkilled",
        "OOM kills counted again",
        |i| {
            i.status
                .as_ref()
                .and_then(|s| s.detection.as_ref())
                .is_some_and(|d| d.occurrences >= 3)
        },
    )
    .await;
    let all = Api::<Incident>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<_> = all
        .items
        .iter()
        .filter_map(|i| i.metadata.name.clone())
        .collect();
    assert_eq!(
        names,
        ["postgres-sts-oomkilled"],
        "one failure, one incident"
    );
    let waiting = incident_where(
        &client,
        &ns,
        "postgres-sts-oomkilled",
        "its step awaiting approval",
        |i| {
            i.status
                .as_ref()
                .and_then(|s| s.steps.last())
                .is_some_and(|s| s.result == StepResult::AwaitingApproval)
        },
    )
    .await;
    assert_eq!(waiting.status.unwrap().steps.len(), 1);
    assert_eq!(
        pods.get("postgres-0").await.unwrap().metadata.uid,
        uid,
        "no restart went around the approval gate"
    );
}

#[tokio::test]
async fn two_incidents_on_one_target_act_one_at_a_time() {
    // The operator's own incident on a bad release, and one an on-call
    // engineer declares on the same Deployment (under the same policy's
    // safety limits): each runs a restart that cannot fix the release. The
    // cooldown would not keep them apart (1 s); the target's lock does.
    let mut spec = crash_policy("Auto", json!([{"action": "restart"}]), "6s");
    spec["safety"] = json!({"cooldown": "1s", "maxActions": 10, "circuitBreakerThreshold": 10});
    spec["incidents"] = json!({"allowedActions": ["restart"]});
    let (client, ns, _operator) = setup_spec("fault-oneactor", spec).await;
    bad_release(&client, &ns).await;
    let declared: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "api-declared"},
        "spec": {"title": "the API fails after the release", "severity": "P1",
                 "type": "ServiceOutage", "target": {"kind": "Deployment", "name": "api"},
                 "mode": "Auto", "policy": "guard",
                 "actions": [{"action": "restart", "timeout": "6s"}]}
    }))
    .unwrap();
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &declared).await.unwrap();
    let both = eventually("both incidents to have tried their step", || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            let steps: Vec<_> = list
                .items
                .iter()
                .filter_map(|i| {
                    let step = i.status.as_ref()?.steps.first()?.clone();
                    (step.result == StepResult::Failed && !step.changes.is_empty()).then_some(step)
                })
                .collect();
            (steps.len() == 2).then_some(steps)
        }
    })
    .await;
    let mut spans: Vec<_> = both
        .iter()
        .map(|s| {
            (
                s.started_at.clone().unwrap().0,
                s.finished_at.clone().unwrap().0,
            )
        })
        .collect();
    spans.sort();
    assert!(
        spans[1].0 >= spans[0].1,
        "the second step ran only once the first had concluded: {spans:?}"
    );
}

#[tokio::test]
async fn closed_detected_incidents_beyond_the_policys_retention_are_pruned() {
    let mut spec = crash_policy("Auto", json!([{"action": "restart"}]), "1m");
    spec["detection"] = json!({"keepClosed": 1, "reopenWindow": "1s"});
    let (client, ns, _operator) = setup_spec("fault-retention", spec).await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let resolved = |name: &str, kind: &str| -> Incident {
        serde_json::from_value(json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": name},
            "spec": {"title": "over", "severity": "P3", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"}, "policy": "guard",
                     "source": {"kind": kind, "policy": "guard", "rule": "crash"},
                     "resolution": {"by": "bob", "rootCause": "load test", "summary": "nothing to do"}}
        }))
        .unwrap()
    };
    for name in ["old-1", "old-2", "old-3"] {
        incidents
            .create(&PostParams::default(), &resolved(name, "Detected"))
            .await
            .unwrap();
    }
    incidents
        .create(&PostParams::default(), &resolved("declared", "Manual"))
        .await
        .unwrap();
    let left = eventually("all but one closed detected incident pruned", || {
        let incidents = incidents.clone();
        async move {
            let list = incidents.list(&ListParams::default()).await.ok()?;
            let mut names: Vec<String> = list
                .items
                .into_iter()
                .filter_map(|i| i.metadata.name)
                .collect();
            names.sort();
            (names.len() == 2).then_some(names)
        }
    })
    .await;
    assert!(
        left.contains(&"declared".to_owned()),
        "a person's record stays: {left:?}"
    );
}

#[tokio::test]
async fn the_safety_limits_survive_an_operator_restart() {
    // The cooldown (an hour) holds the second step back; the breaker is far.
    let safety =
        json!({"cooldown": "1h", "maxActions": 10, "window": "1h", "circuitBreakerThreshold": 10});
    let (client, ns, operator) = setup_spec("fault-restart", restarting_spec(3, safety)).await;
    bad_release(&client, &ns).await;
    let held = blocked(&client, &ns, "SafetyLimit").await;
    assert_eq!(applied(&held), 1);
    // Another process, with nothing in memory: the limits come from the ledgers.
    operator.kill();
    let _second = Operator::start(&ns).await;
    let later = reconciled_now(&client, &ns, "api-crashloop").await;
    assert_eq!(
        applied(&later),
        1,
        "{:?}",
        later.status.as_ref().map(|s| &s.steps)
    );
    let condition = later
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "RemediationBlocked")
                .cloned()
        })
        .unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "SafetyLimit")
    );
    assert!(condition.message.contains("cooldown"), "{condition:?}");
}

#[tokio::test]
async fn an_open_circuit_breaker_survives_an_operator_restart() {
    let safety =
        json!({"cooldown": "1s", "maxActions": 10, "window": "1h", "circuitBreakerThreshold": 2});
    let (client, ns, operator) = setup_spec("fault-breaker", restarting_spec(4, safety)).await;
    bad_release(&client, &ns).await;
    let open = blocked(&client, &ns, "CircuitBreakerOpen").await;
    let before = applied(&open);
    operator.kill();
    let _second = Operator::start(&ns).await;
    let later = reconciled_now(&client, &ns, "api-crashloop").await;
    assert_eq!(applied(&later), before);
    assert!(
        later.status.as_ref().is_some_and(|s| s
            .conditions
            .iter()
            .any(|c| c.reason == "CircuitBreakerOpen" && c.status == "True")),
        "{:?}",
        later.status.map(|s| s.conditions)
    );
}

#[tokio::test]
async fn a_crash_that_goes_on_after_escalation_is_written_at_a_bounded_rate() {
    let mut spec = crash_policy("Auto", json!([{"action": "restart"}]), "3s");
    spec["safety"] = json!({"cooldown": "1s"});
    let (client, ns, _operator) = setup_spec("fault-coalesce", spec).await;
    bad_release(&client, &ns).await;
    incident_in_phase(&client, &ns, &[Phase::Escalated]).await;
    // The pods go on crashing (a restart every 5 s each). Over 70 s, every
    // write to the Incident shows as a new resourceVersion. Escalated,
    // nothing more will be done: its counts wait 20 s, then 40 s, ...
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let occurrences = |i: &Incident| {
        i.status
            .as_ref()
            .and_then(|s| s.detection.as_ref())
            .map_or(0, |d| d.occurrences)
    };
    let first = api.get("api-crashloop").await.unwrap();
    let mut versions = std::collections::BTreeSet::new();
    let mut last = first.clone();
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(70) {
        last = api.get("api-crashloop").await.unwrap();
        versions.insert(last.metadata.resource_version.clone().unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let counted = occurrences(&last) - occurrences(&first);
    let writes = versions.len() - 1;
    assert!(
        counted >= 5,
        "the crash went on and was counted: {counted} new occurrences"
    );
    assert!(
        writes <= 3 && writes < usize::try_from(counted).unwrap(),
        "{counted} occurrences in {writes} writes: the waits between them double"
    );
}

#[tokio::test]
async fn a_change_whose_record_was_lost_is_found_on_the_workload_and_not_made_again() {
    let spec = crash_policy("Auto", json!([{"action": "rollback"}]), "2m");
    let client = client().await;
    let ns = namespace(&client, "fault-window").await;
    policy_with(&client, &ns, spec).await;
    let first = aborting_after_its_change(&ns).await;
    let deployments = bad_release(&client, &ns).await;
    aborted(first).await;
    let pending = Api::<Incident>::namespaced(client.clone(), &ns)
        .get("api-crashloop")
        .await
        .unwrap();
    let step = pending.status.unwrap().steps[0].clone();
    assert_eq!(
        step.result,
        StepResult::Pending,
        "the record was not saved: {step:?}"
    );
    assert!(step.changes.is_empty());

    let _second = Operator::start(&ns).await;
    let incident = incident_in_phase(&client, &ns, &[Phase::Resolved]).await;
    let status = incident.status.unwrap();
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    let step = &status.steps[0];
    assert_eq!(step.result, StepResult::Succeeded);
    assert_eq!(
        step.message.as_deref(),
        Some("already applied (found on the workload after a restart)"),
        "the already-applied path ran"
    );
    assert!(!step.changes.is_empty(), "it counts as applied: {step:?}");
    let revision = deployments
        .get("api")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap()["deployment.kubernetes.io/revision"]
        .clone();
    assert_eq!(revision, "3", "one rollback, not two");
}

#[tokio::test]
async fn the_record_of_a_change_survives_another_writers_status_update() {
    use crate::support::Launch;
    use healing_guard_operator::names::STEP_ANNOTATION;
    let spec = crash_policy("Auto", json!([{"action": "rollback"}]), "2m");
    let client = client().await;
    let ns = namespace(&client, "fault-other-writer").await;
    policy_with(&client, &ns, spec).await;
    // The operator pauses right after its change, before the status that
    // records it is saved; meanwhile another writer changes its own part
    // of the status (as the detector and the notifier do), so the save is
    // conditional on a version that is no longer the latest.
    let _operator = Operator::launch(&Launch {
        failpoints: "after-apply=pause:4",
        ..Launch::namespaced(&ns)
    })
    .await
    .unwrap();
    let deployments = bad_release(&client, &ns).await;
    eventually("the rollback made, its record not yet saved", || {
        let deployments = deployments.clone();
        async move {
            let annotations = deployments.get("api").await.ok()?.metadata.annotations?;
            annotations.get(STEP_ANNOTATION).cloned()
        }
    })
    .await;
    let incidents = Api::<Incident>::namespaced(client.clone(), &ns);
    let before = incidents.get("api-crashloop").await.unwrap();
    let occurrences = before
        .status
        .as_ref()
        .and_then(|s| s.detection.as_ref())
        .map_or(0, |d| d.occurrences);
    let other_writer = json!({"status": {"detection": {"occurrences": occurrences + 1}}});
    incidents
        .patch_status(
            "api-crashloop",
            &PatchParams::default(),
            &Patch::Merge(&other_writer),
        )
        .await
        .unwrap();

    let incident = incident_in_phase(&client, &ns, &[Phase::Resolved]).await;
    let status = incident.status.unwrap();
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    let step = &status.steps[0];
    assert_eq!(step.result, StepResult::Succeeded);
    assert_ne!(
        step.message.as_deref(),
        Some("already applied (found on the workload after a restart)"),
        "the record was saved, not recovered from the workload's mark: {step:?}"
    );
    assert!(
        step.changes
            .iter()
            .any(|change| change.contains("rolled back from revision 2 to revision 1")),
        "the change's own line is in the ledger: {step:?}"
    );
    let revision = deployments
        .get("api")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap()["deployment.kubernetes.io/revision"]
        .clone();
    assert_eq!(revision, "3", "one rollback");
}

#[tokio::test]
async fn a_pod_restart_respects_a_disruption_budget_and_says_so() {
    let client = client().await;
    let ns = namespace(&client, "fault-pdb").await;
    let _operator = Operator::start(&ns).await;
    policy_with(&client, &ns, json!({
        "mode": "Auto",
        "targets": [{"kind": "StatefulSet", "names": ["postgres"]}],
        "rules": [{"name": "db-crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                   "severity": "P0", "type": "ServiceOutage",
                   "actions": [{"action": "restart", "restart": {"method": "DeletePods"}}],
                   "verify": {"timeout": "20s", "holdDown": "3s"}}]
    })).await;
    // No voluntary disruption may leave fewer than one healthy pod.
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "postgres"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "postgres"}}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
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
    label_pods(&client, &ns, "app=postgres", 1, "crashloop").await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let uid = pods.get("postgres-0").await.unwrap().metadata.uid;
    // The only pod is unhealthy and the budget wants one healthy: the
    // eviction is refused, the ledger says so, and the pod stays.
    let refused = incident_where(
        &client,
        &ns,
        "postgres-sts-crashloop",
        "the refusal in the ledger",
        |i| {
            i.status
                .as_ref()
                .and_then(|s| s.steps.first())
                .is_some_and(|s| {
                    s.changes
                        .iter()
                        .any(|c| c.starts_with("eviction of pod postgres-0 refused for now"))
                })
        },
    )
    .await;
    let step = &refused.status.unwrap().steps[0];
    assert!(
        step.changes.iter().all(|c| c != "pod postgres-0 evicted"),
        "{:?}",
        step.changes
    );
    assert_eq!(pods.get("postgres-0").await.unwrap().metadata.uid, uid);
    // Refused until its timeout: the step fails and the ladder escalates.
    let escalated = incident_where(&client, &ns, "postgres-sts-crashloop", "escalated", |i| {
        phase_of(i) == Some(Phase::Escalated)
    })
    .await;
    let step = &escalated.status.unwrap().steps[0];
    assert_eq!(step.result, StepResult::Failed, "{step:?}");
}

/// A StatefulSet's restart whose record was lost (the operator aborted
/// right after the change): the next operator reads the StatefulSet fresh
/// (not the watch's copy) before the step it finds Pending, finds the
/// step's mark on it, and does not restart it again.
#[tokio::test]
async fn a_statefulset_change_whose_record_was_lost_is_found_on_a_fresh_read() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let mut spec = crash_policy("Auto", json!([{"action": "restart"}]), "2m");
    spec["targets"] = json!([{"kind": "StatefulSet", "names": ["db"]}]);
    let client = client().await;
    let ns = namespace(&client, "fault-sts-window").await;
    policy_with(&client, &ns, spec).await;
    let first = aborting_after_its_change(&ns).await;
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db",
                 "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db", "healing-guard.io/inject": "crashloop"}},
                              "spec": {"containers": [{"name": "db", "image": "registry.local/db:1"}]}}}
    }))
    .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &set)
        .await
        .unwrap();
    aborted(first).await;
    let reads_before = statefulset_reads(&ns);

    let _second = Operator::start(&ns).await;
    let found = incident_where(&client, &ns, "db-sts-crashloop", "found applied", |i| {
        i.status.as_ref().is_some_and(|s| {
            s.steps.first().and_then(|s| s.message.as_deref())
                == Some("already applied (found on the workload after a restart)")
        })
    })
    .await;
    let steps = found.status.unwrap().steps;
    assert!(
        !steps[0].changes.is_empty(),
        "it counts as applied: {steps:?}"
    );
    assert!(
        statefulset_reads(&ns) > reads_before,
        "the Pending step's target was read fresh"
    );
}

/// An operator of `ns` that aborts right after its first change, before
/// the status that records it is saved: the narrowest window there is.
async fn aborting_after_its_change(ns: &str) -> Operator {
    Operator::launch(&crate::support::Launch {
        failpoints: "after-apply",
        ..crate::support::Launch::namespaced(ns)
    })
    .await
    .unwrap()
}

/// Waits for that operator to abort, as it should (not a clean exit).
async fn aborted(mut operator: Operator) {
    let exit = eventually("the first operator to abort after its change", || {
        let exited = operator.exited();
        async move { exited }
    })
    .await;
    assert!(!exit.success(), "it aborted: {exit:?}");
}

/// How often the operator of `ns` read a StatefulSet by name.
fn statefulset_reads(ns: &str) -> usize {
    crate::support::operator_requests(ns)
        .get(&("get".to_owned(), "statefulsets".to_owned()))
        .copied()
        .unwrap_or(0)
}
