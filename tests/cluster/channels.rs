//! The channels teams use besides Slack and PagerDuty: Microsoft Teams (a
//! Workflows webhook), Opsgenie (Alert API v2) and a signed, shaped
//! webhook. No provider is reachable here: a loopback receiver stands in
//! for each, checks every request against the provider's documented schema
//! (required fields, types, lengths, the auth header) and answers as the
//! provider does, so a malformed message fails the test rather than
//! passing unseen.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use healing_guard_operator::crd::{DeliveryState, Incident};
use hmac::{KeyInit, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{
    Operator, apply, client, eventually_within, incident_where, namespace, phase_of, ready_of,
};

/// The Opsgenie API key the channel's Secret holds.
const GENIE_KEY: &str = "og-integration-key";
/// The webhook's signing key.
const SIGNING_KEY: &str = "whsec_cluster_test";

/// A webhook request as received: its raw body and headers.
type SignedRequest = (Vec<u8>, HeaderMap);

#[derive(Clone, Default)]
struct Receivers {
    /// Cards a Teams channel would show.
    teams: Arc<Mutex<Vec<Value>>>,
    /// Opsgenie requests accepted: (action, alias, body).
    opsgenie: Arc<Mutex<Vec<(String, String, Value)>>>,
    /// Opsgenie's alerts by alias: status, and how many creates folded in.
    alerts: Arc<Mutex<BTreeMap<String, (String, u32)>>>,
    /// Webhook requests whose signature checked out.
    hooks: Arc<Mutex<Vec<SignedRequest>>>,
    /// Requests refused, and why: none is expected.
    refused: Arc<Mutex<Vec<String>>>,
}

impl Receivers {
    fn refuse(&self, provider: &str, why: String) -> String {
        self.refused
            .lock()
            .unwrap()
            .push(format!("{provider}: {why}"));
        why
    }
}

/// A Teams Workflows webhook ("When a Teams webhook request is received",
/// posting the attachments as Adaptive Cards): a `message` with
/// attachments of contentType `application/vnd.microsoft.card.adaptive`
/// whose content is an AdaptiveCard (schema 1.0-1.5) of TextBlocks with
/// text and a documented colour, FactSets of title/value facts, and
/// Action.OpenUrl actions with an absolute URL; 28 KB at most.
fn teams_problem(raw: &[u8]) -> Option<String> {
    if raw.len() > 28 * 1024 {
        return Some("the message is larger than 28 KB".into());
    }
    let body: Value = serde_json::from_slice(raw).ok()?;
    if body["type"] != "message" {
        return Some("type must be message".into());
    }
    let attachments = body["attachments"].as_array()?;
    if attachments.is_empty() {
        return Some("attachments are required".into());
    }
    for attachment in attachments {
        if attachment["contentType"] != "application/vnd.microsoft.card.adaptive" {
            return Some("contentType must be application/vnd.microsoft.card.adaptive".into());
        }
        let card = &attachment["content"];
        if card["type"] != "AdaptiveCard" {
            return Some("content.type must be AdaptiveCard".into());
        }
        let version = card["version"].as_str().unwrap_or_default();
        if !["1.0", "1.1", "1.2", "1.3", "1.4", "1.5"].contains(&version) {
            return Some(format!("version {version:?} is not supported"));
        }
        let elements = card["body"].as_array()?;
        if elements.is_empty() {
            return Some("body is empty".into());
        }
        for element in elements {
            match element["type"].as_str() {
                Some("TextBlock") => {
                    if element["text"].as_str().is_none_or(str::is_empty) {
                        return Some("a TextBlock needs text".into());
                    }
                    let colours = [
                        "Default",
                        "Dark",
                        "Light",
                        "Accent",
                        "Good",
                        "Warning",
                        "Attention",
                    ];
                    if let Some(colour) = element.get("color")
                        && !colour.as_str().is_some_and(|c| colours.contains(&c))
                    {
                        return Some(format!("color {colour} is not a colour"));
                    }
                }
                Some("FactSet") => {
                    let facts = element["facts"].as_array()?;
                    if facts.is_empty()
                        || facts
                            .iter()
                            .any(|f| !f["title"].is_string() || !f["value"].is_string())
                    {
                        return Some("a FactSet needs facts of title and value".into());
                    }
                }
                other => return Some(format!("element type {other:?} is unexpected")),
            }
        }
        for action in card["actions"].as_array().into_iter().flatten() {
            let url = action["url"].as_str().unwrap_or_default();
            if action["type"] != "Action.OpenUrl"
                || action["title"].as_str().is_none_or(str::is_empty)
                || !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Some(format!("action {action} is not an Action.OpenUrl"));
            }
        }
    }
    None
}

