//! The moves of a restoreData step (see [`restore_data`]): begin it with
//! the writers' replicas recorded, then advance it a sub-step at a time
//! (scale down, restore, scale up), waiting for its Job and its data, and
//! stop with a human called when it cannot go on. Pure, like the ladder's
//! other moves in [`super::moves`].

use kube::ResourceExt;

use super::{
    decision::{AFTER_RECORD, Decision},
    moves::Step,
    settle::refuse,
};
use crate::{
    crd::{StepResult, Workflow},
    remediation::{
        actions::{Mark, restore_data},
        ladder,
    },
};

/// How often a restore waiting for its Job or its data is looked at.
const WORKFLOW_POLL: std::time::Duration = std::time::Duration::from_secs(3);

impl Step<'_> {
    /// Starts a restoreData step: the writers' replicas recorded, the
    /// scale-down next. Nothing changes in the cluster yet.
    pub(super) fn begin_workflow(
        &self,
        decision: &mut Decision,
        entry: usize,
        rung: &ladder::Rung,
    ) {
        let empty = restore_data::Inputs::default();
        let inputs = self.seen.inputs.get().unwrap_or(&empty);
        let workflow = match restore_data::begin(&rung.action, inputs) {
            Ok(workflow) => workflow,
            Err(refusal) => {
                refuse(decision, entry, &refusal, &self.now);
                return;
            }
        };
        let Some(record) = decision.status.steps.get_mut(entry) else {
            return;
        };
        let replicas: Vec<String> = workflow
            .replicas
            .iter()
            .map(|r| format!("{}/{} {}", r.kind, r.name, r.replicas))
            .collect();
        record.result = StepResult::Verifying;
        record.started_at = Some(self.now.clone());
        record.changes = vec![format!(
            "writers' replicas recorded: {}",
            replicas.join(", ")
        )];
        record.workflow = Some(workflow);
        let message = format!(
            "step {} began: writers' replicas recorded ({}); scaling them to 0 next",
            record.name,
            replicas.join(", ")
        );
        decision.note(&self.now, false, "StepApplied", message);
        decision.requeue_within(AFTER_RECORD);
    }

    /// The next sub-step of a restoreData step under way.
    pub(super) fn advance_workflow(
        &self,
        decision: &mut Decision,
        entry: usize,
        workflow: &Workflow,
    ) {
        let Some(record) = decision.status.steps.get(entry) else {
            return;
        };
        let Some(rung) = self.ladder.rung_of(record) else {
            let why = format!(
                "its restoreData action is no longer in the ladder; {}",
                restore_data::state(workflow, &self.workload.namespace())
            );
            self.fail_and_escalate(decision, entry, &why);
            return;
        };
        let incident = self.incident.name_any();
        let step_id = record.id.clone();
        let started = record.started_at.as_ref().map_or(self.now.0, |t| t.0);
        let mark = Mark {
            step: &step_id,
            incident: &incident,
        };
        let next = restore_data::advance(
            &rung.action,
            self.workload,
            workflow,
            self.seen.job.as_ref(),
            self.seen.workflow_probe,
            mark,
        );
        match next {
            restore_data::Move::Act { planned, then } => {
                decision.restore_change(entry, planned, then);
            }
            restore_data::Move::Advance { then, line } => {
                decision.restore_stage((entry, then), line, (&self.now, false, "RestoreProgress"));
            }
            restore_data::Move::Wait => {
                let deadline = started
                    .checked_add(rung.timing.timeout)
                    .unwrap_or(k8s_openapi::jiff::Timestamp::MAX);
                if self.now.0 >= deadline {
                    let why = format!(
                        "restore stopped at {}: not done within the step's timeout; {}",
                        workflow.stage,
                        restore_data::state(workflow, &self.workload.namespace())
                    );
                    self.fail_and_escalate(decision, entry, &why);
                } else {
                    decision.requeue_within(WORKFLOW_POLL);
                }
            }
            restore_data::Move::Fail(why) => self.fail_and_escalate(decision, entry, &why),
        }
    }

    /// A restore that failed with its writers down: no further step, a human now.
    pub(super) fn fail_and_escalate(&self, decision: &mut Decision, entry: usize, why: &str) {
        self.fail(decision, entry, why);
        self.escalate(decision, "RestoreStopped", why.to_owned());
    }
}
