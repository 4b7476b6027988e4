//! One open incident per target and symptom: the dedup key, incident names,
//! and whether a signal updates, reopens or opens an incident. Pure.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::{Incident, Phase, Symptom, WorkloadKind};

/// The dedup key of a target and symptom, e.g. `Deployment/api/CrashLoopBackOff`;
/// a probe's adds its name (`Deployment/webhook-worker/ProbeFailing/queue`).
pub fn dedup_key(kind: WorkloadKind, name: &str, symptom: Symptom, probe: Option<&str>) -> String {
    match probe {
        Some(probe) => format!("{kind}/{name}/{symptom}/{probe}"),
        None => format!("{kind}/{name}/{symptom}"),
    }
}

/// The name of the `sequence`-th incident for a target and symptom:
/// `api-crashloop`, then `api-crashloop-2`, ... Deterministic, so a create
/// that races another (or a restart) meets AlreadyExists instead of a twin.
pub fn incident_name(
    kind: WorkloadKind,
    name: &str,
    symptom: Symptom,
    probe: Option<&str>,
    sequence: u32,
) -> String {
    let infix = match kind {
        WorkloadKind::Deployment => "",
        WorkloadKind::StatefulSet => "-sts",
    };
    let suffix = if sequence > 1 {
        format!("-{sequence}")
    } else {
        String::new()
    };
    let probe = probe.map(|p| format!("-{p}")).unwrap_or_default();
    let tail = format!("{infix}-{}{probe}{suffix}", symptom.slug());
    let room = 253 - tail.len();
    let base: String = name.chars().take(room).collect();
    format!("{}{tail}", base.trim_end_matches(['-', '.']))
}

/// The sequence number an incident name carries (1 when it has no suffix).
fn sequence_of(incident: &Incident, base: &str) -> u32 {
    let name = incident.metadata.name.as_deref().unwrap_or_default();
    match name.strip_prefix(base) {
        Some("") => 1,
        Some(rest) => rest
            .strip_prefix('-')
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        None => 0,
    }
}

/// What a signal does to the incidents of its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The latest incident is open: count the signal in it.
    Update(String),
    /// The latest incident was resolved within the reopen window: reopen it.
    Reopen(String),
    /// Open a new incident, linked to the previous one if there is one.
    Create {
        name: String,
        previous: Option<String>,
    },
}

