//! Communication in a bad hour. Fifty incidents at once share one Slack
//! webhook's limit (one message a second, answered 429 past it): each
//! opening arrives once, the P0s' before the P3s', and a `Retry-After`
//! holds every incident's messages. With a bot token, Slack's Web API
//! threads an incident's messages under its opening and broadcasts the
//! resolution; the text people typed is escaped, so it pings nobody.
//! Slack has no server to be had here: these loopback receivers check the
//! documented request schema and answer as Slack does.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use healing_guard_operator::crd::{DeliveryState, Incident};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{Operator, client, eventually_within, incident_where, namespace};

/// How long the webhook asks to be left alone when the bad hour begins.
const FIRST_RETRY_AFTER: Duration = Duration::from_secs(5);
const INCIDENTS_PER_SEVERITY: usize = 25;

/// A Slack incoming webhook as it limits: one message a second. A message
/// closer than a second after the last one accepted is answered 429 with
/// `Retry-After: 1`. The very first is answered 429 with `Retry-After: 5`:
/// the webhook is at its limit already when the bad hour begins.
#[derive(Clone, Default)]
struct Webhook {
    state: Arc<Mutex<WebhookState>>,
}

#[derive(Default)]
struct WebhookState {
    accepted: Vec<(Instant, Value)>,
    throttled: usize,
    first_throttled_at: Option<Instant>,
    /// Requests that came while the first `Retry-After` held.
    during_the_pause: usize,
    malformed: Vec<String>,
}

/// Slack's incoming webhook schema: a non-empty `text`, at most 50 blocks.
fn webhook_problem(body: &Value) -> Option<String> {
    if body["text"].as_str().is_none_or(str::is_empty) {
        return Some("no_text".into());
    }
    if body["blocks"].as_array().is_some_and(|b| b.len() > 50) {
        return Some("invalid_blocks".into());
    }
    None
}

async fn webhook(
    State(hook): State<Webhook>,
    body: String,
) -> (StatusCode, [(&'static str, String); 1], String) {
    let mut state = hook.state.lock().unwrap();
    let body: Value = match serde_json::from_str(&body) {
        Ok(body) => body,
        Err(_) => {
            state.malformed.push(body);
            return (
                StatusCode::BAD_REQUEST,
                [("retry-after", "0".into())],
                "invalid_payload".into(),
            );
        }
    };
    if let Some(problem) = webhook_problem(&body) {
        state.malformed.push(problem.clone());
        return (
            StatusCode::BAD_REQUEST,
            [("retry-after", "0".into())],
            problem,
        );
    }
    let now = Instant::now();
    let Some(first) = state.first_throttled_at else {
        state.first_throttled_at = Some(now);
        state.throttled += 1;
        let wait = FIRST_RETRY_AFTER.as_secs().to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", wait)],
            "rate_limited".into(),
        );
    };
    if now < first + FIRST_RETRY_AFTER {
        state.during_the_pause += 1;
    }
    if state
        .accepted
        .last()
        .is_some_and(|(last, _)| now.duration_since(*last) < Duration::from_secs(1))
    {
        state.throttled += 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1".into())],
            "rate_limited".into(),
        );
    }
    state.accepted.push((now, body));
    (StatusCode::OK, [("retry-after", "0".into())], "ok".into())
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

async fn create<K>(client: &Client, ns: &str, object: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).unwrap();
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

fn declared(name: &str, severity: &str, title: &str, channels: &[&str]) -> Value {
    json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": name},
        "spec": {"title": title, "severity": severity, "type": "ServiceOutage",
                 "target": {"kind": "Deployment", "name": "api"},
                 "communication": {"channels": channels}}
    })
}

