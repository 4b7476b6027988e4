//! `restart`: a rollout restart (the pod template's restartedAt stamp, as
//! `kubectl rollout restart`), or pods deleted a few at a time: the step
//! marks the workload and evicts the first batch (the incident pipeline
//! makes both at once), then each other batch while the step verifies.
//! Evictions respect PodDisruptionBudgets and carry the pod's uid as a
//! precondition, so a StatefulSet pod recreated under the same name is not
//! taken for the one that was planned.

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Api,
    api::{DeleteParams, EvictParams, Patch, PostParams, Preconditions},
};
use serde_json::{Value, json};

use super::{
    action::{Action, Io, Mark, Plan, Planned, Progress, Request},
    errors::{ApplyError, Refusal},
    write::{apply_body, patch_workload},
};
use crate::authority::Grant;
use crate::crd::WorkloadKind;
use crate::{
    crd::{self, ActionKind, RestartAction, RestartMethod},
    names::RESTARTED_AT_ANNOTATION,
    pod::PodFacts,
    workload::Workload,
};

/// What a restart sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Server-side apply of the mark and, for a rollout restart, the stamp.
    Apply(Value),
    /// Evict these pods: the next batch of a DeletePods restart.
    EvictPods(Vec<PodRef>),
    /// Evict these pods of a StatefulSet, stuck on an older revision; the
    /// ledger says why, and the revision they come back on.
    EvictStuck { pods: Vec<PodRef>, revision: String },
}

impl Change {
    /// Whether it stamps the pod template (a rollout restart), which makes
    /// the workload roll its pods out anew.
    pub fn stamps_template(&self) -> bool {
        matches!(self, Change::Apply(body)
            if !body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION].is_null())
    }
}

/// A pod to evict, by name and uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub uid: Option<String>,
}

pub struct Restart;

impl Action for Restart {
    const KIND: ActionKind = ActionKind::Restart;
    type Settings = RestartAction;
    type Inputs = ();
    type Change = Change;

    /// All its settings are optional: a rung without them is a rollout
    /// restart.
    fn settings(action: &crd::Action) -> Option<&RestartAction> {
        Some(action.restart.as_ref().unwrap_or(&DEFAULTS))
    }

    fn plan(request: &Request<'_>, _: &RestartAction, _: &()) -> Result<Plan<Change>, Refusal> {
        Ok(plan(
            request.action,
            request.workload,
            request.mark,
            request.now,
        ))
    }

    async fn apply(
        io: Io<'_>,
        workload: &Workload,
        change: &Change,
        dry_run: bool,
    ) -> Result<Vec<String>, ApplyError> {
        match change {
            Change::Apply(body) => {
                patch_workload(io.client, workload, &Patch::Apply(body.clone()), dry_run).await?;
                Ok(Vec::new())
            }
            Change::EvictPods(pods) => evict(io, workload, pods, dry_run).await,
            Change::EvictStuck { pods, revision } => {
                let lines = evict(io, workload, pods, dry_run).await?;
                Ok(lines
                    .into_iter()
                    .map(|line| {
                        format!(
                            "{line}: not Ready on an older revision, which the StatefulSet \
                             controller waits for instead of replacing; it comes back on revision \
                             {revision}"
                        )
                    })
                    .collect())
            }
        }
    }

    fn follow_up(
        action: &crd::Action,
        pods: &[PodFacts],
        progress: Progress<'_>,
        min_ready: i32,
    ) -> Option<Plan<Change>> {
        follow_up(
            action,
            pods,
            (progress.started, progress.replacing),
            min_ready,
        )
    }

    fn replacing(action: &crd::Action, pods: &[PodFacts]) -> Option<Vec<String>> {
        to_replace(action, pods)
    }

    fn grants(action: &crd::Action, kind: WorkloadKind) -> Vec<Grant> {
        match Self::settings(action).map(|s| s.method).unwrap_or_default() {
            RestartMethod::RolloutRestart => vec![Grant::patch_workload(kind)],
            RestartMethod::DeletePods => vec![Grant::new("", "pods/eviction", "create")],
        }
    }

