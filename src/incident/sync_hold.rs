//! An incident's hold on the GitOps sync of its target: begun in the
//! ledger entry of the step Git would undo; kept after that step is
//! verified, the incident Monitoring, until Git moves past the bad
//! revision (or a responder lifts it); then the release from Git is
//! verified like a step: healthy through the hold-down resolves the
//! incident, otherwise the ladder runs again (a new round, within the
//! safety limits). Pure.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{
    decision::Decision,
    observe::Observation,
    phase::{self, Transition},
};
use crate::{
    conditions::{ConditionUpdate, set_condition},
    crd::{Incident, IncidentStatus, StepResult, SyncHold},
    gitops::{
        SyncRead, SyncState,
        hold::{Lift, lift, what_to_revert},
    },
    remediation::ladder::{Health, Ladder},
};

/// The condition an incident carries while it holds a sync.
pub const GITOPS_SUSPENDED: &str = "GitOpsSuspended";

/// How often a held sync's source is looked at (Flux's own intervals are
/// a minute or more; a hold waits on a person's commit).
pub const GIT_POLL: Duration = Duration::from_secs(5);

/// The incident as `namespace/name`: what a hold's annotation names.
pub fn holder(incident: &Incident) -> String {
    format!(
        "{}/{}",
        incident.namespace().unwrap_or_default(),
        incident.name_any()
    )
}

/// Records the hold a step's change was made under (its ledger entry
/// already says so).
pub(super) fn begin(
    decision: &mut Decision,
    incident: &Incident,
    held: &SyncState,
    step: String,
    now: &Time,
) {
    let hold = SyncHold {
        owner: held.owner.clone(),
        source: held.source.as_ref().map(ToString::to_string),
        url: held.source.as_ref().and_then(|s| s.url.clone()),
        bad_revision: held.applied_revision.clone(),
        good_revision: held.previous_revision.clone(),
        step,
        suspended_at: now.clone(),
        resumed_at: None,
        resumed_because: None,
        release: None,
        healthy_since: None,
        verified_at: None,
        failed_at: None,
        revert: None,
    };
    let message = format!(
        "{} suspended so that Git does not undo the step; {}; the operator resumes it once \
         Git moves past the bad revision",
        hold.owner,
        what_to_revert(&hold)
    );
    let holds = &mut decision.status.sync_holds;
    holds.push(hold);
    // The oldest go first past the schema's bound.
    let excess = holds.len().saturating_sub(20);
    holds.drain(..excess);
    condition(decision, incident, true, "Suspended", message.clone(), now);
    decision.note(now, false, "GitOpsSuspended", message);
}

/// A Kustomization this incident suspended whose hold its status does not
/// record (the operator stopped between the suspension and the status
/// write): taken back into the record, so it is lifted like any other.
pub(super) fn adopt(decision: &mut Decision, incident: &Incident, seen: &Observation) {
    let Some(SyncRead::Read(state)) = &seen.sync else {
        return;
    };
    let recorded = decision
        .status
        .sync_holds
        .last()
        .is_some_and(|hold| hold.is_held() && hold.owner == state.owner);
    if recorded || !state.suspended || state.held_by.as_deref() != Some(holder(incident).as_str()) {
        return;
    }
    let step = decision
        .status
        .steps
        .last()
        .map(|s| s.id.clone())
        .unwrap_or_default();
    let now = Time(seen.now);
    begin(decision, incident, state, step, &now);
    decision.note(
        &now,
        true,
        "GitOpsHoldFound",
        format!(
            "{} was found suspended by this incident without a record of it (a restart \
             between the suspension and the status write): recorded, and lifted like any hold",
            state.owner
        ),
    );
}

/// Follows the current hold of an open incident, once its ladder's
/// health is known. Returns whether the hold decided this reconcile (the
/// ladder waits); false lets the ladder move (a step still verifying, or a
/// failed release that starts a new round).
pub(super) fn follow(
    decision: &mut Decision,
    incident: &Incident,
    seen: &Observation,
    ladder: &Ladder,
    health: Health,
) -> bool {
    let now = Time(seen.now);
    let Some(index) = decision.status.sync_holds.len().checked_sub(1) else {
        return false;
    };
    let hold = decision.status.sync_holds[index].clone();
    if hold.is_held() {
        decision.revert = revert_plan(incident, seen, &hold);
    }
    // Only once the step it protects (or the last step of the round) has
    // concluded as verified does the incident wait on Git.
    let waiting = decision
        .status
        .steps
        .last()
        .is_some_and(|s| s.result == StepResult::Succeeded);
    if hold.is_held() {
        if !waiting {
            return false;
        }
        let asked = incident.spec.resume_sync.as_ref();
        match lift(&hold, seen.sync.as_ref(), &holder(incident), asked, false) {
            Lift::Keep => {
                let mut message = format!(
                    "{} suspended; the step held healthy; waiting for Git to move past the bad \
                     revision: {}",
                    hold.owner,
                    what_to_revert(&hold)
                );
                if let Some(SyncRead::Read(state)) = &seen.sync
                    && let Some(why) = &state.source_unread
                {
                    message.push_str(&format!(
                        "; where Git is now cannot be read ({why}): lift it with \
                         `kubectl healing-guard resume-sync` once Git is fixed"
                    ));
                }
                condition(decision, incident, true, "WaitingForGit", message, &now);
                decision.requeue_within(GIT_POLL);
            }
            Lift::Resume { because, release } => {
                resumed(decision, incident, index, because, release, true, &now);
            }
            Lift::LiftedElsewhere { because, release } => {
                resumed(decision, incident, index, because, release, false, &now);
            }
        }
        return true;
    }
    if !hold.is_verifying() || !waiting {
        return false;
    }
    verify_release(decision, incident, seen, ladder, health, index)
}

