//! `RemediationPolicy`: the GitOps-managed rules that say which workloads are
//! guarded, how a failure is classified and which actions contain it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    classification::{IncidentType, Severity},
    common::{Action, ActionKind, Mode},
    duration::Duration,
    refs::{WorkloadKind, WorkloadRef},
};

/// Which workloads a policy guards, how their failures are classified, and the
/// escalation ladder of containment actions for each class of failure.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "healing-guard.io",
    version = "v1alpha1",
    kind = "RemediationPolicy",
    doc = "Which workloads are guarded, how their failures are classified, and the containment ladder for each",
    plural = "remediationpolicies",
    shortname = "rp",
    category = "healing-guard",
    namespaced,
    status = "RemediationPolicyStatus",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Targets",
        type_ = "integer",
        json_path = ".status.matchedTargets"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RemediationPolicySpec {
    /// The workloads this policy guards; their pods are found through owner references.
    #[schemars(length(min = 1, max = 20))]
    pub targets: Vec<Target>,
    /// Classification and remediation rules; the first rule whose symptom matches wins.
    #[schemars(length(min = 1, max = 32))]
    pub rules: Vec<PolicyRule>,
    /// How steps run unless a step sets its own mode. Defaults to DryRun, so a
    /// policy changes nothing until someone opts in.
    #[serde(default)]
    pub mode: Mode,
    /// Limits that keep automatic actions from making an incident worse.
    #[serde(default)]
    pub safety: Safety,
    /// How detected incidents are deduplicated, reopened and auto-resolved.
    #[serde(default)]
    pub detection: Detection,
    /// When several policies select one workload, the one with the highest
    /// priority guards it (on a tie, the first by name); the others report
    /// the overlap in their `Overlapping` condition.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,
    /// What an Incident that names this policy may ask for beyond the
    /// policy's own rules.
    #[serde(default)]
    pub incidents: IncidentAllowance,
    /// Who is told about its incidents, and who is paged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication: Option<super::channel::Communication>,
    /// Workloads (same namespace) the targets depend on, as the runbook's
    /// API and workers depend on PostgreSQL and Redis. While one of them has
    /// an open incident, this policy's incidents take no action (their
    /// `RemediationBlocked` condition names that incident): restarting the
    /// API in a loop cannot fix a database that is down. They resume when it
    /// is resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub depends_on: Vec<WorkloadRef>,
    /// Alerts from Alertmanager (its webhook, on the operator's port) that
    /// are about this policy's targets; a rule with `symptom: AlertFiring`
    /// opens incidents from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub alerts: Vec<super::alert::AlertSignal>,
    /// Checks the operator runs against services (HTTP, Redis, PostgreSQL);
    /// a rule with `symptom: ProbeFailing` opens incidents from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub probes: Vec<super::probe::Probe>,
    /// The ServiceAccount of this namespace whose authority every change
    /// this policy makes is made with (and every Secret it reads, read
    /// with). Default: the namespace's remediator, as the operator was
    /// started (`healing-guard-remediator`). The namespace's owner grants it
    /// what may be remediated; the operator acts as no account of another
    /// namespace, and as another name only where it was let impersonate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))]
    pub service_account_name: Option<String>,
    /// What to do when a target is reconciled from Git (Flux): hold its
    /// Kustomization or HelmRelease while a step Git would undo runs
    /// (default), or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<super::gitops::GitOps>,
}

/// What an Incident may bring of its own. The policy is the authority: an
/// incident's `spec.mode` only ever tightens the policy's (DryRun is
/// tightest, then RequireApproval, then Auto), and actions beyond what is
/// allowed here run as a dry run only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentAllowance {
    /// Actions an incident on a workload this policy guards may list in its
    /// own `spec.actions`, run under this policy's mode and safety limits.
    /// Empty (the default): an incident's own actions are a dry run. Never
    /// `http`, `runJob`, `restoreData`, `patch` or `rotateSecret`: the URL
    /// and Secrets, the code run, or the object and Secret changed would be
    /// chosen by whoever writes the Incident; they belong in the policy's rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(validation = Rule::new("self.all(a, a != 'http' && a != 'runJob' && a != 'restoreData' && a != 'patch' && a != 'rotateSecret')").message("an Incident may not bring its own http, runJob, restoreData, patch or rotateSecret action: what it calls, runs or changes belongs in a RemediationPolicy rule"))]
    pub allowed_actions: Vec<ActionKind>,
}

