//! One message as its channel would receive it: whether it may be sent at
//! all, its text rendered from the channel's template, and the receiver's
//! request built around it. Everything but the Secret's URL and
//! credentials and the sending itself, so that an offline replay shows
//! exactly what the live notifier would send.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::Value;

use crate::{
    communication::{
        moments, opsgenie, outbox, payloads, send::Outcome, teams, templates, webhook_body,
    },
    crd::{
        ChannelKind, CommunicationStatus, Delivery, DeliveryState, Incident,
        NotificationChannelSpec, NotifyEvent, Templates,
    },
};

/// One message, ready for its channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Composed {
    pub event: NotifyEvent,
    /// The text people read, rendered from the channel's template.
    pub text: String,
    pub request: Request,
}

/// What the receiver is sent, by the kind of channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Slack: `body` POSTed to the Secret's incoming webhook `url`, or,
    /// with a bot `token`, to `chat.postMessage` in the Secret's `channel`:
    /// then in the `thread` of the incident's opening message, and the
    /// resolution also to the channel (`broadcast`).
    Slack {
        body: Value,
        thread: Option<String>,
        broadcast: bool,
    },
    /// A generic webhook: `body` POSTed to the Secret's `url`, with a key
    /// the receiver folds repeats by.
    Webhook {
        body: Value,
        idempotency_key: String,
    },
    /// PagerDuty Events API v2: `event`, after `close_first` for a person
    /// paged before (their alert is still open and a trigger on it would
    /// notify nobody). Both without `routing_key`: it is the Secret's.
    PagerDuty {
        event: Value,
        close_first: Option<Value>,
    },
    /// Statuspage: `body` updates the page's incident `opened`, or creates
    /// one. `recheck`: an attempt's answer was lost; look for it first.
    StatusPage {
        body: Value,
        opened: Option<String>,
        recheck: Option<Recheck>,
    },
    /// An email of the text, with a Message-ID that makes a repeat
    /// recognisable.
    Email {
        subject: String,
        message_id: String,
        from: String,
        to: Vec<String>,
    },
    /// Microsoft Teams: an Adaptive Card POSTed to the Secret's `url` (a
    /// Workflows webhook).
    Teams { body: Value },
    /// Opsgenie Alert API v2: `action` on the channel's alert `alias`,
    /// after `close_first` (a close) for a person paged before, as for
    /// PagerDuty. The API key is the Secret's, added on sending.
    Opsgenie {
        action: opsgenie::Action,
        alias: String,
        body: Value,
        close_first: Option<Value>,
    },
}

/// What to look for on a status page after an attempt whose answer was lost.
#[derive(Clone, Debug, PartialEq)]
pub struct Recheck {
    /// When that attempt began.
    pub since: Timestamp,
    /// The statuses it may have set.
    pub statuses: Vec<&'static str>,
}

/// `Unconfirmed` for a message whose earlier attempt's fate is unknown, to
/// a channel that would deliver a repeat twice: it is not sent again.
pub fn unconfirmed(kind: ChannelKind, delivery: &Delivery) -> Option<Outcome> {
    (outbox::in_doubt(delivery) && !kind.recognises_repeats()).then(|| Outcome::Unconfirmed {
        why: format!(
            "the operator stopped while sending it and {kind} cannot recognise a repeat: \
                 not sent again, so it may be missing"
        ),
    })
}