async fn teams(
    State(receivers): State<Receivers>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> (StatusCode, String) {
    let json_content = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let problem = if json_content {
        teams_problem(&raw).or_else(|| {
            serde_json::from_slice::<Value>(&raw)
                .is_err()
                .then(|| "not JSON".to_owned())
        })
    } else {
        Some("Content-Type must be application/json".into())
    };
    if let Some(problem) = problem {
        let why = receivers.refuse("teams", problem);
        let error = json!({"error": {"code": "InvalidRequestContent", "message": why}});
        return (StatusCode::BAD_REQUEST, error.to_string());
    }
    let card = serde_json::from_slice(&raw).unwrap();
    receivers.teams.lock().unwrap().push(card);
    // A Workflows trigger takes the request and runs the flow later.
    (StatusCode::ACCEPTED, String::new())
}

fn length_problem(body: &Value, field: &str, max: usize, required: bool) -> Option<String> {
    match &body[field] {
        Value::Null if !required => None,
        Value::String(text) if !text.is_empty() && text.chars().count() <= max => None,
        _ => Some(format!("{field} must be a string of 1 to {max} characters")),
    }
}

/// Opsgenie Alert API v2, create: message (130), alias (512), description
/// (15,000), priority P1-P5, tags (20 of 50), details (string values),
/// entity (512), source (100), responders (team/user/escalation/schedule
/// by id, name or username).
fn opsgenie_create_problem(body: &Value) -> Option<String> {
    let lengths = [
        ("message", 130, true),
        ("alias", 512, false),
        ("description", 15_000, false),
        ("entity", 512, false),
        ("source", 100, false),
    ];
    for (field, max, required) in lengths {
        if let Some(problem) = length_problem(body, field, max, required) {
            return Some(problem);
        }
    }
    if let Some(priority) = body.get("priority")
        && !["P1", "P2", "P3", "P4", "P5"].contains(&priority.as_str().unwrap_or_default())
    {
        return Some(format!("priority {priority} is invalid"));
    }
    if let Some(tags) = body.get("tags") {
        let tags = tags.as_array()?;
        if tags.len() > 20
            || tags.iter().any(|t| {
                t.as_str()
                    .is_none_or(|t| t.is_empty() || t.chars().count() > 50)
            })
        {
            return Some("tags: at most 20, of at most 50 characters".into());
        }
    }
    if let Some(details) = body.get("details")
        && !details
            .as_object()
            .is_some_and(|d| d.values().all(Value::is_string))
    {
        return Some("details must map keys to strings".into());
    }
    for responder in body["responders"].as_array().into_iter().flatten() {
        let known = ["team", "user", "escalation", "schedule"]
            .contains(&responder["type"].as_str().unwrap_or_default());
        let named = ["id", "name", "username"]
            .iter()
            .any(|k| responder[*k].is_string());
        if !known || !named {
            return Some(format!("responder {responder} is invalid"));
        }
    }
    None
}

/// Acknowledge, close and notes: note (25,000; required for notes), user
/// (100), source (100).
fn opsgenie_follow_up_problem(action: &str, body: &Value) -> Option<String> {
    let lengths = [
        ("note", 25_000, action == "notes"),
        ("user", 100, false),
        ("source", 100, false),
    ];
    lengths
        .into_iter()
        .find_map(|(field, max, required)| length_problem(body, field, max, required))
}

/// As Opsgenie answers: 202, the request to be processed later.
fn accepted(receivers: &Receivers) -> (StatusCode, String) {
    let n = receivers.opsgenie.lock().unwrap().len();
    let answer = json!({"result": "Request will be processed", "took": 0.1,
                        "requestId": format!("req-{n:04}")});
    (StatusCode::ACCEPTED, answer.to_string())
}

fn opsgenie_refused(
    receivers: &Receivers,
    status: StatusCode,
    why: String,
) -> (StatusCode, String) {
    let message = receivers.refuse("opsgenie", why);
    let answer = json!({"message": message, "took": 0.0, "requestId": "refused"});
    (status, answer.to_string())
}

fn genie_key(receivers: &Receivers, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    if authorization == Some(&format!("GenieKey {GENIE_KEY}")) {
        Ok(())
    } else {
        Err(opsgenie_refused(
            receivers,
            StatusCode::UNAUTHORIZED,
            "Could not authenticate: Authorization: GenieKey <apiKey>".into(),
        ))
    }
}

async fn opsgenie_create(
    State(receivers): State<Receivers>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    if let Err(refused) = genie_key(&receivers, &headers) {
        return refused;
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return opsgenie_refused(&receivers, StatusCode::BAD_REQUEST, "not JSON".into());
    };
    if let Some(problem) = opsgenie_create_problem(&body) {
        return opsgenie_refused(&receivers, StatusCode::UNPROCESSABLE_ENTITY, problem);
    }
    let alias = body["alias"].as_str().unwrap_or_default().to_owned();
    {
        // One open alert per alias: a create on it only counts up.
        let mut alerts = receivers.alerts.lock().unwrap();
        let alert = alerts
            .entry(alias.clone())
            .or_insert_with(|| ("closed".into(), 0));
        if alert.0 == "closed" {
            *alert = ("open".into(), 1);
        } else {
            alert.1 += 1;
        }
    }
    let answer = accepted(&receivers);
    receivers
        .opsgenie
        .lock()
        .unwrap()
        .push(("create".into(), alias, body));
    answer
}

async fn opsgenie_follow_up(
    State(receivers): State<Receivers>,
    Path((alias, action)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    if let Err(refused) = genie_key(&receivers, &headers) {
        return refused;
    }
    let by_alias = uri
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "identifierType=alias"));
    if !by_alias {
        // Without it, the identifier is read as the alert's id: not found.
        return opsgenie_refused(
            &receivers,
            StatusCode::NOT_FOUND,
            "Alert does not exist".into(),
        );
    }
    if !["acknowledge", "close", "notes"].contains(&action.as_str()) {
        return opsgenie_refused(
            &receivers,
            StatusCode::NOT_FOUND,
            format!("no action {action}"),
        );
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return opsgenie_refused(&receivers, StatusCode::BAD_REQUEST, "not JSON".into());
    };
    if let Some(problem) = opsgenie_follow_up_problem(&action, &body) {
        return opsgenie_refused(&receivers, StatusCode::UNPROCESSABLE_ENTITY, problem);
    }
    {
        let mut alerts = receivers.alerts.lock().unwrap();
        // Processed later: an unknown alias is accepted, and fails there.
        let Some(alert) = alerts.get_mut(&alias) else {
            receivers.refuse(
                "opsgenie",
                format!("{action} of an alert never created: {alias}"),
            );
            return accepted(&receivers);
        };
        match action.as_str() {
            "acknowledge" if alert.0 == "open" => alert.0 = "acknowledged".into(),
            "close" => alert.0 = "closed".into(),
            _ => {}
        }
    }
    let answer = accepted(&receivers);
    receivers
        .opsgenie
        .lock()
        .unwrap()
        .push((action, alias, body));
    answer
}

