//! Evidence captured when an incident opens: what an on-call engineer would
//! gather by hand (pods, rollout history, Warning events, last log lines),
//! bounded so the Incident stays small however many pods fail.

use std::collections::BTreeSet;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet},
        core::v1::{Event, Pod},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, LogParams},
    core::Selector,
};

use crate::{
    crd::{Evidence, PodEvidence, WorkloadRef},
    names::REVISION_ANNOTATION as REVISION,
    pod::{ContainerFacts, PodFacts},
    warnings::WarningEvents,
    workload::Workload,
};

/// Pods described in full; the rest are counted.
pub const MAX_PODS: usize = 20;
/// Warning events kept.
pub const MAX_EVENTS: usize = 20;
/// Rollout history entries kept.
pub const MAX_REVISIONS: usize = 10;
/// Log lines kept from the failing container.
pub const MAX_LOG_LINES: i64 = 20;
/// Longest event message or log line kept.
const MAX_LINE: usize = 300;

/// Where evidence is read from.
pub struct Sources<'a> {
    pub client: &'a Client,
    /// The Warning events the detector's watches keep; listed where they
    /// keep none.
    pub warnings: &'a WarningEvents,
    /// Whether the failing container's last log lines are read.
    pub capture_logs: bool,
}

/// Captures evidence for a target as observed (`workload`, from the shared
/// store, or `None` when it does not exist) and its `pods`; the pods
/// detection named (`affected`) come first. Never fails: what cannot be
/// read is noted.
pub async fn capture(
    sources: &Sources<'_>,
    target: &WorkloadRef,
    workload: Option<&Workload>,
    pods: &[PodFacts],
    affected: &[String],
    now: Timestamp,
) -> Evidence {
    let client = sources.client;
    let mut evidence = Evidence {
        captured_at: Some(Time(now)),
        ..Evidence::default()
    };
    let Some(workload) = workload else {
        evidence.notes.push(format!("{target} not found"));
        return evidence;
    };
    let namespace = workload.namespace();
    // The rollout history, when it takes a read, and the Warning events, at once.
    let mut names: BTreeSet<String> = pods.iter().map(|p| p.name().to_owned()).collect();
    names.insert(target.name.clone());
    let mut events = Evidence::default();
    let ((), omitted_events) = tokio::join!(
        describe_workload(client, workload, pods, &mut evidence),
        warning_events(sources, &namespace, &names, &mut events)
    );
    evidence.events = events.events;
    evidence.notes.extend(events.notes);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let (described, omitted_pods) = pods_evidence(pods, affected);

    if let Some(failing) = described.iter().find(|p| !p.ready)
        && let Some(pod) = pods.iter().find(|p| p.name() == failing.name)
    {
        if sources.capture_logs {
            last_logs(&pods_api, pod, &mut evidence).await;
        } else {
            evidence.notes.push(format!(
                "logs of {} not captured (log capture is off: --capture-logs)",
                failing.name
            ));
        }
    }
    evidence.pods = described;
    evidence.omitted = i64::try_from(omitted_pods + omitted_events).unwrap_or(i64::MAX);
    evidence
}

/// The pods as evidence, affected ones first, at most [`MAX_PODS`]; and
/// how many were left out. Pure.
pub fn pods_evidence(pods: &[PodFacts], affected: &[String]) -> (Vec<PodEvidence>, usize) {
    let mut described: Vec<PodEvidence> = pods.iter().map(describe_pod).collect();
    order(&mut described, affected);
    let omitted = described.len().saturating_sub(MAX_PODS);
    described.truncate(MAX_PODS);
    (described, omitted)
}

