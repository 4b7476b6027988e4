//! `patch`: a merge or JSON patch to one object of a kind the chart lets
//! the operator patch (the runbook's "scale database resources" on a
//! Postgres operator's `postgresql`). The plan applies the patch to the
//! object as read, so the ledger says exactly what changes from what, and
//! how to undo it; the write is conditional on the version read and marks
//! the object with the step. Secrets are refused: their values would land
//! in the ledger (`rotateSecret` is for them).

use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    discovery::pinned_kind,
};
use serde_json::{Value, json};

use super::{
    action::{Action, Assumed, Io, Plan, Request},
    errors::{ApplyError, Refusal},
};
use crate::authority::Grant;
use crate::crd::WorkloadKind;
use crate::{
    crd::{self, ActionKind, PatchAction, PatchType},
    names::{FIELD_MANAGER, INCIDENT_ANNOTATION, STEP_ANNOTATION},
    placeholders::{FillError, fill},
    workload::Workload,
};

/// Changed fields named in the ledger; more are counted.
const MAX_LISTED: usize = 10;
/// The longest value shown in the ledger.
const MAX_VALUE: usize = 200;

/// The object as it is, and the resource it is served as.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    resource: Option<ApiResource>,
    object: Option<Value>,
    problem: Option<String>,
}

/// The patch to send, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    resource: ApiResource,
    namespace: String,
    name: String,
    patch_type: PatchType,
    patch: Value,
    resource_version: Option<String>,
    /// Whether the object has annotations (a JSON patch adds the marks
    /// into the map, or the map itself).
    annotated: bool,
    step: String,
    incident: String,
}

impl Change {
    /// Whether it patches the object of that kind and name.
    pub fn patches(&self, kind: &str, name: &str) -> bool {
        self.resource.kind == kind && self.name == name
    }
}

/// The object's name with the target filled in.
fn object_name(settings: &PatchAction, workload: &Workload) -> Result<String, FillError> {
    fill(&settings.name, &workload.namespace(), &workload.name())
}

/// Named for what it does, beside kube's `Patch` that it sends.
pub struct PatchObject;

impl Action for PatchObject {
    const KIND: ActionKind = ActionKind::Patch;
    /// What it changes, and to what, is the policy's to choose: an
    /// Incident's author could otherwise change any object or Secret.
    const POLICY_ONLY: bool = true;
    const UNDONE_BY_GIT: bool = true;
    type Settings = PatchAction;
    type Inputs = Inputs;
    type Change = Change;

    fn settings(action: &crd::Action) -> Option<&PatchAction> {
        action.patch.as_ref()
    }

    /// Finds the kind (discovery) and reads the object.
    /// The object exists: the target itself when the rung names it, else
    /// an object with nothing but its name.
    fn assumed(settings: &PatchAction, workload: &Workload, _: &Assumed) -> Inputs {
        let (group, version) = settings
            .api_version
            .split_once('/')
            .unwrap_or(("", settings.api_version.as_str()));
        let gvk = GroupVersionKind::gvk(group, version, &settings.kind);
        let Ok(name) = object_name(settings, workload) else {
            return Inputs::default();
        };
        let is_target = settings.kind == workload.kind().to_string() && name == workload.name();
        let object = if is_target {
            match workload {
                Workload::Deployment(d) => serde_json::to_value(d.as_ref()).ok(),
                Workload::StatefulSet(s) => serde_json::to_value(s.as_ref()).ok(),
            }
        } else {
            Some(
                json!({"apiVersion": settings.api_version, "kind": settings.kind,
                "metadata": {"name": name, "namespace": workload.namespace(), "resourceVersion": "1"}}),
            )
        };
        Inputs {
            resource: Some(ApiResource::from_gvk(&gvk)),
            object,
            problem: None,
        }
    }

