//! The incident lifecycle as a pure function: from the Incident as it is and
//! the current time, the status it should have, the Events to publish and
//! when to look again. No API calls here.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    conditions::{ConditionUpdate, set_condition},
    context::PlannedEvent,
    crd::{Incident, IncidentStatus, Phase, Sla, TimelineEntry},
};

/// The most timeline entries kept; older ones are dropped and counted.
pub const MAX_TIMELINE: usize = 50;

/// Condition set when nobody acknowledged before the deadline.
pub const ACK_SLA_BREACHED: &str = "AckSLABreached";
/// Condition set when the incident was not resolved before the deadline.
pub const RESOLVE_SLA_BREACHED: &str = "ResolveSLABreached";

/// What one reconcile should do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The status the Incident should have.
    pub status: IncidentStatus,
    /// Events to publish once the status is written.
    pub events: Vec<PlannedEvent>,
    /// Deadlines that were just breached ("acknowledge", "resolve"), for metrics.
    pub breaches: Vec<&'static str>,
    /// When the next deadline falls, if one is still ahead.
    pub requeue_after: Option<Duration>,
}

/// Plans the next status of an incident at `now`.
pub fn plan(incident: &Incident, now: Timestamp) -> Plan {
    let spec = &incident.spec;
    let mut status = incident.status.clone().unwrap_or_default();
    let mut events = Vec::new();
    let mut breaches = Vec::new();
    let now_time = Time(now);
    let generation = incident.metadata.generation;

    let record = |status: &mut IncidentStatus, reason: &str, message: String| {
        push_timeline(
            status,
            TimelineEntry {
                at: now_time.clone(),
                reason: reason.into(),
                message,
            },
        );
    };

    if status.phase.is_none() {
        status.phase = Some(Phase::Triggered);
        let detected = incident
            .metadata
            .creation_timestamp
            .clone()
            .unwrap_or_else(|| now_time.clone());
        status.milestones.detected_at = Some(detected);
        let message = format!(
            "{} {} incident opened on {}: {}",
            spec.severity, spec.incident_type, spec.target, spec.title
        );
        record(&mut status, "Triggered", message.clone());
        events.push(PlannedEvent::normal("Triggered", "Open", message));
    }

    let detected_at = status.milestones.detected_at.clone().map_or(now, |t| t.0);
    let acknowledge_by = add(detected_at, spec.severity.acknowledge_within());
    let resolve_by = add(detected_at, spec.severity.resolve_within());
    let previous_sla = status.sla.take();
    if let Some(previous) = &previous_sla
        && previous.acknowledge_by.0 != acknowledge_by
    {
        record(
            &mut status,
            "DeadlinesUpdated",
            format!(
                "severity is now {}: acknowledge by {acknowledge_by}, resolve by {resolve_by}",
                spec.severity
            ),
        );
    }
    let mut sla = Sla {
        acknowledge_by: Time(acknowledge_by),
        resolve_by: Time(resolve_by),
        acknowledge_breached: previous_sla
            .as_ref()
            .is_some_and(|s| s.acknowledge_breached),
        resolve_breached: previous_sla.as_ref().is_some_and(|s| s.resolve_breached),
    };

    let phase = status.phase.unwrap_or(Phase::Triggered);
    if let Some(ack) = &spec.acknowledged
        && status.milestones.acknowledged_at.is_none()
        && !phase.is_closed()
    {
        status.milestones.acknowledged_at = Some(now_time.clone());
        if phase == Phase::Triggered {
            status.phase = Some(Phase::Acknowledged);
        }
        let mut message = format!("acknowledged by {}", ack.by);
        if let Some(note) = &ack.note {
            message.push_str(&format!(": {note}"));
        }
        record(&mut status, "Acknowledged", message.clone());
        events.push(PlannedEvent::normal("Acknowledged", "Acknowledge", message));
    }

    let phase = status.phase.unwrap_or(Phase::Triggered);
    if !phase.is_closed() {
        if let Some(decline) = &spec.declined {
            status.phase = Some(Phase::Declined);
            let message = format!(
                "declined as a false positive by {}: {}",
                decline.by, decline.reason
            );
            record(&mut status, "Declined", message.clone());
            events.push(PlannedEvent::normal("Declined", "Decline", message));
        } else if let Some(resolution) = &spec.resolution {
            status.phase = Some(Phase::Resolved);
            status.milestones.resolved_at = Some(now_time.clone());
            let message = format!(
                "resolved by {}: {} (root cause: {})",
                resolution.by, resolution.summary, resolution.root_cause
            );
            record(&mut status, "Resolved", message.clone());
            events.push(PlannedEvent::normal("Resolved", "Resolve", message));
        }
    }

    let closed = status.phase.is_some_and(Phase::is_closed);
    let mut requeue_after = None;
    if !closed {
        if status.milestones.acknowledged_at.is_none() && !sla.acknowledge_breached {
            if now >= acknowledge_by {
                sla.acknowledge_breached = true;
                breaches.push("acknowledge");
                let message = format!(
                    "not acknowledged within {} ({} response time); deadline was {acknowledge_by}",
                    human(spec.severity.acknowledge_within()),
                    spec.severity
                );
                record(&mut status, ACK_SLA_BREACHED, message.clone());
                events.push(PlannedEvent::warning(
                    ACK_SLA_BREACHED,
                    "CheckDeadline",
                    message.clone(),
                ));
                let update = ConditionUpdate {
                    type_: ACK_SLA_BREACHED,
                    status: true,
                    reason: "DeadlinePassed",
                    message,
                };
                set_condition(&mut status.conditions, update, generation, &now_time);
            } else {
                requeue_after = Some(until(now, acknowledge_by));
            }
        }
        if !sla.resolve_breached {
            if now >= resolve_by {
                sla.resolve_breached = true;
                breaches.push("resolve");
                let message = format!(
                    "not resolved within {}; deadline was {resolve_by}",
                    human(spec.severity.resolve_within())
                );
                record(&mut status, RESOLVE_SLA_BREACHED, message.clone());
                events.push(PlannedEvent::warning(
                    RESOLVE_SLA_BREACHED,
                    "CheckDeadline",
                    message.clone(),
                ));
                let update = ConditionUpdate {
                    type_: RESOLVE_SLA_BREACHED,
                    status: true,
                    reason: "DeadlinePassed",
                    message,
                };
                set_condition(&mut status.conditions, update, generation, &now_time);
            } else {
                let wait = until(now, resolve_by);
                requeue_after = Some(requeue_after.map_or(wait, |r: Duration| r.min(wait)));
            }
        }
    }
    status.sla = Some(sla);
    status.observed_generation = generation;

    Plan {
        status,
        events,
        breaches,
        requeue_after,
    }
}

fn push_timeline(status: &mut IncidentStatus, entry: TimelineEntry) {
    status.timeline.push(entry);
    if status.timeline.len() > MAX_TIMELINE {
        let excess = status.timeline.len() - MAX_TIMELINE;
        status.timeline.drain(..excess);
        *status.timeline_dropped.get_or_insert(0) += excess as i64;
    }
}

fn add(at: Timestamp, duration: Duration) -> Timestamp {
    // Durations here are at most days; saturate rather than fail on absurd input.
    at.checked_add(duration).unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, deadline: Timestamp) -> Duration {
    // A second of slack so the requeue lands after the deadline, not on it.
    Duration::try_from(deadline.duration_since(now)).unwrap_or_default() + Duration::from_secs(1)
}

fn human(duration: Duration) -> String {
    let minutes = duration.as_secs() / 60;
    if minutes % 60 == 0 {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}
