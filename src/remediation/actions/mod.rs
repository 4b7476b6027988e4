//! The containment actions: one interface ([`Action`]), one file per action
//! implementing it, and the one place a rung's kind becomes its action
//! ([`resolve`]).
//!
//! Adding an action: a file here with a unit struct implementing
//! [`Action`], its line in [`resolve`], and its variant in
//! `crd::ActionKind` with its settings field on `crd::Action`.

mod action;
mod errors;
#[cfg(test)]
mod fixtures;
mod write;

pub mod http;
pub mod patch;
pub mod restart;
pub mod restore_config;
pub mod restore_data;
pub mod rollback;
pub mod rotate_secret;
pub mod run_job;
pub mod scale;

pub use action::{
    Action, AnyAction, AnyChange, AnyInputs, Assumed, ConfigAssumed, Io, Mark, Plan, Planned,
    Progress, Request,
};
pub use errors::{ApplyError, CallError, Refusal};

use crate::{crd::ActionKind, remediation::safety, workload::Workload};

/// The action a rung's kind names. The one match on the kind.
pub fn resolve(kind: ActionKind) -> &'static dyn AnyAction {
    match kind {
        ActionKind::Rollback => &rollback::Rollback,
        ActionKind::Scale => &scale::Scale,
        ActionKind::Restart => &restart::Restart,
        ActionKind::RestoreConfig => &restore_config::RestoreConfig,
        ActionKind::Http => &http::Http,
        ActionKind::RunJob => &run_job::RunJob,
        ActionKind::RotateSecret => &rotate_secret::RotateSecret,
        ActionKind::Patch => &patch::PatchObject,
        ActionKind::RestoreData => &restore_data::RestoreData,
    }
}

/// Refuses an action that could take the workload below the policy's floor
/// of ready replicas (a rollout takes up to maxUnavailable pods down at once).
pub fn ready_floor(
    action: &crate::crd::Action,
    workload: &Workload,
    min_ready: i32,
) -> Option<Refusal> {
    if min_ready == 0 || !resolve(action.action).rolls_pods(action) {
        return None;
    }
    let ready = workload.ready_replicas();
    let max_unavailable = workload.rollout_max_unavailable();
    (!safety::keeps_min_ready(ready, max_unavailable, min_ready)).then_some(
        Refusal::BelowReadyFloor {
            ready,
            max_unavailable,
            min_ready,
        },
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::fixtures::*;
    use super::*;

    #[test]
    fn the_ready_floor_refuses_what_rolls_too_many_pods_down() {
        let mut workload = deployment("1", 4);
        if let Workload::Deployment(d) = &mut workload {
            let d = std::sync::Arc::make_mut(d);
            d.status = Some(serde_json::from_value(json!({"readyReplicas": 2})).unwrap());
        }
        let restart = action(json!({"action": "restart"}));
        // maxUnavailable defaults to 25% of 4 = 1: 2 ready - 1 < floor 2.
        assert_eq!(
            ready_floor(&restart, &workload, 2),
            Some(Refusal::BelowReadyFloor {
                ready: 2,
                max_unavailable: 1,
                min_ready: 2
            })
        );
        assert_eq!(ready_floor(&restart, &workload, 1), None);
        assert_eq!(ready_floor(&restart, &workload, 0), None);
        let replicas_only = action(json!({"action": "scale", "scale": {"replicas": 6}}));
        assert_eq!(
            ready_floor(&replicas_only, &workload, 2),
            None,
            "adding replicas takes nothing down"
        );
    }

    #[test]
    fn every_kind_resolves_to_its_own_action() {
        use strum::IntoEnumIterator;
        for kind in ActionKind::iter() {
            assert_eq!(resolve(kind).kind(), kind);
        }
    }

    #[test]
    fn the_schema_keeps_from_incidents_exactly_the_policy_only_actions() {
        use kube::CustomResourceExt;
        use strum::IntoEnumIterator;
        let schema = serde_json::to_string(&crate::crd::RemediationPolicy::crd()).unwrap();
        for kind in ActionKind::iter() {
            assert_eq!(
                schema.contains(&format!("a != '{kind}'")),
                resolve(kind).policy_only(),
                "{kind}: spec.incidents.allowedActions and the action disagree"
            );
        }
    }
}