/// `delivery` as `channel` would receive it at `now`, rendered with the
/// channel's `templates` (its own merged with its ConfigMap's). `recorded`
/// holds what was sent before (a status page's incident, a person paged
/// before); `delivery` is as it was chosen, before it was marked as being
/// sent. Otherwise the outcome already known: unconfirmed, or refused.
pub fn compose(
    incident: &Incident,
    channel: &NotificationChannelSpec,
    templates: &Templates,
    delivery: &Delivery,
    recorded: &CommunicationStatus,
    now: Timestamp,
) -> Result<Composed, Outcome> {
    if let Some(outcome) = unconfirmed(channel.kind, delivery) {
        return Err(outcome);
    }
    let refused = |why: String| Outcome::Refused { why };
    let event = delivery.event;
    let every = channel.updates.of(incident.spec.severity);
    let next = every.and_then(|every| moments::next_update(incident, every, now));
    let (name, source) = templates::template_for(event, templates);
    let escape = match channel.kind {
        ChannelKind::Slack => templates::Escape::Slack,
        _ => templates::Escape::None,
    };
    let text = templates::render_escaped(
        name,
        &source,
        &templates::fields(incident, event, every, next, now),
        escape,
    )
    .map_err(|error| refused(error.to_string()))?;
    // Receivers' structured fields carry no next-update time.
    let fields = templates::fields(incident, event, every, None, now);
    let request = match channel.kind {
        ChannelKind::Slack => Request::Slack {
            body: payloads::slack(&text),
            thread: slack_thread(recorded, delivery),
            broadcast: event == NotifyEvent::Resolved,
        },
        ChannelKind::Webhook => Request::Webhook {
            body: match &templates.body {
                Some(source) => webhook_body::render(
                    source,
                    &fields,
                    &text,
                    &delivery.key,
                    &incident.uid().unwrap_or_default(),
                )
                .map_err(|error| refused(error.to_string()))?,
                None => payloads::webhook(incident, event, &delivery.key, &text, &fields),
            },
            idempotency_key: format!(
                "{}/{}/{}",
                incident.uid().unwrap_or_default(),
                delivery.channel,
                delivery.key
            ),
        },
        ChannelKind::PagerDuty => Request::PagerDuty {
            event: payloads::pagerduty("", incident, event, &text, &fields),
            // Sent again in doubt, this may page twice, never not at all.
            close_first: paged_before(recorded, delivery)
                .then(|| payloads::pagerduty_close_for_repage("", incident, &fields)),
        },
        ChannelKind::StatusPage => {
            let component = channel
                .status_page
                .as_ref()
                .and_then(|s| s.component_id.as_deref());
            Request::StatusPage {
                body: payloads::statuspage(
                    incident,
                    event,
                    delivery.recorded_at.0,
                    component,
                    &text,
                    &fields,
                ),
                opened: statuspage_opened(recorded, delivery),
                recheck: delivery
                    .sending_since
                    .as_ref()
                    .filter(|_| outbox::in_doubt(delivery))
                    .map(|since| Recheck {
                        since: since.0,
                        statuses: payloads::statuspage_statuses_at(event, incident, since.0),
                    }),
            }
        }
        ChannelKind::Email => {
            let Some(settings) = &channel.email else {
                return Err(refused(
                    "an Email channel needs email.from and email.to".into(),
                ));
            };
            Request::Email {
                subject: format!(
                    "{} - {}",
                    text.lines().next().unwrap_or_default(),
                    incident.spec.title
                ),
                message_id: format!(
                    "<{}.{}.{}@healing-guard.io>",
                    incident.uid().unwrap_or_default(),
                    delivery.channel,
                    delivery.key.replace('/', ".")
                ),
                from: settings.from.clone(),
                to: settings.to.clone(),
            }
        }
        ChannelKind::Teams => Request::Teams {
            body: teams::card(
                incident,
                event,
                &text,
                &fields,
                &teams_links(channel, &fields).map_err(|error| refused(error.to_string()))?,
            ),
        },
        ChannelKind::Opsgenie => {
            let alias = opsgenie::alias(incident, &fields, &delivery.channel);
            let action = opsgenie::action(incident, event, opsgenie_alert_open(recorded, delivery));
            // A note is the one request Opsgenie cannot tell a repeat of.
            if action == opsgenie::Action::Note && outbox::in_doubt(delivery) {
                return Err(Outcome::Unconfirmed {
                    why: "the operator stopped while sending it and an Opsgenie note cannot be \
                          recognised as a repeat: not sent again, so it may be missing"
                        .into(),
                });
            }
            let settings = channel.opsgenie.as_ref();
            Request::Opsgenie {
                action,
                body: match action {
                    opsgenie::Action::Create => {
                        opsgenie::create(incident, &alias, &text, &fields, settings)
                    }
                    _ => opsgenie::follow_up(&text, &fields),
                },
                alias,
                close_first: paged_before(recorded, delivery)
                    .then(|| opsgenie::follow_up("paged again: a new alert follows", &fields)),
            }
        }
    };
    Ok(Composed {
        event,
        text,
        request,
    })
}

/// Whether `delivery` is a page to a channel that was paged before for
/// this incident.
fn paged_before(recorded: &CommunicationStatus, delivery: &Delivery) -> bool {
    delivery.event == NotifyEvent::Paged
        && recorded.outbox.iter().any(|d| {
            d.channel == delivery.channel
                && d.event == NotifyEvent::Paged
                && d.key != delivery.key
                && d.state == DeliveryState::Sent
        })
}

