//! The limits that keep automatic actions from making an incident worse:
//! cooldown and action budget per target, a circuit breaker per policy, and
//! a floor of ready replicas. Pure: the state they need is derived from the
//! Incidents' ledgers in the API, so a restart resets nothing.

use std::{borrow::Borrow, time::Duration};

use k8s_openapi::jiff::Timestamp;

use crate::crd::{Incident, StepResult};
use crate::k8s::end_of_second;

pub use crate::names::BREAKER_RESET_ANNOTATION;

/// A step that changed something (not a dry run, not a refusal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedStep {
    pub started: Timestamp,
    pub finished: Option<Timestamp>,
    pub result: StepResult,
}

/// The applied steps of some incidents, oldest first.
pub fn applied_steps<I>(incidents: impl IntoIterator<Item = I>) -> Vec<AppliedStep>
where
    I: Borrow<Incident>,
{
    let mut steps: Vec<AppliedStep> = incidents
        .into_iter()
        .flat_map(|incident| {
            let status = incident.borrow().status.as_ref();
            status.map(|s| s.steps.clone()).unwrap_or_default()
        })
        // A Pending step with only its GitOps hold's line has not changed
        // the target yet: it counts as about to run (below).
        .filter(|step| {
            step.changes.iter().any(|c| !crate::gitops::is_hold_line(c))
                && step.result != StepResult::DryRun
        })
        .filter_map(|step| {
            Some(AppliedStep {
                started: step.started_at.as_ref()?.0,
                finished: step.finished_at.as_ref().map(|t| t.0),
                result: step.result,
            })
        })
        .collect();
    steps.sort_by_key(|s| s.started);
    steps
}

/// Steps recorded and about to run (Pending, approved ones included): they
/// count against the cooldown and the budget of their target, so two
/// incidents on one target do not both act inside one cooldown.
pub fn pending_steps<I>(incidents: impl IntoIterator<Item = I>) -> Vec<AppliedStep>
where
    I: Borrow<Incident>,
{
    incidents
        .into_iter()
        .flat_map(|incident| {
            let status = incident.borrow().status.as_ref();
            status.map(|s| s.steps.clone()).unwrap_or_default()
        })
        .filter(|step| {
            step.result == StepResult::Pending
                && step.changes.iter().all(|c| crate::gitops::is_hold_line(c))
        })
        .filter_map(|step| {
            Some(AppliedStep {
                started: step.started_at.as_ref()?.0,
                finished: None,
                result: step.result,
            })
        })
        .collect()
}

/// The circuit breaker of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    /// Failed steps in a row, most recent last, since the last success or reset.
    pub consecutive_failures: i32,
    pub open: bool,
}

/// Opens after `threshold` failed steps in a row across the policy's incidents.
pub fn breaker(
    policy_steps: &[AppliedStep],
    threshold: i32,
    reset_at: Option<Timestamp>,
) -> Breaker {
    let mut finished: Vec<&AppliedStep> = policy_steps
        .iter()
        .filter(|s| matches!(s.result, StepResult::Succeeded | StepResult::Failed))
        .filter(|s| reset_at.is_none_or(|reset| s.finished.unwrap_or(s.started) > reset))
        .collect();
    finished.sort_by_key(|s| s.finished.unwrap_or(s.started));
    let consecutive = finished
        .iter()
        .rev()
        .take_while(|s| s.result == StepResult::Failed)
        .count();
    let consecutive_failures = i32::try_from(consecutive).unwrap_or(i32::MAX);
    Breaker {
        consecutive_failures,
        open: consecutive_failures >= threshold,
    }
}

/// Whether a new step may run now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Not before this time.
    WaitUntil(Timestamp, String),
    /// Not until a human acts.
    Refuse(String),
}

/// The limits of a policy's `safety`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub cooldown: Duration,
    pub max_actions: i32,
    pub window: Duration,
    pub breaker_threshold: i32,
}

/// Checks the breaker, the cooldown and the budget before a step on a target.
pub fn check(
    target_steps: &[AppliedStep],
    breaker: Breaker,
    limits: &Limits,
    now: Timestamp,
) -> Verdict {
    if breaker.open {
        return Verdict::Refuse(format!(
            "circuit breaker open: {} failed steps in a row; a human resets it with \
             `kubectl annotate remediationpolicy <name> {BREAKER_RESET_ANNOTATION}=<now, RFC 3339> --overwrite`",
            breaker.consecutive_failures
        ));
    }
    if let Some(last) = target_steps.iter().map(|s| s.started).max() {
        let until = add(end_of_second(last), limits.cooldown);
        if now < until {
            return Verdict::WaitUntil(
                until,
                format!("cooldown: last action on the target at {last}"),
            );
        }
    }
    let window_start = now.checked_sub(limits.window).unwrap_or(Timestamp::MIN);
    let in_window: Vec<Timestamp> = target_steps
        .iter()
        .map(|s| end_of_second(s.started))
        .filter(|at| *at > window_start)
        .collect();
    if i32::try_from(in_window.len()).unwrap_or(i32::MAX) >= limits.max_actions
        && let Some(oldest) = in_window.iter().min()
    {
        return Verdict::WaitUntil(
            add(*oldest, limits.window),
            format!(
                "{} actions on the target within {}, the most allowed",
                in_window.len(),
                crate::crd::duration::spoken(limits.window)
            ),
        );
    }
    Verdict::Allow
}

