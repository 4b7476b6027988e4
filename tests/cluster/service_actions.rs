//! Service actions end to end: the operator calls the service's own API
//! (a loopback server standing in for the healing-guard API, recording
//! every call) as a remediation step, recorded before it runs, made once
//! unless the action says it is idempotent, and its answer kept as
//! evidence without the Secrets it carried.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use healing_guard_operator::crd::{Incident, Phase, StepResult};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::{
    remediation::policy_with,
    signals::{deployment, resolved, secret},
    support::{Launch, Operator, client, eventually, incident_where, namespace, phase_of},
};

/// One call the stand-in API received.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

/// The healing-guard API as the runbook knows it: `/health` fails while
/// memory leaks; `POST /api/v1/admin/gc` frees it (after answering 503
/// once, if told to); `/api/v1/admin/revoke-all-tokens` answers 503;
/// `/api/v1/admin/slow` answers after five seconds.
#[derive(Clone, Default)]
struct StandIn {
    calls: Arc<Mutex<Vec<Call>>>,
    leaking: Arc<AtomicBool>,
    gc_busy_once: Arc<AtomicBool>,
}

impl StandIn {
    fn calls_to(&self, path: &str) -> Vec<Call> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.path == path).cloned().collect()
    }
}

async fn admin(
    State(api): State<StandIn>,
    Path(what): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    api.calls.lock().unwrap().push(Call {
        method: method.to_string(),
        path: format!("/api/v1/admin/{what}"),
        authorization: authorization.clone(),
        body,
    });
    match what.as_str() {
        "gc" if api.gc_busy_once.swap(false, Ordering::SeqCst) => {
            (StatusCode::SERVICE_UNAVAILABLE, "busy".into())
        }
        "gc" => {
            api.leaking.store(false, Ordering::SeqCst);
            // Echoes the token it was sent: the evidence must not keep it.
            let answer = json!({"freed_mb": 512, "seen_authorization": authorization});
            (StatusCode::OK, answer.to_string())
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            (StatusCode::OK, "late".into())
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "token store unavailable".into(),
        ),
    }
}

async fn start_api() -> (SocketAddr, StandIn) {
    let api = StandIn::default();
    let health = {
        let api = api.clone();
        move || {
            let leaking = api.leaking.load(Ordering::SeqCst);
            async move {
                if leaking {
                    (StatusCode::SERVICE_UNAVAILABLE, "out of memory")
                } else {
                    (StatusCode::OK, "ok")
                }
            }
        }
    };
    let app = Router::new()
        .route("/health", get(health))
        .route("/api/v1/admin/{what}", post(admin).put(admin))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, api)
}

/// A policy whose `/health` probe opens a P1 on `api` and whose ladder is `actions`.
fn leak_policy(mode: &str, address: SocketAddr, actions: Value) -> Value {
    json!({
        "mode": mode,
        "targets": [{"kind": "Deployment", "names": ["api"]}],
        "probes": [{"name": "health", "target": {"kind": "Deployment", "name": "api"},
                    "every": "1s", "timeout": "1s", "failureThreshold": 2, "successThreshold": 2,
                    "http": {"url": format!("http://{address}/health")}}],
        "rules": [{"name": "memory-leak", "when": {"symptom": "ProbeFailing", "probe": "health"},
                   "severity": "P1", "type": "ResourceExhaustion", "actions": actions,
                   "verify": {"timeout": "1m", "holdDown": "2s", "probes": ["health"]}}],
        "detection": {"holdDown": "3s"}
    })
}

const INCIDENT: &str = "api-probe-health";

/// The runbook's memory leak: `/health` fails, the operator calls the
/// admin GC endpoint with the token from its Secret (once more after a
/// 503, as the action is idempotent), the service recovers, the step is
/// verified by the probe and the incident resolves. The answer is kept as
/// evidence, the token blanked out of it; the token is nowhere in the
/// Incident, its Events or the operator's log.
#[tokio::test]
async fn a_memory_leak_is_contained_by_the_admin_gc_call() {
    let (address, api) = start_api().await;
    api.gc_busy_once.store(true, Ordering::SeqCst);
    let client = client().await;
    let ns = namespace(&client, "svc-http").await;
    secret(
        &client,
        &ns,
        "admin-token",
        json!({"authorization": "Bearer gc-s3cret-77"}),
    )
    .await;
    let operator = Operator::start(&ns).await;
    deployment(&client, &ns, "api", 2).await;
    policy_with(
        &client,
        &ns,
        leak_policy(
            "Auto",
            address,
            json!([{"name": "force-gc", "action": "http", "http": {
                "url": format!("http://{address}/api/v1/admin/gc?target={{{{ name }}}}"),
                "headersFrom": {"name": "admin-token"},
                "body": "{\"reason\": \"{{ name }} in {{ namespace }} leaks\"}",
                "idempotent": true}}]),
        ),
    )
    .await;
    api.leaking.store(true, Ordering::SeqCst);

    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let done = resolved(&incidents, INCIDENT, Duration::from_secs(90)).await;
    let calls = api.calls_to("/api/v1/admin/gc");
    assert_eq!(calls.len(), 2, "once more after the 503: {calls:?}");
    for call in &calls {
        assert_eq!(call.method, "POST");
        assert_eq!(call.authorization.as_deref(), Some("Bearer gc-s3cret-77"));
        assert_eq!(call.body, format!("{{\"reason\": \"api in {ns} leaks\"}}"));
    }
    let step = &done.status.as_ref().unwrap().steps[0];
    assert_eq!(step.result, StepResult::Succeeded, "{step:?}");
    assert_eq!(
        step.changes[0],
        format!("POST http://{address}/api/v1/admin/gc?target=api (expects 2xx, idempotent)")
    );
    assert!(
        step.changes[1].starts_with("answered 200: ")
            && step.changes[1].contains("freed_mb")
            && step.changes[1].contains("[redacted]"),
        "{:?}",
        step.changes
    );
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    let everywhere = [
        serde_json::to_string(&done).unwrap(),
        serde_json::to_string(&events).unwrap(),
        operator.logs(),
        operator.metrics().await,
    ];
    for text in everywhere {
        assert!(!text.contains("gc-s3cret-77"), "the token leaked");
    }
}

