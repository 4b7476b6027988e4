//! The containment actions, one file each, behind one enum dispatch.
//!
//! Every action module provides the same three parts:
//! - `observe`: the reads its plan needs beyond the workload and its pods
//!   (ReplicaSets, a snapshot, ...); most need none;
//! - `plan`: pure, from the workload as it is to the change to make (or a
//!   [`Refusal`] that says why not), with a line for the ledger;
//! - `apply`: makes the change, for real or as a server-side dry run, and
//!   marks the workload with the incident and step that changed it.
//!
//! Adding an action means a file here and one arm in each function below.

pub mod http;
pub mod patch;
pub mod restart;
pub mod restore_config;
pub mod restore_data;
pub mod rollback;
pub mod rotate_secret;
pub mod run_job;
pub mod scale;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::apps::v1::{Deployment, StatefulSet},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use super::safety;
use crate::{
    crd::{Action, ActionKind},
    names::{FIELD_MANAGER, INCIDENT_ANNOTATION, STEP_ANNOTATION},
    workload::Workload,
};

/// Who makes a change: written onto everything an action touches.
#[derive(Clone, Copy, Debug)]
pub struct Mark<'a> {
    /// The ledger id of the step.
    pub step: &'a str,
    /// The incident's name.
    pub incident: &'a str,
}

impl Mark<'_> {
    fn annotations(&self) -> Value {
        json!({ STEP_ANNOTATION: self.step, INCIDENT_ANNOTATION: self.incident })
    }
}

/// What an action read before planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Inputs {
    /// Nothing beyond the workload and its pods.
    #[default]
    None,
    Rollback(rollback::Inputs),
    RestoreConfig(Box<restore_config::Inputs>),
    Http(http::Inputs),
    RotateSecret(rotate_secret::Inputs),
    Patch(patch::Inputs),
    RestoreData(restore_data::Inputs),
}

/// A planned change and its line for the ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub change: Change,
    pub summary: String,
}

/// What an action will send, by action.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Rollback(rollback::Change),
    Scale(scale::Change),
    Restart(restart::Change),
    RestoreConfig(restore_config::Change),
    Http(http::Change),
    RunJob(run_job::Change),
    RotateSecret(Box<rotate_secret::Change>),
    Patch(Box<patch::Change>),
    ScaleWriters(Box<restore_data::ScaleWriters>),
}

/// Why an action cannot apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no earlier revision to roll back to (current revision {0})")]
    NoEarlierRevision(String),
    #[error(
        "no revision of this Deployment was seen healthy yet, so there is no LastHealthy to roll back to"
    )]
    LastHealthyUnknown,
    #[error("the last healthy revision {0} is no longer in the rollout history")]
    HealthyRevisionGone(i64),
    #[error("{0} applies to Deployments only")]
    DeploymentOnly(ActionKind),
    #[error("scale would not raise replicas: already {current} (target {target})")]
    NothingToScale { current: i32, target: i32 },
    #[error("the action has no settings for {0}")]
    MissingSettings(ActionKind),
    #[error("container {0:?} not found")]
    NoSuchContainer(String),
    #[error("no known-good snapshot of ConfigMap {0} yet")]
    NoSnapshot(String),
    #[error(
        "no known-good snapshot of ConfigMap {0} that the operator took; ignored {1}, labelled as snapshots but written by someone else"
    )]
    UntrustedSnapshots(String, String),
    #[error("{0}")]
    Unusable(String),
    #[error(
        "a call was begun at {0} and how it went was never recorded (the operator stopped); it is not made again because the action is not idempotent: check the service by hand"
    )]
    OutcomeUnknown(String),
    #[error("{0} is already as the patch says; nothing to patch")]
    NothingToPatch(String),
    #[error("ConfigMap {0} already matches its last known-good snapshot; nothing to restore")]
    NothingToRestore(String),
    #[error(
        "it could leave fewer than {min_ready} ready replicas: {ready} ready, up to {max_unavailable} taken down at once"
    )]
    BelowReadyFloor {
        ready: i32,
        max_unavailable: i32,
        min_ready: i32,
    },
}

impl Refusal {
    /// Whether the step is skipped rather than failed: nothing was wrong
    /// with it, there was just nothing for it to do, so the ladder moves on
    /// and no action is counted against the safety limits.
    pub fn is_moot(&self) -> bool {
        matches!(
            self,
            Refusal::NothingToRestore(_) | Refusal::NothingToPatch(_)
        )
    }
}

/// Why a change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused or could not be reached.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The planned change could not be encoded; a bug.
    #[error("encoding the change: {0}")]
    Encode(#[from] serde_json::Error),
    /// A service answered otherwise than expected, or not at all.
    #[error("{0}")]
    Service(String),
}

