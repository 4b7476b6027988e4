//! Which closed incidents a policy no longer keeps: detected ones beyond
//! `detection.keepClosed` (oldest first) or older than
//! `detection.maxClosedAge`, never one still inside its reopen window (the
//! detector reopens it) and never a declared one (a person's record). Pure.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;

use crate::crd::{Detection, Incident, SourceKind};

/// When an incident closed: its resolution, or for a declined one its last
/// timeline entry; None while it is open.
fn closed_at(incident: &Incident) -> Option<Timestamp> {
    let status = incident.status.as_ref()?;
    if !status.phase?.is_closed() {
        return None;
    }
    status
        .milestones
        .resolved_at
        .as_ref()
        .or(status.timeline.last().map(|e| &e.at))
        .or(incident.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// The names of the policy's incidents to delete now.
pub fn to_prune(incidents: &[Arc<Incident>], settings: &Detection, now: Timestamp) -> Vec<String> {
    let mut closed: Vec<(Timestamp, &Incident)> = incidents
        .iter()
        .filter(|i| i.spec.source.kind == SourceKind::Detected)
        .filter_map(|i| Some((closed_at(i)?, i.as_ref())))
        .collect();
    // Newest first: the first keepClosed stay.
    closed.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let keep = usize::try_from(settings.keep_closed.max(0)).unwrap_or(usize::MAX);
    let reopenable_since = before(now, settings.reopen_window.as_std());
    let too_old = before(now, settings.max_closed_age.as_std());
    closed
        .into_iter()
        .enumerate()
        .filter(|(rank, (at, _))| (*rank >= keep || *at < too_old) && *at < reopenable_since)
        .filter_map(|(_, (_, incident))| incident.metadata.name.clone())
        .collect()
}

/// When to look again: the end of the earliest reopen window still running
/// among the closed detected incidents (one may become prunable then).
pub fn next_look(
    incidents: &[Arc<Incident>],
    settings: &Detection,
    now: Timestamp,
) -> Option<Timestamp> {
    let window = settings.reopen_window.as_std();
    incidents
        .iter()
        .filter(|i| i.spec.source.kind == SourceKind::Detected)
        .filter_map(|i| closed_at(i)?.checked_add(window).ok())
        .filter(|until| *until > now)
        .min()
}

fn before(now: Timestamp, span: Duration) -> Timestamp {
    now.checked_sub(span).unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn incident(name: &str, kind: &str, phase: &str, resolved: &str) -> Arc<Incident> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
                "metadata": {"name": name},
                "spec": {"title": "t", "severity": "P2", "type": "ServiceOutage",
                         "target": {"kind": "Deployment", "name": "api"},
                         "source": {"kind": kind}},
                "status": {"phase": phase, "milestones": {"resolvedAt": resolved}},
            }))
            .unwrap(),
        )
    }

    fn settings(keep: i32, max_age_days: u64) -> Detection {
        Detection {
            keep_closed: keep,
            max_closed_age: crate::crd::Duration::from_secs(max_age_days * 24 * 3600),
            reopen_window: crate::crd::Duration::from_secs(600),
            ..Detection::default()
        }
    }

    #[test]
    fn the_oldest_closed_detected_incidents_go_first() {
        let now: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let incidents = [
            incident("a", "Detected", "Resolved", "2026-02-01T00:00:00Z"),
            incident("b", "Detected", "Resolved", "2026-02-10T00:00:00Z"),
            incident("c", "Detected", "Resolved", "2026-02-20T00:00:00Z"),
            incident("open", "Detected", "Mitigating", "2026-01-01T00:00:00Z"),
            incident("declared", "Manual", "Resolved", "2026-01-01T00:00:00Z"),
            // Inside its reopen window: kept whatever the count.
            incident("fresh", "Detected", "Resolved", "2026-02-28T23:55:00Z"),
        ];
        assert_eq!(to_prune(&incidents, &settings(2, 365), now), ["b", "a"]);
        assert_eq!(
            to_prune(&incidents, &settings(0, 365), now),
            ["c", "b", "a"]
        );
        assert_eq!(
            to_prune(&incidents, &settings(100, 18), now),
            ["b", "a"],
            "older than the age limit"
        );
        assert!(to_prune(&incidents, &settings(100, 365), now).is_empty());
    }
}
