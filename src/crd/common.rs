//! Types both custom resources share: severities, incident types, modes,
//! durations, workload references and the action ladder.

use std::{borrow::Cow, collections::BTreeMap, fmt, str::FromStr};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Incident severity from the runbook: P0 is a complete outage, P3 cosmetic.
/// Ordered so that `P0 < P1`: a smaller value is more severe.
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
)]
pub enum Severity {
    /// Complete service outage: acknowledge within 15 minutes.
    P0,
    /// Major functionality impaired: acknowledge within 1 hour.
    P1,
    /// Minor functionality impaired: acknowledge within 4 hours.
    P2,
    /// Cosmetic issue: acknowledge within 24 hours.
    P3,
}

impl Severity {
    /// The runbook's response time: how long until someone must acknowledge.
    pub fn acknowledge_within(self) -> std::time::Duration {
        let minutes = match self {
            Severity::P0 => 15,
            Severity::P1 => 60,
            Severity::P2 => 4 * 60,
            Severity::P3 => 24 * 60,
        };
        std::time::Duration::from_secs(minutes * 60)
    }

    /// The target time to resolve. The runbook only gives response times; these
    /// follow common practice (P0 4 h, P1 24 h, P2 3 days, P3 7 days).
    pub fn resolve_within(self) -> std::time::Duration {
        let hours = match self {
            Severity::P0 => 4,
            Severity::P1 => 24,
            Severity::P2 => 72,
            Severity::P3 => 168,
        };
        std::time::Duration::from_secs(hours * 3600)
    }
}

/// Incident type from the runbook's classification.
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
pub enum IncidentType {
    /// Core services unavailable.
    ServiceOutage,
    /// Slow responses or timeouts.
    PerformanceDegradation,
    /// Database or configuration corruption.
    DataCorruption,
    /// Unauthorized access or breach; never resolved automatically.
    SecurityIncident,
    /// CI/CD platform integration failing.
    IntegrationFailure,
    /// Memory, CPU or disk exhausted.
    ResourceExhaustion,
}

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

/// The kinds of workload the operator guards.
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
)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
}

/// A duration written the Go way (`90s`, `5m`, `1h30m`), as in metav1.Duration.
///
/// Decoding never fails: a value the schema refuses today but an older
/// schema let in decodes as unusable, [`crate::validation`] reports it, and
/// [`Duration::as_std`] clamps it, so one bad object can neither stop the
/// watch of all the others nor overflow a timer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Duration(Result<std::time::Duration, BadDuration>);

/// Why a written duration cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadDuration {
    #[error("not a duration such as 90s, 5m or 1h30m")]
    Malformed,
    #[error("longer than any setting allows ({LONGEST_TEXT})")]
    TooLong,
}

/// Go duration syntax without a sign: up to four number-unit pairs, each
/// number at most nine digits (so no parse can overflow).
pub const DURATION_PATTERN: &str = r"^([0-9]{1,9}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$";
/// The longest text of a duration.
pub const DURATION_MAX_LENGTH: usize = 40;
/// The longest duration any field allows; far below what timers accept
/// (about two years), and what an unusable value is clamped to.
pub const LONGEST: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);
const LONGEST_TEXT: &str = "8784h";

impl Duration {
    /// Reads a Go duration; what the schema's pattern refuses is unusable.
    pub fn parse(text: &str) -> Self {
        Duration(parse(text))
    }

    /// The duration, or why it cannot be used.
    pub fn checked(&self) -> Result<std::time::Duration, BadDuration> {
        self.0
    }

    /// The duration for timers and arithmetic, never beyond [`LONGEST`]
    /// (an unusable value, which validation has already reported, counts as
    /// that longest one: the safe side for cooldowns and windows).
    pub fn as_std(&self) -> std::time::Duration {
        self.0.unwrap_or(LONGEST).min(LONGEST)
    }

    /// A duration from whole seconds.
    pub fn from_secs(seconds: u64) -> Self {
        Duration(Ok(std::time::Duration::from_secs(seconds)))
    }
}

