//! The simulated workloads: each a Deployment or StatefulSet with its
//! revisions and pods, turned into the very objects the operator reads
//! (`Workload`, `PodFacts`, ReplicaSets), and changed the way the cluster
//! would change them when a step rolls out.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        core::v1::Pod,
    },
    jiff::Timestamp,
};
use serde_json::{Value, json};

use super::case::{PodState, WorkloadSpec};
use crate::{
    crd::WorkloadKind,
    names::{INCIDENT_ANNOTATION, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, STEP_ANNOTATION},
    pod::PodFacts,
    workload::Workload,
};

/// What a workload's pods show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodsShow {
    pub state: PodState,
    pub restarts: i32,
    /// How many of the pods show it (the rest run healthy).
    pub count: Option<i32>,
}

impl PodsShow {
    pub const HEALTHY: PodsShow = PodsShow {
        state: PodState::Running,
        restarts: 0,
        count: None,
    };
}

/// A revision of a Deployment (a ReplicaSet) or StatefulSet.
#[derive(Clone, Debug)]
struct Revision {
    number: i64,
    image: String,
    hash: String,
    /// Its pod template's annotations (a restart's stamp, a change's mark).
    annotations: BTreeMap<String, String>,
}

/// One simulated workload.
#[derive(Clone, Debug)]
pub struct SimWorkload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    containers: Vec<String>,
    revisions: Vec<Revision>,
    /// Index into `revisions` of the one running.
    current: usize,
    pub healthy_revision: Option<i64>,
    /// The ConfigMaps it reads, against their snapshots.
    pub config_maps: BTreeMap<String, crate::remediation::actions::ConfigAssumed>,
    pub replicas: i32,
    /// Available replicas, when the timeline says fewer are.
    pub available: Option<i32>,
    pub stuck: bool,
    generation: i64,
    observed_generation: i64,
    pub rollout: std::time::Duration,
    /// When the change under way has rolled out, and whether it recovers
    /// the workload (else its new pods show what the world shows then).
    pub rolling: Option<(Timestamp, bool)>,
    /// What its pods show now.
    pub pods_show: PodsShow,
    /// What they show once no rollout is under way: the timeline's last
    /// word, or healthy after a step that recovers it.
    truth: PodsShow,
    /// Pods are replaced at each rollout: their names carry this.
    pod_generation: u32,
    /// Since when the current pods run.
    pods_since: Timestamp,
    /// The incident and step whose change it carries.
    mark: Option<(String, String)>,
    version: u64,
    /// Built once per change: what the operator reads.
    object: Option<Workload>,
    pods: Option<Arc<Vec<PodFacts>>>,
}

impl SimWorkload {
    pub fn new(spec: &WorkloadSpec, namespace: &str, now: Timestamp) -> Self {
        let images = if spec.revisions.is_empty() {
            vec![format!("{}:1", spec.name)]
        } else {
            spec.revisions.clone()
        };
        let revisions = images
            .into_iter()
            .enumerate()
            .map(|(index, image)| {
                let number = i64::try_from(index).unwrap_or(0) + 1;
                Revision {
                    number,
                    hash: hash_of(number),
                    image,
                    annotations: BTreeMap::new(),
                }
            })
            .collect::<Vec<_>>();
        let containers = if spec.containers.is_empty() {
            vec!["app".to_owned()]
        } else {
            spec.containers.clone()
        };
        SimWorkload {
            kind: spec.kind,
            namespace: namespace.to_owned(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            annotations: spec.annotations.clone(),
            containers,
            current: revisions.len().saturating_sub(1),
            revisions,
            healthy_revision: spec.healthy_revision,
            config_maps: spec.config_maps.clone(),
            replicas: spec.replicas,
            available: None,
            stuck: false,
            generation: 1,
            observed_generation: 1,
            rollout: spec.rollout.as_std(),
            rolling: None,
            pods_show: PodsShow::HEALTHY,
            truth: PodsShow::HEALTHY,
            pod_generation: 1,
            pods_since: now,
            mark: None,
            version: 0,
            object: None,
            pods: None,
        }
    }

    fn changed(&mut self) {
        self.object = None;
        self.pods = None;
        self.version += 1;
    }

    /// Counts its changes: the detector looks again after each.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn current(&self) -> Option<&Revision> {
        self.revisions.get(self.current)
    }

    /// The pods show something else from now on.
    pub fn show(&mut self, show: PodsShow, now: Timestamp) {
        if show.restarts < self.pods_show.restarts || show.state != self.pods_show.state {
            self.pods_since = now;
        }
        self.pods_show = show;
        self.truth = show;
        self.changed();
    }

    pub fn set_available(&mut self, available: Option<i32>) {
        self.available = available;
        self.changed();
    }

