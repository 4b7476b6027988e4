//! Communication end to end: a declared P0 is announced on Slack, pages
//! the primary on call through PagerDuty, escalates to the secondary when
//! nobody acknowledges, and the acknowledgement and the resolution reach
//! every channel once. Slack and PagerDuty have no server to be had here:
//! a loopback receiver in this test checks each request against the
//! provider's documented schema and answers as the provider would
//! (including a 429 with Retry-After, which must be retried, not lost).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use healing_guard_operator::crd::{DeliveryState, Incident, NotifyEvent};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{
    Operator, apply, client, eventually, eventually_within, incident_where, namespace, phase_of,
    ready_of,
};

/// What reached people: (provider, the body).
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

#[derive(Clone, Default)]
struct Receiver {
    seen: Seen,
    /// Every request, by provider, whether or not it reached anyone.
    requests: Arc<Mutex<Vec<String>>>,
    /// Slack answers its first request with 429: it must come again.
    slack_busy_once: Arc<Mutex<bool>>,
    /// PagerDuty's alerts: (routing key, dedup key) to the last action.
    alerts: Arc<Mutex<std::collections::BTreeMap<(String, String), String>>>,
    /// Statuspage's incidents, as its API shows them.
    page_incidents: Arc<Mutex<Vec<Value>>>,
    /// Every webhook request, answered or not.
    webhook_calls: Arc<Mutex<Vec<WebhookCall>>>,
    /// The webhook answers its first request with 503: it must come again.
    webhook_busy_once: Arc<Mutex<bool>>,
    /// When each request to the endpoint that never answers in time began.
    hung: Arc<Mutex<Vec<std::time::Instant>>>,
    /// When each Slack message reached people.
    slack_at: Arc<Mutex<Vec<std::time::Instant>>>,
}

/// One request to the generic webhook, and how it was answered.
#[derive(Clone, Debug)]
struct WebhookCall {
    idempotency_key: Option<String>,
    authorization: Option<String>,
    body: Value,
    at: std::time::Instant,
    answered: StatusCode,
}

impl Receiver {
    fn requested(&self, provider: &str) {
        self.requests.lock().unwrap().push(provider.to_owned());
    }

    fn requests(&self, provider: &str) -> usize {
        let requests = self.requests.lock().unwrap();
        requests.iter().filter(|p| *p == provider).count()
    }
}

/// Slack incoming webhooks: `text`, and `blocks` of at most 50, each
/// section's text at most 3,000 characters, a header's at most 150.
fn slack_problem(body: &Value) -> Option<String> {
    let text = body["text"].as_str()?;
    if text.is_empty() {
        return Some("no_text".into());
    }
    let blocks = body["blocks"].as_array()?;
    if blocks.len() > 50 {
        return Some("invalid_blocks: more than 50".into());
    }
    for block in blocks {
        let limit = match block["type"].as_str() {
            Some("header") => 150,
            Some("section") => 3000,
            other => return Some(format!("invalid_blocks: type {other:?}")),
        };
        let text = block["text"]["text"].as_str().unwrap_or_default();
        if text.chars().count() > limit || text.is_empty() {
            return Some(format!(
                "invalid_blocks: text of {} characters",
                text.chars().count()
            ));
        }
    }
    None
}

/// PagerDuty Events API v2: routing_key, event_action, dedup_key; a
/// trigger's payload has summary (at most 1,024), source and severity.
fn pagerduty_problem(body: &Value) -> Option<String> {
    if body["routing_key"].as_str().is_none_or(str::is_empty) {
        return Some("routing_key is required".into());
    }
    let action = body["event_action"].as_str().unwrap_or_default();
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        return Some(format!("event_action {action:?} is invalid"));
    }
    if body["dedup_key"].as_str().is_none_or(str::is_empty) {
        return Some("dedup_key is required to acknowledge or resolve".into());
    }
    if action == "trigger" {
        let payload = &body["payload"];
        let summary = payload["summary"].as_str().unwrap_or_default();
        if summary.is_empty() || summary.chars().count() > 1024 {
            return Some("payload.summary is required, at most 1024".into());
        }
        if payload["source"].as_str().is_none_or(str::is_empty) {
            return Some("payload.source is required".into());
        }
        let severity = payload["severity"].as_str().unwrap_or_default();
        if !["critical", "error", "warning", "info"].contains(&severity) {
            return Some(format!("payload.severity {severity:?} is invalid"));
        }
    }
    None
}

async fn slack(
    State(receiver): State<Receiver>,
    body: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            [("retry-after", "0")],
            "invalid_payload".into(),
        );
    };
    if let Some(problem) = slack_problem(&body) {
        return (StatusCode::BAD_REQUEST, [("retry-after", "0")], problem);
    }
    receiver.requested("slack");
    {
        let mut busy = receiver.slack_busy_once.lock().unwrap();
        if *busy {
            *busy = false;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "rate_limited".into(),
            );
        }
    }
    receiver.seen.lock().unwrap().push(("slack".into(), body));
    receiver
        .slack_at
        .lock()
        .unwrap()
        .push(std::time::Instant::now());
    (StatusCode::OK, [("retry-after", "0")], "ok".into())
}

async fn pagerduty(State(receiver): State<Receiver>, body: String) -> (StatusCode, String) {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"status":"invalid event"}"#.into(),
        );
    };
    if let Some(problem) = pagerduty_problem(&body) {
        return (
            StatusCode::BAD_REQUEST,
            json!({"status": "invalid event", "errors": [problem]}).to_string(),
        );
    }
    receiver.requested("pagerduty");
    // As PagerDuty does: events fold into one alert per routing key and
    // dedup key; only a change of its state reaches anyone (a trigger on
    // an open alert, or a second acknowledge, is added to its log only).
    let key = body["dedup_key"].clone();
    let alert = (
        body["routing_key"].as_str().unwrap_or_default().to_owned(),
        key.as_str().unwrap_or_default().to_owned(),
    );
    let action = body["event_action"].as_str().unwrap_or_default().to_owned();
    let changed = {
        let mut alerts = receiver.alerts.lock().unwrap();
        let before = alerts.get(&alert).cloned();
        let changes = matches!(
            (before.as_deref(), action.as_str()),
            (None | Some("resolve"), "trigger")
                | (Some("trigger"), "acknowledge" | "resolve")
                | (Some("acknowledge"), "resolve")
        );
        if changes {
            alerts.insert(alert, action);
        }
        changes
    };
    if changed {
        receiver
            .seen
            .lock()
            .unwrap()
            .push(("pagerduty".into(), body));
    }
    (
        StatusCode::ACCEPTED,
        json!({"status": "success", "message": "Event processed", "dedup_key": key}).to_string(),
    )
}

/// Statuspage v1: `Authorization: OAuth KEY`; an incident with a name and
/// one of the documented statuses; updates go to the incident created.
fn statuspage_problem(headers: &axum::http::HeaderMap, body: &Value) -> Option<String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != "OAuth page-key" {
        return Some("unauthorized".into());
    }
    let incident = &body["incident"];
    if incident["name"].as_str().is_none_or(str::is_empty) {
        return Some("incident.name can't be blank".into());
    }
    let status = incident["status"].as_str().unwrap_or_default();
    if !["investigating", "identified", "monitoring", "resolved"].contains(&status) {
        return Some(format!("incident.status {status:?} is not valid"));
    }
    None
}

