//! Which messages each channel is owed: the incident's moments the channel
//! wants and has not been told of yet, recorded Pending before any send.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
};

use super::{
    moments::{Moment, moments},
    send::{MAX_ATTEMPTS, Outcome},
};
use crate::crd::{
    CommunicationStatus, Delivery, DeliveryState, Incident, NotificationChannelSpec, NotifyEvent,
};

/// The most messages kept in an incident's outbox; the oldest sent ones go
/// first, and are counted.
pub const MAX_OUTBOX: usize = 100;

/// A channel by name.
#[derive(Clone, Copy, Debug)]
pub struct Channel<'a> {
    pub name: &'a str,
    pub spec: &'a NotificationChannelSpec,
}

/// A message to `channel` recorded at `now`, not yet sent.
pub fn pending(channel: &str, event: NotifyEvent, key: String, now: Timestamp) -> Delivery {
    Delivery {
        channel: channel.to_owned(),
        event,
        key,
        state: DeliveryState::Pending,
        attempts: 0,
        recorded_at: Time(now),
        next_attempt_at: None,
        sending_since: None,
        sent_at: None,
        last_error: None,
        external_ref: None,
    }
}

/// Whether a channel wants to hear about this incident at all.
pub fn in_scope(channel: &NotificationChannelSpec, incident: &Incident) -> bool {
    let scope = &channel.scope;
    let spec = &incident.spec;
    let policy = incident.policy_name();
    (scope.severities.is_empty() || scope.severities.contains(&spec.severity))
        && (scope.types.is_empty() || scope.types.contains(&spec.incident_type))
        && (scope.policies.is_empty() || policy.is_some_and(|p| scope.policies.contains(p)))
        && scope.selector.as_ref().is_none_or(|selector| {
            Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(incident.labels()))
        })
}