    pub fn set_stuck(&mut self, stuck: bool) {
        self.stuck = stuck;
        self.changed();
    }

    /// A new release: a new revision, rolled out at once, healthy.
    pub fn release(&mut self, image: &str, now: Timestamp) {
        let number = self.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
        self.revisions.push(Revision {
            number,
            hash: hash_of(number),
            image: image.to_owned(),
            annotations: BTreeMap::new(),
        });
        self.current = self.revisions.len() - 1;
        self.generation += 1;
        self.observed_generation = self.generation;
        self.stuck = false;
        self.truth = PodsShow::HEALTHY;
        self.replace_pods(PodsShow::HEALTHY, now);
    }

    fn replace_pods(&mut self, show: PodsShow, now: Timestamp) {
        self.pod_generation += 1;
        self.pods_since = now;
        self.pods_show = show;
        self.changed();
    }

    /// A step changed the workload's spec: the change rolls out for
    /// `rollout`, then its pods are healthy if it `recovers` the workload.
    /// Marked with the step.
    pub fn roll(&mut self, recovers: bool, mark: Option<(String, String)>, now: Timestamp) {
        self.generation += 1;
        if mark.is_some() {
            self.mark = mark;
        }
        let done = now.checked_add(self.rollout).unwrap_or(now);
        self.rolling = Some((done, recovers));
        self.changed();
    }

    /// The step's mark alone.
    pub fn set_mark(&mut self, mark: Option<(String, String)>) {
        if mark.is_some() {
            self.mark = mark;
            self.changed();
        }
    }

    /// Pods evicted: new ones come up at once, ready once `rollout` has
    /// passed (healthy if the step `recovers` the workload).
    pub fn evict(&mut self, recovers: bool, mark: Option<(String, String)>, now: Timestamp) {
        self.set_mark(mark);
        let starting = PodsShow {
            state: PodState::NotReady,
            restarts: 0,
            count: None,
        };
        self.replace_pods(starting, now);
        let done = now.checked_add(self.rollout).unwrap_or(now);
        self.rolling = Some((done, recovers));
        self.generation += 1;
    }

    /// A step that changes no pod (a call to a service) recovered it.
    pub fn recover(&mut self, now: Timestamp) {
        self.show(PodsShow::HEALTHY, now);
    }