/// Calls that are not idempotent are made once: a 503 fails the step with
/// the answer, no answer in time fails the next (the call may have been
/// made, so it is not made again), and the exhausted ladder escalates.
#[tokio::test]
async fn a_call_that_is_not_idempotent_is_made_once_whatever_the_answer() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-once").await;
    let _operator = Operator::start(&ns).await;
    deployment(&client, &ns, "api", 2).await;
    policy_with(
        &client,
        &ns,
        leak_policy(
            "Auto",
            address,
            json!([
                {"name": "revoke-tokens", "action": "http",
                 "http": {"url": format!("http://{address}/api/v1/admin/revoke-all-tokens")}},
                {"name": "slow-gc", "action": "http",
                 "http": {"method": "PUT", "url": format!("http://{address}/api/v1/admin/slow"), "timeout": "1s"}}
            ]),
        ),
    )
    .await;
    api.leaking.store(true, Ordering::SeqCst);
    let escalated = incident_where(&client, &ns, INCIDENT, "the ladder exhausted", |i| {
        phase_of(i) == Some(Phase::Escalated)
    })
    .await;
    let steps = &escalated.status.as_ref().unwrap().steps;
    let outcome: Vec<(&str, StepResult)> =
        steps.iter().map(|s| (s.name.as_str(), s.result)).collect();
    assert_eq!(
        outcome,
        [
            ("revoke-tokens", StepResult::Failed),
            ("slow-gc", StepResult::Failed)
        ]
    );
    let message = |i: usize| steps[i].message.clone().unwrap_or_default();
    // The service answered, not the API server: the message says so.
    assert!(
        message(0).starts_with("the call to the service failed (POST ")
            && message(0).contains("answered 503, not what was expected: token store unavailable"),
        "{}",
        message(0)
    );
    assert!(
        message(1).contains("no answer") && message(1).contains("not made again"),
        "{}",
        message(1)
    );
    // Give any stray repeat time to arrive; there is none.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(api.calls_to("/api/v1/admin/revoke-all-tokens").len(), 1);
    assert_eq!(api.calls_to("/api/v1/admin/slow").len(), 1);
}

/// The operator killed right after the call, before it recorded how it
/// went: the step was marked as begun before the call, so its successor
/// knows the call may have been made and, the action not being
/// idempotent, does not make it again; the step fails and says why.
#[tokio::test]
async fn a_call_whose_outcome_was_lost_is_not_made_again() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-kill").await;
    deployment(&client, &ns, "api", 2).await;
    policy_with(
        &client,
        &ns,
        leak_policy(
            "Auto",
            address,
            json!([{"name": "force-gc", "action": "http",
                    "http": {"url": format!("http://{address}/api/v1/admin/gc")}}]),
        ),
    )
    .await;
    let aborting = Launch {
        failpoints: "after-apply",
        ..Launch::namespaced(&ns)
    };
    let mut first = Operator::launch(&aborting).await.unwrap();
    api.leaking.store(true, Ordering::SeqCst);
    eventually("the operator to abort after the call", || {
        let exited = first.exited();
        async move { exited }
    })
    .await;
    assert_eq!(api.calls_to("/api/v1/admin/gc").len(), 1);
    // The service stays sick, so the step is not moot when looked at again.
    api.leaking.store(true, Ordering::SeqCst);
    let _second = Operator::start(&ns).await;
    let failed = first_step_is(&client, &ns, "the step failed", StepResult::Failed).await;
    let step = &failed.status.as_ref().unwrap().steps[0];
    assert!(step.applying_since.is_some());
    assert!(
        step.message
            .as_deref()
            .is_some_and(|m| m.contains("never recorded") && m.contains("not idempotent")),
        "{step:?}"
    );
    assert_eq!(api.calls_to("/api/v1/admin/gc").len(), 1, "never twice");
}

/// In DryRun the ladder records what it would call and calls nothing.
#[tokio::test]
async fn a_dry_run_calls_nothing() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-dry").await;
    let _operator = Operator::start(&ns).await;
    deployment(&client, &ns, "api", 2).await;
    policy_with(
        &client,
        &ns,
        leak_policy(
            "DryRun",
            address,
            json!([{"name": "force-gc", "action": "http",
                    "http": {"url": format!("http://{address}/api/v1/admin/gc")}}]),
        ),
    )
    .await;
    api.leaking.store(true, Ordering::SeqCst);
    let dry = first_step_is(&client, &ns, "the dry run recorded", StepResult::DryRun).await;
    let step = &dry.status.as_ref().unwrap().steps[0];
    assert_eq!(
        step.changes,
        [format!(
            "dry run, nothing changed: POST http://{address}/api/v1/admin/gc (expects 2xx)"
        )]
    );
    assert!(api.calls_to("/api/v1/admin/gc").is_empty());
}

/// A Job step: `image` and whether its pod fails (kwok ends it so).
fn job_step(name: &str, failing: bool) -> Value {
    let labels = if failing {
        json!({"healing-guard.io/inject": "failed"})
    } else {
        json!({})
    };
    json!({"name": name, "action": "runJob", "timeout": "2m", "runJob": {
        "deadline": "1m", "keepFor": "10m",
        "job": {"backoffLimit": 0, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "run", "image": format!("registry.local/{name}:1")}]}}}}})
}

