//! `NotificationChannel`: where incident messages go (Slack, a generic
//! webhook, PagerDuty, email, a status page, Microsoft Teams, Opsgenie),
//! which incidents and events a channel wants, how fast it may be sent to,
//! and its templates. URLs and credentials only ever come from a Secret.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    classification::{IncidentType, Severity},
    duration::Duration,
    refs::SecretRef,
};

/// A destination for incident messages, kept in Git like the policies.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "healing-guard.io",
    version = "v1alpha1",
    kind = "NotificationChannel",
    doc = "Where incident messages go, which incidents and events it wants, and how they read",
    plural = "notificationchannels",
    shortname = "nc",
    category = "healing-guard",
    namespaced,
    status = "NotificationChannelStatus",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.kind != 'Email' || has(self.email)").message("an Email channel needs email.from and email.to").field_path(".email"),
    validation = Rule::new("!has(self.email) || self.kind == 'Email'").message("email settings are only for an Email channel").field_path(".email"),
    validation = Rule::new("!has(self.statusPage) || self.kind == 'StatusPage'").message("statusPage settings are only for a StatusPage channel").field_path(".statusPage"),
    validation = Rule::new("!has(self.teams) || self.kind == 'Teams'").message("teams settings are only for a Teams channel").field_path(".teams"),
    validation = Rule::new("!has(self.opsgenie) || self.kind == 'Opsgenie'").message("opsgenie settings are only for an Opsgenie channel").field_path(".opsgenie"),
    validation = Rule::new("!has(self.templates) || !has(self.templates.body) || self.kind == 'Webhook'").message("templates.body is only for a Webhook channel").field_path(".templates.body"),
)]
pub struct NotificationChannelSpec {
    /// What the channel talks to.
    pub kind: ChannelKind,
    /// The Secret (same namespace) with the channel's URL and credentials.
    /// Slack: `url` (an incoming webhook), or `token` (a bot token) and
    /// `channel` (the channel's ID), optional `apiUrl`. Webhook: `url`, optional `authorization` (a header
    /// value). PagerDuty: `routingKey`, optional `url`. Email: `host`,
    /// `port`, optional `username` and `password`. StatusPage: `apiKey`,
    /// `pageId`, optional `url`. Teams: `url` (a Workflows webhook).
    /// Opsgenie: `apiKey`, optional `url`. A Webhook may add `signingKey`:
    /// its requests are then signed (HMAC-SHA256).
    pub secret_ref: SecretRef,
    /// Which incidents it wants; empty lists mean all.
    #[serde(default)]
    pub scope: ChannelScope,
    /// Which moments of an incident it is told about. Default: all.
    #[serde(default = "all_events")]
    #[schemars(length(min = 1, max = 8))]
    pub events: Vec<NotifyEvent>,
    /// Status updates while an incident is open, by severity (the runbook:
    /// P0 every 15 minutes). A severity not listed gets none.
    #[serde(default = "default_updates")]
    pub updates: UpdateEvery,
    /// At most this many requests a minute to this channel (a retry
    /// counts), from all incidents together, spaced evenly (60: one a
    /// second). Waiting
    /// messages go most severe incident first, each incident's in order; a
    /// receiver's 429 and `Retry-After` hold the channel for all of them.
    #[serde(default = "default_per_minute")]
    #[schemars(range(min = 1, max = 600))]
    pub per_minute: i32,
    /// Message templates (minijinja), replacing the runbook's defaults.
    #[serde(default)]
    pub templates: Templates,
    /// Email only: sender and recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSettings>,
    /// StatusPage only: the component whose status follows the incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_page: Option<StatusPageSettings>,
    /// Teams only: links on the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<TeamsSettings>,
    /// Opsgenie only: who the alert is routed to, and its tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opsgenie: Option<OpsgenieSettings>,
}

fn all_events() -> Vec<NotifyEvent> {
    vec![
        NotifyEvent::Opened,
        NotifyEvent::Acknowledged,
        NotifyEvent::StepApplied,
        NotifyEvent::Escalated,
        NotifyEvent::Mitigated,
        NotifyEvent::Resolved,
        NotifyEvent::Reopened,
        NotifyEvent::Update,
    ]
}

fn default_updates() -> UpdateEvery {
    UpdateEvery {
        p0: Some(Duration::from_secs(15 * 60)),
        ..UpdateEvery::default()
    }
}