/// The workload's revision and history, and the GitOps object that
/// applies it. The workload is the one observed (the shared store's copy):
/// a picture of the moment, on the way to the first step, needs no read of
/// its own; what a step changes is read fresh by the step.
async fn describe_workload(
    client: &Client,
    workload: &Workload,
    pods: &[PodFacts],
    evidence: &mut Evidence,
) {
    let target = workload.reference();
    reconciled_from_git(&target, workload.labels(), workload.annotations(), evidence);
    match workload {
        Workload::Deployment(deployment) => {
            evidence.revision = workload.revision().map(str::to_owned);
            evidence.rollout_history = match first_revision_history(deployment, pods) {
                Some(lines) => lines,
                None => rollout_history(client, deployment, evidence).await,
            };
        }
        Workload::StatefulSet(statefulset) => {
            let status = statefulset.status.clone().unwrap_or_default();
            evidence.revision = status
                .update_revision
                .clone()
                .or(status.current_revision.clone());
            if status.current_revision != status.update_revision {
                evidence.rollout_history.push(format!(
                    "rolling from {} to {}",
                    status.current_revision.unwrap_or_default(),
                    status.update_revision.unwrap_or_default()
                ));
            }
        }
    }
    if workload.selector().is_none() {
        evidence
            .notes
            .push(format!("{target} has no usable pod selector"));
    }
}

/// Which GitOps object reconciles the target, and what that means for a
/// change to it (the operator does not hold that object's sync yet).
fn reconciled_from_git(
    target: &WorkloadRef,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
    evidence: &mut Evidence,
) {
    let Some(owner) = crate::gitops::owner_of(labels, annotations) else {
        return;
    };
    evidence.notes.push(format!(
        "{target} is reconciled from Git by {owner}: a rollback, scale or patch \
         of it is undone at that object's next sync unless the fix lands in Git"
    ));
    evidence.gitops = Some(owner);
}

/// The evidence with what was read of the GitOps object that reconciles
/// the target: the revision it applied and its source.
pub fn with_sync(mut evidence: Evidence, sync: Option<&crate::gitops::SyncRead>) -> Evidence {
    match sync {
        Some(crate::gitops::SyncRead::Read(state)) => {
            evidence.gitops_revision = state.applied_revision.clone();
            evidence.notes.push(format!(
                "{}; the revision before it: {}",
                crate::gitops::sync::describe(state),
                state
                    .previous_revision
                    .as_deref()
                    .unwrap_or("not in its history")
            ));
        }
        Some(crate::gitops::SyncRead::Refused(words)) => {
            if let Some(owner) = &evidence.gitops {
                evidence
                    .notes
                    .push(format!("{owner} could not be read: {words}"));
            }
        }
        Some(crate::gitops::SyncRead::Missing) | None => {}
    }
    evidence
}

/// `kubectl rollout history`: the Deployment's ReplicaSets, newest revision first.
async fn rollout_history(
    client: &Client,
    deployment: &Deployment,
    evidence: &mut Evidence,
) -> Vec<String> {
    let Some(selector) = deployment
        .spec
        .as_ref()
        .and_then(|spec| Selector::try_from(spec.selector.clone()).ok())
    else {
        return Vec::new();
    };
    let namespace = deployment.namespace().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    match api
        .list(&ListParams::default().labels_from(&selector).match_any())
        .await
    {
        Ok(list) => history_lines(deployment.uid().as_deref(), &list.items),
        Err(error) => {
            evidence
                .notes
                .push(format!("rollout history not read: {error}"));
            Vec::new()
        }
    }
}

/// The rollout history of a Deployment still at its first revision, told
/// without listing its ReplicaSets: it has one, which owns all its pods,
/// runs its template, and whose replicas are the Deployment's. `None` when
/// that cannot be told (a later revision, no pods, pods of more than one
/// ReplicaSet): the history is then read. Pure.
pub fn first_revision_history(deployment: &Deployment, pods: &[PodFacts]) -> Option<Vec<String>> {
    if deployment.annotations().get(REVISION).map(String::as_str) != Some("1") {
        return None;
    }
    let replica_sets: BTreeSet<&str> = pods
        .iter()
        .flat_map(|pod| pod.owners.iter())
        .filter(|owner| &*owner.kind == "ReplicaSet")
        .map(|owner| &*owner.name)
        .collect();
    let [replica_set] = replica_sets.into_iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    let images = images_of(
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref()),
    );
    let status = deployment.status.clone().unwrap_or_default();
    Some(vec![history_line(
        1,
        replica_set,
        &images,
        status.ready_replicas.unwrap_or(0),
        status.replicas.unwrap_or(0),
    )])
}