async fn statuspage(
    State(receiver): State<Receiver>,
    Path(params): Path<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid json".into());
    };
    if let Some(problem) = statuspage_problem(&headers, &body) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": problem}).to_string(),
        );
    }
    receiver.requested("statuspage");
    let id = params
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.clone());
    let incident = &body["incident"];
    let update = json!({"status": incident["status"], "body": incident["body"],
                        "created_at": k8s_openapi::jiff::Timestamp::now().to_string()});
    let mut incidents = receiver.page_incidents.lock().unwrap();
    let (kind, answer) = match id {
        None => {
            let created = json!({
                "id": format!("inc-{}", incidents.len() + 1),
                "name": incident["name"], "status": incident["status"],
                "metadata": incident["metadata"], "incident_updates": [update],
            });
            incidents.push(created.clone());
            ("statuspage-create", created)
        }
        Some(id) => {
            let Some(known) = incidents.iter_mut().find(|i| i["id"] == id.as_str()) else {
                return (
                    StatusCode::NOT_FOUND,
                    json!({"error": "not found"}).to_string(),
                );
            };
            known["status"] = incident["status"].clone();
            known["incident_updates"]
                .as_array_mut()
                .unwrap()
                .insert(0, update);
            ("statuspage-update", known.clone())
        }
    };
    receiver
        .seen
        .lock()
        .unwrap()
        .push((kind.into(), body["incident"].clone()));
    (StatusCode::OK, answer.to_string())
}

/// Statuspage v1: `GET .../incidents/unresolved` and `GET .../incidents/{id}`.
async fn statuspage_read(
    State(receiver): State<Receiver>,
    Path(params): Path<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, String) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("OAuth page-key") {
        return (
            StatusCode::UNAUTHORIZED,
            json!({"error": "unauthorized"}).to_string(),
        );
    }
    receiver.requested("statuspage-read");
    let incidents = receiver.page_incidents.lock().unwrap();
    match params.iter().find(|(k, _)| k == "id").map(|(_, v)| v) {
        Some(id) => match incidents.iter().find(|i| i["id"] == id.as_str()) {
            Some(found) => (StatusCode::OK, found.to_string()),
            None => (
                StatusCode::NOT_FOUND,
                json!({"error": "not found"}).to_string(),
            ),
        },
        None => {
            let open: Vec<&Value> = incidents
                .iter()
                .filter(|i| i["status"] != "resolved")
                .collect();
            (StatusCode::OK, json!(open).to_string())
        }
    }
}

/// A generic JSON webhook: records each request with its headers; answers
/// 503 (no Retry-After) the first time if told to, 200 otherwise.
async fn webhook(
    State(receiver): State<Receiver>,
    headers: axum::http::HeaderMap,
    body: String,
) -> StatusCode {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let answered = {
        let mut busy = receiver.webhook_busy_once.lock().unwrap();
        if std::mem::take(&mut *busy) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    };
    receiver.webhook_calls.lock().unwrap().push(WebhookCall {
        idempotency_key: header("idempotency-key"),
        authorization: header("authorization"),
        body,
        at: std::time::Instant::now(),
        answered,
    });
    answered
}

async fn start_receiver(slack_busy_once: bool) -> (SocketAddr, Receiver) {
    let receiver = Receiver {
        slack_busy_once: Arc::new(Mutex::new(slack_busy_once)),
        webhook_busy_once: Arc::new(Mutex::new(true)),
        ..Receiver::default()
    };
    let app = Router::new()
        .route("/slack", post(slack))
        .route("/webhook", post(webhook))
        .route(
            "/hang",
            post(|State(receiver): State<Receiver>| async move {
                receiver
                    .hung
                    .lock()
                    .unwrap()
                    .push(std::time::Instant::now());
                tokio::time::sleep(Duration::from_secs(60)).await;
                StatusCode::OK
            }),
        )
        .route(
            "/pagerduty/{person}",
            post(
                |Path(_person): Path<String>, state: State<Receiver>, body: String| {
                    pagerduty(state, body)
                },
            ),
        )
        .route("/statuspage/v1/pages/{page}/incidents", post(statuspage))
        .route(
            "/statuspage/v1/pages/{page}/incidents/unresolved",
            get(statuspage_read),
        )
        .route(
            "/statuspage/v1/pages/{page}/incidents/{id}",
            axum::routing::patch(statuspage).get(statuspage_read),
        )
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, receiver)
}

/// The header of each Slack message that reached people, in order.
fn slack_headers(receiver: &Receiver) -> Vec<String> {
    seen(receiver, "slack")
        .iter()
        .map(|m| m["blocks"][0]["text"]["text"].as_str().unwrap().to_owned())
        .collect()
}

/// (routing key, action) of each PagerDuty event that changed an alert.
fn pagerduty_actions(receiver: &Receiver) -> Vec<(String, String)> {
    seen(receiver, "pagerduty")
        .iter()
        .map(|p| {
            (
                p["routing_key"].as_str().unwrap().to_owned(),
                p["event_action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn seen(receiver: &Receiver, provider: &str) -> Vec<Value> {
    receiver
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == provider)
        .map(|(_, body)| body.clone())
        .collect()
}

/// The runbook's on-call wiring, pointed at the receiver: Slack, a
/// PagerDuty service per person, a status page (told of `page_events`),
/// and an escalation policy paging john, then jane after a minute.
async fn wire(client: &Client, ns: &str, address: SocketAddr, page_events: &str) {
    let secret = |name: &str, data: Value| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap()
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for (name, data) in [
        ("slack", json!({"url": format!("http://{address}/slack")})),
        (
            "pagerduty-john",
            json!({"routingKey": "john-key", "url": format!("http://{address}/pagerduty/john")}),
        ),
        (
            "pagerduty-jane",
            json!({"routingKey": "jane-key", "url": format!("http://{address}/pagerduty/jane")}),
        ),
        (
            "statuspage",
            json!({"apiKey": "page-key", "pageId": "pg1", "url": format!("http://{address}/statuspage")}),
        ),
    ] {
        secrets
            .create(&PostParams::default(), &secret(name, data))
            .await
            .unwrap();
    }
    let channels = r#"
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: slack}
spec: {kind: Slack, secretRef: {name: slack}, updates: {}}
---
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: pager-john}
spec: {kind: PagerDuty, secretRef: {name: pagerduty-john}, events: [Acknowledged, Resolved]}
---
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: pager-jane}
spec: {kind: PagerDuty, secretRef: {name: pagerduty-jane}, events: [Acknowledged, Resolved]}
---
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: status-page}
spec: {kind: StatusPage, secretRef: {name: statuspage}, events: PAGE_EVENTS, updates: {}, statusPage: {componentId: api}}
---
apiVersion: healing-guard.io/v1alpha1
kind: EscalationPolicy
metadata: {name: oncall}
spec:
  people:
  - {name: john, channel: pager-john}
  - {name: jane, channel: pager-jane}
  roles:
  - {name: primary, rotation: [john]}
  - {name: secondary, rotation: [jane]}
  steps:
  - {role: primary, wait: 1m}
  - {role: secondary}
