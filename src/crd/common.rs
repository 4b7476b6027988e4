//! The action ladder both custom resources share: modes, the action kinds
//! and each action's settings (the service actions' are in `service`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::Duration;

/// How remediation steps are carried out.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Default,
    JsonSchema,
    strum::Display,
)]
pub enum Mode {
    /// Steps run as soon as they are due.
    Auto,
    /// Each step waits until a responder approves it in the Incident's spec.
    RequireApproval,
    /// Steps are planned, server-side dry-run and recorded, and nothing changes.
    #[default]
    DryRun,
}

/// The containment actions the operator knows.
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
#[serde(rename_all = "camelCase")]
#[strum(serialize_all = "camelCase")]
pub enum ActionKind {
    /// Put an earlier revision's pod template back (`kubectl rollout undo`). Deployments only.
    Rollback,
    /// Set or raise replicas within bounds, or patch resource requests and limits.
    Scale,
    /// Rollout restart, or delete pods a few at a time.
    Restart,
    /// Put back the last known-good copy of a ConfigMap, then restart. Deployments only.
    RestoreConfig,
    /// Call the service's own API (an admin endpoint), checking the answer.
    Http,
    /// Run a Job to completion (a smoke test, a backup, a restore).
    RunJob,
    /// Give a Secret's key a new random value, then restart what reads it.
    RotateSecret,
    /// Patch an object of a kind the chart lets the operator patch.
    Patch,
    /// Restore data: writers down, a restore Job, verify, writers back.
    RestoreData,
}

impl Mode {
    /// The stricter of two modes: DryRun, then RequireApproval, then Auto.
    pub fn tightened_by(self, other: Mode) -> Mode {
        let rank = |mode: Mode| match mode {
            Mode::DryRun => 0,
            Mode::RequireApproval => 1,
            Mode::Auto => 2,
        };
        if rank(other) < rank(self) {
            other
        } else {
            self
        }
    }
}

impl ActionKind {
    /// The name used in YAML, step ids and metrics.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One rung of an escalation ladder: an action and its settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.action != 'scale' || has(self.scale)").message("a scale action needs its settings in scale"),
    validation = Rule::new("self.action != 'restoreConfig' || has(self.restoreConfig)").message("a restoreConfig action needs restoreConfig.configMap"),
    validation = Rule::new("!has(self.rollback) || self.action == 'rollback'").message("rollback settings are only allowed on a rollback action"),
    validation = Rule::new("!has(self.scale) || self.action == 'scale'").message("scale settings are only allowed on a scale action"),
    validation = Rule::new("!has(self.restart) || self.action == 'restart'").message("restart settings are only allowed on a restart action"),
    validation = Rule::new("!has(self.restoreConfig) || self.action == 'restoreConfig'").message("restoreConfig settings are only allowed on a restoreConfig action"),
    validation = Rule::new("self.action != 'http' || has(self.http)").message("an http action needs its settings in http (at least url)"),
    validation = Rule::new("!has(self.http) || self.action == 'http'").message("http settings are only allowed on an http action"),
    validation = Rule::new("!has(self.http) || !has(self.http.body) || !has(self.http.bodyFrom)").message("http: body and bodyFrom are exclusive"),
    validation = Rule::new("self.action != 'runJob' || has(self.runJob)").message("a runJob action needs its settings in runJob (at least job)"),
    validation = Rule::new("!has(self.runJob) || self.action == 'runJob'").message("runJob settings are only allowed on a runJob action"),
    validation = Rule::new("self.action != 'rotateSecret' || has(self.rotateSecret)").message("a rotateSecret action needs its settings in rotateSecret (secret and key)"),
    validation = Rule::new("!has(self.rotateSecret) || self.action == 'rotateSecret'").message("rotateSecret settings are only allowed on a rotateSecret action"),
    validation = Rule::new("!has(self.rotateSecret) || !has(self.rotateSecret.previousKey) || self.rotateSecret.previousKey != self.rotateSecret.key").message("rotateSecret.previousKey must differ from rotateSecret.key"),
    validation = Rule::new("!has(self.rotateSecret) || !has(self.rotateSecret.gracePeriod) || has(self.rotateSecret.previousKey)").message("rotateSecret.gracePeriod needs previousKey: it is how long the previous value is kept there"),
    validation = Rule::new("self.action != 'patch' || has(self.patch)").message("a patch action needs its settings in patch (apiVersion, kind, name, patch)"),
    validation = Rule::new("!has(self.patch) || self.action == 'patch'").message("patch settings are only allowed on a patch action"),
    validation = Rule::new("self.action != 'restoreData' || has(self.restoreData)").message("a restoreData action needs its settings in restoreData (approver, writers, job)"),
    validation = Rule::new("!has(self.restoreData) || self.action == 'restoreData'").message("restoreData settings are only allowed on a restoreData action"),
)]
pub struct Action {
    /// Name of the step, unique within its ladder; defaults to the action.
    /// Approvals and the step ledger refer to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(super::bounds::DNS_LABEL))]
    pub name: Option<String>,
    /// Which action to take.
    pub action: ActionKind,
    /// Settings for `rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackAction>,
    /// Settings for `scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleAction>,
    /// Settings for `restart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartAction>,
    /// Settings for `restoreConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_config: Option<RestoreConfigAction>,
    /// Settings for `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<super::service::HttpAction>,
    /// Settings for `runJob`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_job: Option<super::service::RunJobAction>,
    /// Settings for `rotateSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_secret: Option<super::service::RotateSecretAction>,
    /// Settings for `patch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<super::service::PatchAction>,
    /// Settings for `restoreData`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_data: Option<super::service::RestoreDataAction>,
    /// How long verification may take after this step before the next one is
    /// tried; defaults to the rule's verify timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = super::bounds::step_timeout())]
    pub timeout: Option<Duration>,
    /// Overrides the policy's mode for this step (e.g. RequireApproval for a
    /// destructive step in an otherwise automatic ladder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

impl Action {
    /// The step's name: the one given, or the action's own.
    pub fn step_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.action.as_str())
    }
}