impl RemediationPolicySpec {
    /// The order in which policies claim a workload they both select: higher
    /// priority first, then by name.
    pub fn precedence(&self, name: &str) -> (std::cmp::Reverse<i32>, String) {
        (std::cmp::Reverse(self.priority), name.to_owned())
    }
}

/// How the detector treats incidents it opens for this policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Detection {
    /// Resolve a detected incident by itself once its signal has been clear
    /// for holdDown. SecurityIncident incidents never auto-resolve.
    #[serde(default = "default_true")]
    pub auto_resolve: bool,
    /// How long pods must stay healthy before a cleared signal counts.
    #[serde(default = "default_detection_hold_down")]
    #[x_kube(validation = super::bounds::hold_down())]
    pub hold_down: Duration,
    /// A signal that returns within this time after resolution reopens the
    /// same incident (a flap); later, a new incident links to the old one.
    #[serde(default = "default_reopen_window")]
    #[x_kube(validation = super::bounds::reopen_window())]
    pub reopen_window: Duration,
    /// Reopens after which the incident is marked Flapping.
    #[serde(default = "default_flap_threshold")]
    #[schemars(range(min = 1, max = super::bounds::MAX_COUNT))]
    pub flap_threshold: i32,
    /// Closed detected incidents kept per policy; older ones are deleted
    /// (never one still inside its reopen window). Declared incidents are
    /// people's records and are never deleted.
    #[serde(default = "default_keep_closed")]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_closed: i32,
    /// Closed detected incidents older than this are deleted whatever their number.
    #[serde(default = "default_max_closed_age")]
    #[x_kube(validation = super::bounds::retention())]
    pub max_closed_age: Duration,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            auto_resolve: true,
            hold_down: default_detection_hold_down(),
            reopen_window: default_reopen_window(),
            flap_threshold: default_flap_threshold(),
            keep_closed: default_keep_closed(),
            max_closed_age: default_max_closed_age(),
        }
    }
}

fn default_keep_closed() -> i32 {
    100
}

fn default_max_closed_age() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_true() -> bool {
    true
}

fn default_detection_hold_down() -> Duration {
    Duration::from_secs(120)
}

fn default_reopen_window() -> Duration {
    Duration::from_secs(1800)
}

fn default_flap_threshold() -> i32 {
    3
}

/// A set of workloads: by label selector, by names, or both (both must match).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.selector) || (has(self.names) && size(self.names) > 0)").message("a target needs a selector or names"),
    validation = Rule::new("!has(self.selector) || !has(self.selector.matchLabels) || size(self.selector.matchLabels) <= 32").message("a selector takes at most 32 matchLabels").field_path(".selector.matchLabels"),
    validation = Rule::new("!has(self.selector) || !has(self.selector.matchExpressions) || size(self.selector.matchExpressions) <= 32").message("a selector takes at most 32 matchExpressions").field_path(".selector.matchExpressions"),
)]
pub struct Target {
    /// Kind of the guarded workloads.
    pub kind: WorkloadKind,
    /// Label selector of the guarded workloads (not of their pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Names of the guarded workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 100),
        inner(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))
    )]
    pub names: Option<Vec<String>>,
}