/// The Slack message (its `ts`) that opened the incident in this channel,
/// which later messages reply to. Only `chat.postMessage` answers with one.
fn slack_thread(recorded: &CommunicationStatus, delivery: &Delivery) -> Option<String> {
    if delivery.event == NotifyEvent::Opened {
        return None;
    }
    recorded
        .outbox
        .iter()
        .filter(|d| d.channel == delivery.channel && d.event == NotifyEvent::Opened)
        .filter(|d| d.state == DeliveryState::Sent)
        .find_map(|d| d.external_ref.clone())
}

/// A Teams channel's links, their URLs rendered with the message's fields.
fn teams_links(
    channel: &NotificationChannelSpec,
    fields: &templates::Fields,
) -> Result<Vec<teams::Link>, templates::TemplateError> {
    channel
        .teams
        .iter()
        .flat_map(|settings| &settings.links)
        .map(|link| {
            Ok(teams::Link {
                title: link.title.clone(),
                url: templates::render("teams.links", &link.url, fields)?,
            })
        })
        .collect()
}

/// Whether this Opsgenie channel has an alert open for the incident: the
/// last message it was sent (a channel's go in the outbox's order) did not
/// close it.
fn opsgenie_alert_open(recorded: &CommunicationStatus, delivery: &Delivery) -> bool {
    recorded
        .outbox
        .iter()
        .rfind(|d| {
            d.channel == delivery.channel && d.key != delivery.key && d.state == DeliveryState::Sent
        })
        .is_some_and(|last| last.event != NotifyEvent::Resolved)
}

