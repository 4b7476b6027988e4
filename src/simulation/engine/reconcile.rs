//! The incident pipeline's reconciles, woken as the live controller's
//! watches wake them.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Simulation;
use crate::crd::Incident;

impl Simulation<'_> {
    /// Reconciles each incident that changed, is due, or whose world moved.
    pub(super) fn reconcile_incidents(&mut self, now: Timestamp, world_moved: bool) -> bool {
        let mut moved = false;
        let (incidents, policies) = {
            let state = self.world.state();
            let incidents: Vec<Arc<Incident>> = state.incidents.values().cloned().collect();
            (incidents, state.policies.clone())
        };
        let id_of = |i: &Incident| (i.namespace().unwrap_or_default(), i.name_any());
        // As the live controller's watches map them: an incident's change
        // wakes the others on its target, and those whose policy depends
        // on its target.
        let changed: Vec<&Arc<Incident>> = incidents
            .iter()
            .filter(|i| self.reconciled.get(&id_of(i)) != i.resource_version().as_ref())
            .collect();
        let woken = |incident: &Incident| {
            let namespace = incident.namespace();
            let depends_on = |target: &crate::crd::WorkloadRef| {
                incident.policy_name().is_some_and(|name| {
                    policies.iter().any(|p| {
                        p.name_any() == *name
                            && p.namespace() == namespace
                            && p.spec.depends_on.contains(target)
                    })
                })
            };
            incident.is_open()
                && changed.iter().any(|other| {
                    other.namespace() == namespace
                        && other.name_any() != incident.name_any()
                        && (other.spec.target == incident.spec.target
                            || depends_on(&other.spec.target))
                })
        };
        let chosen: Vec<Arc<Incident>> = incidents
            .iter()
            .filter(|incident| {
                let id = id_of(incident);
                let changed = self.reconciled.get(&id) != incident.resource_version().as_ref();
                let due = self.incident_wakes.get(&id).is_some_and(|at| *at <= now);
                changed || due || (world_moved && incident.is_open()) || woken(incident)
            })
            .cloned()
            .collect();
        for incident in chosen {
            let id = id_of(&incident);
            let version = incident.resource_version().unwrap_or_default();
            let before = incident.status.clone();
            let requeue = futures::executor::block_on(crate::incident::reconcile_in(
                &self.world,
                Arc::clone(&incident),
            ));
            let latest = self.world.state().incidents.get(&id).cloned();
            let after_version = latest
                .as_ref()
                .and_then(|i| i.resource_version())
                .unwrap_or_default();
            if let Some(latest) = &latest {
                self.note_changes(now, &id.1, before.as_ref(), latest);
            }
            moved |= after_version != version;
            self.reconciled.insert(id.clone(), after_version);
            match requeue {
                Ok(Some(wait)) => {
                    self.incident_wakes
                        .insert(id, now.checked_add(wait).unwrap_or(now));
                }
                Ok(None) => {
                    self.incident_wakes.remove(&id);
                }
                Err(error) => {
                    self.log.push(format!(
                        "{:>6}s  reconcile of {} failed: {error}",
                        self.offset(now),
                        id.1
                    ));
                    self.incident_wakes.insert(
                        id,
                        now.checked_add(std::time::Duration::from_secs(5))
                            .unwrap_or(now),
                    );
                }
            }
        }
        moved
    }

    /// Lines for what a reconcile changed: the phase, each step's result.
    pub(super) fn note_changes(
        &mut self,
        now: Timestamp,
        name: &str,
        before: Option<&crate::crd::IncidentStatus>,
        latest: &Incident,
    ) {
        let Some(after) = latest.status.as_ref() else {
            return;
        };
        let at = self.offset(now);
        if before.and_then(|b| b.phase) != after.phase {
            self.log.push(format!(
                "{at:>6}s  {name} phase {}",
                after.phase.map(|p| p.as_str()).unwrap_or("-")
            ));
        }
        for (index, step) in after.steps.iter().enumerate() {
            let was = before.and_then(|b| b.steps.get(index)).map(|s| s.result);
            if was != Some(step.result) {
                self.log.push(format!(
                    "{at:>6}s  {name} step {} ({}) {}{}",
                    step.name,
                    step.action,
                    step.result.as_str(),
                    step.message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
}
