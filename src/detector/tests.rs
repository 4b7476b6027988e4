//! The detector on a virtual clock: what it senses and what it writes go
//! through the very functions the live detector calls (`Sensing`,
//! `WriteMemory`), against an in-memory list of incidents that plays the
//! API server's part.

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::{
    fixtures::{api, at, pod, policy},
    sensing::Sensing,
    write_plan::{DetectionPatch, DetectionPlan, WriteMemory, WritePlan},
};
use crate::{
    crd::{DetectionStatus, Incident, Phase, RemediationPolicy},
    pod::PodFacts,
};

struct World {
    policy: RemediationPolicy,
    sensing: Sensing,
    memory: WriteMemory,
    incidents: Vec<Arc<Incident>>,
}

impl World {
    fn new() -> Self {
        World {
            policy: policy(),
            sensing: Sensing::default(),
            memory: WriteMemory::default(),
            incidents: Vec::new(),
        }
    }

    fn find(&self, name: &str) -> Option<Arc<Incident>> {
        find(&self.incidents, name)
    }

    /// The detector looks at `api` (`available` of 2 replicas) and its
    /// `pods` at `now`, then writes what it found.
    fn look(&mut self, available: i32, pods: &[PodFacts], now: Timestamp) {
        let (memory, incidents) = (&self.memory, &self.incidents);
        let open = |namespace: &str, key: &str| {
            memory.open_uncleared(namespace, &same_key(incidents, namespace, key))
        };
        let recheck = self
            .sensing
            .evaluate(&api(available), &self.policy, pods, open, now);
        assert!(recheck.is_none_or(|at| at > now));
        self.flush(now);
    }

    /// Writes the pending reports, as the live detector's flush does.
    fn flush(&mut self, now: Timestamp) {
        for (key, report) in self.sensing.take_pending() {
            let same_key = same_key(&self.incidents, &key.0, &key.1);
            let incidents = &self.incidents;
            let stored = |name: &str| find(incidents, name);
            let plan = match self.memory.plan(&report, &same_key, stored, now) {
                WritePlan::Nothing => continue,
                WritePlan::Detection(plan) => plan,
                WritePlan::Create(incident) => {
                    let name = incident.name_any();
                    self.incidents.push(Arc::new(*incident));
                    self.memory.created(&report, &name);
                    let stored = self.find(&name);
                    self.memory
                        .plan_detection(&report, &name, false, stored.as_deref(), now)
                }
            };
            match plan {
                DetectionPlan::Unchanged => {}
                DetectionPlan::Deferred => self.sensing.queue(key, report),
                DetectionPlan::Patch(patch) => {
                    self.apply(&patch);
                    self.memory.wrote(*patch, now);
                }
            }
        }
    }

    fn apply(&mut self, patch: &DetectionPatch) {
        let incident = self
            .incidents
            .iter_mut()
            .find(|i| i.name_any() == patch.name)
            .unwrap();
        let status = Arc::make_mut(incident).status.get_or_insert_default();
        status.detection = Some(patch.detection.clone());
    }

    /// The lifecycle resolves an incident (and acts on its reopens).
    fn resolve(&mut self, name: &str, now: Timestamp) {
        let incident = self
            .incidents
            .iter_mut()
            .find(|i| i.name_any() == name)
            .unwrap();
        let status = Arc::make_mut(incident).status.get_or_insert_default();
        status.phase = Some(Phase::Resolved);
        status.milestones.resolved_at = Some(Time(now));
        status.reopens_handled = status.detection.as_ref().map(|d| d.reopens);
    }

    fn detection(&self, name: &str) -> DetectionStatus {
        let incident = self.find(name).unwrap();
        incident.status.as_ref().unwrap().detection.clone().unwrap()
    }
}

/// The incidents of `namespace` that carry `key`.
fn same_key(incidents: &[Arc<Incident>], namespace: &str, key: &str) -> Vec<Arc<Incident>> {
    incidents
        .iter()
        .filter(|i| {
            i.namespace().as_deref() == Some(namespace)
                && i.spec.source.dedup_key.as_deref() == Some(key)
        })
        .cloned()
        .collect()
}

fn find(incidents: &[Arc<Incident>], name: &str) -> Option<Arc<Incident>> {
    incidents.iter().find(|i| i.name_any() == name).cloned()
}

fn crashing(restarts: i32) -> [PodFacts; 2] {
    [pod("api-1", restarts, true), pod("api-2", 0, false)]
}

fn healthy() -> [PodFacts; 2] {
    [pod("api-1", 7, false), pod("api-2", 0, false)]
}

#[test]
fn a_crash_loop_on_a_virtual_clock_opens_counts_clears_and_reopens_its_incident() {
    let mut world = World::new();
    world.look(1, &crashing(5), at(0));
    assert_eq!(world.incidents.len(), 1);
    let first = world.detection("api-crashloop");
    assert_eq!(first.occurrences, 1);
    assert_eq!(first.first_seen_at, Some(Time(at(0))));

    // It restarts again 4 s later: counted, but written no sooner than
    // 10 s after the last write.
    world.look(1, &crashing(6), at(4));
    assert_eq!(world.detection("api-crashloop").occurrences, 1);
    assert_eq!(world.sensing.pending().len(), 1, "the repeat waits");
    world.look(1, &crashing(6), at(11));
    let counted = world.detection("api-crashloop");
    assert_eq!(counted.occurrences, 2);
    assert_eq!(counted.last_seen_at, Some(Time(at(4))));
    assert!(world.sensing.pending().is_empty());

    // Healthy again: the signal is marked cleared at once.
    world.look(2, &healthy(), at(20));
    assert_eq!(
        world.detection("api-crashloop").cleared_at,
        Some(Time(at(20)))
    );

    // Resolved, and back within the reopen window: the same incident reopens.
    world.resolve("api-crashloop", at(60));
    world.look(1, &crashing(7), at(120));
    assert_eq!(world.incidents.len(), 1);
    let reopened = world.detection("api-crashloop");
    assert_eq!(
        (reopened.reopens, reopened.occurrences, reopened.cleared_at),
        (1, 3, None)
    );
    assert_eq!(reopened.last_reopened_at, Some(Time(at(120))));

    // Cleared and resolved again; back after the window: a new incident,
    // linked to the old one.
    world.look(2, &healthy(), at(150));
    world.resolve("api-crashloop", at(200));
    world.look(1, &crashing(8), at(200 + 1801));
    assert_eq!(world.incidents.len(), 2);
    let second = world.find("api-crashloop-2").unwrap();
    assert_eq!(
        second.spec.source.previous_incident.as_deref(),
        Some("api-crashloop")
    );
    assert_eq!(world.detection("api-crashloop-2").occurrences, 1);
}