/// The Job of `step` in the ledger of `incident`.
async fn job_of(
    client: &kube::Client,
    ns: &str,
    incident: &Incident,
    step: usize,
) -> Option<k8s_openapi::api::batch::v1::Job> {
    let id = &incident.status.as_ref()?.steps.get(step)?.id;
    Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), ns)
        .get_opt(&healing_guard_operator::remediation::step_id::job_name(id))
        .await
        .unwrap()
}

/// A ladder of Jobs: the first Job fails (its pod exits 1), which fails
/// its step with the Job's reason; the second (the runbook's smoke test)
/// runs to completion and, the service answering again, verifies; the
/// incident resolves. Each Job is named after its step and carries the
/// operator's deadline, TTL and marks.
#[tokio::test]
async fn a_job_step_fails_with_its_job_and_the_next_one_verifies() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-job").await;
    let _operator = Operator::start(&ns).await;
    deployment(&client, &ns, "api", 2).await;
    policy_with(&client, &ns, {
        let mut spec = leak_policy(
            "Auto",
            address,
            json!([job_step("backup", true), job_step("smoke-test", false)]),
        );
        // The next step may follow the failed one at once.
        spec["safety"] = json!({"cooldown": "0s"});
        spec
    })
    .await;
    api.leaking.store(true, Ordering::SeqCst);
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    // The second Job exists: the service recovers meanwhile.
    let second = eventually("the smoke test's Job", || {
        let incidents = incidents.clone();
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let incident = incidents.get(INCIDENT).await.ok()?;
            job_of(&client, &ns, &incident, 1).await
        }
    })
    .await;
    api.leaking.store(false, Ordering::SeqCst);
    let done = resolved(&incidents, INCIDENT, Duration::from_secs(120)).await;
    let steps = &done.status.as_ref().unwrap().steps;
    let outcome: Vec<(&str, StepResult)> =
        steps.iter().map(|s| (s.name.as_str(), s.result)).collect();
    assert_eq!(
        outcome,
        [
            ("backup", StepResult::Failed),
            ("smoke-test", StepResult::Succeeded)
        ]
    );
    let failed = steps[0].message.clone().unwrap_or_default();
    assert!(
        failed.contains("failed: BackoffLimitExceeded"),
        "the Job's reason: {failed}"
    );
    assert!(
        steps[1]
            .verification
            .iter()
            .any(|line| line.contains(": succeeded (active 0, succeeded 1")),
        "{:?}",
        steps[1].verification
    );
    let spec = second.spec.clone().unwrap();
    assert_eq!(spec.active_deadline_seconds, Some(60));
    assert_eq!(spec.ttl_seconds_after_finished, Some(600));
    assert_eq!(
        second
            .annotations()
            .get("healing-guard.io/remediation-step"),
        Some(&steps[1].id)
    );
    assert_eq!(
        second.name_any(),
        healing_guard_operator::remediation::step_id::job_name(&steps[1].id)
    );
}

/// The operator killed right after creating the Job: its successor finds
/// the Job (named after the step) and waits for it; it is never created twice.
#[tokio::test]
async fn a_job_created_before_a_restart_is_not_created_again() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-jobkill").await;
    deployment(&client, &ns, "api", 2).await;
    policy_with(
        &client,
        &ns,
        leak_policy("Auto", address, json!([job_step("smoke-test", false)])),
    )
    .await;
    let aborting = Launch {
        failpoints: "after-apply",
        ..Launch::namespaced(&ns)
    };
    let mut first = Operator::launch(&aborting).await.unwrap();
    api.leaking.store(true, Ordering::SeqCst);
    eventually("the operator to abort after creating the Job", || {
        let exited = first.exited();
        async move { exited }
    })
    .await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let created = job_of(&client, &ns, &incidents.get(INCIDENT).await.unwrap(), 0)
        .await
        .expect("the Job was created before the abort");
    let _second = Operator::start(&ns).await;
    api.leaking.store(false, Ordering::SeqCst);
    let done = resolved(&incidents, INCIDENT, Duration::from_secs(120)).await;
    let step = &done.status.as_ref().unwrap().steps[0];
    assert_eq!(step.result, StepResult::Succeeded);
    assert!(
        step.changes
            .iter()
            .any(|c| c.contains("was created before a restart; not created again")),
        "{:?}",
        step.changes
    );
    let now = job_of(&client, &ns, &done, 0).await.unwrap();
    assert_eq!(now.metadata.uid, created.metadata.uid, "the same Job");
}

/// A hostile namespace user who knows how a step's Job is named creates a
/// Job of their own under that name before the step runs: the step does
/// not take it as its own (it carries no mark of the step), fails saying
/// so, and the other Job is left as it was.
#[tokio::test]
async fn a_job_made_by_someone_else_under_the_steps_name_is_not_taken_as_the_steps() {
    use k8s_openapi::api::batch::v1::Job;
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-jobforeign").await;
    let _operator = Operator::start(&ns).await;
    deployment(&client, &ns, "api", 2).await;
    policy_with(
        &client,
        &ns,
        leak_policy(
            "RequireApproval",
            address,
            json!([job_step("smoke-test", false)]),
        ),
    )
    .await;
    api.leaking.store(true, Ordering::SeqCst);
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let waiting = incident_where(&client, &ns, INCIDENT, "the step awaiting approval", |i| {
        i.status.as_ref().is_some_and(|s| {
            s.steps
                .first()
                .is_some_and(|step| step.result == StepResult::AwaitingApproval)
        })
    })
    .await;
    let id = waiting.status.unwrap().steps[0].id.clone();
    let name = healing_guard_operator::remediation::step_id::job_name(&id);
    let planted: Job = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "run", "image": "registry.local/someone-elses:1"}]}}}
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let planted = jobs
        .create(&kube::api::PostParams::default(), &planted)
        .await
        .unwrap();
    let approvals = json!({"spec": {"approvals": [{"step": "smoke-test", "by": "admin"}]}});
    incidents
        .patch(
            INCIDENT,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&approvals),
        )
        .await
        .unwrap();
    let failed = incident_where(&client, &ns, INCIDENT, "the step refused", |i| {
        i.status.as_ref().is_some_and(|s| {
            s.steps
                .first()
                .is_some_and(|step| step.result == StepResult::Failed)
        })
    })
    .await;
    let step = &failed.status.as_ref().unwrap().steps[0];
    let message = step.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "Job {name} exists but this step did not create it"
        )),
        "{step:?}"
    );
    let after = jobs.get(&name).await.unwrap();
    assert_eq!(after.metadata.uid, planted.metadata.uid, "left as it was");
    assert!(
        !after
            .annotations()
            .contains_key(healing_guard_operator::names::STEP_ANNOTATION),
        "not marked as the step's: {:?}",
        after.annotations()
    );
}