    fn rolls_pods(_: &crd::Action) -> bool {
        true
    }
}

/// A rung's settings when it gives none.
static DEFAULTS: RestartAction = RestartAction {
    method: RestartMethod::RolloutRestart,
    max_unavailable: 1,
};

fn method(action: &crd::Action) -> RestartMethod {
    Restart::settings(action)
        .map(|r| r.method)
        .unwrap_or_default()
}

fn max_unavailable(action: &crd::Action) -> i32 {
    Restart::settings(action).map_or(1, |r| r.max_unavailable.max(1))
}

fn plan(action: &crd::Action, workload: &Workload, mark: Mark<'_>, now: Timestamp) -> Plan<Change> {
    let (kind, name) = (workload.kind(), workload.name());
    if method(action) == RestartMethod::DeletePods {
        let max_unavailable = max_unavailable(action);
        // The annotation marks the step applied; pods go in batches while verifying.
        return Plan {
            change: Change::Apply(apply_body(workload, mark, json!({}))),
            summary: format!(
                "{kind}/{name} pods evicted, at most {max_unavailable} unavailable at a time"
            ),
        };
    }
    let stamp = now.to_string();
    let spec = json!({"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: stamp}}}});
    Plan {
        change: Change::Apply(apply_body(workload, mark, spec)),
        summary: format!("{kind}/{name} rollout restart at {stamp}"),
    }
}

/// Most pods whose uids a DeletePods step records; past it, the pods to
/// replace are told by their creation time alone.
const MAX_REPLACING: usize = 1000;

/// For a DeletePods restart, the uids of the pods it is to replace: those
/// there now and not already going.
fn to_replace(action: &crd::Action, pods: &[PodFacts]) -> Option<Vec<String>> {
    if method(action) != RestartMethod::DeletePods {
        return None;
    }
    let uids: Vec<String> = pods
        .iter()
        .filter(|pod| !pod.is_terminating())
        .filter_map(|pod| pod.uid.clone())
        .collect();
    (uids.len() <= MAX_REPLACING).then_some(uids)
}

/// The next batch of a DeletePods restart: the pods it found when applied
/// (`replacing`; for a step recorded without them, those created before it
/// started), unhealthy first, within the availability limits.
fn follow_up(
    action: &crd::Action,
    pods: &[PodFacts],
    (started, replacing): (Timestamp, &[String]),
    min_ready: i32,
) -> Option<Plan<Change>> {
    if method(action) != RestartMethod::DeletePods {
        return None;
    }
    let states: Vec<PodState> = pods
        .iter()
        .map(|pod| PodState {
            name: pod.name().to_owned(),
            uid: pod.uid.clone(),
            ready: pod.is_ready(),
            terminating: pod.is_terminating(),
            original: if replacing.is_empty() {
                pod.created.is_some_and(|created| created < started)
            } else {
                pod.uid.as_ref().is_some_and(|uid| replacing.contains(uid))
            },
        })
        .collect();
    let batch = next_batch(&states, max_unavailable(action), min_ready);
    let pods: Vec<PodRef> = batch
        .iter()
        .filter_map(|name| states.iter().find(|p| p.name == *name))
        .map(|pod| PodRef {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        })
        .collect();
    (!pods.is_empty()).then(|| Plan {
        summary: format!("evict pods {}", batch.join(", ")),
        change: Change::EvictPods(pods),
    })
}

/// The label a StatefulSet's controller puts on each pod: its revision.
const REVISION_LABEL: &str = "controller-revision-hash";

/// A StatefulSet's pods left on an older revision and not Ready. Its
/// controller waits for a broken pod before it rolls (OrderedReady), so a
/// change to its template never reaches them (Kubernetes says to delete
/// such pods by hand): they are evicted, and come back on the new
/// revision. `None` when there are none, or for a Deployment.
pub fn stuck_on_an_older_revision(workload: &Workload, pods: &[PodFacts]) -> Option<Planned> {
    let revision = workload.update_revision()?;
    let stuck: Vec<&PodFacts> = pods
        .iter()
        .filter(|pod| !pod.is_terminating() && !pod.is_ready())
        .filter(|pod| {
            pod.labels()
                .get(REVISION_LABEL)
                .is_some_and(|at| at != revision)
        })
        .collect();
    if stuck.is_empty() {
        return None;
    }
    let names: Vec<&str> = stuck.iter().map(|pod| pod.name()).collect();
    let plan = Plan {
        summary: format!(
            "evict pods {} of {}: not Ready on an older revision, which the StatefulSet \
             controller waits for instead of replacing; they come back on revision {revision}",
            names.join(", "),
            workload.reference()
        ),
        change: Change::EvictStuck {
            pods: stuck
                .iter()
                .map(|pod| PodRef {
                    name: pod.name().to_owned(),
                    uid: pod.uid.clone(),
                })
                .collect(),
            revision: revision.to_owned(),
        },
    };
    Some(Planned::new::<Restart>(plan))
}

/// Evicts the batch, each pod by its uid.
async fn evict(
    io: Io<'_>,
    workload: &Workload,
    pods: &[PodRef],
    dry_run: bool,
) -> Result<Vec<String>, ApplyError> {
    let api: Api<Pod> = Api::namespaced(io.client.clone(), &workload.namespace());
    let mut lines = Vec::new();
    for pod in pods {
        let params = EvictParams {
            delete_options: Some(DeleteParams {
                dry_run,
                preconditions: Some(Preconditions {
                    uid: pod.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            }),
            post_options: PostParams {
                dry_run,
                field_manager: None,
            },
        };
        let name = &pod.name;
        match api.evict(name, &params).await {
            Ok(_) => lines.push(format!("pod {name} evicted")),
            // Gone already, or already replaced by a pod of the same
            // name: what the step wanted either way.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
            // A PodDisruptionBudget says not now: said in the ledger,
            // tried again with the next batch.
            Err(kube::Error::Api(status)) if status.code == 429 => {
                lines.push(format!(
                    "eviction of pod {name} refused for now: {}",
                    status.message
                ));
                break;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(lines)
}

/// A pod of the workload, as the batch planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    pub uid: Option<String>,
    pub ready: bool,
    pub terminating: bool,
    /// Created before the step started: one of the pods to replace.
    pub original: bool,
}

/// The next pods to delete. Unhealthy originals always may go (they serve
/// nothing); healthy ones only while fewer than `max_unavailable` pods are
/// unavailable and more than `min_ready` stay ready.
pub fn next_batch(pods: &[PodState], max_unavailable: i32, min_ready: i32) -> Vec<String> {
    let count = |keep: fn(&&PodState) -> bool| pods.iter().filter(keep).count() as i64;
    let mut unavailable = count(|p| !p.ready || p.terminating);
    let mut ready = count(|p| p.ready && !p.terminating);
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::names::STEP_ANNOTATION;

    fn pod(name: &str, ready: bool, original: bool) -> PodState {
        PodState {
            name: name.into(),
            uid: None,
            ready,
            terminating: false,
            original,
        }
    }

    fn statefulset(update_revision: &str, partition: Option<i32>) -> Workload {
        let mut spec = serde_json::json!({"replicas": 3, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                         "spec": {"containers": [{"name": "db", "image": "db:1"}]}}});
        if let Some(partition) = partition {
            spec["updateStrategy"] = serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"partition": partition}});
        }
        let set: k8s_openapi::api::apps::v1::StatefulSet =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db", "namespace": "hg", "generation": 2},
                "spec": spec,
                "status": {"replicas": 3, "observedGeneration": 2, "currentRevision": "db-1",
                           "updateRevision": update_revision}
            }))
            .unwrap();
        Workload::StatefulSet(std::sync::Arc::new(set))
    }

    fn db_pod(name: &str, revision: &str, ready: bool, terminating: bool) -> PodFacts {
        let mut metadata = serde_json::json!({"name": name, "namespace": "hg", "uid": format!("uid-{name}"),
            "labels": {"app": "db", "controller-revision-hash": revision}});
        if terminating {
            metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": metadata,
            "spec": {"containers": [{"name": "db", "image": "db:1"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap();
        pod.into()
    }

    #[test]
    fn a_statefulset_pod_broken_on_an_older_revision_is_evicted_and_no_other() {
        let pods = [
            db_pod("db-0", "db-1", false, false),
            db_pod("db-1", "db-1", true, false),
            db_pod("db-2", "db-2", false, false),
            db_pod("db-3", "db-1", false, true),
        ];
        let planned = stuck_on_an_older_revision(&statefulset("db-2", None), &pods).unwrap();
        assert_eq!(
            planned.change.get::<Restart>(),
            Some(&Change::EvictStuck {
                pods: vec![PodRef {
                    name: "db-0".into(),
                    uid: Some("uid-db-0".into())
                }],
                revision: "db-2".into()
            })
        );
        assert!(
            planned
                .summary
                .starts_with("evict pods db-0 of StatefulSet/db: not Ready on an older revision"),
            "{}",
            planned.summary
        );
        // All on the new revision: nothing to do; a partition keeps old pods on purpose.
        assert!(stuck_on_an_older_revision(&statefulset("db-1", None), &pods[..2]).is_none());
        assert!(stuck_on_an_older_revision(&statefulset("db-2", Some(2)), &pods).is_none());
        assert!(stuck_on_an_older_revision(&deployment("1", 3), &pods).is_none());
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
    fn a_rollout_restart_stamps_the_template() {
        let planned = plan(
            &action(json!({"action": "restart"})),
            &deployment("1", 3),
            MARK,
            now(),
        );
        let Change::Apply(body) = planned.change else {
            panic!("restart applies")
        };
        assert_eq!(
            body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(body["metadata"]["annotations"][STEP_ANNOTATION], "s");
    }

    #[test]
    fn delete_pods_marks_first_then_follows_up_with_batches() {
        let delete = action(json!({"action": "restart", "restart": {"method": "DeletePods"}}));
        let planned = plan(&delete, &deployment("1", 2), MARK, now());
        let Change::Apply(body) = planned.change else {
            panic!("the mark is applied first")
        };
        assert_eq!(body["spec"], json!({}), "the mark changes no pod");
        let pods: Vec<PodFacts> = ["a", "b"]
            .iter()
            .map(|name| {
                serde_json::from_value::<Pod>(json!({"metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": "2025-12-31T00:00:00Z"},
                    "status": {"conditions": [{"type": "Ready", "status": if *name == "a" {"True"} else {"False"}}]}}))
                .unwrap()
                .into()
            })
            .collect();
        let batch = follow_up(&delete, &pods, (now(), &[]), 1).unwrap();
        assert_eq!(
            batch.change,
            (Change::EvictPods(vec![PodRef {
                name: "b".into(),
                uid: Some("uid-b".into())
            }]))
        );
        assert!(
            follow_up(
                &action(json!({"action": "restart"})),
                &pods,
                (now(), &[]),
                1
            )
            .is_none(),
            "a rollout restart has no follow-up"
        );
        let before = "2025-01-01T00:00:00Z".parse().unwrap();
        assert!(
            follow_up(&delete, &pods, (before, &[]), 1).is_none(),
            "pods made after the step started are replacements"
        );
        // The uids found when the step was applied decide, whatever the
        // clock says: a pod made in the step's first second is one to
        // replace only if it was there.
        assert_eq!(
            to_replace(&delete, &pods),
            Some(vec!["uid-a".to_owned(), "uid-b".to_owned()])
        );
        let found = ["uid-b".to_owned()];
        let batch = follow_up(&delete, &pods, (before, &found), 1).unwrap();
        assert_eq!(
            batch.change,
            (Change::EvictPods(vec![PodRef {
                name: "b".into(),
                uid: Some("uid-b".into())
            }]))
        );
        let replacement = ["uid-elsewhere".to_owned()];
        assert!(follow_up(&delete, &pods, (now(), &replacement), 1).is_none());
        assert_eq!(
            to_replace(&action(json!({"action": "restart"})), &pods),
            None
        );
    }
}
