//! What the notifier does next for one incident, decided from the incident,
//! the channels and escalation policy it is wired to, and the clock alone.
//! The live notifier reads its watches into a [`Wiring`] and acts on the
//! [`Move`]; an offline replay on a virtual clock calls the same functions
//! with objects it holds in memory, so both decide alike.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;

use crate::{
    communication::{
        escalation::{self, Page},
        moments,
        outbox::{self, Channel},
    },
    crd::{
        CommunicationStatus, EscalationPolicy, Incident, NotificationChannel, NotifyEvent, Phase,
        RemediationPolicy,
    },
};

/// The longest an incident with messages or pages ahead sleeps.
pub const LOOK_AGAIN: Duration = Duration::from_secs(300);

/// The names an incident is wired to, before they are looked up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WiringNames {
    /// NotificationChannels, sorted, each once.
    pub channels: Vec<String>,
    /// The EscalationPolicy.
    pub escalation: Option<String>,
}

/// The names of the channels and the escalation policy an incident's
/// messages go to: its own and its RemediationPolicy's (`policy`, if it
/// exists).
pub fn wiring_names(incident: &Incident, policy: Option<&RemediationPolicy>) -> WiringNames {
    let from_policy = policy.and_then(|p| p.spec.communication.as_ref());
    let own = incident.spec.communication.as_ref();
    // Channels named, and those of people paged: they hear how it ends
    // (a PagerDuty alert is acknowledged and resolved where it was raised).
    let paged = incident
        .communication()
        .into_iter()
        .flat_map(|c| &c.outbox)
        .filter(|d| d.event == NotifyEvent::Paged)
        .map(|d| d.channel.clone());
    let mut channels: Vec<String> = from_policy
        .into_iter()
        .chain(own)
        .flat_map(|c| c.channels.iter().cloned())
        .chain(paged)
        .collect();
    channels.sort();
    channels.dedup();
    let escalation = own
        .and_then(|c| c.escalation_policy.clone())
        .or_else(|| from_policy.and_then(|c| c.escalation_policy.clone()));
    WiringNames {
        channels,
        escalation,
    }
}

/// The channels and escalation policy an incident's messages go to, as
/// found: a name with nothing behind it is left out.
#[derive(Clone, Debug, Default)]
pub struct Wiring {
    /// By name.
    pub channels: BTreeMap<String, Arc<NotificationChannel>>,
    pub escalation: Option<Arc<EscalationPolicy>>,
}

impl Wiring {
    /// Looks `names` up with `channel` and `escalation` (a watch's store,
    /// or a replay's objects).
    pub fn resolve(
        names: &WiringNames,
        channel: impl Fn(&str) -> Option<Arc<NotificationChannel>>,
        escalation: impl Fn(&str) -> Option<Arc<EscalationPolicy>>,
    ) -> Wiring {
        Wiring {
            channels: names
                .channels
                .iter()
                .filter_map(|name| Some((name.clone(), channel(name)?)))
                .collect(),
            escalation: names.escalation.as_deref().and_then(escalation),
        }
    }
}

/// What to do next for an incident, and what keeps its escalation policy
/// from paging (reported whatever the move).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub next: Move,
    pub problems: Vec<String>,
}

/// The notifier's next move for one incident.
#[derive(Clone, Debug, PartialEq)]
pub enum Move {
    /// Closed, with no post-incident report yet: write it first (the last
    /// message points to it), then record it with [`reported`].
    Report,
    /// Wired to nothing: nothing to do until the incident changes.
    AwaitChange,
    /// Messages are owed, people are to be paged, or paging moved on:
    /// record `next` before anything is sent; it is sent next time.
    Record {
        next: Box<CommunicationStatus>,
        /// How many messages (pages included) are added.
        messages: usize,
        /// The people paged now.
        pages: Vec<Page>,
    },
    /// Send the messages due, by channel, as indexes into the recorded
    /// outbox, oldest first. Each is marked as being sent just before it
    /// is (after its turn at the channel), but composed from the status as
    /// recorded: a marked one reads as in doubt. `wake` is when something
    /// is next due after them.
    Send {
        by_channel: BTreeMap<String, Vec<usize>>,
        wake: Duration,
    },
    /// Nothing to do before this long.
    Wait(Duration),
}

