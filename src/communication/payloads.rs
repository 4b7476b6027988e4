//! What each kind of receiver is sent, as its documentation says, built
//! from the rendered message and the incident. Pure; the limits each
//! receiver sets (Slack's 3,000 characters per text block, PagerDuty's
//! 1,024 for a summary) are kept here.

use serde_json::{Value, json};

use super::{
    send,
    templates::{Fields, status_word},
};
use crate::crd::{Incident, NotifyEvent, Phase, Severity};

/// Slack: characters in one section's text.
pub const SLACK_TEXT: usize = 3000;
/// Slack: characters in a header.
pub const SLACK_HEADER: usize = 150;
/// Slack: blocks in one message.
pub const SLACK_BLOCKS: usize = 50;
/// PagerDuty: characters in a summary.
pub const PAGERDUTY_SUMMARY: usize = 1024;

/// `text` cut to at most `max` characters, with an ellipsis where it was cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// A generic webhook: the message and the incident, as JSON.
pub fn webhook(
    incident: &Incident,
    event: NotifyEvent,
    key: &str,
    text: &str,
    fields: &Fields,
) -> Value {
    json!({
        "version": "v1",
        "event": event.to_string(),
        "key": key,
        "text": text,
        "incident": {
            "id": fields.id,
            "uid": incident.metadata.uid,
            "namespace": fields.namespace,
            "title": fields.title,
            "severity": fields.severity,
            "type": fields.incident_type,
            "phase": fields.phase,
            "status": fields.status,
            "target": fields.target,
            "commander": fields.commander,
        }
    })
}

/// Slack (incoming webhook, Block Kit): the first line as a header, the
/// rest in sections of at most 3,000 characters, and the whole as the
/// notification's fallback text.
pub fn slack(text: &str) -> Value {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let body: Vec<&str> = lines.collect();
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": clip(header, SLACK_HEADER), "emoji": true}
    })];
    // Sections cut at line ends where possible.
    let mut section = String::new();
    for line in body {
        let line = clip(line, SLACK_TEXT);
        if section.chars().count() + line.chars().count() + 1 > SLACK_TEXT {
            blocks.push(section_block(&section));
            section.clear();
        }
        if !section.is_empty() {
            section.push('\n');
        }
        section.push_str(&line);
    }
    if !section.is_empty() {
        blocks.push(section_block(&section));
    }
    blocks.truncate(SLACK_BLOCKS);
    json!({"text": clip(text, SLACK_TEXT), "blocks": blocks})
}

/// `chat.postMessage`'s body: the message in `channel`, a reply in
/// `thread` if given, and also shown in the channel when `broadcast`.
pub fn slack_post(message: Value, channel: &str, thread: Option<&str>, broadcast: bool) -> Value {
    let mut body = message;
    body["channel"] = json!(channel);
    if let Some(thread) = thread {
        body["thread_ts"] = json!(thread);
        if broadcast {
            body["reply_broadcast"] = json!(true);
        }
    }
    body
}

/// What Slack's Web API answer says: `ok` with the message's `ts`, or the
/// `error` it was refused with.
pub fn slack_answer(answer: &Value) -> send::Answer {
    if answer["ok"].as_bool() == Some(true) {
        return send::Answer::Accepted(answer["ts"].as_str().map(str::to_owned));
    }
    match answer["error"].as_str() {
        Some("ratelimited") => send::Answer::Throttled,
        Some(error) => send::Answer::Refused(error.to_owned()),
        None => send::Answer::Refused("no ok in the answer".to_owned()),
    }
}

fn section_block(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// PagerDuty's severity for ours.
pub fn pagerduty_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::P0 => "critical",
        Severity::P1 => "error",
        Severity::P2 => "warning",
        Severity::P3 => "info",
    }
}