/// The images of a pod template's containers, in order.
fn images_of(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> Vec<String> {
    spec.map(|s| {
        s.containers
            .iter()
            .filter_map(|c| c.image.clone())
            .collect()
    })
    .unwrap_or_default()
}

/// One line of the rollout history; read back by [`revision_of_line`].
fn history_line(revision: i64, name: &str, images: &[String], ready: i32, replicas: i32) -> String {
    format!(
        "revision {revision}: {name} {} ({ready} ready of {replicas})",
        images.join(",")
    )
}

/// `kubectl rollout history` of the Deployment with `uid`: a line per
/// ReplicaSet it owns, newest revision first, at most [`MAX_REVISIONS`]. Pure.
pub fn history_lines(uid: Option<&str>, sets: &[ReplicaSet]) -> Vec<String> {
    let mut revisions: Vec<(i64, String)> = sets
        .iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| Some(o.uid.as_str()) == uid)
        })
        .map(|rs| {
            let revision = rs
                .annotations()
                .get(REVISION)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let images = images_of(
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.spec.as_ref()),
            );
            let status = rs.status.clone().unwrap_or_default();
            let line = history_line(
                revision,
                &rs.name_any(),
                &images,
                status.ready_replicas.unwrap_or(0),
                status.replicas,
            );
            (revision, line)
        })
        .collect();
    revisions.sort_by_key(|(revision, _)| std::cmp::Reverse(*revision));
    revisions
        .into_iter()
        .take(MAX_REVISIONS)
        .map(|(_, line)| line)
        .collect()
}

/// A revision as a line of [`history_lines`] tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRevision {
    pub number: i64,
    /// Its first container's image.
    pub image: String,
    /// Its ReplicaSet's replicas.
    pub replicas: i32,
}

/// A line of [`history_lines`] read back (`revision N: NAME IMAGES (R ready of N)`).
pub fn revision_of_line(line: &str) -> Option<RecordedRevision> {
    let rest = line.strip_prefix("revision ")?;
    let (number, rest) = rest.split_once(": ")?;
    let mut words = rest.split_whitespace();
    let _replica_set = words.next()?;
    let image = words.next()?.split(',').next()?.to_owned();
    let replicas = line
        .rsplit_once(" of ")
        .and_then(|(_, n)| n.trim_end_matches(')').parse().ok())
        .unwrap_or(0);
    Some(RecordedRevision {
        number: number.parse().ok()?,
        image,
        replicas,
    })
}

fn describe_pod(pod: &PodFacts) -> PodEvidence {
    let reason = pod
        .app_containers()
        .find_map(|c| c.waiting.clone().or_else(|| c.terminated.clone()));
    let last_termination_reason = pod.app_containers().find_map(|c| c.last_terminated.clone());
    PodEvidence {
        name: pod.name().to_owned(),
        phase: pod.phase.as_deref().map(str::to_owned),
        ready: pod.is_ready(),
        restarts: pod
            .app_containers()
            .map(|c| c.restart_count.max(0))
            .fold(0, i32::saturating_add),
        reason: reason.or(pod.reason.clone()),
        last_termination_reason,
        node: pod.node.as_deref().map(str::to_owned),
    }
}

/// Recent Warning events about the target and its pods, from the watch
/// that keeps them, else listed; returns how many were left out.
async fn warning_events(
    sources: &Sources<'_>,
    namespace: &str,
    names: &BTreeSet<String>,
    evidence: &mut Evidence,
) -> usize {
    if let Some(kept) = sources.warnings.about(namespace, names) {
        let (lines, omitted) = event_lines(kept.iter().map(|e| e.as_ref()), names);
        evidence.events = lines;
        return omitted;
    }
    let api: Api<Event> = Api::namespaced(sources.client.clone(), namespace);
    let params = ListParams::default()
        .fields("type=Warning")
        .limit(500)
        .match_any();
    match api.list(&params).await {
        Ok(list) => {
            let (lines, omitted) = event_lines(list.items.iter(), names);
            evidence.events = lines;
            omitted
        }
        Err(error) => {
            evidence.notes.push(format!("events not read: {error}"));
            0
        }
    }
}