"#
    .replace("PAGE_EVENTS", page_events);
    apply(client, ns, &channels).await;
}

/// An on-call engineer declares a P0 on the wiring; its uid.
async fn declare(client: &Client, ns: &str) -> String {
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "outage"},
        "spec": {"title": "healing-guard API is down", "severity": "P0", "type": "ServiceOutage",
                 "target": {"kind": "Deployment", "name": "api"},
                 "description": "every request answers 503",
                 "communication": {"channels": ["slack", "status-page"], "escalationPolicy": "oncall"}}
    }))
    .unwrap();
    let incidents: Api<Incident> = Api::namespaced(client.clone(), ns);
    let created = incidents
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();
    created.metadata.uid.unwrap()
}

#[tokio::test]
async fn a_declared_p0_is_announced_paged_escalated_acknowledged_and_resolved_once() {
    let client = client().await;
    let ns = namespace(&client, "comms").await;
    let operator = Operator::start(&ns).await;
    let (address, receiver) = start_receiver(true).await;

    wire(&client, &ns, address, "[Opened, Resolved]").await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let uid = declare(&client, &ns).await;

    // Announced (after Slack's one 429) and the primary paged.
    let limit = Duration::from_secs(60);
    eventually_within("the announcement and the first page", limit, || {
        let done = seen(&receiver, "slack").len() == 1 && seen(&receiver, "pagerduty").len() == 1;
        async move { done.then_some(()) }
    })
    .await;
    let announced = &seen(&receiver, "slack")[0];
    assert_eq!(
        announced["blocks"][0]["text"]["text"],
        "🚨 INCIDENT ALERT - P0"
    );
    let page = &seen(&receiver, "pagerduty")[0];
    assert_eq!(
        (
            page["routing_key"].as_str(),
            page["event_action"].as_str(),
            page["dedup_key"].as_str()
        ),
        (Some("john-key"), Some("trigger"), Some(uid.as_str()))
    );

    // Nobody acknowledges within the primary's minute: the secondary is paged.
    eventually_within("the secondary paged", Duration::from_secs(120), || {
        let pages = seen(&receiver, "pagerduty");
        async move {
            pages
                .iter()
                .any(|p| p["routing_key"] == "jane-key" && p["event_action"] == "trigger")
                .then_some(())
        }
    })
    .await;

    // Jane acknowledges: paging stops, and everyone hears it once.
    let ack = json!({"spec": {"acknowledged": {"by": "jane"}}});
    incidents
        .patch("outage", &PatchParams::default(), &Patch::Merge(&ack))
        .await
        .unwrap();
    eventually_within("the acknowledgement told", limit, || {
        let acks = seen(&receiver, "pagerduty")
            .iter()
            .filter(|p| p["event_action"] == "acknowledge")
            .count();
        let slack = seen(&receiver, "slack").len();
        async move { (acks == 2 && slack == 2).then_some(()) }
    })
    .await;

    // Resolved by hand: the last message, and the alerts resolved.
    let resolve = json!({"spec": {"resolution": {"by": "jane", "rootCause": "a bad release",
        "summary": "rolled back by hand", "followUps": ["a smoke test in CI"]}}});
    incidents
        .patch("outage", &PatchParams::default(), &Patch::Merge(&resolve))
        .await
        .unwrap();
    let finished = incident_where(&client, &ns, "outage", "every message sent", |i| {
        phase_of(i).is_some_and(|p| p.is_closed())
            && i.status
                .as_ref()
                .and_then(|s| s.communication.as_ref())
                .is_some_and(|c| {
                    c.outbox.iter().all(|d| d.state == DeliveryState::Sent)
                        && c.outbox
                            .iter()
                            .any(|d| d.event == NotifyEvent::Resolved && d.channel == "slack")
                })
    })
    .await;
    let slack_texts = slack_headers(&receiver);
    assert_eq!(
        slack_texts,
        [
            "🚨 INCIDENT ALERT - P0",
            "📊 INCIDENT UPDATE - P0",
            "✅ INCIDENT RESOLVED - P0"
        ],
        "each moment once, in order"
    );
    let actions = pagerduty_actions(&receiver);
    let count = |key: &str, action: &str| {
        actions
            .iter()
            .filter(|(k, a)| k == key && a == action)
            .count()
    };
    for key in ["john-key", "jane-key"] {
        assert_eq!(
            (
                count(key, "trigger"),
                count(key, "acknowledge"),
                count(key, "resolve")
            ),
            (1, 1, 1),
            "{key}: {actions:?}"
        );
    }
    // The resolution points to the post-incident report, kept with the incident.
    let resolved = &seen(&receiver, "slack")[2];
    assert!(
        resolved["text"]
            .as_str()
            .unwrap()
            .contains("Post-Mortem: ConfigMap outage-report"),
        "{resolved}"
    );
    let report = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns)
        .get("outage-report")
        .await
        .unwrap();
    assert_eq!(report.metadata.owner_references.unwrap()[0].uid, uid);
    let text = &report.data.unwrap()["report.md"];
    for part in [
        "# Post-incident report: healing-guard API is down",
        "## Timeline (UTC)",
        "## Root cause\n\na bad release",
        "## Follow-ups\n\n- a smoke test in CI",
        "paged jane (secondary)",
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
    // The status page: opened as investigating with the component down,
    // then the same incident resolved and the component operational.
    let opened_page = seen(&receiver, "statuspage-create");
    let updated_page = seen(&receiver, "statuspage-update");
    assert_eq!(opened_page.len(), 1, "{opened_page:?}");
    assert_eq!(opened_page[0]["status"], "investigating");
    assert_eq!(opened_page[0]["components"]["api"], "major_outage");
    assert_eq!(updated_page.len(), 1, "{updated_page:?}");
    assert_eq!(updated_page[0]["status"], "resolved");
    assert_eq!(updated_page[0]["components"]["api"], "operational");
    let communication = finished.status.unwrap().communication.unwrap();
    let escalation = communication.escalation.unwrap();
    assert_eq!(escalation.stopped.as_deref(), Some("acknowledged by jane"));
    let people: Vec<&str> = escalation
        .notified
        .iter()
        .map(|p| p.person.as_str())
        .collect();
    assert_eq!(people, ["john", "jane"]);
    let opened = communication
        .outbox
        .iter()
        .find(|d| d.channel == "slack" && d.key == "Opened")
        .unwrap();
    assert_eq!(opened.attempts, 2, "Slack's 429 was retried: {opened:?}");

    // What a dashboard shows of it.
    let metrics = operator.metrics().await;
    for line in [
        r#"healing_guard_escalation_pages_total{step="0",role="primary"} 1"#,
        r#"healing_guard_escalation_pages_total{step="1",role="secondary"} 1"#,
        r#"healing_guard_notifications_total{kind="Slack",event="Opened",result="retry"} 1"#,
        r#"healing_guard_notifications_total{kind="Slack",event="Opened",result="sent"} 1"#,
        r#"healing_guard_notifications_total{kind="PagerDuty",event="Paged",result="sent"} 2"#,
        r#"healing_guard_notification_delivery_seconds_count{kind="StatusPage"} 2"#,
        r#"healing_guard_time_to_acknowledge_seconds_count{severity="P0"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
}

/// Where the outbox of `incident` stands: (channel, key, state) of each message.
fn outbox_of(incident: &Incident) -> Vec<(String, String, DeliveryState, bool)> {
    incident
        .status
        .as_ref()
        .and_then(|s| s.communication.as_ref())
        .map(|c| {
            c.outbox
                .iter()
                .map(|d| {
                    (
                        d.channel.clone(),
                        d.key.clone(),
                        d.state,
                        d.sending_since.is_some(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The same P0, with the operator killed twice in the narrowest window
/// there is: a message sent, how it went not yet written. Nobody hears
/// anything twice: PagerDuty gets the events again and folds them by
/// dedup key; the status page is looked up before it is written again and
/// hears each status once (a late acknowledgement does not say
/// `resolved`); Slack, which cannot recognise a repeat, is not sent again
/// (the message is marked Unconfirmed and an Event says so). A message
/// still waiting for its turn when the operator dies was never marked, and
/// is sent once by the next.
#[tokio::test]
async fn a_kill_between_sending_and_recording_repeats_nothing_and_the_status_page_hears_each_status_once()
 {
    use crate::support::Launch;
    let client = client().await;
    let ns = namespace(&client, "comms-kill").await;
    let (address, receiver) = start_receiver(false).await;
    wire(&client, &ns, address, "[Opened, Acknowledged, Resolved]").await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let aborting = Launch {
        failpoints: "after-send",
        ..Launch::namespaced(&ns)
    };
    // Whether `channel`'s message `key` was left marked as being sent.
    let marked = |outbox: &[(String, String, DeliveryState, bool)], channel: &str, key: &str| {
        outbox.iter().any(|(c, k, state, sending)| {
            c == channel && k == key && *state == DeliveryState::Pending && *sending
        })
    };
    // Requests a dead operator sent may still be in the receiver's hands.
    let settle_down = || tokio::time::sleep(Duration::from_millis(300));

    let mut first = Operator::launch(&aborting).await.unwrap();
    let uid = declare(&client, &ns).await;
    eventually("the first operator to abort after sending", || {
        let exited = first.exited();
        async move { exited }
    })
    .await;
    settle_down().await;
    // Each channel is sent to in its own task; the first to finish
    // sending aborts, so the others may or may not have sent by then. A
    // message is marked just before it is sent: what reached its receiver
    // is marked, and what is not marked reached nobody.
    let reached = ["slack", "pagerduty", "statuspage-create"].map(|p| seen(&receiver, p).len());
    let pagerduty_in_life_one = receiver.requests("pagerduty");
    let after_first = outbox_of(&incidents.get("outage").await.unwrap());
    assert_eq!(after_first.len(), 3, "{after_first:?}");
    assert!(
        after_first
            .iter()
            .all(|(_, _, state, _)| *state == DeliveryState::Pending),
        "{after_first:?}"
    );
    let first_marks = [
        marked(&after_first, "slack", "Opened"),
        after_first
            .iter()
            .any(|(c, _, _, sending)| c == "pager-john" && *sending),
        marked(&after_first, "status-page", "Opened"),
    ];
    assert!(
        reached.contains(&1),
        "one send ended the first operator: {reached:?}"
    );
    for (n, was_marked) in first_marks.iter().enumerate() {
        assert!(reached[n] <= 1, "{reached:?}");
        assert!(
            *was_marked || reached[n] == 0,
            "reached its receiver but not marked as being sent: {reached:?} {after_first:?}"
        );
    }
    assert_eq!(
        pagerduty_in_life_one, reached[1],
        "a trigger on a new alert changes it"
    );

    // The second operator settles what was in doubt, sends what was never
    // marked, and pages jane when nobody acknowledges.
    let second = Operator::start(&ns).await;
    incident_where(
        &client,
        &ns,
        "outage",
        "jane's page recorded as sent",
        |i| {
            outbox_of(i).iter().any(|(channel, _, state, _)| {
                channel == "pager-jane" && *state == DeliveryState::Sent
            })
        },
    )
    .await;
    let settled = outbox_of(&incidents.get("outage").await.unwrap());
    let state_of = |outbox: &[(String, String, DeliveryState, bool)], channel: &str, key: &str| {
        outbox
            .iter()
            .find(|(c, k, _, _)| c == channel && k == key)
            .map(|(_, _, state, _)| *state)
    };
    let slack_opening_in_doubt = first_marks[0];
    assert_eq!(
        state_of(&settled, "slack", "Opened"),
        Some(if slack_opening_in_doubt {
            DeliveryState::Unconfirmed
        } else {
            DeliveryState::Sent
        })
    );
    assert_eq!(
        state_of(&settled, "status-page", "Opened"),
        Some(DeliveryState::Sent)
    );
    assert_eq!(
        seen(&receiver, "statuspage-create").len(),
        1,
        "created once"
    );
    assert_eq!(
        receiver.requests("statuspage-read"),
        usize::from(first_marks[2]),
        "the page was looked up exactly when its opening was in doubt"
    );
    second.kill();

    // Killed again right after the acknowledgement's first send.
    let before_ack = (
        seen(&receiver, "slack").len(),
        receiver.requests("pagerduty"),
    );
    let mut third = Operator::launch(&aborting).await.unwrap();
    let ack = json!({"spec": {"acknowledged": {"by": "jane"}}});
    incidents
        .patch("outage", &PatchParams::default(), &Patch::Merge(&ack))
        .await
        .unwrap();
    eventually("the third operator to abort after sending", || {
        let exited = third.exited();
        async move { exited }
    })
    .await;
    settle_down().await;
    let slack_heard_the_acknowledgement = seen(&receiver, "slack").len() == before_ack.0 + 1;
    let pagerduty_in_life_three = receiver.requests("pagerduty") - before_ack.1;
    let after_third = outbox_of(&incidents.get("outage").await.unwrap());
    let slack_ack_in_doubt = marked(&after_third, "slack", "Acknowledged");
    assert!(slack_ack_in_doubt || !slack_heard_the_acknowledgement);

    let _fourth = Operator::start(&ns).await;
    let resolve = json!({"spec": {"resolution": {"by": "jane", "rootCause": "a bad release", "summary": "rolled back by hand"}}});
    incidents
        .patch("outage", &PatchParams::default(), &Patch::Merge(&resolve))
        .await
        .unwrap();
    let finished = incident_where(&client, &ns, "outage", "every message settled", |i| {
        let outbox = outbox_of(i);
        phase_of(i).is_some_and(|p| p.is_closed())
            && outbox
                .iter()
                .any(|(c, k, _, _)| c == "slack" && k.starts_with("Resolved"))
            && outbox
                .iter()
                .all(|(_, _, state, _)| *state != DeliveryState::Pending)
    })
    .await;

    // Slack's messages in doubt were not sent again: each arrived once if
    // its send got through before the abort, and not at all otherwise; a
    // message never marked was sent once.
    let slack_texts = slack_headers(&receiver);
    let expected: Vec<&str> = [
        (
            !slack_opening_in_doubt || reached[0] == 1,
            "🚨 INCIDENT ALERT - P0",
        ),
        (
            !slack_ack_in_doubt || slack_heard_the_acknowledgement,
            "📊 INCIDENT UPDATE - P0",
        ),
        (true, "✅ INCIDENT RESOLVED - P0"),
    ]
    .into_iter()
    .filter_map(|(arrived, header)| arrived.then_some(header))
    .collect();
    assert_eq!(slack_texts, expected, "each at most once, none twice");
    let pages = pagerduty_actions(&receiver);
    for key in ["john-key", "jane-key"] {
        let times = |action: &str| {
            pages
                .iter()
                .filter(|(k, a)| k == key && a == action)
                .count()
        };
        assert_eq!(times("trigger"), 1, "{key} trigger: {pages:?}");
        assert_eq!(times("resolve"), 1, "{key} resolve: {pages:?}");
        // An acknowledgement the kill left in doubt is sent again as the
        // alert stands then: once the incident is resolved, as its resolve.
        assert!(times("acknowledge") <= 1, "{key} acknowledge: {pages:?}");
    }
    // Every PagerDuty message was sent once, and those a kill left in
    // doubt after they got through once more, folded by dedup key.
    let pagerduty_messages = outbox_of(&finished)
        .iter()
        .filter(|(channel, _, _, _)| channel.starts_with("pager-"))
        .count();
    assert_eq!(
        receiver.requests("pagerduty"),
        pagerduty_messages + pagerduty_in_life_one + pagerduty_in_life_three,
        "{pages:?}"
    );
    // The page heard each status once: the acknowledgement's update
    // (sent once, or found after the kill, in the status it had then),
    // then the resolution.
    let page_updates: Vec<String> = seen(&receiver, "statuspage-update")
        .iter()
        .map(|u| u["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(page_updates, ["investigating", "resolved"]);
    assert_eq!(seen(&receiver, "statuspage-create").len(), 1);
    let outbox = outbox_of(&finished);
    assert_eq!(
        state_of(&outbox, "slack", "Acknowledged"),
        Some(if slack_ack_in_doubt {
            DeliveryState::Unconfirmed
        } else {
            DeliveryState::Sent
        })
    );
    assert_eq!(
        state_of(&outbox, "status-page", "Acknowledged"),
        Some(DeliveryState::Sent)
    );
    assert!(
        outbox.iter().all(|(channel, _, state, sending)| !sending
            && (*state == DeliveryState::Sent
                || (channel == "slack" && *state == DeliveryState::Unconfirmed))),
        "{outbox:?}"
    );
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
        .list(&kube::api::ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await
        .unwrap();
    let unconfirmed = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("MessageUnconfirmed"))
        .count();
    assert_eq!(
        unconfirmed,
        usize::from(slack_opening_in_doubt) + usize::from(slack_ack_in_doubt),
        "an Event for each message that may be missing"
    );
}

/// A real SMTP server (aiosmtpd, installed by `cluster/build.sh`) on a free
/// loopback port, storing what it receives in a maildir; stopped on drop.
struct SmtpServer {
    child: std::process::Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    async fn start() -> SmtpServer {
        let binary =
            std::env::var("HGO_AIOSMTPD").expect("HGO_AIOSMTPD: run this with `make test`");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(binary)
            .args([
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir.path().join("mail"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = SmtpServer {
            child,
            port,
            maildir,
        };
        eventually_within(
            "the SMTP server to listen",
            Duration::from_secs(20),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        server
    }

    /// The messages received so far, as text.
    fn received(&self) -> Vec<String> {
        let new = self.maildir.path().join("mail/new");
        let mut messages: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(new)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let modified = e.metadata().ok()?.modified().ok()?;
                        Some((modified, std::fs::read_to_string(e.path()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        messages.sort();
        messages.into_iter().map(|(_, text)| text).collect()
    }
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server_once_per_moment() {
    let client = client().await;
    let ns = namespace(&client, "comms-mail").await;
    let _operator = Operator::start(&ns).await;
    let smtp = SmtpServer::start().await;
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "smtp"},
        "stringData": {"host": "127.0.0.1", "port": smtp.port.to_string(), "tls": "none"}}))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    apply(
        &client,
        &ns,
        r#"
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: email-oncall}
spec:
  kind: Email
  secretRef: {name: smtp}
  events: [Opened, Resolved]
  updates: {}
  email: {from: healing-guard@example.com, to: [oncall@example.com]}
"#,
    )
    .await;
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "webhooks-failing"},
        "spec": {"title": "webhook processing fails", "severity": "P1", "type": "IntegrationFailure",
                 "target": {"kind": "Deployment", "name": "webhook-worker"},
                 "communication": {"channels": ["email-oncall"]}}
    }))
    .unwrap();
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    incidents
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();
    eventually_within("the opening email", Duration::from_secs(60), || {
        let count = smtp.received().len();
        async move { (count == 1).then_some(()) }
    })
    .await;
    let resolve = json!({"spec": {"resolution": {"by": "jane", "rootCause": "the worker pool was exhausted",
        "summary": "scaled webhook-worker to 5"}}});
    incidents
        .patch(
            "webhooks-failing",
            &PatchParams::default(),
            &Patch::Merge(&resolve),
        )
        .await
        .unwrap();
    eventually_within("the resolution email", Duration::from_secs(60), || {
        let count = smtp.received().len();
        async move { (count == 2).then_some(()) }
    })
    .await;
    let mails = smtp.received();
    assert!(mails[0].contains("To: oncall@example.com"), "{}", mails[0]);
    assert!(
        mails[0].contains("Title: webhook processing fails"),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("@healing-guard.io>"),
        "a stable Message-ID: {}",
        mails[0]
    );
    assert!(
        mails[1].contains("Root Cause: the worker pool was exhausted"),
        "{}",
        mails[1]
    );
    // And no more: each moment once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.received().len(), 2);
}

/// A channel whose Secret lacks a key, or whose template does not render,
/// says so before any incident needs it; an escalation policy naming a
/// channel that does not exist says so, and is Ready once it exists.
#[tokio::test]
async fn channels_and_escalation_policies_say_whether_they_can_work() {
    let client = client().await;
    let ns = namespace(&client, "comms-ready").await;
    let _operator = Operator::start(&ns).await;
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "statuspage"}, "stringData": {"apiKey": "k"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    apply(
        &client,
        &ns,
        r#"
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: status-page}
spec: {kind: StatusPage, secretRef: {name: statuspage}, templates: {update: "{{ no_such_field }}"}}
---
apiVersion: healing-guard.io/v1alpha1
kind: EscalationPolicy
metadata: {name: oncall}
spec:
  people: [{name: john, channel: pager-john}]
  roles: [{name: primary, rotation: [john]}]
  steps: [{role: primary}]
"#,
    )
    .await;
    let not_ready = eventually("the channel's Ready condition", || {
        let client = client.clone();
        let ns = ns.clone();
        async move { ready_of(&client, &ns, "notificationchannels", "status-page").await }
    })
    .await;
    assert_eq!(not_ready.0, "False");
    assert!(
        not_ready
            .1
            .contains("Secret statuspage has no key pageId (a StatusPage channel needs it)")
            && not_ready.1.contains("template update"),
        "{not_ready:?}"
    );
    let unreachable = eventually("the escalation policy's Ready condition", || {
        let client = client.clone();
        let ns = ns.clone();
        async move { ready_of(&client, &ns, "escalationpolicies", "oncall").await }
    })
    .await;
    assert_eq!(
        unreachable,
        (
            "False".to_owned(),
            "people: john's channel pager-john does not exist".to_owned()
        )
    );

    // Fixed in Git and applied: the channel becomes Ready; the person's
    // channel appearing makes the escalation policy Ready.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let fixed: Secret = serde_json::from_value(
        json!({"metadata": {"name": "statuspage-v2"}, "stringData": {"apiKey": "k", "pageId": "p"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &fixed)
        .await
        .unwrap();
    let channels = kube::api::ApiResource {
        group: "healing-guard.io".into(),
        version: "v1alpha1".into(),
        api_version: "healing-guard.io/v1alpha1".into(),
        kind: "NotificationChannel".into(),
        plural: "notificationchannels".into(),
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &channels);
    let patch = json!({"spec": {"secretRef": {"name": "statuspage-v2"}, "templates": {"update": "{{ status }}"}}});
    api.patch(
        "status-page",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    apply(
        &client,
        &ns,
        "apiVersion: healing-guard.io/v1alpha1\nkind: NotificationChannel\nmetadata: {name: pager-john}\nspec: {kind: PagerDuty, secretRef: {name: statuspage-v2}}\n",
    )
    .await;
    for (plural, name) in [
        ("notificationchannels", "status-page"),
        ("escalationpolicies", "oncall"),
    ] {
        eventually_within(
            &format!("{plural}/{name} Ready"),
            Duration::from_secs(30),
            || {
                let client = client.clone();
                let ns = ns.clone();
                async move {
                    ready_of(&client, &ns, plural, name)
                        .await
                        .filter(|(status, _)| status == "True")
                }
            },
        )
        .await;
    }
    let (status, message) = eventually("pager-john's Ready condition", || {
        let client = client.clone();
        let ns = ns.clone();
        async move { ready_of(&client, &ns, "notificationchannels", "pager-john").await }
    })
    .await;
    assert_eq!(
        (status.as_str(), message.as_str()),
        (
            "False",
            "Secret statuspage-v2 has no key routingKey (a PagerDuty channel needs it)"
        )
    );
}

/// A detected P0 remediated by rollback: the status page walks
/// investigating (opened), identified (the rollback applied), monitoring
/// (mitigated, verifying) and resolved, each once, on one page incident.
#[tokio::test]
async fn a_remediated_p0_walks_the_status_page_from_investigating_to_resolved() {
    use crate::remediation::{bad_release, crash_policy, setup_spec};
    let mut spec = crash_policy("Auto", json!([{"action": "rollback"}]), "2m");
    spec["communication"] = json!({"channels": ["status-page"]});
    let (client, ns, _operator) = setup_spec("comms-walk", spec).await;
    let (address, receiver) = start_receiver(false).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "statuspage"},
        "stringData": {"apiKey": "page-key", "pageId": "pg1", "url": format!("http://{address}/statuspage")}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    apply(
        &client,
        &ns,
        "apiVersion: healing-guard.io/v1alpha1\nkind: NotificationChannel\nmetadata: {name: status-page}\nspec: {kind: StatusPage, secretRef: {name: statuspage}, events: [Opened, StepApplied, Mitigated, Resolved], statusPage: {componentId: api}}\n",
    )
    .await;
    bad_release(&client, &ns).await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    eventually_within("the page resolved", Duration::from_secs(120), || {
        let done = seen(&receiver, "statuspage-update")
            .iter()
            .any(|u| u["status"] == "resolved");
        async move { done.then_some(()) }
    })
    .await;
    let created = seen(&receiver, "statuspage-create");
    assert_eq!(created.len(), 1, "{created:?}");
    let walk: Vec<(String, String)> = created
        .iter()
        .chain(seen(&receiver, "statuspage-update").iter())
        .map(|i| {
            (
                i["status"].as_str().unwrap().to_owned(),
                i["components"]["api"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("investigating", "major_outage"),
        ("identified", "major_outage"),
        ("monitoring", "major_outage"),
        ("resolved", "operational"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(walk, expected);
    let incident = incidents.list(&Default::default()).await.unwrap().items;
    assert_eq!(incident.len(), 1);
    assert_eq!(
        incident[0].metadata.uid.as_deref(),
        created[0]["metadata"]["healing_guard"]["incident_uid"].as_str(),
        "the page's incident names the Incident"
    );
}

/// The webhook requests that were answered 200, in order.
fn webhook_accepted(receiver: &Receiver) -> Vec<WebhookCall> {
    let calls = receiver.webhook_calls.lock().unwrap();
    calls
        .iter()
        .filter(|c| c.answered == StatusCode::OK)
        .cloned()
        .collect()
}

/// A team's own endpoint, one request a minute, its texts from a
/// ConfigMap kept in Git: the first message meets a 503 and comes again
/// with the same Idempotency-Key, once its backoff (5 s) and the channel's
/// minute are both over (a struggling receiver is not sent more than its
/// rate); the acknowledgement, told seconds after the opening, waits out
/// the next minute (and no longer) and uses the template as it reads when
/// it is sent.
#[tokio::test]
async fn a_webhook_channel_retries_with_one_idempotency_key_keeps_its_rate_and_uses_configmap_templates()
 {
    let client = client().await;
    let ns = namespace(&client, "comms-hook").await;
    let _operator = Operator::start(&ns).await;
    let (address, receiver) = start_receiver(false).await;
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "hook"},
        "stringData": {"url": format!("http://{address}/webhook"), "authorization": "Bearer hook-token"}}))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    apply(
        &client,
        &ns,
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: team-templates}
data:
  opened: "OPENED {{ id }} {{ severity }} {{ title }}"
  update: "UPDATE {{ id }} {{ status }}"
---
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: team-hook}
spec:
  kind: Webhook
  secretRef: {name: hook}
  events: [Opened, Acknowledged]
  updates: {}
  perMinute: 1
  templates: {configMap: team-templates}
"#,
    )
    .await;
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "queue-backlog"},
        "spec": {"title": "webhook_queue backs up", "severity": "P1", "type": "IntegrationFailure",
                 "target": {"kind": "Deployment", "name": "webhook-worker"},
                 "communication": {"channels": ["team-hook"]}}
    }))
    .unwrap();
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let uid = incidents
        .create(&PostParams::default(), &incident)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();

    // The 503, then the same message again (backoff 5 s, pace a minute).
    eventually_within("the opening accepted", Duration::from_secs(100), || {
        let done = webhook_accepted(&receiver).len() == 1;
        async move { done.then_some(()) }
    })
    .await;
    // Acknowledged at once, and the template changed in Git meanwhile.
    let ack = json!({"spec": {"acknowledged": {"by": "jane"}}});
    incidents
        .patch(
            "queue-backlog",
            &PatchParams::default(),
            &Patch::Merge(&ack),
        )
        .await
        .unwrap();
    let changed = json!({"data": {"update": "UPDATE v2 {{ id }} {{ status }} by {{ commander }}"}});
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns)
        .patch(
            "team-templates",
            &PatchParams::default(),
            &Patch::Merge(&changed),
        )
        .await
        .unwrap();
    eventually_within(
        "the acknowledgement accepted",
        Duration::from_secs(100),
        || {
            let done = webhook_accepted(&receiver).len() == 2;
            async move { done.then_some(()) }
        },
    )
    .await;

    let calls = receiver.webhook_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "one 503, then two messages: {calls:?}");
    let (refused, opened, acknowledged) = (&calls[0], &calls[1], &calls[2]);
    assert_eq!(refused.answered, StatusCode::SERVICE_UNAVAILABLE);
    let key = |call: &WebhookCall| call.idempotency_key.clone().unwrap_or_default();
    assert_eq!(key(refused), format!("{uid}/team-hook/Opened"));
    assert_eq!(key(opened), key(refused), "the retry carries the same key");
    assert_eq!(key(acknowledged), format!("{uid}/team-hook/Acknowledged"));
    for call in &calls {
        assert_eq!(call.authorization.as_deref(), Some("Bearer hook-token"));
    }
    assert_eq!(
        opened.body["text"],
        "OPENED queue-backlog P1 webhook_queue backs up"
    );
    assert_eq!(opened.body["event"], "Opened");
    assert_eq!(opened.body["incident"]["uid"], uid.as_str());
    assert_eq!(
        acknowledged.body["text"], "UPDATE v2 queue-backlog Investigating by jane",
        "the template as it reads when the message is sent"
    );
    for (earlier, later) in [(refused, opened), (opened, acknowledged)] {
        let gap = later.at.duration_since(earlier.at);
        assert!(
            gap >= Duration::from_secs(59) && gap < Duration::from_secs(80),
            "one a minute, and sent as soon as the minute is over: {gap:?}"
        );
    }
    let recorded = outbox_of(&incidents.get("queue-backlog").await.unwrap());
    assert!(
        recorded
            .iter()
            .all(|(_, _, state, sending)| *state == DeliveryState::Sent && !sending),
        "{recorded:?}"
    );
    let outbox = incidents
        .get("queue-backlog")
        .await
        .unwrap()
        .status
        .unwrap()
        .communication
        .unwrap()
        .outbox;
    let attempts: Vec<(&str, i32)> = outbox
        .iter()
        .map(|d| (d.key.as_str(), d.attempts))
        .collect();
    assert_eq!(attempts, [("Opened", 2), ("Acknowledged", 1)]);
}

/// A security incident pages the security path (the security lead, not
/// the primary on call), and while it stays open its channel hears a
/// status update at the configured interval (the runbook's 15 minutes for
/// a P0, one minute here), numbered, once each.
#[tokio::test]
async fn a_security_incident_pages_the_security_lead_and_gets_periodic_updates() {
    let client = client().await;
    let ns = namespace(&client, "comms-security").await;
    let _operator = Operator::start(&ns).await;
    let (address, receiver) = start_receiver(false).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for (name, data) in [
        ("slack", json!({"url": format!("http://{address}/slack")})),
        (
            "pagerduty-john",
            json!({"routingKey": "john-key", "url": format!("http://{address}/pagerduty/john")}),
        ),
        (
            "pagerduty-charlie",
            json!({"routingKey": "charlie-key", "url": format!("http://{address}/pagerduty/charlie")}),
        ),
    ] {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    apply(
        &client,
        &ns,
        r#"
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: security-room}
spec: {kind: Slack, secretRef: {name: slack}, events: [Opened, Update], updates: {P0: 1m}}
---
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: pager-john}
spec: {kind: PagerDuty, secretRef: {name: pagerduty-john}, events: [Resolved]}
---
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: pager-charlie}
spec: {kind: PagerDuty, secretRef: {name: pagerduty-charlie}, events: [Resolved]}
---
apiVersion: healing-guard.io/v1alpha1
kind: EscalationPolicy
metadata: {name: oncall}
spec:
  people:
  - {name: john, channel: pager-john}
  - {name: charlie, channel: pager-charlie}
  roles:
  - {name: primary, rotation: [john]}
  - {name: security-lead, rotation: [charlie]}
  steps:
  - {role: primary}
  securitySteps:
  - {role: security-lead}
"#,
    )
    .await;
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "tokens-leaked"},
        "spec": {"title": "JWT signing key leaked", "severity": "P0", "type": "SecurityIncident",
                 "target": {"kind": "Deployment", "name": "api"},
                 "communication": {"channels": ["security-room"], "escalationPolicy": "oncall"}}
    }))
    .unwrap();
    Api::<Incident>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();

    eventually_within("the security lead paged", Duration::from_secs(60), || {
        let paged = !seen(&receiver, "pagerduty").is_empty();
        async move { paged.then_some(()) }
    })
    .await;
    // Two updates, a minute apart, after the opening.
    eventually_within("two periodic updates", Duration::from_secs(150), || {
        let updates = slack_headers(&receiver).len();
        async move { (updates >= 3).then_some(()) }
    })
    .await;
    assert_eq!(
        pagerduty_actions(&receiver),
        [("charlie-key".to_owned(), "trigger".to_owned())],
        "the security path, and not the primary on call"
    );
    let headers = slack_headers(&receiver);
    assert_eq!(
        headers[..3],
        [
            "🚨 INCIDENT ALERT - P0",
            "📊 INCIDENT UPDATE - P0",
            "📊 INCIDENT UPDATE - P0"
        ]
    );
    let incident = Api::<Incident>::namespaced(client.clone(), &ns)
        .get("tokens-leaked")
        .await
        .unwrap();
    let keys: Vec<String> = outbox_of(&incident)
        .into_iter()
        .filter(|(channel, _, _, _)| channel == "security-room")
        .map(|(_, key, _, _)| key)
        .collect();
    assert_eq!(keys[..3], ["Opened", "Update/1", "Update/2"]);
    let update = &seen(&receiver, "slack")[1];
    assert!(
        update["text"]
            .as_str()
            .unwrap()
            .contains("Time to next update:"),
        "{update}"
    );
}

