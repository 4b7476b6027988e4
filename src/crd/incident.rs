//! `Incident`: one incident, declared by a person or opened by the detector.
//! `spec` holds human intent, `status` what the operator observed and did.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ledger::{MAX_STEPS, StepRecord};
use super::policy::Symptom;
use super::{
    classification::{IncidentType, Severity},
    common::{Action, Mode},
    refs::WorkloadRef,
};

/// An incident affecting one workload, its classification, the responders'
/// inputs, and the complete record of what was done about it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "healing-guard.io",
    version = "v1alpha1",
    kind = "Incident",
    doc = "An incident on one workload: its classification, the responders' inputs and the record of what was done",
    plural = "incidents",
    shortname = "inc",
    category = "healing-guard",
    namespaced,
    status = "IncidentStatus",
    selectable = ".spec.target.name",
    printcolumn(name = "Severity", type_ = "string", json_path = ".spec.severity"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.severity <= oldSelf.severity || (has(self.severityReason) && self.severityReason != '' && (!has(oldSelf.severityReason) || self.severityReason != oldSelf.severityReason))").message("lowering spec.severity needs a new spec.severityReason").field_path(".severity"),
    validation = Rule::new("self.target == oldSelf.target").message("spec.target is immutable").field_path(".target"),
    validation = Rule::new("!has(self.actions) || size(self.actions) > 0").message("spec.actions, when given, needs at least one action").field_path(".actions"),
)]
pub struct IncidentSpec {
    /// One line that says what is wrong.
    #[schemars(length(min = 1, max = 256))]
    pub title: String,
    /// Severity; it may be raised freely, lowered only with a new severityReason.
    pub severity: Severity,
    /// Why the severity was changed (required to lower it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub severity_reason: Option<String>,
    /// Type of incident.
    #[serde(rename = "type")]
    pub incident_type: IncidentType,
    /// The affected workload, in the Incident's namespace.
    pub target: WorkloadRef,
    /// When the problem was first noticed, if before this Incident was created
    /// (e.g. declared after the fact); deadlines count from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// What is known: impact, symptoms, first observations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
    /// The RemediationPolicy (same namespace) whose rules and safety limits apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))]
    pub policy: Option<String>,
    /// The rule of that policy whose ladder to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(super::bounds::DNS_LABEL))]
    pub rule: Option<String>,
    /// An explicit ladder for this incident, used instead of a policy rule's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10))]
    pub actions: Option<Vec<Action>>,
    /// Overrides the policy's mode for this incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Who or what opened the incident.
    #[serde(default)]
    pub source: IncidentSource,
    /// Set by a responder to acknowledge the incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledgement>,
    /// Steps a responder approved (for RequireApproval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub approvals: Vec<Approval>,
    /// Set by a responder to resolve the incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Set by a responder to decline the incident as a false positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declined: Option<Decline>,
    /// Channels told about this incident besides its policy's, and the
    /// escalation policy paging for it (instead of its policy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication: Option<super::channel::Communication>,
    /// Set by a responder to lift the incident's hold on its target's
    /// GitOps sync before Git moves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_sync: Option<super::gitops::ResumeSync>,
}

impl Incident {
    /// Whether the incident is still open (not resolved or declined).
    pub fn is_open(&self) -> bool {
        !self
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_closed)
    }

    /// What the notifier recorded: messages and paging (empty before).
    pub fn communication(&self) -> Option<&super::channel::CommunicationStatus> {
        self.status.as_ref()?.communication.as_ref()
    }

    /// The RemediationPolicy it runs under: the one it names, else the one
    /// whose rule detected it.
    pub fn policy_name(&self) -> Option<&String> {
        self.spec
            .policy
            .as_ref()
            .or(self.spec.source.policy.as_ref())
    }
}

