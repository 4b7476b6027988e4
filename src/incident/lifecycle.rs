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
/// Condition set when automatic remediation has run out and a human must act.
pub const NEEDS_HUMAN: &str = "NeedsHuman";
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

impl Plan {
    /// A timeline entry, and an Event saying the same when `event` is given.
    fn note(&mut self, now: &Time, reason: &str, message: String, event: Option<Event>) {
        push_timeline(
            &mut self.status,
            TimelineEntry {
                at: now.clone(),
                reason: reason.into(),
                message: message.clone(),
            },
        );
        if let Some(Event { warning, action }) = event {
            self.events.push(if warning {
                PlannedEvent::warning(reason, action, message)
            } else {
                PlannedEvent::normal(reason, action, message)
            });
        }
    }

    fn requeue_within(&mut self, wait: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(wait, |r| r.min(wait)));
    }
}

/// The kind and action of an Event that goes with a timeline entry.
#[derive(Clone, Copy)]
struct Event {
    warning: bool,
    action: &'static str,
}

const fn normal(action: &'static str) -> Option<Event> {
    Some(Event {
        warning: false,
        action,
    })
}

const fn warning(action: &'static str) -> Option<Event> {
    Some(Event {
        warning: true,
        action,
    })
}

/// Plans the next status of an incident at `now`: opened, reopened,
/// acknowledged, declined or resolved by responders, auto-resolved, and
/// its deadlines, in that order.
pub fn plan(incident: &Incident, settings: &Detection, now: Timestamp) -> Plan {
    let mut plan = Plan {
        status: incident.status.clone().unwrap_or_default(),
        events: Vec::new(),
        breaches: Vec::new(),
        requeue_after: None,
    };
    let now_time = Time(now);
    open(&mut plan, incident, &now_time);
    let deadlines = deadlines(&mut plan, incident, &now_time);
    reopen(&mut plan, incident, settings, &now_time);
    respond(&mut plan, incident, &now_time);
    auto_resolve(&mut plan, incident, settings, &now_time);
    watch_deadlines(&mut plan, incident, deadlines, &now_time);
    plan.status.observed_generation = incident.metadata.generation;
    plan
}

/// An incident seen for the first time is Triggered, detected at the
/// time it gives (declared after the fact) or its creation.
fn open(plan: &mut Plan, incident: &Incident, now: &Time) {
    if plan.status.phase.is_some() {
        return;
    }
    let spec = &incident.spec;
    phase::enter(&mut plan.status, Transition::Open, now);
    let created = incident
        .metadata
        .creation_timestamp
        .clone()
        .unwrap_or_else(|| now.clone());
    // A problem is noticed before its Incident exists, never after: a
    // detectedAt from the future would push every deadline out of reach.
    let detected = match &spec.detected_at {
        Some(claimed) if claimed.0 > created.0 => {
            let message = format!(
                "spec.detectedAt {} is after the Incident was created; deadlines count from its creation, {}",
                claimed.0, created.0
            );
            plan.note(now, "DetectedAtIgnored", message, warning("Open"));
            created
        }
        Some(claimed) => claimed.clone(),
        None => created,
    };
    plan.status.milestones.detected_at = Some(detected);
    let message = format!(
        "{} {} incident opened on {}: {}",
        spec.severity, spec.incident_type, spec.target, spec.title
    );
    plan.note(now, "Triggered", message, normal("Open"));
}

/// The deadlines from the severity as it is now (it may have been raised),
/// with what was already breached carried over.
fn deadlines(plan: &mut Plan, incident: &Incident, now: &Time) -> Sla {
    let spec = &incident.spec;
    let detected_at = plan
        .status
        .milestones
        .detected_at
        .as_ref()
        .map_or(now.0, |t| t.0);
    let acknowledge_by = add(detected_at, spec.severity.acknowledge_within());
    let resolve_by = add(detected_at, spec.severity.resolve_within());
    let previous = plan.status.sla.take();
    if let Some(previous) = &previous
        && previous.acknowledge_by.0 != acknowledge_by
    {
        let message = format!(
            "severity is now {}: acknowledge by {acknowledge_by}, resolve by {resolve_by}",
            spec.severity
        );
        plan.note(now, "DeadlinesUpdated", message, None);
    }
    Sla {
        acknowledge_by: Time(acknowledge_by),
        resolve_by: Time(resolve_by),
        acknowledge_breached: previous.as_ref().is_some_and(|s| s.acknowledge_breached),
        resolve_breached: previous.as_ref().is_some_and(|s| s.resolve_breached),
    }
}