/// PagerDuty Events API v2: the alert follows the Incident's phase, keyed
/// by its uid - trigger while open, acknowledge once acknowledged, resolve
/// once over; a page always triggers (a page after an acknowledgement
/// expired must not acknowledge). Never decided from a message's words.
pub fn pagerduty(
    routing_key: &str,
    incident: &Incident,
    event: NotifyEvent,
    text: &str,
    fields: &Fields,
) -> Value {
    let phase = incident.status.as_ref().and_then(|s| s.phase);
    let dedup_key = pagerduty_dedup_key(incident, fields);
    let action = if phase.is_some_and(Phase::is_closed) {
        "resolve"
    } else if event == NotifyEvent::Paged {
        "trigger"
    } else if incident.spec.acknowledged.is_some() {
        "acknowledge"
    } else {
        "trigger"
    };
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key,
    });
    if action == "trigger" {
        event["payload"] = json!({
            "summary": clip(&format!("[{}] {}", fields.severity, fields.title), PAGERDUTY_SUMMARY),
            "source": format!("{}/{}", fields.namespace, fields.target),
            "severity": pagerduty_severity(incident.spec.severity),
            "component": fields.target,
            "group": fields.namespace,
            "class": fields.incident_type,
            "custom_details": {"incident": fields.id, "message": text, "status": fields.status},
        });
    }
    event
}

/// The PagerDuty alert of an incident: keyed by its uid.
fn pagerduty_dedup_key(incident: &Incident, fields: &Fields) -> String {
    incident
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| fields.id.clone())
}

/// PagerDuty Events API v2: closes the incident's open alert on this
/// routing key, so that the trigger after it opens a new alert and
/// notifies again. A trigger on an alert that is still open (triggered,
/// or acknowledged by someone whose acknowledgement then expired) is only
/// added to its log and reaches nobody.
pub fn pagerduty_close_for_repage(
    routing_key: &str,
    incident: &Incident,
    fields: &Fields,
) -> Value {
    json!({
        "routing_key": routing_key,
        "event_action": "resolve",
        "dedup_key": pagerduty_dedup_key(incident, fields),
    })
}

/// A PagerDuty event with its routing key (the Secret's) filled in, where
/// the event has it: built without it, so that what is sent can be shown
/// without the credential.
pub fn with_routing_key(mut event: Value, routing_key: &str) -> Value {
    if let Some(fields) = event.as_object_mut() {
        fields.insert("routing_key".to_owned(), Value::from(routing_key));
    }
    event
}

/// Statuspage's incident status for a message about `event`. The moments
/// that move an incident on say where it went (a step applied: identified;
/// mitigated: monitoring; resolved), whatever the phase is by the time the
/// message goes out, so the page walks every status even when the incident
/// moved on quickly; the other messages follow the phase.
pub fn statuspage_status(event: NotifyEvent, phase: Option<Phase>) -> &'static str {
    match event {
        NotifyEvent::Opened | NotifyEvent::Reopened => "investigating",
        NotifyEvent::StepApplied => "identified",
        NotifyEvent::Mitigated => "monitoring",
        NotifyEvent::Resolved => "resolved",
        NotifyEvent::Acknowledged
        | NotifyEvent::Escalated
        | NotifyEvent::Update
        | NotifyEvent::Paged => match status_word(phase) {
            "Identified" => "identified",
            "Resolving" => "monitoring",
            "Resolved" => "resolved",
            _ => "investigating",
        },
    }
}

/// The status the incident had reached by `at`, as its milestones tell:
/// mitigated (monitoring), a step begun or escalated (identified), or
/// investigating.
fn statuspage_status_by(incident: &Incident, at: k8s_openapi::jiff::Timestamp) -> &'static str {
    let Some(status) = &incident.status else {
        return "investigating";
    };
    let by = |time: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        time.is_some_and(|time| time.0 <= at)
    };
    if by(status.milestones.mitigated_at.as_ref()) {
        "monitoring"
    } else if status.steps.iter().any(|step| by(step.started_at.as_ref()))
        || status.timeline.iter().any(|entry| {
            (entry.reason == "Escalated" || entry.reason == "LadderExhausted") && entry.at.0 <= at
        })
    {
        "identified"
    } else {
        "investigating"
    }
}

/// The status a message about `event`, recorded at `recorded`, sets: its
/// moment's own, or for one that follows the phase, the phase's. A message
/// recorded before the resolution and sent after it (after a restart,
/// behind a retry) says where the incident stood when it was recorded: an
/// acknowledgement saying `resolved` would leave the resolution's own
/// update saying it again. The page hears each status once, in order.
pub fn statuspage_status_of(
    event: NotifyEvent,
    incident: &Incident,
    recorded: k8s_openapi::jiff::Timestamp,
) -> &'static str {
    let status = incident.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    let resolved_after = status
        .and_then(|s| s.milestones.resolved_at.as_ref())
        .is_some_and(|resolved| recorded < resolved.0);
    if follows_phase(event) && phase.is_some_and(Phase::is_closed) && resolved_after {
        statuspage_status_by(incident, recorded)
    } else {
        statuspage_status(event, phase)
    }
}

