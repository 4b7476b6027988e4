//! Settings of the service actions: what containment does beyond the
//! workload's own objects (the runbook's admin API calls, a Job, a new
//! secret, a patch of another resource).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    duration::Duration,
    refs::{SecretKeyRef, SecretRef, WorkloadRef},
};

/// Settings for `http`: a call to the service's own API, e.g. the
/// runbook's `POST /api/v1/admin/gc` or `/api/v1/admin/revoke-all-tokens`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpAction {
    /// The method. Default POST.
    #[serde(default)]
    pub method: HttpMethod,
    /// The URL; `{{ namespace }}` and `{{ name }}` are the target's, e.g.
    /// `http://{{ name }}.{{ namespace }}.svc:8000/api/v1/admin/gc`.
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub url: String,
    /// A Secret (same namespace) whose keys are sent as request headers
    /// (an admin token). Its values never reach the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_from: Option<SecretRef>,
    /// The request body, with the target filled in like the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
    /// A Secret key holding the request body instead (a body with a
    /// credential in it). Its value never reaches the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_from: Option<SecretKeyRef>,
    /// The content type of the body. Default `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub content_type: Option<String>,
    /// Statuses that mean it worked; empty means any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(range(min = 100, max = 599)))]
    pub expect_status: Vec<i32>,
    /// How long the call may take. Default 10s, at most 2m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Whether making the call twice does no harm. Only then is it tried
    /// again after a 5xx or no answer (up to three times), or made again
    /// when the operator stopped before recording how it went; otherwise
    /// such a step fails and waits for a human.
    #[serde(default)]
    pub idempotent: bool,
}

/// The HTTP methods an action may use.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    JsonSchema,
    strum::Display,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "UPPERCASE")]
#[strum(serialize_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
}

/// Settings for `runJob`: a Job made from this spec (a smoke test, a
/// backup, a restore), waited for with a deadline; the step fails if the
/// Job fails. Named after the step, so it is never created twice.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunJobAction {
    /// The Job's spec, as in a Job (`template`, `backoffLimit`, ...). The
    /// operator sets `activeDeadlineSeconds` and `ttlSecondsAfterFinished`.
    #[schemars(schema_with = "super::bounds::free_object")]
    pub job: serde_json::Value,
    /// How long the Job may run. Default 10m, at most 24h. The step's
    /// `timeout` should be at least as long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
    /// How long the finished Job (and its pods' logs) is kept. Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_for: Option<Duration>,
}

/// Settings for `rotateSecret`: a new random value for one key of a
/// Secret (the runbook's "rotate the JWT secret"), then a rollout restart
/// of every workload whose pod template reads that Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotateSecretAction {
    /// The Secret, in the incident's namespace.
    #[schemars(length(min = 1, max = 253), pattern(super::bounds::DNS_SUBDOMAIN))]
    pub secret: String,
    /// The key that gets the new value.
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
    /// How many characters the new value has. Default 48.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16, max = 512))]
    pub length: Option<i32>,
    /// Which characters it is made of. Default Alphanumeric.
    #[serde(default)]
    pub alphabet: SecretAlphabet,
    /// Where the application accepts two values during a grace period:
    /// the key that keeps the previous value (e.g. `jwt-secret-previous`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub previous_key: Option<String>,
    /// How long the previous value stays under `previousKey`; then the
    /// operator removes it. Unset: until the next rotation replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
}

/// The characters of a generated secret value.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema, strum::Display,
)]
pub enum SecretAlphabet {
    /// A-Z, a-z, 0-9.
    #[default]
    Alphanumeric,
    /// 0-9, a-f.
    Hex,
    /// A-Z, a-z, 0-9, `-` and `_` (URL-safe base64 characters).
    Base64Url,
}

/// Settings for `patch`: a merge or JSON patch to one object of a kind the
/// chart lets the operator patch (`actions.patch` in its values), e.g. the
/// runbook's "scale database resources" on a Postgres operator's
/// `postgresql` resource. The ledger keeps what it changed from and how to
/// undo it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchAction {
    /// The object's API version, e.g. `acid.zalan.do/v1` or `v1`.
    #[schemars(
        length(min = 1, max = 317),
        pattern(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9]+([a-z]+[0-9]*)*$")
    )]
    pub api_version: String,
    /// Its kind, e.g. `postgresql`.
    #[schemars(length(min = 1, max = 63), pattern(r"^[A-Za-z][A-Za-z0-9]*$"))]
    pub kind: String,
    /// Its name in the incident's namespace; `{{ name }}` is the target's.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Merge` (a JSON merge patch, the default) or `Json` (RFC 6902 operations).
    #[serde(default, rename = "type")]
    pub patch_type: PatchType,
    /// The patch: an object for Merge, a list of operations for Json.
    #[schemars(schema_with = "super::bounds::free_value")]
    pub patch: serde_json::Value,
}

/// How a `patch` action's patch reads.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema, strum::Display,
)]
pub enum PatchType {
    /// RFC 7386: the object's fields as they should be.
    #[default]
    Merge,
    /// RFC 6902: a list of operations.
    Json,
}

/// Settings for `restoreData`: the runbook's "Database Corruption" as one
/// step of sub-steps: approval by the named approver, the writers'
/// replicas recorded, the writers scaled to 0, the restore Job run, the
/// data verified, the writers scaled back to what was recorded. Each
/// sub-step is in the ledger before it runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreDataAction {
    /// Who must approve it: an approval of the step by anyone else does not count.
    #[schemars(length(min = 1, max = 256))]
    pub approver: String,
    /// The workloads that write to the data: scaled to 0 before the
    /// restore and back to their recorded replicas after it.
    #[schemars(length(min = 1, max = 10))]
    pub writers: Vec<WorkloadRef>,
    /// The restore Job's spec, as in a Job.
    #[schemars(schema_with = "super::bounds::free_object")]
    pub job: serde_json::Value,
    /// How long the restore may run. Default 30m, at most 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
    /// A probe of the policy that must pass after the restore (the
    /// database answering its integrity query); without one, the Job's
    /// success is the verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub verify_probe: Option<String>,
}
