//! One message to one channel: its Secret read, its template rendered, the
//! receiver's request built and sent. Never fails: how it went is an
//! [`Outcome`], recorded in the outbox.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, ResourceExt};
use reqwest::{
    Method,
    header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue},
};
use serde_json::Value;
use tracing::info;

use crate::{
    communication::{
        moments, outbox, payloads,
        send::{self, Outcome, backoff},
        templates,
    },
    context::Context,
    crd::{
        ChannelKind, CommunicationStatus, Delivery, DeliveryState, Incident, NotificationChannel,
        NotifyEvent,
    },
};

const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";
const STATUSPAGE_API: &str = "https://api.statuspage.io";

/// Sends `delivery` to `channel`.
pub async fn deliver(
    ctx: &Context,
    incident: &Incident,
    channel: &NotificationChannel,
    delivery: &Delivery,
    recorded: &CommunicationStatus,
    now: Timestamp,
) -> Outcome {
    let namespace = incident.namespace().unwrap_or_default();
    let attempts = delivery.attempts;
    let in_doubt = outbox::in_doubt(delivery);
    if in_doubt && !channel.spec.kind.recognises_repeats() {
        return Outcome::Unconfirmed {
            why: format!(
                "the operator stopped while sending it and {} cannot recognise a repeat: \
                 not sent again, so it may be missing",
                channel.spec.kind
            ),
        };
    }
    if in_doubt {
        info!(channel = %delivery.channel, key = %delivery.key,
              "an attempt's outcome was lost; sending it again, which the receiver recognises as a repeat");
    }
    let secret_name = &channel.spec.secret_ref.name;
    // Read as the namespace's remediator: a channel author gets no Secret
    // the namespace did not grant.
    let remediator = match ctx.remediator(&namespace, None) {
        Ok(client) => client,
        Err(error) => {
            return Outcome::Retry {
                after: backoff(attempts, None),
                why: error.to_string(),
            };
        }
    };
    let secret = match Api::<Secret>::namespaced(remediator, &namespace)
        .get_opt(secret_name)
        .await
    {
        Ok(Some(secret)) => crate::k8s::secret_text(&secret),
        Ok(None) => {
            return Outcome::Retry {
                after: backoff(attempts, None),
                why: format!("Secret {secret_name} not found"),
            };
        }
        Err(error) => {
            return Outcome::Retry {
                after: backoff(attempts, None),
                why: format!("reading Secret {secret_name}: {error}"),
            };
        }
    };
    let text = match message(ctx, incident, channel, delivery, now).await {
        Ok(text) => text,
        Err(why) => {
            return Outcome::Refused {
                why: why.to_string(),
            };
        }
    };
    let fields = templates::fields(
        incident,
        delivery.event,
        channel.spec.updates.of(incident.spec.severity),
        None,
        now,
    );
    let message = Message {
        ctx,
        incident,
        channel,
        delivery,
        recorded,
        secret: &secret,
        text: &text,
        fields: &fields,
        in_doubt,
    };
    let request = match channel.spec.kind {
        ChannelKind::Slack => message
            .needs("url")
            .map(|url| (Method::POST, url, HeaderMap::new(), payloads::slack(&text))),
        ChannelKind::Webhook => message.needs("url").map(|url| message.webhook(url)),
        ChannelKind::PagerDuty => message.pagerduty().await,
        ChannelKind::StatusPage => message.statuspage().await,
        ChannelKind::Email => {
            return email(incident, channel, delivery, &secret, &text, attempts).await;
        }
    };
    let (method, url, headers, body) = match request {
        Ok(request) => request,
        Err(outcome) => return outcome,
    };
    let reference = |answer: &Value| {
        answer["id"]
            .as_str()
            .or_else(|| answer["dedup_key"].as_str())
            .map(str::to_owned)
    };
    send::send(&ctx.http, method, &url, headers, &body, attempts, reference).await
}

/// A request to a receiver: what to send, where and how. A builder that
/// has no request to send answers with the outcome already known instead
/// (a refusal, or a message found already sent).
type Request = (Method, String, HeaderMap, Value);

/// One message on its way: what every receiver's request is built from.
struct Message<'a> {
    ctx: &'a Context,
    incident: &'a Incident,
    channel: &'a NotificationChannel,
    delivery: &'a Delivery,
    recorded: &'a CommunicationStatus,
    secret: &'a BTreeMap<String, String>,
    text: &'a str,
    fields: &'a templates::Fields,
    /// An attempt began before and its outcome was never written.
    in_doubt: bool,
}