fn follows_phase(event: NotifyEvent) -> bool {
    matches!(
        event,
        NotifyEvent::Acknowledged
            | NotifyEvent::Escalated
            | NotifyEvent::Update
            | NotifyEvent::Paged
    )
}

/// The statuses a message of `event` may have set when it was sent at
/// `at`: its own, or, for one whose status follows the phase, any status of
/// an open incident if the incident was still open then (its phase then is
/// not kept), else `resolved`.
pub fn statuspage_statuses_at(
    event: NotifyEvent,
    incident: &Incident,
    at: k8s_openapi::jiff::Timestamp,
) -> Vec<&'static str> {
    if !follows_phase(event) {
        return vec![statuspage_status(event, None)];
    }
    let resolved_by_then = incident
        .status
        .as_ref()
        .and_then(|s| s.milestones.resolved_at.as_ref())
        .is_some_and(|resolved| resolved.0 <= at);
    if resolved_by_then {
        vec!["resolved"]
    } else {
        vec!["investigating", "identified", "monitoring"]
    }
}

/// Statuspage's component status: by severity while the incident is open,
/// operational once its status is resolved.
pub fn component_status(severity: Severity, status: &str) -> &'static str {
    if status == "resolved" {
        return "operational";
    }
    match severity {
        Severity::P0 => "major_outage",
        Severity::P1 => "partial_outage",
        Severity::P2 | Severity::P3 => "degraded_performance",
    }
}

/// Where a Statuspage incident says which Incident it tells of: its
/// metadata, `{"healing_guard": {"incident_uid": ...}}`.
pub const STATUSPAGE_METADATA: &str = "healing_guard";

