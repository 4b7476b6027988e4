//! Probes against real servers: a Redis started by `cluster/signals/start.sh`
//! whose `webhook_queue` backs up, a PostgreSQL (initdb + postgres as a
//! non-root user) that stops answering, and a loopback HTTP service that can
//! be made failing. Each opens the incident its rule names, the ladder
//! acts, and the incident resolves once the probe is healthy again.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use healing_guard_operator::crd::{Incident, Phase};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};

use crate::{
    remediation::policy_with,
    support::{Operator, client, eventually, eventually_within, incident_where, namespace, repo},
};

/// One server from `cluster/signals/start.sh`, stopped on drop.
pub(crate) struct SignalServer {
    state: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl SignalServer {
    pub(crate) fn start(kind: &str) -> SignalServer {
        SignalServer::start_with(kind, tempfile::tempdir().unwrap(), &[])
    }

    /// Started in `state` (where its config was written) with more arguments.
    pub(crate) fn start_with(kind: &str, state: tempfile::TempDir, args: &[&str]) -> SignalServer {
        let script = repo().join("cluster/signals/start.sh");
        let output = std::process::Command::new(&script)
            .arg(kind)
            .arg(state.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{kind} did not start:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let env = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        SignalServer { state, env }
    }

    pub(crate) fn var(&self, name: &str) -> String {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in {:?}", self.env))
            .clone()
    }

    fn stop(&self, kind: &str) {
        let status = std::process::Command::new(repo().join("cluster/signals/stop.sh"))
            .arg(self.state.path())
            .arg(kind)
            .status()
            .unwrap();
        assert!(status.success(), "{kind} did not stop");
    }

    fn restart(&self, kind: &str, port: &str) {
        let output = std::process::Command::new(repo().join("cluster/signals/start.sh"))
            .arg(kind)
            .arg(self.state.path())
            .args(["--port", port])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{kind} did not start again:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for SignalServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo().join("cluster/signals/stop.sh"))
            .arg(self.state.path())
            .status();
    }
}

pub(crate) async fn secret(client: &Client, ns: &str, name: &str, data: Value) {
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// A Deployment of `replicas`, available.
pub(crate) async fn deployment(
    client: &Client,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Api<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "registry.local/app:1"}]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let name = name.to_owned();
    eventually("the deployment available", || {
        let api = api.clone();
        let name = name.clone();
        async move {
            api.get(&name)
                .await
                .ok()?
                .status?
                .available_replicas
                .filter(|n| *n == replicas)
        }
    })
    .await;
    api
}

/// The runbook's database: a StatefulSet `postgres` of one (kwok runs it).
async fn postgres_statefulset(client: &Client, ns: &str) {
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "postgres"},
        "spec": {"replicas": 1, "serviceName": "postgres", "selector": {"matchLabels": {"app": "postgres"}},
                 "template": {"metadata": {"labels": {"app": "postgres"}},
                              "spec": {"containers": [{"name": "postgres", "image": "postgres:16"}]}}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
}

/// The incident `name`, once Resolved (within `limit`).
pub(crate) async fn resolved(incidents: &Api<Incident>, name: &str, limit: Duration) -> Incident {
    eventually_within("the incident resolved", limit, || {
        let incidents = incidents.clone();
        async move {
            let incident = incidents.get(name).await.ok()?;
            (phase(&incident) == Some(Phase::Resolved)).then_some(incident)
        }
    })
    .await
}

fn phase(incident: &Incident) -> Option<Phase> {
    incident.status.as_ref().and_then(|s| s.phase)
}