/// The status page's incident this channel's first message opened, if any.
fn statuspage_opened(recorded: &CommunicationStatus, delivery: &Delivery) -> Option<String> {
    recorded
        .outbox
        .iter()
        .filter(|d| d.channel == delivery.channel && d.state == DeliveryState::Sent)
        .find_map(|d| d.external_ref.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn incident() -> Incident {
        let mut incident: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-down", "namespace": "hg"},
            "spec": {"title": "API down", "severity": "P0", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"}},
            "status": {"phase": "Triggered", "milestones": {"detectedAt": "2026-01-06T10:00:00Z"}}
        }))
        .unwrap();
        incident.metadata.uid = Some("u-1".into());
        incident
    }

    fn channel(kind: &str) -> NotificationChannelSpec {
        serde_json::from_value(serde_json::json!({"kind": kind, "secretRef": {"name": "s"}}))
            .unwrap()
    }

    fn delivery(channel: &str, event: &str, key: &str, state: &str) -> Delivery {
        serde_json::from_value(serde_json::json!({
            "channel": channel, "event": event, "key": key, "state": state,
            "attempts": 0, "recordedAt": "2026-01-06T10:00:01Z"
        }))
        .unwrap()
    }

    fn composed(
        channel: &NotificationChannelSpec,
        delivery: &Delivery,
        recorded: &CommunicationStatus,
    ) -> Result<Composed, Outcome> {
        let now = at("2026-01-06T10:00:05Z");
        compose(
            &incident(),
            channel,
            &channel.templates,
            delivery,
            recorded,
            now,
        )
    }

    #[test]
    fn slack_hears_the_opening_by_the_incidents_title() {
        let opened = delivery("slack", "Opened", "Opened", "Pending");
        let message = composed(&channel("Slack"), &opened, &CommunicationStatus::default())
            .unwrap_or_else(|outcome| panic!("not composed: {outcome:?}"));
        assert_eq!(message.event, NotifyEvent::Opened);
        assert!(message.text.starts_with("🚨 INCIDENT ALERT - P0"));
        assert!(message.text.contains("Title: API down"), "{}", message.text);
        let Request::Slack { body, .. } = &message.request else {
            panic!("expected a Slack request, got {:?}", message.request);
        };
        assert_eq!(body["text"], message.text.as_str());
    }

    #[test]
    fn a_message_in_doubt_is_sent_again_only_where_a_repeat_is_recognised() {
        let mut in_doubt = delivery("c", "Opened", "Opened", "Pending");
        in_doubt.sending_since = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
            "2026-01-06T10:00:02Z",
        )));
        let recorded = CommunicationStatus::default();
        for (kind, resent) in [
            ("Slack", false),
            ("Email", false),
            ("Webhook", true),
            ("PagerDuty", true),
            ("Teams", false),
            ("Opsgenie", true),
        ] {
            let outcome = composed(&channel(kind), &in_doubt, &recorded);
            assert_eq!(
                !matches!(outcome, Err(Outcome::Unconfirmed { .. })),
                resent,
                "{kind}"
            );
        }
        // A status page is looked at first, for the statuses it may have set.
        let Ok(Composed {
            request: Request::StatusPage { recheck, .. },
            ..
        }) = composed(&channel("StatusPage"), &in_doubt, &recorded)
        else {
            panic!("expected a StatusPage request");
        };
        let recheck = recheck.unwrap_or_else(|| panic!("no recheck"));
        assert_eq!(recheck.since, at("2026-01-06T10:00:02Z"));
        assert_eq!(recheck.statuses, ["investigating"]);
    }

    #[test]
    fn a_person_paged_again_has_their_open_alert_closed_first() {
        let first = delivery("pager", "Paged", "Page/0/0/john", "Sent");
        let again = delivery("pager", "Paged", "Page/1/0/john", "Pending");
        let recorded = CommunicationStatus {
            outbox: vec![first.clone(), again.clone()],
            ..CommunicationStatus::default()
        };
        let pagerduty = channel("PagerDuty");
        let close_first = |delivery: &Delivery| match composed(&pagerduty, delivery, &recorded) {
            Ok(Composed {
                request: Request::PagerDuty { event, close_first },
                ..
            }) => {
                assert_eq!(event["event_action"], "trigger");
                assert_eq!(event["routing_key"], "", "the Secret's, added on sending");
                close_first
            }
            other => panic!("expected a PagerDuty request, got {other:?}"),
        };
        assert_eq!(close_first(&first), None);
        let close = close_first(&again).unwrap_or_else(|| panic!("no close"));
        assert_eq!(close["event_action"], "resolve");
        assert_eq!(close["dedup_key"], "u-1");
    }

    fn composed_for(
        incident: &Incident,
        channel: &NotificationChannelSpec,
        delivery: &Delivery,
        recorded: &CommunicationStatus,
    ) -> Result<Composed, Outcome> {
        let now = at("2026-01-06T10:00:05Z");
        compose(
            incident,
            channel,
            &channel.templates,
            delivery,
            recorded,
            now,
        )
    }

    fn in_phase(phase: &str, acknowledged: bool) -> Incident {
        let mut incident = incident();
        if acknowledged {
            incident.spec.acknowledged =
                Some(serde_json::from_value(serde_json::json!({"by": "jane"})).unwrap());
        }
        if let Some(status) = incident.status.as_mut() {
            status.phase = Some(serde_json::from_value(serde_json::json!(phase)).unwrap());
        }
        incident
    }

    fn opsgenie_request(
        composed: Result<Composed, Outcome>,
    ) -> (opsgenie::Action, String, Value, String) {
        match composed {
            Ok(Composed {
                text,
                request:
                    Request::Opsgenie {
                        action,
                        alias,
                        body,
                        close_first: None,
                    },
                ..
            }) => (action, alias, body, text),
            other => panic!("expected an Opsgenie request, got {other:?}"),
        }
    }

    #[test]
    fn opsgenie_is_created_acknowledged_noted_and_closed_by_one_alias() {
        let og = channel("Opsgenie");
        let opened = delivery("og", "Opened", "Opened", "Pending");
        let (action, alias, body, text) = opsgenie_request(composed_for(
            &in_phase("Triggered", false),
            &og,
            &opened,
            &CommunicationStatus::default(),
        ));
        assert_eq!(
            (action, alias.as_str()),
            (opsgenie::Action::Create, "hg:api-down:u-1:og")
        );
        assert_eq!(
            body,
            serde_json::json!({
                "message": "[P0] API down", "alias": "hg:api-down:u-1:og", "description": text,
                "priority": "P1", "tags": ["healing-guard", "P0", "ServiceOutage", "namespace:hg"],
                "details": {"incident": "api-down", "namespace": "hg", "target": "Deployment/api",
                            "type": "ServiceOutage", "status": "Investigating", "phase": "Triggered",
                            "event": "Opened", "uid": "u-1"},
                "entity": "hg/Deployment/api", "source": "healing-guard"
            })
        );
        let recorded = CommunicationStatus {
            outbox: vec![delivery("og", "Opened", "Opened", "Sent")],
            ..CommunicationStatus::default()
        };
        let acked = delivery("og", "Acknowledged", "Acknowledged", "Pending");
        let (action, alias, body, text) = opsgenie_request(composed_for(
            &in_phase("Acknowledged", true),
            &og,
            &acked,
            &recorded,
        ));
        assert_eq!(
            (action, alias.as_str()),
            (opsgenie::Action::Acknowledge, "hg:api-down:u-1:og")
        );
        assert_eq!(
            body,
            serde_json::json!({"note": text, "user": "jane", "source": "healing-guard"})
        );
        let update = delivery("og", "Update", "Update/1", "Pending");
        let (action, ..) = opsgenie_request(composed_for(
            &in_phase("Mitigating", true),
            &og,
            &update,
            &recorded,
        ));
        assert_eq!(action, opsgenie::Action::Note);
        // A note in doubt is not sent again: Opsgenie would add it twice.
        let mut in_doubt = update.clone();
        in_doubt.sending_since = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
            "2026-01-06T10:00:02Z",
        )));
        assert!(matches!(
            composed_for(&in_phase("Mitigating", true), &og, &in_doubt, &recorded),
            Err(Outcome::Unconfirmed { .. })
        ));
        let resolved = delivery("og", "Resolved", "Resolved/0", "Pending");
        let (action, alias, ..) = opsgenie_request(composed_for(
            &in_phase("Resolved", true),
            &og,
            &resolved,
            &recorded,
        ));
        assert_eq!(
            (action, alias.as_str()),
            (opsgenie::Action::Close, "hg:api-down:u-1:og")
        );
    }

    #[test]
    fn teams_hears_an_adaptive_card_with_its_links_rendered() {
        let teams: NotificationChannelSpec = serde_json::from_value(serde_json::json!({
            "kind": "Teams", "secretRef": {"name": "s"},
            "teams": {"links": [{"title": "Pods", "url": "https://grafana.example.com/d/pods?ns={{ namespace }}"}]}
        }))
        .unwrap();
        let opened = delivery("teams", "Opened", "Opened", "Pending");
        let recorded = CommunicationStatus::default();
        let Ok(Composed {
            request: Request::Teams { body },
            ..
        }) = composed_for(&incident(), &teams, &opened, &recorded)
        else {
            panic!("expected a Teams request");
        };
        let attachment = &body["attachments"][0];
        assert_eq!(body["type"], "message");
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(
            (card["type"].as_str(), card["version"].as_str()),
            (Some("AdaptiveCard"), Some("1.4"))
        );
        assert_eq!(
            card["body"][0],
            serde_json::json!({"type": "TextBlock", "text": "🚨 INCIDENT ALERT - P0", "size": "Large",
                               "weight": "Bolder", "color": "Attention", "wrap": true})
        );
        assert_eq!(
            card["body"][1]["facts"][0],
            serde_json::json!({"title": "Title", "value": "API down"})
        );
        assert_eq!(
            card["actions"],
            serde_json::json!([{"type": "Action.OpenUrl", "title": "Pods",
                                "url": "https://grafana.example.com/d/pods?ns=hg"}])
        );
    }

    #[test]
    fn a_webhook_body_template_shapes_the_request_or_refuses_it() {
        let mut hook = channel("Webhook");
        hook.templates.body = Some(
            r#"{"summary": {{ severity ~ " " ~ title }}, "ref": {{ uid ~ "/" ~ key }}, "text": {{ text }}}"#
                .into(),
        );
        let opened = delivery("hook", "Opened", "Opened", "Pending");
        let recorded = CommunicationStatus::default();
        let Ok(Composed {
            text,
            request:
                Request::Webhook {
                    body,
                    idempotency_key,
                },
            ..
        }) = composed_for(&incident(), &hook, &opened, &recorded)
        else {
            panic!("expected a Webhook request");
        };
        assert_eq!(
            body,
            serde_json::json!({"summary": "P0 API down", "ref": "u-1/Opened", "text": text})
        );
        assert_eq!(idempotency_key, "u-1/hook/Opened");
        hook.templates.body = Some(r#"{"text": "{{ text }}"#.into());
        let Err(Outcome::Refused { why }) = composed_for(&incident(), &hook, &opened, &recorded)
        else {
            panic!("a body that is not JSON is refused");
        };
        assert!(
            why.starts_with("template body does not render JSON"),
            "{why}"
        );
    }

    #[test]
    fn a_template_that_cannot_render_refuses_the_message() {
        let mut slack = channel("Slack");
        slack.templates.opened = Some("{{ title".into());
        let opened = delivery("slack", "Opened", "Opened", "Pending");
        assert!(matches!(
            composed(&slack, &opened, &CommunicationStatus::default()),
            Err(Outcome::Refused { .. })
        ));
    }
}
