//! What each action changes, decided by pure code from the workload as it
//! is: the patch to send and a line for the ledger. Refusals say why.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        core::v1::PodTemplateSpec,
    },
    jiff::Timestamp,
};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::crd::{Action, ActionKind, RestartMethod, RollbackTarget};

/// Annotation on a workload naming the incident step that last changed it.
/// Also how a step that was applied just before a crash is recognised.
pub const STEP_ANNOTATION: &str = "healing-guard.io/remediation-step";
/// Annotation on a workload naming the incident that last changed it.
pub const INCIDENT_ANNOTATION: &str = "healing-guard.io/incident";
const REVISION: &str = "deployment.kubernetes.io/revision";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// A workload to act on.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    Deployment(&'a Deployment),
    StatefulSet(&'a StatefulSet),
}

impl Target<'_> {
    fn replicas(&self) -> i32 {
        match self {
            Target::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            Target::StatefulSet(s) => s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        }
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Target::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Target::StatefulSet(s) => s.spec.as_ref().map(|s| &s.template),
        }
    }

    /// The step that last changed the workload, from its annotation.
    pub fn applied_step(&self) -> Option<&str> {
        let annotations = match self {
            Target::Deployment(d) => d.annotations(),
            Target::StatefulSet(s) => s.annotations(),
        };
        annotations.get(STEP_ANNOTATION).map(String::as_str)
    }
}

/// How a change is sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Server-side apply of this partial object (with the operator's field manager).
    Apply(Value),
    /// A JSON patch replacing the pod template, as `kubectl rollout undo` does:
    /// an apply would leave fields other managers own, and a rollback must not.
    ReplaceTemplate(Value),
    /// Mark the workload (an apply of annotations only), then delete its pods
    /// in batches: unhealthy ones first, never more than `max_unavailable`
    /// unavailable at once.
    DeletePods { mark: Value, max_unavailable: i32 },
    /// Put the ConfigMap's newest known-good snapshot back, then apply
    /// `workload` (the step's annotations and, usually, a restart stamp).
    RestoreConfig { config_map: String, workload: Value },
}

/// A pod of the workload, as the batch planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    pub ready: bool,
    pub terminating: bool,
    /// Created before the step started: one of the pods to replace.
    pub original: bool,
}

/// The next pods to delete in a DeletePods restart. Unhealthy originals
/// always may go (they serve nothing); healthy ones only while fewer than
/// `max_unavailable` pods are unavailable and `min_ready` stays ready.
pub fn next_batch(pods: &[PodState], max_unavailable: i32, min_ready: i32) -> Vec<String> {
    let mut unavailable = pods.iter().filter(|p| !p.ready || p.terminating).count() as i64;
    let mut ready = pods.iter().filter(|p| p.ready && !p.terminating).count() as i64;
    let mut batch: Vec<String> = Vec::new();
    let mut candidates: Vec<&PodState> = pods
        .iter()
        .filter(|p| p.original && !p.terminating)
        .collect();
    candidates.sort_by_key(|p| (p.ready, p.name.clone()));
    for pod in candidates {
        if batch.len() as i64 >= i64::from(max_unavailable) {
            break;
        }
        if !pod.ready {
            batch.push(pod.name.clone());
            continue;
        }
        if unavailable < i64::from(max_unavailable) && ready > i64::from(min_ready) {
            batch.push(pod.name.clone());
            unavailable += 1;
            ready -= 1;
        }
    }
    batch
}

/// A planned change and its description for the ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub change: Change,
    pub summary: String,
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
    #[error(
        "it could leave fewer than {min_ready} ready replicas: {ready} ready, up to {max_unavailable} taken down at once"
    )]
    BelowReadyFloor {
        ready: i32,
        max_unavailable: i32,
        min_ready: i32,
    },
}

