//! The one model of a guarded workload (a Deployment or a StatefulSet) that
//! the detector, the classifier, verification and the actions all share.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::PodTemplateSpec,
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::{
    Resource, ResourceExt,
    core::{Selector, SelectorExt},
    runtime::reflector::ObjectRef,
};

pub use crate::pod::PodSelector;
use crate::{
    crd::{Target, WorkloadKind, WorkloadRef},
    names::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, STEP_ANNOTATION},
    pod::PodFacts,
};

/// A workload of a kind the operator guards.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    Deployment(Arc<Deployment>),
    StatefulSet(Arc<StatefulSet>),
}

impl From<Deployment> for Workload {
    fn from(deployment: Deployment) -> Self {
        Workload::Deployment(Arc::new(deployment))
    }
}

impl From<StatefulSet> for Workload {
    fn from(statefulset: StatefulSet) -> Self {
        Workload::StatefulSet(Arc::new(statefulset))
    }
}

impl Workload {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Workload::Deployment(_) => WorkloadKind::Deployment,
            Workload::StatefulSet(_) => WorkloadKind::StatefulSet,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Workload::Deployment(d) => &d.metadata,
            Workload::StatefulSet(s) => &s.metadata,
        }
    }

    pub fn name(&self) -> String {
        self.metadata().name.clone().unwrap_or_default()
    }

    pub fn namespace(&self) -> String {
        self.metadata().namespace.clone().unwrap_or_default()
    }

    /// The version it was read at: writes made from it are conditional on it.
    pub fn resource_version(&self) -> Option<&str> {
        self.metadata().resource_version.as_deref()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        match self {
            Workload::Deployment(d) => d.labels(),
            Workload::StatefulSet(s) => s.labels(),
        }
    }

    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match self {
            Workload::Deployment(d) => d.annotations(),
            Workload::StatefulSet(s) => s.annotations(),
        }
    }

    /// Kind and name, as an Incident names its target.
    pub fn reference(&self) -> WorkloadRef {
        WorkloadRef {
            kind: self.kind(),
            name: self.name(),
        }
    }

    /// Where Events about the workload go.
    pub fn object_reference(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        match self {
            Workload::Deployment(d) => d.object_ref(&()),
            Workload::StatefulSet(s) => s.object_ref(&()),
        }
    }

    /// The Deployment's revision annotation (StatefulSets have none).
    pub fn revision(&self) -> Option<&str> {
        match self {
            Workload::Deployment(d) => d.annotations().get(REVISION_ANNOTATION).map(String::as_str),
            Workload::StatefulSet(_) => None,
        }
    }

    /// The revision a StatefulSet is rolling its pods to (its controller's
    /// `updateRevision`, once it has seen the current spec); Deployments
    /// have none.
    /// `None` too for a StatefulSet whose rolling update is partitioned:
    /// its pods below the partition stay on their revision on purpose.
    pub fn update_revision(&self) -> Option<&str> {
        match self {
            Workload::Deployment(_) => None,
            Workload::StatefulSet(s) => {
                let partitioned = s
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.update_strategy.as_ref())
                    .and_then(|strategy| strategy.rolling_update.as_ref())
                    .and_then(|rolling| rolling.partition)
                    .is_some_and(|partition| partition > 0);
                s.status
                    .as_ref()
                    .filter(|status| {
                        !partitioned && status.observed_generation >= s.metadata.generation
                    })
                    .and_then(|status| status.update_revision.as_deref())
            }
        }
    }

    /// The step that last changed the workload, from its annotation.
    pub fn applied_step(&self) -> Option<&str> {
        self.annotations().get(STEP_ANNOTATION).map(String::as_str)
    }

    /// Desired replicas (1 when unset, as the API server defaults it).
    pub fn desired_replicas(&self) -> i32 {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            Workload::StatefulSet(s) => s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        }
    }

    /// Ready replicas.
    pub fn ready_replicas(&self) -> i32 {
        match self {
            Workload::Deployment(d) => d.status.as_ref().and_then(|s| s.ready_replicas),
            Workload::StatefulSet(s) => s.status.as_ref().and_then(|s| s.ready_replicas),
        }
        .unwrap_or(0)
    }

    /// Desired, and available (Deployment) or ready (StatefulSet) replicas.
    pub fn replicas(&self) -> (i32, i32) {
        let serving = match self {
            Workload::Deployment(d) => d
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0),
            Workload::StatefulSet(_) => self.ready_replicas(),
        };
        (self.desired_replicas(), serving)
    }

    /// The rollout reached the current spec: every replica updated (and,
    /// for a Deployment, no old replica left).
    pub fn rollout_complete(&self) -> bool {
        let want = self.desired_replicas();
        match self {
            Workload::Deployment(d) => {
                let status = d.status.clone().unwrap_or_default();
                status.observed_generation >= d.metadata.generation
                    && status.updated_replicas.unwrap_or(0) == want
                    && status.replicas.unwrap_or(0) == want
            }
            Workload::StatefulSet(s) => {
                let status = s.status.clone().unwrap_or_default();
                status.observed_generation >= s.metadata.generation
                    && status.updated_replicas.unwrap_or(0) == want
            }
        }
    }

    /// Every desired replica is ready (and available, for a Deployment).
    pub fn all_ready(&self) -> bool {
        let want = self.desired_replicas();
        let (_, serving) = self.replicas();
        self.ready_replicas() == want && serving == want
    }

    /// How many pods a rollout may take down at once: the Deployment's
    /// maxUnavailable (all of them with Recreate); one for a StatefulSet.
    pub fn rollout_max_unavailable(&self) -> i32 {
        let Workload::Deployment(d) = self else {
            return 1;
        };
        let replicas = self.desired_replicas();
        let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
        if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
            return replicas;
        }
        let value = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.clone());
        match value {
            Some(IntOrString::Int(n)) => n,
            Some(IntOrString::String(text)) => percent_of(&text, replicas),
            None => percent_of("25%", replicas),
        }
    }

    /// The pod template.
    pub fn template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.template),
        }
    }

    /// The pod selector, if it is valid and selects something less than
    /// the whole namespace.
    pub fn selector(&self) -> Option<Selector> {
        let selector = match self {
            Workload::Deployment(d) => &d.spec.as_ref()?.selector,
            Workload::StatefulSet(s) => &s.spec.as_ref()?.selector,
        };
        let selector = Selector::try_from(selector.clone()).ok()?;
        (!selector.selects_all()).then_some(selector)
    }

    /// The key of the watch on its pods, if its pod selector is usable.
    pub fn pod_selector(&self) -> Option<PodSelector> {
        Some(PodSelector {
            namespace: self.namespace(),
            selector: self.selector()?.to_string(),
        })
    }

    /// Whether a policy target selects the workload (an invalid selector,
    /// which the policy's validation reports, selects nothing).
    pub fn is_selected_by(&self, target: &Target) -> bool {
        if target.kind != self.kind() {
            return false;
        }
        let name = self.name();
        let named = target
            .names
            .as_ref()
            .is_none_or(|names| names.contains(&name));
        let labelled = match &target.selector {
            None => true,
            Some(selector) => {
                Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(self.labels()))
            }
        };
        named && labelled
    }

    /// Whether a pod belongs to the workload through its owner references
    /// (Pod -> ReplicaSet `<deployment>-<pod-template-hash>` -> Deployment;
    /// Pod -> StatefulSet).
    pub fn owns(&self, pod: &PodFacts) -> bool {
        pod_belongs_to(pod, self.kind(), &self.name())
    }
}

