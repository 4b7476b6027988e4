//! The one model of a pod that every part reads (the classifier, evidence,
//! a DeletePods restart), and the shared stores of guarded pods.
//!
//! Pods are the most numerous objects the operator keeps: a whole `Pod` is
//! 2.4 KiB before a single string is filled in, and most of it is never
//! read. `PodFacts` keeps what the code reads, so 10,000 guarded pods fit in
//! a few MiB.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use k8s_openapi::{
    api::core::v1::{ContainerStatus, Pod},
    jiff::Timestamp,
};
use kube::{
    core::{Selector, SelectorExt},
    runtime::watcher,
};

/// A pod selector in a namespace: the key of a pod watch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodSelector {
    pub namespace: String,
    pub selector: String,
}

impl fmt::Display for PodSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pods in {} with {}", self.namespace, self.selector)
    }
}

/// What the operator reads of a pod. Not an `ObjectMeta`: its 15 fields,
/// empty but for six, were a third of a pod's record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodFacts {
    /// Shared with its store's key and its selectors' index.
    pub name: Arc<str>,
    /// One copy for all pods of a store.
    pub namespace: Arc<str>,
    pub uid: Option<String>,
    /// Its owners, each by kind and name (`workload::pod_belongs_to`).
    pub owners: Box<[Owner]>,
    pub created: Option<Timestamp>,
    /// Its deletionTimestamp: it is terminating.
    pub deleted: Option<Timestamp>,
    /// The pods of a store that carry the same labels share one copy, as
    /// they share each text that many pods carry (node, phase, owner,
    /// container names and images; see [`Interned`]).
    pub labels: Arc<BTreeMap<String, String>>,
    pub node: Option<Arc<str>>,
    pub phase: Option<Arc<str>>,
    /// The pod's own reason (`Evicted`) and message.
    pub reason: Option<String>,
    pub message: Option<String>,
    /// The Ready condition, if the pod has one.
    pub ready: Option<Readiness>,
    pub start_time: Option<Timestamp>,
    /// Init containers first, then the app's. (A boxed slice: a `Vec`
    /// collected from the status kept room for four.)
    pub containers: Box<[ContainerFacts]>,
}

/// One of a pod's owner references, by what identifies the owner in its
/// namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub kind: Arc<str>,
    pub name: Arc<str>,
}

/// A pod's Ready condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: Option<String>,
    /// Its last transition.
    pub since: Option<Timestamp>,
}

/// What the operator reads of one container's status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerFacts {
    pub name: Arc<str>,
    /// An init container.
    pub init: bool,
    pub ready: bool,
    pub image: Arc<str>,
    pub restart_count: i32,
    /// `state.waiting.reason`.
    pub waiting: Option<String>,
    /// `state.terminated.reason`.
    pub terminated: Option<String>,
    /// `lastState.terminated.reason`.
    pub last_terminated: Option<String>,
}

impl ContainerFacts {
    fn new(status: ContainerStatus, init: bool) -> Self {
        let state = status.state.unwrap_or_default();
        ContainerFacts {
            name: status.name.into(),
            init,
            ready: status.ready,
            image: status.image.into(),
            restart_count: status.restart_count,
            waiting: state.waiting.and_then(|w| w.reason),
            terminated: state.terminated.and_then(|t| t.reason),
            last_terminated: status
                .last_state
                .and_then(|s| s.terminated)
                .and_then(|t| t.reason),
        }
    }
}

impl From<Pod> for PodFacts {
    fn from(pod: Pod) -> Self {
        let meta = pod.metadata;
        let owners = meta
            .owner_references
            .into_iter()
            .flatten()
            .map(|owner| Owner {
                kind: owner.kind.into(),
                name: owner.name.into(),
            })
            .collect();
        let status = pod.status.unwrap_or_default();
        let ready = status
            .conditions
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| Readiness {
                ready: c.status == "True",
                reason: c.reason,
                since: c.last_transition_time.map(|t| t.0),
            });
        let init = status.init_container_statuses.into_iter().flatten();
        let app = status.container_statuses.into_iter().flatten();
        let containers = init
            .map(|c| ContainerFacts::new(c, true))
            .chain(app.map(|c| ContainerFacts::new(c, false)))
            .collect();
        PodFacts {
            name: meta.name.unwrap_or_default().into(),
            namespace: meta.namespace.unwrap_or_default().into(),
            uid: meta.uid,
            owners,
            created: meta.creation_timestamp.map(|t| t.0),
            deleted: meta.deletion_timestamp.map(|t| t.0),
            labels: Arc::new(meta.labels.unwrap_or_default()),
            node: pod.spec.and_then(|s| s.node_name).map(Into::into),
            phase: status.phase.map(Into::into),
            reason: status.reason,
            message: status.message,
            ready,
            start_time: status.start_time.map(|t| t.0),
            containers,
        }
    }
}

