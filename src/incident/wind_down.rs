//! A restore under way when its incident closes (resolved, declined) or is
//! deleted: its writers come back before anything else, so closing an
//! incident never strands them at 0 (see `restore_data::wind_down`). The
//! incident's finalizer holds a deletion until they are back. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{
    decision::{Decision, NEEDS_HUMAN},
    observe::Observation,
};
use crate::{
    conditions::{ConditionUpdate, set_condition},
    crd::{Incident, IncidentStatus, StepResult, Workflow},
    remediation::actions::{Mark, restore_data},
};

/// How often a restore winding down is looked at.
const POLL: std::time::Duration = std::time::Duration::from_secs(3);

/// The finalizer an incident carries while a restore may have its writers
/// down: a deletion waits until they are back.
pub const WRITERS_DOWN_FINALIZER: &str = "healing-guard.io/restore-writers";

/// The restore step that may have writers down, if the last step is one.
pub fn restore_under_way(status: &IncidentStatus) -> Option<(usize, Workflow)> {
    let entry = status.steps.len().checked_sub(1)?;
    let record = &status.steps[entry];
    let workflow = record.workflow.as_ref()?;
    (record.result == StepResult::Verifying && restore_data::writers_may_be_down(workflow))
        .then(|| (entry, workflow.clone()))
}

/// Whether the incident must not go away yet: a restore may have its
/// writers down, or it holds a GitOps sync (lifted on deletion).
pub fn holds_writers(status: &IncidentStatus) -> bool {
    restore_under_way(status).is_some() || super::sync_hold::holds_sync(status)
}

/// The next move of a restore whose incident closed or is being deleted.
pub(super) fn wind_down(decision: &mut Decision, incident: &Incident, seen: &Observation) {
    let now = Time(seen.now);
    let Some((entry, workflow)) = restore_under_way(&decision.status) else {
        return;
    };
    // Marked, so that the step ends once the writers are back, whatever
    // the incident does meanwhile (a signal still on reopens it).
    if let Some(marked) = decision.status.steps[entry].workflow.as_mut() {
        marked.wound_down = true;
    }
    let Some(workload) = &seen.workload else {
        // Nothing to scale back through: look again (the finalizer holds).
        decision.requeue_within(POLL);
        return;
    };
    let incident_name = incident.name_any();
    let step_id = decision.status.steps[entry].id.clone();
    let mark = Mark {
        step: &step_id,
        incident: &incident_name,
    };
    match restore_data::wind_down(workload, &workflow, seen.job.as_ref(), mark) {
        restore_data::Move::Act { planned, then } => {
            decision.restore_change(entry, planned, then);
        }
        restore_data::Move::Advance { then, line } => {
            decision.restore_stage((entry, then), line, (&now, true, "RestoreWoundDown"));
        }
        restore_data::Move::Wait => decision.requeue_within(POLL),
        restore_data::Move::Fail(why) => {
            if let Some(record) = decision.status.steps.get_mut(entry) {
                record.result = StepResult::Failed;
                record.finished_at = Some(now.clone());
                record.message = Some(why.clone());
            }
            let update = ConditionUpdate {
                type_: NEEDS_HUMAN,
                status: true,
                reason: "RestoreStopped",
                message: why.clone(),
            };
            let generation = incident.metadata.generation;
            set_condition(&mut decision.status.conditions, update, generation, &now);
            decision.note(&now, true, "RestoreStopped", why);
        }
    }
}

/// A restore that wound down and has its writers back: the step ends,
/// Failed, as it did not bring recovery, and the ledger says why. Looked
/// at on every reconcile, open or closed.
pub(super) fn conclude(decision: &mut Decision, now: &Time) {
    let Some(record) = decision.status.steps.last_mut() else {
        return;
    };
    let wound_down = record.result == StepResult::Verifying
        && record
            .workflow
            .as_ref()
            .is_some_and(|w| w.wound_down && !restore_data::writers_may_be_down(w));
    if !wound_down {
        return;
    }
    record.result = StepResult::Failed;
    record.finished_at = Some(now.clone());
    let message = format!(
        "stopped: the incident was closed mid-restore; its writers are back ({})",
        record.changes.last().cloned().unwrap_or_default()
    );
    record.message = Some(message.clone());
    decision.note(now, false, "RestoreWoundDown", message);
}