/// Which revision a rollback returns to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RollbackTarget {
    /// The revision before the current one, as `kubectl rollout undo` does.
    #[default]
    Previous,
    /// The newest revision the operator last saw healthy.
    LastHealthy,
}

/// Settings for a rollback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackAction {
    /// Which revision to go back to.
    #[serde(default)]
    pub to: RollbackTarget,
}

/// Settings for scaling: replicas (absolute or by increment, capped by
/// maxReplicas) and/or container resources.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.replicas) || has(self.increment) || has(self.resources)").message("scale needs replicas, increment or resources"),
    validation = Rule::new("!(has(self.replicas) && has(self.increment))").message("scale takes replicas or increment, not both"),
    validation = Rule::new("!has(self.replicas) || !has(self.maxReplicas) || self.replicas <= self.maxReplicas").message("scale.replicas must not exceed scale.maxReplicas"),
    validation = Rule::new("!has(self.increment) || has(self.maxReplicas)").message("a scale by increment needs maxReplicas, its ceiling").field_path(".maxReplicas"),
)]
pub struct ScaleAction {
    /// Set replicas to this number (never lowers them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = super::bounds::MAX_REPLICAS))]
    pub replicas: Option<i32>,
    /// Raise replicas by this many (needs maxReplicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = super::bounds::MAX_INCREMENT))]
    pub increment: Option<i32>,
    /// Upper bound on replicas after scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = super::bounds::MAX_REPLICAS))]
    pub max_replicas: Option<i32>,
    /// Container resources to set, e.g. limits memory 2Gi, cpu 1000m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcePatch>,
}

/// Resource requests and limits to set on a container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.limits) || has(self.requests)").message("resources needs limits or requests"))]
pub struct ResourcePatch {
    /// Container to change; defaults to the first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(super::bounds::DNS_LABEL))]
    pub container: Option<String>,
    /// Limits to set, e.g. `memory: 2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::bounds::quantities")]
    pub limits: Option<BTreeMap<String, Quantity>>,
    /// Requests to set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::bounds::quantities")]
    pub requests: Option<BTreeMap<String, Quantity>>,
}

/// How a restart is done.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RestartMethod {
    /// Patch the pod template's restartedAt annotation, as `kubectl rollout restart`.
    #[default]
    RolloutRestart,
    /// Delete the workload's pods, at most maxUnavailable at a time.
    DeletePods,
}

/// Settings for a restart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartAction {
    /// Rollout restart or pod deletion.
    #[serde(default)]
    pub method: RestartMethod,
    /// With DeletePods: how many pods may be gone at once.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = super::bounds::MAX_COUNT))]
    pub max_unavailable: i32,
}

fn default_max_unavailable() -> i32 {
    1
}

/// Settings for restoring a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreConfigAction {
    /// The ConfigMap to put back, from the operator's last known-good snapshot.
    #[schemars(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))]
    pub config_map: String,
    /// Restart the workload afterwards so it reads the restored config.
    #[serde(default = "default_true")]
    pub restart: bool,
}

fn default_true() -> bool {
    true
}