/// Decides the notifier's next move for `incident` at `now`.
pub fn plan(incident: &Incident, wiring: &Wiring, now: Timestamp) -> Decision {
    let decided = |next| Decision {
        next,
        problems: Vec::new(),
    };
    let recorded = incident.communication().cloned().unwrap_or_default();
    let closed = incident
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(Phase::is_closed);
    if closed && recorded.report.is_none() {
        return decided(Move::Report);
    }
    if wiring.channels.is_empty() && wiring.escalation.is_none() {
        return decided(Move::AwaitChange);
    }

    // First record what is owed and who is paged; it is sent next time.
    let channels: Vec<Channel<'_>> = wiring
        .channels
        .iter()
        .map(|(name, channel)| Channel {
            name,
            spec: &channel.spec,
        })
        .collect();
    let mut new = outbox::owed(incident, &channels, now);
    let mut escalation_state = recorded.escalation.clone();
    let mut pages = Vec::new();
    let mut problems = Vec::new();
    if let Some(policy) = &wiring.escalation {
        let planned = escalation::plan(incident, &policy.spec, now);
        problems = planned.problems;
        for page in planned.pages {
            let key = page.key();
            let known = recorded
                .outbox
                .iter()
                .any(|d| d.channel == page.channel && d.key == key);
            if !known {
                new.push(outbox::pending(&page.channel, NotifyEvent::Paged, key, now));
                pages.push(page);
            }
        }
        escalation_state = planned.state;
    }
    // Compared as status would keep it (whole seconds), so that a time
    // with a fraction never reads as a change to write again and again.
    let escalation_state = as_stored(escalation_state);
    if !new.is_empty() || escalation_state != recorded.escalation {
        let messages = new.len();
        let next = CommunicationStatus {
            escalation: escalation_state,
            ..outbox::record(&recorded, new)
        };
        return Decision {
            next: Move::Record {
                next: Box::new(next),
                messages,
                pages,
            },
            problems,
        };
    }

    // Then send what is due, each channel on its own.
    let mut by_channel: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for index in outbox::due(&recorded, |name| wiring.channels.contains_key(name), now) {
        if let Some(delivery) = recorded.outbox.get(index) {
            by_channel
                .entry(delivery.channel.clone())
                .or_default()
                .push(index);
        }
    }
    // Marking messages as being sent moves none of the times `wake` reads.
    let wake = wake(incident, wiring, &recorded, now);
    let next = if by_channel.is_empty() {
        Move::Wait(wake)
    } else {
        Move::Send { by_channel, wake }
    };
    Decision { next, problems }
}

/// The communication status once the post-incident report `name` is written.
pub fn reported(recorded: &CommunicationStatus, name: String) -> CommunicationStatus {
    CommunicationStatus {
        report: Some(name),
        ..recorded.clone()
    }
}

/// `value` as it reads back from the API server.
fn as_stored<T: serde::Serialize + serde::de::DeserializeOwned>(value: T) -> T {
    serde_json::to_value(&value)
        .ok()
        .and_then(|json| serde_json::from_value(json).ok())
        .unwrap_or(value)
}