/// How often an open incident of each severity gets a status update.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
pub struct UpdateEvery {
    #[serde(rename = "P0", default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = super::bounds::update_every())]
    pub p0: Option<Duration>,
    #[serde(rename = "P1", default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = super::bounds::update_every())]
    pub p1: Option<Duration>,
    #[serde(rename = "P2", default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = super::bounds::update_every())]
    pub p2: Option<Duration>,
    #[serde(rename = "P3", default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = super::bounds::update_every())]
    pub p3: Option<Duration>,
}

impl UpdateEvery {
    /// The interval for a severity, if it gets updates.
    pub fn of(&self, severity: Severity) -> Option<std::time::Duration> {
        let every = match severity {
            Severity::P0 => self.p0,
            Severity::P1 => self.p1,
            Severity::P2 => self.p2,
            Severity::P3 => self.p3,
        };
        every.map(|d| d.as_std())
    }
}

fn default_per_minute() -> i32 {
    30
}

/// The kinds of channel.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    JsonSchema,
    strum::Display,
    strum::IntoStaticStr,
)]
pub enum ChannelKind {
    /// Slack (Block Kit): an incoming webhook, or `chat.postMessage` with a
    /// bot token, which threads an incident's messages under its opening
    /// and broadcasts the resolution to the channel.
    Slack,
    /// Any HTTP endpoint: the incident as JSON.
    Webhook,
    /// PagerDuty Events API v2: trigger, acknowledge and resolve follow the phase.
    PagerDuty,
    /// SMTP.
    Email,
    /// Atlassian Statuspage: an incident and a component's status.
    StatusPage,
    /// Microsoft Teams, through a Workflows webhook: an Adaptive Card.
    Teams,
    /// Opsgenie Alert API v2: create, acknowledge and close follow the
    /// incident, by an alias of its own.
    Opsgenie,
}

impl ChannelKind {
    /// Whether a message sent again after its answer was lost reaches
    /// people once: PagerDuty folds events by `dedup_key`, a webhook gets
    /// the same `Idempotency-Key`, and a status page is looked up first.
    /// Opsgenie keeps one open alert per alias: a create sent again only
    /// counts up the alert's `count`, and acknowledging or closing twice
    /// changes nothing (a note is the exception, and is held back where it
    /// is composed). Slack's incoming webhooks, Teams' Workflows webhooks
    /// and SMTP would deliver it twice.
    pub fn recognises_repeats(self) -> bool {
        matches!(
            self,
            Self::Webhook | Self::PagerDuty | Self::StatusPage | Self::Opsgenie
        )
    }
}

/// Which incidents a channel wants; every non-empty filter must match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelScope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub severities: Vec<Severity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    pub types: Vec<IncidentType>,
    /// Incidents under these RemediationPolicies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))
    )]
    pub policies: Vec<String>,
    /// Incidents whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// The moments of an incident a channel can be told about.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
    strum::Display,
    strum::IntoStaticStr,
)]
pub enum NotifyEvent {
    /// The incident opened.
    Opened,
    /// A responder acknowledged it.
    Acknowledged,
    /// A remediation step changed something.
    StepApplied,
    /// Automatic remediation is over; a human must act.
    Escalated,
    /// A step's fix held: the impact is contained.
    Mitigated,
    /// The incident is over.
    Resolved,
    /// The signal came back after resolution.
    Reopened,
    /// A periodic status update while it is open.
    Update,
    /// A person is paged by the escalation policy (always sent to them,
    /// whatever their channel's `events`).
    Paged,
}

/// Templates replacing the defaults; inline text wins over the ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Templates {
    /// The first message (the runbook's "Initial Incident Notification").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub opened: Option<String>,
    /// Every message in between (the runbook's "Status Updates").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub update: Option<String>,
    /// The last message (the runbook's "Resolution Notification").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub resolved: Option<String>,
    /// Webhook only: the JSON body itself, replacing the default one. Its
    /// fields are the messages' and `text` (the message rendered), `key`
    /// and `uid`; each `{{ value }}` is written as JSON (a string with its
    /// quotes), and the whole must render valid JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub body: Option<String>,
    /// A ConfigMap (same namespace) with keys `opened`, `update`,
    /// `resolved` and `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))]
    pub config_map: Option<String>,
}

/// Sender and recipients of an Email channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailSettings {
    #[schemars(length(min = 3, max = 254))]
    pub from: String,
    #[schemars(length(min = 1, max = 20), inner(length(min = 3, max = 254)))]
    pub to: Vec<String>,
}

/// The Statuspage component that follows the incident.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusPageSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub component_id: Option<String>,
}