    async fn observe(
        io: Io<'_>,
        settings: &PatchAction,
        workload: &Workload,
    ) -> Result<Inputs, kube::Error> {
        let client = io.client;
        let (group, version) = settings
            .api_version
            .split_once('/')
            .unwrap_or(("", settings.api_version.as_str()));
        let gvk = GroupVersionKind::gvk(group, version, &settings.kind);
        let resource = match pinned_kind(client, &gvk).await {
            Ok((resource, _)) => resource,
            Err(error) => {
                return Ok(Inputs {
                    problem: Some(format!(
                        "{} {} is not served here: {error}",
                        settings.api_version, settings.kind
                    )),
                    ..Inputs::default()
                });
            }
        };
        let name = match object_name(settings, workload) {
            Ok(name) => name,
            Err(error) => {
                return Ok(Inputs {
                    problem: Some(format!("patch.name: {error}")),
                    ..Inputs::default()
                });
            }
        };
        let api =
            Api::<DynamicObject>::namespaced_with(client.clone(), &workload.namespace(), &resource);
        let object = match api.get_opt(&name).await {
            Ok(object) => object,
            // Not granted to the namespace's remediator: say so, as a refusal.
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Ok(Inputs {
                    resource: Some(resource),
                    problem: Some(format!(
                        "the namespace's remediator may not read {}: {} (the Role \
                         healing-guard-remediator-patch grants it once the chart's actions.patch \
                         lists the kind)",
                        resource_name(&settings.kind, &settings.api_version),
                        status.message
                    )),
                    ..Inputs::default()
                });
            }
            Err(error) => return Err(error),
        };
        Ok(Inputs {
            resource: Some(resource),
            object: object.map(|o| serde_json::to_value(o).unwrap_or(Value::Null)),
            problem: None,
        })
    }

    /// The patch applied to the object as read: what changes, from what, and
    /// how to undo it. Pure.
    fn plan(
        request: &Request<'_>,
        settings: &PatchAction,
        inputs: &Inputs,
    ) -> Result<Plan<Change>, Refusal> {
        let (workload, mark) = (request.workload, request.mark);
        if settings.kind == "Secret" && settings.api_version == "v1" {
            return Err(Refusal::Unusable(
                "patch.kind: a Secret's values would land in the ledger; rotateSecret is for Secrets"
                    .into(),
            ));
        }
        if let Some(problem) = &inputs.problem {
            return Err(Refusal::Unusable(problem.clone()));
        }
        let name = object_name(settings, workload)
            .map_err(|error| Refusal::Unusable(format!("patch.name: {error}")))?;
        let (Some(resource), Some(before)) = (&inputs.resource, &inputs.object) else {
            return Err(Refusal::Unusable(format!(
                "{} {name} not found",
                settings.kind
            )));
        };
        let change = |patch_type: PatchType, patch: Value| Change {
            resource: resource.clone(),
            namespace: workload.namespace(),
            name: name.clone(),
            patch_type,
            patch,
            resource_version: before["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_owned),
            annotated: before["metadata"]["annotations"].is_object(),
            step: mark.step.to_owned(),
            incident: mark.incident.to_owned(),
        };
        // Patched by this very step before a restart: its mark is there, and
        // the patch is not sent again (a JSON patch may not be idempotent).
        if before["metadata"]["annotations"][STEP_ANNOTATION].as_str() == Some(mark.step) {
            return Ok(Plan {
                change: change(PatchType::Merge, json!({})),
                summary: format!(
                    "{} {name} was patched by this step before a restart; not patched again",
                    settings.kind
                ),
            });
        }
        let mut after = before.clone();
        match settings.patch_type {
            PatchType::Merge => {
                if !settings.patch.is_object() {
                    return Err(Refusal::Unusable(
                        "patch.patch: a Merge patch is an object".into(),
                    ));
                }
                json_patch::merge(&mut after, &settings.patch);
            }
            PatchType::Json => {
                let operations: json_patch::Patch = serde_json::from_value(settings.patch.clone())
                    .map_err(|error| {
                        Refusal::Unusable(format!(
                            "patch.patch: not a list of JSON patch operations: {error}"
                        ))
                    })?;
                json_patch::patch(&mut after, &operations).map_err(|error| {
                    Refusal::Unusable(format!("patch.patch does not apply to {name}: {error}"))
                })?;
            }
        }
        let mut changed = Vec::new();
        differences(String::new(), Some(before), Some(&after), &mut changed);
        if changed.is_empty() {
            return Err(Refusal::NothingToPatch(format!("{} {name}", settings.kind)));
        }
        let listed: Vec<String> = changed
            .iter()
            .take(MAX_LISTED)
            .map(|(path, old, new)| {
                format!("{path} {} -> {}", shown(old.as_ref()), shown(new.as_ref()))
            })
            .collect();
        let more = changed.len().saturating_sub(MAX_LISTED);
        let summary = format!(
            "{} {name}: {}{}; undo: {}",
            settings.kind,
            listed.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            undo(&changed)
        );
        Ok(Plan {
            change: change(settings.patch_type, settings.patch.clone()),
            summary,
        })
    }

    /// Sends the patch, conditional on the version planned from, with the
    /// step's mark. A dry run is the API server's.
    async fn apply(
        io: Io<'_>,
        _: &Workload,
        change: &Change,
        dry_run: bool,
    ) -> Result<Vec<String>, ApplyError> {
        let client = io.client;
        let api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &change.namespace,
            &change.resource,
        );
        let params = PatchParams {
            dry_run,
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let marks = json!({STEP_ANNOTATION: change.step, INCIDENT_ANNOTATION: change.incident});
        match change.patch_type {
            PatchType::Merge => {
                let mut patch = change.patch.clone();
                json_patch::merge(
                    &mut patch,
                    &json!({"metadata": {"resourceVersion": change.resource_version, "annotations": marks}}),
                );
                api.patch(&change.name, &params, &Patch::Merge(&patch))
                    .await?;
            }
            PatchType::Json => {
                // A test of the version first: an object changed since the plan
                // refuses the whole patch (the API server answers 422), and the
                // step fails with that answer rather than patch what it did not plan for.
                let mut operations =
                    vec![json!({"op": "test", "path": "/metadata/resourceVersion",
                                                 "value": change.resource_version})];
                operations.extend(change.patch.as_array().cloned().unwrap_or_default());
                // The marks in the same write: found after a restart, the
                // operations are never sent twice.
                if change.annotated {
                    for (key, value) in [
                        (STEP_ANNOTATION, &change.step),
                        (INCIDENT_ANNOTATION, &change.incident),
                    ] {
                        let key = key.replace('~', "~0").replace('/', "~1");
                        operations.push(json!({"op": "add", "path": format!("/metadata/annotations/{key}"), "value": value}));
                    }
                } else {
                    operations.push(
                        json!({"op": "add", "path": "/metadata/annotations", "value": marks}),
                    );
                }
                let operations: json_patch::Patch =
                    serde_json::from_value(Value::Array(operations))?;
                api.patch(&change.name, &params, &Patch::<Value>::Json(operations))
                    .await?;
            }
        }
        Ok(Vec::new())
    }

    /// Another object: the target's own pods are not rolled by it.
    fn grants(action: &crd::Action, _: WorkloadKind) -> Vec<Grant> {
        let Some(settings) = Self::settings(action) else {
            return Vec::new();
        };
        let (group, version) = settings
            .api_version
            .split_once('/')
            .unwrap_or(("", settings.api_version.as_str()));
        // kube's plural of the kind: what discovery finds for nearly all.
        let resource = kube::core::ApiResource::from_gvk(&GroupVersionKind::gvk(
            group,
            version,
            &settings.kind,
        ))
        .plural;
        vec![
            Grant::new(group, &resource, "get"),
            Grant::new(group, &resource, "patch"),
        ]
    }

    fn rolls_pods(_: &crd::Action) -> bool {
        false
    }
}