/// When something is next due: a retry, a periodic update, the next page.
fn wake(
    incident: &Incident,
    wiring: &Wiring,
    recorded: &CommunicationStatus,
    now: Timestamp,
) -> Duration {
    let updates = wiring.channels.values().filter_map(|channel| {
        let every = channel.spec.updates.of(incident.spec.severity)?;
        moments::next_update(incident, every, now)
    });
    let page = recorded
        .escalation
        .as_ref()
        .filter(|e| e.stopped.is_none())
        .and_then(|e| e.next_at.as_ref().map(|t| t.0));
    let acknowledgement_expires = recorded
        .escalation
        .as_ref()
        .and_then(|e| e.acknowledgement_expires_at.as_ref().map(|t| t.0));
    let next = updates
        .chain(page)
        .chain(acknowledgement_expires)
        .chain(outbox::next_attempt(recorded))
        .min();
    next.and_then(|at| Duration::try_from(at.duration_since(now)).ok())
        .map_or(LOOK_AGAIN, |wait| {
            (wait + Duration::from_secs(1)).min(LOOK_AGAIN)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{communication::send::Outcome, crd::DeliveryState, notifier::compose};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn incident(phase: &str) -> Incident {
        let mut incident: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-down", "namespace": "hg"},
            "spec": {"title": "API down", "severity": "P0", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"},
                     "communication": {"channels": ["slack"], "escalationPolicy": "on-call"}},
            "status": {"phase": phase, "milestones": {"detectedAt": "2026-01-06T10:00:00Z"}}
        }))
        .unwrap();
        incident.metadata.uid = Some("u-1".into());
        incident
    }

    fn channel(name: &str, spec: serde_json::Value) -> Arc<NotificationChannel> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "healing-guard.io/v1alpha1", "kind": "NotificationChannel",
                "metadata": {"name": name, "namespace": "hg"}, "spec": spec
            }))
            .unwrap(),
        )
    }

    /// Slack for the team; John is paged on PagerDuty, which hears only
    /// the end besides his pages. Unacknowledged, he is paged again after
    /// ten minutes (a second pass through the one step).
    fn objects() -> (
        BTreeMap<String, Arc<NotificationChannel>>,
        Arc<EscalationPolicy>,
    ) {
        let channels = BTreeMap::from([
            (
                "slack".to_owned(),
                channel(
                    "slack",
                    serde_json::json!({"kind": "Slack", "secretRef": {"name": "slack"}}),
                ),
            ),
            (
                "pager-john".to_owned(),
                channel(
                    "pager-john",
                    serde_json::json!({"kind": "PagerDuty", "secretRef": {"name": "pd"},
                                       "events": ["Resolved"]}),
                ),
            ),
        ]);
        let policy = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "EscalationPolicy",
            "metadata": {"name": "on-call", "namespace": "hg"},
            "spec": {"people": [{"name": "john", "channel": "pager-john"}],
                     "roles": [{"name": "primary", "rotation": ["john"]}],
                     "steps": [{"role": "primary", "wait": "10m"}],
                     "repeat": 2}
        }))
        .unwrap();
        (channels, Arc::new(policy))
    }

    /// The wiring as a replay finds it: by the incident's names, in memory.
    fn wiring(incident: &Incident) -> Wiring {
        let (channels, policy) = objects();
        Wiring::resolve(
            &wiring_names(incident, None),
            |name| channels.get(name).cloned(),
            |name| (name == "on-call").then(|| Arc::clone(&policy)),
        )
    }

    fn apply(incident: &mut Incident, communication: CommunicationStatus) {
        if let Some(status) = incident.status.as_mut() {
            status.communication = Some(communication);
        }
    }

    #[test]
    fn an_opened_incident_is_recorded_then_sent_then_waits_for_the_next_page() {
        let mut incident = incident("Triggered");
        let now = at("2026-01-06T10:00:05Z");

        // Recorded first: the opening for Slack and John's page.
        let decided = plan(&incident, &wiring(&incident), now);
        assert!(decided.problems.is_empty());
        let Move::Record {
            next,
            messages,
            pages,
        } = decided.next
        else {
            panic!("expected Record, got {:?}", decided.next);
        };
        assert_eq!(messages, 2);
        let paged: Vec<(&str, &str, i32)> = pages
            .iter()
            .map(|p| (p.person.as_str(), p.channel.as_str(), p.step))
            .collect();
        assert_eq!(paged, [("john", "pager-john", 0)]);
        let recorded: Vec<(&str, NotifyEvent, &str)> = next
            .outbox
            .iter()
            .map(|d| (d.channel.as_str(), d.event, d.key.as_str()))
            .collect();
        assert_eq!(
            recorded,
            [
                ("slack", NotifyEvent::Opened, "Opened"),
                ("pager-john", NotifyEvent::Paged, "Page/0/0/john"),
            ]
        );
        assert!(
            next.outbox
                .iter()
                .all(|d| d.state == DeliveryState::Pending)
        );
        apply(&mut incident, *next);

        // Then sent, each channel on its own; John's channel is wired now.
        let wiring = wiring(&incident);
        assert_eq!(
            wiring.channels.keys().collect::<Vec<_>>(),
            ["pager-john", "slack"]
        );
        let Move::Send { by_channel, wake } = plan(&incident, &wiring, now).next else {
            panic!("expected Send");
        };
        assert_eq!(
            by_channel,
            BTreeMap::from([
                ("pager-john".to_owned(), vec![1]),
                ("slack".to_owned(), vec![0])
            ])
        );
        // The next page is due at 10:10:05: a sleep is never longer than
        // LOOK_AGAIN.
        assert_eq!(wake, LOOK_AGAIN);

        // Each composed as its channel receives it and taken as sent, from
        // the status as planned (as the live tasks do: marked as being
        // sent, a message would read as in doubt); then nothing is due
        // before the next page.
        let mut sent = incident.communication().cloned().unwrap();
        let mut told = Vec::new();
        for (name, indexes) in &by_channel {
            let spec = &wiring.channels[name].spec;
            for &index in indexes {
                let delivery = sent.outbox[index].clone();
                let composed =
                    compose::compose(&incident, spec, &spec.templates, &delivery, &sent, now)
                        .unwrap();
                told.push((
                    name.as_str(),
                    composed.text.lines().next().map(str::to_owned),
                ));
                let accepted = Outcome::Accepted { external_ref: None };
                sent.outbox[index] = outbox::settle(&delivery, &accepted, now);
            }
        }
        let opening = Some("🚨 INCIDENT ALERT - P0".to_owned());
        assert_eq!(told, [("pager-john", opening.clone()), ("slack", opening)]);
        apply(&mut incident, sent);
        assert_eq!(plan(&incident, &wiring, now).next, Move::Wait(LOOK_AGAIN));
        // Closer to it, the page (10:10:05) comes before the update (10:15).
        let later = at("2026-01-06T10:08:00Z");
        assert_eq!(
            plan(&incident, &wiring, later).next,
            Move::Wait(Duration::from_secs(126))
        );

        // Ten minutes on and unacknowledged, John is paged again.
        let Move::Record { pages, .. } = plan(&incident, &wiring, at("2026-01-06T10:10:05Z")).next
        else {
            panic!("expected Record");
        };
        let keys: Vec<String> = pages.iter().map(Page::key).collect();
        assert_eq!(keys, ["Page/1/0/john"]);
    }

    #[test]
    fn a_closed_incident_gets_its_report_before_any_message() {
        let mut incident = incident("Resolved");
        let now = at("2026-01-06T11:00:00Z");
        assert_eq!(plan(&incident, &wiring(&incident), now).next, Move::Report);
        // Recorded, the report is not written again: the messages go on.
        let recorded = incident.communication().cloned().unwrap_or_default();
        apply(&mut incident, reported(&recorded, "api-down-report".into()));
        let Move::Record { next, .. } = plan(&incident, &wiring(&incident), now).next else {
            panic!("expected Record");
        };
        assert_eq!(next.report.as_deref(), Some("api-down-report"));
    }

    #[test]
    fn an_incident_wired_to_nothing_waits_for_a_change() {
        let mut incident = incident("Triggered");
        incident.spec.communication = None;
        let wiring = wiring(&incident);
        assert!(wiring.channels.is_empty() && wiring.escalation.is_none());
        let now = at("2026-01-06T10:00:05Z");
        assert_eq!(plan(&incident, &wiring, now).next, Move::AwaitChange);
    }

    #[test]
    fn wiring_names_join_the_policys_the_incidents_and_the_paged_channels() {
        let mut incident = incident("Triggered");
        let policy: RemediationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
            "metadata": {"name": "guard", "namespace": "hg"},
            "spec": {"targets": [{"kind": "Deployment", "names": ["api"]}],
                     "rules": [{"name": "r", "when": {"symptom": "OOMKilled"}, "severity": "P1",
                                "type": "ServiceOutage", "actions": []}],
                     "communication": {"channels": ["ops", "slack"],
                                       "escalationPolicy": "policy-wide"}}
        }))
        .unwrap();
        apply(
            &mut incident,
            serde_json::from_value(serde_json::json!({"outbox": [
                {"channel": "pager-jane", "event": "Paged", "key": "Page/0/0/jane",
                 "state": "Sent", "attempts": 1, "recordedAt": "2026-01-06T10:00:00Z"}
            ]}))
            .unwrap(),
        );
        let names = wiring_names(&incident, Some(&policy));
        assert_eq!(names.channels, ["ops", "pager-jane", "slack"]);
        // The incident's own escalation policy wins.
        assert_eq!(names.escalation.as_deref(), Some("on-call"));
    }
}
