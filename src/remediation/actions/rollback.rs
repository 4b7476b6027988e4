//! `rollback`: put an earlier release's pod template back, as
//! `kubectl rollout undo` does, to the previous release or to the revision
//! last seen healthy. Deployments only.

use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::PodTemplateSpec};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch},
};
use serde_json::{Value, json};

use super::{
    action::{Action, Assumed, Io, Plan, Request},
    errors::{ApplyError, Refusal},
    write::{merged_annotations, patch_workload},
};
use crate::authority::Grant;
use crate::crd::WorkloadKind;
use crate::{
    crd::{self, ActionKind, RollbackAction, RollbackTarget},
    names::{POD_TEMPLATE_HASH_LABEL, RESTARTED_AT_ANNOTATION, REVISION_ANNOTATION},
    remediation::known_good,
    workload::Workload,
};

/// What a rollback reads: the Deployment's ReplicaSets (its history) and,
/// for LastHealthy, the revision last seen healthy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    pub replica_sets: Vec<ReplicaSet>,
    pub last_healthy: Option<i64>,
}

/// A JSON patch replacing the pod template and the annotations: an apply
/// would leave fields other managers own, and a rollback must not.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub operations: Value,
    /// The revision whose template it puts back.
    pub revision: i64,
}

pub struct Rollback;

impl Action for Rollback {
    const KIND: ActionKind = ActionKind::Rollback;
    const DEPLOYMENTS_ONLY: bool = true;
    const UNDONE_BY_GIT: bool = true;
    type Settings = RollbackAction;
    type Inputs = Inputs;
    type Change = Change;

    /// All its settings are optional: a rung without them rolls back to
    /// the previous revision.
    fn settings(action: &crd::Action) -> Option<&RollbackAction> {
        Some(action.rollback.as_ref().unwrap_or(&DEFAULTS))
    }

    async fn observe(
        io: Io<'_>,
        settings: &RollbackAction,
        workload: &Workload,
    ) -> Result<Inputs, kube::Error> {
        let client = io.client;
        let (Workload::Deployment(_), Some(selector)) = (workload, workload.selector()) else {
            return Ok(Inputs::default());
        };
        let namespace = workload.namespace();
        let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), &namespace)
            .list(&ListParams::default().labels_from(&selector))
            .await?
            .items;
        let last_healthy = match settings.to {
            RollbackTarget::LastHealthy => {
                known_good::last_healthy_revision(client, &namespace, &workload.name()).await?
            }
            RollbackTarget::Previous => None,
        };
        Ok(Inputs {
            replica_sets,
            last_healthy,
        })
    }

    fn assumed(settings: &RollbackAction, _: &Workload, world: &Assumed) -> Inputs {
        Inputs {
            replica_sets: world.replica_sets.clone(),
            last_healthy: match settings.to {
                RollbackTarget::LastHealthy => world.last_healthy,
                RollbackTarget::Previous => None,
            },
        }
    }

    fn plan(
        request: &Request<'_>,
        settings: &RollbackAction,
        inputs: &Inputs,
    ) -> Result<Plan<Change>, Refusal> {
        let (workload, mark) = (request.workload, request.mark);
        let Workload::Deployment(deployment) = workload else {
            return Err(Refusal::DeploymentOnly(ActionKind::Rollback));
        };
        // Two releases in a row: until the Deployment controller has seen
        // the latest, its revision annotation names the one before.
        let generation = deployment.metadata.generation.unwrap_or_default();
        let observed = deployment
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or_default();
        if observed < generation {
            return Err(Refusal::HistoryUnsettled {
                generation,
                observed,
            });
        }
        let current = workload.revision().unwrap_or_default().to_owned();
        let (revision, template) = match settings.to {
            RollbackTarget::Previous => previous_revision(workload, &inputs.replica_sets)?,
            RollbackTarget::LastHealthy => {
                let healthy = inputs.last_healthy.ok_or(Refusal::LastHealthyUnknown)?;
                healthy_revision(workload, &inputs.replica_sets, healthy)?
            }
        };
        let template = serde_json::to_value(&template)
            .map_err(|_| Refusal::NoEarlierRevision(current.clone()))?;
        let mut operations = vec![
            json!({"op": "replace", "path": "/spec/template", "value": template}),
            json!({"op": "add", "path": "/metadata/annotations", "value": merged_annotations(deployment.annotations(), mark)}),
        ];
        // A resourceVersion in a patch is a precondition: a Deployment changed
        // since it was read (a new release) is refused with 409 Conflict.
        if let Some(version) = workload.resource_version() {
            operations.push(
                json!({"op": "replace", "path": "/metadata/resourceVersion", "value": version}),
            );
        }
        Ok(Plan {
            change: Change {
                operations: Value::Array(operations),
                revision,
            },
            summary: format!(
                "Deployment/{} rolled back from revision {current} to revision {revision}",
                workload.name()
            ),
        })
    }

    async fn apply(
        io: Io<'_>,
        workload: &Workload,
        change: &Change,
        dry_run: bool,
    ) -> Result<Vec<String>, ApplyError> {
        let operations: json_patch::Patch = serde_json::from_value(change.operations.clone())?;
        patch_workload(io.client, workload, &Patch::Json(operations), dry_run).await?;
        Ok(Vec::new())
    }

    fn grants(_: &crd::Action, kind: WorkloadKind) -> Vec<Grant> {
        // The revisions to return to, and the one last seen healthy.
        vec![
            Grant::patch_workload(kind),
            Grant::new("apps", "replicasets", "list"),
            Grant::new("", "configmaps", "get"),
        ]
    }

    fn rolls_pods(_: &crd::Action) -> bool {
        true
    }
}