fn resource_name(kind: &str, api_version: &str) -> String {
    format!("{kind}.{api_version}")
}

/// Every leaf that differs between `before` and `after`, by JSON pointer;
/// what the API server keeps for itself is left out.
fn differences(
    path: String,
    before: Option<&Value>,
    after: Option<&Value>,
    out: &mut Vec<(String, Option<Value>, Option<Value>)>,
) {
    const OWN: [&str; 5] = [
        "/metadata/managedFields",
        "/metadata/resourceVersion",
        "/metadata/generation",
        "/metadata/annotations",
        "/status",
    ];
    if OWN.contains(&path.as_str()) {
        return;
    }
    match (before, after) {
        (Some(Value::Object(old)), Some(Value::Object(new))) => {
            let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                differences(format!("{path}/{escaped}"), old.get(key), new.get(key), out);
            }
        }
        (old, new) if old != new => out.push((path, old.cloned(), new.cloned())),
        _ => {}
    }
}

/// A value as the ledger shows it.
fn shown(value: Option<&Value>) -> String {
    let text = match value {
        None => "(none)".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    if text.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{} ...", &text[..end])
    } else {
        text
    }
}

/// The JSON patch that puts the previous values back.
fn undo(changed: &[(String, Option<Value>, Option<Value>)]) -> String {
    let operations: Vec<Value> = changed
        .iter()
        .map(|(path, old, new)| match (old, new) {
            (None, _) => json!({"op": "remove", "path": path}),
            (Some(old), None) => json!({"op": "add", "path": path, "value": old}),
            (Some(old), Some(_)) => json!({"op": "replace", "path": path, "value": old}),
        })
        .collect();
    format!(
        "kubectl patch --type=json -p '{}'",
        Value::Array(operations)
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn postgresql() -> Inputs {
        Inputs {
            resource: Some(ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("acid.zalan.do", "v1", "postgresql"),
                "postgresqls",
            )),
            object: Some(
                json!({"apiVersion": "acid.zalan.do/v1", "kind": "postgresql",
                "metadata": {"name": "api-db", "namespace": "hg", "resourceVersion": "42"},
                "spec": {"resources": {"limits": {"memory": "2Gi", "cpu": "1000m"}}, "numberOfInstances": 1}}),
            ),
            problem: None,
        }
    }

    fn scale_db(patch: Value, patch_type: &str) -> crd::Action {
        action(
            json!({"action": "patch", "patch": {"apiVersion": "acid.zalan.do/v1", "kind": "postgresql",
            "name": "{{ name }}-db", "type": patch_type, "patch": patch}}),
        )
    }

    #[test]
    fn the_ledger_says_what_changes_from_what_and_how_to_undo_it() {
        let merge = scale_db(
            json!({"spec": {"resources": {"limits": {"memory": "4Gi", "cpu": "2000m"}}}}),
            "Merge",
        );
        let planned =
            plan_of::<PatchObject>(&merge, &deployment("1", 3), &postgresql(), MARK).unwrap();
        assert_eq!(
            planned.summary,
            "postgresql api-db: /spec/resources/limits/cpu 1000m -> 2000m, \
             /spec/resources/limits/memory 2Gi -> 4Gi; undo: kubectl patch --type=json -p \
             '[{\"op\":\"replace\",\"path\":\"/spec/resources/limits/cpu\",\"value\":\"1000m\"},\
             {\"op\":\"replace\",\"path\":\"/spec/resources/limits/memory\",\"value\":\"2Gi\"}]'"
        );
        let json_ops = scale_db(
            json!([{"op": "add", "path": "/spec/resources/requests", "value": {"memory": "1Gi"}}]),
            "Json",
        );
        let planned =
            plan_of::<PatchObject>(&json_ops, &deployment("1", 3), &postgresql(), MARK).unwrap();
        assert!(
            planned
                .summary
                .contains(r#"/spec/resources/requests (none) -> {"memory":"1Gi"}"#),
            "{}",
            planned.summary
        );
        assert!(
            planned
                .summary
                .contains(r#"{"op":"remove","path":"/spec/resources/requests"}"#)
        );
    }

    #[test]
    fn a_patch_that_changes_nothing_or_cannot_apply_is_refused() {
        let same = scale_db(json!({"spec": {"numberOfInstances": 1}}), "Merge");
        assert_eq!(
            plan_of::<PatchObject>(&same, &deployment("1", 3), &postgresql(), MARK),
            Err(Refusal::NothingToPatch("postgresql api-db".into()))
        );
        let wrong = scale_db(
            json!([{"op": "replace", "path": "/spec/nope/x", "value": 1}]),
            "Json",
        );
        assert!(matches!(
            plan_of::<PatchObject>(&wrong, &deployment("1", 3), &postgresql(), MARK),
            Err(Refusal::Unusable(why)) if why.contains("does not apply to api-db")
        ));
        let secret = action(
            json!({"action": "patch", "patch": {"apiVersion": "v1", "kind": "Secret",
            "name": "s", "patch": {"data": {}}}}),
        );
        assert!(matches!(
            plan_of::<PatchObject>(&secret, &deployment("1", 3), &postgresql(), MARK),
            Err(Refusal::Unusable(why)) if why.contains("rotateSecret is for Secrets")
        ));
    }
}