/// A Deployment `name` whose container reads `secret` as `reads` says:
/// `env` (one key), `envFrom`, or nothing.
async fn deployment_reading(client: &kube::Client, ns: &str, name: &str, reads: &str) {
    let container = match reads {
        "env" => {
            json!({"name": "app", "image": "registry.local/app:1", "env": [{"name": "JWT_SECRET",
            "valueFrom": {"secretKeyRef": {"name": "healing-guard-secrets", "key": "jwt-secret"}}}]})
        }
        "envFrom" => json!({"name": "app", "image": "registry.local/app:1",
            "envFrom": [{"secretRef": {"name": "healing-guard-secrets"}}]}),
        _ => json!({"name": "app", "image": "registry.local/app:1"}),
    };
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .create(&Default::default(), &deployment)
        .await
        .unwrap();
}

/// The runbook's "Unauthorized Access": the JWT secret is rotated. The
/// security incident's rotation waits for approval (the default for
/// SecurityIncident); approved, the key gets a new random value, the old
/// one is kept under the previous key, and exactly the workloads whose
/// pod templates read the Secret restart. Neither value appears in the
/// Incident, its Events, the operator's log or its metrics.
#[tokio::test]
async fn a_security_incident_rotates_the_jwt_secret_after_approval() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-rotate").await;
    let old = "old-jwt-value-9f8e7d6c5b4a";
    secret(
        &client,
        &ns,
        "healing-guard-secrets",
        json!({"jwt-secret": old, "database-password": "db-pass-unchanged-1"}),
    )
    .await;
    let operator = Operator::start(&ns).await;
    deployment_reading(&client, &ns, "api", "env").await;
    deployment_reading(&client, &ns, "webhook-worker", "envFrom").await;
    deployment_reading(&client, &ns, "strategy-engine", "none").await;
    let mut spec = leak_policy(
        "Auto",
        address,
        json!([{"name": "rotate-jwt", "action": "rotateSecret", "rotateSecret": {
            "secret": "healing-guard-secrets", "key": "jwt-secret", "previousKey": "jwt-secret-previous",
            "gracePeriod": "20s"}}]),
    );
    spec["rules"][0]["type"] = json!("SecurityIncident");
    spec["rules"][0]["severity"] = json!("P0");
    policy_with(&client, &ns, spec).await;
    api.leaking.store(true, Ordering::SeqCst);

    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    first_step_is(
        &client,
        &ns,
        "the rotation awaiting approval",
        StepResult::AwaitingApproval,
    )
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let value_of = |secret: &k8s_openapi::api::core::v1::Secret, key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8(v.0.clone()).unwrap())
    };
    assert_eq!(
        value_of(
            &secrets.get("healing-guard-secrets").await.unwrap(),
            "jwt-secret"
        )
        .as_deref(),
        Some(old),
        "nothing rotates before approval"
    );
    let approve = json!({"spec": {"approvals": [{"step": "rotate-jwt", "by": "alice"}]}});
    incidents
        .patch(
            INCIDENT,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&approve),
        )
        .await
        .unwrap();
    let rotated = eventually("the new value", || {
        let secrets = secrets.clone();
        async move {
            let secret = secrets.get("healing-guard-secrets").await.ok()?;
            (value_of(&secret, "jwt-secret").as_deref() != Some(old)).then_some(secret)
        }
    })
    .await;
    let new = value_of(&rotated, "jwt-secret").unwrap();
    assert_eq!(new.len(), 48);
    assert!(new.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        value_of(&rotated, "jwt-secret-previous").as_deref(),
        Some(old)
    );
    assert_eq!(
        value_of(&rotated, "database-password").as_deref(),
        Some("db-pass-unchanged-1")
    );
    api.leaking.store(false, Ordering::SeqCst);
    let done = first_step_is(&client, &ns, "the rotation verified", StepResult::Succeeded).await;
    let step = &done.status.as_ref().unwrap().steps[0];
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns);
    for (name, restarted) in [
        ("api", true),
        ("webhook-worker", true),
        ("strategy-engine", false),
    ] {
        let template = deployments.get(name).await.unwrap().spec.unwrap().template;
        let mark = template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("healing-guard.io/secret-rotated").cloned());
        assert_eq!(
            mark.as_ref() == Some(&step.id),
            restarted,
            "{name}: {mark:?}"
        );
    }
    assert!(
        step.changes
            .iter()
            .any(|c| c == "Deployment/webhook-worker restarted to read the new value"),
        "{:?}",
        step.changes
    );
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    let everywhere = [
        serde_json::to_string(&incidents.get(INCIDENT).await.unwrap()).unwrap(),
        serde_json::to_string(&events).unwrap(),
        operator.logs(),
        operator.metrics().await,
    ];
    for text in &everywhere {
        assert!(!text.contains(&new), "the new value leaked");
        assert!(!text.contains(old), "the old value leaked");
    }
    // The grace period over, the previous value goes; the new one stays.
    let after_grace = eventually("the previous value removed", || {
        let secrets = secrets.clone();
        async move {
            let secret = secrets.get("healing-guard-secrets").await.ok()?;
            value_of(&secret, "jwt-secret-previous")
                .is_none()
                .then_some(secret)
        }
    })
    .await;
    assert_eq!(
        value_of(&after_grace, "jwt-secret").as_deref(),
        Some(new.as_str())
    );
    assert!(
        !after_grace
            .annotations()
            .contains_key("healing-guard.io/previous-value-until")
    );
}