impl ApplyError {
    /// Whether the change lost a race (409): decide again from a fresh read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ApplyError::Kube(error) if crate::k8s::is_conflict(error))
    }

    /// The API server's message when it refused the change for good: the
    /// same write would be refused again (an invalid value, a forbidden
    /// write, an admission webhook's denial). None for what a retry may
    /// cure: a conflict, throttling, a vanished object, a lost connection.
    pub fn refusal(&self) -> Option<String> {
        match self {
            ApplyError::Kube(kube::Error::Api(status))
                if (400..500).contains(&status.code)
                    && !matches!(status.code, 404 | 408 | 409 | 429) =>
            {
                Some(format!("{} {}", status.code, status.message))
            }
            ApplyError::Encode(error) => Some(error.to_string()),
            ApplyError::Service(message) => Some(message.clone()),
            ApplyError::Kube(_) => None,
        }
    }
}

/// Reads what the action's plan needs.
pub async fn observe(
    client: &Client,
    action: &Action,
    workload: &Workload,
) -> Result<Inputs, kube::Error> {
    Ok(match action.action {
        ActionKind::Rollback => {
            Inputs::Rollback(rollback::observe(client, action, workload).await?)
        }
        ActionKind::RestoreConfig => {
            let inputs = restore_config::observe(client, action, workload).await?;
            Inputs::RestoreConfig(Box::new(inputs))
        }
        ActionKind::Http => Inputs::Http(http::observe(client, action, workload).await?),
        ActionKind::RotateSecret => {
            Inputs::RotateSecret(rotate_secret::observe(client, action, workload).await?)
        }
        ActionKind::Patch => Inputs::Patch(patch::observe(client, action, workload).await?),
        ActionKind::RestoreData => {
            Inputs::RestoreData(restore_data::observe(client, action, workload).await?)
        }
        ActionKind::Scale | ActionKind::Restart | ActionKind::RunJob => Inputs::None,
    })
}

/// Plans one action on the workload. Pure.
pub fn plan(
    action: &Action,
    workload: &Workload,
    inputs: &Inputs,
    mark: Mark<'_>,
    now: Timestamp,
) -> Result<Planned, Refusal> {
    match action.action {
        ActionKind::Rollback => {
            let empty = rollback::Inputs::default();
            let inputs = match inputs {
                Inputs::Rollback(inputs) => inputs,
                _ => &empty,
            };
            rollback::plan(action, workload, inputs, mark)
        }
        ActionKind::Scale => scale::plan(action, workload, mark),
        ActionKind::Restart => restart::plan(action, workload, mark, now),
        ActionKind::RestoreConfig => {
            let empty = restore_config::Inputs::default();
            let inputs = match inputs {
                Inputs::RestoreConfig(inputs) => inputs,
                _ => &empty,
            };
            restore_config::plan(action, workload, inputs, mark, now)
        }
        ActionKind::Http => {
            let empty = http::Inputs::default();
            let inputs = match inputs {
                Inputs::Http(inputs) => inputs,
                _ => &empty,
            };
            http::plan(action, workload, inputs)
        }
        ActionKind::RunJob => run_job::plan(action, workload, mark),
        ActionKind::RotateSecret => {
            let empty = rotate_secret::Inputs::default();
            let inputs = match inputs {
                Inputs::RotateSecret(inputs) => inputs,
                _ => &empty,
            };
            rotate_secret::plan(action, workload, inputs, mark)
        }
        ActionKind::Patch => {
            let empty = patch::Inputs::default();
            let inputs = match inputs {
                Inputs::Patch(inputs) => inputs,
                _ => &empty,
            };
            patch::plan(action, workload, inputs, mark)
        }
        ActionKind::RestoreData => {
            let empty = restore_data::Inputs::default();
            let inputs = match inputs {
                Inputs::RestoreData(inputs) => inputs,
                _ => &empty,
            };
            restore_data::plan(action, workload, inputs, mark)
        }
    }
}

/// More to do while a step verifies (the next batch of a pod-by-pod
/// restart), decided from the pods as they are now. Pure.
pub fn follow_up(
    action: &Action,
    pods: &[crate::pod::PodFacts],
    since: (Timestamp, &[String]),
    min_ready: i32,
) -> Option<Planned> {
    match action.action {
        ActionKind::Restart => restart::follow_up(action, pods, since, min_ready),
        ActionKind::Rollback
        | ActionKind::Scale
        | ActionKind::RestoreConfig
        | ActionKind::Http
        | ActionKind::RunJob
        | ActionKind::RotateSecret
        | ActionKind::Patch
        | ActionKind::RestoreData => None,
    }
}

/// Makes a planned change. Returns extra lines for the ledger.
pub async fn apply(
    client: &Client,
    http_client: &reqwest::Client,
    workload: &Workload,
    change: &Change,
    dry_run: bool,
) -> Result<Vec<String>, ApplyError> {
    match change {
        Change::Http(change) => http::apply(http_client, change, dry_run).await,
        Change::RunJob(change) => run_job::apply(client, change, dry_run).await,
        Change::RotateSecret(change) => rotate_secret::apply(client, change, dry_run).await,
        Change::Patch(change) => patch::apply(client, change, dry_run).await,
        Change::ScaleWriters(change) => restore_data::apply(client, change, dry_run).await,
        Change::Rollback(change) => rollback::apply(client, workload, change, dry_run).await,
        Change::Scale(change) => scale::apply(client, workload, change, dry_run).await,
        Change::Restart(change) => restart::apply(client, workload, change, dry_run).await,
        Change::RestoreConfig(change) => {
            restore_config::apply(client, workload, change, dry_run).await
        }
    }
}