    /// A rollback: the revision before the current one (or the given one)
    /// runs again, under a new revision number.
    pub fn roll_back(&mut self, to: Option<i64>) {
        let target = match to {
            Some(number) => self.revisions.iter().position(|r| r.number == number),
            None => {
                let current = self.current().map_or(0, |r| r.number);
                self.revisions
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.number < current)
                    .max_by_key(|(_, r)| r.number)
                    .map(|(index, _)| index)
            }
        };
        if let Some(index) = target {
            let next = self.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
            if let Some(revision) = self.revisions.get_mut(index) {
                revision.number = next;
            }
            self.current = index;
            self.changed();
        }
    }

    /// Its replicas set by a step.
    pub fn scale_to(&mut self, replicas: i32) {
        self.replicas = replicas;
        self.changed();
    }

    /// When the change under way rolls out.
    pub fn rolls_out_at(&self) -> Option<Timestamp> {
        self.rolling.map(|(at, _)| at)
    }

    /// The rollout under way, if done by `now`: new pods, as it said.
    pub fn settle(&mut self, now: Timestamp) -> bool {
        match self.rolling {
            Some((at, recovers)) if at <= now => {
                if recovers {
                    self.truth = PodsShow::HEALTHY;
                }
                let then = self.truth;
                self.rolling = None;
                self.observed_generation = self.generation;
                self.available = None;
                self.stuck = false;
                self.replace_pods(then, at);
                true
            }
            _ => false,
        }
    }

    /// The revision number running now.
    pub fn revision(&self) -> i64 {
        self.current().map_or(1, |r| r.number)
    }

    fn selector_labels(&self) -> Value {
        json!({"app.kubernetes.io/name": self.name})
    }

    fn template(&self, revision: Option<&Revision>) -> Value {
        let image = revision.map_or("", |r| r.image.as_str());
        let containers: Vec<Value> = self
            .containers
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let image = if index == 0 {
                    image.to_owned()
                } else {
                    format!("{name}:1")
                };
                json!({"name": name, "image": image})
            })
            .collect();
        let annotations = revision.map(|r| r.annotations.clone()).unwrap_or_default();
        json!({"metadata": {"labels": self.selector_labels(), "annotations": annotations},
               "spec": {"containers": containers}})
    }

    /// The pod template changed (a restart's stamp, new resources): the
    /// Deployment makes a new revision of the same image, as the API
    /// server's would (a new ReplicaSet).
    pub fn new_template(&mut self, annotation: (&str, String)) {
        let Some(current) = self.current().cloned() else {
            return;
        };
        let number = self.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
        let mut annotations = current.annotations.clone();
        annotations.insert(annotation.0.to_owned(), annotation.1);
        self.revisions.push(Revision {
            number,
            hash: hash_of(number),
            image: current.image,
            annotations,
        });
        self.current = self.revisions.len() - 1;
        self.changed();
    }

    /// The workload as the API server would hand it over.
    pub fn object(&mut self) -> Workload {
        if let Some(object) = &self.object {
            return object.clone();
        }
        let object = self.build();
        self.object = Some(object.clone());
        object
    }

    fn build(&self) -> Workload {
        let mut annotations = self.annotations.clone();
        if self.kind == WorkloadKind::Deployment {
            annotations.insert(REVISION_ANNOTATION.to_owned(), self.revision().to_string());
        }
        if let Some((incident, step)) = &self.mark {
            annotations.insert(INCIDENT_ANNOTATION.to_owned(), incident.clone());
            annotations.insert(STEP_ANNOTATION.to_owned(), step.clone());
        }
        let rolled = self.rolling.is_none();
        let observed = self.observed_generation;
        let ready = self.object_ready();
        let updated = if rolled { self.replicas } else { 0 };
        let metadata = json!({
            "name": self.name, "namespace": self.namespace,
            "uid": format!("uid-{}-{}", self.namespace, self.name),
            "resourceVersion": format!("{}", self.generation * 1000 + i64::from(self.pod_generation)),
            "generation": self.generation,
            "labels": self.labels, "annotations": annotations,
        });
        let selector = json!({"matchLabels": self.selector_labels()});
        let built = match self.kind {
            WorkloadKind::Deployment => {
                let mut conditions = vec![json!({"type": "Available",
                    "status": if ready >= self.replicas { "True" } else { "False" }})];
                if self.stuck {
                    conditions.push(json!({"type": "Progressing", "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": format!("ReplicaSet \"{}-{}\" has timed out progressing.",
                            self.name, self.current().map_or("", |r| r.hash.as_str()))}));
                }
                serde_json::from_value::<Deployment>(json!({
                    "metadata": metadata,
                    "spec": {"replicas": self.replicas, "selector": selector,
                             "template": self.template(self.current())},
                    "status": {"observedGeneration": observed, "replicas": self.replicas,
                               "updatedReplicas": updated, "readyReplicas": ready,
                               "availableReplicas": ready, "conditions": conditions},
                }))
                .map(Workload::from)
            }
            WorkloadKind::StatefulSet => serde_json::from_value::<StatefulSet>(json!({
                "metadata": metadata,
                "spec": {"replicas": self.replicas, "selector": selector,
                         "serviceName": self.name, "template": self.template(self.current())},
                "status": {"observedGeneration": observed, "replicas": self.replicas,
                           "updatedReplicas": updated, "readyReplicas": ready,
                           "availableReplicas": ready, "currentReplicas": self.replicas,
                           "currentRevision": format!("{}-{}", self.name, self.revision()),
                           "updateRevision": format!("{}-{}", self.name, self.revision())},
            }))
            .map(Workload::from),
        };
        // The JSON above is the API's own shape: it always reads back.
        built.unwrap_or_else(|_| {
            Workload::from(Deployment {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                ..Default::default()
            })
        })
    }

    /// How many replicas are ready (and available).
    fn object_ready(&self) -> i32 {
        let healthy = self.pods_show.state == PodState::Running;
        let failing = match self.pods_show.count {
            _ if healthy => 0,
            Some(count) => count.clamp(0, self.replicas),
            None => self.replicas,
        };
        self.available.unwrap_or(self.replicas - failing).max(0)
    }

    /// Its ReplicaSets, one per revision (Deployments only).
    pub fn replica_sets(&self) -> Vec<ReplicaSet> {
        if self.kind != WorkloadKind::Deployment {
            return Vec::new();
        }
        let current = self.current;
        let ready = self.object_ready();
        self.revisions
            .iter()
            .enumerate()
            .filter_map(|(index, revision)| {
                let replicas = if index == current { self.replicas } else { 0 };
                let ready = if index == current { ready } else { 0 };
                let mut labels = self.selector_labels();
                labels[POD_TEMPLATE_HASH_LABEL] = Value::String(revision.hash.clone());
                let mut template = self.template(Some(revision));
                template["metadata"]["labels"] = labels.clone();
                serde_json::from_value(json!({
                    "metadata": {"name": format!("{}-{}", self.name, revision.hash),
                                 "namespace": self.namespace, "labels": labels,
                                 "annotations": {REVISION_ANNOTATION: revision.number.to_string()},
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": self.name, "uid": format!("uid-{}-{}", self.namespace, self.name),
                                     "controller": true}]},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template},
                    "status": {"replicas": replicas, "readyReplicas": ready},
                }))
                .ok()
            })
            .collect()
    }

    /// Its pods, as the operator reads them.
    pub fn pods(&mut self) -> Arc<Vec<PodFacts>> {
        if let Some(pods) = &self.pods {
            return Arc::clone(pods);
        }
        let pods = Arc::new(self.build_pods());
        self.pods = Some(Arc::clone(&pods));
        pods
    }

    fn build_pods(&self) -> Vec<PodFacts> {
        let show = self.pods_show;
        let failing = show.count.unwrap_or(self.replicas).clamp(0, self.replicas);
        let hash = self.current().map_or("", |r| r.hash.as_str()).to_owned();
        let image = self.current().map_or("", |r| r.image.as_str()).to_owned();
        let since = self.pods_since.to_string();
        (0..self.replicas)
            .filter_map(|index| {
                let state = if index < failing {
                    show.state
                } else {
                    PodState::Running
                };
                let restarts = if state == PodState::Running {
                    0
                } else {
                    show.restarts
                };
                let (name, owner) = match self.kind {
                    WorkloadKind::Deployment => (
                        format!("{}-{hash}-g{}x{index}", self.name, self.pod_generation),
                        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                               "name": format!("{}-{hash}", self.name), "uid": "rs", "controller": true}),
                    ),
                    WorkloadKind::StatefulSet => (
                        format!("{}-{index}", self.name),
                        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                               "name": self.name, "uid": "sts", "controller": true}),
                    ),
                };
                let mut labels = self.selector_labels();
                labels[POD_TEMPLATE_HASH_LABEL] = Value::String(hash.clone());
                let pod = pod_json(&PodJson {
                    name: &name,
                    namespace: &self.namespace,
                    labels,
                    owner,
                    container: self.containers.first().map_or("app", String::as_str),
                    image: &image,
                    state,
                    restarts,
                    since: &since,
                    // A StatefulSet's pod keeps its name; a new one is a new uid.
                    uid: format!("{name}-{}-uid", self.pod_generation),
                });
                serde_json::from_value::<Pod>(pod).ok().map(PodFacts::from)
            })
            .collect()
    }
}