impl Message<'_> {
    /// A key of the channel's Secret, or the refusal that names it.
    fn needs(&self, key: &str) -> Result<String, Outcome> {
        self.secret
            .get(key)
            .cloned()
            .ok_or_else(|| Outcome::Refused {
                why: format!(
                    "Secret {} has no key {key}",
                    self.channel.spec.secret_ref.name
                ),
            })
    }

    /// A generic webhook: its body, an `authorization` header from the
    /// Secret if given, and an idempotency key the receiver can fold
    /// repeats by.
    fn webhook(&self, url: String) -> Request {
        let (incident, delivery) = (self.incident, self.delivery);
        let mut headers = HeaderMap::new();
        if let Some(value) = self
            .secret
            .get("authorization")
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(AUTHORIZATION, value);
        }
        let key = format!(
            "{}/{}/{}",
            incident.uid().unwrap_or_default(),
            delivery.channel,
            delivery.key
        );
        if let Ok(value) = HeaderValue::from_str(&key) {
            headers.insert(HeaderName::from_static("idempotency-key"), value);
        }
        let body = payloads::webhook(
            incident,
            delivery.event,
            &delivery.key,
            self.text,
            self.fields,
        );
        (Method::POST, url, headers, body)
    }

    /// A PagerDuty event (Events API v2).
    async fn pagerduty(&self) -> Result<Request, Outcome> {
        let (incident, delivery) = (self.incident, self.delivery);
        let routing_key = self.needs("routingKey")?;
        let url = self
            .secret
            .get("url")
            .cloned()
            .unwrap_or_else(|| PAGERDUTY_EVENTS.to_owned());
        // A person paged again (a later pass, or a new round after an
        // acknowledgement expired) still has this incident's alert
        // open: it is closed first so that the page notifies. Sent
        // again in doubt, this may page twice, never not at all.
        if paged_before(self.recorded, delivery) {
            let close = payloads::pagerduty_close_for_repage(&routing_key, incident, self.fields);
            let closed = send::send(
                &self.ctx.http,
                Method::POST,
                &url,
                HeaderMap::new(),
                &close,
                delivery.attempts,
                |_| None,
            )
            .await;
            if !matches!(closed, Outcome::Accepted { .. }) {
                return Err(closed);
            }
        }
        let body = payloads::pagerduty(
            &routing_key,
            incident,
            delivery.event,
            self.text,
            self.fields,
        );
        Ok((Method::POST, url, HeaderMap::new(), body))
    }

    /// A Statuspage incident: opened by the first message, updated by the
    /// later ones; one whose answer was lost is looked for before it is
    /// sent again.
    async fn statuspage(&self) -> Result<Request, Outcome> {
        let (incident, delivery) = (self.incident, self.delivery);
        let (api_key, page) = (self.needs("apiKey")?, self.needs("pageId")?);
        let base = self
            .secret
            .get("url")
            .cloned()
            .unwrap_or_else(|| STATUSPAGE_API.to_owned());
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&format!("OAuth {api_key}")) {
            headers.insert(AUTHORIZATION, value);
        }
        // The first message opens the page's incident; later ones update it.
        let opened = self
            .recorded
            .outbox
            .iter()
            .filter(|d| d.channel == delivery.channel && d.state == DeliveryState::Sent)
            .find_map(|d| d.external_ref.clone());
        let pages = format!("{base}/v1/pages/{page}/incidents");
        if let Some(since) = delivery.sending_since.as_ref().filter(|_| self.in_doubt) {
            let statuses = payloads::statuspage_statuses_at(delivery.event, incident, since.0);
            let lookup = Lookup {
                pages: &pages,
                headers: &headers,
                opened: opened.as_deref(),
                statuses: &statuses,
                since: since.0,
            };
            if let Some(id) = statuspage_lookup(self.ctx, incident, &lookup).await {
                info!(channel = %delivery.channel, key = %delivery.key,
                      "found on the status page after a lost answer; not sent again");
                return Err(Outcome::Accepted {
                    external_ref: Some(id),
                });
            }
        }
        let component = self
            .channel
            .spec
            .status_page
            .as_ref()
            .and_then(|s| s.component_id.as_deref());
        let body =
            payloads::statuspage(incident, delivery.event, component, self.text, self.fields);
        Ok(match opened {
            Some(id) => (Method::PATCH, format!("{pages}/{id}"), headers, body),
            None => (Method::POST, pages, headers, body),
        })
    }
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