/// The runbook's "Webhook Processing Failures": the queue backs up, the
/// worker is scaled to 5, the queue drains, the incident resolves; the
/// queue hovering between clearBelow and the threshold does not clear it.
#[tokio::test]
async fn a_backed_up_webhook_queue_scales_the_worker_and_resolves_once_it_drains() {
    let redis_server = SignalServer::start("redis");
    let client = client().await;
    let ns = namespace(&client, "sig-redis").await;
    let _operator = Operator::start(&ns).await;
    secret(
        &client,
        &ns,
        "redis",
        json!({"url": redis_server.var("HGO_REDIS_URL")}),
    )
    .await;
    let deployments = deployment(&client, &ns, "webhook-worker", 2).await;
    policy_with(
        &client,
        &ns,
        json!({
            "mode": "Auto",
            "targets": [{"kind": "Deployment", "names": ["webhook-worker"]}],
            "probes": [{"name": "queue", "target": {"kind": "Deployment", "name": "webhook-worker"},
                        "every": "1s", "timeout": "1s", "failureThreshold": 2, "successThreshold": 2,
                        "redis": {"secretRef": {"name": "redis"}, "list": "webhook_queue",
                                  "above": 100, "clearBelow": 10}}],
            "rules": [{"name": "backlog", "when": {"symptom": "ProbeFailing", "probe": "queue"},
                       "severity": "P1", "type": "IntegrationFailure",
                       "actions": [{"action": "scale", "scale": {"replicas": 5, "maxReplicas": 8}}],
                       "verify": {"timeout": "1m", "holdDown": "2s"}}],
            "detection": {"holdDown": "3s"}
        }),
    )
    .await;
    let redis = ::redis::Client::open(redis_server.var("HGO_REDIS_URL")).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<String> = (0..250).map(|n| format!("delivery-{n}")).collect();
    ::redis::cmd("RPUSH")
        .arg("webhook_queue")
        .arg(&entries)
        .query_async::<i64>(&mut connection)
        .await
        .unwrap();

    let name = "webhook-worker-probe-queue";
    let opened = incident_where(&client, &ns, name, "the backlog incident", |_| true).await;
    assert_eq!(opened.spec.rule.as_deref(), Some("backlog"));
    let description = opened.spec.description.unwrap_or_default();
    assert!(
        description.contains("webhook_queue has 250 entries (above 100)"),
        "{description}"
    );
    eventually("the worker scaled to 5", || {
        let deployments = deployments.clone();
        async move {
            let replicas = deployments
                .get("webhook-worker")
                .await
                .ok()?
                .spec?
                .replicas?;
            (replicas == 5).then_some(())
        }
    })
    .await;

    // Drained to 50: below the threshold, above clearBelow: still failing.
    ::redis::cmd("LTRIM")
        .arg("webhook_queue")
        .arg(0)
        .arg(49)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let hovering = incidents.get(name).await.unwrap();
    assert!(
        hovering
            .status
            .as_ref()
            .and_then(|s| s.detection.as_ref())
            .is_some_and(|d| d.cleared_at.is_none()),
        "50 entries is not drained (clearBelow 10): {:?}",
        hovering.status.and_then(|s| s.detection)
    );

    ::redis::cmd("DEL")
        .arg("webhook_queue")
        .query_async::<i64>(&mut connection)
        .await
        .unwrap();
    let resolved = resolved(&incidents, name, Duration::from_secs(90)).await;
    let steps = resolved.status.unwrap().steps;
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(
        steps[0].changes,
        ["Deployment/webhook-worker replicas 2 -> 5"]
    );
}