/// A channel whose endpoint never answers in time delays neither the
/// other channel nor the remediation: Slack hears the opening while the
/// hung request is still waiting, the rollback runs, the incident
/// resolves, and Slack hears every moment; the hung channel's messages
/// stay pending with the timeout as their error, to be tried again.
#[tokio::test]
async fn a_channel_that_never_answers_delays_neither_the_others_nor_the_remediation() {
    use crate::remediation::{bad_release, crash_policy, setup_spec};
    let mut spec = crash_policy("Auto", json!([{"action": "rollback"}]), "2m");
    spec["communication"] = json!({"channels": ["slack", "stuck-hook"]});
    let (client, ns, _operator) = setup_spec("comms-slow", spec).await;
    let (address, receiver) = start_receiver(false).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for (name, url) in [("slack", "slack"), ("stuck", "hang")] {
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": name},
            "stringData": {"url": format!("http://{address}/{url}")}}))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    apply(
        &client,
        &ns,
        r#"
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: slack}
spec: {kind: Slack, secretRef: {name: slack}, events: [Opened, StepApplied, Resolved]}
---
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: stuck-hook}
spec: {kind: Webhook, secretRef: {name: stuck}, events: [Opened, StepApplied, Resolved]}
"#,
    )
    .await;
    bad_release(&client, &ns).await;
    eventually_within(
        "Slack told of the resolution",
        Duration::from_secs(180),
        || {
            let done = slack_headers(&receiver)
                .iter()
                .any(|h| h.starts_with("✅ INCIDENT RESOLVED"));
            async move { done.then_some(()) }
        },
    )
    .await;
    let headers = slack_headers(&receiver);
    assert_eq!(
        headers.first().map(String::as_str),
        Some("🚨 INCIDENT ALERT - P0")
    );
    assert!(
        headers.iter().any(|h| h.starts_with("📊 INCIDENT UPDATE")),
        "the rollback was told: {headers:?}"
    );
    let first_hang = receiver.hung.lock().unwrap()[0];
    let opened_at = receiver.slack_at.lock().unwrap()[0];
    assert!(
        opened_at < first_hang + Duration::from_secs(10),
        "Slack heard the opening while the stuck request still waited (the attempt limit is 10 s)"
    );
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let incident = incidents.list(&Default::default()).await.unwrap().items;
    assert!(phase_of(&incident[0]).is_some_and(|p| p.is_closed()));
    // Slack's messages are recorded as sent while the stuck channel's
    // first attempt may still be waiting: their record waits for nobody.
    let name = incident[0].name_any();
    incident_where(
        &client,
        &ns,
        &name,
        "Slack's messages recorded as sent",
        |i| {
            let slack: Vec<DeliveryState> = outbox_of(i)
                .into_iter()
                .filter(|(channel, _, _, _)| channel == "slack")
                .map(|(_, _, state, _)| state)
                .collect();
            slack.len() == 3 && slack.iter().all(|s| *s == DeliveryState::Sent)
        },
    )
    .await;
    // The stuck channel's message, meanwhile, waits for another try.
    let stuck = incident_where(
        &client,
        &ns,
        &name,
        "the stuck message's timeout recorded",
        |i| {
            i.communication().is_some_and(|c| {
                c.outbox.iter().any(|d| {
                    d.channel == "stuck-hook"
                        && d.last_error
                            .as_deref()
                            .is_some_and(|e| e.contains("no answer within 10 seconds"))
                })
            })
        },
    )
    .await;
    let stuck = stuck
        .communication()
        .unwrap()
        .outbox
        .iter()
        .find(|d| d.channel == "stuck-hook")
        .cloned()
        .unwrap();
    assert_eq!(stuck.state, DeliveryState::Pending, "{stuck:?}");
}

