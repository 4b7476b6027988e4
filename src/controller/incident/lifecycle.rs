//! The incident lifecycle as a pure function: from the Incident as it is and
//! the current time, what responders, deadlines and the detector's signal
//! change in its status, the Events to publish and when to look again. Phase
//! changes go through [`super::phase`]. No API calls here.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::phase::{self, Transition};
use crate::{
    conditions::{ConditionUpdate, set_condition},
    context::PlannedEvent,
    crd::{
        Detection, Incident, IncidentStatus, IncidentType, Phase, Sla, SourceKind, StepResult,
        TimelineEntry,
    },
};

/// The most timeline entries kept; older ones are dropped and counted.
pub const MAX_TIMELINE: usize = 50;

/// Condition set when nobody acknowledged before the deadline.
pub const ACK_SLA_BREACHED: &str = "AckSLABreached";
/// Condition set when the incident was not resolved before the deadline.
pub const RESOLVE_SLA_BREACHED: &str = "ResolveSLABreached";
/// Condition set when the signal keeps coming back after resolution.
pub const FLAPPING: &str = "Flapping";

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
pub fn plan(incident: &Incident, settings: &Detection, now: Timestamp) -> Plan {
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
        phase::enter(&mut status, Transition::Open, &now_time);
        let detected = spec
            .detected_at
            .clone()
            .or_else(|| incident.metadata.creation_timestamp.clone())
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

    // The detector saw the signal return after resolution: reopen.
    // Counted, not timed: a reopen in the same second as the resolution still counts.
    let reopens = status.detection.as_ref().map_or(0, |d| d.reopens);
    if reopens > status.reopens_handled.unwrap_or(0) && status.phase == Some(Phase::Resolved) {
        status.reopens_handled = Some(reopens);
        phase::enter(&mut status, Transition::Reopen, &now_time);
        status.reopened_at_generation = generation;
        let message = format!("the signal returned after resolution (reopen {reopens}): reopened");
        record(&mut status, "Reopened", message.clone());
        events.push(PlannedEvent::warning("Reopened", "Reopen", message));
        if reopens >= settings.flap_threshold {
            let message = format!(
                "reopened {reopens} times (threshold {})",
                settings.flap_threshold
            );
            let update = ConditionUpdate {
                type_: FLAPPING,
                status: true,
                reason: "Reopened",
                message: message.clone(),
            };
            if set_condition(&mut status.conditions, update, generation, &now_time) {
                record(&mut status, FLAPPING, message.clone());
                events.push(PlannedEvent::warning(FLAPPING, "Reopen", message));
            }
        }
    }
    if reopens > status.reopens_handled.unwrap_or(0) {
        // Reopened while still open (the detector saw a stale phase): nothing to do.
        status.reopens_handled = Some(reopens);
    }
    // Responder inputs from before the last reopen were answered already.
    let inputs_current = generation.unwrap_or(0) > status.reopened_at_generation.unwrap_or(0);

    let phase = status.phase.unwrap_or(Phase::Triggered);
    if let Some(ack) = &spec.acknowledged
        && status.milestones.acknowledged_at.is_none()
        && !phase.is_closed()
    {
        status.milestones.acknowledged_at = Some(now_time.clone());
        phase::enter(&mut status, Transition::Acknowledge, &now_time);
        let mut message = format!("acknowledged by {}", ack.by);
        if let Some(note) = &ack.note {
            message.push_str(&format!(": {note}"));
        }
        record(&mut status, "Acknowledged", message.clone());
        events.push(PlannedEvent::normal("Acknowledged", "Acknowledge", message));
    }

    let phase = status.phase.unwrap_or(Phase::Triggered);
    if !phase.is_closed() && inputs_current {
        if let Some(decline) = &spec.declined {
            phase::enter(&mut status, Transition::Decline, &now_time);
            let message = format!(
                "declined as a false positive by {}: {}",
                decline.by, decline.reason
            );
            record(&mut status, "Declined", message.clone());
            events.push(PlannedEvent::normal("Declined", "Decline", message));
        } else if let Some(resolution) = &spec.resolution {
            phase::enter(&mut status, Transition::ResolveByResponder, &now_time);
            let message = format!(
                "resolved by {}: {} (root cause: {})",
                resolution.by, resolution.summary, resolution.root_cause
            );
            record(&mut status, "Resolved", message.clone());
            events.push(PlannedEvent::normal("Resolved", "Resolve", message));
        }
    }

    let mut requeue_after = None;
    // A detected signal that cleared by itself and stayed clear resolves the
    // incident, if the policy allows; security incidents never do.
    let cleared_at = status.detection.as_ref().and_then(|d| d.cleared_at.clone());
    // A step being applied or verified decides the outcome itself.
    let remediating = status.steps.last().is_some_and(|s| {
        matches!(
            s.result,
            StepResult::Pending | StepResult::Verifying | StepResult::AwaitingApproval
        )
    });
    let auto_resolvable = spec.source.kind == SourceKind::Detected
        && settings.auto_resolve
        && !remediating
        && spec.incident_type != IncidentType::SecurityIncident;
    if auto_resolvable
        && !status.phase.is_some_and(Phase::is_closed)
        && let Some(cleared_at) = cleared_at
    {
        let hold_down = settings.hold_down.as_std();
        let due = add(cleared_at.0, hold_down);
        if now >= due {
            phase::enter(&mut status, Transition::AutoResolve, &now_time);
            let message = format!(
                "the signal cleared at {} and stayed clear for {}: resolved",
                cleared_at.0, settings.hold_down
            );
            record(&mut status, "AutoResolved", message.clone());
            events.push(PlannedEvent::normal("AutoResolved", "Resolve", message));
        } else {
            requeue_after = Some(until(now, due));
        }
    }

    let closed = status.phase.is_some_and(Phase::is_closed);
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
                let wait = until(now, acknowledge_by);
                requeue_after = Some(requeue_after.map_or(wait, |r: Duration| r.min(wait)));
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

pub(crate) fn push_timeline(status: &mut IncidentStatus, entry: TimelineEntry) {
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
    if minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Acknowledgement, Decline, Resolution, Severity};

    fn incident(yaml_spec: &str) -> Incident {
        let yaml = format!(
            "apiVersion: healing-guard.io/v1alpha1\nkind: Incident\nmetadata:\n  name: api-down\n  namespace: hg\n  generation: 1\n  creationTimestamp: \"2026-01-01T00:00:00Z\"\nspec:\n{yaml_spec}"
        );
        serde_yaml::from_str(&yaml).unwrap()
    }

    const SPEC: &str = "  title: API down\n  severity: P0\n  type: ServiceOutage\n  target: { kind: Deployment, name: healing-guard }\n";

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// The incident after one reconcile at `now`, with the plan's status applied.
    fn reconciled(mut incident: Incident, now: &str) -> (Incident, Plan) {
        let plan = plan(&incident, &Detection::default(), at(now));
        incident.status = Some(plan.status.clone());
        (incident, plan)
    }

    #[test]
    fn a_new_incident_is_triggered_with_deadlines_and_an_event() {
        let (_, plan) = reconciled(incident(SPEC), "2026-01-01T00:00:05Z");
        let status = &plan.status;
        assert_eq!(status.phase, Some(Phase::Triggered));
        assert_eq!(
            status.milestones.detected_at,
            Some(Time(at("2026-01-01T00:00:00Z")))
        );
        let sla = status.sla.as_ref().unwrap();
        assert_eq!(sla.acknowledge_by, Time(at("2026-01-01T00:15:00Z")));
        assert_eq!(sla.resolve_by, Time(at("2026-01-01T04:00:00Z")));
        assert_eq!(status.timeline.len(), 1);
        assert_eq!(status.timeline[0].reason, "Triggered");
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].reason, "Triggered");
        assert_eq!(status.observed_generation, Some(1));
        // Requeue just after the acknowledge deadline (14m55s away), not a poll.
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(14 * 60 + 56)));
    }

    #[test]
    fn deadlines_follow_severity() {
        for (severity, ack_minutes) in [
            (Severity::P0, 15),
            (Severity::P1, 60),
            (Severity::P2, 240),
            (Severity::P3, 1440),
        ] {
            let mut inc = incident(SPEC);
            inc.spec.severity = severity;
            let (_, plan) = reconciled(inc, "2026-01-01T00:00:00Z");
            let sla = plan.status.sla.unwrap();
            let expected = at("2026-01-01T00:00:00Z")
                .checked_add(Duration::from_secs(ack_minutes * 60))
                .unwrap();
            assert_eq!(sla.acknowledge_by.0, expected, "{severity}");
        }
    }

    #[test]
    fn a_second_reconcile_changes_nothing() {
        let (inc, first) = reconciled(incident(SPEC), "2026-01-01T00:00:05Z");
        let (_, second) = reconciled(inc, "2026-01-01T00:01:00Z");
        assert_eq!(second.status, first.status);
        assert!(second.events.is_empty());
    }

    #[test]
    fn acknowledging_moves_to_acknowledged_once() {
        let (mut inc, _) = reconciled(incident(SPEC), "2026-01-01T00:00:05Z");
        inc.spec.acknowledged = Some(Acknowledgement {
            by: "alice".into(),
            note: Some("on it".into()),
        });
        let (inc, plan) = reconciled(inc, "2026-01-01T00:03:00Z");
        assert_eq!(plan.status.phase, Some(Phase::Acknowledged));
        assert_eq!(
            plan.status.milestones.acknowledged_at,
            Some(Time(at("2026-01-01T00:03:00Z")))
        );
        assert_eq!(plan.events[0].note, "acknowledged by alice: on it");
        // The ack deadline no longer matters; only the resolve deadline is watched.
        assert_eq!(
            plan.requeue_after,
            Some(Duration::from_secs(3 * 3600 + 57 * 60 + 1))
        );
        let (_, again) = reconciled(inc, "2026-01-01T00:04:00Z");
        assert!(again.events.is_empty());
    }

    #[test]
    fn an_unacknowledged_incident_breaches_its_deadline_once() {
        let (inc, _) = reconciled(incident(SPEC), "2026-01-01T00:00:05Z");
        let (inc, plan) = reconciled(inc, "2026-01-01T00:15:01Z");
        assert!(plan.status.sla.as_ref().unwrap().acknowledge_breached);
        assert_eq!(plan.breaches, vec!["acknowledge"]);
        assert!(crate::conditions::is_true(
            &plan.status.conditions,
            ACK_SLA_BREACHED
        ));
        assert!(
            plan.events
                .iter()
                .any(|e| e.warning && e.reason == ACK_SLA_BREACHED)
        );
        let (_, again) = reconciled(inc, "2026-01-01T00:16:00Z");
        assert!(again.breaches.is_empty());
        assert!(again.events.is_empty());
    }

    #[test]
    fn raising_severity_brings_deadlines_forward() {
        let mut inc = incident(SPEC);
        inc.spec.severity = Severity::P2;
        let (mut inc, _) = reconciled(inc, "2026-01-01T00:00:05Z");
        inc.spec.severity = Severity::P0;
        let (_, plan) = reconciled(inc, "2026-01-01T00:20:00Z");
        let sla = plan.status.sla.as_ref().unwrap();
        assert_eq!(sla.acknowledge_by, Time(at("2026-01-01T00:15:00Z")));
        assert!(
            sla.acknowledge_breached,
            "the new, earlier deadline has already passed"
        );
        assert!(
            plan.status
                .timeline
                .iter()
                .any(|e| e.reason == "DeadlinesUpdated")
        );
    }

    #[test]
    fn responders_decline_or_resolve() {
        let (mut inc, _) = reconciled(incident(SPEC), "2026-01-01T00:00:05Z");
        inc.spec.declined = Some(Decline {
            by: "bob".into(),
            reason: "load test".into(),
        });
        let (_, plan) = reconciled(inc.clone(), "2026-01-01T00:01:00Z");
        assert_eq!(plan.status.phase, Some(Phase::Declined));
        assert_eq!(plan.requeue_after, None);

        inc.spec.declined = None;
        inc.spec.resolution = Some(Resolution {
            by: "bob".into(),
            root_cause: "bad deploy".into(),
            summary: "rolled back".into(),
        });
        let (inc, plan) = reconciled(inc, "2026-01-01T00:02:00Z");
        assert_eq!(plan.status.phase, Some(Phase::Resolved));
        assert_eq!(
            plan.status.milestones.resolved_at,
            Some(Time(at("2026-01-01T00:02:00Z")))
        );
        // A closed incident breaches nothing later.
        let (_, later) = reconciled(inc, "2026-01-02T00:00:00Z");
        assert!(later.breaches.is_empty());
    }

    fn detected(incident_type: &str) -> Incident {
        let spec = SPEC.replace("ServiceOutage", incident_type)
            + "  source: { kind: Detected, policy: guard, rule: crash, dedupKey: Deployment/healing-guard/CrashLoopBackOff }\n";
        incident(&spec)
    }

    fn settings(hold_down: u64, flap_threshold: i32) -> Detection {
        Detection {
            hold_down: crate::crd::Duration::from_secs(hold_down),
            flap_threshold,
            ..Detection::default()
        }
    }

    fn with_detection(
        mut inc: Incident,
        edit: impl FnOnce(&mut crate::crd::DetectionStatus),
    ) -> Incident {
        let status = inc.status.get_or_insert_with(Default::default);
        edit(status.detection.get_or_insert_with(Default::default));
        inc
    }

    #[test]
    fn a_cleared_signal_resolves_after_the_hold_down_unless_security() {
        let (inc, _) = reconciled(detected("ServiceOutage"), "2026-01-01T00:00:05Z");
        let inc = with_detection(inc, |d| {
            d.cleared_at = Some(Time(at("2026-01-01T00:01:00Z")))
        });
        let early = plan(&inc, &settings(60, 3), at("2026-01-01T00:01:30Z"));
        assert_eq!(early.status.phase, Some(Phase::Triggered));
        assert_eq!(early.requeue_after, Some(Duration::from_secs(31)));
        let late = plan(&inc, &settings(60, 3), at("2026-01-01T00:02:00Z"));
        assert_eq!(late.status.phase, Some(Phase::Resolved));
        assert!(late.events.iter().any(|e| e.reason == "AutoResolved"));
        let not_allowed = Detection {
            auto_resolve: false,
            ..settings(60, 3)
        };
        assert_eq!(
            plan(&inc, &not_allowed, at("2026-01-01T00:09:00Z"))
                .status
                .phase,
            Some(Phase::Triggered)
        );

        let (security, _) = reconciled(detected("SecurityIncident"), "2026-01-01T00:00:05Z");
        let security = with_detection(security, |d| {
            d.cleared_at = Some(Time(at("2026-01-01T00:01:00Z")))
        });
        assert_eq!(
            plan(&security, &settings(60, 3), at("2026-01-01T01:00:00Z"))
                .status
                .phase,
            Some(Phase::Triggered)
        );
    }

    #[test]
    fn a_reopen_is_acted_on_once_and_flaps_past_the_threshold() {
        let (inc, _) = reconciled(detected("ServiceOutage"), "2026-01-01T00:00:05Z");
        let inc = with_detection(inc, |d| {
            d.cleared_at = Some(Time(at("2026-01-01T00:00:10Z")))
        });
        let (mut inc, resolved) = {
            let plan = plan(&inc, &settings(1, 1), at("2026-01-01T00:00:20Z"));
            let mut inc = inc.clone();
            inc.status = Some(plan.status.clone());
            (inc.clone(), plan)
        };
        assert_eq!(resolved.status.phase, Some(Phase::Resolved));
        // The detector saw it come back in the same second: still a reopen.
        inc = with_detection(inc, |d| {
            d.reopens = 1;
            d.cleared_at = None;
        });
        let reopened = plan(&inc, &settings(1, 1), at("2026-01-01T00:00:20Z"));
        assert_eq!(reopened.status.phase, Some(Phase::Triggered));
        assert_eq!(reopened.status.milestones.resolved_at, None);
        assert!(crate::conditions::is_true(
            &reopened.status.conditions,
            FLAPPING
        ));
        inc.status = Some(reopened.status);
        let again = plan(&inc, &settings(1, 1), at("2026-01-01T00:00:21Z"));
        assert!(again.events.is_empty(), "{:?}", again.events);
    }

    #[test]
    fn the_timeline_is_bounded_and_counts_what_it_drops() {
        let mut status = IncidentStatus::default();
        for i in 0..(MAX_TIMELINE + 7) {
            let entry = TimelineEntry {
                at: Time(Timestamp::UNIX_EPOCH),
                reason: "X".into(),
                message: i.to_string(),
            };
            push_timeline(&mut status, entry);
        }
        assert_eq!(status.timeline.len(), MAX_TIMELINE);
        assert_eq!(status.timeline_dropped, Some(7));
        assert_eq!(status.timeline[0].message, "7");
    }
}
