//! The gate before a step runs: the safety limits (cooldown, budget,
//! circuit breaker), one actor per target, an approval that holds its
//! target, and what is missing (policy, rule, target). Each says why in the
//! `RemediationBlocked` condition. Pure.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    decision::{APPROVAL_RECHECK, BREAKER_RECHECK, Decision, REMEDIATION_BLOCKED, TARGET_MISSING},
    observe::Observation,
};
use crate::{
    conditions::{ConditionUpdate, set_condition},
    crd::Incident,
    remediation::{ladder::Ladder, safety},
};

/// Says in the RemediationBlocked condition (and once in the timeline) why
/// the ladder cannot move, and looks again now and then.
pub(super) fn block(
    decision: &mut Decision,
    incident: &Incident,
    reason: &'static str,
    message: String,
    now: Timestamp,
) {
    let update = ConditionUpdate {
        type_: REMEDIATION_BLOCKED,
        status: true,
        reason,
        message: message.clone(),
    };
    let now = Time(now);
    if set_condition(
        &mut decision.status.conditions,
        update,
        incident.metadata.generation,
        &now,
    ) {
        decision.note(&now, true, REMEDIATION_BLOCKED, message);
    }
    decision.requeue_within(TARGET_MISSING);
}

/// Clears a RemediationBlocked condition set because something was
/// missing, once it is back.
pub(super) fn unblock(decision: &mut Decision, incident: &Incident, now: &Time) {
    let missing = decision.status.conditions.iter().any(|c| {
        c.type_ == REMEDIATION_BLOCKED
            && c.status == "True"
            && matches!(
                c.reason.as_str(),
                "PolicyNotFound"
                    | "RuleNotFound"
                    | "TargetNotFound"
                    | "InvalidSpec"
                    | "PolicyInvalid"
                    | "DependencyDown"
            )
    });
    if missing {
        let update = ConditionUpdate {
            type_: REMEDIATION_BLOCKED,
            status: false,
            reason: "Resumed",
            message: "what the ladder needs is back; remediation resumes".into(),
        };
        set_condition(
            &mut decision.status.conditions,
            update,
            incident.metadata.generation,
            now,
        );
    }
}

/// Applies the safety limits before a step may run. Returns how long to
/// wait when blocked (and says why in a condition); None when it may run.
/// `approved`: a responder approved this step; another incident's pending
/// approval then does not hold it (the approval gate is for automatic
/// actions; a human who approved has decided).
pub(super) fn gate(
    decision: &mut Decision,
    incident: &Incident,
    ladder: &Ladder,
    seen: &Observation,
    approved: bool,
) -> Option<Duration> {
    let now = seen.now;
    let limits = safety::Limits {
        cooldown: ladder.safety.cooldown.as_std(),
        max_actions: ladder.safety.max_actions,
        window: ladder.safety.window.as_std(),
        breaker_threshold: ladder.safety.circuit_breaker_threshold,
    };
    let breaker = safety::breaker(
        &seen.policy_steps,
        limits.breaker_threshold,
        ladder.breaker_reset_at,
    );
    let now_time = Time(now);
    let generation = incident.metadata.generation;
    let conditions = &mut decision.status.conditions;
    // Held by another incident: said without a time (none is known), so
    // the condition does not change with every look.
    let held = match (&seen.target_holder, &seen.approval_pending) {
        // One actor per target: another incident's step is on it, unconcluded.
        (Some(other), _) => Some(format!(
            "incident {other} is acting on the same target and its step has not \
             concluded; one actor per target"
        )),
        // An approval gate holds for every action on the target while it waits.
        (None, Some((other, step))) if !approved => Some(format!(
            "incident {other} waits for approval of its step {step} on the same target; \
             no automatic action on it meanwhile"
        )),
        (None, _) => None,
    };
    let held_by_other = held.is_some();
    let verdict = match held {
        Some(why) => safety::Verdict::Refuse(why),
        None => safety::check(&seen.target_steps, breaker, &limits, now),
    };
    let (message, wait) = match verdict {
        safety::Verdict::Allow => {
            if conditions.iter().any(|c| c.type_ == REMEDIATION_BLOCKED) {
                let update = ConditionUpdate {
                    type_: REMEDIATION_BLOCKED,
                    status: false,
                    reason: "Allowed",
                    message: "safety limits allow the next step".into(),
                };
                set_condition(conditions, update, generation, &now_time);
            }
            return None;
        }
        safety::Verdict::WaitUntil(until, why) => {
            let wait = Duration::try_from(until.duration_since(now)).unwrap_or_default()
                + Duration::from_secs(1);
            (format!("{why}; next step not before {until}"), wait)
        }
        // Another incident's change wakes this one; a breaker reset is an
        // annotation on the policy. Both are also looked at now and then.
        safety::Verdict::Refuse(why) if held_by_other => (why, APPROVAL_RECHECK),
        safety::Verdict::Refuse(why) => (why, BREAKER_RECHECK),
    };
    let update = ConditionUpdate {
        type_: REMEDIATION_BLOCKED,
        status: true,
        reason: if seen.target_holder.is_some() {
            "TargetBusy"
        } else if seen.approval_pending.is_some() && !approved {
            "AwaitingApprovalOnTarget"
        } else if breaker.open {
            "CircuitBreakerOpen"
        } else {
            "SafetyLimit"
        },
        message: message.clone(),
    };
    if set_condition(conditions, update, generation, &now_time) {
        decision.note(&now_time, true, REMEDIATION_BLOCKED, message);
    }
    Some(wait)
}
