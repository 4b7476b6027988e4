//! The escalation ladder as a pure function: from the step ledger, the
//! ladder and what verification observed, the one next thing to do. The
//! ledger is the only memory: a step is recorded (Pending) before it runs,
//! and a recorded step is never planned again.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::{Action, Mode, StepRecord, StepResult};

/// What verification saw of the target right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Rollout complete, every replica ready and no failing pod.
    Healthy,
    /// Not (yet) healthy.
    Unhealthy,
}

/// The next thing the remediation loop should do.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Record ladder step `index` as Pending (or AwaitingApproval), before anything runs.
    Record {
        index: usize,
        awaiting_approval: bool,
    },
    /// A step waits for approval that has now been given: make it Pending.
    Approved { index: usize },
    /// Apply the Pending step at `index` (the ledger entry already exists).
    Execute { index: usize },
    /// The step at `index` is verifying; the target became healthy just now.
    HealthySince { index: usize },
    /// The step at `index` was applied but the target turned unhealthy again.
    Relapsed { index: usize },
    /// The step at `index` held healthy through the hold-down: resolved.
    Succeeded { index: usize },
    /// The step at `index` did not bring recovery in time.
    Failed { index: usize, reason: String },
    /// Every step was tried and none helped.
    Exhausted,
    /// In DryRun every step is recorded as DryRun; this is the end.
    DryRunComplete,
    /// Nothing to do until `Some(time)` (or until something changes).
    Wait(Option<Timestamp>),
}

/// Timing of verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a step may take to bring the target to healthy.
    pub timeout: Duration,
    /// How long the target must then stay healthy.
    pub hold_down: Duration,
}

/// The mode a step runs in: its own, else the incident's, else the policy's.
pub fn step_mode(step: &Action, incident_mode: Option<Mode>, policy_mode: Mode) -> Mode {
    step.mode.or(incident_mode).unwrap_or(policy_mode)
}

/// Decides the next move. `modes[i]` is the mode of ladder step `i`;
/// `approved(name)` tells whether a responder approved a step.
pub fn next(
    ladder: &[Action],
    modes: &[Mode],
    ledger: &[StepRecord],
    approved: impl Fn(&str) -> bool,
    health: Health,
    timing: &[Timing],
    now: Timestamp,
) -> Next {
    let Some(last) = ledger.last() else {
        return record(0, ladder, modes, &approved);
    };
    // Ledger entries follow the ladder in order; find the last one's rung.
    let index = ledger.len() - 1;
    let Some(timing) = timing.get(index) else {
        return Next::Wait(None);
    };
    match last.result {
        StepResult::AwaitingApproval => {
            if approved(&last.name) {
                Next::Approved { index }
            } else {
                Next::Wait(None)
            }
        }
        StepResult::Pending => Next::Execute { index },
        StepResult::Verifying => {
            let started = last.started_at.as_ref().map_or(now, |t| t.0);
            let healthy_since = last.healthy_since.as_ref().map(|t| t.0);
            match (health, healthy_since) {
                (Health::Healthy, None) => Next::HealthySince { index },
                (Health::Healthy, Some(since)) => {
                    let due = add(since, timing.hold_down);
                    if now >= due {
                        Next::Succeeded { index }
                    } else {
                        Next::Wait(Some(due))
                    }
                }
                (Health::Unhealthy, Some(_)) => Next::Relapsed { index },
                (Health::Unhealthy, None) => {
                    let deadline = add(started, timing.timeout);
                    if now >= deadline {
                        Next::Failed {
                            index,
                            reason: format!("not healthy within {}s", timing.timeout.as_secs()),
                        }
                    } else {
                        Next::Wait(Some(deadline))
                    }
                }
            }
        }
        StepResult::Failed | StepResult::Skipped => {
            if index + 1 < ladder.len() {
                record(index + 1, ladder, modes, &approved)
            } else {
                Next::Exhausted
            }
        }
        StepResult::DryRun => {
            if index + 1 < ladder.len() {
                record(index + 1, ladder, modes, &approved)
            } else {
                Next::DryRunComplete
            }
        }
        StepResult::Succeeded => Next::Wait(None),
    }
}

fn record(
    index: usize,
    ladder: &[Action],
    modes: &[Mode],
    approved: &impl Fn(&str) -> bool,
) -> Next {
    let Some(step) = ladder.get(index) else {
        return Next::Exhausted;
    };
    let awaiting_approval =
        modes.get(index) == Some(&Mode::RequireApproval) && !approved(step.step_name());
    Next::Record {
        index,
        awaiting_approval,
    }
}

/// The ledger id of a step: stable across restarts, unique per incident.
pub fn step_id(incident_uid: &str, index: usize, step: &Action, attempt: i32) -> String {
    let prefix: String = incident_uid.chars().filter(|c| *c != '-').take(8).collect();
    format!("{prefix}-{index}-{}-{attempt}", step.step_name())
}