/// The detector saw the signal return after resolution: reopen. The step
/// that resolved it did not last: it is counted as failed (relapsed), and
/// the next round starts after it. Past the policy's flap threshold the
/// incident is Flapping and goes to a person: Escalated, `NeedsHuman`, and
/// nothing more runs automatically. Counted, not timed: a reopen in the same
/// second as the resolution still counts.
fn reopen(plan: &mut Plan, incident: &Incident, settings: &Detection, now: &Time) {
    let status = &mut plan.status;
    let reopens = status.detection.as_ref().map_or(0, |d| d.reopens);
    if reopens <= status.reopens_handled.unwrap_or(0) {
        return;
    }
    status.reopens_handled = Some(reopens);
    // Reopened while still open (the detector saw a stale phase): nothing to do.
    if !phase::enter(status, Transition::Reopen, now) {
        return;
    }
    let generation = incident.metadata.generation;
    status.reopened_at_generation = generation;
    let relapsed = relapse(status, now);
    let message = match &relapsed {
        Some(step) => format!(
            "the signal returned after resolution (reopen {reopens}): reopened; step {step} did \
             not last and counts as failed"
        ),
        None => format!("the signal returned after resolution (reopen {reopens}): reopened"),
    };
    plan.note(now, "Reopened", message, warning("Reopen"));
    if reopens < settings.flap_threshold {
        return;
    }
    let message = format!(
        "reopened {reopens} times (threshold {}): a fix that does not last is a failed fix; \
         nothing more runs automatically until a person acts",
        settings.flap_threshold
    );
    let update = ConditionUpdate {
        type_: FLAPPING,
        status: true,
        reason: "Reopened",
        message: message.clone(),
    };
    if set_condition(&mut plan.status.conditions, update, generation, now) {
        plan.note(now, FLAPPING, message.clone(), warning("Reopen"));
    }
    if phase::enter(&mut plan.status, Transition::Exhaust, now) {
        let update = ConditionUpdate {
            type_: NEEDS_HUMAN,
            status: true,
            reason: FLAPPING,
            message: message.clone(),
        };
        set_condition(&mut plan.status.conditions, update, generation, now);
        plan.note(now, "Escalated", message, warning("Reopen"));
    }
}

/// The step whose success the reopen undid (the last one that succeeded):
/// failed after all. Returns its name.
fn relapse(status: &mut IncidentStatus, now: &Time) -> Option<String> {
    let step = status
        .steps
        .iter_mut()
        .rev()
        .find(|s| s.result == StepResult::Succeeded)?;
    step.result = StepResult::Failed;
    step.relapsed_at = Some(now.clone());
    step.message = Some(
        "the fix did not last: the signal returned after the incident resolved; counted as failed"
            .into(),
    );
    Some(step.name.clone())
}

/// What responders said in `spec`: acknowledged, declined, resolved.
/// Inputs from before the last reopen were answered already.
fn respond(plan: &mut Plan, incident: &Incident, now: &Time) {
    let spec = &incident.spec;
    let closed = plan.status.phase.is_some_and(Phase::is_closed);
    if let Some(ack) = &spec.acknowledged
        && plan.status.milestones.acknowledged_at.is_none()
        && !closed
    {
        plan.status.milestones.acknowledged_at = Some(now.clone());
        phase::enter(&mut plan.status, Transition::Acknowledge, now);
        let mut message = format!("acknowledged by {}", ack.by);
        if let Some(note) = &ack.note {
            message.push_str(&format!(": {note}"));
        }
        plan.note(now, "Acknowledged", message, normal("Acknowledge"));
    }
    let generation = incident.metadata.generation.unwrap_or(0);
    let inputs_current = generation > plan.status.reopened_at_generation.unwrap_or(0);
    if closed || !inputs_current {
        return;
    }
    if let Some(decline) = &spec.declined {
        phase::enter(&mut plan.status, Transition::Decline, now);
        let message = format!(
            "declined as a false positive by {}: {}",
            decline.by, decline.reason
        );
        plan.note(now, "Declined", message, normal("Decline"));
    } else if let Some(resolution) = &spec.resolution {
        phase::enter(&mut plan.status, Transition::ResolveByResponder, now);
        let message = format!(
            "resolved by {}: {} (root cause: {})",
            resolution.by, resolution.summary, resolution.root_cause
        );
        plan.note(now, "Resolved", message, normal("Resolve"));
    }
}

/// A detected signal that cleared by itself and stayed clear resolves the
/// incident, if the policy allows; security incidents never do, and a step
/// being applied or verified decides the outcome itself.
fn auto_resolve(plan: &mut Plan, incident: &Incident, settings: &Detection, now: &Time) {
    let spec = &incident.spec;
    let status = &plan.status;
    // A held sync (or the release after it) decides the outcome too.
    let remediating = status.current_hold().is_some()
        || status.steps.last().is_some_and(|s| {
            matches!(
                s.result,
                StepResult::Pending | StepResult::Verifying | StepResult::AwaitingApproval
            )
        });
    let allowed = spec.source.kind == SourceKind::Detected
        && settings.auto_resolve
        && !remediating
        && spec.incident_type != IncidentType::SecurityIncident
        && !status.phase.is_some_and(Phase::is_closed);
    let cleared_at = status.detection.as_ref().and_then(|d| d.cleared_at.clone());
    let (true, Some(cleared_at)) = (allowed, cleared_at) else {
        return;
    };
    let due = add(
        crate::k8s::end_of_second(cleared_at.0),
        settings.hold_down.as_std(),
    );
    if now.0 < due {
        plan.requeue_within(until(now.0, due));
        return;
    }
    phase::enter(&mut plan.status, Transition::AutoResolve, now);
    let message = format!(
        "the signal cleared at {} and stayed clear for {}: resolved",
        cleared_at.0, settings.hold_down
    );
    plan.note(now, "AutoResolved", message, normal("Resolve"));
}