/// Plans one action on the target; `step` and `incident` go into the annotations.
pub fn plan(
    action: &Action,
    target: Target<'_>,
    replica_sets: &[ReplicaSet],
    last_healthy: Option<i64>,
    step: &str,
    incident: &str,
    now: Timestamp,
) -> Result<Planned, Refusal> {
    let annotations = json!({ STEP_ANNOTATION: step, INCIDENT_ANNOTATION: incident });
    match action.action {
        ActionKind::Rollback => {
            let Target::Deployment(deployment) = target else {
                return Err(Refusal::DeploymentOnly(ActionKind::Rollback));
            };
            let to = action.rollback.as_ref().map(|r| r.to).unwrap_or_default();
            let (revision, template) = match to {
                RollbackTarget::Previous => previous_revision(deployment, replica_sets)?,
                RollbackTarget::LastHealthy => {
                    let healthy = last_healthy.ok_or(Refusal::LastHealthyUnknown)?;
                    healthy_revision(deployment, replica_sets, healthy)?
                }
            };
            let current = deployment
                .annotations()
                .get(REVISION)
                .cloned()
                .unwrap_or_default();
            let template = serde_json::to_value(&template)
                .map_err(|_| Refusal::NoEarlierRevision(current.clone()))?;
            Ok(Planned {
                change: Change::ReplaceTemplate(json!([
                    {"op": "replace", "path": "/spec/template", "value": template},
                    {"op": "add", "path": "/metadata/annotations", "value": merged_annotations(deployment.annotations(), step, incident)},
                ])),
                summary: format!(
                    "Deployment/{} rolled back from revision {current} to revision {revision}",
                    deployment.name_any()
                ),
            })
        }
        ActionKind::Scale => {
            let scale = action
                .scale
                .as_ref()
                .ok_or(Refusal::MissingSettings(ActionKind::Scale))?;
            let (kind, name) = kind_and_name(target);
            let mut spec = json!({});
            let mut summary = Vec::new();
            let current = target.replicas();
            if scale.replicas.is_some() || scale.increment.is_some() {
                let wanted = scale
                    .replicas
                    .unwrap_or(current.saturating_add(scale.increment.unwrap_or(0)));
                let bounded = scale.max_replicas.map_or(wanted, |max| wanted.min(max));
                if bounded <= current && scale.resources.is_none() {
                    return Err(Refusal::NothingToScale {
                        current,
                        target: bounded,
                    });
                }
                if bounded > current {
                    spec["replicas"] = bounded.into();
                    summary.push(format!("{kind}/{name} replicas {current} -> {bounded}"));
                }
            }
            if let Some(resources) = &scale.resources {
                let containers = target
                    .template()
                    .and_then(|t| t.spec.as_ref())
                    .map(|s| s.containers.as_slice())
                    .unwrap_or_default();
                let container = match &resources.container {
                    Some(wanted) => containers
                        .iter()
                        .find(|c| c.name == *wanted)
                        .ok_or_else(|| Refusal::NoSuchContainer(wanted.clone()))?,
                    None => containers
                        .first()
                        .ok_or_else(|| Refusal::NoSuchContainer(String::new()))?,
                };
                let mut set = json!({});
                if let Some(limits) = &resources.limits {
                    set["limits"] = json!(limits);
                }
                if let Some(requests) = &resources.requests {
                    set["requests"] = json!(requests);
                }
                spec["template"] =
                    json!({"spec": {"containers": [{"name": container.name, "resources": set}]}});
                summary.push(format!(
                    "{kind}/{name} container {} resources {}",
                    container.name,
                    compact(&set)
                ));
            }
            Ok(Planned {
                change: Change::Apply(apply_body(target, annotations, spec)),
                summary: summary.join("; "),
            })
        }
        ActionKind::Restart => {
            let method = action
                .restart
                .as_ref()
                .map(|r| r.method)
                .unwrap_or_default();
            let (kind, name) = kind_and_name(target);
            if method == RestartMethod::DeletePods {
                let max_unavailable = action
                    .restart
                    .as_ref()
                    .map_or(1, |r| r.max_unavailable.max(1));
                // The annotation marks the step applied; pods go in batches while verifying.
                return Ok(Planned {
                    change: Change::DeletePods {
                        mark: apply_body(target, annotations, json!({})),
                        max_unavailable,
                    },
                    summary: format!(
                        "{kind}/{name} pods deleted, at most {max_unavailable} at a time"
                    ),
                });
            }
            let stamp = now.to_string();
            let spec = json!({"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}});
            Ok(Planned {
                change: Change::Apply(apply_body(target, annotations, spec)),
                summary: format!("{kind}/{name} rollout restart at {stamp}"),
            })
        }
        ActionKind::RestoreConfig => {
            let settings = action
                .restore_config
                .as_ref()
                .ok_or(Refusal::MissingSettings(ActionKind::RestoreConfig))?;
            let (kind, name) = kind_and_name(target);
            let stamp = now.to_string();
            let spec = json!({"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}});
            // Without a restart the annotations still mark the step as applied.
            let workload = if settings.restart {
                apply_body(target, annotations, spec)
            } else {
                apply_body(target, annotations, json!({}))
            };
            let restart = if settings.restart {
                format!("; {kind}/{name} rollout restart")
            } else {
                String::new()
            };
            Ok(Planned {
                change: Change::RestoreConfig {
                    config_map: settings.config_map.clone(),
                    workload,
                },
                summary: format!(
                    "ConfigMap/{} restored from its last known-good snapshot{restart}",
                    settings.config_map
                ),
            })
        }
    }
}

/// `kubectl rollout undo`: the pod template of the newest ReplicaSet older
/// than the current revision, skipping revisions that differ from the current
/// template only by a restart stamp (a rollout restart is no release to undo).
fn previous_revision(
    deployment: &Deployment,
    replica_sets: &[ReplicaSet],
) -> Result<(i64, PodTemplateSpec), Refusal> {
    let current_text = deployment
        .annotations()
        .get(REVISION)
        .cloned()
        .unwrap_or_default();
    let current: i64 = current_text.parse().unwrap_or(i64::MAX);
    let current_template = deployment.spec.as_ref().map(|s| comparable(&s.template));
    let uid = deployment.uid();
    replica_sets
        .iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .filter_map(|rs| {
            let revision: i64 = rs.annotations().get(REVISION)?.parse().ok()?;
            let mut template = rs.spec.as_ref()?.template.clone()?;
            // The hash label belongs to the ReplicaSet, not to the Deployment's template.
            if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                labels.remove("pod-template-hash");
            }
            let same_release = current_template.as_ref() == Some(&comparable(&template));
            (revision < current && !same_release).then_some((revision, template))
        })
        .max_by_key(|(revision, _)| *revision)
        .ok_or(Refusal::NoEarlierRevision(current_text))
}

/// The template of the revision last seen healthy, if it is older than the current one.
fn healthy_revision(
    deployment: &Deployment,
    replica_sets: &[ReplicaSet],
    healthy: i64,
) -> Result<(i64, PodTemplateSpec), Refusal> {
    let current_text = deployment
        .annotations()
        .get(REVISION)
        .cloned()
        .unwrap_or_default();
    let current: i64 = current_text.parse().unwrap_or(i64::MAX);
    if healthy >= current {
        return Err(Refusal::NoEarlierRevision(current_text));
    }
    let uid = deployment.uid();
    replica_sets
        .iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .find(|rs| {
            rs.annotations()
                .get(REVISION)
                .and_then(|r| r.parse::<i64>().ok())
                == Some(healthy)
        })
        .and_then(|rs| {
            let mut template = rs.spec.as_ref()?.template.clone()?;
            if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                labels.remove("pod-template-hash");
            }
            Some((healthy, template))
        })
        .ok_or(Refusal::HealthyRevisionGone(healthy))
}

/// A template without what restarts and ReplicaSets add to it.
fn comparable(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    if let Some(metadata) = template.metadata.as_mut() {
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.remove(RESTARTED_AT);
            if annotations.is_empty() {
                metadata.annotations = None;
            }
        }
        if let Some(labels) = metadata.labels.as_mut() {
            labels.remove("pod-template-hash");
        }
    }
    template
}

fn merged_annotations(existing: &BTreeMap<String, String>, step: &str, incident: &str) -> Value {
    let mut annotations = existing.clone();
    annotations.insert(STEP_ANNOTATION.into(), step.into());
    annotations.insert(INCIDENT_ANNOTATION.into(), incident.into());
    json!(annotations)
}

fn kind_and_name(target: Target<'_>) -> (&'static str, String) {
    match target {
        Target::Deployment(d) => ("Deployment", d.name_any()),
        Target::StatefulSet(s) => ("StatefulSet", s.name_any()),
    }
}

fn apply_body(target: Target<'_>, annotations: Value, spec: Value) -> Value {
    let (kind, name) = kind_and_name(target);
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    })
}

