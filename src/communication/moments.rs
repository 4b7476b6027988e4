//! The moments of an incident worth telling, each with a key that is
//! stable across reconciles and restarts: it is what makes a message once.

use k8s_openapi::jiff::Timestamp;

use crate::crd::{Incident, NotifyEvent, Phase, StepResult};

/// One moment: what happened, its key (unique within the incident) and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moment {
    pub event: NotifyEvent,
    pub key: String,
    pub at: Timestamp,
}

impl Moment {
    fn new(event: NotifyEvent, key: impl Into<String>, at: Timestamp) -> Self {
        Moment {
            event,
            key: key.into(),
            at,
        }
    }
}

/// Every moment the incident has reached by now, oldest first. `update_every`
/// adds the latest periodic update while it is open (only the latest: an
/// update missed while the operator was down is not sent late).
pub fn moments(
    incident: &Incident,
    update_every: Option<std::time::Duration>,
    now: Timestamp,
) -> Vec<Moment> {
    let Some(status) = &incident.status else {
        return Vec::new();
    };
    if status.phase.is_none() {
        return Vec::new();
    }
    let milestones = &status.milestones;
    let opened = milestones
        .detected_at
        .as_ref()
        .map(|t| t.0)
        .or_else(|| incident.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    // A reopened incident runs again: round 2, 3, ...; each round is told.
    let round = status.round();
    let mut found = vec![Moment::new(NotifyEvent::Opened, "Opened", opened)];
    if let Some(at) = &milestones.acknowledged_at {
        found.push(Moment::new(NotifyEvent::Acknowledged, "Acknowledged", at.0));
    }
    // An acknowledgement renewed after one expired is told too: paging
    // started over, and whoever was paged hears that it stopped again.
    let expired = status
        .communication
        .as_ref()
        .and_then(|c| c.escalation.as_ref())
        .and_then(|e| e.expired_acknowledgement.as_ref())
        .map(|t| t.0);
    let renewed = incident
        .spec
        .acknowledged
        .as_ref()
        .and_then(|a| a.at.as_ref())
        .map(|t| t.0);
    if let (Some(expired), Some(renewed)) = (expired, renewed)
        && renewed.as_second() > expired.as_second()
    {
        found.push(Moment::new(
            NotifyEvent::Acknowledged,
            format!("Acknowledged/{}", renewed.as_second()),
            renewed,
        ));
    }
    for step in &status.steps {
        let applied = matches!(
            step.result,
            StepResult::Verifying | StepResult::Succeeded | StepResult::Failed
        ) && !step.changes.is_empty();
        if applied && let Some(at) = &step.started_at {
            found.push(Moment::new(
                NotifyEvent::StepApplied,
                format!("StepApplied/{}", step.id),
                at.0,
            ));
        }
    }
    for reopen in 2..=round {
        let at = status
            .detection
            .as_ref()
            .and_then(|d| d.last_reopened_at.as_ref())
            .map_or(now, |t| t.0);
        found.push(Moment::new(
            NotifyEvent::Reopened,
            format!("Reopened/{reopen}"),
            at,
        ));
    }
    let phase = status.phase.unwrap_or(Phase::Triggered);
    if phase == Phase::Escalated {
        let at = status
            .timeline
            .iter()
            .rev()
            .find(|e| e.reason == "Escalated" || e.reason == "LadderExhausted")
            .map_or(now, |e| e.at.0);
        found.push(Moment::new(
            NotifyEvent::Escalated,
            format!("Escalated/{round}"),
            at,
        ));
    }
    if let Some(at) = &milestones.mitigated_at {
        found.push(Moment::new(
            NotifyEvent::Mitigated,
            format!("Mitigated/{round}"),
            at.0,
        ));
    }
    if phase.is_closed() {
        let at = milestones.resolved_at.as_ref().map_or(now, |t| t.0);
        found.push(Moment::new(
            NotifyEvent::Resolved,
            format!("Resolved/{round}"),
            at,
        ));
    } else if let Some(every) = update_every.filter(|every| !every.is_zero()) {
        let elapsed = now.duration_since(opened).as_secs().max(0);
        let every_secs = i64::try_from(every.as_secs()).unwrap_or(i64::MAX).max(1);
        let count = elapsed / every_secs;
        if count >= 1 {
            let at = opened
                .checked_add(std::time::Duration::from_secs(
                    u64::try_from(count.saturating_mul(every_secs)).unwrap_or(0),
                ))
                .unwrap_or(now);
            found.push(Moment::new(
                NotifyEvent::Update,
                format!("Update/{count}"),
                at,
            ));
        }
    }
    found.sort_by_key(|m| m.at);
    found
}

/// When the next periodic update falls due, for an open incident.
pub fn next_update(
    incident: &Incident,
    update_every: std::time::Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    let status = incident.status.as_ref()?;
    if status.phase.is_none_or(Phase::is_closed) || update_every.is_zero() {
        return None;
    }
    let opened = status.milestones.detected_at.as_ref()?.0;
    let every = i64::try_from(update_every.as_secs()).ok()?.max(1);
    let elapsed = now.duration_since(opened).as_secs().max(0);
    let next = (elapsed / every).saturating_add(1).saturating_mul(every);
    opened
        .checked_add(std::time::Duration::from_secs(u64::try_from(next).ok()?))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn incident(status: serde_json::Value) -> Incident {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-down", "namespace": "hg", "uid": "u-1",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"title": "API down", "severity": "P0", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"}},
            "status": status
        }))
        .unwrap()
    }

    fn keys(found: &[Moment]) -> Vec<&str> {
        found.iter().map(|m| m.key.as_str()).collect()
    }

    const FIFTEEN: std::time::Duration = std::time::Duration::from_secs(900);

    #[test]
    fn each_moment_once_with_a_stable_key() {
        let now: Timestamp = "2026-01-01T00:40:00Z".parse().unwrap();
        let open = incident(serde_json::json!({
            "phase": "Monitoring",
            "milestones": {"detectedAt": "2026-01-01T00:00:00Z", "acknowledgedAt": "2026-01-01T00:05:00Z"},
            "steps": [
                {"id": "s-0", "name": "rollback", "action": "rollback", "attempt": 1,
                 "result": "Verifying", "startedAt": "2026-01-01T00:06:00Z", "changes": ["rolled back"]},
                {"id": "s-1", "name": "restart", "action": "restart", "attempt": 1,
                 "result": "DryRun", "startedAt": "2026-01-01T00:07:00Z", "changes": ["dry run"]}
            ]
        }));
        // 40 minutes in with an update every 15: the second update, only.
        assert_eq!(
            keys(&moments(&open, Some(FIFTEEN), now)),
            ["Opened", "Acknowledged", "StepApplied/s-0", "Update/2"]
        );
        assert_eq!(
            next_update(&open, FIFTEEN, now),
            Some("2026-01-01T00:45:00Z".parse().unwrap())
        );
        let resolved = incident(serde_json::json!({
            "phase": "Resolved", "reopensHandled": 1,
            "milestones": {"detectedAt": "2026-01-01T00:00:00Z", "mitigatedAt": "2026-01-01T00:20:00Z",
                           "resolvedAt": "2026-01-01T00:30:00Z"},
            "detection": {"occurrences": 3, "reopens": 1, "lastReopenedAt": "2026-01-01T00:10:00Z"}
        }));
        assert_eq!(
            keys(&moments(&resolved, Some(FIFTEEN), now)),
            ["Opened", "Reopened/2", "Mitigated/2", "Resolved/2"],
            "no update once closed"
        );
        assert_eq!(next_update(&resolved, FIFTEEN, now), None);
        let new = incident(serde_json::json!({}));
        assert!(
            moments(&new, Some(FIFTEEN), now).is_empty(),
            "not yet opened"
        );
    }

    #[test]
    fn an_acknowledgement_renewed_after_one_expired_is_told_again() {
        let now: Timestamp = "2026-01-01T00:40:00Z".parse().unwrap();
        let mut renewed = incident(serde_json::json!({
            "phase": "Acknowledged",
            "milestones": {"detectedAt": "2026-01-01T00:00:00Z", "acknowledgedAt": "2026-01-01T00:05:00Z"},
            "communication": {"escalation": {"step": 0, "pass": 0, "round": 1,
                                             "expiredAcknowledgement": "2026-01-01T00:05:00Z"}}
        }));
        renewed.spec.acknowledged =
            serde_json::from_value(serde_json::json!({"by": "john", "at": "2026-01-01T00:36:00Z"}))
                .unwrap();
        assert_eq!(
            keys(&moments(&renewed, None, now)),
            ["Opened", "Acknowledged", "Acknowledged/1767227760"]
        );
        // Not renewed yet: the expired one is not told again.
        renewed.spec.acknowledged =
            serde_json::from_value(serde_json::json!({"by": "john", "at": "2026-01-01T00:05:00Z"}))
                .unwrap();
        assert_eq!(
            keys(&moments(&renewed, None, now)),
            ["Opened", "Acknowledged"]
        );
    }
}
