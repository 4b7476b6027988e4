//! One message to one channel: its Secret read, its templates found, the
//! message composed (`super::compose`) and sent. Never fails: how it went
//! is an [`Outcome`], recorded in the outbox.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, ResourceExt};
use reqwest::{
    Method,
    header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue},
};
use serde_json::Value;
use tracing::info;

use super::compose::{self, Composed, Recheck, Request};
use crate::{
    communication::{
        opsgenie, outbox, payloads,
        send::{self, Outcome, backoff},
        signing,
    },
    context::Context,
    crd::{CommunicationStatus, Delivery, Incident, NotificationChannel},
};

const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";
const STATUSPAGE_API: &str = "https://api.statuspage.io";
const SLACK_API: &str = "https://slack.com/api";
const OPSGENIE_API: &str = "https://api.opsgenie.com";

/// Sends `delivery` to `channel`. One not to be sent again (in doubt, to
/// a channel that cannot recognise a repeat) is settled by the caller
/// before its turn, so it never comes here.
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
    if outbox::in_doubt(delivery) {
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
    let templates =
        match crate::notifier::readiness::channel_templates(ctx, channel, &namespace).await {
            Ok(templates) => templates,
            Err(error) => {
                return Outcome::Refused {
                    why: error.to_string(),
                };
            }
        };
    let Composed { text, request, .. } =
        match compose::compose(incident, &channel.spec, &templates, delivery, recorded, now) {
            Ok(composed) => composed,
            Err(outcome) => return outcome,
        };
    let message = Message {
        ctx,
        incident,
        channel,
        delivery,
        secret: &secret,
    };
    let request = match request {
        Request::Slack {
            body,
            thread,
            broadcast,
        } if secret.contains_key("token") => {
            return message.slack_api(body, thread, broadcast).await;
        }
        // An incoming webhook posts to its own channel and cannot reply in
        // a thread.
        Request::Slack { body, .. } => message
            .needs("url")
            .map(|url| (Method::POST, url, HeaderMap::new(), body)),
        Request::Webhook {
            body,
            idempotency_key,
        } => message
            .needs("url")
            .and_then(|url| message.webhook(url, &idempotency_key, body)),
        Request::PagerDuty { event, close_first } => message.pagerduty(event, close_first).await,
        Request::StatusPage {
            body,
            opened,
            recheck,
        } => message.statuspage(body, opened, recheck).await,
        Request::Teams { body } => message
            .needs("url")
            .map(|url| (Method::POST, url, HeaderMap::new(), body)),
        Request::Opsgenie {
            action,
            alias,
            body,
            close_first,
        } => message.opsgenie(action, &alias, body, close_first).await,
        Request::Email {
            subject,
            message_id,
            from,
            to,
        } => {
            let mail = Mail {
                subject,
                message_id,
                from,
                to,
                text,
            };
            return email(channel, &secret, mail, attempts).await;
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
            .or_else(|| answer["requestId"].as_str())
            .map(str::to_owned)
    };
    send::send(&ctx.http, method, &url, headers, &body, attempts, reference).await
}

/// A request to a receiver over HTTP: what to send, where and how. A
/// builder that has no request to send answers with the outcome already
/// known instead (a refusal, or a message found already sent).
type HttpRequest = (Method, String, HeaderMap, Value);

/// One composed message on its way: what every receiver's request is
/// completed with.
struct Message<'a> {
    ctx: &'a Context,
    incident: &'a Incident,
    channel: &'a NotificationChannel,
    delivery: &'a Delivery,
    secret: &'a BTreeMap<String, String>,
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

    /// Slack's Web API with a bot token (`token`, and `channel`: the
    /// channel's ID): `chat.postMessage`, replying in the opening message's
    /// thread, and the resolution broadcast to the channel as well. Slack
    /// answers 200 with `ok: false` when it refuses.
    async fn slack_api(&self, body: Value, thread: Option<String>, broadcast: bool) -> Outcome {
        let (token, channel) = match (self.needs("token"), self.needs("channel")) {
            (Ok(token), Ok(channel)) => (token, channel),
            (Err(refused), _) | (_, Err(refused)) => return refused,
        };
        let base = self
            .secret
            .get("apiUrl")
            .map_or(SLACK_API, |url| url.trim_end_matches('/'));
        let body = payloads::slack_post(body, &channel, thread.as_deref(), broadcast);
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(AUTHORIZATION, value);
        }
        send::send_reading(
            &self.ctx.http,
            Method::POST,
            &format!("{base}/chat.postMessage"),
            headers,
            &body,
            self.delivery.attempts,
            payloads::slack_answer,
        )
        .await
    }

    /// A generic webhook: an `authorization` header from the Secret if
    /// given, the idempotency key the receiver can fold repeats by, and a
    /// signature when the Secret has a `signingKey`.
    fn webhook(
        &self,
        url: String,
        idempotency_key: &str,
        body: Value,
    ) -> Result<HttpRequest, Outcome> {
        let mut headers = match self.secret.get("signingKey") {
            // Signed as `send` serialises it: reqwest's `json` is serde_json's `to_vec`.
            Some(key) => serde_json::to_vec(&body)
                .map_err(|error| error.to_string())
                .and_then(|bytes| {
                    signing::headers(key.as_bytes(), Timestamp::now().as_second(), &bytes)
                        .map_err(|error| error.to_string())
                })
                .map_err(|why| Outcome::Refused {
                    why: format!("signing the request: {why}"),
                })?,
            None => HeaderMap::new(),
        };
        if let Some(value) = self
            .secret
            .get("authorization")
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(AUTHORIZATION, value);
        }
        if let Ok(value) = HeaderValue::from_str(idempotency_key) {
            headers.insert(HeaderName::from_static("idempotency-key"), value);
        }
        Ok((Method::POST, url, headers, body))
    }

    /// Closes the alert a person paged before still has open, so that the
    /// page after it notifies them; its outcome unless it was accepted.
    async fn close_first(
        &self,
        url: &str,
        headers: HeaderMap,
        close: &Value,
    ) -> Result<(), Outcome> {
        let closed = send::send(
            &self.ctx.http,
            Method::POST,
            url,
            headers,
            close,
            self.delivery.attempts,
            |_| None,
        )
        .await;
        match closed {
            Outcome::Accepted { .. } => Ok(()),
            other => Err(other),
        }
    }

    /// An Opsgenie request on the channel's alert, after closing the alert
    /// a person paged before still has open (a create on it would only
    /// count up, notifying nobody).
    async fn opsgenie(
        &self,
        action: opsgenie::Action,
        alias: &str,
        body: Value,
        close_first: Option<Value>,
    ) -> Result<HttpRequest, Outcome> {
        let api_key = self.needs("apiKey")?;
        let base = self.secret.get("url").map_or(OPSGENIE_API, String::as_str);
        let refused = |error: opsgenie::UrlError| Outcome::Refused {
            why: error.to_string(),
        };
        let mut headers = HeaderMap::new();
        let key = HeaderValue::from_str(&format!("GenieKey {api_key}")).map_err(|_| {
            Outcome::Refused {
                why: "the Secret's apiKey is not a header value".into(),
            }
        })?;
        headers.insert(AUTHORIZATION, key);
        if let Some(close) = close_first {
            let url = opsgenie::url(base, opsgenie::Action::Close, alias).map_err(refused)?;
            self.close_first(url.as_str(), headers.clone(), &close)
                .await?;
        }
        let url = opsgenie::url(base, action, alias).map_err(refused)?;
        Ok((Method::POST, url.to_string(), headers, body))
    }

    /// A PagerDuty event (Events API v2), after closing the alert a person
    /// paged before still has open.
    async fn pagerduty(
        &self,
        event: Value,
        close_first: Option<Value>,
    ) -> Result<HttpRequest, Outcome> {
        let routing_key = self.needs("routingKey")?;
        let url = self
            .secret
            .get("url")
            .cloned()
            .unwrap_or_else(|| PAGERDUTY_EVENTS.to_owned());
        if let Some(close) = close_first {
            let close = payloads::with_routing_key(close, &routing_key);
            self.close_first(&url, HeaderMap::new(), &close).await?;
        }
        let body = payloads::with_routing_key(event, &routing_key);
        Ok((Method::POST, url, HeaderMap::new(), body))
    }

    /// A Statuspage incident: opened by the first message, updated by the
    /// later ones; one whose answer was lost is looked for before it is
    /// sent again.
    async fn statuspage(
        &self,
        body: Value,
        opened: Option<String>,
        recheck: Option<Recheck>,
    ) -> Result<HttpRequest, Outcome> {
        let delivery = self.delivery;
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
        let pages = format!("{base}/v1/pages/{page}/incidents");
        if let Some(recheck) = recheck {
            let lookup = Lookup {
                pages: &pages,
                headers: &headers,
                opened: opened.as_deref(),
                statuses: &recheck.statuses,
                since: recheck.since,
            };
            if let Some(id) = statuspage_lookup(self.ctx, self.incident, &lookup).await {
                info!(channel = %delivery.channel, key = %delivery.key,
                      "found on the status page after a lost answer; not sent again");
                return Err(Outcome::Accepted {
                    external_ref: Some(id),
                });
            }
        }
        Ok(match opened {
            Some(id) => (Method::PATCH, format!("{pages}/{id}"), headers, body),
            None => (Method::POST, pages, headers, body),
        })
    }
}