/// One classification rule with its escalation ladder.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.actions) > 0").message("a rule needs at least one action"))]
pub struct PolicyRule {
    /// Name of the rule, unique in the policy; incidents record which rule opened them.
    #[schemars(length(min = 1, max = 63), pattern(super::bounds::DNS_LABEL))]
    pub name: String,
    /// The symptom that triggers this rule.
    pub when: SymptomMatch,
    /// Severity of incidents this rule opens.
    pub severity: Severity,
    /// Type of incidents this rule opens.
    #[serde(rename = "type")]
    pub incident_type: IncidentType,
    /// The escalation ladder, tried in order until verification passes.
    #[schemars(length(max = 10))]
    pub actions: Vec<Action>,
    /// How recovery is verified after each step.
    #[serde(default)]
    pub verify: Verify,
}

/// Failure symptoms the detector recognises.
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
    strum::EnumIter,
    strum::EnumProperty,
)]
pub enum Symptom {
    /// A container restarts again and again (restarts >= minRestarts).
    #[strum(props(slug = "crashloop"))]
    CrashLoopBackOff,
    /// A container's last termination was OOMKilled.
    #[strum(props(slug = "oomkilled"))]
    OOMKilled,
    /// An image cannot be pulled (ImagePullBackOff or ErrImagePull).
    #[strum(props(slug = "imagepull"))]
    ImagePullBackOff,
    /// A pod's phase is Failed.
    #[strum(props(slug = "podfailed"))]
    PodFailed,
    /// A pod was evicted.
    #[strum(props(slug = "evicted"))]
    Evicted,
    /// A pod has not been Ready for longer than sustainedFor.
    #[strum(props(slug = "notready"))]
    NotReady,
    /// A Deployment's rollout exceeded its progress deadline.
    #[strum(props(slug = "rollout-stuck"))]
    ProgressDeadlineExceeded,
    /// Available (Deployment) or ready (StatefulSet) replicas below belowRatio of desired.
    #[strum(props(slug = "unavailable"))]
    ReplicasUnavailable,
    /// One of the policy's probes (`probe`) is failing.
    #[strum(props(slug = "probe"))]
    ProbeFailing,
    /// Alertmanager reports an alert of the policy's `alerts` (`alert`) firing.
    #[strum(props(slug = "alert"))]
    AlertFiring,
}

impl Symptom {
    /// The symptom as written in YAML, dedup keys and labels.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// A short lowercase form for incident names (every variant declares one;
    /// a unit test holds them to that).
    pub fn slug(self) -> &'static str {
        use strum::EnumProperty;
        self.get_str("slug").unwrap_or("signal")
    }

    /// Whether the symptom is seen on pods (rather than on the workload).
    pub fn is_pod_level(self) -> bool {
        !matches!(
            self,
            Symptom::ProgressDeadlineExceeded
                | Symptom::ReplicasUnavailable
                | Symptom::ProbeFailing
        )
    }

    /// Whether the detector finds it in Kubernetes objects (a probe's is
    /// found by running the probe, an alert's is delivered).
    pub fn is_observed(self) -> bool {
        !matches!(self, Symptom::ProbeFailing | Symptom::AlertFiring)
    }
}

/// A symptom with the thresholds that make it count.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.symptom != 'NotReady' || has(self.sustainedFor)").message("the NotReady symptom needs sustainedFor"),
    validation = Rule::new("self.symptom != 'ReplicasUnavailable' || has(self.belowRatio)").message("the ReplicasUnavailable symptom needs belowRatio"),
    validation = Rule::new("!has(self.minRestarts) || self.symptom == 'CrashLoopBackOff'").message("minRestarts only applies to CrashLoopBackOff"),
    validation = Rule::new("(self.symptom == 'ProbeFailing') == has(self.probe)").message("the ProbeFailing symptom needs probe, and only it takes one"),
    validation = Rule::new("(self.symptom == 'AlertFiring') == has(self.alert)").message("the AlertFiring symptom needs alert, and only it takes one"),
)]
pub struct SymptomMatch {
    /// The symptom.
    pub symptom: Symptom,
    /// CrashLoopBackOff: the restart count at which it counts (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = super::bounds::MAX_RESTARTS))]
    pub min_restarts: Option<i32>,
    /// How long the symptom must last before it counts (required for NotReady).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = super::bounds::sustained_for())]
    pub sustained_for: Option<Duration>,
    /// ReplicasUnavailable: the fraction of desired replicas below which it counts, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("belowRatio must be in (0, 1]"))]
    pub below_ratio: Option<f64>,
    /// ProbeFailing: the probe (by name, in this policy's `probes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40), pattern(super::bounds::DNS_LABEL))]
    pub probe: Option<String>,
    /// AlertFiring: the alerts (by name, in this policy's `alerts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40), pattern(super::bounds::DNS_LABEL))]
    pub alert: Option<String>,
}