/// Whether a pod belongs to the named workload of that kind; see [`Workload::owns`].
pub fn pod_belongs_to(pod: &PodFacts, kind: WorkloadKind, name: &str) -> bool {
    pod.owners.iter().any(|owner| match kind {
        WorkloadKind::StatefulSet => &*owner.kind == "StatefulSet" && &*owner.name == name,
        WorkloadKind::Deployment => {
            &*owner.kind == "ReplicaSet"
                && match pod.labels().get(POD_TEMPLATE_HASH_LABEL) {
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

/// The store key of a workload reference in a namespace.
pub fn deployment_ref(namespace: &str, name: &str) -> ObjectRef<Deployment> {
    ObjectRef::new(name).within(namespace)
}

/// The store key of a StatefulSet in a namespace.
pub fn statefulset_ref(namespace: &str, name: &str) -> ObjectRef<StatefulSet> {
    ObjectRef::new(name).within(namespace)
}

/// Kubernetes rounds a percentage of maxUnavailable down.
fn percent_of(text: &str, replicas: i32) -> i32 {
    let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(25);
    i32::try_from(i64::from(replicas) * percent / 100).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(spec: serde_json::Value) -> Workload {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "api", "namespace": "hg"},
            "spec": spec,
        }))
        .unwrap();
        d.into()
    }

    #[test]
    fn max_unavailable_follows_the_strategy() {
        let selector = json!({"matchLabels": {"app": "api"}});
        let template = json!({"metadata": {"labels": {"app": "api"}}});
        let cases = [
            (json!(null), 8, 2),
            (json!({"type": "Recreate"}), 8, 8),
            (json!({"rollingUpdate": {"maxUnavailable": 3}}), 8, 3),
            (json!({"rollingUpdate": {"maxUnavailable": "50%"}}), 8, 4),
            (json!({"rollingUpdate": {"maxUnavailable": "10%"}}), 8, 0),
        ];
        for (strategy, replicas, expected) in cases {
            let mut spec =
                json!({"replicas": replicas, "selector": selector, "template": template});
            if !strategy.is_null() {
                spec["strategy"] = strategy.clone();
            }
            assert_eq!(
                deployment(spec).rollout_max_unavailable(),
                expected,
                "{strategy}"
            );
        }
    }

    #[test]
    fn pods_belong_through_their_owners() {
        let pod = |owner_kind: &str, owner: &str, hash: Option<&str>| -> PodFacts {
            let mut labels = json!({});
            if let Some(hash) = hash {
                labels[POD_TEMPLATE_HASH_LABEL] = json!(hash);
            }
            let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({"metadata": {"name": "p", "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner, "uid": "u"}]}}))
            .unwrap();
            PodFacts::from(pod)
        };
        let d = WorkloadKind::Deployment;
        assert!(pod_belongs_to(
            &pod("ReplicaSet", "api-5d8f", Some("5d8f")),
            d,
            "api"
        ));
        assert!(!pod_belongs_to(
            &pod("ReplicaSet", "api-v2-5d8f", Some("5d8f")),
            d,
            "api"
        ));
        assert!(pod_belongs_to(
            &pod("ReplicaSet", "api-v2-5d8f", Some("5d8f")),
            d,
            "api-v2"
        ));
        assert!(pod_belongs_to(&pod("ReplicaSet", "api-x", None), d, "api"));
        let s = WorkloadKind::StatefulSet;
        assert!(pod_belongs_to(&pod("StatefulSet", "db", None), s, "db"));
        assert!(!pod_belongs_to(&pod("ReplicaSet", "db-1", None), s, "db"));
    }
}