/// The release Git brought after the hold was lifted: verified once Flux
/// has applied it and the target held healthy through the hold-down.
fn verify_release(
    decision: &mut Decision,
    incident: &Incident,
    seen: &Observation,
    ladder: &Ladder,
    health: Health,
    index: usize,
) -> bool {
    let now = Time(seen.now);
    let timing = ladder.default_timing;
    let hold = decision.status.sync_holds[index].clone();
    // Applied: the GitOps controller names the release as applied and has
    // no reconcile under way (helm-controller names it as it begins).
    let applied = match (&seen.sync, &hold.release) {
        (Some(SyncRead::Read(state)), Some(release)) => {
            state.applied_revision.as_ref() == Some(release) && !state.busy
        }
        // Where Git is was not known when it was lifted: what is applied counts.
        _ => true,
    };
    // A rollout under way is neither healthy nor a failure yet.
    let rolling = seen
        .workload
        .as_ref()
        .is_some_and(|w| !w.rollout_complete());
    let resumed_at = hold.resumed_at.as_ref().map_or(seen.now, |t| t.0);
    let release = hold.release.as_deref().unwrap_or("its latest revision");
    let settled = applied && !rolling;
    let failed = match (settled && health == Health::Healthy, &hold.healthy_since) {
        (true, None) => {
            decision.status.sync_holds[index].healthy_since = Some(now.clone());
            decision.requeue_within(timing.hold_down + Duration::from_secs(1));
            None
        }
        (true, Some(since)) => {
            let start = crate::k8s::end_of_second(since.0);
            let due = start.checked_add(timing.hold_down).unwrap_or(start);
            if seen.now >= due {
                decision.status.sync_holds[index].verified_at = Some(now.clone());
                let message = format!(
                    "the release from Git at {release} rolled out and held healthy for {}: resolved",
                    crate::crd::duration::spoken(timing.hold_down)
                );
                condition(decision, incident, false, "Released", message.clone(), &now);
                phase::enter(&mut decision.status, Transition::Remediated, &now);
                decision.note(&now, false, "GitOpsReleaseVerified", message);
                return true;
            }
            decision.requeue_within(
                Duration::try_from(due.duration_since(seen.now)).unwrap_or_default(),
            );
            None
        }
        (false, Some(_)) if settled => Some("it turned unhealthy during the hold-down".to_owned()),
        (false, _) => {
            let deadline = resumed_at.checked_add(timing.timeout).unwrap_or(resumed_at);
            if seen.now >= deadline {
                Some(if applied {
                    crate::remediation::ladder::not_healthy_within(timing.timeout)
                } else {
                    format!(
                        "{} did not apply it within {}",
                        hold.owner,
                        crate::crd::duration::spoken(timing.timeout)
                    )
                })
            } else {
                decision.requeue_within(GIT_POLL);
                None
            }
        }
    };
    let Some(why) = failed else {
        return true;
    };
    let hold = &mut decision.status.sync_holds[index];
    hold.failed_at = Some(now.clone());
    let round = decision.status.round();
    let message = format!(
        "the release from Git at {release} did not bring recovery ({why}): the ladder runs again \
         (round {round}), within the safety limits"
    );
    phase::enter(&mut decision.status, Transition::Relapse, &now);
    decision.note(&now, true, "GitOpsReleaseFailed", message);
    decision.go_on();
    false
}

/// Marks hold `index` lifted; `lift` when the operator is to lift it.
fn resumed(
    decision: &mut Decision,
    incident: &Incident,
    index: usize,
    because: String,
    release: Option<String>,
    lift: bool,
    now: &Time,
) {
    let hold = &mut decision.status.sync_holds[index];
    hold.resumed_at = Some(now.clone());
    hold.resumed_because = Some(because.clone());
    hold.release = release;
    let owner = hold.owner.clone();
    let open = incident.is_open() && !decision.status.phase.is_some_and(|p| p.is_closed());
    let message = if open {
        format!("{owner} resumed: {because}; the release that follows is verified like a step")
    } else {
        format!("{owner} resumed: {because}")
    };
    if lift {
        decision.resume = Some(owner);
    }
    condition(decision, incident, false, "Resumed", message.clone(), now);
    decision.note(now, false, "GitOpsResumed", message);
    decision.requeue_within(GIT_POLL);
}