/// The links a Teams card offers (`Action.OpenUrl`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamsSettings {
    /// At most 5 (Teams shows up to 6 actions on a card).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub links: Vec<TeamsLink>,
}

/// One button on a Teams card.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamsLink {
    #[schemars(length(min = 1, max = 64))]
    pub title: String,
    /// An http(s) URL; a template with the messages' fields, e.g.
    /// `https://grafana.example.com/d/pods?var-namespace={{ namespace }}`.
    #[schemars(length(min = 8, max = 2048), pattern(r"^https?://"))]
    pub url: String,
}

/// Where an Opsgenie alert goes and how it is labelled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsgenieSettings {
    /// Teams, users, escalations or schedules notified (else the API
    /// integration's own routing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub responders: Vec<OpsgenieResponder>,
    /// Added to the operator's own tags (Opsgenie keeps 20, of 50 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(min = 1, max = 50)))]
    pub tags: Vec<String>,
}

/// One Opsgenie responder, by name (a user by username).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsgenieResponder {
    #[serde(rename = "type")]
    pub type_: OpsgenieResponderType,
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
}

/// The kinds of Opsgenie responder.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OpsgenieResponderType {
    Team,
    User,
    Escalation,
    Schedule,
}

/// What the operator found about a channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationChannelStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, or why the channel cannot send (its Secret or a template).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Who is told about an incident, and who is paged for it: on a
/// RemediationPolicy for the incidents it opens or runs, on an Incident
/// for itself (adding to its policy's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Communication {
    /// NotificationChannels (same namespace) told about the incident.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 10),
        inner(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))
    )]
    pub channels: Vec<String>,
    /// The EscalationPolicy (same namespace) that pages people until one acknowledges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))]
    pub escalation_policy: Option<String>,
}

/// What was sent about an incident, and where paging stands. Written only
/// by the notifier (its own field manager); derived from the incident and
/// the clock, so a restart never sends twice and never skips a step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunicationStatus {
    /// Every message, recorded before it is sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Delivery>,
    /// Messages dropped from the outbox (the oldest sent ones) to bound it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: i64,
    /// The latest moment among the messages dropped: moments up to it were
    /// told, and are not owed again though their records are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omitted_through: Option<Time>,
    /// Paging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationState>,
    /// The ConfigMap holding the post-incident report, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// One message to one channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The channel.
    pub channel: String,
    /// The moment it tells of.
    pub event: NotifyEvent,
    /// Unique per channel: the event and which one (`StepApplied/<step id>`,
    /// `Update/3`, `Resolved/1`).
    pub key: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: i32,
    /// When it was recorded (before any attempt).
    pub recorded_at: Time,
    /// When the next attempt is due (after a failure, or a rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
    /// When the attempt under way began: recorded before it is sent and
    /// cleared with its outcome. Still set on a later look, the operator
    /// stopped mid-attempt and nobody knows whether it arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_since: Option<Time>,
    /// When the receiver accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Time>,
    /// Why the last attempt failed (the receiver's answer, never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// What the receiver calls it (a Statuspage incident id, a message id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
}

/// Where a message stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, strum::Display)]
pub enum DeliveryState {
    /// Recorded; not yet accepted.
    Pending,
    /// Accepted by the receiver.
    Sent,
    /// Refused for good, or out of attempts.
    Failed,
    /// An attempt whose outcome was lost (the operator stopped while
    /// sending) to a receiver that cannot recognise a repeat (Slack, email):
    /// not sent again, so it may be missing but never doubled.
    Unconfirmed,
}

/// Where paging stands for an incident.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EscalationState {
    /// The step paged last (0-based), in which pass through the steps.
    pub step: i32,
    pub pass: i32,
    /// When the next step is paged if nobody acknowledges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<Time>,
    /// Who was paged, when, at which step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notified: Vec<Paged>,
    /// Why paging stopped (acknowledged, resolved, out of steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// When the acknowledgement in force expires unless there is progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledgement_expires_at: Option<Time>,
    /// The acknowledgement (its time) that expired without progress; only
    /// a later one stops paging again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_acknowledgement: Option<Time>,
    /// How many times paging started over (after an expired acknowledgement).
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub round: i32,
}

fn is_zero_i32(value: &i32) -> bool {
    *value == 0
}

/// One page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Paged {
    pub person: String,
    pub role: String,
    pub step: i32,
    pub pass: i32,
    pub at: Time,
}