/// The runbook's "Database Connection Issues": PostgreSQL stops answering,
/// an incident opens and its postgres pods are restarted; it resolves once
/// the database answers again.
/// A policy author's PostgreSQL probe, as a hostile one would write it: it
/// may only read (a write is refused by the read-only transaction), run
/// one statement (a second is refused whole), and what fails is told by
/// its SQLSTATE class alone, never with the server's words (which carry
/// row data).
#[tokio::test]
async fn a_postgres_probe_only_reads_runs_one_statement_and_never_repeats_the_servers_words() {
    let postgres = SignalServer::start("postgres");
    let url = postgres.var("HGO_POSTGRES_URL");
    let client = client().await;
    let ns = namespace(&client, "sig-pg-bounded").await;
    secret(&client, &ns, "db", json!({"url": url})).await;
    let (database, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    database
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS probe_secrets (value text); \
             INSERT INTO probe_secrets VALUES ('hunter2-s3cret')",
        )
        .await
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    for (query, expected) in [
        ("SELECT count(*) FROM probe_secrets", None),
        (
            "CREATE TABLE probe_wrote (x int)",
            Some("SQLSTATE class 25: invalid transaction state (a probe may only read)"),
        ),
        (
            "SELECT 1; DROP TABLE probe_secrets",
            Some("SQLSTATE class 42: syntax error or access rule violation"),
        ),
        (
            "SELECT CAST(value AS int) FROM probe_secrets",
            Some("SQLSTATE class 22: data exception"),
        ),
        ("SELECT pg_sleep(5)", Some("SQLSTATE class 57")),
    ] {
        let probe: healing_guard_operator::crd::Probe = serde_json::from_value(json!({
            "name": "db", "target": {"kind": "StatefulSet", "name": "postgres"},
            "every": "10s", "timeout": "2s",
            "postgres": {"secretRef": {"name": "db"}, "query": query}
        }))
        .unwrap();
        let outcome =
            healing_guard_operator::signals::check::run(&client, &http, &ns, &probe, false)
                .await
                .unwrap();
        match expected {
            None => assert!(outcome.passed, "{query}: {outcome:?}"),
            Some(said) => {
                assert!(!outcome.passed, "{query}: {outcome:?}");
                assert!(
                    outcome.detail.starts_with(&format!("PostgreSQL: {said}")),
                    "{query}: {outcome:?}"
                );
                assert!(!outcome.detail.contains("hunter2"), "{query}: {outcome:?}");
            }
        }
    }
    let (wrote, still_there): (bool, bool) = {
        let row = database
            .query_one(
                "SELECT to_regclass('probe_wrote') IS NOT NULL, to_regclass('probe_secrets') IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(!wrote, "the probe's CREATE TABLE was not made");
    assert!(still_there, "the probe's second statement did not run");
}

#[tokio::test]
async fn postgres_not_answering_opens_an_incident_that_resolves_when_it_answers() {
    let postgres = SignalServer::start("postgres");
    let client = client().await;
    let ns = namespace(&client, "sig-pg").await;
    let _operator = Operator::start(&ns).await;
    secret(
        &client,
        &ns,
        "postgres",
        json!({"url": postgres.var("HGO_POSTGRES_URL")}),
    )
    .await;
    postgres_statefulset(&client, &ns).await;
    policy_with(
        &client,
        &ns,
        json!({
            "mode": "Auto",
            "targets": [{"kind": "StatefulSet", "names": ["postgres"]}],
            "probes": [{"name": "db", "target": {"kind": "StatefulSet", "name": "postgres"},
                        "every": "1s", "timeout": "1s", "failureThreshold": 2, "successThreshold": 2,
                        "postgres": {"secretRef": {"name": "postgres"}}}],
            "rules": [{"name": "db-down", "when": {"symptom": "ProbeFailing", "probe": "db"},
                       "severity": "P0", "type": "ServiceOutage",
                       "actions": [{"action": "restart", "restart": {"method": "DeletePods"}}],
                       "verify": {"timeout": "1m", "holdDown": "2s"}}],
            "detection": {"holdDown": "3s"}
        }),
    )
    .await;
    // Healthy: nothing opens.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    assert!(
        incidents
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let port = postgres.var("HGO_POSTGRES_PORT");
    postgres.stop("postgres");
    let name = "postgres-sts-probe-db";
    let opened = incident_where(&client, &ns, name, "the database incident", |i| {
        i.status.as_ref().is_some_and(|s| !s.steps.is_empty())
    })
    .await;
    assert!(
        opened
            .spec
            .description
            .as_deref()
            .is_some_and(|d| d.contains("probe db failing: PostgreSQL")),
        "{:?}",
        opened.spec.description
    );
    postgres.restart("postgres", &port);
    let resolved = resolved(&incidents, name, Duration::from_secs(90)).await;
    let status = resolved.status.unwrap();
    assert!(status.detection.unwrap().cleared_at.is_some());
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    assert_eq!(
        (status.steps[0].action, status.steps[0].result),
        (
            healing_guard_operator::crd::ActionKind::Restart,
            healing_guard_operator::crd::StepResult::Succeeded
        ),
        "the pods were restarted, and the step held once the database answered"
    );
}

/// The runbook's `curl -f .../health`: a service answering 503 (or too
/// slowly) is failing; answering 200 in time again, it resolves.
#[tokio::test]
async fn a_failing_health_endpoint_opens_an_incident_that_resolves_when_it_answers() {
    // 0: healthy; 1: 503; 2: slow. Without the token from the probe's
    // headersFrom Secret, it answers 401: it never recovers without it.
    let mode = Arc::new(AtomicU16::new(0));
    let served = mode.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let mode = served.clone();
            async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Bearer health-token")
                {
                    return (axum::http::StatusCode::UNAUTHORIZED, "token");
                }
                match mode.load(Ordering::SeqCst) {
                    1 => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down"),
                    2 => {
                        tokio::time::sleep(Duration::from_millis(600)).await;
                        (axum::http::StatusCode::OK, "slow")
                    }
                    _ => (axum::http::StatusCode::OK, "ok"),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = client().await;
    let ns = namespace(&client, "sig-http").await;
    secret(
        &client,
        &ns,
        "health-headers",
        json!({"authorization": "Bearer health-token"}),
    )
    .await;
    let operator = Operator::start(&ns).await;
    deployment(&client, &ns, "api", 2).await;
    policy_with(
        &client,
        &ns,
        json!({
            "mode": "DryRun",
            "targets": [{"kind": "Deployment", "names": ["api"]}],
            "probes": [{"name": "health", "target": {"kind": "Deployment", "name": "api"},
                        "every": "1s", "timeout": "1s", "failureThreshold": 2, "successThreshold": 2,
                        "http": {"url": format!("http://{address}/health?for={{{{ name }}}}"),
                                 "slowerThan": "300ms", "headersFrom": {"name": "health-headers"}}}],
            "rules": [{"name": "api-down", "when": {"symptom": "ProbeFailing", "probe": "health"},
                       "severity": "P0", "type": "ServiceOutage",
                       "actions": [{"action": "restart"}],
                       "verify": {"timeout": "1m", "holdDown": "2s"}}],
            "detection": {"holdDown": "3s"}
        }),
    )
    .await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let name = "api-probe-health";
    for (round, failure, expected) in [(1, 1, "answered 503"), (2, 2, "slower than")] {
        mode.store(failure, Ordering::SeqCst);
        let opened = eventually("the health incident open", || {
            let incidents = incidents.clone();
            async move {
                let incident = incidents.get(name).await.ok()?;
                let open = incident
                    .status
                    .as_ref()?
                    .detection
                    .as_ref()?
                    .cleared_at
                    .is_none()
                    && phase(&incident).is_some_and(|p| !p.is_closed());
                open.then_some(incident)
            }
        })
        .await;
        let message = opened
            .status
            .and_then(|s| s.detection)
            .and_then(|d| d.message)
            .unwrap_or_default();
        assert!(message.contains(expected), "round {round}: {message}");
        mode.store(0, Ordering::SeqCst);
        resolved(&incidents, name, Duration::from_secs(90)).await;
    }
    // Healthy again, and the gauge says so.
    let metrics = operator.metrics().await;
    let gauge = format!(
        "healing_guard_probe_failing{{namespace=\"{ns}\",policy=\"guard\",probe=\"health\"}} 0"
    );
    assert!(metrics.contains(&gauge), "{gauge} not in:\n{metrics}");
}

/// A rollback whose rollout completes is not recovery while the probe the
/// rule's verification names still fails: the step stays Verifying, and
/// succeeds once `/health` answers.
#[tokio::test]
async fn a_step_is_verified_by_the_probes_its_rule_names_as_well() {
    use healing_guard_operator::crd::StepResult;
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = healthy.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let healthy = served.load(Ordering::SeqCst);
            async move {
                if healthy {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut spec = crate::remediation::crash_policy("Auto", json!([{"action": "rollback"}]), "2m");
    spec["probes"] = json!([{"name": "health", "target": {"kind": "Deployment", "name": "api"},
        "every": "1s", "timeout": "1s", "failureThreshold": 1, "successThreshold": 2,
        "http": {"url": format!("http://{address}/health")}}]);
    spec["rules"][0]["verify"]["probes"] = json!(["health"]);
    let (client, ns, _operator) = crate::remediation::setup_spec("sig-verify", spec).await;
    crate::remediation::bad_release(&client, &ns).await;
    let verifying = incident_where(&client, &ns, "api-crashloop", "the rollback applied", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.last())
            .is_some_and(|s| s.result == StepResult::Verifying)
    })
    .await;
    assert_eq!(verifying.status.unwrap().steps.len(), 1);
    // The rollout completes, the pods are ready; /health still fails.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let still = incidents.get("api-crashloop").await.unwrap();
    let step = still.status.unwrap().steps[0].clone();
    assert_eq!(step.result, StepResult::Verifying, "{step:?}");
    assert!(step.healthy_since.is_none(), "{step:?}");

    healthy.store(true, Ordering::SeqCst);
    let done = incident_where(
        &client,
        &ns,
        "api-crashloop",
        "the rollback verified",
        |i| {
            i.status
                .as_ref()
                .and_then(|s| s.steps.last())
                .is_some_and(|s| s.result == StepResult::Succeeded)
        },
    )
    .await;
    let steps = done.status.unwrap().steps;
    assert_eq!(steps.len(), 1);
    // Why it held, for a human: the probe and what it last saw.
    assert!(
        steps[0]
            .verification
            .iter()
            .any(|v| v.starts_with("probe health passed at ") && v.contains(": answered 200 in ")),
        "{:?}",
        steps[0].verification
    );
}

/// The runbook's stack has an order: the API depends on PostgreSQL. While
/// the database's incident is open, the API's incident takes no action and
/// says why (no restart loop against a database that is down); once the
/// database answers and its incident resolves, the API's ladder runs.
#[tokio::test]
async fn actions_wait_while_a_dependency_is_down_and_resume_when_it_recovers() {
    use healing_guard_operator::crd::{RemediationPolicy, StepResult};
    let postgres = SignalServer::start("postgres");
    let client = client().await;
    let ns = namespace(&client, "sig-deps").await;
    let _operator = Operator::start(&ns).await;
    secret(
        &client,
        &ns,
        "postgres",
        json!({"url": postgres.var("HGO_POSTGRES_URL")}),
    )
    .await;
    postgres_statefulset(&client, &ns).await;
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns);
    let database: RemediationPolicy = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
        "metadata": {"name": "database"},
        "spec": {"mode": "DryRun",
                 "targets": [{"kind": "StatefulSet", "names": ["postgres"]}],
                 "probes": [{"name": "db", "target": {"kind": "StatefulSet", "name": "postgres"},
                             "every": "1s", "timeout": "1s", "failureThreshold": 2, "successThreshold": 2,
                             "postgres": {"secretRef": {"name": "postgres"}}}],
                 "rules": [{"name": "db-down", "when": {"symptom": "ProbeFailing", "probe": "db"},
                            "severity": "P0", "type": "ServiceOutage", "actions": [{"action": "restart"}],
                            "verify": {"timeout": "1m", "holdDown": "2s"}}],
                 "detection": {"holdDown": "2s"}}
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &database)
        .await
        .unwrap();
    let mut api_spec =
        crate::remediation::crash_policy("Auto", json!([{"action": "rollback"}]), "2m");
    api_spec["dependsOn"] = json!([{"kind": "StatefulSet", "name": "postgres"}]);
    let api_policy: RemediationPolicy = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
        "metadata": {"name": "api"}, "spec": api_spec
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &api_policy)
        .await
        .unwrap();

    let port = postgres.var("HGO_POSTGRES_PORT");
    postgres.stop("postgres");
    incident_where(
        &client,
        &ns,
        "postgres-sts-probe-db",
        "the database incident",
        |_| true,
    )
    .await;
    // Meanwhile the API crash-loops.
    crate::remediation::bad_release(&client, &ns).await;
    let held = incident_where(
        &client,
        &ns,
        "api-crashloop",
        "the API's actions held",
        |i| {
            i.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "RemediationBlocked" && c.reason == "DependencyDown")
            })
        },
    )
    .await;
    let status = held.status.unwrap();
    assert!(status.steps.is_empty(), "{:?}", status.steps);
    let condition = status
        .conditions
        .iter()
        .find(|c| c.reason == "DependencyDown")
        .unwrap();
    assert!(
        condition.message.contains("StatefulSet/postgres")
            && condition.message.contains("postgres-sts-probe-db"),
        "{}",
        condition.message
    );

    postgres.restart("postgres", &port);
    let resumed = incident_where(&client, &ns, "api-crashloop", "the API's rollback", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.first())
            .is_some_and(|s| s.result == StepResult::Succeeded)
    })
    .await;
    let database_incident = Api::<Incident>::namespaced(client.clone(), &ns)
        .get("postgres-sts-probe-db")
        .await
        .unwrap();
    assert_eq!(phase(&database_incident), Some(Phase::Resolved));
    assert_eq!(
        resumed.status.unwrap().steps[0].action,
        healing_guard_operator::crd::ActionKind::Rollback
    );
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Prometheus evaluates the runbook's service rules (the chart's
/// `service.rules.yaml`, their `for` shortened to seconds) over the API's
/// scrape target, and a real Alertmanager routes the alert to the
/// operator's webhook: the API being down (`up == 0`) opens the incident of
/// the rule that names the alert, its ladder runs, and once the API answers
/// again the resolved alert clears it and it resolves.
#[tokio::test]
async fn an_alert_from_prometheus_through_alertmanager_opens_and_clears_an_incident() {
    let client = client().await;
    let ns = namespace(&client, "sig-alert").await;
    let token = "am-webhook-token";
    let operator = Operator::start_with(&ns, &["--alertmanager-token", token]).await;
    let webhook = operator.metrics_url.replace("/metrics", "/alertmanager");
    deployment(&client, &ns, "healing-guard", 2).await;
    policy_with(
        &client,
        &ns,
        json!({
            "mode": "Auto",
            "targets": [{"kind": "Deployment", "names": ["healing-guard"]}],
            "alerts": [{"name": "api-down", "target": {"kind": "Deployment", "name": "healing-guard"},
                        "match": {"alertname": "HealingGuardDown", "service": "healing-guard"}}],
            "rules": [{"name": "api-down", "when": {"symptom": "AlertFiring", "alert": "api-down"},
                       "severity": "P0", "type": "ServiceOutage",
                       "actions": [{"action": "restart", "restart": {"method": "RolloutRestart"}}],
                       "verify": {"timeout": "2m", "holdDown": "2s"}}],
            "detection": {"holdDown": "2s"}
        }),
    )
    .await;

    // The webhook refuses what is not Alertmanager's, with the reason.
    let http = reqwest::Client::new();
    let unauthorized = http.post(&webhook).body("{}").send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    let malformed = http
        .post(&webhook)
        .bearer_auth(token)
        .body(r#"{"version": "3", "status": "firing", "alerts": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(malformed.text().await.unwrap().contains("only version 4"));
    let oversized = http
        .post(&webhook)
        .bearer_auth(token)
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413, "the body is bounded");

    // Alertmanager, routing everything to the operator at once.
    let am_state = tempfile::tempdir().unwrap();
    let am_config = am_state.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route: {{receiver: operator, group_by: [alertname], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}}\n\
             receivers:\n\
             - name: operator\n  webhook_configs:\n  - url: {webhook}\n    send_resolved: true\n    \
             http_config: {{authorization: {{type: Bearer, credentials: {token}}}}}\n"
        ),
    )
    .unwrap();
    let am_config = am_config.to_string_lossy().into_owned();
    let alertmanager =
        SignalServer::start_with("alertmanager", am_state, &["--config", &am_config]);

    // Prometheus: the runbook's rules over the API's scrape target, where
    // nothing answers yet.
    let api_port = free_port();
    let prom_state = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(
        repo().join("charts/healing-guard-operator/rules/service.rules.yaml"),
    )
    .unwrap();
    let quick: String = rules
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("for: ") {
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}for: 2s")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let rules_path = prom_state.path().join("service.rules.yaml");
    std::fs::write(&rules_path, quick).unwrap();
    let prom_config = prom_state.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{rules}]\n\
             alerting: {{alertmanagers: [{{static_configs: [{{targets: ['{am}']}}]}}]}}\n\
             scrape_configs:\n\
             - job_name: healing-guard\n  static_configs:\n  - targets: ['127.0.0.1:{api_port}']\n    labels: {{namespace: {ns}}}\n",
            rules = rules_path.display(),
            am = alertmanager.var("HGO_ALERTMANAGER_URL").trim_start_matches("http://"),
        ),
    )
    .unwrap();
    let prom_config = prom_config.to_string_lossy().into_owned();
    let _prometheus = SignalServer::start_with(
        "prometheus",
        prom_state,
        &[
            "--config",
            &prom_config,
            "--",
            "--rules.alert.resend-delay=1s",
        ],
    );

    let name = "healing-guard-alert-api-down";
    let opened = eventually_within("the alert's incident", Duration::from_secs(90), || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let incident = Api::<Incident>::namespaced(client, &ns)
                .get(name)
                .await
                .ok()?;
            incident.status.as_ref()?.steps.first()?;
            Some(incident)
        }
    })
    .await;
    assert_eq!(opened.spec.rule.as_deref(), Some("api-down"));
    let description = opened.spec.description.clone().unwrap_or_default();
    assert!(
        description.contains("alert HealingGuardDown: The healing-guard API is down"),
        "{description}"
    );

    // The second Alertmanager of an HA pair delivers the same alert (its
    // fingerprint and start, as Alertmanager's API shows them), twice:
    // received, and the same occurrence, not new ones.
    let am_url = alertmanager.var("HGO_ALERTMANAGER_URL");
    let alerts: Value = http
        .get(format!("{am_url}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alert = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "HealingGuardDown")
        .unwrap()
        .clone();
    let twin = json!({
        "version": "4", "status": "firing", "receiver": "operator",
        "groupKey": "{}:{alertname=\"HealingGuardDown\"}", "truncatedAlerts": 0,
        "groupLabels": {"alertname": "HealingGuardDown"},
        "commonLabels": alert["labels"], "commonAnnotations": alert["annotations"],
        "externalURL": am_url,
        "alerts": [{"status": "firing", "labels": alert["labels"], "annotations": alert["annotations"],
                    "startsAt": alert["startsAt"], "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": alert["generatorURL"], "fingerprint": alert["fingerprint"]}]
    });
    let occurrences = |incident: &Incident| {
        incident
            .status
            .as_ref()
            .and_then(|s| s.detection.as_ref())
            .map(|d| d.occurrences)
    };
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let before = occurrences(&incidents.get(name).await.unwrap());
    for _ in 0..2 {
        let answer = http
            .post(&webhook)
            .bearer_auth(token)
            .json(&twin)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    // The detector writes within a second; give it three.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        occurrences(&incidents.get(name).await.unwrap()),
        before,
        "the same alert again is not a new occurrence"
    );

    // The API answers its scrape again: the alert resolves, the incident too.
    let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { "api_up 1\n" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", api_port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let resolved = resolved(&incidents, name, Duration::from_secs(120)).await;
    let status = resolved.status.unwrap();
    assert!(
        status.detection.unwrap().cleared_at.is_some(),
        "cleared by the resolved alert"
    );
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    assert_eq!(
        status.steps[0].action,
        healing_guard_operator::crd::ActionKind::Restart
    );
}

/// A probe on a Prometheus query, against a real Prometheus scraping a
/// loopback service: while the query has no data it says nothing (no
/// incident); the latency over its bound opens the incident; back under it,
/// the incident resolves.
#[tokio::test]
async fn a_prometheus_query_over_its_bound_opens_an_incident_and_no_data_says_nothing() {
    // The service's latency gauge, in milliseconds; 0 serves no metric at all.
    let latency = Arc::new(AtomicU16::new(0));
    let served = latency.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let ms = served.load(Ordering::SeqCst);
            async move {
                if ms == 0 {
                    String::new()
                } else {
                    format!("api_latency_seconds {}\n", f64::from(ms) / 1000.0)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = client().await;
    let ns = namespace(&client, "sig-prom").await;
    let prom_state = tempfile::tempdir().unwrap();
    let prom_config = prom_state.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: api\n  static_configs:\n  - targets: ['{app_address}']\n    labels: {{namespace: {ns}}}\n"
        ),
    )
    .unwrap();
    let prom_config = prom_config.to_string_lossy().into_owned();
    let prometheus =
        SignalServer::start_with("prometheus", prom_state, &["--config", &prom_config]);
    let _operator = Operator::start(&ns).await;
    deployment(&client, &ns, "api", 2).await;
    policy_with(
        &client,
        &ns,
        json!({
            "mode": "DryRun",
            "targets": [{"kind": "Deployment", "names": ["api"]}],
            "probes": [{"name": "latency", "target": {"kind": "Deployment", "name": "api"},
                        "every": "1s", "timeout": "1s", "failureThreshold": 2, "successThreshold": 2,
                        "prometheus": {"address": prometheus.var("HGO_PROMETHEUS_URL"),
                                       "query": "max(api_latency_seconds{namespace=\"{{ namespace }}\"})",
                                       "below": 1.0}}],
            "rules": [{"name": "slow", "when": {"symptom": "ProbeFailing", "probe": "latency"},
                       "severity": "P1", "type": "PerformanceDegradation",
                       "actions": [{"action": "scale", "scale": {"replicas": 6, "maxReplicas": 10}}],
                       "verify": {"timeout": "1m", "holdDown": "2s"}}],
            "detection": {"holdDown": "2s"}
        }),
    )
    .await;
    // No data yet: inconclusive, never an incident.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    assert!(
        incidents
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    latency.store(2500, Ordering::SeqCst);
    let name = "api-probe-latency";
    let opened = incident_where(&client, &ns, name, "the latency incident", |_| true).await;
    let description = opened.spec.description.unwrap_or_default();
    assert!(description.contains("= 2.5 (not below 1)"), "{description}");
    latency.store(200, Ordering::SeqCst);
    resolved(&incidents, name, Duration::from_secs(90)).await;
}