fn parse(text: &str) -> Result<std::time::Duration, BadDuration> {
    let well_formed = text.len() <= DURATION_MAX_LENGTH
        && !text.is_empty()
        && text.starts_with(|c: char| c.is_ascii_digit())
        && text
            .split(|c: char| !c.is_ascii_digit())
            .all(|digits| digits.len() <= 9)
        && text
            .split(|c: char| c.is_ascii_digit() || c == '.')
            .filter(|unit| !unit.is_empty())
            .count()
            <= 4;
    if !well_formed {
        return Err(BadDuration::Malformed);
    }
    let parsed: kube::core::Duration = text.parse().map_err(|_| BadDuration::Malformed)?;
    if parsed.is_negative() {
        return Err(BadDuration::Malformed);
    }
    let value: std::time::Duration = parsed.into();
    if value > LONGEST {
        return Err(BadDuration::TooLong);
    }
    Ok(value)
}

impl FromStr for Duration {
    type Err = BadDuration;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text).map(|value| Duration(Ok(value)))
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Ok(value) => serializer.collect_str(&kube::core::Duration::from(value)),
            // Never written back: what it was is not known any more.
            Err(bad) => Err(serde::ser::Error::custom(bad)),
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration such as 90s, 5m or 1h30m")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                Ok(Duration::parse(text))
            }

            // Not a string at all: unusable, not undecodable.
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Duration, E> {
                Ok(Duration(Err(BadDuration::Malformed)))
            }

            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Duration, E> {
                Ok(Duration(Err(BadDuration::Malformed)))
            }

            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Duration, E> {
                Ok(Duration(Err(BadDuration::Malformed)))
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Duration, E> {
                Ok(Duration(Err(BadDuration::Malformed)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(value) => fmt::Debug::fmt(&value, f),
            Err(bad) => write!(f, "<{bad}>"),
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "maxLength": DURATION_MAX_LENGTH,
            "pattern": DURATION_PATTERN,
        })
    }
}

/// A workload in the Incident's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub struct WorkloadRef {
    /// Kind of the workload.
    pub kind: WorkloadKind,
    /// Name of the workload.
    #[schemars(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))]
    pub name: String,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_the_go_way_and_never_overflow() {
        let secs = |text: &str| Duration::parse(text).checked().map(|d| d.as_secs_f64());
        assert_eq!(secs("90s"), Ok(90.0));
        assert_eq!(secs("1h30m"), Ok(5400.0));
        assert_eq!(secs("1.5h"), Ok(5400.0));
        assert_eq!(secs("250ms"), Ok(0.25));
        assert_eq!(secs("0s"), Ok(0.0));
        assert_eq!(secs("8784h"), Ok(8784.0 * 3600.0));
        // Too long for any field, and beyond what timers take.
        assert_eq!(secs("8785h"), Err(BadDuration::TooLong));
        assert_eq!(secs("999999999h"), Err(BadDuration::TooLong));
        // Numbers that would overflow the parser are refused before it runs.
        for malformed in [
            "99999999999999999999h",
            "1e300h",
            "",
            "5 minutes",
            "-5m",
            "5",
            "h",
            "1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h",
        ] {
            assert_eq!(
                secs(malformed),
                Err(BadDuration::Malformed),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn an_unusable_duration_decodes_and_is_clamped() {
        let read = |json: serde_json::Value| serde_json::from_value::<Duration>(json).unwrap();
        let huge = read(serde_json::json!("99999999999999999999h"));
        assert_eq!(huge.checked(), Err(BadDuration::Malformed));
        assert_eq!(huge.as_std(), LONGEST, "the safe side: as long as allowed");
        assert_eq!(
            read(serde_json::json!(300)).checked(),
            Err(BadDuration::Malformed)
        );
        assert!(serde_json::to_value(huge).is_err(), "never written back");
        let five = read(serde_json::json!("5m"));
        assert_eq!(
            serde_json::to_value(five).unwrap(),
            serde_json::json!("300s")
        );
    }
}
