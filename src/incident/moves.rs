//! The moves of the ladder, one function each: record a step, approve it,
//! plan its change, skip it, hold, relapse, succeed, fail, escalate, end a
//! dry run (a restoreData step's own moves are in [`restore_moves`]).
//! Each changes the decision's status; only `phase` moves the phase. Pure.
//!
//! [`restore_moves`]: super::restore_moves

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{
    decision::{
        AFTER_CHANGE, AFTER_RECORD, Decision, Effect, NEEDS_HUMAN, Tally, seconds_between,
        step_ended,
    },
    gate::gate,
    observe::Observation,
    phase::{self, Transition},
    settle::refuse,
};
use crate::{
    conditions::{ConditionUpdate, set_condition},
    crd::{ActionKind, Incident, IncidentStatus, Mode, StepRecord, StepResult},
    gitops::{self, hold::HoldPlan},
    remediation::{
        actions::{self, Mark, Request},
        ladder::Ladder,
        step_id::step_id,
    },
    workload::Workload,
};

/// How long a step waits for something passing before it fails: the
/// Deployment controller sees a new spec within a second or two unless it
/// is down.
const PASSING_LIMIT: Duration = Duration::from_secs(30);

/// What every move of the ladder reads.
pub(super) struct Step<'a> {
    pub(super) incident: &'a Incident,
    pub(super) ladder: &'a Ladder,
    pub(super) seen: &'a Observation,
    pub(super) workload: &'a Workload,
    pub(super) now: Time,
}