impl Change {
    /// Whether nothing in the cluster shows afterwards that the change was
    /// made (a call to a service): it is marked in the ledger before it is
    /// made, so that a restart knows it may have happened.
    pub fn marked_before(&self) -> bool {
        matches!(self, Change::Http(_))
    }
}

/// Whether a change begun and never recorded may be made again: only an
/// idempotent call.
pub fn repeatable(action: &Action) -> bool {
    match action.action {
        ActionKind::Http => http::repeatable(action),
        ActionKind::Rollback
        | ActionKind::Scale
        | ActionKind::Restart
        | ActionKind::RestoreConfig
        | ActionKind::RunJob
        | ActionKind::RotateSecret
        | ActionKind::Patch
        | ActionKind::RestoreData => true,
    }
}

/// Refuses an action that could take the workload below the policy's floor
/// of ready replicas (a rollout takes up to maxUnavailable pods down at once).
pub fn ready_floor(action: &Action, workload: &Workload, min_ready: i32) -> Option<Refusal> {
    let rolls = match action.action {
        ActionKind::Rollback | ActionKind::Restart | ActionKind::RestoreConfig => true,
        ActionKind::Scale => scale::rolls(action),
        ActionKind::Http | ActionKind::RunJob => false,
        // The target usually reads the Secret, and restarts with the rest.
        ActionKind::RotateSecret => true,
        // Another object: the target's own pods are not rolled by it.
        ActionKind::Patch => false,
        // It takes its writers down on purpose, approved by a named person.
        ActionKind::RestoreData => false,
    };
    if !rolls || min_ready == 0 {
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

/// A server-side apply body for the workload: the mark's annotations and
/// `spec`, conditional on the version the plan was made from (a workload
/// changed since is refused with 409 Conflict, and the step decided again).
fn apply_body(workload: &Workload, mark: Mark<'_>, spec: Value) -> Value {
    let mut metadata = json!({"name": workload.name(), "annotations": mark.annotations()});
    if let Some(version) = workload.resource_version() {
        metadata["resourceVersion"] = json!(version);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": workload.kind().to_string(),
        "metadata": metadata,
        "spec": spec,
    })
}

/// The workload's annotations with the mark's added: a JSON patch replaces
/// them whole, so the others must be kept.
fn merged_annotations(existing: &BTreeMap<String, String>, mark: Mark<'_>) -> Value {
    let mut annotations = existing.clone();
    annotations.insert(STEP_ANNOTATION.into(), mark.step.into());
    annotations.insert(INCIDENT_ANNOTATION.into(), mark.incident.into());
    json!(annotations)
}

/// Sends a patch to the workload with the operator's field manager.
async fn patch_workload(
    client: &Client,
    workload: &Workload,
    patch: &Patch<Value>,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let params = match patch {
        Patch::Apply(_) => PatchParams::apply(FIELD_MANAGER).force(),
        _ => PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        },
    };
    let params = PatchParams { dry_run, ..params };
    patch_named(
        client,
        (&workload.namespace(), workload.kind(), &workload.name()),
        &params,
        patch,
    )
    .await
}

/// Sends a patch to the Deployment or StatefulSet named, by kind: the
/// workloads an action changes beside its target (a Secret's consumers,
/// a restore's writers).
async fn patch_named(
    client: &Client,
    (namespace, kind, name): (&str, crate::crd::WorkloadKind, &str),
    params: &PatchParams,
    patch: &Patch<Value>,
) -> Result<(), kube::Error> {
    match kind {
        crate::crd::WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .patch(name, params, patch)
                .await?;
        }
        crate::crd::WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch(name, params, patch)
                .await?;
        }
    }
    Ok(())
}

fn compact(value: &Value) -> String {
    value.to_string().replace('"', "")
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Workloads and actions shared by the action modules' tests.

    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use serde_json::{Value, json};

    use super::*;
    use crate::names::REVISION_ANNOTATION;

    pub fn deployment(revision: &str, replicas: i32) -> Workload {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "api", "namespace": "hg", "uid": "d-1", "annotations": {REVISION_ANNOTATION: revision}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "api"}}, "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "app", "image": format!("api:{revision}")}]}}}
        }))
        .unwrap();
        d.into()
    }

    pub fn replica_set(revision: &str, image: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("api-{revision}"), "annotations": {REVISION_ANNOTATION: revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "d-1"}]},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {
                "metadata": {"labels": {"app": "api", "pod-template-hash": "abc"}},
                "spec": {"containers": [{"name": "app", "image": image}]}}}
        }))
        .unwrap()
    }

    pub fn action(value: Value) -> Action {
        serde_json::from_value(value).unwrap()
    }

    pub fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    pub const MARK: Mark<'static> = Mark {
        step: "s",
        incident: "i",
    };
}

#[cfg(test)]
mod tests {
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
}