/// Decides from the incidents that carry this signal's key.
pub fn decide<'a>(
    kind: WorkloadKind,
    name: &str,
    symptom: Symptom,
    probe: Option<&str>,
    same_key: impl IntoIterator<Item = &'a Incident>,
    reopen_window: Duration,
    now: Timestamp,
) -> Decision {
    let base = incident_name(kind, name, symptom, probe, 1);
    let latest = same_key
        .into_iter()
        .max_by_key(|incident| sequence_of(incident, &base));
    let Some(latest) = latest else {
        return Decision::Create {
            name: base,
            previous: None,
        };
    };
    let latest_name = latest.metadata.name.clone().unwrap_or_default();
    let status = latest.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    if !phase.is_some_and(Phase::is_closed) {
        return Decision::Update(latest_name);
    }
    // Declined as a false positive: the same signal going on is counted in
    // it, not opened again; once it has cleared, a return is a new incident.
    let cleared = status
        .and_then(|s| s.detection.as_ref())
        .is_some_and(|d| d.cleared_at.is_some());
    if phase == Some(Phase::Declined) && !cleared {
        return Decision::Update(latest_name);
    }
    let resolved_at = status
        .and_then(|s| s.milestones.resolved_at.as_ref())
        .map(|t| t.0);
    let within_window = resolved_at
        .and_then(|at| at.checked_add(reopen_window).ok())
        .is_some_and(|until| now < until);
    if phase == Some(Phase::Resolved) && within_window {
        return Decision::Reopen(latest_name);
    }
    let next = sequence_of(latest, &base).max(1) + 1;
    Decision::Create {
        name: incident_name(kind, name, symptom, probe, next),
        previous: Some(latest_name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::IncidentStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use strum::IntoEnumIterator;

    #[test]
    fn every_symptom_has_its_own_slug_fit_for_a_name() {
        let slugs: std::collections::BTreeSet<&str> = Symptom::iter().map(Symptom::slug).collect();
        assert_eq!(slugs.len(), Symptom::iter().count(), "{slugs:?}");
        for slug in slugs {
            assert!(
                slug != "signal" && slug.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{slug}"
            );
        }
    }

    fn incident(name: &str, phase: Option<Phase>, resolved_at: Option<&str>) -> Incident {
        let mut incident: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": name, "namespace": "hg"},
            "spec": {"title": "t", "severity": "P1", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"}}
        }))
        .unwrap();
        let mut status = IncidentStatus {
            phase,
            ..Default::default()
        };
        status.milestones.resolved_at = resolved_at.map(|t| Time(t.parse().unwrap()));
        incident.status = Some(status);
        incident
    }

    const WINDOW: Duration = Duration::from_secs(1800);
    const KIND: WorkloadKind = WorkloadKind::Deployment;
    const CRASH: Symptom = Symptom::CrashLoopBackOff;

    fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn names_are_deterministic_and_bounded() {
        assert_eq!(incident_name(KIND, "api", CRASH, None, 1), "api-crashloop");
        assert_eq!(
            incident_name(KIND, "api", CRASH, None, 3),
            "api-crashloop-3"
        );
        assert_eq!(
            incident_name(WorkloadKind::StatefulSet, "postgres", CRASH, None, 1),
            "postgres-sts-crashloop"
        );
        let long = "a".repeat(300);
        assert!(
            incident_name(KIND, &long, Symptom::ProgressDeadlineExceeded, None, 12).len() <= 253
        );
        assert_eq!(
            dedup_key(KIND, "api", CRASH, None),
            "Deployment/api/CrashLoopBackOff"
        );
    }

    #[test]
    fn the_first_signal_creates() {
        let decision = decide(KIND, "api", CRASH, None, [], WINDOW, now());
        assert_eq!(
            decision,
            Decision::Create {
                name: "api-crashloop".into(),
                previous: None
            }
        );
    }

    #[test]
    fn an_open_incident_is_updated() {
        for phase in [
            None,
            Some(Phase::Triggered),
            Some(Phase::Acknowledged),
            Some(Phase::Escalated),
        ] {
            let open = incident("api-crashloop", phase, None);
            assert_eq!(
                decide(KIND, "api", CRASH, None, [&open], WINDOW, now()),
                Decision::Update("api-crashloop".into())
            );
        }
    }

    #[test]
    fn a_recent_resolution_reopens_and_an_old_one_links() {
        let recent = incident(
            "api-crashloop",
            Some(Phase::Resolved),
            Some("2026-01-01T11:50:00Z"),
        );
        assert_eq!(
            decide(KIND, "api", CRASH, None, [&recent], WINDOW, now()),
            Decision::Reopen("api-crashloop".into())
        );
        let old = incident(
            "api-crashloop",
            Some(Phase::Resolved),
            Some("2026-01-01T11:00:00Z"),
        );
        assert_eq!(
            decide(KIND, "api", CRASH, None, [&old], WINDOW, now()),
            Decision::Create {
                name: "api-crashloop-2".into(),
                previous: Some("api-crashloop".into())
            }
        );
    }

    #[test]
    fn a_declined_incident_counts_its_signal_and_is_never_reopened() {
        let mut declined = incident("api-crashloop-2", Some(Phase::Declined), None);
        let first = incident(
            "api-crashloop",
            Some(Phase::Resolved),
            Some("2026-01-01T11:59:00Z"),
        );
        // The false positive goes on: counted in the declined incident.
        assert_eq!(
            decide(KIND, "api", CRASH, None, [&first, &declined], WINDOW, now()),
            Decision::Update("api-crashloop-2".into())
        );
        // It cleared, and came back: a new incident, never a reopen.
        declined.status.as_mut().unwrap().detection = Some(crate::crd::DetectionStatus {
            cleared_at: Some(Time("2026-01-01T11:58:00Z".parse().unwrap())),
            ..Default::default()
        });
        assert_eq!(
            decide(KIND, "api", CRASH, None, [&first, &declined], WINDOW, now()),
            Decision::Create {
                name: "api-crashloop-3".into(),
                previous: Some("api-crashloop-2".into())
            }
        );
    }
}
