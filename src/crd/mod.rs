//! The custom resources, as Rust types; the CRD YAML in `crds/` is generated
//! from them (`healing-guard-operator crd`), and from that the field
//! reference in `docs/reference/` (`reference`, `healing-guard-operator
//! docs reference`).
//!
//! Each file imports only from the floors below its own, so none of them
//! imports another in a loop:
//! 1. `duration`, `classification`: the smallest shared types;
//! 2. `bounds`: field limits and the schema rules that enforce them;
//! 3. `refs`: references to workloads and Secrets;
//! 4. `service`, `channel`, `alert`, `probe`, `escalation`;
//! 5. `common` (the action ladder);
//! 6. `policy`, then `incident`;
//! 7. `reference`, which reads only the generated CRDs.

pub mod alert;
pub mod bounds;
#[allow(clippy::duplicated_attributes)]
pub mod channel;
pub mod classification;
pub mod common;
pub mod duration;
#[allow(clippy::duplicated_attributes)]
pub mod escalation;
pub mod gitops;
// kube's printcolumn(...) repeats `type_ = ...`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
pub mod incident;
pub mod ledger;
#[allow(clippy::duplicated_attributes)]
pub mod policy;
pub mod probe;
pub mod refs;
pub mod service;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use alert::*;
pub use channel::*;
pub use classification::*;
pub use common::*;
pub use duration::*;
pub use escalation::*;
pub use gitops::*;
pub use incident::*;
pub use ledger::*;
pub use policy::*;
pub use probe::*;
pub use refs::*;
pub use service::*;

/// The API group of both resources.
pub const GROUP: &str = "healing-guard.io";

/// Every CRD the operator owns.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        RemediationPolicy::crd(),
        Incident::crd(),
        NotificationChannel::crd(),
        EscalationPolicy::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, as committed in `crds/`.
pub fn to_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
