//! The watches the detector keeps open: one per policy target (the guarded
//! workloads) and one per guarded workload's pod selector. Each runs in its
//! own task and forwards its events, tagged with its key, to the detector.
//! Nothing outside these selectors is watched, so unguarded pods cost nothing.

use std::fmt;

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client, ResourceExt,
    core::{Selector, SelectorExt},
    runtime::{WatchStreamExt, watcher},
};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::crd::{RemediationPolicy, Target, WorkloadKind};

/// A watch on guarded workloads: a kind in a namespace, by labels or by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadWatchKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub labels: Option<String>,
    pub name: Option<String>,
}

/// A watch on the pods of guarded workloads: a namespace and a pod selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodWatchKey {
    pub namespace: String,
    pub selector: String,
}

impl fmt::Display for PodWatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pods in {} with {}", self.namespace, self.selector)
    }
}

/// A guarded workload of either kind.
#[derive(Clone, Debug)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
}

impl Workload {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Workload::Deployment(_) => WorkloadKind::Deployment,
            Workload::StatefulSet(_) => WorkloadKind::StatefulSet,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Workload::Deployment(d) => d.name_any(),
            Workload::StatefulSet(s) => s.name_any(),
        }
    }

    pub fn namespace(&self) -> String {
        match self {
            Workload::Deployment(d) => d.namespace(),
            Workload::StatefulSet(s) => s.namespace(),
        }
        .unwrap_or_default()
    }

    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        match self {
            Workload::Deployment(d) => d.labels(),
            Workload::StatefulSet(s) => s.labels(),
        }
    }

    /// The watch key of its pods, if its pod selector is usable.
    pub fn pod_watch_key(&self) -> Option<PodWatchKey> {
        let selector: &LabelSelector = match self {
            Workload::Deployment(d) => &d.spec.as_ref()?.selector,
            Workload::StatefulSet(s) => &s.spec.as_ref()?.selector,
        };
        let selector = Selector::try_from(selector.clone()).ok()?;
        // An empty selector would select every pod in the namespace.
        if selector.selects_all() {
            return None;
        }
        Some(PodWatchKey {
            namespace: self.namespace(),
            selector: selector.to_string(),
        })
    }

    pub fn view(&self) -> super::symptoms::WorkloadView<'_> {
        match self {
            Workload::Deployment(d) => super::symptoms::WorkloadView::Deployment(d),
            Workload::StatefulSet(s) => super::symptoms::WorkloadView::StatefulSet(s),
        }
    }
}

/// Whether a pod belongs to the workload through its owner references
/// (Pod -> ReplicaSet `<deployment>-<pod-template-hash>` -> Deployment; Pod -> StatefulSet).
pub fn pod_belongs_to(pod: &Pod, kind: WorkloadKind, name: &str) -> bool {
    pod.owner_references().iter().any(|owner| match kind {
        WorkloadKind::StatefulSet => owner.kind == "StatefulSet" && owner.name == name,
        WorkloadKind::Deployment => {
            owner.kind == "ReplicaSet"
                && match pod.labels().get("pod-template-hash") {
                    Some(hash) => {
                        owner
                            .name
                            .strip_suffix(hash.as_str())
                            .and_then(|s| s.strip_suffix('-'))
                            == Some(name)
                    }
                    None => owner
                        .name
                        .strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('-')),
                }
        }
    })
}

/// Whether a policy target selects the workload.
pub fn target_selects(target: &Target, workload: &Workload) -> bool {
    if target.kind != workload.kind() {
        return false;
    }
    let named = target
        .names
        .as_ref()
        .is_none_or(|names| names.iter().any(|n| *n == workload.name()));
    let labelled = match &target.selector {
        None => true,
        Some(selector) => {
            Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(workload.labels()))
        }
    };
    named && labelled
}

/// The workload watches a policy needs.
pub fn workload_watch_keys(policy: &RemediationPolicy) -> Vec<WorkloadWatchKey> {
    let namespace = policy.namespace().unwrap_or_default();
    let mut keys = Vec::new();
    for target in &policy.spec.targets {
        match (&target.selector, &target.names) {
            (Some(selector), _) => {
                if let Ok(selector) = Selector::try_from(selector.clone()) {
                    let labels = (!selector.selects_all()).then(|| selector.to_string());
                    keys.push(WorkloadWatchKey {
                        kind: target.kind,
                        namespace: namespace.clone(),
                        labels,
                        name: None,
                    });
                }
            }
            (None, Some(names)) => keys.extend(names.iter().map(|name| WorkloadWatchKey {
                kind: target.kind,
                namespace: namespace.clone(),
                labels: None,
                name: Some(name.clone()),
            })),
            (None, None) => {}
        }
    }
    keys
}

/// An event from one of the watches.
pub enum Input {
    Workload(WorkloadWatchKey, watcher::Event<Workload>),
    Pod(PodWatchKey, watcher::Event<Pod>),
}

/// Starts the watch for a workload key; the task ends when aborted or when
/// the detector is gone.
pub fn spawn_workload_watch(
    client: &Client,
    key: WorkloadWatchKey,
    sender: mpsc::Sender<Input>,
) -> AbortHandle {
    let mut config = watcher::Config::default().any_semantic();
    if let Some(labels) = &key.labels {
        config = config.labels(labels);
    }
    if let Some(name) = &key.name {
        config = config.fields(&format!("metadata.name={name}"));
    }
    match key.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &key.namespace);
            forward(api, config, sender, move |event| {
                Input::Workload(key.clone(), map_event(event, Workload::Deployment))
            })
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), &key.namespace);
            forward(api, config, sender, move |event| {
                Input::Workload(key.clone(), map_event(event, Workload::StatefulSet))
            })
        }
    }
}

/// Starts the watch for the pods of a pod selector.
pub fn spawn_pod_watch(
    client: &Client,
    key: PodWatchKey,
    sender: mpsc::Sender<Input>,
) -> AbortHandle {
    let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
    let config = watcher::Config::default()
        .any_semantic()
        .labels(&key.selector);
    forward(api, config, sender, move |event| {
        Input::Pod(key.clone(), event)
    })
}

fn forward<K>(
    api: Api<K>,
    config: watcher::Config,
    sender: mpsc::Sender<Input>,
    tag: impl Fn(watcher::Event<K>) -> Input + Send + 'static,
) -> AbortHandle
where
    K: kube::Resource + Clone + fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let task = tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if sender.send(tag(event)).await.is_err() {
                        return;
                    }
                }
                // The watcher retries with backoff; an undecodable object or a
                // lost connection must not end detection.
                Err(error) => tracing::warn!(%error, "watch error; retrying"),
            }
        }
    });
    task.abort_handle()
}

fn map_event<K>(
    event: watcher::Event<K>,
    wrap: impl Fn(K) -> Workload,
) -> watcher::Event<Workload> {
    match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(wrap(object)),
        watcher::Event::Delete(object) => watcher::Event::Delete(wrap(object)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(object) => watcher::Event::InitApply(wrap(object)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}