/// A rung's settings when it gives none.
static DEFAULTS: RollbackAction = RollbackAction {
    to: RollbackTarget::Previous,
};

/// The revision number in a ReplicaSet's or Deployment's annotation.
fn revision_of(annotations: &std::collections::BTreeMap<String, String>) -> Option<i64> {
    annotations.get(REVISION_ANNOTATION)?.parse().ok()
}

/// The Deployment's own ReplicaSets with their revision and template (the
/// hash label removed: it belongs to the ReplicaSet, not to the template).
fn history<'a>(
    workload: &'a Workload,
    replica_sets: &'a [ReplicaSet],
) -> impl Iterator<Item = (i64, PodTemplateSpec)> + 'a {
    let uid = workload.metadata().uid.clone();
    replica_sets
        .iter()
        .filter(move |rs| {
            rs.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .filter_map(|rs| {
            let revision = revision_of(rs.annotations())?;
            let mut template = rs.spec.as_ref()?.template.clone()?;
            if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                labels.remove(POD_TEMPLATE_HASH_LABEL);
            }
            Some((revision, template))
        })
}

/// `kubectl rollout undo`: the newest revision older than the current one,
/// skipping revisions that differ from the current template only by a
/// restart stamp (a rollout restart is no release to undo).
fn previous_revision(
    workload: &Workload,
    replica_sets: &[ReplicaSet],
) -> Result<(i64, PodTemplateSpec), Refusal> {
    let current_text = workload.revision().unwrap_or_default().to_owned();
    let current: i64 = current_text.parse().unwrap_or(i64::MAX);
    let current_template = workload.template().map(comparable);
    history(workload, replica_sets)
        .filter(|(revision, template)| {
            let same_release = current_template.as_ref() == Some(&comparable(template));
            *revision < current && !same_release
        })
        .max_by_key(|(revision, _)| *revision)
        .ok_or(Refusal::NoEarlierRevision(current_text))
}

/// The template of the revision last seen healthy, if older than the current one.
fn healthy_revision(
    workload: &Workload,
    replica_sets: &[ReplicaSet],
    healthy: i64,
) -> Result<(i64, PodTemplateSpec), Refusal> {
    let current_text = workload.revision().unwrap_or_default().to_owned();
    let current: i64 = current_text.parse().unwrap_or(i64::MAX);
    if healthy >= current {
        return Err(Refusal::NoEarlierRevision(current_text));
    }
    history(workload, replica_sets)
        .find(|(revision, _)| *revision == healthy)
        .ok_or(Refusal::HealthyRevisionGone(healthy))
}

/// A template without what restarts and ReplicaSets add to it.
fn comparable(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    if let Some(metadata) = template.metadata.as_mut() {
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.remove(RESTARTED_AT_ANNOTATION);
            if annotations.is_empty() {
                metadata.annotations = None;
            }
        }
        if let Some(labels) = metadata.labels.as_mut() {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
        }
    }
    template
}

#[cfg(test)]
mod tests {
    use super::super::Mark;
    use std::sync::Arc;

    use super::super::fixtures::*;
    use super::*;
    use crate::names::STEP_ANNOTATION;

    fn inputs(sets: Vec<ReplicaSet>, last_healthy: Option<i64>) -> Inputs {
        Inputs {
            replica_sets: sets,
            last_healthy,
        }
    }

    fn operations(planned: Plan<Change>) -> Value {
        planned.change.operations
    }