/// What a receiver of a signed webhook checks, written as its owner would
/// (not with the operator's code): a fresh timestamp, and HMAC-SHA256 of
/// `<timestamp>.<raw body>` with the shared key, compared in constant time.
fn signature_checks(key: &[u8], headers: &HeaderMap, raw: &[u8]) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name}"))
    };
    let timestamp = header("x-healing-guard-timestamp")?;
    let signature = header("x-healing-guard-signature")?;
    let sent: i64 = timestamp.parse().map_err(|_| "timestamp not a number")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if (i64::try_from(now).unwrap() - sent).abs() > 300 {
        return Err("timestamp older than 5 minutes: a replay?".into());
    }
    let digest = signature
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or("signature not v1=<hex>")?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(raw);
    mac.verify_slice(&digest)
        .map_err(|_| "signature does not match".to_owned())
}

async fn hook(
    State(receivers): State<Receivers>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> StatusCode {
    if let Err(why) = signature_checks(SIGNING_KEY.as_bytes(), &headers, &raw) {
        receivers.refuse("webhook", why);
        return StatusCode::UNAUTHORIZED;
    }
    receivers
        .hooks
        .lock()
        .unwrap()
        .push((raw.to_vec(), headers));
    StatusCode::NO_CONTENT
}

async fn start_receivers() -> (SocketAddr, Receivers) {
    let receivers = Receivers::default();
    let app = Router::new()
        .route("/teams/workflow", post(teams))
        .route("/opsgenie/v2/alerts", post(opsgenie_create))
        .route(
            "/opsgenie/v2/alerts/{alias}/{action}",
            post(opsgenie_follow_up),
        )
        .route("/hook", post(hook))
        .with_state(receivers.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, receivers)
}

async fn secrets(client: &Client, ns: &str, secrets: &[(&str, Value)]) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for (name, data) in secrets {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        api.create(&PostParams::default(), &secret).await.unwrap();
    }
}

