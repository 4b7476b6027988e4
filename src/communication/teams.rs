//! Microsoft Teams through a Workflows webhook ("When a Teams webhook
//! request is received"), which replaced the retired Office 365
//! connectors. Workflows post Adaptive Cards only, not the old
//! MessageCard (learn.microsoft.com, Teams platform: "Create and send
//! messages", known issues), wrapped as a `message` whose one attachment
//! has `contentType` `application/vnd.microsoft.card.adaptive`. The card
//! follows adaptivecards.io's schema 1.4 (TextBlock `color`: Default,
//! Dark, Light, Accent, Good, Warning, Attention; FactSet `facts` of
//! `title`/`value`; `Action.OpenUrl` with `title` and `url`). Pure.

use serde_json::{Value, json};

use super::{payloads::clip, templates::Fields};
use crate::crd::{Incident, NotifyEvent, Phase, Severity};

/// The attachment's content type a Workflows webhook posts as a card.
pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// The card's schema version (1.4 renders in every Teams client).
pub const CARD_VERSION: &str = "1.4";
/// Characters in a fact's title; longer "labels" read as text instead.
const FACT_TITLE: usize = 40;
/// Characters in one text block or fact value (a Teams message is 28 KB at most).
const TEXT: usize = 4000;

/// A link on the card, its URL rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub title: String,
    pub url: String,
}

/// The header's colour: the incident's urgency while it is open, Good
/// once it is over.
pub fn colour(severity: Severity, event: NotifyEvent, phase: Option<Phase>) -> &'static str {
    if event == NotifyEvent::Resolved || phase.is_some_and(Phase::is_closed) {
        return "Good";
    }
    match severity {
        Severity::P0 | Severity::P1 => "Attention",
        Severity::P2 => "Warning",
        Severity::P3 => "Accent",
    }
}

/// The card's body from the message: its first line as the header, its
/// `Label: value` lines as facts (the runbook's templates are written so),
/// other lines as text, and where the incident is, in small print.
fn body(header_colour: &str, text: &str, fields: &Fields) -> Vec<Value> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let mut blocks = vec![json!({
        "type": "TextBlock", "text": clip(header, TEXT), "size": "Large",
        "weight": "Bolder", "color": header_colour, "wrap": true
    })];
    let mut facts: Vec<Value> = Vec::new();
    let flush = |facts: &mut Vec<Value>, blocks: &mut Vec<Value>| {
        if !facts.is_empty() {
            blocks.push(json!({"type": "FactSet", "facts": std::mem::take(facts)}));
        }
    };
    for line in lines.map(str::trim).filter(|line| !line.is_empty()) {
        match line.split_once(": ") {
            Some((title, value))
                if title.chars().count() <= FACT_TITLE && !value.trim().is_empty() =>
            {
                facts.push(json!({"title": title, "value": clip(value.trim(), TEXT)}));
            }
            _ => {
                flush(&mut facts, &mut blocks);
                blocks.push(json!({"type": "TextBlock", "text": clip(line, TEXT), "wrap": true}));
            }
        }
    }
    flush(&mut facts, &mut blocks);
    blocks.push(json!({
        "type": "TextBlock", "size": "Small", "isSubtle": true, "wrap": true,
        "text": format!("Incident {}/{} · {} · {}", fields.namespace, fields.id, fields.target, fields.phase)
    }));
    blocks
}

/// The request a Workflows webhook turns into a card in its channel.
pub fn card(
    incident: &Incident,
    event: NotifyEvent,
    text: &str,
    fields: &Fields,
    links: &[Link],
) -> Value {
    let phase = incident.status.as_ref().and_then(|s| s.phase);
    let header_colour = colour(incident.spec.severity, event, phase);
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body(header_colour, text, fields),
        "msteams": {"width": "Full"},
    });
    if !links.is_empty() {
        content["actions"] = links
            .iter()
            .map(|link| json!({"type": "Action.OpenUrl", "title": link.title, "url": link.url}))
            .collect();
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": content,
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::communication::templates::Fields;

    fn incident(severity: &str, phase: &str) -> Incident {
        serde_json::from_value(json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-outage", "namespace": "healing-guard", "uid": "u-1"},
            "spec": {"title": "healing-guard API is down", "severity": severity, "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "healing-guard"}},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn an_opening_is_an_adaptive_card_with_facts_and_links() {
        let text = "🚨 INCIDENT ALERT - P0\nTitle: healing-guard API is down\nStatus: Investigating\n\nEvery pod restarts";
        let links = [Link {
            title: "Dashboard".into(),
            url: "https://grafana.example.com/d/pods?var-namespace=healing-guard".into(),
        }];
        let fields = Fields::example();
        let body = card(
            &incident("P0", "Triggered"),
            NotifyEvent::Opened,
            text,
            &fields,
            &links,
        );
        assert_eq!(
            body,
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": [
                            {"type": "TextBlock", "text": "🚨 INCIDENT ALERT - P0", "size": "Large",
                             "weight": "Bolder", "color": "Attention", "wrap": true},
                            {"type": "FactSet", "facts": [
                                {"title": "Title", "value": "healing-guard API is down"},
                                {"title": "Status", "value": "Investigating"}
                            ]},
                            {"type": "TextBlock", "text": "Every pod restarts", "wrap": true},
                            {"type": "TextBlock", "size": "Small", "isSubtle": true, "wrap": true,
                             "text": "Incident healing-guard/api-outage · Deployment/healing-guard · Triggered"}
                        ],
                        "msteams": {"width": "Full"},
                        "actions": [{"type": "Action.OpenUrl", "title": "Dashboard",
                                     "url": "https://grafana.example.com/d/pods?var-namespace=healing-guard"}]
                    }
                }]
            })
        );
    }

    #[test]
    fn the_header_says_how_urgent_and_whether_it_is_over() {
        let colours: Vec<String> = [
            ("P0", "Triggered", NotifyEvent::Opened),
            ("P1", "Mitigating", NotifyEvent::StepApplied),
            ("P2", "Triggered", NotifyEvent::Opened),
            ("P3", "Triggered", NotifyEvent::Update),
            ("P0", "Resolved", NotifyEvent::Resolved),
        ]
        .into_iter()
        .map(|(severity, phase, event)| {
            let incident = incident(severity, phase);
            let body = card(&incident, event, "header", &Fields::example(), &[]);
            assert!(body["attachments"][0]["content"].get("actions").is_none());
            body["attachments"][0]["content"]["body"][0]["color"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
        assert_eq!(
            colours,
            ["Attention", "Attention", "Warning", "Accent", "Good"]
        );
    }
}