    #[test]
    fn returns_to_the_previous_revision_without_the_hash_label() {
        let sets = vec![
            replica_set("1", "api:1"),
            replica_set("2", "api:2"),
            replica_set("3", "api:3"),
        ];
        let planned = plan_of::<Rollback>(
            &action(json!({"action": "rollback"})),
            &deployment("3", 3),
            &inputs(sets, None),
            Mark {
                step: "s-0",
                incident: "inc",
            },
        )
        .unwrap();
        assert_eq!(
            planned.summary,
            "Deployment/api rolled back from revision 3 to revision 2"
        );
        let patch = operations(planned);
        assert_eq!(patch[0]["value"]["spec"]["containers"][0]["image"], "api:2");
        assert_eq!(
            patch[0]["value"]["metadata"]["labels"],
            json!({"app": "api"})
        );
        assert_eq!(patch[1]["value"][STEP_ANNOTATION], "s-0");
        assert_eq!(
            patch[1]["value"][REVISION_ANNOTATION], "3",
            "other annotations are kept"
        );
    }

    #[test]
    fn skips_revisions_that_only_restarted_the_current_release() {
        // 1: good, 2: bad release, 3: rev 2 restarted. Undo must reach 1.
        let stamp = || Some([(RESTARTED_AT_ANNOTATION.to_owned(), "t".to_owned())].into());
        let mut restarted = replica_set("3", "api:2");
        let template = restarted.spec.as_mut().unwrap().template.as_mut().unwrap();
        template.metadata.as_mut().unwrap().annotations = stamp();
        let mut current = deployment("3", 3);
        if let Workload::Deployment(d) = &mut current {
            let template = &mut Arc::make_mut(d).spec.as_mut().unwrap().template;
            template.spec.as_mut().unwrap().containers[0].image = Some("api:2".into());
            template.metadata.as_mut().unwrap().annotations = stamp();
        }
        let sets = vec![
            replica_set("1", "api:1"),
            replica_set("2", "api:2"),
            restarted,
        ];
        let planned = plan_of::<Rollback>(
            &action(json!({"action": "rollback"})),
            &current,
            &inputs(sets, None),
            MARK,
        )
        .unwrap();
        assert_eq!(
            planned.summary,
            "Deployment/api rolled back from revision 3 to revision 1"
        );
    }

    #[test]
    fn to_last_healthy_uses_the_recorded_revision() {
        let sets = vec![
            replica_set("1", "api:1"),
            replica_set("2", "api:2"),
            replica_set("3", "api:3"),
        ];
        let last_healthy = action(json!({"action": "rollback", "rollback": {"to": "LastHealthy"}}));
        let current = deployment("3", 3);
        let planned = plan_of::<Rollback>(
            &last_healthy,
            &current,
            &inputs(sets.clone(), Some(1)),
            MARK,
        )
        .unwrap();
        assert_eq!(
            planned.summary,
            "Deployment/api rolled back from revision 3 to revision 1"
        );
        let table = [
            (None, Refusal::LastHealthyUnknown),
            (Some(3), Refusal::NoEarlierRevision("3".into())),
            (Some(0), Refusal::HealthyRevisionGone(0)),
        ];
        for (recorded, refusal) in table {
            assert_eq!(
                plan_of::<Rollback>(
                    &last_healthy,
                    &current,
                    &inputs(sets.clone(), recorded),
                    MARK
                ),
                Err(refusal)
            );
        }
    }

    #[test]
    fn waits_until_the_deployment_controller_has_seen_the_latest_release() {
        // Generation 3 written, the controller still at 2: the revision
        // annotation still names the release before the latest.
        let mut current = deployment("2", 3);
        if let Workload::Deployment(d) = &mut current {
            let d = Arc::make_mut(d);
            d.metadata.generation = Some(3);
            d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
                observed_generation: Some(2),
                ..Default::default()
            });
        }
        let sets = vec![replica_set("1", "api:1"), replica_set("2", "api:2")];
        let planned = plan_of::<Rollback>(
            &action(json!({"action": "rollback"})),
            &current,
            &inputs(sets, None),
            MARK,
        );
        let refusal = planned.unwrap_err();
        assert_eq!(
            refusal,
            Refusal::HistoryUnsettled {
                generation: 3,
                observed: 2
            }
        );
        assert!(refusal.is_passing() && !refusal.is_moot());
    }

    #[test]
    fn refuses_without_an_earlier_revision_or_on_a_statefulset() {
        let refused = plan_of::<Rollback>(
            &action(json!({"action": "rollback"})),
            &deployment("1", 3),
            &inputs(vec![replica_set("1", "api:1")], None),
            MARK,
        );
        assert_eq!(refused, Err(Refusal::NoEarlierRevision("1".into())));
        let sts: k8s_openapi::api::apps::v1::StatefulSet =
            serde_json::from_value(json!({"metadata": {"name": "db"}})).unwrap();
        assert_eq!(
            plan_of::<Rollback>(
                &action(json!({"action": "rollback"})),
                &sts.into(),
                &Inputs::default(),
                MARK
            ),
            Err(Refusal::DeploymentOnly(ActionKind::Rollback))
        );
    }
}