impl PodFacts {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its labels, for selectors to match.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// It is being deleted.
    pub fn is_terminating(&self) -> bool {
        self.deleted.is_some()
    }

    /// Its Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.ready.as_ref().is_some_and(|r| r.ready)
    }

    /// Its app containers (not the init containers).
    pub fn app_containers(&self) -> impl Iterator<Item = &ContainerFacts> {
        self.containers.iter().filter(|c| !c.init)
    }

    /// Restarts of all its containers, init containers included.
    pub fn restarts(&self) -> i32 {
        self.containers
            .iter()
            .map(|c| c.restart_count.max(0))
            .fold(0, i32::saturating_add)
    }
}

/// A pod watch's event with its pods reduced to their facts.
pub fn facts_event(event: watcher::Event<Pod>) -> watcher::Event<PodFacts> {
    match event {
        watcher::Event::Apply(pod) => watcher::Event::Apply(pod.into()),
        watcher::Event::Delete(pod) => watcher::Event::Delete(pod.into()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(pod) => watcher::Event::InitApply(pod.into()),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The pods of the namespaces that hold guarded workloads: one watch and
/// one store per namespace (a watch is a connection; one per workload cost
/// about 85 KiB each), and for each guarded pod selector the names of the
/// pods it selects, kept as the pods change. The detector's pod watches
/// fill them; the incident controller reads its target's pods here instead
/// of listing them.
#[derive(Clone, Default)]
pub struct GuardedPods {
    namespaces: Arc<RwLock<HashMap<String, NamespacePods>>>,
    /// Numbers each store, so that a watch replaced by another fills
    /// nothing after it.
    stores: Arc<AtomicU64>,
}

/// The pods of one namespace by name. A map of its own, not a kube
/// reflector store: a store's key keeps its own copy of each name and
/// namespace, a quarter of what a pod cost.
type ByName = HashMap<Arc<str>, Arc<PodFacts>>;

struct NamespacePods {
    /// The number of the store, of the watch that fills it.
    store: u64,
    pods: ByName,
    /// Its first complete list has arrived.
    synced: bool,
    /// The pods each guarded selector of the namespace selects, by name.
    selected: HashMap<String, (Selector, HashSet<Arc<str>>)>,
}

impl NamespacePods {
    /// Files `pod` under the selectors that select it, and under no other.
    fn index(&mut self, pod: &PodFacts) {
        for (selector, names) in self.selected.values_mut() {
            if selector.matches(pod.labels()) {
                if !names.contains(&pod.name) {
                    names.insert(Arc::clone(&pod.name));
                }
            } else {
                names.remove(&pod.name);
            }
        }
    }

    fn unindex(&mut self, pod: &PodFacts) {
        for (_, names) in self.selected.values_mut() {
            names.remove(&pod.name);
        }
    }

    /// The names of the pods `selector` selects.
    fn selected_by(&self, selector: &Selector) -> HashSet<Arc<str>> {
        self.pods
            .values()
            .filter(|pod| selector.matches(pod.labels()))
            .map(|pod| Arc::clone(&pod.name))
            .collect()
    }

    /// Every selector's pods again (after a full list).
    fn reindex(&mut self) {
        let selected = std::mem::take(&mut self.selected);
        self.selected = selected
            .into_iter()
            .map(|(key, (selector, _))| {
                let names = self.selected_by(&selector);
                (key, (selector, names))
            })
            .collect();
    }
}

/// One copy of each distinct value (a set of labels, a text) of a
/// namespace's pods. The pods of one template carry the same labels, owner,
/// container names and images, and their node names and phases repeat: at
/// 10,000 guarded pods, copies were 5 MiB for the labels alone (a map of
/// even one label is a 544-byte node) and a 32-byte block for each text. A
/// value no pod holds any more is dropped when the table has doubled since
/// the last look.
struct Interned<T: ?Sized> {
    values: HashSet<Arc<T>>,
    sweep_at: usize,
}

impl<T: ?Sized> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            values: HashSet::new(),
            sweep_at: 0,
        }
    }
}

