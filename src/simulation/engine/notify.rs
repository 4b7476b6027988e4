//! The notifier: records what is owed and sends what is due, each message
//! composed as its channel would receive it.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Simulation;
use crate::{
    crd::Incident,
    incident::world::World as _,
    notifier::{compose, plan as notify},
    simulation::expect::Sent,
};

impl Simulation<'_> {
    /// The notifier records and sends for each incident.
    pub(super) fn notify(&mut self, now: Timestamp) -> bool {
        let mut moved = false;
        let ids: Vec<(String, String)> = self.world.state().incidents.keys().cloned().collect();
        for id in ids {
            // Record, then send: two moves at most per round.
            for _ in 0..3 {
                let state = self.world.state();
                let Some(incident) = state.incidents.get(&id).cloned() else {
                    break;
                };
                let version = incident.resource_version().unwrap_or_default();
                let due = self.notifier_wakes.get(&id).is_some_and(|at| *at <= now);
                if self.notified.get(&id) == Some(&version) && !due {
                    break;
                }
                let policy = incident
                    .policy_name()
                    .and_then(|name| {
                        state.policies.iter().find(|p| {
                            p.name_any() == *name && p.namespace().as_deref() == Some(id.0.as_str())
                        })
                    })
                    .cloned();
                let names = notify::wiring_names(&incident, policy.as_deref());
                let wiring = notify::Wiring::resolve(
                    &names,
                    |name| {
                        state
                            .channels
                            .iter()
                            .find(|c| {
                                c.name_any() == name
                                    && c.namespace().as_deref() == Some(id.0.as_str())
                            })
                            .cloned()
                    },
                    |name| {
                        state
                            .escalations
                            .iter()
                            .find(|e| {
                                e.name_any() == name
                                    && e.namespace().as_deref() == Some(id.0.as_str())
                            })
                            .cloned()
                    },
                );
                drop(state);
                let decided = notify::plan(&incident, &wiring, self.world.now());
                self.notified.insert(id.clone(), version);
                match decided.next {
                    notify::Move::Report => {
                        let recorded = incident.communication().cloned().unwrap_or_default();
                        let next = notify::reported(
                            &recorded,
                            crate::communication::report::config_map_name(&incident),
                        );
                        self.store_communication(&incident, next);
                        moved = true;
                    }
                    notify::Move::AwaitChange => {
                        self.notifier_wakes.remove(&id);
                        break;
                    }
                    notify::Move::Record { next, .. } => {
                        self.store_communication(&incident, *next);
                        moved = true;
                    }
                    notify::Move::Send { by_channel, wake } => {
                        self.send(&incident, &wiring, &by_channel, now);
                        self.notifier_wakes
                            .insert(id.clone(), now.checked_add(wake).unwrap_or(now));
                        moved = true;
                    }
                    notify::Move::Wait(wait) => {
                        self.notifier_wakes
                            .insert(id.clone(), now.checked_add(wait).unwrap_or(now));
                        break;
                    }
                }
            }
        }
        moved
    }

    pub(super) fn store_communication(
        &self,
        incident: &Incident,
        next: crate::crd::CommunicationStatus,
    ) {
        let mut state = self.world.state();
        let id = (
            incident.namespace().unwrap_or_default(),
            incident.name_any(),
        );
        let Some(current) = state.incidents.get(&id).cloned() else {
            return;
        };
        let mut changed = Incident::clone(&current);
        changed
            .status
            .get_or_insert_with(Default::default)
            .communication = Some(next);
        state.store(changed);
    }

    /// Sends what is due, each message as its channel would receive it;
    /// every receiver takes it.
    pub(super) fn send(
        &mut self,
        incident: &Incident,
        wiring: &notify::Wiring,
        by_channel: &BTreeMap<String, Vec<usize>>,
        now: Timestamp,
    ) {
        let mut recorded = incident.communication().cloned().unwrap_or_default();
        let at = self.offset(now);
        for (name, indexes) in by_channel {
            let Some(channel) = wiring.channels.get(name) else {
                continue;
            };
            let templates = channel.spec.templates.clone();
            for &index in indexes {
                let Some(delivery) = recorded.outbox.get(index).cloned() else {
                    continue;
                };
                let outcome = match compose::compose(
                    incident,
                    &channel.spec,
                    &templates,
                    &delivery,
                    &recorded,
                    now,
                ) {
                    Ok(composed) => {
                        let text = if delivery.event == crate::crd::NotifyEvent::Paged {
                            delivery
                                .key
                                .rsplit('/')
                                .next()
                                .unwrap_or_default()
                                .to_owned()
                        } else {
                            composed.text.clone()
                        };
                        self.sent.push(Sent {
                            at,
                            channel: name.clone(),
                            incident: incident.name_any(),
                            event: delivery.event,
                            text,
                        });
                        self.log.push(format!(
                            "{at:>6}s  {} told {name}: {}",
                            incident.name_any(),
                            delivery.event
                        ));
                        receiver_answer(&composed, incident)
                    }
                    Err(outcome) => outcome,
                };
                if let Some(slot) = recorded.outbox.get_mut(index) {
                    *slot = crate::communication::outbox::settle(&delivery, &outcome, now);
                }
            }
        }
        self.store_communication(incident, recorded);
    }
}

/// What a receiver answers a message it takes: a status page names the
/// incident it opened, so the next update goes to it.
fn receiver_answer(
    composed: &compose::Composed,
    incident: &Incident,
) -> crate::communication::send::Outcome {
    let external_ref = match &composed.request {
        compose::Request::StatusPage { opened, .. } => Some(
            opened
                .clone()
                .unwrap_or_else(|| format!("simulated-{}", incident.name_any())),
        ),
        _ => None,
    };
    crate::communication::send::Outcome::Accepted { external_ref }
}