/// A stand-in for the Postgres operator's CRD (`postgresqls.acid.zalan.do`),
/// once per cluster: what the runbook's "scale database resources" patches.
async fn postgresql_crd(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "postgresqls.acid.zalan.do"},
        "spec": {"group": "acid.zalan.do", "scope": "Namespaced",
                 "names": {"plural": "postgresqls", "singular": "postgresql", "kind": "postgresql"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                   "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.create(&Default::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("{error}"),
    }
    eventually("the postgresql kind served", || {
        let client = client.clone();
        async move {
            let gvk = kube::api::GroupVersionKind::gvk("acid.zalan.do", "v1", "postgresql");
            kube::discovery::pinned_kind(&client, &gvk)
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
}

/// The runbook's "scale database resources": a patch step on the Postgres
/// operator's `postgresql` (a kind the chart's `actions.patch` grants),
/// after a patch of a kind it does not grant was refused with the reason.
/// The ledger keeps the previous values and the patch that undoes it; the
/// object carries the step's mark.
#[tokio::test]
async fn a_patch_step_scales_the_database_resource_and_says_how_to_undo_it() {
    let (address, api) = start_api().await;
    let client = client().await;
    postgresql_crd(&client).await;
    let ns = namespace(&client, "svc-patch").await;
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("acid.zalan.do", "v1", "postgresql"),
        "postgresqls",
    );
    let databases: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &resource);
    let database: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "acid.zalan.do/v1", "kind": "postgresql", "metadata": {"name": "api-db"},
        "spec": {"numberOfInstances": 1, "resources": {"limits": {"memory": "2Gi", "cpu": "1000m"}}}
    }))
    .unwrap();
    databases
        .create(&Default::default(), &database)
        .await
        .unwrap();
    let launch = Launch {
        chart_values: &[
            "actions.patch[0].apiGroup=acid.zalan.do",
            "actions.patch[0].resources[0]=postgresqls",
        ],
        ..Launch::namespaced(&ns)
    };
    let _operator = Operator::launch(&launch).await.unwrap();
    deployment(&client, &ns, "api", 2).await;
    let mut spec = leak_policy(
        "Auto",
        address,
        json!([
            {"name": "not-granted", "action": "patch", "patch": {"apiVersion": "apps/v1", "kind": "DaemonSet",
             "name": "node-agent", "patch": {"spec": {"template": {"metadata": {"labels": {"x": "y"}}}}}}},
            {"name": "scale-database", "action": "patch", "patch": {"apiVersion": "acid.zalan.do/v1",
             "kind": "postgresql", "name": "{{ name }}-db",
             "patch": {"spec": {"resources": {"limits": {"memory": "4Gi", "cpu": "2000m"}}}}}}
        ]),
    );
    spec["rules"][0]["type"] = json!("DataCorruption");
    spec["safety"] = json!({"cooldown": "0s"});
    policy_with(&client, &ns, spec).await;
    api.leaking.store(true, Ordering::SeqCst);
    let patched = eventually("the database resource patched", || {
        let databases = databases.clone();
        async move {
            let database = databases.get("api-db").await.ok()?;
            (database.data["spec"]["resources"]["limits"]["memory"] == "4Gi").then_some(database)
        }
    })
    .await;
    assert_eq!(patched.data["spec"]["resources"]["limits"]["cpu"], "2000m");
    assert_eq!(
        patched.data["spec"]["numberOfInstances"], 1,
        "the rest untouched"
    );
    api.leaking.store(false, Ordering::SeqCst);
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let done = resolved(&incidents, INCIDENT, Duration::from_secs(90)).await;
    let steps = &done.status.as_ref().unwrap().steps;
    assert_eq!(steps[0].result, StepResult::Failed);
    let refused = steps[0].message.clone().unwrap_or_default();
    assert!(
        refused.contains("the namespace's remediator may not read")
            && refused.contains("the Role healing-guard-remediator-patch grants it"),
        "{refused}"
    );
    assert_eq!(steps[1].result, StepResult::Succeeded);
    assert!(
        steps[1].changes[0].starts_with(
            "postgresql api-db: /spec/resources/limits/cpu 1000m -> 2000m, /spec/resources/limits/memory 2Gi -> 4Gi; undo: kubectl patch --type=json"
        ),
        "{:?}",
        steps[1].changes
    );
    assert_eq!(
        patched
            .annotations()
            .get("healing-guard.io/remediation-step"),
        Some(&steps[1].id)
    );
}