#[tokio::test]
async fn fifty_incidents_share_one_slack_webhooks_limit_p0_openings_first_each_once() {
    let client = client().await;
    let ns = namespace(&client, "bad-hour").await;
    let _operator = Operator::start(&ns).await;
    let hook = Webhook::default();
    let address = serve(
        Router::new()
            .route("/slack", post(webhook))
            .with_state(hook.clone()),
    )
    .await;
    create::<Secret>(
        &client,
        &ns,
        json!({"metadata": {"name": "slack"}, "stringData": {"url": format!("http://{address}/slack")}}),
    )
    .await;
    // Slack's documented limit for a webhook: one a second.
    create::<healing_guard_operator::crd::NotificationChannel>(
        &client,
        &ns,
        json!({"apiVersion": "healing-guard.io/v1alpha1", "kind": "NotificationChannel",
               "metadata": {"name": "slack"},
               "spec": {"kind": "Slack", "secretRef": {"name": "slack"}, "events": ["Opened"],
                        "updates": {}, "perMinute": 60}}),
    )
    .await;

    // The P3s first: they are waiting already when the P0s come.
    let started = Instant::now();
    for severity in ["P3", "P0"] {
        for n in 0..INCIDENTS_PER_SEVERITY {
            let name = format!("{}-{n:02}", severity.to_lowercase());
            let title = format!("bad hour {name}");
            create::<Incident>(&client, &ns, declared(&name, severity, &title, &["slack"])).await;
        }
    }
    let created_in = started.elapsed();

    let total = 2 * INCIDENTS_PER_SEVERITY;
    let state = Arc::clone(&hook.state);
    eventually_within("every opening accepted", Duration::from_secs(300), || {
        let state = Arc::clone(&state);
        async move { (state.lock().unwrap().accepted.len() >= total).then_some(()) }
    })
    .await;
    // Anything sent twice would come now.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let state = hook.state.lock().unwrap();
    assert!(state.malformed.is_empty(), "{:?}", state.malformed);
    let names: Vec<String> = state
        .accepted
        .iter()
        .map(|(_, body)| {
            let text = body["text"].as_str().unwrap();
            let at = text
                .find("bad hour ")
                .unwrap_or_else(|| panic!("no title in {text}"));
            text[at + "bad hour ".len()..].chars().take(5).collect()
        })
        .collect();
    // Each incident's opening, once.
    assert_eq!(names.len(), total, "{names:?}");
    assert_eq!(
        names.iter().collect::<BTreeSet<_>>().len(),
        total,
        "{names:?}"
    );
    // Every P0 opening went before any P3's.
    let first_p3 = names.iter().position(|n| n.starts_with("p3")).unwrap();
    assert_eq!(first_p3, INCIDENTS_PER_SEVERITY, "{names:?}");
    // The webhook's Retry-After held every incident's messages.
    assert_eq!(state.during_the_pause, 0);
    // Never closer than the webhook allows: anything closer was refused.
    let gaps: Vec<Duration> = state
        .accepted
        .windows(2)
        .map(|pair| pair[1].0.duration_since(pair[0].0))
        .collect();
    assert!(gaps.iter().all(|gap| *gap >= Duration::from_secs(1)));

    let first = state.first_throttled_at.unwrap();
    let last = state.accepted.last().unwrap().0;
    let spread = last.duration_since(first);
    let after_the_pause = last.duration_since(first + FIRST_RETRY_AFTER);
    let mean_gap = gaps.iter().sum::<Duration>() / u32::try_from(gaps.len()).unwrap();
    println!(
        "bad hour: {total} incidents ({INCIDENTS_PER_SEVERITY} P3 then {INCIDENTS_PER_SEVERITY} P0) created in {:.2} s; \
         {total} openings accepted once each, the {INCIDENTS_PER_SEVERITY} P0 first; \
         429 answers: {} (1 asked for {} s, {} for coming within a second); \
         first request to last accepted {:.1} s, {:.1} s after the Retry-After; \
         gaps between accepted messages: mean {:.3} s, min {:.3} s, max {:.3} s",
        created_in.as_secs_f64(),
        state.throttled,
        FIRST_RETRY_AFTER.as_secs(),
        state.throttled - 1,
        spread.as_secs_f64(),
        after_the_pause.as_secs_f64(),
        mean_gap.as_secs_f64(),
        gaps.iter().min().unwrap().as_secs_f64(),
        gaps.iter().max().unwrap().as_secs_f64(),
    );
}