/// An email as composed.
struct Mail {
    subject: String,
    message_id: String,
    from: String,
    to: Vec<String>,
    text: String,
}

/// An email over SMTP (`host`, `port`, optional `username` and `password`,
/// `tls`: `starttls` by default, `tls`, or `none` for a relay on the same
/// host). Its Message-ID is derived from the incident and the message, so
/// a message sent again after a lost answer is recognisably the same.
async fn email(
    channel: &NotificationChannel,
    secret: &BTreeMap<String, String>,
    mail: Mail,
    attempts: i32,
) -> Outcome {
    use lettre::{
        AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, message::header::ContentType,
        transport::smtp::authentication::Credentials,
    };
    let refused = |why: String| Outcome::Refused { why };
    let Some(host) = secret.get("host") else {
        return refused(format!(
            "Secret {} has no key host",
            channel.spec.secret_ref.name
        ));
    };
    let port = secret.get("port").and_then(|p| p.parse::<u16>().ok());
    let Mail {
        subject,
        message_id,
        from,
        to,
        text,
    } = mail;
    let mut builder = Message::builder()
        .subject(subject)
        .message_id(Some(message_id.clone()));
    match from.parse() {
        Ok(from) => builder = builder.from(from),
        Err(error) => return refused(format!("email.from: {error}")),
    }
    for to in &to {
        match to.parse() {
            Ok(to) => builder = builder.to(to),
            Err(error) => return refused(format!("email.to {to}: {error}")),
        }
    }
    let message = match builder.header(ContentType::TEXT_PLAIN).body(text) {
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