/// Whether an action that may take `max_unavailable` replicas down at once
/// keeps at least `min_ready` ready. A target already below the floor may
/// still be acted on: the action is its way back up.
pub fn keeps_min_ready(ready: i32, max_unavailable: i32, min_ready: i32) -> bool {
    ready < min_ready || ready - max_unavailable >= min_ready
}

fn add(at: Timestamp, duration: Duration) -> Timestamp {
    at.checked_add(duration).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + minute * 60).unwrap()
    }

    fn step(minute: i64, result: StepResult) -> AppliedStep {
        AppliedStep {
            started: at(minute),
            finished: Some(at(minute + 1)),
            result,
        }
    }

    const LIMITS: Limits = Limits {
        cooldown: Duration::from_secs(300),
        max_actions: 3,
        window: Duration::from_secs(3600),
        breaker_threshold: 3,
    };
    const CLOSED: Breaker = Breaker {
        consecutive_failures: 0,
        open: false,
    };

    /// The ledger's whole second, and the second after it: a start stored
    /// as `at(minute)` may have been up to that much later.
    fn after_its_second(minute: i64) -> Timestamp {
        at(minute) + Duration::from_secs(1)
    }

    #[test]
    fn cooldown_then_budget() {
        assert_eq!(check(&[], CLOSED, &LIMITS, at(0)), Verdict::Allow);
        let one = [step(0, StepResult::Failed)];
        assert!(
            matches!(check(&one, CLOSED, &LIMITS, at(3)), Verdict::WaitUntil(t, _) if t == after_its_second(5))
        );
        assert!(
            matches!(check(&one, CLOSED, &LIMITS, at(5)), Verdict::WaitUntil(..)),
            "the step may have begun up to a second after its stored start"
        );
        assert_eq!(
            check(&one, CLOSED, &LIMITS, after_its_second(5)),
            Verdict::Allow
        );
        let three = [
            step(0, StepResult::Failed),
            step(10, StepResult::Failed),
            step(20, StepResult::Failed),
        ];
        assert!(
            matches!(check(&three, CLOSED, &LIMITS, at(30)), Verdict::WaitUntil(t, _) if t == after_its_second(60))
        );
        assert!(matches!(
            check(&three, CLOSED, &LIMITS, at(60)),
            Verdict::WaitUntil(..)
        ));
        assert_eq!(
            check(&three, CLOSED, &LIMITS, after_its_second(60)),
            Verdict::Allow
        );
    }

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_a_reset_closes_it() {
        let steps = [
            step(0, StepResult::Succeeded),
            step(10, StepResult::Failed),
            step(20, StepResult::Failed),
        ];
        assert_eq!(
            breaker(&steps, 3, None),
            Breaker {
                consecutive_failures: 2,
                open: false
            }
        );
        let more = [steps[0], steps[1], steps[2], step(30, StepResult::Failed)];
        let open = breaker(&more, 3, None);
        assert!(open.open);
        assert!(
            matches!(check(&[], open, &LIMITS, at(100)), Verdict::Refuse(m) if m.contains("3 failed steps"))
        );
        assert!(
            !breaker(&more, 3, Some(at(40))).open,
            "failures before the reset no longer count"
        );
        let success_after = [more[1], more[2], more[3], step(40, StepResult::Succeeded)];
        assert!(!breaker(&success_after, 3, None).open);
    }

    #[test]
    fn the_ready_floor() {
        assert!(keeps_min_ready(3, 1, 2));
        assert!(!keeps_min_ready(2, 1, 2));
        assert!(
            keeps_min_ready(0, 1, 2),
            "already below the floor: acting can only help"
        );
        assert!(keeps_min_ready(5, 0, 5));
    }

    #[test]
    fn a_step_with_only_its_gitops_hold_made_is_about_to_run_not_applied() {
        let incident: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {"title": "t", "severity": "P1", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"}},
            "status": {"steps": [{"id": "s", "name": "rollback", "action": "rollback", "attempt": 1,
                                  "result": "Pending", "startedAt": "2026-01-01T00:00:00Z",
                                  "changes": ["suspended Kustomization flux-system/apps ..."]}]}
        }))
        .unwrap();
        assert!(applied_steps([&incident]).is_empty());
        assert_eq!(pending_steps([&incident]).len(), 1);
    }
}
