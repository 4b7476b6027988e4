//! Opsgenie Alert API v2 (docs.opsgenie.com, "Alert API"; the limits from
//! "Alerts and alert fields"): an incident is one alert per channel, known
//! by an alias of ours, so every later request names it without asking
//! Opsgenie for its id. Requests are `Authorization: GenieKey <apiKey>`
//! and answered 202 with a `requestId`: Opsgenie processes them later.
//! Pure; what it decides mirrors PagerDuty (`payloads::pagerduty`).

use reqwest::Url;
use serde_json::{Map, Value, json};

use super::{payloads::clip, templates::Fields};
use crate::crd::{Incident, NotifyEvent, OpsgenieResponderType, OpsgenieSettings, Phase, Severity};

/// Characters in an alert's message.
pub const MESSAGE: usize = 130;
/// Characters in an alias.
pub const ALIAS: usize = 512;
/// Characters in a description.
pub const DESCRIPTION: usize = 15_000;
/// Characters in a note.
pub const NOTE: usize = 25_000;
/// Tags on an alert, and characters in one.
pub const TAGS: usize = 20;
pub const TAG: usize = 50;
/// Characters in `source`, `user` and `entity`.
const SOURCE: usize = 100;
const USER: usize = 100;
const ENTITY: usize = 512;
/// Who Opsgenie says acted, when nobody did by name.
const OPERATOR: &str = "healing-guard";

/// What a message does to the channel's alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum Action {
    /// `POST /v2/alerts`: opens it, or, open already, counts up its `count`.
    Create,
    /// `POST /v2/alerts/{alias}/acknowledge?identifierType=alias`.
    Acknowledge,
    /// `POST /v2/alerts/{alias}/close?identifierType=alias`.
    Close,
    /// `POST /v2/alerts/{alias}/notes?identifierType=alias`: the message
    /// on the alert's timeline, notifying nobody.
    Note,
}

/// Opsgenie's priority for ours: P0 is its P1, down to P3 as P4 (P5,
/// informational, is not used).
pub fn priority(severity: Severity) -> &'static str {
    match severity {
        Severity::P0 => "P1",
        Severity::P1 => "P2",
        Severity::P2 => "P3",
        Severity::P3 => "P4",
    }
}

/// The alias of the alert `channel` keeps for `incident`: stable for the
/// incident's life, and one per channel, since two channels may share an
/// Opsgenie account and a page folded into another channel's open alert
/// would notify nobody. `:` keeps it one path segment (names have none).
pub fn alias(incident: &Incident, fields: &Fields, channel: &str) -> String {
    let uid = incident.metadata.uid.as_deref().unwrap_or(&fields.id);
    let long = format!("{}:{}:{uid}:{channel}", fields.namespace, fields.id);
    if long.chars().count() <= ALIAS {
        long
    } else {
        format!("{uid}:{channel}")
    }
}

/// What a message about `event` does. Like PagerDuty's `event_action`, it
/// follows the incident: closed, the alert is closed; a page, an opening
/// or a reopening creates it; so does any message while this channel has
/// no alert open (`alert_open`: its last message sent did not close it),
/// since an alert must exist to hear more. The acknowledgement
/// acknowledges it; every other moment is a note on it, where PagerDuty
/// could only fold a trigger into the alert's log.
pub fn action(incident: &Incident, event: NotifyEvent, alert_open: bool) -> Action {
    let phase = incident.status.as_ref().and_then(|s| s.phase);
    if phase.is_some_and(Phase::is_closed) {
        Action::Close
    } else if matches!(
        event,
        NotifyEvent::Paged | NotifyEvent::Opened | NotifyEvent::Reopened
    ) || !alert_open
    {
        Action::Create
    } else if event == NotifyEvent::Acknowledged {
        Action::Acknowledge
    } else {
        Action::Note
    }
}

/// Our tags and the channel's, each at most 50 characters, 20 at most.
fn tags(fields: &Fields, settings: Option<&OpsgenieSettings>) -> Vec<String> {
    let own = [
        OPERATOR.to_owned(),
        fields.severity.clone(),
        fields.incident_type.clone(),
        format!("namespace:{}", fields.namespace),
    ];
    let theirs = settings.into_iter().flat_map(|s| s.tags.iter().cloned());
    let mut tags: Vec<String> = Vec::new();
    for tag in own.into_iter().chain(theirs) {
        let tag = clip(&tag, TAG);
        if !tags.contains(&tag) && tags.len() < TAGS {
            tags.push(tag);
        }
    }
    tags
}