/// Statuspage v1: the body of an incident create or update. Its metadata
/// names the Incident, so that an incident created by an attempt whose
/// answer was lost can be found again rather than created twice.
pub fn statuspage(
    incident: &Incident,
    event: NotifyEvent,
    recorded: k8s_openapi::jiff::Timestamp,
    component: Option<&str>,
    text: &str,
    fields: &Fields,
) -> Value {
    let status = statuspage_status_of(event, incident, recorded);
    let mut body = json!({
        "name": clip(&fields.title, 255),
        "status": status,
        "body": text,
        "metadata": {STATUSPAGE_METADATA: {"incident_uid": incident.metadata.uid}},
    });
    if let Some(component) = component {
        body["component_ids"] = json!([component]);
        body["components"] = json!({component: component_status(incident.spec.severity, status)});
    }
    json!({"incident": body})
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    use super::*;
    use crate::communication::templates::{OPENED, fields, render};

    fn incident(phase: &str, acknowledged: bool) -> Incident {
        let mut spec = json!({"title": "API down", "severity": "P0", "type": "ServiceOutage",
                              "target": {"kind": "Deployment", "name": "api"}});
        if acknowledged {
            spec["acknowledged"] = json!({"by": "jane"});
        }
        serde_json::from_value(json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-down", "namespace": "hg", "uid": "0f0e-uid"},
            "spec": spec, "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn a_bot_token_post_replies_in_the_thread_and_broadcasts_the_resolution() {
        let message = slack("✅ INCIDENT RESOLVED - P0\nTitle: API down");
        let opening = slack_post(message.clone(), "C123", None, false);
        assert_eq!(opening["channel"], "C123");
        assert!(opening.get("thread_ts").is_none() && opening.get("reply_broadcast").is_none());
        let update = slack_post(message.clone(), "C123", Some("1700000000.000100"), false);
        assert_eq!(update["thread_ts"], "1700000000.000100");
        assert!(update.get("reply_broadcast").is_none());
        let resolved = slack_post(message, "C123", Some("1700000000.000100"), true);
        assert_eq!(resolved["reply_broadcast"], true);
        assert_eq!(
            resolved["blocks"][0]["text"]["text"],
            "✅ INCIDENT RESOLVED - P0"
        );

        let read = |answer: Value| match slack_answer(&answer) {
            send::Answer::Accepted(ts) => format!("accepted {ts:?}"),
            send::Answer::Refused(why) => format!("refused {why}"),
            send::Answer::Throttled => "throttled".to_owned(),
        };
        assert_eq!(
            read(json!({"ok": true, "channel": "C123", "ts": "1700000000.000200"})),
            "accepted Some(\"1700000000.000200\")"
        );
        assert_eq!(
            read(json!({"ok": false, "error": "channel_not_found"})),
            "refused channel_not_found"
        );
        assert_eq!(
            read(json!({"ok": false, "error": "ratelimited"})),
            "throttled"
        );
    }

    fn at() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_message_recorded_before_the_resolution_and_sent_after_it_keeps_its_status() {
        let mut resolved: Incident = serde_json::from_value(json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-down", "namespace": "hg", "uid": "0f0e-uid"},
            "spec": {"title": "API down", "severity": "P0", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"}},
            "status": {"phase": "Resolved", "milestones": {
                "detectedAt": "2026-01-01T00:00:00Z", "acknowledgedAt": "2026-01-01T00:02:00Z",
                "resolvedAt": "2026-01-01T00:10:00Z"}}
        }))
        .unwrap();
        let status_of = |incident: &Incident, event, recorded: &str| {
            statuspage_status_of(event, incident, recorded.parse().unwrap())
        };
        // Recorded at the acknowledgement, sent after the resolution.
        assert_eq!(
            status_of(&resolved, NotifyEvent::Acknowledged, "2026-01-01T00:02:00Z"),
            "investigating"
        );
        assert_eq!(
            status_of(&resolved, NotifyEvent::Resolved, "2026-01-01T00:10:00Z"),
            "resolved"
        );
        // Recorded once resolved, it says so.
        assert_eq!(
            status_of(&resolved, NotifyEvent::Update, "2026-01-01T00:10:00Z"),
            "resolved"
        );
        // Mitigated before it was recorded: monitoring.
        resolved.status.as_mut().unwrap().milestones.mitigated_at =
            Some(Time("2026-01-01T00:01:00Z".parse().unwrap()));
        assert_eq!(
            status_of(&resolved, NotifyEvent::Escalated, "2026-01-01T00:02:00Z"),
            "monitoring"
        );
        // An open incident's messages follow its phase.
        let open = incident("Monitoring", true);
        assert_eq!(
            status_of(&open, NotifyEvent::Acknowledged, "2025-12-31T00:00:00Z"),
            "monitoring"
        );
    }

    fn message(incident: &Incident) -> (String, Fields) {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let fields = fields(incident, NotifyEvent::Opened, None, None, now);
        (render("opened", OPENED, &fields).unwrap(), fields)
    }

    #[test]
    fn pagerduty_follows_the_phase_keyed_by_the_incident() {
        for (phase, acknowledged, action) in [
            ("Triggered", false, "trigger"),
            ("Mitigating", true, "acknowledge"),
            ("Resolved", true, "resolve"),
            ("Declined", false, "resolve"),
        ] {
            let incident = incident(phase, acknowledged);
            let (text, fields) = message(&incident);
            let event = pagerduty("R0UT1NG", &incident, NotifyEvent::Update, &text, &fields);
            assert_eq!(event["event_action"], action, "{phase}");
            assert_eq!(event["dedup_key"], "0f0e-uid");
            assert_eq!(event["routing_key"], "R0UT1NG");
            assert_eq!(event.get("payload").is_some(), action == "trigger");
        }
        // A page after an acknowledgement expired triggers, never acknowledges.
        let acked = incident("Acknowledged", true);
        let (text, fields) = message(&acked);
        let page = pagerduty("R", &acked, NotifyEvent::Paged, &text, &fields);
        assert_eq!(page["event_action"], "trigger");
        let incident = incident("Triggered", false);
        let (text, fields) = message(&incident);
        let event = pagerduty("R", &incident, NotifyEvent::Paged, &text, &fields);
        assert_eq!(event["payload"]["severity"], "critical");
        assert_eq!(event["payload"]["summary"], "[P0] API down");
        assert_eq!(event["payload"]["source"], "hg/Deployment/api");
    }

    #[test]
    fn a_routing_key_added_later_reads_as_one_built_in() {
        let incident = incident("Triggered", false);
        let (text, fields) = message(&incident);
        let built = pagerduty("R0UT1NG", &incident, NotifyEvent::Opened, &text, &fields);
        let blank = pagerduty("", &incident, NotifyEvent::Opened, &text, &fields);
        let added = with_routing_key(blank, "R0UT1NG");
        assert_eq!(added.to_string(), built.to_string());
        let close = pagerduty_close_for_repage("", &incident, &fields);
        assert_eq!(
            with_routing_key(close, "R").to_string(),
            pagerduty_close_for_repage("R", &incident, &fields).to_string()
        );
    }

    #[test]
    fn slack_keeps_within_its_limits() {
        let long = format!(
            "🚨 {}\n{}\n{}",
            "h".repeat(400),
            "a".repeat(5000),
            "b\n".repeat(4000)
        );
        let body = slack(&long);
        let blocks = body["blocks"].as_array().unwrap();
        assert!(blocks.len() <= SLACK_BLOCKS);
        assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= SLACK_HEADER);
        for block in &blocks[1..] {
            assert!(block["text"]["text"].as_str().unwrap().chars().count() <= SLACK_TEXT);
        }
        assert!(body["text"].as_str().unwrap().chars().count() <= SLACK_TEXT);
        let short = slack("🚨 INCIDENT ALERT - P0\nTitle: API down");
        assert_eq!(short["blocks"][0]["text"]["text"], "🚨 INCIDENT ALERT - P0");
        assert_eq!(short["blocks"][1]["text"]["text"], "Title: API down");
    }

    #[test]
    fn the_status_page_walks_with_the_phase() {
        let walk: Vec<&str> = ["Triggered", "Mitigating", "Monitoring", "Resolved"]
            .into_iter()
            .map(|phase| {
                let incident = incident(phase, false);
                let (text, fields) = message(&incident);
                let body = statuspage(
                    &incident,
                    NotifyEvent::Update,
                    at(),
                    Some("api"),
                    &text,
                    &fields,
                );
                match body["incident"]["status"].as_str().unwrap() {
                    "investigating" => "investigating",
                    "identified" => "identified",
                    "monitoring" => "monitoring",
                    _ => "resolved",
                }
            })
            .collect();
        assert_eq!(
            walk,
            ["investigating", "identified", "monitoring", "resolved"]
        );
        let down = incident("Triggered", false);
        let (text, fields) = message(&down);
        assert_eq!(
            statuspage(
                &down,
                NotifyEvent::Opened,
                at(),
                Some("api"),
                &text,
                &fields
            )["incident"]["components"]["api"],
            "major_outage"
        );
        // The moment says where the incident went, though it moved on since.
        let resolved = incident("Resolved", true);
        let (text, fields) = message(&resolved);
        let walk: Vec<Value> = [
            NotifyEvent::Opened,
            NotifyEvent::StepApplied,
            NotifyEvent::Mitigated,
            NotifyEvent::Resolved,
        ]
        .into_iter()
        .map(|event| {
            let body = statuspage(&resolved, event, at(), Some("api"), &text, &fields);
            json!([
                body["incident"]["status"],
                body["incident"]["components"]["api"]
            ])
        })
        .collect();
        assert_eq!(
            walk,
            [
                json!(["investigating", "major_outage"]),
                json!(["identified", "major_outage"]),
                json!(["monitoring", "major_outage"]),
                json!(["resolved", "operational"]),
            ]
        );
    }

    #[test]
    fn a_message_in_doubt_is_looked_for_with_the_status_it_had_when_sent() {
        let at = |t: &str| -> Timestamp { t.parse().unwrap() };
        let mut resolved = incident("Resolved", true);
        if let Some(status) = resolved.status.as_mut() {
            status.milestones.resolved_at = Some(Time(at("2026-01-01T00:05:00Z")));
        }
        // An acknowledgement sent before the resolution said the incident was open.
        assert_eq!(
            statuspage_statuses_at(
                NotifyEvent::Acknowledged,
                &resolved,
                at("2026-01-01T00:04:00Z")
            ),
            ["investigating", "identified", "monitoring"]
        );
        assert_eq!(
            statuspage_statuses_at(
                NotifyEvent::Acknowledged,
                &resolved,
                at("2026-01-01T00:06:00Z")
            ),
            ["resolved"]
        );
        // Events with a status of their own keep it.
        assert_eq!(
            statuspage_statuses_at(
                NotifyEvent::StepApplied,
                &resolved,
                at("2026-01-01T00:04:00Z")
            ),
            ["identified"]
        );
    }
}
