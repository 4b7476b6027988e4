//! The writes actions share: the target changed with the step's mark, by
//! server-side apply or patch, and the other workloads an action changes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use super::action::Mark;
use crate::{
    crd::WorkloadKind,
    names::{FIELD_MANAGER, INCIDENT_ANNOTATION, STEP_ANNOTATION},
    workload::Workload,
};

/// A server-side apply body for the workload: the mark's annotations and
/// `spec`, conditional on the version the plan was made from (a workload
/// changed since is refused with 409 Conflict, and the step decided again).
pub(super) fn apply_body(workload: &Workload, mark: Mark<'_>, spec: Value) -> Value {
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
pub(super) fn merged_annotations(existing: &BTreeMap<String, String>, mark: Mark<'_>) -> Value {
    let mut annotations = existing.clone();
    annotations.insert(STEP_ANNOTATION.into(), mark.step.into());
    annotations.insert(INCIDENT_ANNOTATION.into(), mark.incident.into());
    json!(annotations)
}

/// Sends a patch to the workload with the operator's field manager.
pub(super) async fn patch_workload(
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
pub(super) async fn patch_named(
    client: &Client,
    (namespace, kind, name): (&str, WorkloadKind, &str),
    params: &PatchParams,
    patch: &Patch<Value>,
) -> Result<(), kube::Error> {
    match kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .patch(name, params, patch)
                .await?;
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch(name, params, patch)
                .await?;
        }
    }
    Ok(())
}

pub(super) fn compact(value: &Value) -> String {
    value.to_string().replace('"', "")
}
