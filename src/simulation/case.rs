//! A test file as written: the policies it tests, the world every case
//! starts from, and each case's timeline of what the operator would observe
//! and what must follow. Read with serde; every unknown field of its own
//! structure is an error, so a misspelt expectation never passes by
//! checking nothing (the responders' inputs and a declared Incident are the
//! Incident's own types, which pass over what they do not know).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crd::{
    Acknowledgement, Approval, Decline, Duration, IncidentType, Phase, Resolution, Severity,
    StepResult, WorkloadKind,
};

/// A test file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestFile {
    /// Files of RemediationPolicies, relative to the test file.
    pub policies: Vec<String>,
    /// Files of NotificationChannels and EscalationPolicies, relative to
    /// the test file: what the cases' messages and pages are checked against.
    #[serde(default)]
    pub communication: Vec<String>,
    /// The workloads every case starts with.
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    pub cases: Vec<Case>,
}

/// A workload at the start of a case: healthy, all replicas ready.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    #[serde(default = "deployment")]
    pub kind: WorkloadKind,
    pub name: String,
    /// Default: the namespace of the first policy.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub replicas: i32,
    /// The images of its revisions, oldest first; the last runs now.
    #[serde(default)]
    pub revisions: Vec<String>,
    /// The revision (1 = the oldest) last seen healthy, which
    /// `rollback: {to: LastHealthy}` returns to.
    #[serde(default)]
    pub healthy_revision: Option<i64>,
    /// Its containers' names (the first runs the image).
    #[serde(default)]
    pub containers: Vec<String>,
    /// How long a change takes to roll out.
    #[serde(default = "ten_seconds")]
    pub rollout: Duration,
    /// Its annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The ConfigMaps it reads, against their last snapshot (a ConfigMap
    /// not named here was snapshotted and is unchanged).
    #[serde(default)]
    pub config_maps: BTreeMap<String, crate::remediation::actions::ConfigAssumed>,
}

fn deployment() -> WorkloadKind {
    WorkloadKind::Deployment
}

fn one() -> i32 {
    1
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

/// One scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// Workloads beside (or instead of, by name) the file's.
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    /// What happens, in order of time.
    #[serde(default)]
    pub timeline: Vec<Input>,
    /// How each step turns out when it is applied; a step not named here
    /// changes nothing (the symptom goes on).
    #[serde(default)]
    pub steps: Vec<StepOutcome>,
    /// How long the case runs (default: an hour after the last input or
    /// expectation).
    #[serde(default)]
    pub until: Option<Duration>,
    /// What must hold at given times.
    #[serde(default)]
    pub expect: Vec<Expectation>,
    /// Per channel, the messages it must have received by the end, in order.
    #[serde(default)]
    pub messages: Option<BTreeMap<String, Vec<ExpectedMessage>>>,
    /// Everyone paged by the end, in order.
    #[serde(default)]
    pub pages: Option<Vec<ExpectedPage>>,
}

/// What the operator would observe at one time; any number of fields.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Input {
    pub at: Duration,
    /// A workload's pods change state.
    #[serde(default)]
    pub pods: Option<PodsInput>,
    /// Fewer replicas are available than desired.
    #[serde(default)]
    pub available: Option<AvailableInput>,
    /// A rollout stops progressing (ProgressDeadlineExceeded).
    #[serde(default)]
    pub rollout_stuck: Option<String>,
    /// A new release: a revision with this image, whose pods are healthy
    /// until `pods` says otherwise.
    #[serde(default)]
    pub release: Option<ReleaseInput>,
    /// A ConfigMap the workload reads changes from its snapshot.
    #[serde(default)]
    pub config_changed: Option<ConfigInput>,
    /// Alerts Alertmanager delivers (firing or resolved).
    #[serde(default)]
    pub alerts: Vec<AlertInput>,
    /// A probe starts passing or failing (its checks follow its `every`).
    #[serde(default)]
    pub probes: Vec<ProbeInput>,
    /// An Incident someone applies (`kubectl apply`, or
    /// `kubectl healing-guard declare`): a manifest without status.
    #[serde(default)]
    pub declare: Option<Box<crate::crd::Incident>>,
    #[serde(default)]
    pub acknowledge: Option<Responder<Acknowledgement>>,
    #[serde(default)]
    pub approve: Option<Responder<Approval>>,
    #[serde(default)]
    pub resolve: Option<Responder<Resolution>>,
    #[serde(default)]
    pub decline: Option<Responder<Decline>>,
}