/// The events about any of `names`, newest first, as evidence lines, at
/// most [`MAX_EVENTS`]; and how many were left out. Pure.
pub fn event_lines<'a>(
    events: impl Iterator<Item = &'a Event>,
    names: &BTreeSet<String>,
) -> (Vec<String>, usize) {
    let mut relevant: Vec<&Event> = events
        .filter(|e| {
            e.involved_object
                .name
                .as_ref()
                .is_some_and(|n| names.contains(n))
        })
        .collect();
    relevant.sort_by_key(|e| std::cmp::Reverse(e.last_timestamp.as_ref().map(|t| t.0)));
    let omitted = relevant.len().saturating_sub(MAX_EVENTS);
    let lines = relevant
        .into_iter()
        .take(MAX_EVENTS)
        .map(|e| {
            let object = format!(
                "{}/{}",
                e.involved_object.kind.as_deref().unwrap_or("?"),
                e.involved_object.name.as_deref().unwrap_or("?")
            );
            let line = format!(
                "{} {}: {} (x{})",
                object,
                e.reason.as_deref().unwrap_or("?"),
                e.message.as_deref().unwrap_or(""),
                e.count.unwrap_or(1)
            );
            clip(&line)
        })
        .collect();
    (lines, omitted)
}

async fn last_logs(api: &Api<Pod>, pod: &PodFacts, evidence: &mut Evidence) {
    let containers: Vec<&ContainerFacts> = pod.app_containers().collect();
    let Some(container) = containers
        .iter()
        .find(|c| !c.ready)
        .or(containers.first())
        .copied()
    else {
        return;
    };
    let params = LogParams {
        container: Some(container.name.to_string()),
        tail_lines: Some(MAX_LOG_LINES),
        limit_bytes: Some(8 * 1024),
        previous: container.restart_count > 0,
        ..LogParams::default()
    };
    match api.logs(pod.name(), &params).await {
        Ok(text) => evidence.logs = text.lines().map(clip).collect(),
        // kwok nodes and some runtimes serve no logs: note it and go on.
        Err(error) => evidence.notes.push(clip(&format!(
            "logs of {}/{} not available: {error}",
            pod.name(),
            container.name
        ))),
    }
}