/// The revert branch to push for a hold, once, when the policy opts in
/// and the hold knows its source's URL and both revisions.
fn revert_plan(
    incident: &Incident,
    seen: &Observation,
    hold: &SyncHold,
) -> Option<crate::gitops::revert::RevertPlan> {
    let opted_in = seen
        .policy
        .as_ref()
        .and_then(|p| p.spec.gitops.as_ref())
        .and_then(|g| g.revert_branch.as_ref())?;
    if hold.revert.is_some() {
        return None;
    }
    let url = hold.url.clone()?;
    let bad = crate::crd::commit_of(hold.bad_revision.as_deref()?)?.to_owned();
    let good = crate::crd::commit_of(hold.good_revision.as_deref()?)?.to_owned();
    let name = incident.name_any();
    let owner = hold.owner.to_string();
    Some(crate::gitops::revert::RevertPlan {
        url,
        message: crate::gitops::revert::message(&good, &bad, &holder(incident), &owner),
        good,
        bad,
        branch: crate::gitops::revert::branch_name(&name),
        at: hold.suspended_at.0,
        secret: opted_in.secret_ref.as_ref().map(|s| s.name.clone()),
    })
}

/// Records how the push of the current hold's revert branch went.
pub fn reverted(
    mut decision: Decision,
    plan: &crate::gitops::revert::RevertPlan,
    outcome: Result<crate::gitops::revert::Pushed, String>,
    now: k8s_openapi::jiff::Timestamp,
) -> Decision {
    let now = Time(now);
    let Some(hold) = decision
        .status
        .sync_holds
        .last_mut()
        .filter(|h| h.is_held())
    else {
        return decision;
    };
    let (commit, error) = match outcome {
        Ok(pushed) => (Some(pushed.commit), None),
        Err(error) => (None, Some(error)),
    };
    let (warning, reason, message) = match (&commit, &error) {
        (Some(commit), _) => (
            false,
            "GitOpsRevertPushed",
            format!(
                "pushed branch {} to {} (commit {commit}): one commit on top of {} restoring {}; \
                 merge it to fix Git, and the hold lifts",
                plan.branch, plan.url, plan.bad, plan.good
            ),
        ),
        (None, error) => (
            true,
            "GitOpsRevertFailed",
            format!(
                "the revert branch {} could not be pushed to {}: {}",
                plan.branch,
                plan.url,
                error.as_deref().unwrap_or("unknown")
            ),
        ),
    };
    hold.revert = Some(crate::crd::RevertOutcome {
        branch: plan.branch.clone(),
        commit,
        error,
        at: now.clone(),
    });
    decision.note(&now, warning, reason, message);
    decision
}

/// A hold of an incident that is over, escalated or being deleted: lifted
/// when Git moves on, a responder asks, or the incident goes; until then
/// the condition says it is still there.
pub(super) fn follow_ended(decision: &mut Decision, incident: &Incident, seen: &Observation) {
    let Some(index) = decision.status.sync_holds.len().checked_sub(1) else {
        return;
    };
    let hold = decision.status.sync_holds[index].clone();
    if !hold.is_held() {
        return;
    }
    let now = Time(seen.now);
    let deleting = incident.metadata.deletion_timestamp.is_some();
    let asked = incident.spec.resume_sync.as_ref();
    match lift(
        &hold,
        seen.sync.as_ref(),
        &holder(incident),
        asked,
        deleting,
    ) {
        Lift::Keep => {
            let phase = decision
                .status
                .phase
                .map(|p| p.to_string())
                .unwrap_or_default();
            let message = format!(
                "{phase} while {} is still suspended by it: {}; it resumes when Git moves past \
                 the bad revision, or now with `kubectl healing-guard resume-sync {}`",
                hold.owner,
                what_to_revert(&hold),
                incident.name_any()
            );
            if condition(
                decision,
                incident,
                true,
                "StillSuspended",
                message.clone(),
                &now,
            ) {
                decision.note(&now, true, "GitOpsStillSuspended", message);
            }
            decision.requeue_within(GIT_POLL);
        }
        Lift::Resume { because, release } => {
            resumed(decision, incident, index, because, release, true, &now);
        }
        Lift::LiftedElsewhere { because, release } => {
            resumed(decision, incident, index, because, release, false, &now);
        }
    }
}

/// Whether the incident holds a sync (its finalizer keeps a deletion
/// until it is lifted).
pub fn holds_sync(status: &IncidentStatus) -> bool {
    status.sync_holds.last().is_some_and(SyncHold::is_held)
}

fn condition(
    decision: &mut Decision,
    incident: &Incident,
    status: bool,
    reason: &str,
    message: String,
    now: &Time,
) -> bool {
    let update = ConditionUpdate {
        type_: GITOPS_SUSPENDED,
        status,
        reason,
        message,
    };
    set_condition(
        &mut decision.status.conditions,
        update,
        incident.metadata.generation,
        now,
    )
}