/// The messages to record now: for each channel in scope, each moment it
/// wants and has no record of. A channel that has been told nothing yet
/// (added mid-incident) is told the latest moment only, not the history.
pub fn owed(incident: &Incident, channels: &[Channel<'_>], now: Timestamp) -> Vec<Delivery> {
    let recorded = incident
        .communication()
        .map(|c| c.outbox.as_slice())
        .unwrap_or_default();
    // Moments whose records were dropped to bound the outbox were told.
    let omitted_through = incident
        .communication()
        .and_then(|c| c.omitted_through.as_ref())
        .map(|t| t.0);
    let mut new = Vec::new();
    for channel in channels {
        if !in_scope(channel.spec, incident) {
            continue;
        }
        let every = channel.spec.updates.of(incident.spec.severity);
        let due: Vec<Moment> = moments(incident, every, now)
            .into_iter()
            .filter(|m| channel.spec.events.contains(&m.event))
            .filter(|m| omitted_through.is_none_or(|through| m.at > through))
            .filter(|m| {
                !recorded
                    .iter()
                    .any(|d| d.channel == channel.name && d.key == m.key)
            })
            .collect();
        let told_before = recorded.iter().any(|d| d.channel == channel.name);
        let chosen: Vec<Moment> = if told_before {
            due
        } else {
            // A channel that has heard nothing (added mid-incident, or
            // first looked at after a step already ran) hears the opening,
            // which introduces the incident, then only the latest moment.
            let opening = due.iter().position(|m| m.event == NotifyEvent::Opened);
            let last = due.len().checked_sub(1);
            due.into_iter()
                .enumerate()
                .filter(|(index, _)| Some(*index) == opening || Some(*index) == last)
                .map(|(_, moment)| moment)
                .collect()
        };
        new.extend(
            chosen
                .into_iter()
                .map(|moment| pending(channel.name, moment.event, moment.key, now)),
        );
    }
    new
}

/// The communication status with `new` recorded, bounded to [`MAX_OUTBOX`]
/// (the oldest finished messages leave first; pending ones always stay).
pub fn record(status: &CommunicationStatus, new: Vec<Delivery>) -> CommunicationStatus {
    let mut next = status.clone();
    next.outbox.extend(new);
    while next.outbox.len() > MAX_OUTBOX {
        let Some(oldest_done) = next
            .outbox
            .iter()
            .position(|d| d.state != DeliveryState::Pending)
        else {
            break;
        };
        let dropped = next.outbox.remove(oldest_done);
        next.omitted = next.omitted.saturating_add(1);
        if next
            .omitted_through
            .as_ref()
            .is_none_or(|through| through.0 < dropped.recorded_at.0)
        {
            next.omitted_through = Some(dropped.recorded_at);
        }
    }
    next
}

/// The pending messages to attempt now: due (no wait, or its wait over),
/// to channels that exist, oldest first. A channel hears its messages in
/// order: one that waits for a retry holds back the later ones of its
/// channel (a status page must not go to resolved before monitoring). How
/// fast a channel is sent to is the process-wide
/// [`super::channel_limits::ChannelLimits`]'s to pace, across incidents.
/// Indexes into the outbox.
pub fn due(
    status: &CommunicationStatus,
    exists: impl Fn(&str) -> bool,
    now: Timestamp,
) -> Vec<usize> {
    let mut chosen = Vec::new();
    let mut held: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for (index, delivery) in status.outbox.iter().enumerate() {
        if delivery.state != DeliveryState::Pending || held.contains(delivery.channel.as_str()) {
            continue;
        }
        if delivery
            .next_attempt_at
            .as_ref()
            .is_some_and(|at| at.0 > now)
        {
            held.insert(delivery.channel.as_str());
            continue;
        }
        // A channel that is gone sends nothing; its messages wait for it.
        if exists(&delivery.channel) {
            chosen.push(index);
        }
    }
    chosen
}

/// Whether an attempt at this message began and its outcome was never
/// written (the operator stopped while sending).
pub fn in_doubt(delivery: &Delivery) -> bool {
    delivery.state == DeliveryState::Pending && delivery.sending_since.is_some()
}

/// A message after one attempt (or after finding that an earlier one's
/// fate is unknown and it must not be repeated).
pub fn settle(delivery: &Delivery, outcome: &Outcome, now: Timestamp) -> Delivery {
    let mut next = delivery.clone();
    next.sending_since = None;
    next.next_attempt_at = None;
    if !matches!(outcome, Outcome::Unconfirmed { .. }) {
        next.attempts = next.attempts.saturating_add(1);
    }
    match outcome {
        Outcome::Accepted { external_ref } => {
            next.state = DeliveryState::Sent;
            next.sent_at = Some(Time(now));
            next.last_error = None;
            if external_ref.is_some() {
                next.external_ref = external_ref.clone();
            }
        }
        Outcome::Retry { after, why } | Outcome::Throttled { after, why } => {
            next.last_error = Some(why.clone());
            if next.attempts >= MAX_ATTEMPTS {
                next.state = DeliveryState::Failed;
            } else {
                next.next_attempt_at = now.checked_add(*after).ok().map(Time);
            }
        }
        Outcome::Refused { why } => {
            next.state = DeliveryState::Failed;
            next.last_error = Some(why.clone());
        }
        Outcome::Unconfirmed { why } => {
            next.state = DeliveryState::Unconfirmed;
            next.last_error = Some(why.clone());
        }
    }
    next
}

/// When a pending message is next due, if one waits.
pub fn next_attempt(status: &CommunicationStatus) -> Option<Timestamp> {
    status
        .outbox
        .iter()
        .filter(|d| d.state == DeliveryState::Pending)
        .filter_map(|d| d.next_attempt_at.as_ref().map(|t| t.0))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NotifyEvent;

    fn channel(yaml: &str) -> NotificationChannelSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn incident(outbox: serde_json::Value) -> Incident {
        let mut incident: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-down", "namespace": "hg", "labels": {"team": "api"}},
            "spec": {"title": "API down", "severity": "P0", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"}, "policy": "guard"},
            "status": {"phase": "Acknowledged",
                       "milestones": {"detectedAt": "2026-01-01T00:00:00Z",
                                      "acknowledgedAt": "2026-01-01T00:05:00Z"},
                       "communication": {"outbox": outbox}}
        }))
        .unwrap();
        incident.metadata.uid = Some("u-1".into());
        incident
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn each_channel_is_told_each_moment_once() {
        let slack = channel("kind: Slack\nsecretRef: {name: s}\n");
        let pager = channel(
            "kind: PagerDuty\nsecretRef: {name: p}\nevents: [Opened, Resolved]\nscope: {severities: [P0, P1]}\n",
        );
        let other_team = channel(
            "kind: Webhook\nsecretRef: {name: w}\nscope: {selector: {matchLabels: {team: web}}}\n",
        );
        let channels = [
            Channel {
                name: "slack",
                spec: &slack,
            },
            Channel {
                name: "pager",
                spec: &pager,
            },
            Channel {
                name: "web",
                spec: &other_team,
            },
        ];
        let sent = |channel: &str, key: &str| {
            serde_json::json!({"channel": channel, "event": "Opened", "key": key, "state": "Sent",
                               "attempts": 1, "recordedAt": "2026-01-01T00:00:01Z"})
        };
        let told = incident(serde_json::json!([
            sent("slack", "Opened"),
            sent("pager", "Opened")
        ]));
        let new = owed(&told, &channels, at("2026-01-01T00:10:00Z"));
        let got: Vec<(&str, &str)> = new
            .iter()
            .map(|d| (d.channel.as_str(), d.key.as_str()))
            .collect();
        assert_eq!(
            got,
            [("slack", "Acknowledged")],
            "pager wants no acks; web is out of scope"
        );
        assert_eq!(new[0].state, DeliveryState::Pending);

        // Recorded: nothing more is owed, whatever the clock says short of an update.
        let after = CommunicationStatus {
            outbox: told.status.clone().unwrap().communication.unwrap().outbox,
            ..CommunicationStatus::default()
        };
        let mut told_again = told.clone();
        told_again.status.as_mut().unwrap().communication = Some(record(&after, new));
        assert!(owed(&told_again, &channels, at("2026-01-01T00:12:00Z")).is_empty());
        // Fifteen minutes in, the P0 update.
        let update = owed(&told_again, &channels, at("2026-01-01T00:15:00Z"));
        assert_eq!(update.len(), 1);
        assert_eq!(
            (update[0].event, update[0].key.as_str()),
            (NotifyEvent::Update, "Update/1")
        );
    }

    #[test]
    fn a_channel_that_has_heard_nothing_hears_the_opening_then_the_latest_only() {
        let slack = channel("kind: Slack\nsecretRef: {name: s}\n");
        let channels = [Channel {
            name: "slack",
            spec: &slack,
        }];
        let new = owed(
            &incident(serde_json::json!([])),
            &channels,
            at("2026-01-01T00:10:00Z"),
        );
        let keys: Vec<&str> = new.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["Opened", "Acknowledged"]);
        // A channel that does not take the opening hears the latest only.
        let quiet =
            channel("kind: Slack\nsecretRef: {name: s}\nevents: [Acknowledged, Resolved]\n");
        let channels = [Channel {
            name: "slack",
            spec: &quiet,
        }];
        let new = owed(
            &incident(serde_json::json!([])),
            &channels,
            at("2026-01-01T00:10:00Z"),
        );
        let keys: Vec<&str> = new.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["Acknowledged"]);
    }

    #[test]
    fn the_outbox_is_bounded_and_keeps_what_is_pending() {
        let delivery = |n: usize, state: DeliveryState| Delivery {
            channel: "c".into(),
            event: NotifyEvent::Update,
            key: format!("Update/{n}"),
            state,
            attempts: 1,
            recorded_at: Time(at("2026-01-01T00:00:00Z")),
            next_attempt_at: None,
            sending_since: None,
            sent_at: None,
            last_error: None,
            external_ref: None,
        };
        let full = CommunicationStatus {
            outbox: (0..MAX_OUTBOX)
                .map(|n| delivery(n, DeliveryState::Sent))
                .collect(),
            ..CommunicationStatus::default()
        };
        let next = record(&full, vec![delivery(1000, DeliveryState::Pending)]);
        assert_eq!(next.outbox.len(), MAX_OUTBOX);
        assert_eq!(next.omitted, 1);
        assert_eq!(next.outbox[0].key, "Update/1", "the oldest sent one left");
        assert_eq!(next.outbox.last().unwrap().key, "Update/1000");
        assert_eq!(
            next.omitted_through,
            Some(Time(at("2026-01-01T00:00:00Z"))),
            "what was dropped is remembered as told"
        );
    }

    #[test]
    fn sends_what_is_due_in_order_per_channel_and_settles_it() {
        let now = at("2026-01-01T00:10:00Z");
        let pending = |channel: &str, key: &str, wait: Option<&str>| Delivery {
            channel: channel.into(),
            event: NotifyEvent::Update,
            key: key.into(),
            state: DeliveryState::Pending,
            attempts: 0,
            recorded_at: Time(at("2026-01-01T00:00:00Z")),
            next_attempt_at: wait.map(|w| Time(at(w))),
            sending_since: None,
            sent_at: None,
            last_error: None,
            external_ref: None,
        };
        let sent_recently = Delivery {
            state: DeliveryState::Sent,
            sent_at: Some(Time(at("2026-01-01T00:09:30Z"))),
            ..pending("slow", "Opened", None)
        };
        let status = CommunicationStatus {
            outbox: vec![
                sent_recently,
                pending("slow", "Update/1", None),
                pending("fast", "Update/1", None),
                pending("fast", "Update/2", Some("2026-01-01T00:11:00Z")),
                pending("gone", "Update/1", None),
            ],
            ..CommunicationStatus::default()
        };
        let exists = |channel: &str| channel != "gone";
        // Pacing is the channel's limiter's, across incidents: both
        // channels' first pending go; fast's second waits for its retry;
        // gone has no channel.
        assert_eq!(due(&status, exists, now), [1, 2]);
        // A message waiting for its retry holds back the later ones of its channel.
        let mut in_order = status.clone();
        in_order.outbox.swap(2, 3);
        assert_eq!(due(&in_order, exists, now), [1]);
        assert_eq!(next_attempt(&status), Some(at("2026-01-01T00:11:00Z")));

        let message = &status.outbox[2];
        let sent = settle(
            message,
            &Outcome::Accepted {
                external_ref: Some("x".into()),
            },
            now,
        );
        assert_eq!((sent.state, sent.attempts), (DeliveryState::Sent, 1));
        let later = settle(
            message,
            &Outcome::Retry {
                after: std::time::Duration::from_secs(30),
                why: "503".into(),
            },
            now,
        );
        assert_eq!(later.state, DeliveryState::Pending);
        assert_eq!(
            later.next_attempt_at,
            Some(Time(at("2026-01-01T00:10:30Z")))
        );
        let last = Delivery {
            attempts: MAX_ATTEMPTS - 1,
            ..message.clone()
        };
        let given_up = settle(
            &last,
            &Outcome::Retry {
                after: std::time::Duration::from_secs(30),
                why: "503".into(),
            },
            now,
        );
        assert_eq!(given_up.state, DeliveryState::Failed);
        let throttled = settle(
            message,
            &Outcome::Throttled {
                after: std::time::Duration::from_secs(2),
                why: "429: slow down".into(),
            },
            now,
        );
        assert_eq!(
            (
                throttled.state,
                throttled.attempts,
                throttled.next_attempt_at
            ),
            (
                DeliveryState::Pending,
                1,
                Some(Time(at("2026-01-01T00:10:02Z")))
            )
        );
        let refused = settle(
            message,
            &Outcome::Refused {
                why: "400: no".into(),
            },
            now,
        );
        assert_eq!(
            (refused.state, refused.last_error.as_deref()),
            (DeliveryState::Failed, Some("400: no"))
        );
    }

    #[test]
    fn an_attempt_is_marked_before_it_is_sent_and_its_mark_cleared_with_its_outcome() {
        let now = at("2026-01-01T00:10:00Z");
        let message = pending("slack", NotifyEvent::Opened, "Opened".into(), now);
        let status = CommunicationStatus {
            outbox: vec![message.clone()],
            ..CommunicationStatus::default()
        };
        assert!(!in_doubt(&status.outbox[0]), "recorded, never attempted");
        let mut begun = status.clone();
        begun.outbox[0].sending_since = Some(Time(now));
        let marked = &begun.outbox[0];
        assert!(in_doubt(marked), "read back after a crash, it is in doubt");
        assert_eq!(due(&begun, |_| true, now), [0], "and still due");

        let sent = settle(marked, &Outcome::Accepted { external_ref: None }, now);
        assert!(!in_doubt(&sent) && sent.sending_since.is_none());
        let retry = settle(
            marked,
            &Outcome::Retry {
                after: std::time::Duration::from_secs(5),
                why: "503".into(),
            },
            now,
        );
        assert!(!in_doubt(&retry), "a known failure is not in doubt");
        let unconfirmed = settle(
            marked,
            &Outcome::Unconfirmed {
                why: "cannot tell".into(),
            },
            now,
        );
        assert_eq!(
            (unconfirmed.state, unconfirmed.attempts),
            (DeliveryState::Unconfirmed, 0),
            "not sent again, and no attempt counted"
        );
        assert!(
            due(
                &CommunicationStatus {
                    outbox: vec![unconfirmed],
                    ..CommunicationStatus::default()
                },
                |_| true,
                now
            )
            .is_empty()
        );
    }

    #[test]
    fn moments_whose_records_were_dropped_are_not_owed_again() {
        let slack = channel("kind: Slack\nsecretRef: {name: s}\n");
        let channels = [Channel {
            name: "slack",
            spec: &slack,
        }];
        // Opened and Acknowledged were told; their records left a full outbox.
        let mut trimmed = incident(serde_json::json!([
            {"channel": "slack", "event": "Update", "key": "Update/9", "state": "Sent",
             "attempts": 1, "recordedAt": "2026-01-01T00:09:00Z"}
        ]));
        let communication = trimmed
            .status
            .as_mut()
            .unwrap()
            .communication
            .as_mut()
            .unwrap();
        communication.omitted = 2;
        communication.omitted_through = Some(Time(at("2026-01-01T00:05:01Z")));
        assert!(owed(&trimmed, &channels, at("2026-01-01T00:10:00Z")).is_empty());
        // Without the mark, the same outbox would owe them again.
        let communication = trimmed
            .status
            .as_mut()
            .unwrap()
            .communication
            .as_mut()
            .unwrap();
        communication.omitted_through = None;
        assert_eq!(
            owed(&trimmed, &channels, at("2026-01-01T00:10:00Z")).len(),
            2
        );
    }
}