struct PodJson<'a> {
    name: &'a str,
    namespace: &'a str,
    labels: Value,
    owner: Value,
    container: &'a str,
    image: &'a str,
    state: PodState,
    restarts: i32,
    since: &'a str,
    uid: String,
}

/// A pod in a state, as the kubelet would report it.
fn pod_json(pod: &PodJson<'_>) -> Value {
    let (phase, reason, ready) = match pod.state {
        PodState::Failed => ("Failed", Some("Error"), false),
        PodState::Evicted => ("Failed", Some("Evicted"), false),
        PodState::Running => ("Running", None, true),
        _ => ("Running", None, false),
    };
    let container_state = match pod.state {
        PodState::CrashLoopBackOff => json!({"waiting": {"reason": "CrashLoopBackOff"}}),
        PodState::OOMKilled => json!({"waiting": {"reason": "CrashLoopBackOff"}}),
        PodState::ImagePullBackOff => json!({"waiting": {"reason": "ImagePullBackOff"}}),
        PodState::Running | PodState::NotReady => json!({"running": {"startedAt": pod.since}}),
        PodState::Failed | PodState::Evicted => {
            json!({"terminated": {"reason": "Error", "exitCode": 1}})
        }
    };
    let last = match pod.state {
        PodState::OOMKilled => json!({"terminated": {"reason": "OOMKilled", "exitCode": 137}}),
        PodState::CrashLoopBackOff => json!({"terminated": {"reason": "Error", "exitCode": 1}}),
        _ => json!({}),
    };
    let ready_reason = if ready {
        Value::Null
    } else {
        Value::String("ContainersNotReady".into())
    };
    json!({
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
                     "labels": pod.labels, "ownerReferences": [pod.owner],
                     "creationTimestamp": pod.since},
        "spec": {"containers": [{"name": pod.container, "image": pod.image}], "nodeName": "node-1"},
        "status": {
            "phase": phase, "reason": reason,
            "message": if pod.state == PodState::Evicted { Some("The node was low on resource: memory.") } else { None },
            "startTime": pod.since,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                            "reason": ready_reason, "lastTransitionTime": pod.since}],
            "containerStatuses": [{"name": pod.container, "image": pod.image, "imageID": "",
                "ready": ready, "restartCount": pod.restarts, "state": container_state,
                "lastState": last}],
        },
    })
}

/// The pod-template-hash of a revision.
fn hash_of(number: i64) -> String {
    format!("{:x}", 0x5f00_0000_u64 + u64::try_from(number).unwrap_or(0))
}
