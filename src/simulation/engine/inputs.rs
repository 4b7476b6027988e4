//! The timeline's inputs: what changes in the simulated world at a time.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::Simulation;
use crate::{
    crd::{Incident, RemediationPolicy},
    signals::alerts::{Alert, Notification},
    simulation::{case::Input, cluster::PodsShow, world::State},
};

impl Simulation<'_> {
    /// A timeline input changes the world.
    pub(super) fn apply(&mut self, input: &Input, now: Timestamp) {
        let mut state = self.world.state();
        let namespace_of =
            |state: &State, name: &str| state.workloads.keys().find(|(_, _, n)| n == name).cloned();
        if let Some(pods) = &input.pods
            && let Some(key) = namespace_of(&state, &pods.workload)
            && let Some(sim) = state.workloads.get_mut(&key)
        {
            sim.show(
                PodsShow {
                    state: pods.state,
                    restarts: pods.restarts,
                    count: pods.count,
                },
                now,
            );
        }
        if let Some(available) = &input.available
            && let Some(key) = namespace_of(&state, &available.workload)
            && let Some(sim) = state.workloads.get_mut(&key)
        {
            sim.set_available(Some(available.replicas));
        }
        if let Some(name) = &input.rollout_stuck
            && let Some(key) = namespace_of(&state, name)
            && let Some(sim) = state.workloads.get_mut(&key)
        {
            sim.set_stuck(true);
        }
        if let Some(release) = &input.release
            && let Some(key) = namespace_of(&state, &release.workload)
            && let Some(sim) = state.workloads.get_mut(&key)
        {
            sim.release(&release.image, now);
        }
        if let Some(changed) = &input.config_changed
            && let Some(key) = namespace_of(&state, &changed.workload)
            && let Some(sim) = state.workloads.get_mut(&key)
        {
            sim.config_maps.insert(
                changed.config_map.clone(),
                crate::remediation::actions::ConfigAssumed::Changed,
            );
        }
        for probe in &input.probes {
            for run in self.probes.iter_mut().filter(|r| {
                r.probe.name == probe.name && probe.policy.as_ref().is_none_or(|p| *p == r.key.1)
            }) {
                run.passing = probe.passing;
                run.next = now;
            }
        }
        let responders = |state: &mut State, name: &str, change: &dyn Fn(&mut Incident)| {
            let found = state
                .incidents
                .iter()
                .find(|((_, n), _)| n == name)
                .map(|(_, i)| Incident::clone(i));
            if let Some(mut incident) = found {
                change(&mut incident);
                state.store(incident);
            }
        };
        let at = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
        if let Some(declared) = &input.declare {
            let mut incident = crate::crd::Incident::clone(declared);
            incident.status = None;
            if incident.metadata.namespace.is_none() {
                incident.metadata.namespace = state.policies.first().and_then(|p| p.namespace());
            }
            self.log.push(format!(
                "{:>6}s  {} declared",
                self.offset(now),
                incident.name_any()
            ));
            state.store(incident);
        }
        if let Some(ack) = &input.acknowledge {
            let mut value = ack.value.clone();
            value.at.get_or_insert(at.clone());
            responders(&mut state, &ack.incident, &|i| {
                i.spec.acknowledged = Some(value.clone());
            });
        }
        if let Some(approve) = &input.approve {
            responders(&mut state, &approve.incident, &|i| {
                i.spec.approvals.push(approve.value.clone());
            });
        }
        if let Some(resolve) = &input.resolve {
            responders(&mut state, &resolve.incident, &|i| {
                i.spec.resolution = Some(resolve.value.clone());
            });
        }
        if let Some(decline) = &input.decline {
            responders(&mut state, &decline.incident, &|i| {
                i.spec.declined = Some(decline.value.clone());
            });
        }
        drop(state);
        if !input.alerts.is_empty() {
            self.deliver_alerts(input, now);
        }
    }

    /// Alertmanager delivers the input's alerts.
    pub(super) fn deliver_alerts(&mut self, input: &Input, now: Timestamp) {
        let alerts = input
            .alerts
            .iter()
            .map(|alert| Alert {
                status: alert.status.clone(),
                labels: alert.labels.clone(),
                annotations: BTreeMap::new(),
                starts_at: self.start.to_string(),
                fingerprint: alert
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            })
            .collect();
        let notification = Notification {
            version: "4".into(),
            status: "firing".into(),
            receiver: "healing-guard-operator".into(),
            alerts,
        };
        let policies: Vec<Arc<RemediationPolicy>> = self
            .world
            .state()
            .policies
            .iter()
            .filter(|p| !p.spec.alerts.is_empty())
            .filter(|p| self.world.checked.valid(p))
            .cloned()
            .collect();
        for report in self.sensing.alert_reports(&notification, &policies, now) {
            let key = (report.namespace.clone(), report.key());
            self.sensing.queue(key, report);
        }
    }
}
