//! `EscalationPolicy`: who is on call, in which role, and whom to page next
//! while nobody acknowledges (the runbook's "Emergency Contacts" and
//! "Escalation Path").

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::Duration;

/// People, their roles and rotations, and the ordered steps of paging.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "healing-guard.io",
    version = "v1alpha1",
    kind = "EscalationPolicy",
    doc = "Who is on call, in which role, and whom to page next while nobody acknowledges",
    plural = "escalationpolicies",
    shortname = "esc",
    category = "healing-guard",
    namespaced,
    status = "EscalationPolicyStatus",
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
pub struct EscalationPolicySpec {
    /// The people who can be paged, each with the channel that reaches them.
    #[schemars(length(min = 1, max = 50))]
    pub people: Vec<Person>,
    /// Roles (primary on-call, secondary, engineering lead, security lead,
    /// ...), each held by one person at a time from its rotation.
    #[schemars(length(min = 1, max = 20))]
    pub roles: Vec<OnCallRole>,
    /// Whom to page, in order, while nobody acknowledges.
    #[schemars(length(min = 1, max = 10))]
    pub steps: Vec<EscalationStep>,
    /// Security incidents follow these steps instead (the runbook: security
    /// lead, then CISO, then CEO). Empty: the same steps as the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub security_steps: Vec<EscalationStep>,
    /// How many times the steps run through before paging stops.
    #[serde(default = "default_repeat")]
    #[schemars(range(min = 1, max = 5))]
    pub repeat: i32,
    /// An acknowledgement not followed by progress (a remediation step, or
    /// the incident moving on from Acknowledged) within this long expires:
    /// paging starts again from the first step, until someone acknowledges
    /// again. Unset: an acknowledgement holds until the incident closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = super::bounds::escalation_wait())]
    pub acknowledgement_timeout: Option<Duration>,
}

fn default_repeat() -> i32 {
    1
}

/// Someone who can be paged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// A short name, as roles and the status refer to it.
    #[schemars(length(min = 1, max = 63), pattern(super::bounds::DNS_LABEL))]
    pub name: String,
    /// The NotificationChannel (same namespace) that reaches them.
    #[schemars(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))]
    pub channel: String,
    /// How they are shown in messages (e.g. "Jane Smith").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,
}

/// A role and who holds it: the rotation's members take turns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnCallRole {
    /// The role's name (e.g. primary, secondary, engineering-lead).
    #[schemars(length(min = 1, max = 63), pattern(super::bounds::DNS_LABEL))]
    pub name: String,
    /// People (by name) in turn; the first holds the role from `handoffStart`.
    #[schemars(length(min = 1, max = 20), inner(length(min = 1, max = 63)))]
    pub rotation: Vec<String>,
    /// How long each turn lasts (default a week).
    #[serde(default = "default_turn")]
    #[x_kube(validation = super::bounds::rotation_turn())]
    pub turn: Duration,
    /// When the first turn began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_start: Option<Time>,
}

fn default_turn() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// One step of paging.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EscalationStep {
    /// The role paged at this step.
    #[schemars(length(min = 1, max = 63), pattern(super::bounds::DNS_LABEL))]
    pub role: String,
    /// How long to wait for an acknowledgement before the next step; by
    /// default the severity's response time (P0 15 minutes, P1 an hour, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = super::bounds::escalation_wait())]
    pub wait: Option<Duration>,
}

/// What the operator found about an escalation policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EscalationPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, or what it refers to that does not exist.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Who holds each role now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_call: Vec<OnCall>,
}

/// A role and who holds it now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnCall {
    pub role: String,
    pub person: String,
    /// When the turn ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
}