/// The shipped restore (`restore-from-backup` in
/// examples/policies/postgres.yaml) run for real: a database with the
/// API's events is dumped with pg_dump (custom format), then damaged, and
/// the example's own command line (its container's `sh -c`) restores it
/// against a real PostgreSQL; the example's integrity query agrees.
#[tokio::test]
async fn the_shipped_restore_command_restores_a_pg_dump_for_real() {
    let database = crate::signals::SignalServer::start("postgres");
    let url = database.var("HGO_POSTGRES_URL");
    let bin = database.var("HGO_POSTGRES_BIN");
    let psql = |sql: &str| -> String {
        let output = std::process::Command::new(format!("{bin}/psql"))
            .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-tAc", sql])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    psql(
        "CREATE TABLE webhook_events (id serial PRIMARY KEY, payload text NOT NULL); \
         INSERT INTO webhook_events (payload) SELECT 'event ' || n FROM generate_series(1, 100) AS n;",
    );
    let backups = tempfile::tempdir().unwrap();
    let dump = backups.path().join("healing-guard-latest.dump");
    let dumped = std::process::Command::new(format!("{bin}/pg_dump"))
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    // The corruption: rows lost, the rest overwritten.
    psql(
        "DELETE FROM webhook_events WHERE id > 10; UPDATE webhook_events SET payload = 'garbage';",
    );

    let example: Value = serde_yaml::from_str(
        &std::fs::read_to_string(crate::support::repo().join("examples/policies/postgres.yaml"))
            .unwrap(),
    )
    .unwrap();
    let step = example["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["actions"].as_array().unwrap().iter())
        .find(|action| action["name"] == "restore-from-backup")
        .expect("the example's restore step")
        .clone();
    assert_eq!(step["action"], "restoreData");
    assert!(
        step["restoreData"]["approver"].is_string(),
        "a restore waits for a named human"
    );
    let container = &step["restoreData"]["job"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"], json!(["sh", "-c"]));
    let line = container["args"][0].as_str().unwrap();
    let backup_file = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "BACKUP_FILE")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    assert_eq!(
        std::path::Path::new(backup_file).file_name(),
        dump.file_name(),
        "the dump where the example reads it (its /backups volume here a directory)"
    );
    let restored = std::process::Command::new("sh")
        .args(["-c", line])
        .env("DATABASE_URL", &url)
        .env("BACKUP_FILE", &dump)
        .env(
            "PATH",
            format!("{bin}:{}", std::env::var("PATH").unwrap_or_default()),
        )
        .output()
        .unwrap();
    assert!(
        restored.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert_eq!(psql("SELECT count(*) FROM webhook_events"), "100");
    assert_eq!(
        psql("SELECT payload FROM webhook_events WHERE id = 50"),
        "event 50"
    );
    // The example's integrity probe asks the same.
    let probe = example["spec"]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "integrity")
        .unwrap();
    assert_eq!(psql(probe["postgres"]["query"].as_str().unwrap()), "100");
}

/// A policy whose `/health` probe opens a P0 DataCorruption on `api`, and
/// whose one step restores the data with writers api and webhook-worker.
fn restore_policy(address: SocketAddr, failing: bool) -> Value {
    let labels = if failing {
        json!({"healing-guard.io/inject": "failed"})
    } else {
        json!({})
    };
    let mut spec = leak_policy(
        "Auto",
        address,
        json!([{"name": "restore-from-backup", "action": "restoreData", "timeout": "3m", "restoreData": {
            "approver": "alice",
            "writers": [{"kind": "Deployment", "name": "api"}, {"kind": "Deployment", "name": "webhook-worker"}],
            "deadline": "1m",
            "job": {"backoffLimit": 0, "template": {"metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "restore", "image": "registry.local/postgres:15",
                                             "command": ["pg_restore", "--clean", "/backups/latest.dump"]}]}}}}}]),
    );
    spec["rules"][0]["type"] = json!("DataCorruption");
    spec["rules"][0]["severity"] = json!("P0");
    spec
}

async fn replicas_of(client: &kube::Client, ns: &str, name: &str) -> i32 {
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas
        .unwrap()
}

async fn approve(incidents: &Api<Incident>, by: &str) {
    let approvals = json!({"spec": {"approvals": [{"step": "restore-from-backup", "by": by}]}});
    incidents
        .patch(
            INCIDENT,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&approvals),
        )
        .await
        .unwrap();
}

/// The runbook's "Database Corruption" as one step: nothing moves on an
/// approval by anyone but the named approver; approved by her, the
/// writers' replicas are recorded, the writers scaled to 0, and the
/// operator is SIGKILLed right after that sub-step, before recording it.
/// Its successor carries on from the recorded stage: the restore Job runs
/// (kwok completes it), and the writers come back to exactly the recorded
/// replicas (3 and 2); the incident resolves.
#[tokio::test]
async fn a_restore_resumes_after_a_kill_and_brings_the_writers_back_exactly() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-restore").await;
    deployment(&client, &ns, "api", 3).await;
    deployment(&client, &ns, "webhook-worker", 2).await;
    policy_with(&client, &ns, restore_policy(address, false)).await;
    let aborting = Launch {
        failpoints: "after-apply",
        ..Launch::namespaced(&ns)
    };
    let mut first = Operator::launch(&aborting).await.unwrap();
    api.leaking.store(true, Ordering::SeqCst);
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    first_step_is(
        &client,
        &ns,
        "the restore awaiting approval",
        StepResult::AwaitingApproval,
    )
    .await;
    // Bob is not the approver the step names: nothing moves.
    approve(&incidents, "bob").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = incidents.get(INCIDENT).await.unwrap();
    assert_eq!(
        waiting.status.as_ref().unwrap().steps[0].result,
        StepResult::AwaitingApproval,
        "only alice's approval counts"
    );
    assert_eq!(replicas_of(&client, &ns, "api").await, 3);

    approve(&incidents, "alice").await;
    eventually(
        "the operator to abort after scaling the writers down",
        || {
            let exited = first.exited();
            async move { exited }
        },
    )
    .await;
    assert_eq!(replicas_of(&client, &ns, "api").await, 0);
    assert_eq!(replicas_of(&client, &ns, "webhook-worker").await, 0);
    let cut = incidents.get(INCIDENT).await.unwrap();
    let workflow = cut.status.as_ref().unwrap().steps[0]
        .workflow
        .clone()
        .unwrap();
    assert_eq!(
        workflow.stage,
        healing_guard_operator::crd::WorkflowStage::ScaleDown,
        "killed before the sub-step's record"
    );
    let recorded: Vec<(String, i32)> = workflow
        .replicas
        .iter()
        .map(|r| (r.name.clone(), r.replicas))
        .collect();
    assert_eq!(
        recorded,
        [("api".to_owned(), 3), ("webhook-worker".to_owned(), 2)]
    );

    let _second = Operator::start(&ns).await;
    eventually("the writers back", || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let api = replicas_of(&client, &ns, "api").await;
            let worker = replicas_of(&client, &ns, "webhook-worker").await;
            (api == 3 && worker == 2).then_some(())
        }
    })
    .await;
    api.leaking.store(false, Ordering::SeqCst);
    let done = resolved(&incidents, INCIDENT, Duration::from_secs(120)).await;
    let step = &done.status.as_ref().unwrap().steps[0];
    assert_eq!(step.result, StepResult::Succeeded);
    let changes = step.changes.join("\n");
    for line in [
        "writers' replicas recorded: Deployment/api 3, Deployment/webhook-worker 2",
        "writers scaled to 0: Deployment/api, Deployment/webhook-worker",
        "the restore Job succeeded",
        "writers scaled back: Deployment/api to 3, Deployment/webhook-worker to 2",
    ] {
        assert!(changes.contains(line), "{line:?} not in:\n{changes}");
    }
    let job = job_of(&client, &ns, &done, 0).await.unwrap();
    assert_eq!(job.status.unwrap().succeeded, Some(1));
}