/// How an incident came to exist.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec.source is immutable"))]
pub struct IncidentSource {
    /// Manual (declared by a person) or Detected (opened by the operator).
    #[serde(default)]
    pub kind: SourceKind,
    /// The policy whose rule detected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))]
    pub policy: Option<String>,
    /// The rule that detected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(super::bounds::DNS_LABEL))]
    pub rule: Option<String>,
    /// Target and symptom; one open incident exists per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub dedup_key: Option<String>,
    /// The earlier incident for the same key, when the signal returned after
    /// its reopen window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))]
    pub previous_incident: Option<String>,
}

/// Manual or Detected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SourceKind {
    /// Declared by a person with kubectl apply.
    #[default]
    Manual,
    /// Opened by the operator's detector.
    Detected,
}

/// A responder taking ownership.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Acknowledgement {
    /// Who acknowledged.
    #[schemars(length(min = 1, max = 256))]
    pub by: String,
    /// When (`kubectl healing-guard ack` sets it). Acknowledging again
    /// renews an acknowledgement that expired without progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
    /// A note for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = super::bounds::MAX_NOTE))]
    pub note: Option<String>,
}

/// A responder's approval of one step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The step's name, as in the ladder.
    #[schemars(length(min = 1, max = 63), pattern(super::bounds::DNS_LABEL))]
    pub step: String,
    /// Who approved.
    #[schemars(length(min = 1, max = 256))]
    pub by: String,
    /// The ladder round it approves: 1, and one more after each reopen
    /// (the step's `attempt`); 1 when not given. An approval counts for its
    /// round only: a reopened incident's steps wait for a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = super::bounds::MAX_COUNT))]
    pub round: Option<i32>,
}

/// A responder closing the incident.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resolution {
    /// Who resolved it.
    #[schemars(length(min = 1, max = 256))]
    pub by: String,
    /// The root cause.
    #[schemars(length(min = 1, max = 4096))]
    pub root_cause: String,
    /// What fixed it.
    #[schemars(length(min = 1, max = 4096))]
    pub summary: String,
    /// What will keep it from happening again (the post-incident report's
    /// follow-ups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 512)))]
    pub follow_ups: Vec<String>,
}

/// A responder declining the incident as a false positive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decline {
    /// Who declined it.
    #[schemars(length(min = 1, max = 256))]
    pub by: String,
    /// Why it is not an incident.
    #[schemars(length(min = 1, max = 4096))]
    pub reason: String,
}

/// Where an incident stands.
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
    strum::EnumIter,
)]
pub enum Phase {
    /// Opened, nobody has acknowledged it yet.
    Triggered,
    /// A responder owns it.
    Acknowledged,
    /// A remediation step is running.
    Mitigating,
    /// A step completed; verifying that recovery holds.
    Monitoring,
    /// Over: recovered and recorded.
    Resolved,
    /// Automatic remediation is exhausted or refused; a human must act.
    Escalated,
    /// Declined as a false positive.
    Declined,
}

impl Phase {
    /// Whether the incident is over.
    pub fn is_closed(self) -> bool {
        matches!(self, Phase::Resolved | Phase::Declined)
    }

    /// The name used in YAML and metrics.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What the operator observed and did. Survives operator restarts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions such as AckSLABreached, NeedsHuman, Flapping.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When each milestone was reached.
    #[serde(default)]
    pub milestones: Milestones,
    /// Deadlines from severity and whether they were missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<Sla>,
    /// What the detector saw (detected incidents). Written by the detector
    /// only; the lifecycle reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<DetectionStatus>,
    /// What was sent about it and where paging stands. Written by the
    /// notifier only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication: Option<super::channel::CommunicationStatus>,
    /// How many of the detector's reopens the lifecycle has acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopens_handled: Option<i32>,
    /// The generation at which the incident was last reopened: responder
    /// inputs from before it (an old resolution) no longer count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened_at_generation: Option<i64>,
    /// The remediation ledger: every step, recorded before it runs.
    #[serde(default)]
    #[schemars(length(max = MAX_STEPS))]
    pub steps: Vec<StepRecord>,
    /// What the workload looked like when the incident opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// What happened, in order; the oldest entries are dropped past a bound.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// How many timeline entries were dropped to keep the object small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline_dropped: Option<i64>,
    /// The GitOps syncs held so that Git would not undo a step, oldest
    /// first; the last is the current one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub sync_holds: Vec<super::gitops::SyncHold>,
}