/// Declares a P1 told to `channels`.
async fn declare(client: &Client, ns: &str, channels: &[&str]) {
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "checkout-slow"},
        "spec": {"title": "checkout is slow", "severity": "P1", "type": "PerformanceDegradation",
                 "target": {"kind": "Deployment", "name": "checkout"},
                 "communication": {"channels": channels}}
    }))
    .unwrap();
    Api::<Incident>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();
}

async fn wait_for<T>(what: &str, check: impl Fn() -> Option<T>) -> T {
    eventually_within(what, Duration::from_secs(60), || {
        let found = check();
        async move { found }
    })
    .await
}

/// Every channel Ready, and nothing refused by a receiver.
async fn all_ready(client: &Client, ns: &str, names: &[&str]) {
    for name in names {
        let (status, message) = eventually_within(
            &format!("{name}'s Ready condition"),
            Duration::from_secs(30),
            || {
                let (client, ns) = (client.clone(), ns.to_owned());
                async move { ready_of(&client, &ns, "notificationchannels", name).await }
            },
        )
        .await;
        assert_eq!(status, "True", "{name}: {message}");
    }
}

#[tokio::test]
async fn teams_and_opsgenie_hear_an_incident_open_acknowledged_and_resolved() {
    let client = client().await;
    let ns = namespace(&client, "channels").await;
    let _operator = Operator::start(&ns).await;
    let (address, receivers) = start_receivers().await;
    secrets(
        &client,
        &ns,
        &[
            (
                "teams",
                json!({"url": format!("http://{address}/teams/workflow")}),
            ),
            (
                "opsgenie",
                json!({"apiKey": GENIE_KEY, "url": format!("http://{address}/opsgenie")}),
            ),
        ],
    )
    .await;
    apply(
        &client,
        &ns,
        r#"
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: teams-sre}
spec:
  kind: Teams
  secretRef: {name: teams}
  events: [Opened, Acknowledged, Resolved]
  updates: {}
  teams:
    links: [{title: Pods, url: "https://grafana.example.com/d/pods?var-namespace={{ namespace }}"}]
---
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: opsgenie-sre}
spec:
  kind: Opsgenie
  secretRef: {name: opsgenie}
  events: [Opened, Acknowledged, Resolved]
  updates: {}
  opsgenie:
    responders: [{type: Team, name: sre}]
    tags: [checkout]