/// A restore waiting for its data to verify, with its writers at 0; the
/// incident held by its finalizer. Returns the incidents' API.
async fn restore_waiting_for_its_data(
    client: &kube::Client,
    ns: &str,
    address: SocketAddr,
    api: &StandIn,
) -> Api<Incident> {
    deployment(client, ns, "api", 3).await;
    deployment(client, ns, "webhook-worker", 2).await;
    let mut spec = restore_policy(address, false);
    // The health probe fails while the API leaks: the data never verifies.
    spec["rules"][0]["actions"][0]["restoreData"]["verifyProbe"] = json!("health");
    policy_with(client, ns, spec).await;
    api.leaking.store(true, Ordering::SeqCst);
    let incidents: Api<Incident> = Api::namespaced(client.clone(), ns);
    first_step_is(
        client,
        ns,
        "the restore awaiting approval",
        StepResult::AwaitingApproval,
    )
    .await;
    approve(&incidents, "alice").await;
    let waiting = incident_where(client, ns, INCIDENT, "the data being verified", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.first())
            .and_then(|s| s.workflow.as_ref())
            .is_some_and(|w| w.stage == healing_guard_operator::crd::WorkflowStage::VerifyData)
    })
    .await;
    assert_eq!(replicas_of(client, ns, "api").await, 0);
    assert_eq!(replicas_of(client, ns, "webhook-worker").await, 0);
    assert_eq!(waiting.finalizers(), ["healing-guard.io/restore-writers"]);
    incidents
}

async fn writers_back(client: &kube::Client, ns: &str) {
    eventually("the writers back", || {
        let (client, ns) = (client.clone(), ns.to_owned());
        async move {
            let api = replicas_of(&client, &ns, "api").await;
            let worker = replicas_of(&client, &ns, "webhook-worker").await;
            (api == 3 && worker == 2).then_some(())
        }
    })
    .await;
}

/// Resolving an incident while its restore has the writers at 0 does not
/// strand them: the restore winds down first (no data verification), the
/// writers come back to their recorded replicas, and the step says why it
/// stopped. The probe still failing, the incident reopens, and its new
/// round waits for a new approval with the writers up: the finalizer is
/// let go.
#[tokio::test]
async fn resolving_an_incident_mid_restore_brings_the_writers_back_first() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-restore-close").await;
    let _operator = Operator::start(&ns).await;
    let incidents = restore_waiting_for_its_data(&client, &ns, address, &api).await;
    let resolve = json!({"spec": {"resolution": {"by": "alice", "rootCause": "bad migration",
                                                  "summary": "restored by hand"}}});
    incidents
        .patch(
            INCIDENT,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&resolve),
        )
        .await
        .unwrap();
    writers_back(&client, &ns).await;
    let ended = incident_where(&client, &ns, INCIDENT, "the restore step ended", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.first())
            .is_some_and(|s| s.result == StepResult::Failed)
    })
    .await;
    let status = ended.status.as_ref().unwrap();
    assert!(
        status.timeline.iter().any(|e| e.reason == "Resolved"),
        "resolved first"
    );
    let step = &status.steps[0];
    let message = step.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("stopped: the incident was closed mid-restore; its writers are back"),
        "{message}"
    );
    let changes = step.changes.join("\n");
    for line in [
        "the incident was closed mid-restore: before the restored data was verified; its writers are brought back",
        "writers scaled back: Deployment/api to 3, Deployment/webhook-worker to 2",
    ] {
        assert!(changes.contains(line), "{line:?} not in:\n{changes}");
    }
    let reopened = incident_where(
        &client,
        &ns,
        INCIDENT,
        "round 2 waiting for approval, the finalizer let go",
        |i| {
            i.finalizers().is_empty()
                && i.status.as_ref().is_some_and(|s| {
                    s.steps.len() == 2 && s.steps[1].result == StepResult::AwaitingApproval
                })
        },
    )
    .await;
    assert_eq!(reopened.status.unwrap().steps[1].attempt, 2);
    assert_eq!(replicas_of(&client, &ns, "api").await, 3);
    assert_eq!(replicas_of(&client, &ns, "webhook-worker").await, 2);
    api.leaking.store(false, Ordering::SeqCst);
}