fn responders(settings: Option<&OpsgenieSettings>) -> Vec<Value> {
    settings
        .into_iter()
        .flat_map(|s| &s.responders)
        .map(|responder| match responder.type_ {
            // A user is named by username; the others by name.
            OpsgenieResponderType::User => json!({"type": "user", "username": responder.name}),
            OpsgenieResponderType::Team => json!({"type": "team", "name": responder.name}),
            OpsgenieResponderType::Escalation => {
                json!({"type": "escalation", "name": responder.name})
            }
            OpsgenieResponderType::Schedule => json!({"type": "schedule", "name": responder.name}),
        })
        .collect()
}

/// The body of a create: a short message, the whole text as description,
/// the incident in `details` (string values, as Opsgenie keeps them).
pub fn create(
    incident: &Incident,
    alias: &str,
    text: &str,
    fields: &Fields,
    settings: Option<&OpsgenieSettings>,
) -> Value {
    let mut details = Map::new();
    for (key, value) in [
        ("incident", &fields.id),
        ("namespace", &fields.namespace),
        ("target", &fields.target),
        ("type", &fields.incident_type),
        ("status", &fields.status),
        ("phase", &fields.phase),
        ("event", &fields.event),
    ] {
        details.insert(key.to_owned(), Value::from(value.as_str()));
    }
    if let Some(uid) = &incident.metadata.uid {
        details.insert("uid".to_owned(), Value::from(uid.as_str()));
    }
    let mut body = json!({
        "message": clip(&format!("[{}] {}", fields.severity, fields.title), MESSAGE),
        "alias": alias,
        "description": clip(text, DESCRIPTION),
        "priority": priority(incident.spec.severity),
        "tags": tags(fields, settings),
        "details": details,
        "entity": clip(&format!("{}/{}", fields.namespace, fields.target), ENTITY),
        "source": clip(OPERATOR, SOURCE),
    });
    let responders = responders(settings);
    if !responders.is_empty() {
        body["responders"] = Value::from(responders);
    }
    body
}

/// The body of an acknowledge, close or note: the message as the note,
/// and who acted (the responder who acknowledged, else the operator).
pub fn follow_up(text: &str, fields: &Fields) -> Value {
    let user = if fields.commander == "unassigned" {
        OPERATOR
    } else {
        fields.commander.as_str()
    };
    json!({
        "note": clip(text, NOTE),
        "user": clip(user, USER),
        "source": clip(OPERATOR, SOURCE),
    })
}

/// Why the Secret's `url` gives no address for the API.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The parser's reason only: the URL itself is a secret.
    #[error("the Secret's url is not a URL: {0}")]
    NotUrl(String),
    #[error("the Secret's url cannot take a path")]
    NoPath,
}