fn add(at: Timestamp, duration: Duration) -> Timestamp {
    at.checked_add(duration).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ActionKind;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ladder() -> Vec<Action> {
        serde_json::from_value(serde_json::json!([{"action": "rollback"}, {"action": "restart"}]))
            .unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn entry(
        index: usize,
        result: StepResult,
        started: &str,
        healthy_since: Option<&str>,
    ) -> StepRecord {
        let name = ["rollback", "restart"][index];
        StepRecord {
            id: format!("abc-{index}-{name}-1"),
            name: name.into(),
            action: if index == 0 {
                ActionKind::Rollback
            } else {
                ActionKind::Restart
            },
            attempt: 1,
            result,
            started_at: Some(Time(at(started))),
            finished_at: None,
            healthy_since: healthy_since.map(|t| Time(at(t))),
            message: None,
            changes: vec![],
        }
    }

    const TIMING: [Timing; 2] = [
        Timing {
            timeout: Duration::from_secs(300),
            hold_down: Duration::from_secs(60),
        },
        Timing {
            timeout: Duration::from_secs(300),
            hold_down: Duration::from_secs(60),
        },
    ];
    const AUTO: [Mode; 2] = [Mode::Auto, Mode::Auto];

    fn decide(ledger: &[StepRecord], health: Health, now: &str) -> Next {
        next(
            &ladder(),
            &AUTO,
            ledger,
            |_| false,
            health,
            &TIMING,
            at(now),
        )
    }

    #[test]
    fn the_ladder_starts_by_recording_its_first_step() {
        assert_eq!(
            decide(&[], Health::Unhealthy, "2026-01-01T00:00:00Z"),
            Next::Record {
                index: 0,
                awaiting_approval: false
            }
        );
    }

    #[test]
    fn a_recorded_step_is_executed_once_then_verified() {
        let pending = [entry(0, StepResult::Pending, "2026-01-01T00:00:00Z", None)];
        assert_eq!(
            decide(&pending, Health::Unhealthy, "2026-01-01T00:00:01Z"),
            Next::Execute { index: 0 }
        );
        let verifying = [entry(
            0,
            StepResult::Verifying,
            "2026-01-01T00:00:00Z",
            None,
        )];
        assert_eq!(
            decide(&verifying, Health::Unhealthy, "2026-01-01T00:01:00Z"),
            Next::Wait(Some(at("2026-01-01T00:05:00Z")))
        );
        assert_eq!(
            decide(&verifying, Health::Healthy, "2026-01-01T00:01:00Z"),
            Next::HealthySince { index: 0 }
        );
    }

    #[test]
    fn healthy_through_the_hold_down_succeeds_and_a_relapse_resets() {
        let holding = [entry(
            0,
            StepResult::Verifying,
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:01:00Z"),
        )];
        assert_eq!(
            decide(&holding, Health::Healthy, "2026-01-01T00:01:30Z"),
            Next::Wait(Some(at("2026-01-01T00:02:00Z")))
        );
        assert_eq!(
            decide(&holding, Health::Healthy, "2026-01-01T00:02:00Z"),
            Next::Succeeded { index: 0 }
        );
        assert_eq!(
            decide(&holding, Health::Unhealthy, "2026-01-01T00:01:30Z"),
            Next::Relapsed { index: 0 }
        );
    }

    #[test]
    fn a_step_that_does_not_help_moves_to_the_next_then_exhausts() {
        let verifying = [entry(
            0,
            StepResult::Verifying,
            "2026-01-01T00:00:00Z",
            None,
        )];
        assert!(matches!(
            decide(&verifying, Health::Unhealthy, "2026-01-01T00:05:00Z"),
            Next::Failed { index: 0, .. }
        ));
        let failed = [entry(0, StepResult::Failed, "2026-01-01T00:00:00Z", None)];
        assert_eq!(
            decide(&failed, Health::Unhealthy, "2026-01-01T00:05:01Z"),
            Next::Record {
                index: 1,
                awaiting_approval: false
            }
        );
        let both = [
            failed[0].clone(),
            entry(1, StepResult::Failed, "2026-01-01T00:05:01Z", None),
        ];
        assert_eq!(
            decide(&both, Health::Unhealthy, "2026-01-01T00:11:00Z"),
            Next::Exhausted
        );
    }

    #[test]
    fn approval_gates_a_step() {
        let modes = [Mode::RequireApproval, Mode::Auto];
        let first = next(
            &ladder(),
            &modes,
            &[],
            |_| false,
            Health::Unhealthy,
            &TIMING,
            at("2026-01-01T00:00:00Z"),
        );
        assert_eq!(
            first,
            Next::Record {
                index: 0,
                awaiting_approval: true
            }
        );
        let waiting = [entry(
            0,
            StepResult::AwaitingApproval,
            "2026-01-01T00:00:00Z",
            None,
        )];
        let now = at("2026-01-01T00:01:00Z");
        assert_eq!(
            next(
                &ladder(),
                &modes,
                &waiting,
                |_| false,
                Health::Unhealthy,
                &TIMING,
                now
            ),
            Next::Wait(None)
        );
        let approved = next(
            &ladder(),
            &modes,
            &waiting,
            |s| s == "rollback",
            Health::Unhealthy,
            &TIMING,
            now,
        );
        assert_eq!(approved, Next::Approved { index: 0 });
    }

    #[test]
    fn dry_run_walks_the_ladder_without_verifying() {
        let one = [entry(0, StepResult::DryRun, "2026-01-01T00:00:00Z", None)];
        assert_eq!(
            decide(&one, Health::Unhealthy, "2026-01-01T00:00:01Z"),
            Next::Record {
                index: 1,
                awaiting_approval: false
            }
        );
        let both = [
            one[0].clone(),
            entry(1, StepResult::DryRun, "2026-01-01T00:00:01Z", None),
        ];
        assert_eq!(
            decide(&both, Health::Unhealthy, "2026-01-01T00:00:02Z"),
            Next::DryRunComplete
        );
    }

    #[test]
    fn step_ids_are_stable() {
        let step = &ladder()[1];
        assert_eq!(
            step_id("1f2e3d4c-aaaa-bbbb", 1, step, 1),
            "1f2e3d4c-1-restart-1"
        );
    }
}