/// Deleting an incident while its restore has the writers at 0 waits (its
/// finalizer) until they are back, then the incident is gone.
#[tokio::test]
async fn deleting_an_incident_mid_restore_waits_until_the_writers_are_back() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-restore-delete").await;
    let _operator = Operator::start(&ns).await;
    let incidents = restore_waiting_for_its_data(&client, &ns, address, &api).await;
    let uid = incidents.get(INCIDENT).await.unwrap().uid().unwrap();
    incidents
        .delete(INCIDENT, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    // Without the finalizer the incident would be gone at once, its
    // writers left at 0.
    writers_back(&client, &ns).await;
    api.leaking.store(false, Ordering::SeqCst);
    // Gone (the probe failing meanwhile may open a new one, another uid).
    eventually("the incident gone", || {
        let (incidents, uid) = (incidents.clone(), uid.clone());
        async move {
            let now = incidents.get_opt(INCIDENT).await.ok()?;
            now.is_none_or(|i| i.uid().as_deref() != Some(uid.as_str()))
                .then_some(())
        }
    })
    .await;
}

/// A restore Job that fails leaves the writers down (the data may be half
/// restored) and escalates at once, with what is down and the commands
/// that bring it back written in the Incident.
#[tokio::test]
async fn a_failed_restore_escalates_with_what_is_down_and_how_to_bring_it_back() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-restore-fail").await;
    let _operator = Operator::start(&ns).await;
    deployment(&client, &ns, "api", 3).await;
    deployment(&client, &ns, "webhook-worker", 2).await;
    policy_with(&client, &ns, restore_policy(address, true)).await;
    api.leaking.store(true, Ordering::SeqCst);
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    first_step_is(
        &client,
        &ns,
        "the restore awaiting approval",
        StepResult::AwaitingApproval,
    )
    .await;
    approve(&incidents, "alice").await;
    let escalated = incident_where(&client, &ns, INCIDENT, "escalated", |i| {
        phase_of(i) == Some(Phase::Escalated)
    })
    .await;
    let status = escalated.status.as_ref().unwrap();
    assert_eq!(status.steps[0].result, StepResult::Failed);
    let needs_human = status
        .conditions
        .iter()
        .find(|c| c.type_ == "NeedsHuman")
        .unwrap();
    assert_eq!(needs_human.reason, "RestoreStopped");
    for part in [
        "restore stopped at AwaitRestore",
        "BackoffLimitExceeded",
        "down: Deployment/api (was 3 replicas), Deployment/webhook-worker (was 2 replicas)",
        &format!("kubectl -n {ns} scale deployment/api --replicas=3"),
        &format!("kubectl -n {ns} scale deployment/webhook-worker --replicas=2"),
    ] {
        assert!(
            needs_human.message.contains(part),
            "{part:?} not in {}",
            needs_human.message
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        replicas_of(&client, &ns, "api").await,
        0,
        "left down for a human"
    );
    assert_eq!(replicas_of(&client, &ns, "webhook-worker").await, 0);
}

/// A DryRun policy walks a ladder of every service action: each step is
/// planned and checked (the API server's dry run where there is a write)
/// and recorded as DryRun, and nothing changes: no Job, the Secret's value
/// as it was, the writers' replicas as they were, no call made.
#[tokio::test]
async fn a_dry_run_of_every_service_action_changes_nothing() {
    let (address, api) = start_api().await;
    let client = client().await;
    let ns = namespace(&client, "svc-dry-all").await;
    let old = "dry-run-keeps-this-value-42";
    secret(
        &client,
        &ns,
        "healing-guard-secrets",
        json!({"jwt-secret": old}),
    )
    .await;
    let _operator = Operator::start(&ns).await;
    deployment_reading(&client, &ns, "webhook-worker", "envFrom").await;
    deployment(&client, &ns, "api", 3).await;
    let mut spec = leak_policy(
        "DryRun",
        address,
        json!([
            {"name": "force-gc", "action": "http", "http": {"url": format!("http://{address}/api/v1/admin/gc")}},
            job_step("smoke-test", false),
            {"name": "rotate-jwt", "action": "rotateSecret",
             "rotateSecret": {"secret": "healing-guard-secrets", "key": "jwt-secret"}},
            {"name": "restore-from-backup", "action": "restoreData", "restoreData": {
                "approver": "alice", "writers": [{"kind": "Deployment", "name": "api"}],
                "job": {"template": {"spec": {"containers": [{"name": "restore", "image": "registry.local/pg:15"}]}}}}}
        ]),
    );
    spec["safety"] = json!({"cooldown": "0s"});
    policy_with(&client, &ns, spec).await;
    api.leaking.store(true, Ordering::SeqCst);
    let done = incident_where(&client, &ns, INCIDENT, "every step dry-run", |i| {
        i.status.as_ref().is_some_and(|s| {
            s.steps.len() == 4 && s.steps.iter().all(|step| step.result == StepResult::DryRun)
        })
    })
    .await;
    let steps = &done.status.as_ref().unwrap().steps;
    for step in steps {
        assert!(
            step.changes[0].starts_with("dry run, nothing changed: "),
            "{step:?}"
        );
    }
    assert!(api.calls_to("/api/v1/admin/gc").is_empty(), "no call");
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "no Job");
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .get("healing-guard-secrets")
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(secret.data.unwrap()["jwt-secret"].0.clone()).unwrap(),
        old
    );
    assert_eq!(replicas_of(&client, &ns, "api").await, 3);
    let worker = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
        .get("webhook-worker")
        .await
        .unwrap();
    assert!(
        worker
            .spec
            .unwrap()
            .template
            .metadata
            .and_then(|m| m.annotations)
            .is_none_or(|a| !a.contains_key("healing-guard.io/secret-rotated")),
        "no restart"
    );
}

/// The incident, once its first step is `result`.
async fn first_step_is(
    client: &kube::Client,
    ns: &str,
    what: &str,
    result: StepResult,
) -> Incident {
    incident_where(client, ns, INCIDENT, what, |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.first())
            .is_some_and(|s| s.result == result)
    })
    .await
}