impl<T: ?Sized + Eq + std::hash::Hash> Interned<T> {
    /// Makes `value` the shared copy of its value.
    fn share(&mut self, value: &mut Arc<T>) {
        if let Some(shared) = self.values.get(value) {
            *value = Arc::clone(shared);
            return;
        }
        if self.values.len() >= self.sweep_at {
            self.values.retain(|value| Arc::strong_count(value) > 1);
            self.sweep_at = (self.values.len() * 2).max(64);
        }
        self.values.insert(Arc::clone(value));
    }
}

/// What a namespace's pods share.
#[derive(Default)]
struct SharedValues {
    labels: Interned<BTreeMap<String, String>>,
    texts: Interned<str>,
}

impl SharedValues {
    fn share(&mut self, pod: &mut PodFacts) {
        self.labels.share(&mut pod.labels);
        let texts = &mut self.texts;
        texts.share(&mut pod.namespace);
        for text in [&mut pod.node, &mut pod.phase].into_iter().flatten() {
            texts.share(text);
        }
        for owner in &mut pod.owners {
            texts.share(&mut owner.kind);
            texts.share(&mut owner.name);
        }
        for container in &mut pod.containers {
            texts.share(&mut container.name);
            texts.share(&mut container.image);
        }
    }
}

/// What fills one namespace's store: its watch applies its events here.
pub struct StoreFiller {
    namespace: String,
    store: u64,
    pods: GuardedPods,
    shared: SharedValues,
    /// The pods of a list in progress; the store keeps what it had until
    /// the list is complete.
    listing: Option<ByName>,
}

