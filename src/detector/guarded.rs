//! What the detector guards: the workloads its policies select, the pod
//! watches that follow them, and which policy guards each. Kept in step
//! with policy and workload changes; each change re-evaluates only the
//! workloads it can concern.

use std::{collections::HashMap, sync::Arc};

use kube::ResourceExt;

use super::{
    Detector,
    sensing::{WorkloadId, id_of},
    watches::PodChange,
};
use crate::{crd::RemediationPolicy, k8s::shared::Change, workload::Workload};

impl Detector {
    /// Re-derives what is guarded from the policies, then re-evaluates everything.
    pub(super) fn policies_changed(&mut self) {
        self.policies_changed_in(None);
    }

    /// Re-derives what is guarded in `namespace` (every namespace: None)
    /// from the policies, then re-evaluates its guarded workloads: a policy
    /// added elsewhere costs the others nothing.
    pub(super) fn policies_changed_in(&mut self, namespace: Option<&str>) {
        let concerned = |id: &WorkloadId| namespace.is_none_or(|ns| id.1 == ns);
        let guarded: HashMap<WorkloadId, Workload> = self
            .watches
            .workloads(namespace)
            .into_iter()
            .filter(|workload| self.guarding_policy(workload).is_some())
            .map(|workload| (id_of(&workload), workload))
            .collect();
        let gone: Vec<WorkloadId> = self
            .workloads
            .keys()
            .filter(|id| concerned(id) && !guarded.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.forget(&id);
        }
        let ids: Vec<WorkloadId> = guarded.keys().cloned().collect();
        self.workloads.extend(guarded);
        self.sync_pod_watches();
        // Probes of valid policies only: an invalid policy is inert.
        let valid = self.valid_policies();
        self.prober.sync(&valid);
        for id in ids {
            self.evaluate(&id);
        }
    }

    /// A workload was created, changed or deleted.
    pub(super) fn workload_changed(&mut self, change: Change<Workload>) {
        match change {
            Change::Applied(workload) => {
                let workload = Workload::clone(&workload);
                let id = id_of(&workload);
                if self.guarding_policy(&workload).is_some() {
                    let selector = workload.pod_selector();
                    let previous = self.workloads.insert(id.clone(), workload);
                    // Most changes are status: the pod watches stay as they are.
                    if previous.and_then(|w| w.pod_selector()) != selector {
                        self.sync_pod_watches();
                    }
                    self.evaluate(&id);
                } else if self.workloads.contains_key(&id) {
                    self.forget(&id);
                    self.sync_pod_watches();
                }
            }
            Change::Deleted(workload) => {
                self.forget(&id_of(&workload));
                self.sync_pod_watches();
            }
            Change::Resynced => self.policies_changed(),
        }
    }

    pub(super) fn forget(&mut self, id: &WorkloadId) {
        self.workloads.remove(id);
        self.sensing.forget(id);
        if let Some(timer) = self.timer_keys.remove(id) {
            self.timers.remove(&timer);
        }
    }

    /// Starts a pod watch for every guarded workload's selector and stops the rest.
    pub(super) fn sync_pod_watches(&mut self) {
        let desired = self
            .workloads
            .values()
            .filter_map(|w| Some((w.pod_selector()?, w.selector()?)))
            .collect();
        self.pod_watches.sync(desired);
    }

    /// Evaluates the workloads a pod event concerns.
    pub(super) fn pod_event(&mut self, change: PodChange) {
        let ids: Vec<WorkloadId> = match self.pod_watches.apply(change) {
            None => return,
            Some(PodChange::Synced(namespace)) => self
                .workloads
                .keys()
                .filter(|id| id.1 == namespace)
                .cloned()
                .collect(),
            Some(PodChange::Pod(namespace, pod)) => self
                .workloads
                .iter()
                .filter(|(id, w)| id.1 == namespace && w.owns(pod.as_ref()))
                .map(|(id, _)| id.clone())
                .collect(),
        };
        for id in ids {
            self.evaluate(&id);
        }
    }

    /// The policy that guards a workload (see [`guarding_policy`]).
    pub(super) fn guarding_policy(&self, workload: &Workload) -> Option<Arc<RemediationPolicy>> {
        guarding_policy(self.watches.policies.store().state(), workload, |p| {
            self.ctx.checked.valid(p)
        })
    }

    /// The policies in force: an invalid one is inert (its Ready condition
    /// says why).
    pub(super) fn valid_policies(&self) -> Vec<Arc<RemediationPolicy>> {
        self.watches
            .policies
            .store()
            .state()
            .into_iter()
            .filter(|p| self.ctx.checked.valid(p))
            .collect()
    }
}

/// The policy that guards a workload: of `policies` those of its namespace
/// whose targets select it and that are `valid`, the highest priority,
/// then the first by name.
pub fn guarding_policy(
    policies: impl IntoIterator<Item = Arc<RemediationPolicy>>,
    workload: &Workload,
    valid: impl Fn(&RemediationPolicy) -> bool,
) -> Option<Arc<RemediationPolicy>> {
    let namespace = workload.namespace();
    let mut candidates: Vec<Arc<RemediationPolicy>> = policies
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|p| p.spec.targets.iter().any(|t| workload.is_selected_by(t)))
        // An invalid policy is inert: it says so in its Ready condition.
        .filter(|p| valid(p))
        .collect();
    candidates.sort_by_key(|p| p.spec.precedence(&p.name_any()));
    candidates.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::fixtures::{api, policy};

    fn named(name: &str, namespace: &str, priority: i32) -> Arc<RemediationPolicy> {
        let mut policy = policy();
        policy.metadata.name = Some(name.to_owned());
        policy.metadata.namespace = Some(namespace.to_owned());
        policy.spec.priority = priority;
        Arc::new(policy)
    }

    #[test]
    fn the_guarding_policy_is_of_the_namespace_then_by_priority_then_by_name() {
        let name = |policies: Vec<Arc<RemediationPolicy>>| {
            let checked = crate::validation::Checked::default();
            guarding_policy(policies, &api(2), |p| checked.valid(p)).map(|p| p.name_any())
        };
        assert_eq!(
            name(vec![named("b", "hg", 0), named("a", "hg", 0)]).as_deref(),
            Some("a")
        );
        assert_eq!(
            name(vec![named("a", "hg", 0), named("b", "hg", 5)]).as_deref(),
            Some("b")
        );
        assert_eq!(name(vec![named("a", "elsewhere", 9)]), None);
        let mut invalid = policy();
        // A rule name used twice: the policy is invalid.
        let twice = invalid.spec.rules[0].clone();
        invalid.spec.rules.push(twice);
        assert!(!crate::validation::policy(&invalid.spec).is_empty());
        assert_eq!(
            name(vec![Arc::new(invalid)]),
            None,
            "an invalid policy is inert"
        );
    }
}
