//! The one place that decides an incident's phase: a table from the phase
//! it is in and what just happened to the phase it moves to. The lifecycle
//! (responders, deadlines, the detector's signal) and the ladder (steps and
//! their verification) say what happened; only this module moves the phase,
//! with the milestones that go with it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{IncidentStatus, Phase};

/// What happened to an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Declared or detected; seen for the first time.
    Open,
    /// The detector saw the signal return after resolution.
    Reopen,
    /// A responder acknowledged it.
    Acknowledge,
    /// A responder declined it as a false positive.
    Decline,
    /// A responder resolved it.
    ResolveByResponder,
    /// The detected signal stayed clear through the hold-down.
    AutoResolve,
    /// A remediation step is about to change the workload.
    StartStep,
    /// The workload turned healthy after a step; the hold-down runs.
    HoldHealthy,
    /// The workload turned unhealthy again during the hold-down.
    Relapse,
    /// A step held healthy through the hold-down.
    Remediated,
    /// Every step was tried and none helped.
    Exhaust,
}

/// The phase after `transition`, or None when it does not apply in `current`.
pub fn next(current: Option<Phase>, transition: Transition) -> Option<Phase> {
    use Phase::*;
    use Transition::*;
    let open = current.is_some_and(|phase| !phase.is_closed());
    match (current, transition) {
        (None, Open) => Some(Triggered),
        (Some(Resolved), Reopen) => Some(Triggered),
        (Some(Triggered), Acknowledge) => Some(Acknowledged),
        (_, Decline) if open => Some(Declined),
        (_, ResolveByResponder | AutoResolve | Remediated) if open => Some(Resolved),
        (_, StartStep | Relapse) if open => Some(Mitigating),
        (_, HoldHealthy) if open => Some(Monitoring),
        (_, Exhaust) if open => Some(Escalated),
        _ => None,
    }
}

/// Applies a transition to the status: the phase, and `resolvedAt` when it
/// resolves (cleared on a reopen). Returns whether the phase changed.
pub fn enter(status: &mut IncidentStatus, transition: Transition, now: &Time) -> bool {
    let Some(phase) = next(status.phase, transition) else {
        return false;
    };
    match phase {
        Phase::Resolved => status.milestones.resolved_at = Some(now.clone()),
        Phase::Triggered => status.milestones.resolved_at = None,
        _ => {}
    }
    let changed = status.phase != Some(phase);
    status.phase = Some(phase);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn the_transition_table() {
        use Phase::*;
        use Transition::*;
        let cases = [
            (None, Open, Some(Triggered)),
            (Some(Triggered), Open, None),
            (Some(Triggered), Acknowledge, Some(Acknowledged)),
            (Some(Mitigating), Acknowledge, None),
            (Some(Triggered), StartStep, Some(Mitigating)),
            (Some(Acknowledged), StartStep, Some(Mitigating)),
            (Some(Mitigating), HoldHealthy, Some(Monitoring)),
            (Some(Monitoring), Relapse, Some(Mitigating)),
            (Some(Monitoring), Remediated, Some(Resolved)),
            (Some(Mitigating), Exhaust, Some(Escalated)),
            (Some(Escalated), ResolveByResponder, Some(Resolved)),
            (Some(Escalated), Decline, Some(Declined)),
            (Some(Triggered), AutoResolve, Some(Resolved)),
            (Some(Resolved), Reopen, Some(Triggered)),
            (Some(Triggered), Reopen, None),
            (Some(Declined), Reopen, None),
        ];
        for (from, transition, to) in cases {
            assert_eq!(next(from, transition), to, "{from:?} + {transition:?}");
        }
    }

    #[test]
    fn a_closed_incident_moves_only_by_a_reopen() {
        let all = [
            Transition::Open,
            Transition::Acknowledge,
            Transition::Decline,
            Transition::ResolveByResponder,
            Transition::AutoResolve,
            Transition::StartStep,
            Transition::HoldHealthy,
            Transition::Relapse,
            Transition::Remediated,
            Transition::Exhaust,
        ];
        for closed in Phase::iter().filter(|p| p.is_closed()) {
            for transition in all {
                assert_eq!(
                    next(Some(closed), transition),
                    None,
                    "{closed} + {transition:?}"
                );
            }
        }
    }

    #[test]
    fn resolving_sets_the_milestone_and_a_reopen_clears_it() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut status = IncidentStatus {
            phase: Some(Phase::Monitoring),
            ..IncidentStatus::default()
        };
        assert!(enter(&mut status, Transition::Remediated, &now));
        assert_eq!(status.milestones.resolved_at, Some(now.clone()));
        assert!(!enter(&mut status, Transition::Exhaust, &now));
        assert_eq!(status.phase, Some(Phase::Resolved));
        assert!(enter(&mut status, Transition::Reopen, &now));
        assert_eq!(status.milestones.resolved_at, None);
    }
}