impl IncidentStatus {
    /// The ladder's round: 1, then one more for each reopen acted on and
    /// each release from Git that did not bring recovery.
    pub fn round(&self) -> i32 {
        let failed_releases = self
            .sync_holds
            .iter()
            .filter(|hold| hold.failed_at.is_some())
            .count();
        self.reopens_handled
            .unwrap_or(0)
            .saturating_add(i32::try_from(failed_releases).unwrap_or(i32::MAX))
            .saturating_add(1)
    }

    /// The sync this incident holds or has just lifted and not judged yet.
    pub fn current_hold(&self) -> Option<&super::gitops::SyncHold> {
        self.sync_holds
            .last()
            .filter(|hold| hold.is_held() || hold.is_verifying())
    }
}

/// The detector's record of the signal behind an incident.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DetectionStatus {
    /// The symptom, as in the policy rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symptom: Option<Symptom>,
    /// How many times the signal was observed (new failing pods, new restarts, repeats).
    #[serde(default)]
    pub occurrences: i64,
    /// When the signal was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_at: Option<Time>,
    /// When the signal was last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<Time>,
    /// The latest observation, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Pods that showed the symptom (bounded).
    #[serde(default)]
    #[schemars(length(max = 20))]
    pub affected_pods: Vec<String>,
    /// Affected pods left out of affectedPods.
    #[serde(default)]
    pub affected_pods_omitted: i64,
    /// When the signal stopped; unset while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<Time>,
    /// How many times the signal came back within the reopen window after resolution.
    #[serde(default)]
    pub reopens: i32,
    /// When it last came back after resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reopened_at: Option<Time>,
}

/// Milestones of the incident.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Milestones {
    /// When the incident was detected or declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// When a responder acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<Time>,
    /// When a step contained the impact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitigated_at: Option<Time>,
    /// When it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
}

/// Deadlines from the severity's response time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sla {
    /// Acknowledge before this time.
    pub acknowledge_by: Time,
    /// Resolve before this time.
    pub resolve_by: Time,
    /// Whether the acknowledge deadline passed unacknowledged.
    #[serde(default)]
    pub acknowledge_breached: bool,
    /// Whether the resolve deadline passed unresolved.
    #[serde(default)]
    pub resolve_breached: bool,
}

/// Bounded evidence captured when the incident opened.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// When it was captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_at: Option<Time>,
    /// Affected pods.
    #[serde(default)]
    pub pods: Vec<PodEvidence>,
    /// The workload's current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Recent rollout history, newest first.
    #[serde(default)]
    pub rollout_history: Vec<String>,
    /// The GitOps object that reconciles the target (a Flux Kustomization
    /// or HelmRelease, an Argo CD Application), from the marks it left on
    /// the workload: a change Git would undo comes back at its next sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<super::gitops::GitOpsOwner>,
    /// The source revision that object last applied (e.g.
    /// `main@sha1:...`): the release running when the incident opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops_revision: Option<String>,
    /// Recent Warning events for the target and its pods.
    #[serde(default)]
    pub events: Vec<String>,
    /// Last log lines of the failing container, where the node serves them.
    #[serde(default)]
    pub logs: Vec<String>,
    /// What could not be captured, and why.
    #[serde(default)]
    pub notes: Vec<String>,
    /// How many items were left out to keep the object small.
    #[serde(default)]
    pub omitted: i64,
}

/// The state of one affected pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodEvidence {
    /// Pod name.
    pub name: String,
    /// Pod phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Whether the pod is Ready.
    #[serde(default)]
    pub ready: bool,
    /// Total container restarts.
    #[serde(default)]
    pub restarts: i32,
    /// Current waiting or terminated reason, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Reason of the last termination, e.g. OOMKilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination_reason: Option<String>,
    /// The node it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One entry of the timeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// When it happened.
    pub at: Time,
    /// A short CamelCase reason, as in Events.
    pub reason: String,
    /// What happened.
    pub message: String,
}
