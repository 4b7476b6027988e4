//! Alerts: Prometheus alerts that Alertmanager delivers to the operator's
//! webhook, as signals. A policy's `alerts` say which alerts (by label) are
//! about which of its targets; a rule with `symptom: AlertFiring` opens
//! incidents from them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::refs::WorkloadRef;

/// Which alerts are about which target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertSignal {
    /// Its name, unique in the policy; rules refer to it.
    #[schemars(length(min = 1, max = 40), pattern(super::bounds::DNS_LABEL))]
    pub name: String,
    /// The workload an incident from these alerts is about, and acts on.
    pub target: WorkloadRef,
    /// Labels an alert must carry, each with this value (e.g. `alertname:
    /// HealingGuardDown`). An alert with a `namespace` label must also be
    /// from the policy's namespace.
    /// At least one: an empty match would take every alert for this target.
    #[serde(rename = "match")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 10))]
    pub matchers: BTreeMap<String, String>,
}