"#,
    )
    .await;
    all_ready(&client, &ns, &["teams-sre", "opsgenie-sre"]).await;
    declare(&client, &ns, &["teams-sre", "opsgenie-sre"]).await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);

    wait_for("the opening on Teams and Opsgenie", || {
        let teams = receivers.teams.lock().unwrap().len();
        let opsgenie = receivers.opsgenie.lock().unwrap().len();
        (teams == 1 && opsgenie == 1).then_some(())
    })
    .await;
    let ack = json!({"spec": {"acknowledged": {"by": "jane"}}});
    incidents
        .patch(
            "checkout-slow",
            &PatchParams::default(),
            &Patch::Merge(&ack),
        )
        .await
        .unwrap();
    wait_for("the acknowledgement on both", || {
        let teams = receivers.teams.lock().unwrap().len();
        let opsgenie = receivers.opsgenie.lock().unwrap().len();
        (teams == 2 && opsgenie == 2).then_some(())
    })
    .await;
    let resolve = json!({"spec": {"resolution": {"by": "jane", "rootCause": "a slow query",
        "summary": "index added", "followUps": ["query review"]}}});
    incidents
        .patch(
            "checkout-slow",
            &PatchParams::default(),
            &Patch::Merge(&resolve),
        )
        .await
        .unwrap();
    let resolved = incident_where(&client, &ns, "checkout-slow", "every message sent", |i| {
        phase_of(i).is_some_and(|p| p.is_closed())
            && i.status
                .as_ref()
                .and_then(|s| s.communication.as_ref())
                .is_some_and(|c| {
                    c.outbox.len() == 6 && c.outbox.iter().all(|d| d.state == DeliveryState::Sent)
                })
    })
    .await;
    let uid = resolved.metadata.uid.clone().unwrap();
    assert_eq!(*receivers.refused.lock().unwrap(), Vec::<String>::new());

    // Teams: three cards, urgent until resolved, with the dashboard link.
    let cards = receivers.teams.lock().unwrap().clone();
    let headers: Vec<(String, String)> = cards
        .iter()
        .map(|card| {
            let header = &card["attachments"][0]["content"]["body"][0];
            (
                header["text"].as_str().unwrap().to_owned(),
                header["color"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("🚨 INCIDENT ALERT - P1", "Attention"),
        ("📊 INCIDENT UPDATE - P1", "Attention"),
        ("✅ INCIDENT RESOLVED - P1", "Good"),
    ]
    .map(|(text, colour)| (text.to_owned(), colour.to_owned()));
    assert_eq!(headers, expected);
    let opening = &cards[0]["attachments"][0]["content"];
    assert_eq!(
        opening["actions"][0]["url"],
        format!("https://grafana.example.com/d/pods?var-namespace={ns}")
    );
    assert!(
        opening["body"][1]["facts"]
            .as_array()
            .unwrap()
            .contains(&json!({"title": "Title", "value": "checkout is slow"})),
        "{opening}"
    );

    // Opsgenie: one alert by one alias, created at P2, acknowledged, closed.
    let requests = receivers.opsgenie.lock().unwrap().clone();
    let alias = format!("{ns}:checkout-slow:{uid}:opsgenie-sre");
    let walk: Vec<(&str, &str)> = requests
        .iter()
        .map(|(action, alias, _)| (action.as_str(), alias.as_str()))
        .collect();
    assert_eq!(
        walk,
        [
            ("create", alias.as_str()),
            ("acknowledge", alias.as_str()),
            ("close", alias.as_str())
        ]
    );
    let create = &requests[0].2;
    assert_eq!(create["priority"], "P2");
    assert_eq!(create["message"], "[P1] checkout is slow");
    assert_eq!(
        create["responders"],
        json!([{"type": "team", "name": "sre"}])
    );
    assert!(
        create["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("checkout"))
    );
    assert_eq!(requests[1].2["user"], "jane");
    assert!(
        requests[2].2["note"]
            .as_str()
            .unwrap()
            .starts_with("✅ INCIDENT RESOLVED - P1")
    );
    assert_eq!(
        receivers.alerts.lock().unwrap().get(&alias),
        Some(&("closed".to_owned(), 1))
    );
    // What Opsgenie calls each request is kept with its message.
    let communication = resolved.status.unwrap().communication.unwrap();
    let references: Vec<Option<&str>> = communication
        .outbox
        .iter()
        .filter(|d| d.channel == "opsgenie-sre")
        .map(|d| d.external_ref.as_deref())
        .collect();
    assert!(
        references
            .iter()
            .all(|r| r.is_some_and(|r| r.starts_with("req-"))),
        "{references:?}"
    );
}

#[tokio::test]
async fn a_signed_shaped_webhook_is_verified_by_its_receiver_and_arrives_as_rendered() {
    let client = client().await;
    let ns = namespace(&client, "channels-hook").await;
    let _operator = Operator::start(&ns).await;
    let (address, receivers) = start_receivers().await;
    secrets(
        &client,
        &ns,
        &[(
            "hook",
            json!({"url": format!("http://{address}/hook"), "signingKey": SIGNING_KEY}),
        )],
    )
    .await;
    apply(
        &client,
        &ns,
        r#"
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: shaped}
spec:
  kind: Webhook
  secretRef: {name: hook}
  events: [Opened]
  templates:
    body: |
      {"summary": {{ severity ~ " " ~ title }}, "source": "healing-guard",
       "dedup": {{ uid ~ "/" ~ key }}, "labels": {"namespace": {{ namespace }}, "target": {{ target }}},
       "text": {{ text }}}
---
apiVersion: healing-guard.io/v1alpha1
kind: NotificationChannel
metadata: {name: careless}
spec:
  kind: Webhook
  secretRef: {name: hook}
  templates:
    body: '{"text": "{{ text }}"}'
"#,
    )
    .await;
    all_ready(&client, &ns, &["shaped"]).await;
    // A body template that breaks JSON is reported before any incident.
    let (status, message) = eventually_within(
        "careless's Ready condition",
        Duration::from_secs(30),
        || {
            let (client, ns) = (client.clone(), ns.clone());
            async move { ready_of(&client, &ns, "notificationchannels", "careless").await }
        },
    )
    .await;
    assert_eq!(status, "False");
    assert!(
        message.starts_with("template body does not render JSON"),
        "{message}"
    );

    declare(&client, &ns, &["shaped"]).await;
    let (raw, headers) = wait_for("the signed opening", || {
        receivers.hooks.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(*receivers.refused.lock().unwrap(), Vec::<String>::new());
    let uid = Api::<Incident>::namespaced(client.clone(), &ns)
        .get("checkout-slow")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let body: Value = serde_json::from_slice(&raw).unwrap();
    let text = body["text"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("🚨 INCIDENT ALERT - P1\nTitle: checkout is slow"),
        "{text}"
    );
    assert_eq!(
        body,
        json!({"summary": "P1 checkout is slow", "source": "healing-guard",
               "dedup": format!("{uid}/Opened"),
               "labels": {"namespace": ns, "target": "Deployment/checkout"},
               "text": text})
    );
    assert_eq!(headers["content-type"], "application/json");
    // The receiver's check refuses the same request with its body changed.
    assert_eq!(
        signature_checks(SIGNING_KEY.as_bytes(), &headers, &raw),
        Ok(())
    );
    let tampered = String::from_utf8(raw.clone())
        .unwrap()
        .replace("P1 checkout", "P3 checkout");
    assert_eq!(
        signature_checks(SIGNING_KEY.as_bytes(), &headers, tampered.as_bytes()),
        Err("signature does not match".to_owned())
    );
    assert!(signature_checks(b"another key", &headers, &raw).is_err());
}