impl StoreFiller {
    /// Files the event's pod in the store, what it carries shared with the
    /// other pods, and gives the event back with the pod as filed.
    pub fn apply(&mut self, event: watcher::Event<PodFacts>) -> watcher::Event<Arc<PodFacts>> {
        let event = match event {
            watcher::Event::Apply(mut pod) => {
                self.shared.share(&mut pod);
                watcher::Event::Apply(Arc::new(pod))
            }
            watcher::Event::InitApply(mut pod) => {
                self.shared.share(&mut pod);
                let pod = Arc::new(pod);
                self.listing
                    .get_or_insert_default()
                    .insert(Arc::clone(&pod.name), Arc::clone(&pod));
                return watcher::Event::InitApply(pod);
            }
            watcher::Event::Init => {
                self.listing = Some(ByName::new());
                return watcher::Event::Init;
            }
            watcher::Event::Delete(pod) => watcher::Event::Delete(Arc::new(pod)),
            watcher::Event::InitDone => watcher::Event::InitDone,
        };
        let mut namespaces = self
            .pods
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = namespaces
            .get_mut(&self.namespace)
            .filter(|entry| entry.store == self.store)
        else {
            return event;
        };
        match &event {
            watcher::Event::Apply(pod) => {
                entry.index(pod);
                entry.pods.insert(Arc::clone(&pod.name), Arc::clone(pod));
            }
            watcher::Event::Delete(pod) => {
                entry.unindex(pod);
                entry.pods.remove(&pod.name);
            }
            watcher::Event::InitDone => {
                entry.pods = self.listing.take().unwrap_or_default();
                entry.reindex();
                entry.synced = true;
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
        event
    }
}

impl GuardedPods {
    /// A new, empty store for the pods of `namespace` (replacing any before
    /// it, and keeping its selectors), and what fills it.
    pub fn register(&self, namespace: &str) -> StoreFiller {
        let store = self.stores.fetch_add(1, Ordering::Relaxed);
        let mut namespaces = self
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let selected = namespaces
            .remove(namespace)
            .map(|before| before.selected)
            .unwrap_or_default();
        namespaces.insert(
            namespace.to_owned(),
            NamespacePods {
                store,
                pods: ByName::new(),
                synced: false,
                selected,
            },
        );
        StoreFiller {
            namespace: namespace.to_owned(),
            store,
            pods: self.clone(),
            shared: SharedValues::default(),
            listing: None,
        }
    }

    /// Forgets the pods of `namespace`.
    pub fn unregister(&self, namespace: &str) {
        self.namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(namespace);
    }

    /// Keeps exactly `keys` as the selectors whose pods are indexed, each
    /// filled from its namespace's store.
    pub fn select(&self, keys: &BTreeMap<PodSelector, Selector>) {
        let mut namespaces = self
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (namespace, entry) in namespaces.iter_mut() {
            entry.selected.retain(|selector, _| {
                keys.contains_key(&PodSelector {
                    namespace: namespace.clone(),
                    selector: selector.clone(),
                })
            });
            let new: Vec<(&PodSelector, &Selector)> = keys
                .iter()
                .filter(|(k, _)| {
                    k.namespace == *namespace && !entry.selected.contains_key(&k.selector)
                })
                .collect();
            for (key, selector) in new {
                let selector = selector.clone();
                let names = entry.selected_by(&selector);
                entry
                    .selected
                    .insert(key.selector.clone(), (selector, names));
            }
        }
    }

    /// The pods `key` selects that `keep` accepts, once its namespace's
    /// watch has listed them all; None when it is not watched or not synced
    /// yet.
    pub fn pods(
        &self,
        key: &PodSelector,
        keep: impl Fn(&PodFacts) -> bool,
    ) -> Option<Vec<Arc<PodFacts>>> {
        let namespaces = self
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = namespaces.get(&key.namespace)?;
        if !entry.synced {
            return None;
        }
        let (_, names) = entry.selected.get(&key.selector)?;
        Some(
            names
                .iter()
                .filter_map(|name| entry.pods.get(name))
                .filter(|pod| keep(pod))
                .cloned()
                .collect(),
        )
    }

    /// How many pods the stores hold, for the metrics.
    pub fn len(&self) -> usize {
        self.namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|entry| entry.pods.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn facts_keep_what_is_read_and_drop_the_rest() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "api-1", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "api", "pod-template-hash": "abc"},
                "annotations": {"big": "x".repeat(4096)},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-abc", "uid": "rs"}],
                "managedFields": [{"manager": "kubelet"}],
                "creationTimestamp": "2026-01-01T00:00:00Z"
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "api:1", "env": [{"name": "A", "value": "b"}]}]},
            "status": {
                "phase": "Running", "podIP": "10.0.0.1", "startTime": "2026-01-01T00:00:01Z",
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": "2026-01-01T00:00:05Z"}
                ],
                "initContainerStatuses": [{"name": "init", "image": "init:1", "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                "containerStatuses": [{"name": "app", "image": "api:1", "imageID": "sha", "containerID": "c", "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]
            }
        }))
        .unwrap();
        let facts = PodFacts::from(pod);
        assert_eq!(facts.name(), "api-1");
        assert_eq!(&*facts.namespace, "shop");
        assert_eq!(facts.uid.as_deref(), Some("u1"));
        assert_eq!(
            *facts.owners,
            [Owner {
                kind: "ReplicaSet".into(),
                name: "api-abc".into()
            }]
        );
        assert_eq!(facts.created, Some("2026-01-01T00:00:00Z".parse().unwrap()));
        assert!(!facts.is_terminating());
        assert_eq!(facts.labels().len(), 2);
        assert_eq!(facts.node.as_deref(), Some("n1"));
        assert_eq!(facts.phase.as_deref(), Some("Running"));
        assert!(!facts.is_ready());
        assert_eq!(
            facts.ready.as_ref().and_then(|r| r.reason.as_deref()),
            Some("ContainersNotReady")
        );
        assert_eq!(facts.restarts(), 4);
        let names: Vec<&str> = facts.containers.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["init", "app"], "init containers first");
        let app = &facts.containers[1];
        assert_eq!(app.waiting.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(app.last_terminated.as_deref(), Some("OOMKilled"));
        assert_eq!(facts.containers[0].terminated.as_deref(), Some("Completed"));
    }

    #[test]
    fn a_selector_finds_its_pods_only_once_the_namespace_is_listed_and_follows_their_labels() {
        let pods = GuardedPods::default();
        let key = PodSelector {
            namespace: "shop".into(),
            selector: "app=api".into(),
        };
        let selector = |text: &str| -> Selector {
            let (k, v) = text.split_once('=').unwrap();
            Selector::from_iter([(k.to_owned(), v.to_owned())])
        };
        let keys = BTreeMap::from([(key.clone(), selector("app=api"))]);
        assert!(pods.pods(&key, |_| true).is_none(), "not watched");
        let mut filler = pods.register("shop");
        pods.select(&keys);
        let facts = |name: &str, app: &str| PodFacts {
            name: name.into(),
            namespace: "shop".into(),
            labels: Arc::new([("app".to_owned(), app.to_owned())].into()),
            ..PodFacts::default()
        };
        filler.apply(watcher::Event::Init);
        filler.apply(watcher::Event::InitApply(facts("a", "api")));
        assert!(pods.pods(&key, |_| true).is_none(), "not synced yet");
        filler.apply(watcher::Event::InitApply(facts("b", "api")));
        filler.apply(watcher::Event::InitApply(facts("w", "worker")));
        filler.apply(watcher::Event::InitDone);
        let names = |pods: Option<Vec<Arc<PodFacts>>>| {
            let mut names: Vec<String> = pods
                .unwrap_or_default()
                .iter()
                .map(|p| p.name().to_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(pods.pods(&key, |_| true)), ["a", "b"]);
        assert_eq!(names(pods.pods(&key, |p| p.name() == "b")), ["b"]);
        // Relabelled out of the selector, and into it; deleted. The event
        // comes back with the pod as filed, for the detector.
        let watcher::Event::Apply(filed) =
            filler.apply(watcher::Event::Apply(facts("a", "worker")))
        else {
            panic!("an Apply gives back an Apply");
        };
        assert_eq!(
            (filed.name(), filed.labels()["app"].as_str()),
            ("a", "worker")
        );
        filler.apply(watcher::Event::Apply(facts("w", "api")));
        filler.apply(watcher::Event::Delete(facts("b", "api")));
        assert_eq!(names(pods.pods(&key, |_| true)), ["w"]);
        // A selector added later is filled from what the store holds.
        let workers = PodSelector {
            namespace: "shop".into(),
            selector: "app=worker".into(),
        };
        pods.select(&BTreeMap::from([
            (key.clone(), selector("app=api")),
            (workers.clone(), selector("app=worker")),
        ]));
        assert_eq!(names(pods.pods(&workers, |_| true)), ["a"]);
        assert_eq!(pods.len(), 2);
        // A list again (the watch lost its place): what the store had
        // stands until the list is complete, then only what it listed.
        filler.apply(watcher::Event::Init);
        filler.apply(watcher::Event::InitApply(facts("v", "worker")));
        assert_eq!(names(pods.pods(&workers, |_| true)), ["a"]);
        filler.apply(watcher::Event::InitDone);
        assert_eq!(names(pods.pods(&workers, |_| true)), ["v"]);
        assert_eq!(names(pods.pods(&key, |_| true)), Vec::<String>::new());
        // A watch replaced by another (its namespace registered again)
        // fills nothing more.
        let mut replacement = pods.register("shop");
        filler.apply(watcher::Event::Apply(facts("late", "worker")));
        replacement.apply(watcher::Event::Init);
        replacement.apply(watcher::Event::InitApply(facts("n", "worker")));
        replacement.apply(watcher::Event::InitDone);
        assert_eq!(names(pods.pods(&workers, |_| true)), ["n"]);
        pods.select(&BTreeMap::from([(workers.clone(), selector("app=worker"))]));
        assert!(pods.pods(&key, |_| true).is_none(), "no longer selected");
        pods.unregister("shop");
        assert!(pods.pods(&workers, |_| true).is_none());
    }

    #[test]
    fn pods_with_the_same_labels_share_one_copy_until_none_holds_it() {
        let labels = |app: &str| Arc::new(BTreeMap::from([("app".to_owned(), app.to_owned())]));
        let mut shared = Interned::default();
        let (mut a, mut b) = (labels("api"), labels("api"));
        shared.share(&mut a);
        shared.share(&mut b);
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        // The unused set goes once the table has grown enough to be swept.
        let mut held = Vec::new();
        for index in 0..64 {
            let mut other = labels(&index.to_string());
            shared.share(&mut other);
            held.push(other);
        }
        assert!(!shared.values.contains(&labels("api")));
    }
}