impl Input {
    /// An input at `at` that changes nothing yet.
    pub fn at(at: Duration) -> Self {
        Input {
            at,
            pods: None,
            available: None,
            rollout_stuck: None,
            release: None,
            config_changed: None,
            alerts: Vec::new(),
            probes: Vec::new(),
            declare: None,
            acknowledge: None,
            approve: None,
            resolve: None,
            decline: None,
        }
    }
}

/// The state a workload's pods show from now on.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodsInput {
    pub workload: String,
    pub state: PodState,
    /// Container restarts each pod shows (CrashLoopBackOff counts them).
    #[serde(default)]
    pub restarts: i32,
    /// How many of its pods (default: all).
    #[serde(default)]
    pub count: Option<i32>,
}

/// A pod's state, as the classifier reads it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum PodState {
    Running,
    CrashLoopBackOff,
    OOMKilled,
    ImagePullBackOff,
    NotReady,
    Failed,
    Evicted,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AvailableInput {
    pub workload: String,
    pub replicas: i32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigInput {
    pub workload: String,
    pub config_map: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseInput {
    pub workload: String,
    pub image: String,
}

/// One alert as Alertmanager sends it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertInput {
    pub labels: BTreeMap<String, String>,
    #[serde(default = "firing")]
    pub status: String,
}

fn firing() -> String {
    "firing".into()
}

/// A probe's checks pass or fail from now on.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeInput {
    pub name: String,
    pub passing: bool,
    /// Its policy (default: the only one that has a probe of that name).
    #[serde(default)]
    pub policy: Option<String>,
}

/// A responder's input on an incident, as `kubectl healing-guard` sets it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Responder<T> {
    pub incident: String,
    #[serde(flatten)]
    pub value: T,
}

/// How a step turns out when applied.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepOutcome {
    /// The step's name in the ladder (its action when unnamed).
    pub step: String,
    /// Only in this incident (default: any).
    #[serde(default)]
    pub incident: Option<String>,
    /// Only this round of the ladder (default: every).
    #[serde(default)]
    pub attempt: Option<i32>,
    pub outcome: Outcome,
    /// The refusal's words, for `Refused`.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum Outcome {
    /// The target recovers once the change rolls out.
    Recovers,
    /// The change rolls out; the symptom goes on.
    Fails,
    /// The API server (or the service called) refuses the change.
    Refused,
}

/// What must hold at one time.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expectation {
    pub at: Duration,
    /// Exactly these incidents exist, each as described.
    pub incidents: Vec<ExpectedIncident>,
}

/// An incident as it must be; a field not given is not checked.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExpectedIncident {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub incident_type: Option<IncidentType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Why its next step is held: the reason of its RemediationBlocked
    /// condition (`None` for not held), or `{reason, message}` with words
    /// of the condition's message (`cooldown`, `at most 3`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<ExpectedBlock>,
    /// Its ledger, every step in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<ExpectedStep>>,
}

/// Why an incident's next step is held.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ExpectedBlock {
    /// The condition's reason (`SafetyLimit`, `CircuitBreakerOpen`,
    /// `TargetBusy`, `AwaitingApprovalOnTarget`, `DependencyDown`,
    /// `TargetNotFound`, `PolicyNotFound`, `RuleNotFound`, `PolicyInvalid`,
    /// `InvalidSpec`), or `None`.
    Reason(String),
    Detailed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Words of the condition's message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

/// A ledger entry as it must be.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExpectedStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<crate::crd::ActionKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<StepResult>,
    /// Words its message contains (a refusal's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Words one of its ledger lines contains (what it changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

/// A message a channel must have received.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ExpectedMessage {
    /// Just the moment (`Opened`, `Update`, `Resolved`, ...).
    Event(crate::crd::NotifyEvent),
    Detailed {
        event: crate::crd::NotifyEvent,
        /// The incident it is about (default: any).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incident: Option<String>,
        /// Words its text contains.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contains: Option<String>,
    },
}

/// Someone who must have been paged.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExpectedPage {
    pub person: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}
