//! How the runbook classifies an incident: its severity and its type.

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