/// Where `action` on the alert `alias` is sent, under the account's API
/// (`https://api.opsgenie.com`, or `https://api.eu.opsgenie.com`).
pub fn url(base: &str, action: Action, alias: &str) -> Result<Url, UrlError> {
    let mut url = Url::parse(base).map_err(|error| UrlError::NotUrl(error.to_string()))?;
    {
        let mut path = url.path_segments_mut().map_err(|()| UrlError::NoPath)?;
        path.pop_if_empty().extend(["v2", "alerts"]);
        match action {
            Action::Create => {}
            Action::Acknowledge => {
                path.extend([alias, "acknowledge"]);
            }
            Action::Close => {
                path.extend([alias, "close"]);
            }
            Action::Note => {
                path.extend([alias, "notes"]);
            }
        }
    }
    if action != Action::Create {
        url.query_pairs_mut().append_pair("identifierType", "alias");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::communication::templates::fields;

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

    fn fields_of(incident: &Incident) -> Fields {
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        fields(incident, NotifyEvent::Opened, None, None, now)
    }

    #[test]
    fn the_alert_follows_the_incident() {
        use NotifyEvent::*;
        for (phase, acknowledged, event, open, expected) in [
            ("Triggered", false, Opened, false, Action::Create),
            ("Triggered", false, Paged, true, Action::Create),
            ("Triggered", false, Update, false, Action::Create),
            ("Triggered", false, Update, true, Action::Note),
            (
                "Acknowledged",
                true,
                Acknowledged,
                true,
                Action::Acknowledge,
            ),
            ("Mitigating", true, StepApplied, true, Action::Note),
            ("Mitigating", true, Escalated, true, Action::Note),
            ("Resolved", true, Resolved, true, Action::Close),
            ("Declined", false, Update, true, Action::Close),
            ("Triggered", true, Reopened, false, Action::Create),
        ] {
            assert_eq!(
                action(&incident(phase, acknowledged), event, open),
                expected,
                "{phase} {event} open={open}"
            );
        }
    }

    #[test]
    fn a_create_is_the_alert_as_opsgenie_documents_it() {
        let incident = incident("Triggered", false);
        let fields = fields_of(&incident);
        let alias = alias(&incident, &fields, "opsgenie-sre");
        assert_eq!(alias, "hg:api-down:0f0e-uid:opsgenie-sre");
        let settings: OpsgenieSettings = serde_json::from_value(json!({
            "responders": [{"type": "Team", "name": "sre"}, {"type": "User", "name": "jane@example.com"}],
            "tags": ["payments", "P0"]
        }))
        .unwrap();
        let body = create(
            &incident,
            &alias,
            "🚨 INCIDENT ALERT - P0\nTitle: API down",
            &fields,
            Some(&settings),
        );
        assert_eq!(
            body,
            json!({
                "message": "[P0] API down",
                "alias": "hg:api-down:0f0e-uid:opsgenie-sre",
                "description": "🚨 INCIDENT ALERT - P0\nTitle: API down",
                "priority": "P1",
                "tags": ["healing-guard", "P0", "ServiceOutage", "namespace:hg", "payments"],
                "details": {"incident": "api-down", "namespace": "hg", "target": "Deployment/api",
                            "type": "ServiceOutage", "status": "Investigating", "phase": "Triggered",
                            "event": "Opened", "uid": "0f0e-uid"},
                "entity": "hg/Deployment/api",
                "source": "healing-guard",
                "responders": [{"type": "team", "name": "sre"},
                               {"type": "user", "username": "jane@example.com"}]
            })
        );
        let long_title = Fields {
            title: "x".repeat(300),
            ..fields.clone()
        };
        let clipped = create(&incident, &alias, "t", &long_title, None);
        assert_eq!(
            clipped["message"].as_str().unwrap().chars().count(),
            MESSAGE
        );
        assert!(clipped.get("responders").is_none());
        let priorities: Vec<&str> = [Severity::P0, Severity::P1, Severity::P2, Severity::P3]
            .into_iter()
            .map(priority)
            .collect();
        assert_eq!(priorities, ["P1", "P2", "P3", "P4"]);
    }

    #[test]
    fn follow_ups_name_the_alert_by_alias() {
        let acknowledged = incident("Acknowledged", true);
        let fields = fields_of(&acknowledged);
        assert_eq!(
            follow_up("📊 INCIDENT UPDATE - P0", &fields),
            json!({"note": "📊 INCIDENT UPDATE - P0", "user": "jane", "source": "healing-guard"})
        );
        let base = "https://api.eu.opsgenie.com";
        let at = |action| url(base, action, "hg:api-down:u:og").unwrap().to_string();
        assert_eq!(at(Action::Create), "https://api.eu.opsgenie.com/v2/alerts");
        assert_eq!(
            at(Action::Acknowledge),
            "https://api.eu.opsgenie.com/v2/alerts/hg:api-down:u:og/acknowledge?identifierType=alias"
        );
        assert_eq!(
            at(Action::Close),
            "https://api.eu.opsgenie.com/v2/alerts/hg:api-down:u:og/close?identifierType=alias"
        );
        assert_eq!(
            url("http://127.0.0.1:9/opsgenie/", Action::Note, "a:b")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9/opsgenie/v2/alerts/a:b/notes?identifierType=alias"
        );
    }
}
