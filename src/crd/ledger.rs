//! The remediation ledger of an Incident: every step, recorded before it
//! runs, how it went, and a data restore's sub-steps.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{common::ActionKind, refs::WorkloadKind};

/// The most steps a ledger holds: an incident that would need more (many
/// reopen rounds) goes to a human instead.
pub const MAX_STEPS: usize = 50;

/// One step in the remediation ledger.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// Deterministic id: incident uid prefix, step name and attempt.
    pub id: String,
    /// The step's name in the ladder.
    pub name: String,
    /// The action.
    pub action: ActionKind,
    /// The policy rule whose ladder the step came from; unset for the
    /// incident's own actions. With name and action, the step's identity:
    /// a policy edited mid-incident never makes a recorded step run as
    /// another action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// 1 for the first try of this step.
    pub attempt: i32,
    /// Where the step stands.
    pub result: StepResult,
    /// When it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// While verifying: since when the target has been healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Time>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What it changed, e.g. `Deployment/api replicas 3 -> 6`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// What verification saw when the step concluded: each probe it waited
    /// on, with its last result (a query and its value, a status, a length).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    pub verification: Vec<String>,
    /// When a change whose outcome cannot be read back from the cluster (a
    /// call to a service) was begun: written before it is made, so that
    /// after a restart the step is known to have maybe happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applying_since: Option<Time>,
    /// A restoreData step's sub-steps: where it stands, and the writers'
    /// replicas recorded before they were scaled down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Workflow>,
    /// A DeletePods restart: the uids of the pods it replaces, as it found
    /// them when applied. Pods created since are replacements, even in the
    /// same second (creation times have no finer precision).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub replacing: Vec<String>,
    /// When the signal returned after this step was verified and the
    /// incident resolved: a fix that did not last, counted as failed (the
    /// next round starts after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relapsed_at: Option<Time>,
}

/// Where a restoreData step stands. Each stage is written before it is
/// carried out, so a restart carries out the recorded stage (each is safe
/// to carry out twice) and never loses the recorded replicas.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    pub stage: WorkflowStage,
    /// Each writer and its replicas before the restore.
    #[schemars(length(max = 10))]
    pub replicas: Vec<RecordedReplicas>,
    /// The incident closed (or was deleted) mid-restore: the restore is
    /// winding down, its writers brought back, and the step ends once they
    /// are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wound_down: bool,
}

/// A writer's replicas as recorded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordedReplicas {
    pub kind: WorkloadKind,
    pub name: String,
    pub replicas: i32,
}

/// The sub-steps of a restoreData step, in order.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, strum::Display)]
pub enum WorkflowStage {
    /// Scaling the writers to 0.
    ScaleDown,
    /// Creating the restore Job.
    Restore,
    /// Waiting for the restore Job.
    AwaitRestore,
    /// Waiting for the data to verify.
    VerifyData,
    /// Scaling the writers back to their recorded replicas.
    ScaleBack,
    /// All done: the step verifies like any other.
    Done,
}

/// Where a step stands.
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
pub enum StepResult {
    /// Recorded, not yet applied.
    Pending,
    /// Waiting for a responder's approval.
    AwaitingApproval,
    /// Applied; verification running.
    Verifying,
    /// Verified: the workload recovered.
    Succeeded,
    /// Applied, but the workload did not recover.
    Failed,
    /// Not run (refused by safety limits, or the incident closed).
    Skipped,
    /// Dry run: planned and checked, nothing changed.
    DryRun,
}

impl StepResult {
    /// The name used in YAML and metrics.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