/// Slack's Web API `chat.postMessage`, as documented: a bearer token, a
/// `channel`, a `text`, at most 50 `blocks`; `thread_ts` must name a
/// message of that channel, and `reply_broadcast` is a boolean for a reply.
/// Slack answers 200 with `ok: false` and an `error` when it refuses.
#[derive(Clone, Default)]
struct WebApi {
    posts: Arc<Mutex<Vec<Value>>>,
}

const BOT_TOKEN: &str = "xoxb-1-bad-hour";
const SLACK_CHANNEL: &str = "C0INCIDENTS";

fn post_message_problem(
    headers: &HeaderMap,
    body: &Value,
    known: &[Value],
) -> Option<&'static str> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {BOT_TOKEN}")) {
        return Some("invalid_auth");
    }
    if body["channel"] != SLACK_CHANNEL {
        return Some("channel_not_found");
    }
    if body["text"].as_str().is_none_or(str::is_empty) {
        return Some("no_text");
    }
    if body["blocks"].as_array().is_some_and(|b| b.len() > 50) {
        return Some("invalid_blocks");
    }
    if let Some(thread) = body.get("thread_ts") {
        let started = known
            .iter()
            .any(|post| post.get("thread_ts").is_none() && post["ts"] == *thread);
        if !started {
            return Some("thread_not_found");
        }
    }
    match body.get("reply_broadcast") {
        Some(Value::Bool(_)) if body.get("thread_ts").is_some() => None,
        Some(_) => Some("invalid_arguments"),
        None => None,
    }
}

async fn post_message(
    State(api): State<WebApi>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let Ok(mut body) = serde_json::from_str::<Value>(&body) else {
        return (
            StatusCode::OK,
            json!({"ok": false, "error": "invalid_json"}).to_string(),
        );
    };
    let mut posts = api.posts.lock().unwrap();
    if let Some(error) = post_message_problem(&headers, &body, &posts) {
        return (
            StatusCode::OK,
            json!({"ok": false, "error": error}).to_string(),
        );
    }
    let ts = format!("1700000000.{:06}", posts.len() + 1);
    body["ts"] = json!(ts);
    posts.push(body.clone());
    (
        StatusCode::OK,
        json!({"ok": true, "channel": SLACK_CHANNEL, "ts": ts, "message": {"text": body["text"]}})
            .to_string(),
    )
}