/// How recovery is verified after a step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verify {
    /// How long the rollout may take to complete with all pods ready.
    #[serde(default = "default_verify_timeout")]
    #[x_kube(validation = super::bounds::step_timeout())]
    pub timeout: Duration,
    /// How long the workload must then stay healthy to count as recovered.
    #[serde(default = "default_hold_down")]
    #[x_kube(validation = super::bounds::hold_down())]
    pub hold_down: Duration,
    /// Probes (by name, in the policy's `probes`) that must pass too: a
    /// rollout that completes is not recovery while `/health` still fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 5),
        inner(length(min = 1, max = 40), pattern(super::bounds::DNS_LABEL))
    )]
    pub probes: Vec<String>,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            timeout: default_verify_timeout(),
            hold_down: default_hold_down(),
            probes: Vec::new(),
        }
    }
}

fn default_verify_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_hold_down() -> Duration {
    Duration::from_secs(60)
}

/// Limits on automatic actions. State for them lives in the API, so an
/// operator restart does not reset them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Safety {
    /// Minimum time between two actions on the same target.
    #[serde(default = "default_cooldown")]
    #[x_kube(validation = super::bounds::cooldown())]
    pub cooldown: Duration,
    /// At most this many actions per target within `window`.
    #[serde(default = "default_max_actions")]
    #[schemars(range(min = 1, max = super::bounds::MAX_COUNT))]
    pub max_actions: i32,
    /// The window over which maxActions is counted.
    #[serde(default = "default_window")]
    #[x_kube(validation = super::bounds::window())]
    pub window: Duration,
    /// Never take an action that would leave fewer ready replicas than this.
    #[serde(default)]
    #[schemars(range(min = 0, max = super::bounds::MAX_REPLICAS))]
    pub min_ready_replicas: i32,
    /// Failed steps in a row after which the policy's circuit breaker opens and
    /// stays open until a human resets it.
    #[serde(default = "default_breaker_threshold")]
    #[schemars(range(min = 1, max = super::bounds::MAX_COUNT))]
    pub circuit_breaker_threshold: i32,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            cooldown: default_cooldown(),
            max_actions: default_max_actions(),
            window: default_window(),
            min_ready_replicas: 0,
            circuit_breaker_threshold: default_breaker_threshold(),
        }
    }
}

fn default_cooldown() -> Duration {
    Duration::from_secs(300)
}

fn default_max_actions() -> i32 {
    3
}

fn default_window() -> Duration {
    Duration::from_secs(3600)
}

fn default_breaker_threshold() -> i32 {
    3
}

/// What the controller observed about a policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationPolicyStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, or why the policy is invalid.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How many workloads the targets select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_targets: Option<i32>,
    /// When the policy last opened or updated an incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_triggered: Option<Time>,
    /// The circuit breaker, derived from the ledgers of the policy's incidents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerStatus>,
}

/// A policy's circuit breaker: open after `safety.circuitBreakerThreshold`
/// failed steps in a row, until a human sets the
/// `healing-guard.io/circuit-breaker-reset` annotation to the current time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerStatus {
    /// Whether automatic steps are stopped.
    pub open: bool,
    /// Failed steps in a row since the last success or reset.
    pub consecutive_failures: i32,
}
