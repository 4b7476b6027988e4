//! One message as its channel would receive it: whether it may be sent at
//! all, its text rendered from the channel's template, and the receiver's
//! request built around it. Everything but the Secret's URL and
//! credentials and the sending itself, so that an offline replay shows
//! exactly what the live notifier would send.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::Value;

use crate::{
    communication::{moments, outbox, payloads, send::Outcome, templates},
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
    /// A Slack incoming webhook: `body` POSTed to the Secret's `url`.
    Slack { body: Value },
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
/// before). Otherwise the outcome already known: unconfirmed, or refused.
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
    let text = templates::render(
        name,
        &source,
        &templates::fields(incident, event, every, next, now),
    )
    .map_err(|error| refused(error.to_string()))?;
    // Receivers' structured fields carry no next-update time.
    let fields = templates::fields(incident, event, every, None, now);
    let request = match channel.kind {
        ChannelKind::Slack => Request::Slack {
            body: payloads::slack(&text),
        },
        ChannelKind::Webhook => Request::Webhook {
            body: payloads::webhook(incident, event, &delivery.key, &text, &fields),
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
                body: payloads::statuspage(incident, event, component, &text, &fields),
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

/// The status page's incident this channel's first message opened, if any.
fn statuspage_opened(recorded: &CommunicationStatus, delivery: &Delivery) -> Option<String> {
    recorded
        .outbox
        .iter()
        .filter(|d| d.channel == delivery.channel && d.state == DeliveryState::Sent)
        .find_map(|d| d.external_ref.clone())
}