/// An acknowledgement followed by no progress expires: the person is
/// paged again, and PagerDuty, which would fold a trigger into the alert
/// still open (acknowledged), hears the old alert closed and a new one
/// triggered, so the page reaches them. A fresh acknowledgement holds.
#[tokio::test]
async fn an_acknowledgement_without_progress_expires_and_pages_again() {
    let client = client().await;
    let ns = namespace(&client, "comms-ackexp").await;
    let _operator = Operator::start(&ns).await;
    let (address, receiver) = start_receiver(false).await;
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "pagerduty-john"},
        "stringData": {"routingKey": "john-key", "url": format!("http://{address}/pagerduty/john")}}))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    apply(
        &client,
        &ns,
        r#"
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: pager-john}
spec: {kind: PagerDuty, secretRef: {name: pagerduty-john}, events: [Acknowledged, Resolved]}
---
apiVersion: healing-guard.io/v1alpha1
kind: EscalationPolicy
metadata: {name: oncall}
spec:
  people: [{name: john, channel: pager-john}]
  roles: [{name: primary, rotation: [john]}]
  steps: [{role: primary, wait: 10m}]
  acknowledgementTimeout: 1m
"#,
    )
    .await;
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "db-slow"},
        "spec": {"title": "PostgreSQL answers slowly", "severity": "P1", "type": "PerformanceDegradation",
                 "target": {"kind": "StatefulSet", "name": "postgres"},
                 "communication": {"escalationPolicy": "oncall"}}
    }))
    .unwrap();
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    incidents
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();
    let alert_is = |states: &'static [&'static str]| {
        let receiver = receiver.clone();
        move || {
            let actions: Vec<String> = pagerduty_actions(&receiver)
                .into_iter()
                .map(|(_, action)| action)
                .collect();
            async move { (actions == states).then_some(()) }
        }
    };
    eventually_within(
        "john paged",
        Duration::from_secs(60),
        alert_is(&["trigger"]),
    )
    .await;
    let ack = |at: String| json!({"spec": {"acknowledged": {"by": "john", "at": at}}});
    incidents
        .patch(
            "db-slow",
            &PatchParams::default(),
            &Patch::Merge(&ack(k8s_openapi::jiff::Timestamp::now().to_string())),
        )
        .await
        .unwrap();
    eventually_within(
        "the acknowledgement told",
        Duration::from_secs(60),
        alert_is(&["trigger", "acknowledge"]),
    )
    .await;
    // A minute later, nothing has moved: john is paged again, for real.
    eventually_within(
        "john paged again",
        Duration::from_secs(120),
        alert_is(&["trigger", "acknowledge", "resolve", "trigger"]),
    )
    .await;
    let escalation = incidents
        .get("db-slow")
        .await
        .unwrap()
        .status
        .unwrap()
        .communication
        .unwrap()
        .escalation
        .unwrap();
    assert!(
        escalation.expired_acknowledgement.is_some(),
        "{escalation:?}"
    );
    assert_eq!(escalation.round, 1);
    assert!(escalation.stopped.is_none(), "{escalation:?}");

    // He acknowledges again: that one holds the paging.
    incidents
        .patch(
            "db-slow",
            &PatchParams::default(),
            &Patch::Merge(&ack(k8s_openapi::jiff::Timestamp::now().to_string())),
        )
        .await
        .unwrap();
    eventually_within(
        "the new alert acknowledged",
        Duration::from_secs(60),
        alert_is(&[
            "trigger",
            "acknowledge",
            "resolve",
            "trigger",
            "acknowledge",
        ]),
    )
    .await;
    let escalation = incidents
        .get("db-slow")
        .await
        .unwrap()
        .status
        .unwrap()
        .communication
        .unwrap()
        .escalation
        .unwrap();
    assert_eq!(escalation.stopped.as_deref(), Some("acknowledged by john"));
}