fn compact(value: &Value) -> String {
    value.to_string().replace('"', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(revision: &str, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "api", "uid": "d-1", "annotations": {REVISION: revision}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "api"}}, "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "app", "image": format!("api:{revision}")}]}}}
        }))
        .unwrap()
    }

    fn replica_set(revision: &str, image: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("api-{revision}"), "annotations": {REVISION: revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "d-1"}]},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {
                "metadata": {"labels": {"app": "api", "pod-template-hash": "abc"}},
                "spec": {"containers": [{"name": "app", "image": image}]}}}
        }))
        .unwrap()
    }

    fn action(value: Value) -> Action {
        serde_json::from_value(value).unwrap()
    }

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn rollback_returns_to_the_previous_revision_without_the_hash_label() {
        let sets = [
            replica_set("1", "api:1"),
            replica_set("2", "api:2"),
            replica_set("3", "api:3"),
        ];
        let planned = plan(
            &action(json!({"action": "rollback"})),
            Target::Deployment(&deployment("3", 3)),
            &sets,
            None,
            "s-0",
            "inc",
            now(),
        )
        .unwrap();
        assert_eq!(
            planned.summary,
            "Deployment/api rolled back from revision 3 to revision 2"
        );
        let Change::ReplaceTemplate(patch) = planned.change else {
            panic!("a rollback replaces the template")
        };
        assert_eq!(patch[0]["value"]["spec"]["containers"][0]["image"], "api:2");
        assert_eq!(
            patch[0]["value"]["metadata"]["labels"],
            json!({"app": "api"})
        );
        assert_eq!(patch[1]["value"][STEP_ANNOTATION], "s-0");
    }

    #[test]
    fn rollback_skips_revisions_that_only_restarted_the_current_release() {
        // 1: good, 2: bad release, 3: rev 2 restarted. Undo must reach 1.
        let mut restarted = replica_set("3", "api:2");
        let template = restarted.spec.as_mut().unwrap().template.as_mut().unwrap();
        template.metadata.as_mut().unwrap().annotations =
            Some([(RESTARTED_AT.to_owned(), "2026-01-01T00:00:00Z".to_owned())].into());
        let mut current = deployment("3", 3);
        current
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("api:2".into());
        current
            .spec
            .as_mut()
            .unwrap()
            .template
            .metadata
            .as_mut()
            .unwrap()
            .annotations =
            Some([(RESTARTED_AT.to_owned(), "2026-01-01T00:00:00Z".to_owned())].into());
        let sets = [
            replica_set("1", "api:1"),
            replica_set("2", "api:2"),
            restarted,
        ];
        let planned = plan(
            &action(json!({"action": "rollback"})),
            Target::Deployment(&current),
            &sets,
            None,
            "s",
            "i",
            now(),
        )
        .unwrap();
        assert_eq!(
            planned.summary,
            "Deployment/api rolled back from revision 3 to revision 1"
        );
    }

    #[test]
    fn rollback_to_last_healthy_uses_the_recorded_revision() {
        let sets = [
            replica_set("1", "api:1"),
            replica_set("2", "api:2"),
            replica_set("3", "api:3"),
        ];
        let last_healthy = action(json!({"action": "rollback", "rollback": {"to": "LastHealthy"}}));
        let current = deployment("3", 3);
        let planned = plan(
            &last_healthy,
            Target::Deployment(&current),
            &sets,
            Some(1),
            "s",
            "i",
            now(),
        )
        .unwrap();
        assert_eq!(
            planned.summary,
            "Deployment/api rolled back from revision 3 to revision 1"
        );
        let unknown = plan(
            &last_healthy,
            Target::Deployment(&current),
            &sets,
            None,
            "s",
            "i",
            now(),
        );
        assert_eq!(unknown, Err(Refusal::LastHealthyUnknown));
        let current_is_healthy = plan(
            &last_healthy,
            Target::Deployment(&current),
            &sets,
            Some(3),
            "s",
            "i",
            now(),
        );
        assert_eq!(
            current_is_healthy,
            Err(Refusal::NoEarlierRevision("3".into()))
        );
    }

    #[test]
    fn rollback_refuses_without_an_earlier_revision() {
        let sets = [replica_set("1", "api:1")];
        let refused = plan(
            &action(json!({"action": "rollback"})),
            Target::Deployment(&deployment("1", 3)),
            &sets,
            None,
            "s",
            "i",
            now(),
        );
        assert_eq!(refused, Err(Refusal::NoEarlierRevision("1".into())));
    }

    #[test]
    fn scale_stays_within_bounds_and_never_lowers() {
        let target = deployment("1", 3);
        let up = plan(
            &action(json!({"action": "scale", "scale": {"replicas": 6, "maxReplicas": 8}})),
            Target::Deployment(&target),
            &[],
            None,
            "s",
            "i",
            now(),
        )
        .unwrap();
        assert_eq!(up.summary, "Deployment/api replicas 3 -> 6");
        let capped = plan(
            &action(json!({"action": "scale", "scale": {"increment": 10, "maxReplicas": 5}})),
            Target::Deployment(&target),
            &[],
            None,
            "s",
            "i",
            now(),
        )
        .unwrap();
        assert_eq!(capped.summary, "Deployment/api replicas 3 -> 5");
        let lower = plan(
            &action(json!({"action": "scale", "scale": {"replicas": 2}})),
            Target::Deployment(&target),
            &[],
            None,
            "s",
            "i",
            now(),
        );
        assert_eq!(
            lower,
            Err(Refusal::NothingToScale {
                current: 3,
                target: 2
            })
        );
    }

    #[test]
    fn scale_sets_container_resources() {
        let target = deployment("1", 3);
        let planned = plan(
            &action(json!({"action": "scale", "scale": {"resources": {"container": "app", "limits": {"memory": "2Gi", "cpu": "1000m"}}}})),
            Target::Deployment(&target), &[], None, "s", "i", now(),
        ).unwrap();
        let Change::Apply(body) = planned.change else {
            panic!("scale applies")
        };
        assert_eq!(
            body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "2Gi"
        );
        assert!(body["spec"].get("replicas").is_none());
        let missing = plan(
            &action(
                json!({"action": "scale", "scale": {"resources": {"container": "nope", "limits": {"cpu": "1"}}}}),
            ),
            Target::Deployment(&target),
            &[],
            None,
            "s",
            "i",
            now(),
        );
        assert_eq!(missing, Err(Refusal::NoSuchContainer("nope".into())));
    }

    fn pod(name: &str, ready: bool, original: bool) -> PodState {
        PodState {
            name: name.into(),
            ready,
            terminating: false,
            original,
        }
    }

    #[test]
    fn delete_pods_goes_unhealthy_first_and_keeps_the_floor() {
        let pods = [
            pod("a", true, true),
            pod("b", false, true),
            pod("c", true, true),
        ];
        assert_eq!(next_batch(&pods, 1, 1), ["b"]);
        // The crashing pod is replaced and ready; the next original may go.
        let pods = [
            pod("a", true, true),
            pod("c", true, true),
            pod("b2", true, false),
        ];
        assert_eq!(next_batch(&pods, 1, 2), ["a"]);
        assert!(
            next_batch(&pods, 1, 3).is_empty(),
            "would leave 2 ready of a floor of 3"
        );
        let busy = [
            pod("a", true, true),
            PodState {
                terminating: true,
                ..pod("c", true, true)
            },
        ];
        assert!(
            next_batch(&busy, 1, 0).is_empty(),
            "one pod is already going"
        );
        // A single crashing database pod: deleted whatever the floor.
        assert_eq!(
            next_batch(&[pod("postgres-0", false, true)], 1, 1),
            ["postgres-0"]
        );
    }

    #[test]
    fn restart_stamps_the_template() {
        let planned = plan(
            &action(json!({"action": "restart"})),
            Target::Deployment(&deployment("1", 3)),
            &[],
            None,
            "s",
            "i",
            now(),
        )
        .unwrap();
        let Change::Apply(body) = planned.change else {
            panic!("restart applies")
        };
        assert_eq!(
            body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(body["metadata"]["annotations"][STEP_ANNOTATION], "s");
    }
}