fn clip(text: &str) -> String {
    if text.len() <= MAX_LINE {
        return text.to_owned();
    }
    let mut end = MAX_LINE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The incident's own pods first, then unhealthy and most-restarted: those
/// are the ones worth reading (a replacement still starting is not the news).
fn order(pods: &mut [PodEvidence], affected: &[String]) {
    let other = |p: &PodEvidence| !affected.contains(&p.name);
    pods.sort_by(|a, b| {
        other(a)
            .cmp(&other(b))
            .then(a.ready.cmp(&b.ready))
            .then(b.restarts.cmp(&a.restarts))
            .then(a.name.cmp(&b.name))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkloadKind;

    fn pod(name: &str, ready: bool, restarts: i32) -> PodEvidence {
        PodEvidence {
            name: name.into(),
            phase: None,
            ready,
            restarts,
            reason: None,
            last_termination_reason: None,
            node: None,
        }
    }

    #[test]
    fn a_history_line_reads_back_as_the_revision_it_was_written_from() {
        let set: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-5f00002", "annotations": {REVISION: "2"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                             "name": "api", "uid": "u-1"}]},
            "spec": {"replicas": 3, "selector": {}, "template": {"spec": {"containers": [
                {"name": "app", "image": "api:2"}, {"name": "proxy", "image": "envoy:1"}]}}},
            "status": {"replicas": 3, "readyReplicas": 1},
        }))
        .unwrap();
        let lines = history_lines(Some("u-1"), &[set]);
        assert_eq!(
            lines,
            ["revision 2: api-5f00002 api:2,envoy:1 (1 ready of 3)"]
        );
        assert_eq!(
            revision_of_line(&lines[0]),
            Some(RecordedRevision {
                number: 2,
                image: "api:2".into(),
                replicas: 3
            })
        );
        assert_eq!(revision_of_line("rolling from a to b"), None);
        assert!(history_lines(Some("another"), &[]).is_empty());
    }

    fn deployment(revision: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api", "uid": "u-1", "annotations": {REVISION: revision}},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {"spec": {
                "containers": [{"name": "app", "image": "api:1"}, {"name": "proxy", "image": "envoy:1"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2},
        }))
        .unwrap()
    }

    fn pod_of(name: &str, replica_set: &str) -> PodFacts {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": replica_set, "uid": "rs"}]},
        }))
        .unwrap();
        pod.into()
    }

    #[test]
    fn a_first_revision_tells_its_history_without_a_read_as_the_read_would() {
        let pods = [
            pod_of("api-7c9-a", "api-7c9"),
            pod_of("api-7c9-b", "api-7c9"),
        ];
        let told = first_revision_history(&deployment("1"), &pods).unwrap();
        // What listing its one ReplicaSet would have said.
        let set: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-7c9", "annotations": {REVISION: "1"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                             "name": "api", "uid": "u-1"}]},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "app", "image": "api:1"}, {"name": "proxy", "image": "envoy:1"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2},
        }))
        .unwrap();
        assert_eq!(told, history_lines(Some("u-1"), &[set]));
        assert_eq!(revision_of_line(&told[0]).map(|r| r.number), Some(1));
        // A later revision, no pods to name the ReplicaSet, or pods of two: read.
        assert_eq!(first_revision_history(&deployment("2"), &pods), None);
        assert_eq!(first_revision_history(&deployment("1"), &[]), None);
        let mixed = [
            pod_of("api-7c9-a", "api-7c9"),
            pod_of("api-5f0-a", "api-5f0"),
        ];
        assert_eq!(first_revision_history(&deployment("1"), &mixed), None);
    }

    #[test]
    fn the_incidents_own_pods_come_before_a_replacement_still_starting() {
        let mut pods = vec![
            pod("web-b", true, 0),
            pod("web-a-new", false, 0),
            pod("web-c", false, 0),
            pod("web-d", false, 3),
            pod("web-z", false, 0),
        ];
        order(&mut pods, &["web-z".into(), "web-c".into()]);
        let names: Vec<_> = pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web-c", "web-z", "web-d", "web-a-new", "web-b"]);
    }

    #[test]
    fn a_target_flux_applied_names_its_kustomization_and_what_that_means() {
        let target = WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "api".into(),
        };
        let labels = [
            ("kustomize.toolkit.fluxcd.io/name", "apps"),
            ("kustomize.toolkit.fluxcd.io/namespace", "flux-system"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut evidence = Evidence::default();
        reconciled_from_git(&target, &labels, &Default::default(), &mut evidence);
        let owner = evidence.gitops.clone().unwrap();
        assert_eq!(owner.to_string(), "Kustomization flux-system/apps");
        assert_eq!(
            evidence.notes,
            [
                "Deployment/api is reconciled from Git by Kustomization flux-system/apps: a rollback, \
              scale or patch of it is undone at that object's next sync unless the fix lands in Git"
            ]
        );

        let mut plain = Evidence::default();
        reconciled_from_git(
            &target,
            &Default::default(),
            &Default::default(),
            &mut plain,
        );
        assert_eq!(plain, Evidence::default());
    }

    #[test]
    fn event_lines_keep_the_targets_and_its_pods_newest_first_and_count_the_rest() {
        let event = |object: &str, reason: &str, minute: u32| -> Event {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{object}.{minute}")},
                "involvedObject": {"kind": "Pod", "name": object},
                "reason": reason, "message": "m", "count": 2,
                "lastTimestamp": format!("2026-01-01T00:{minute:02}:00Z")
            }))
            .unwrap()
        };
        let mut events = vec![
            event("api-1", "BackOff", 1),
            event("other-1", "BackOff", 3),
            event("api-2", "Unhealthy", 2),
        ];
        let names: BTreeSet<String> = ["api".into(), "api-1".into(), "api-2".into()].into();
        let (lines, omitted) = event_lines(events.iter(), &names);
        assert_eq!(
            lines,
            ["Pod/api-2 Unhealthy: m (x2)", "Pod/api-1 BackOff: m (x2)"]
        );
        assert_eq!(omitted, 0);
        events.extend((10..40).map(|minute| event("api-1", "BackOff", minute)));
        let (lines, omitted) = event_lines(events.iter(), &names);
        assert_eq!((lines.len(), omitted), (MAX_EVENTS, 12));
    }
}
