//! Settle: record how the decision's one change went - made, refused for
//! good by the API server, or failing again and again - in the status that
//! is saved next. Pure.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::decision::{AFTER_RECORD, Decision, step_ended};
use crate::{
    context::PlannedEvent,
    crd::{Incident, StepResult},
};

/// A step refused before it changed anything: it fails, the ladder goes on.
pub(super) fn refuse(
    decision: &mut Decision,
    entry: usize,
    refusal: &dyn std::fmt::Display,
    now: &Time,
) {
    let Some(record) = decision.status.steps.get_mut(entry) else {
        return;
    };
    record.result = StepResult::Failed;
    record.finished_at = Some(now.clone());
    record.message = Some(refusal.to_string());
    let ended = step_ended(record, now.0);
    let message = format!("step {} refused: {refusal}", record.name);
    decision.tallies.push(ended);
    decision.note(now, true, "StepRefused", message);
    decision.requeue_within(AFTER_RECORD);
}

/// Records that the decision's effect was refused for good (an invalid
/// value, a forbidden write, an admission webhook's denial, a service's
/// answer): the step fails with the message and the ladder moves on.
/// `what` says who refused it (the API server, the service a step called).
/// Pure.
pub fn settle_refused(
    mut decision: Decision,
    what: &str,
    message: &str,
    now: Timestamp,
) -> Decision {
    let Some(effect) = decision.effect.take() else {
        return decision;
    };
    let reason = format!("{what} ({}): {message}", effect.planned.summary);
    refuse(&mut decision, effect.entry, &reason, &Time(now));
    decision
}

/// How many reconciles in a row may fail (applying a step with an error a
/// retry might cure, or anything else) before the pending step fails for
/// good: a server error can be permanent too (this API server answers an
/// unparsable quantity with a 500), and no step waits forever.
pub const MAX_APPLY_FAILURES: u32 = 5;

/// Records that applying the decision's effect failed `failures` times in a
/// row, the last time with `error`: the step fails and the ladder moves on. Pure.
pub fn settle_gave_up(
    mut decision: Decision,
    failures: u32,
    error: &str,
    now: Timestamp,
) -> Decision {
    let Some(effect) = decision.effect.take() else {
        return decision;
    };
    let reason = format!(
        "applying it failed {failures} times in a row ({}); last: {error}",
        effect.planned.summary
    );
    refuse(&mut decision, effect.entry, &reason, &Time(now));
    decision
}

/// Records the outcome of the decision's effect, applied with `lines` for
/// the ledger. Pure, like [`decide`].
pub fn settle(
    mut decision: Decision,
    lines: Vec<String>,
    incident: &Incident,
    now: Timestamp,
) -> Decision {
    let Some(effect) = decision.effect.clone() else {
        return decision;
    };
    let now_time = Time(now);
    let Some(record) = decision.status.steps.get_mut(effect.entry) else {
        return decision;
    };
    if let Some(then) = effect.then {
        // A restore's sub-step made: its line, and the next stage.
        record.changes.push(effect.planned.summary.clone());
        record.changes.extend(lines);
        if let Some(workflow) = record.workflow.as_mut() {
            workflow.stage = then;
        }
        let message = format!("step {}: {}", record.name, effect.planned.summary);
        decision.note(&now_time, false, "RestoreProgress", message);
        return decision;
    }
    if effect.hold_only {
        // The hold alone: its line in the step's entry; the step stays
        // Pending, its change made once the GitOps controller is quiet.
        record.changes.extend(lines);
        if let Some(held) = &effect.hold {
            let step = record.id.clone();
            super::sync_hold::begin(&mut decision, incident, held, step, &now_time);
        }
        decision.requeue_within(crate::gitops::BUSY_POLL);
        return decision;
    }
    if effect.follow_up {
        // A refusal repeated batch after batch is said once.
        for line in lines {
            if !record.changes.contains(&line) {
                record.changes.push(line);
            }
        }
        return decision;
    }
    let summary = effect.planned.summary.clone();
    record.changes = if effect.dry_run {
        // What would have happened, not what did: the change, and the
        // GitOps hold it would have been made under (or why none).
        std::iter::once(format!("dry run, nothing changed: {summary}"))
            .chain(lines.into_iter().filter(|line| {
                line.starts_with(super::act::WOULD_SUSPEND) || effect.notes.contains(line)
            }))
            .collect()
    } else {
        // The hold made before it (its own pass) keeps its line first.
        std::mem::take(&mut record.changes)
            .into_iter()
            .filter(|line| crate::gitops::is_hold_line(line))
            .chain(std::iter::once(summary.clone()))
            .chain(lines)
            .collect()
    };
    record.started_at = Some(now_time.clone());
    let name = record.name.clone();
    if !effect.dry_run {
        record.result = StepResult::Verifying;
        let note = format!(
            "{summary} (incident {}, step {})",
            incident.name_any(),
            record.id
        );
        // One Event for the change, on the workload it changed (naming the
        // incident); the incident's timeline has it too.
        decision.workload_events.push(PlannedEvent::normal(
            "RemediationApplied",
            "Remediate",
            note,
        ));
        let message = format!("step {name} applied: {summary}");
        decision.note_in_timeline(&now_time, "StepApplied", message);
        return decision;
    }
    record.result = StepResult::DryRun;
    record.finished_at = Some(now_time.clone());
    // Why it was only a dry run, when the policy said so, stays said.
    record.message = Some(match record.message.take() {
        Some(why) => format!("server-side dry run passed; nothing changed ({why})"),
        None => "server-side dry run passed; nothing changed".into(),
    });
    let ended = step_ended(record, now);
    decision.tallies.push(ended);
    let message = format!("dry run of step {name}: would do {summary}");
    decision.note(&now_time, false, "StepApplied", message);
    decision
}