/// Marks each deadline breached once, as it passes, while the incident is
/// open; otherwise asks to look again when the next one falls.
fn watch_deadlines(plan: &mut Plan, incident: &Incident, mut sla: Sla, now: &Time) {
    let severity = incident.spec.severity;
    let generation = incident.metadata.generation;
    if !plan.status.phase.is_some_and(Phase::is_closed) {
        let acknowledged = plan.status.milestones.acknowledged_at.is_some();
        if !acknowledged && !sla.acknowledge_breached {
            let deadline = sla.acknowledge_by.0;
            if now.0 >= deadline {
                sla.acknowledge_breached = true;
                let message = format!(
                    "not acknowledged within {} ({severity} response time); deadline was {deadline}",
                    crate::crd::duration::spoken(severity.acknowledge_within()),
                );
                breach(
                    plan,
                    ACK_SLA_BREACHED,
                    "acknowledge",
                    message,
                    generation,
                    now,
                );
            } else {
                plan.requeue_within(until(now.0, deadline));
            }
        }
        if !sla.resolve_breached {
            let deadline = sla.resolve_by.0;
            if now.0 >= deadline {
                sla.resolve_breached = true;
                let message = format!(
                    "not resolved within {}; deadline was {deadline}",
                    crate::crd::duration::spoken(severity.resolve_within())
                );
                breach(
                    plan,
                    RESOLVE_SLA_BREACHED,
                    "resolve",
                    message,
                    generation,
                    now,
                );
            } else {
                plan.requeue_within(until(now.0, deadline));
            }
        }
    }
    plan.status.sla = Some(sla);
}

fn breach(
    plan: &mut Plan,
    condition: &'static str,
    deadline: &'static str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    plan.breaches.push(deadline);
    plan.note(now, condition, message.clone(), warning("CheckDeadline"));
    let update = ConditionUpdate {
        type_: condition,
        status: true,
        reason: "DeadlinePassed",
        message,
    };
    set_condition(&mut plan.status.conditions, update, generation, now);
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
            at: None,
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
            follow_ups: Vec::new(),
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

    #[test]
    fn a_detected_at_from_the_future_does_not_push_the_deadlines_away() {
        let future = SPEC.to_owned() + "  detectedAt: \"2099-01-01T00:00:00Z\"\n";
        let (_, plan) = reconciled(incident(&future), "2026-01-01T00:00:05Z");
        assert_eq!(
            plan.status.milestones.detected_at,
            Some(Time(at("2026-01-01T00:00:00Z"))),
            "counted from the creation"
        );
        let sla = plan.status.sla.unwrap();
        assert_eq!(sla.acknowledge_by, Time(at("2026-01-01T00:15:00Z")));
        assert!(
            plan.events.iter().any(|e| e.reason == "DetectedAtIgnored"),
            "{:?}",
            plan.events
        );
        // Declared after the fact: an earlier time stands.
        let past = SPEC.to_owned() + "  detectedAt: \"2025-12-31T23:50:00Z\"\n";
        let (_, plan) = reconciled(incident(&past), "2026-01-01T00:00:05Z");
        assert_eq!(
            plan.status.milestones.detected_at,
            Some(Time(at("2025-12-31T23:50:00Z")))
        );
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
        assert_eq!(early.requeue_after, Some(Duration::from_secs(32)));
        // Cleared at 00:01:00 may mean 00:01:00.999: the minute has surely
        // passed only at 00:02:01.
        let at_the_stored_minute = plan(&inc, &settings(60, 3), at("2026-01-01T00:02:00Z"));
        assert_eq!(at_the_stored_minute.status.phase, Some(Phase::Triggered));
        let late = plan(&inc, &settings(60, 3), at("2026-01-01T00:02:01Z"));
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
        // Past the threshold it goes to a person: nothing more runs by itself.
        assert_eq!(reopened.status.phase, Some(Phase::Escalated));
        assert_eq!(reopened.status.milestones.resolved_at, None);
        assert!(crate::conditions::is_true(
            &reopened.status.conditions,
            FLAPPING
        ));
        let needs_human = reopened
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == NEEDS_HUMAN)
            .unwrap();
        assert_eq!(needs_human.reason, "Flapping");
        assert!(
            needs_human
                .message
                .starts_with("reopened 1 times (threshold 1): a fix that does not last"),
            "{}",
            needs_human.message
        );
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
