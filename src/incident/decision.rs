//! What one reconcile decides, as data: the status to save, at most one
//! change to make, and what to announce once the status is saved. Shared by
//! the deciding modules (decide, gate, moves, settle), which import it and
//! never each other in a circle.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::lifecycle;
use crate::{
    context::PlannedEvent,
    crd::{
        ActionKind, IncidentStatus, Severity, StepRecord, StepResult, TimelineEntry, WorkflowStage,
    },
    remediation::actions::Planned,
};

pub use super::lifecycle::NEEDS_HUMAN;
/// Condition set while the safety limits hold a step back.
pub const REMEDIATION_BLOCKED: &str = "RemediationBlocked";

/// How soon to look again after recording a step (the next reconcile runs it).
pub(super) const AFTER_RECORD: Duration = Duration::from_millis(200);
/// How soon to look again while a change rolls out.
pub(super) const AFTER_CHANGE: Duration = Duration::from_secs(1);
/// How soon to look again for a target that does not exist (yet).
pub(super) const TARGET_MISSING: Duration = Duration::from_secs(30);
/// How soon to look again while another incident's step on the same target
/// awaits approval or runs (its changes also wake this one).
pub(super) const APPROVAL_RECHECK: Duration = Duration::from_secs(30);
/// How soon to check again a circuit breaker only a human can close.
pub(super) const BREAKER_RECHECK: Duration = Duration::from_secs(60);

/// A metric to count once the status that records it is saved.
#[derive(Clone, Debug, PartialEq)]
pub enum Tally {
    Opened {
        source: &'static str,
        rule: String,
    },
    SlaBreached {
        deadline: &'static str,
    },
    StepEnded {
        action: ActionKind,
        result: StepResult,
        seconds: Option<f64>,
    },
    Acknowledged {
        severity: Severity,
        seconds: f64,
    },
    Mitigated {
        seconds: f64,
    },
    Resolved {
        seconds: f64,
    },
    LadderExhausted,
}

/// The one change a reconcile makes to the world.
#[derive(Clone, Debug, PartialEq)]
pub struct Effect {
    /// The ledger entry it belongs to.
    pub entry: usize,
    pub planned: Planned,
    /// A server-side dry run: checked by the API server, nothing changed.
    pub dry_run: bool,
    /// More of a step already applied (the next batch of pod deletions).
    pub follow_up: bool,
    /// A restore's sub-step: the stage its workflow is at once the change is made.
    pub then: Option<crate::crd::WorkflowStage>,
    /// The GitOps object to suspend first, in the same ledger entry, so
    /// that Git does not undo the change.
    pub hold: Option<crate::gitops::SyncState>,
    /// Lines for the ledger decided with the change (why a sync was not held).
    pub notes: Vec<String>,
    /// Only the hold, this pass: the change follows once the GitOps
    /// controller has no reconcile under way (one begun before the
    /// suspension could still undo it).
    pub hold_only: bool,
    /// A step applied in parts: its first part, made right after the
    /// change that marks it applied (a DeletePods restart's first batch of
    /// evictions), planned from the same pods. The rest follows while it
    /// verifies.
    pub first_batch: Option<Planned>,
}

/// What one reconcile should do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// The status to save.
    pub status: IncidentStatus,
    /// The change to make before saving, if any.
    pub effect: Option<Effect>,
    /// Events on the Incident, published after the status is saved.
    pub events: Vec<PlannedEvent>,
    /// Events on the target workload, published after the status is saved.
    pub workload_events: Vec<PlannedEvent>,
    /// Metrics, counted after the status is saved.
    pub tallies: Vec<Tally>,
    /// When to look again, unless something changes first.
    pub requeue: Option<Duration>,
    /// A GitOps object whose hold this incident lifts.
    pub resume: Option<crate::crd::GitOpsOwner>,
    /// The revert branch to push for the current hold (policy opt-in).
    pub revert: Option<crate::gitops::revert::RevertPlan>,
    /// What is saved leads straight to the next move (a step recorded, to
    /// run; approved; skipped or failed, with another to record): decide
    /// again at once from the saved incident, not after its watch echo.
    pub again: bool,
}

impl Decision {
    pub(super) fn requeue_within(&mut self, wait: Duration) {
        self.requeue = Some(self.requeue.map_or(wait, |r| r.min(wait)));
    }

    /// A restore's sub-step of step `entry`: the change, then the stage
    /// its workflow is at once it is made.
    pub(super) fn restore_change(&mut self, entry: usize, planned: Planned, then: WorkflowStage) {
        self.effect = Some(Effect {
            entry,
            planned,
            dry_run: false,
            follow_up: true,
            then: Some(then),
            hold: None,
            notes: Vec::new(),
            hold_only: false,
            first_batch: None,
        });
        self.requeue_within(AFTER_CHANGE);
    }

    /// A restore of step `entry` goes on to `then` with nothing to change:
    /// the line in its ledger and the timeline (as `reason`).
    pub(super) fn restore_stage(
        &mut self,
        (entry, then): (usize, WorkflowStage),
        line: String,
        (now, warning, reason): (&Time, bool, &str),
    ) {
        if let Some(record) = self.status.steps.get_mut(entry) {
            record.changes.push(line.clone());
            if let Some(workflow) = record.workflow.as_mut() {
                workflow.stage = then;
            }
        }
        self.note(now, warning, reason, line);
        self.requeue_within(AFTER_RECORD);
    }

    /// Saved first; then the next move follows in the same reconcile (and
    /// the requeue is the fallback should that reconcile end early).
    pub(super) fn go_on(&mut self) {
        self.requeue_within(AFTER_RECORD);
        self.again = true;
    }

    /// A timeline entry and an Event saying the same thing.
    pub(super) fn note(&mut self, now: &Time, warning: bool, reason: &str, message: String) {
        self.note_in_timeline(now, reason, message.clone());
        self.events.push(if warning {
            PlannedEvent::warning(reason, "Remediate", message)
        } else {
            PlannedEvent::normal(reason, "Remediate", message)
        });
    }

    /// A timeline entry alone: the timeline is the full record, and an
    /// Event saying the same follows at once (a step recorded and run in
    /// the same reconcile) or is on the object the change was made to.
    pub(super) fn note_in_timeline(&mut self, now: &Time, reason: &str, message: String) {
        lifecycle::push_timeline(
            &mut self.status,
            TimelineEntry {
                at: now.clone(),
                reason: reason.into(),
                message,
            },
        );
    }
}

/// The metric of a step that reached its verdict, with its duration.
pub(super) fn step_ended(record: &StepRecord, now: Timestamp) -> Tally {
    Tally::StepEnded {
        action: record.action,
        result: record.result,
        seconds: record
            .started_at
            .as_ref()
            .map(|started| seconds_between(started.0, now)),
    }
}

pub(super) fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}