#[tokio::test]
async fn with_a_bot_token_slack_threads_an_incident_and_broadcasts_its_resolution_escaped() {
    let client = client().await;
    let ns = namespace(&client, "slack-thread").await;
    let _operator = Operator::start(&ns).await;
    let api = WebApi::default();
    let address = serve(
        Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .with_state(api.clone()),
    )
    .await;
    let base = format!("http://{address}/api");
    for (name, channel) in [
        ("slack-bot", SLACK_CHANNEL),
        ("slack-wrong-channel", "C0NOSUCH"),
    ] {
        create::<Secret>(
            &client,
            &ns,
            json!({"metadata": {"name": name},
                   "stringData": {"token": BOT_TOKEN, "channel": channel, "apiUrl": base}}),
        )
        .await;
        create::<healing_guard_operator::crd::NotificationChannel>(
            &client,
            &ns,
            json!({"apiVersion": "healing-guard.io/v1alpha1", "kind": "NotificationChannel",
                   "metadata": {"name": name},
                   "spec": {"kind": "Slack", "secretRef": {"name": name},
                            "events": ["Opened", "Acknowledged", "Resolved"], "updates": {}}}),
        )
        .await;
    }
    // An incident author trying to ping the whole channel and plant a link.
    let title = "<!channel> api down & <https://evil.example|click here>";
    create::<Incident>(
        &client,
        &ns,
        declared("outage", "P1", title, &["slack-bot", "slack-wrong-channel"]),
    )
    .await;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let posts = Arc::clone(&api.posts);
    let posted = |count: usize| {
        let posts = Arc::clone(&posts);
        move || {
            let posts = Arc::clone(&posts);
            async move { (posts.lock().unwrap().len() >= count).then_some(()) }
        }
    };
    eventually_within("the opening posted", Duration::from_secs(60), posted(1)).await;
    let ack = json!({"spec": {"acknowledged": {"by": "jane"}}});
    incidents
        .patch("outage", &PatchParams::default(), &Patch::Merge(&ack))
        .await
        .unwrap();
    eventually_within(
        "the acknowledgement posted",
        Duration::from_secs(60),
        posted(2),
    )
    .await;
    let resolve = json!({"spec": {"resolution": {"by": "jane", "rootCause": "a bad release", "summary": "rolled back"}}});
    incidents
        .patch("outage", &PatchParams::default(), &Patch::Merge(&resolve))
        .await
        .unwrap();
    let finished = incident_where(&client, &ns, "outage", "every message settled", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.communication.as_ref())
            .is_some_and(|c| {
                c.outbox.len() == 6 && c.outbox.iter().all(|d| d.state != DeliveryState::Pending)
            })
    })
    .await;

    let posts = api.posts.lock().unwrap().clone();
    let threads: Vec<(Option<&str>, Option<bool>)> = posts
        .iter()
        .map(|p| (p["thread_ts"].as_str(), p["reply_broadcast"].as_bool()))
        .collect();
    let opening = posts[0]["ts"].as_str().unwrap();
    assert_eq!(
        threads,
        [
            (None, None),
            (Some(opening), None),
            (Some(opening), Some(true))
        ],
        "the opening, the acknowledgement in its thread, the resolution in it and in the channel"
    );
    let opening_text = posts[0]["text"].as_str().unwrap();
    assert!(
        opening_text
            .contains("&lt;!channel&gt; api down &amp; &lt;https://evil.example|click here&gt;"),
        "{opening_text}"
    );
    for post in &posts {
        let text = post["text"].as_str().unwrap();
        assert!(
            !text.contains("<!channel>") && !text.contains("<https://evil"),
            "{text}"
        );
        let blocks = post["blocks"].to_string();
        assert!(
            !blocks.contains("<!channel>") && !blocks.contains("<https://evil"),
            "{blocks}"
        );
    }
    let outbox = &finished
        .status
        .as_ref()
        .and_then(|s| s.communication.as_ref())
        .unwrap()
        .outbox;
    let bot_opening = outbox
        .iter()
        .find(|d| d.channel == "slack-bot" && d.key == "Opened")
        .unwrap();
    assert_eq!(bot_opening.state, DeliveryState::Sent);
    assert_eq!(bot_opening.external_ref.as_deref(), Some(opening));
    // Slack's refusal, though answered 200, fails the message for good.
    let refused: Vec<(&str, DeliveryState, Option<&str>)> = outbox
        .iter()
        .filter(|d| d.channel == "slack-wrong-channel")
        .map(|d| (d.key.as_str(), d.state, d.last_error.as_deref()))
        .collect();
    assert_eq!(
        refused,
        [
            (
                "Opened",
                DeliveryState::Failed,
                Some("200 OK, refused: channel_not_found")
            ),
            (
                "Acknowledged",
                DeliveryState::Failed,
                Some("200 OK, refused: channel_not_found")
            ),
            (
                "Resolved/1",
                DeliveryState::Failed,
                Some("200 OK, refused: channel_not_found")
            ),
        ]
    );
}