impl Step<'_> {
    /// Whether a responder approved the step of that name, in that round.
    pub(super) fn approved(&self, name: &str, round: i32) -> bool {
        self.ladder
            .approved(&self.incident.spec.approvals, name, round)
    }

    /// The ladder's round: 1, and one more after each reopen.
    pub(super) fn round(&self, status: &IncidentStatus) -> i32 {
        status.round()
    }

    /// Writes rung `index` into the ledger (Pending, or AwaitingApproval),
    /// unless the safety limits hold it back; it runs on the next reconcile.
    pub(super) fn record(&self, decision: &mut Decision, index: usize, awaiting_approval: bool) {
        let Some(rung) = self.ladder.rungs.get(index) else {
            return;
        };
        let runs_now = !awaiting_approval && rung.mode != Mode::DryRun;
        let round = self.round(&decision.status);
        let approved = rung.mode == Mode::RequireApproval && self.approved(rung.name(), round);
        if runs_now
            && let Some(wait) = gate(decision, self.incident, self.ladder, self.seen, approved)
        {
            decision.requeue_within(wait);
            return;
        }
        let entry = decision.status.steps.len();
        // A full ledger could not be saved: a human takes it from here.
        if entry >= crate::crd::MAX_STEPS {
            let message = format!(
                "the ledger holds its most steps ({}) after {} round(s); step {} ({}) is not \
                 recorded and nothing more is done automatically",
                crate::crd::MAX_STEPS,
                round,
                rung.name(),
                rung.action.action
            );
            self.escalate(decision, "LedgerFull", message);
            return;
        }
        let uid = self.incident.uid().unwrap_or_default();
        decision.status.steps.push(StepRecord {
            id: step_id(&uid, entry, rung.name(), round),
            name: rung.name().to_owned(),
            action: rung.action.action,
            rule: self.ladder.rule_name.clone(),
            attempt: round,
            result: if awaiting_approval {
                StepResult::AwaitingApproval
            } else {
                StepResult::Pending
            },
            started_at: Some(self.now.clone()),
            finished_at: None,
            healthy_since: None,
            message: if awaiting_approval {
                Some(awaiting_approval_message(rung.name(), round))
            } else {
                rung.limited.clone()
            },
            changes: Vec::new(),
            verification: Vec::new(),
            applying_since: None,
            workflow: None,
            replacing: Vec::new(),
            relapsed_at: None,
        });
        if runs_now {
            phase::enter(&mut decision.status, Transition::StartStep, &self.now);
        }
        let (name, action) = (rung.name(), rung.action.action);
        let message = if awaiting_approval {
            format!("step {name} ({action}) needs approval")
        } else {
            let mode = rung.mode;
            match &rung.limited {
                Some(why) => format!("step {name} ({action}) recorded, mode {mode}: {why}"),
                None => format!("step {name} ({action}) recorded, mode {mode}"),
            }
        };
        // Saved first; then run, in this reconcile once the save is done.
        if awaiting_approval {
            decision.note(&self.now, false, "StepRecorded", message);
            decision.requeue_within(AFTER_RECORD);
        } else {
            // How it went (applied, refused) is the Event, a moment later.
            decision.note_in_timeline(&self.now, "StepRecorded", message);
            decision.go_on();
        }
    }

    /// A responder approved the waiting step: it becomes Pending, if the
    /// safety limits allow it now.
    pub(super) fn approve(&self, decision: &mut Decision, entry: usize) {
        if let Some(wait) = gate(decision, self.incident, self.ladder, self.seen, true) {
            decision.requeue_within(wait);
            return;
        }
        if let Some(record) = decision.status.steps.get_mut(entry) {
            record.result = StepResult::Pending;
            record.message = Some("approved".into());
        }
        phase::enter(&mut decision.status, Transition::StartStep, &self.now);
        decision.go_on();
    }

    /// Plans the Pending step's change (made by `act`), or refuses it.
    pub(super) fn execute(&self, decision: &mut Decision, entry: usize, rung: usize) {
        decision.requeue_within(AFTER_CHANGE);
        let (Some(rung), Some(record)) = (
            self.ladder.rungs.get(rung),
            decision.status.steps.get(entry),
        ) else {
            return;
        };
        if self.workload.applied_step() == Some(record.id.as_str()) {
            // Applied before a restart (or a lost status write) cut the
            // bookkeeping short: never again, and it counts as applied.
            let target = self.workload.reference();
            let record = &mut decision.status.steps[entry];
            record.result = StepResult::Verifying;
            record.message = Some("already applied (found on the workload after a restart)".into());
            if record.changes.is_empty() {
                record.changes = vec![format!(
                    "{target} carries this step's mark: applied before its record was saved"
                )];
            }
            return;
        }
        // Re-checked as it runs: another incident may have acted on the
        // target since this step was recorded, and the approval it ran on
        // must still stand, for its round.
        let approved =
            rung.mode == Mode::RequireApproval && self.approved(rung.name(), record.attempt);
        if rung.mode == Mode::RequireApproval && !approved {
            let record = &mut decision.status.steps[entry];
            record.result = StepResult::AwaitingApproval;
            record.message = Some(awaiting_approval_message(rung.name(), record.attempt));
            decision.note(
                &self.now,
                true,
                "ApprovalWithdrawn",
                format!(
                    "step {} waits again: its approval no longer stands",
                    rung.name()
                ),
            );
            decision.requeue_within(AFTER_RECORD);
            return;
        }
        if let Some(wait) = gate(decision, self.incident, self.ladder, self.seen, approved) {
            decision.requeue_within(wait);
            return;
        }
        let Some(record) = decision.status.steps.get(entry) else {
            return;
        };
        // Begun before a restart, and how it went never recorded: made
        // again only if making it twice does no harm.
        if let Some(since) = &record.applying_since
            && !rung.act().repeatable(&rung.action)
        {
            let refusal = actions::Refusal::OutcomeUnknown(since.0.to_string());
            refuse(decision, entry, &refusal, &self.now);
            return;
        }
        // A restore's first sub-step is the record of its writers' replicas,
        // saved before anything changes.
        if rung.action.action == ActionKind::RestoreData && rung.mode != Mode::DryRun {
            self.begin_workflow(decision, entry, rung);
            return;
        }
        let incident = self.incident.name_any();
        let step_id = record.id.clone();
        let mark = Mark {
            step: &step_id,
            incident: &incident,
        };
        let min_ready = self.ladder.safety.min_ready_replicas;
        let planned = match actions::ready_floor(&rung.action, self.workload, min_ready) {
            Some(refusal) => Err(refusal),
            None => rung.act().plan(
                &Request {
                    action: &rung.action,
                    workload: self.workload,
                    mark,
                    now: self.now.0,
                },
                &self.seen.inputs,
            ),
        };
        let holder = format!(
            "{}/{incident}",
            self.incident.namespace().unwrap_or_default()
        );
        let on_rollback = self
            .seen
            .policy
            .as_ref()
            .and_then(|p| p.spec.gitops.as_ref())
            .map(|g| g.on_rollback)
            .unwrap_or_default();
        let hold = gitops::hold::plan(
            on_rollback,
            rung.act().undone_by_git(),
            self.seen.gitops_owner.as_ref(),
            self.seen.sync.as_ref(),
            &holder,
        );
        let (hold, notes) = match hold {
            HoldPlan::Refuse(why) if planned.is_ok() => {
                refuse(decision, entry, &why, &self.now);
                return;
            }
            HoldPlan::Suspend(state) => (Some(*state), Vec::new()),
            HoldPlan::Unheld(why) => (None, vec![why]),
            HoldPlan::HeldBusy if planned.is_ok() => match self.busy_for_too_long(decision) {
                Some(line) => (None, vec![line]),
                None => {
                    decision.requeue_within(gitops::BUSY_POLL);
                    return;
                }
            },
            HoldPlan::Refuse(_) | HoldPlan::HeldBusy | HoldPlan::Held | HoldPlan::NotNeeded => {
                (None, Vec::new())
            }
        };
        // A real hold is made first, alone; the change follows once the
        // GitOps controller is quiet. A dry run checks both at once.
        let hold_only = hold.is_some() && rung.mode != Mode::DryRun;
        match planned {
            Ok(planned) => {
                let mut first_batch = None;
                if rung.mode != Mode::DryRun
                    && let Some(uids) = rung.act().replacing(&rung.action, &self.seen.pods)
                    && let Some(record) = decision.status.steps.get_mut(entry)
                {
                    record.replacing = uids;
                    // Made with the change, saved in the same record: the
                    // pods it is planned from are the ones just seen.
                    let progress = actions::Progress {
                        started: self.now.0,
                        replacing: &record.replacing,
                    };
                    first_batch = rung.act().follow_up(
                        &rung.action,
                        &self.seen.pods,
                        progress,
                        self.ladder.safety.min_ready_replicas,
                    );
                }
                decision.effect = Some(Effect {
                    entry,
                    planned,
                    dry_run: rung.mode == Mode::DryRun,
                    follow_up: false,
                    then: None,
                    hold,
                    notes,
                    hold_only,
                    first_batch: first_batch.filter(|_| !hold_only),
                });
            }
            Err(refusal) if refusal.is_passing() && !self.waited_too_long(decision, entry) => {
                decision.requeue_within(AFTER_CHANGE);
            }
            Err(refusal) if refusal.is_moot() => {
                let message = refusal.to_string();
                self.skip_with(decision, entry, "StepSkipped", message, false);
            }
            Err(refusal) => refuse(decision, entry, &refusal, &self.now),
        }
    }

    /// A step that waits for something passing (a rollout history about to
    /// settle) has waited since it was recorded for longer than it may:
    /// it fails, and someone looks at why the wait did not end.
    fn waited_too_long(&self, decision: &Decision, entry: usize) -> bool {
        let Some(since) = decision
            .status
            .steps
            .get(entry)
            .and_then(|r| r.started_at.as_ref())
        else {
            return false;
        };
        let limit = since.0.checked_add(PASSING_LIMIT).unwrap_or(since.0);
        self.now.0 >= limit
    }

    /// The GitOps controller has been reconciling since the hold began for
    /// longer than it may: the change is made anyway, and its line says so.
    fn busy_for_too_long(&self, decision: &Decision) -> Option<String> {
        let hold = decision.status.current_hold()?;
        let since = hold.suspended_at.0;
        let limit = since.checked_add(gitops::BUSY_LIMIT).unwrap_or(since);
        (self.now.0 >= limit).then(|| {
            format!(
                "{} was still reconciling {} after it was suspended: changed anyway",
                hold.owner,
                crate::crd::duration::spoken(gitops::BUSY_LIMIT)
            )
        })
    }

    /// The incident to a human, once: Escalated, `NeedsHuman` with why.
    pub(super) fn escalate(&self, decision: &mut Decision, reason: &'static str, message: String) {
        if !phase::enter(&mut decision.status, Transition::Exhaust, &self.now) {
            return;
        }
        decision.tallies.push(Tally::LadderExhausted);
        let update = ConditionUpdate {
            type_: NEEDS_HUMAN,
            status: true,
            reason,
            message: message.clone(),
        };
        let generation = self.incident.metadata.generation;
        set_condition(
            &mut decision.status.conditions,
            update,
            generation,
            &self.now,
        );
        decision.note(&self.now, true, "Escalated", message);
    }

    /// A recorded step left the ladder before it ran: it never runs.
    pub(super) fn skip(&self, decision: &mut Decision, entry: usize) {
        let Some(record) = decision.status.steps.get(entry) else {
            return;
        };
        let message = format!(
            "its {} action is no longer in the ladder (the policy changed); it was not run",
            record.action
        );
        self.skip_with(decision, entry, "StepSkipped", message, true);
    }

    /// Ends a step as Skipped: it changed nothing, and the ladder moves on.
    pub(super) fn skip_with(
        &self,
        decision: &mut Decision,
        entry: usize,
        reason: &str,
        message: String,
        warning: bool,
    ) {
        let Some(record) = decision.status.steps.get_mut(entry) else {
            return;
        };
        record.result = StepResult::Skipped;
        record.finished_at = Some(self.now.clone());
        record.message = Some(message.clone());
        let message = format!("step {}: {message}", record.name);
        decision.note(&self.now, warning, reason, message);
        decision.go_on();
    }

    /// The target turned healthy: the hold-down starts.
    pub(super) fn hold(&self, decision: &mut Decision, entry: usize) {
        let Some(record) = decision.status.steps.get_mut(entry) else {
            return;
        };
        record.healthy_since = Some(self.now.clone());
        let hold_down = self
            .ladder
            .rung_of(record)
            .map_or(self.ladder.default_timing, |r| r.timing)
            .hold_down;
        phase::enter(&mut decision.status, Transition::HoldHealthy, &self.now);
        decision.requeue_within(hold_down + Duration::from_secs(1));
    }

    /// The target turned unhealthy again during the hold-down.
    pub(super) fn relapse(&self, decision: &mut Decision, entry: usize) {
        if let Some(record) = decision.status.steps.get_mut(entry) {
            record.healthy_since = None;
        }
        phase::enter(&mut decision.status, Transition::Relapse, &self.now);
        decision.requeue_within(Duration::from_secs(2));
    }

    /// The target stayed healthy through the hold-down: mitigated and resolved.
    pub(super) fn succeed(&self, decision: &mut Decision, entry: usize) {
        let Some(record) = decision.status.steps.get_mut(entry) else {
            return;
        };
        record.result = StepResult::Succeeded;
        record.finished_at = Some(self.now.clone());
        record.verification = self.seen.probe_results.clone();
        let ended = step_ended(record, self.now.0);
        let healthy_since = record.healthy_since.clone();
        let name = record.name.clone();
        decision.tallies.push(ended);
        let milestones = &mut decision.status.milestones;
        milestones.mitigated_at = healthy_since.or(Some(self.now.clone()));
        if let (Some(detected), Some(mitigated)) =
            (&milestones.detected_at, &milestones.mitigated_at)
        {
            let seconds = seconds_between(detected.0, mitigated.0);
            decision.tallies.push(Tally::Mitigated { seconds });
        }
        // Under a held sync the incident waits on Git: the fix belongs there.
        if let Some(hold) = decision.status.current_hold().filter(|h| h.is_held()) {
            let message = format!(
                "step {name} verified: the workload recovered and stayed healthy; {} stays \
                 suspended until Git moves past the bad revision",
                hold.owner
            );
            decision.note(&self.now, false, "Remediated", message);
            decision.go_on();
            return;
        }
        phase::enter(&mut decision.status, Transition::Remediated, &self.now);
        let message =
            format!("step {name} verified: the workload recovered and stayed healthy; resolved");
        decision.note(&self.now, false, "Remediated", message);
    }

    /// The step did not bring recovery in time; the ladder goes on.
    pub(super) fn fail(&self, decision: &mut Decision, entry: usize, reason: &str) {
        let Some(record) = decision.status.steps.get_mut(entry) else {
            return;
        };
        record.result = StepResult::Failed;
        record.finished_at = Some(self.now.clone());
        record.message = Some(reason.to_owned());
        record.verification = self.seen.probe_results.clone();
        let ended = step_ended(record, self.now.0);
        let message = format!("step {} did not help: {reason}", record.name);
        decision.tallies.push(ended);
        decision.note(&self.now, true, "StepFailed", message);
        decision.go_on();
    }

    /// Every step was tried: escalate to a human, once.
    pub(super) fn exhaust(&self, decision: &mut Decision) {
        let message = format!(
            "all {} step(s) tried, none brought recovery; a human must act",
            self.ladder.rungs.len()
        );
        self.escalate(decision, "LadderExhausted", message);
    }

    /// Every step of a dry run was planned and checked: say so, once.
    pub(super) fn complete_dry_run(&self, decision: &mut Decision) {
        let timeline = &decision.status.timeline;
        if timeline.iter().any(|e| e.reason == "DryRunComplete") {
            return;
        }
        let message = format!(
            "dry run: {} step(s) planned and checked; nothing was changed",
            self.ladder.rungs.len()
        );
        decision.note(&self.now, false, "DryRunComplete", message);
    }
}

/// What a step waiting for approval says: where the approval goes, and for
/// which round once the incident has reopened.
fn awaiting_approval_message(step: &str, round: i32) -> String {
    if round > 1 {
        format!(
            "waiting for approval of step {step:?} for round {round} in spec.approvals \
             ({{step: {step}, by: <you>, round: {round}}})"
        )
    } else {
        format!("waiting for approval of step {step:?} in spec.approvals")
    }
}