/// An email over SMTP (`host`, `port`, optional `username` and `password`,
/// `tls`: `starttls` by default, `tls`, or `none` for a relay on the same
/// host). Its Message-ID is derived from the incident and the message, so
/// a message sent again after a lost answer is recognisably the same.
async fn email(
    incident: &Incident,
    channel: &NotificationChannel,
    delivery: &Delivery,
    secret: &BTreeMap<String, String>,
    text: &str,
    attempts: i32,
) -> Outcome {
    use lettre::{
        AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, message::header::ContentType,
        transport::smtp::authentication::Credentials,
    };
    let refused = |why: String| Outcome::Refused { why };
    let Some(settings) = &channel.spec.email else {
        return refused("an Email channel needs email.from and email.to".into());
    };
    let Some(host) = secret.get("host") else {
        return refused(format!(
            "Secret {} has no key host",
            channel.spec.secret_ref.name
        ));
    };
    let port = secret.get("port").and_then(|p| p.parse::<u16>().ok());
    let subject = format!(
        "{} - {}",
        text.lines().next().unwrap_or_default(),
        incident.spec.title
    );
    let message_id = format!(
        "<{}.{}.{}@healing-guard.io>",
        incident.uid().unwrap_or_default(),
        delivery.channel,
        delivery.key.replace('/', ".")
    );
    let mut builder = Message::builder()
        .subject(subject)
        .message_id(Some(message_id.clone()));
    match settings.from.parse() {
        Ok(from) => builder = builder.from(from),
        Err(error) => return refused(format!("email.from: {error}")),
    }
    for to in &settings.to {
        match to.parse() {
            Ok(to) => builder = builder.to(to),
            Err(error) => return refused(format!("email.to {to}: {error}")),
        }
    }
    let message = match builder
        .header(ContentType::TEXT_PLAIN)
        .body(text.to_owned())
    {
        Ok(message) => message,
        Err(error) => return refused(format!("building the email: {error}")),
    };
    let tls = secret.get("tls").map_or("starttls", String::as_str);
    let transport = match tls {
        "none" => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
    };
    let mut transport = match transport {
        Ok(transport) => transport.timeout(Some(send::ATTEMPT_TIMEOUT)),
        Err(error) => return refused(format!("SMTP settings: {error}")),
    };
    if let Some(port) = port {
        transport = transport.port(port);
    }
    if let (Some(user), Some(password)) = (secret.get("username"), secret.get("password")) {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    }
    match transport.build().send(message).await {
        Ok(_) => Outcome::Accepted {
            external_ref: Some(message_id),
        },
        Err(error) if error.is_permanent() => {
            refused(format!("the SMTP server refused it: {error}"))
        }
        Err(error) => Outcome::Retry {
            after: backoff(attempts, None),
            why: format!("SMTP: {error}"),
        },
    }
}

/// What to look for on a status page.
struct Lookup<'a> {
    /// The page's incidents URL.
    pages: &'a str,
    headers: &'a HeaderMap,
    /// The page's incident, once created.
    opened: Option<&'a str>,
    /// The statuses the message may have set: a message whose status
    /// follows the phase was written with the phase as it was then.
    statuses: &'a [&'a str],
    /// When the attempt whose answer was lost began.
    since: Timestamp,
}

/// After an attempt whose answer was lost: whether Statuspage has it. A
/// create is found among the page's unresolved incidents by the Incident
/// named in its metadata; an update, by an update of the incident in the
/// status sent, made since the attempt began. Its id, if so; `None` sends
/// it (again), also when the lookup itself fails.
async fn statuspage_lookup(
    ctx: &Context,
    incident: &Incident,
    lookup: &Lookup<'_>,
) -> Option<String> {
    let Lookup {
        pages,
        headers,
        opened,
        statuses,
        since,
    } = *lookup;
    // Statuspage's clock and ours may differ by a little.
    let since = since
        .checked_sub(std::time::Duration::from_secs(30))
        .unwrap_or(since);
    let url = match opened {
        Some(id) => format!("{pages}/{id}"),
        None => format!("{pages}/unresolved"),
    };
    let checked = reqwest::Url::parse(&url).ok()?;
    crate::egress::check_url(&checked).ok()?;
    let response = ctx
        .http
        .get(checked)
        .headers(headers.clone())
        .timeout(send::ATTEMPT_TIMEOUT)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?;
    let answer = crate::egress::read_json(response).await.ok()?;
    let uid = incident.uid()?;
    let made_since = |update: &Value| {
        update["status"]
            .as_str()
            .is_some_and(|status| statuses.contains(&status))
            && update["created_at"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|t| t >= since)
    };
    match opened {
        Some(id) => answer["incident_updates"]
            .as_array()?
            .iter()
            .any(made_since)
            .then(|| id.to_owned()),
        None => answer.as_array()?.iter().find_map(|page_incident| {
            (page_incident["metadata"][payloads::STATUSPAGE_METADATA]["incident_uid"]
                == uid.as_str())
            .then(|| page_incident["id"].as_str().map(str::to_owned))
            .flatten()
        }),
    }
}

/// The message's text: the channel's template (inline, else from its
/// ConfigMap, else the runbook's), rendered.
async fn message(
    ctx: &Context,
    incident: &Incident,
    channel: &NotificationChannel,
    delivery: &Delivery,
    now: Timestamp,
) -> Result<String, MessageError> {
    let namespace = incident.namespace().unwrap_or_default();
    let chosen = crate::notifier::readiness::channel_templates(ctx, channel, &namespace).await?;
    let every = channel.spec.updates.of(incident.spec.severity);
    let next = every.and_then(|every| moments::next_update(incident, every, now));
    let fields = templates::fields(incident, delivery.event, every, next, now);
    let (name, source) = templates::template_for(delivery.event, &chosen);
    Ok(templates::render(name, &source, &fields)?)
}

/// Why a message's text could not be made.
#[derive(Debug, thiserror::Error)]
enum MessageError {
    #[error(transparent)]
    Templates(#[from] crate::notifier::readiness::TemplatesError),
    #[error(transparent)]
    Render(#[from] templates::TemplateError),
}
