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
    /// HealingGuardDown`). The alert's `namespace` label must also name the
    /// policy's namespace (see `clusterWide` for alerts without one).
    /// At least one: an empty match would take every alert for this target.
    #[serde(rename = "match")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 10))]
    pub matchers: BTreeMap<String, String>,
    /// Also take alerts that carry no `namespace` label (a rule over the
    /// whole cluster, an external check). Off by default: such an alert
    /// could otherwise act in every namespace whose policy matches it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_wide: bool,
}
