//! Probes: checks the operator runs itself against a service, for what pod
//! status cannot show (the runbook's `curl -f .../health`, `redis-cli llen
//! webhook_queue`, PostgreSQL answering). A failing probe is a symptom
//! (`when: {symptom: ProbeFailing, probe: NAME}`) like a crash loop is.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    duration::Duration,
    refs::{SecretKeyRef, SecretRef, WorkloadRef},
};

/// One check, run every `every`, against one service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("[has(self.http), has(self.redis), has(self.postgres), has(self.prometheus)].filter(x, x).size() == 1").message("a probe has exactly one of http, redis, postgres, prometheus"),
)]
pub struct Probe {
    /// Its name, unique in the policy; rules and verification refer to it.
    #[schemars(length(min = 1, max = 40), pattern(super::bounds::DNS_LABEL))]
    pub name: String,
    /// The workload an incident from this probe is about, and acts on.
    pub target: WorkloadRef,
    /// How often it runs.
    #[serde(default = "default_every")]
    #[x_kube(validation = super::bounds::probe_every())]
    pub every: Duration,
    /// How long one check may take; longer is a failure.
    #[serde(default = "default_timeout")]
    #[x_kube(validation = super::bounds::probe_timeout())]
    pub timeout: Duration,
    /// Failed checks in a row before the probe counts as failing.
    #[serde(default = "default_failures")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// Passed checks in a row before a failing probe counts as healthy again
    /// (so one good answer does not flap it).
    #[serde(default = "default_successes")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
    /// An HTTP endpoint answers as expected, in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A Redis list is not backing up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisProbe>,
    /// PostgreSQL answers a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresProbe>,
    /// A Prometheus query meets a condition (p95 latency below 1s, an error
    /// rate back to normal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProbe>,
}

fn default_every() -> Duration {
    Duration::from_secs(15)
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_failures() -> i32 {
    3
}

fn default_successes() -> i32 {
    2
}

/// An HTTP check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// The URL; `{{ namespace }}` and `{{ name }}` are the target's, e.g.
    /// `http://{{ name }}.{{ namespace }}.svc:8000/health`.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Status codes that pass; empty means any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(range(min = 100, max = 599)))]
    pub expect_status: Vec<i32>,
    /// An answer slower than this fails, though its status passes (the
    /// runbook times `/api/v1/status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slower_than: Option<Duration>,
    /// A Secret whose keys are sent as request headers (an API token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_from: Option<SecretRef>,
}

/// A Redis list's length, e.g. the runbook's `LLEN webhook_queue`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("!has(self.clearBelow) || self.clearBelow <= self.above").message("clearBelow must not be above `above`"),
)]
pub struct RedisProbe {
    /// A Secret with key `url`: `redis://[:password@]host:port/db`, or
    /// `rediss://...` for TLS. Over TLS the server's certificate is verified
    /// (chain and host name) against `tls.caSecretRef`, or without it the
    /// system roots; `#insecure` is refused.
    pub secret_ref: SecretRef,
    /// The list.
    #[schemars(length(min = 1, max = 512))]
    pub list: String,
    /// Longer than this fails.
    #[schemars(range(min = 0))]
    pub above: i64,
    /// Once failing, it passes only at or below this (default `above`):
    /// a queue draining back and forth around the threshold does not flap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub clear_below: Option<i64>,
    /// The CA to verify the server against; needs a `rediss://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ProbeTls>,
}

/// A PostgreSQL connection and query.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresProbe {
    /// A Secret with key `url` (`postgres://user:password@host:port/db`).
    /// Its `?sslmode=` is honoured as libpq does: `disable` (plain),
    /// `prefer` (the default: TLS if the server offers it), `require`
    /// (TLS, the certificate not verified) or `verify-full` (TLS, chain and
    /// host name verified against `tls.caSecretRef`, or without it the
    /// system roots). `allow` and `verify-ca` are refused.
    pub secret_ref: SecretRef,
    /// The query; it must return without error (default `SELECT 1`). One
    /// statement, run in a read-only transaction under a statement timeout
    /// of three quarters of the probe's; a failure is told by its SQLSTATE
    /// class, never with the server's text.
    #[serde(default = "default_query")]
    #[schemars(length(min = 1, max = 1024))]
    pub query: String,
    /// The CA to verify the server against. A CA means verification: the
    /// URL's sslmode must then be `verify-full` or absent (taken as
    /// `verify-full`); with `disable`, `prefer` or `require` it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ProbeTls>,
}

/// How a Redis or PostgreSQL probe verifies its server over TLS. A probe
/// that cannot use it (its Secret or key missing, no PEM certificate in
/// it) is misconfigured and reported, never counted as the service
/// failing; a server whose certificate does not verify fails the check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTls {
    /// A key of a Secret in the probe's namespace holding the CA
    /// certificate(s), PEM (e.g. cert-manager's `ca.crt`, or a cloud
    /// provider's bundle such as RDS's). The server's certificate must chain
    /// to one of them; the system roots are then not used.
    pub ca_secret_ref: SecretKeyRef,
}

/// A PromQL query and the bound every series of its result must keep. An
/// empty result or NaN is inconclusive (never a pass); a query that fails
/// is a failed check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("has(self.below) || has(self.above)").message("a prometheus probe needs below or above"),
)]
pub struct PrometheusProbe {
    /// Prometheus's address, e.g. `http://prometheus.monitoring.svc:9090`.
    #[schemars(length(min = 1, max = 2048))]
    pub address: String,
    /// The query; `{{ namespace }}` and `{{ name }}` are the target's.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Passes while every value is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Passes while every value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
}

fn default_query() -> String {
    "SELECT 1".to_owned()
}
