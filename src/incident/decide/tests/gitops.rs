//! A target reconciled from Git: the step Git would undo holds its sync in
//! the same ledger entry; the incident waits on Git once the step holds;
//! the release that follows is verified like a step.

use super::*;
use crate::crd::{GitOpsKind, GitOpsOwner, SyncHold};
use crate::gitops::{SyncRead, SyncState, sync::Source};

const HOLDER: &str = "hg/api-crashloop";

fn owner() -> GitOpsOwner {
    GitOpsOwner {
        kind: GitOpsKind::Kustomization,
        name: "apps".into(),
        namespace: Some("flux-system".into()),
    }
}

fn flux(suspended: bool, git_at: &str, applied: &str) -> SyncRead {
    SyncRead::Read(Box::new(SyncState {
        owner: owner(),
        suspended,
        held_by: suspended.then(|| HOLDER.to_owned()),
        applied_revision: Some(applied.into()),
        previous_revision: Some("main@sha1:aaaa".into()),
        manages_target: true,
        source_unread: None,
        busy: false,
        source: Some(Source {
            kind: "GitRepository".into(),
            name: "apps".into(),
            namespace: "flux-system".into(),
            url: Some("http://git/apps.git".into()),
            revision: Some(git_at.into()),
        }),
    }))
}

impl World {
    fn reconciled_by(mut self, read: SyncRead) -> Self {
        self.seen.gitops_owner = Some(owner());
        self.seen.sync = Some(read);
        self
    }

    fn gitops(mut self, on_rollback: &str) -> Self {
        let mut policy = (*two_steps("Auto")).clone();
        policy.spec.gitops =
            Some(serde_json::from_value(json!({"onRollback": on_rollback})).unwrap());
        self.seen.policy = Some(Arc::new(policy));
        self
    }

    fn holding(mut self, edit: impl FnOnce(&mut SyncHold)) -> Self {
        let mut hold: SyncHold = serde_json::from_value(json!({
            "owner": {"kind": "Kustomization", "name": "apps", "namespace": "flux-system"},
            "source": "GitRepository flux-system/apps", "url": "http://git/apps.git",
            "badRevision": "main@sha1:bbbb", "goodRevision": "main@sha1:aaaa",
            "step": "0123abcd-0-rollback-1", "suspendedAt": "2026-01-01T00:00:06Z"}))
        .unwrap();
        edit(&mut hold);
        let status = self.incident.status.as_mut().expect("a phase first");
        status.sync_holds.push(hold);
        self
    }
}

fn gitops_condition(decision: &Decision) -> Option<(String, String)> {
    decision
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "GitOpsSuspended")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[test]
fn a_rollback_of_a_flux_target_suspends_its_kustomization_in_the_same_entry() {
    let world = pending_rollback().rollback_history().reconciled_by(flux(
        false,
        "main@sha1:bbbb",
        "main@sha1:bbbb",
    ));
    let (incident, seen) = world.at("2026-01-01T00:00:06Z");
    let decision = decide(&incident, &seen);
    let effect = decision.effect.clone().expect("the hold is made");
    assert_eq!(effect.hold.map(|h| h.owner), Some(owner()));
    assert!(effect.hold_only, "the hold first, alone");
    let held = crate::incident::settle::settle(
        decision,
        vec!["suspended ...".into()],
        &incident,
        seen.now,
    );
    let hold = held.status.sync_holds.last().expect("the hold recorded");
    assert_eq!(hold.bad_revision.as_deref(), Some("main@sha1:bbbb"));
    assert_eq!(hold.step, last_step(&held).id);
    assert_eq!(
        last_step(&held).result,
        StepResult::Pending,
        "the change not made yet"
    );
    assert_eq!(
        gitops_condition(&held),
        Some(("True".into(), "Suspended".into()))
    );

    // Next pass: held by this incident and quiet: the change, in the same entry.
    let incident = after(incident, &held);
    let quiet = world
        .clone()
        .reconciled_by(flux(true, "main@sha1:bbbb", "main@sha1:bbbb"));
    let seen = quiet.seen_at("2026-01-01T00:00:07Z");
    let decision = decide(&incident, &seen);
    let effect = decision.effect.clone().expect("the rollback runs");
    assert!(effect.hold.is_none() && !effect.hold_only);
    let applied = crate::incident::settle::settle(decision, vec![], &incident, seen.now);
    let step = last_step(&applied);
    assert_eq!(step.result, StepResult::Verifying);
    assert_eq!(
        step.changes[0], "suspended ...",
        "the hold's line first: {:?}",
        step.changes
    );
    assert_eq!(applied.status.sync_holds.len(), 1);

    // Ignore: the same rollback, nothing held.
    let ignore = world.gitops("Ignore");
    let (incident, seen) = ignore.at("2026-01-01T00:00:06Z");
    let decision = decide(&incident, &seen);
    assert_eq!(decision.effect.expect("the rollback runs").hold, None);
}

#[test]
fn a_hold_that_cannot_be_had_refuses_the_step_and_a_forged_label_is_not_believed() {
    let refused = pending_rollback()
        .rollback_history()
        .reconciled_by(SyncRead::Refused("403 forbidden".into()));
    let (incident, seen) = refused.at("2026-01-01T00:00:06Z");
    let decision = decide(&incident, &seen);
    assert_eq!(decision.effect, None);
    let record = &decision.status.steps[0];
    assert_eq!(record.result, StepResult::Failed);
    assert!(
        record
            .message
            .as_deref()
            .unwrap()
            .contains("gitops.onRollback: Ignore"),
        "{record:?}"
    );

    let mut forged = flux(false, "main@sha1:bbbb", "main@sha1:bbbb");
    if let SyncRead::Read(state) = &mut forged {
        state.manages_target = false;
    }
    let world = pending_rollback().rollback_history().reconciled_by(forged);
    let (incident, seen) = world.at("2026-01-01T00:00:06Z");
    let effect = decide(&incident, &seen).effect.expect("the rollback runs");
    assert_eq!(effect.hold, None);
    assert!(effect.notes[0].contains("inventory"), "{:?}", effect.notes);
}

#[test]
fn a_verified_step_under_a_hold_waits_on_git_instead_of_resolving() {
    let world = verifying_rollback("2026-01-01T00:00:06Z")
        .holding(|_| {})
        .ready()
        .reconciled_by(flux(true, "main@sha1:bbbb", "main@sha1:bbbb"));
    let mut incident = world.incident();
    incident.status.as_mut().unwrap().steps[0].healthy_since =
        Some(Time(at("2026-01-01T00:01:00Z")));
    let verified = decide(&incident, &world.seen_at("2026-01-01T00:02:01Z"));
    assert_eq!(last_step(&verified).result, StepResult::Succeeded);
    assert_ne!(verified.status.phase, Some(Phase::Resolved));
    let waiting = decide(
        &after(incident, &verified),
        &world.seen_at("2026-01-01T00:02:02Z"),
    );
    assert_eq!(
        gitops_condition(&waiting),
        Some(("True".into(), "WaitingForGit".into()))
    );
    assert_eq!(waiting.resume, None);
    assert_ne!(waiting.status.phase, Some(Phase::Resolved));
}

/// Rolled back, verified, waiting on Git.
fn waiting_on_git() -> World {
    World::new()
        .phase("Monitoring")
        .step("rollback", "Succeeded", "2026-01-01T00:00:06Z")
        .holding(|_| {})
        .ready()
}

#[test]
fn git_moving_past_the_bad_revision_resumes_and_the_release_is_verified() {
    let moved = waiting_on_git().reconciled_by(flux(true, "main@sha1:cccc", "main@sha1:bbbb"));
    let (incident, seen) = moved.at("2026-01-01T00:05:00Z");
    let resumed = decide(&incident, &seen);
    assert_eq!(resumed.resume, Some(owner()));
    let hold = resumed.status.sync_holds.last().unwrap();
    assert_eq!(hold.release.as_deref(), Some("main@sha1:cccc"));
    assert!(
        hold.resumed_because
            .as_deref()
            .unwrap()
            .contains("moved past")
    );

    // Flux has not applied the fix yet: nothing is verified.
    let incident = after(incident, &resumed);
    let world = World {
        incident: incident.clone(),
        ..moved.clone()
    }
    .reconciled_by(flux(false, "main@sha1:cccc", "main@sha1:bbbb"));
    let early = decide(&incident, &world.seen_at("2026-01-01T00:05:10Z"));
    assert_eq!(early.status.sync_holds.last().unwrap().healthy_since, None);
    // Applied and healthy: the hold-down runs, then the incident resolves.
    let world = world.reconciled_by(flux(false, "main@sha1:cccc", "main@sha1:cccc"));
    let healthy = decide(&incident, &world.seen_at("2026-01-01T00:05:20Z"));
    assert!(
        healthy
            .status
            .sync_holds
            .last()
            .unwrap()
            .healthy_since
            .is_some()
    );
    let done = decide(
        &after(incident, &healthy),
        &world.seen_at("2026-01-01T00:06:30Z"),
    );
    assert_eq!(done.status.phase, Some(Phase::Resolved));
    assert!(reasons(&done).contains(&"GitOpsReleaseVerified"));
    assert_eq!(
        gitops_condition(&done),
        Some(("False".into(), "Released".into()))
    );
}

#[test]
fn a_failing_release_from_git_runs_the_ladder_again_in_a_new_round() {
    let world = waiting_on_git()
        .holding(|hold| {
            hold.resumed_at = Some(Time(at("2026-01-01T00:05:00Z")));
            hold.release = Some("main@sha1:cccc".into());
        })
        .target(api(false, json!({})))
        .rollback_history()
        .reconciled_by(flux(false, "main@sha1:cccc", "main@sha1:cccc"));
    // Two holds now; the first (verified long ago) is history.
    let (incident, seen) = world.at("2026-01-01T00:11:00Z");
    let again = decide(&incident, &seen);
    assert!(again.status.sync_holds.last().unwrap().failed_at.is_some());
    assert_eq!(again.status.round(), 2);
    let step = last_step(&again);
    assert_eq!(
        (step.name.as_str(), step.attempt, step.result),
        ("rollback", 2, StepResult::Pending)
    );
}

#[test]
fn a_resolved_incident_still_holding_says_so_and_lifts_on_request_or_deletion() {
    let world = waiting_on_git().reconciled_by(flux(true, "main@sha1:bbbb", "main@sha1:bbbb"));
    let mut incident = world.incident();
    incident.status.as_mut().unwrap().phase = Some(Phase::Resolved);
    let held = decide(&incident, &world.seen_at("2026-01-01T00:05:00Z"));
    assert_eq!(
        gitops_condition(&held),
        Some(("True".into(), "StillSuspended".into()))
    );
    assert!(reasons(&held).contains(&"GitOpsStillSuspended"));
    assert_eq!(held.resume, None);

    let mut asked = incident.clone();
    asked.spec.resume_sync = Some(crate::crd::ResumeSync {
        by: "alice".into(),
        at: None,
    });
    assert_eq!(
        decide(&asked, &world.seen_at("2026-01-01T00:05:01Z")).resume,
        Some(owner())
    );

    let mut deleting = incident;
    deleting.metadata.deletion_timestamp = Some(Time(at("2026-01-01T00:05:00Z")));
    assert_eq!(
        decide(&deleting, &world.seen_at("2026-01-01T00:05:02Z")).resume,
        Some(owner())
    );
}

#[test]
fn a_dry_run_checks_the_hold_too_and_its_ledger_says_so() {
    let world = pending_rollback()
        .mode("DryRun")
        .rollback_history()
        .reconciled_by(flux(false, "main@sha1:bbbb", "main@sha1:bbbb"));
    let (incident, seen) = world.at("2026-01-01T00:00:06Z");
    let decision = decide(&incident, &seen);
    let effect = decision.effect.clone().expect("the dry run runs");
    assert!(effect.dry_run && effect.hold.is_some());
    let line = format!(
        "{}Kustomization flux-system/apps ...",
        crate::incident::act::WOULD_SUSPEND
    );
    let done = crate::incident::settle::settle(decision, vec![line.clone()], &incident, seen.now);
    assert_eq!(last_step(&done).result, StepResult::DryRun);
    assert_eq!(last_step(&done).changes[1], line);
    assert!(done.status.sync_holds.is_empty(), "a dry run holds nothing");
}

#[test]
fn a_hold_whose_record_was_lost_in_a_restart_is_taken_back_and_lifted_like_any() {
    // The suspension was made, the status write that records it lost: the
    // step is still Pending, the Kustomization suspended by this incident.
    let world = pending_rollback().rollback_history().reconciled_by(flux(
        true,
        "main@sha1:bbbb",
        "main@sha1:bbbb",
    ));
    let (incident, seen) = world.at("2026-01-01T00:00:07Z");
    let decision = decide(&incident, &seen);
    let hold = decision
        .status
        .sync_holds
        .last()
        .expect("the hold taken back");
    assert!(hold.is_held());
    assert_eq!(hold.bad_revision.as_deref(), Some("main@sha1:bbbb"));
    assert!(reasons(&decision).contains(&"GitOpsHoldFound"));
    // Once, not again on the next reconcile.
    let again = decide(
        &after(incident, &decision),
        &world.seen_at("2026-01-01T00:00:08Z"),
    );
    assert_eq!(again.status.sync_holds.len(), 1);
    // Someone else's hold is theirs.
    let mut other = flux(true, "main@sha1:bbbb", "main@sha1:bbbb");
    if let SyncRead::Read(state) = &mut other {
        state.held_by = Some("hg/another".into());
    }
    let world = pending_rollback().rollback_history().reconciled_by(other);
    let (incident, seen) = world.at("2026-01-01T00:00:07Z");
    assert!(decide(&incident, &seen).status.sync_holds.is_empty());
}

#[test]
fn a_revert_branch_is_asked_for_once_per_hold_when_the_policy_opts_in() {
    let mut policy = (*two_steps("Auto")).clone();
    policy.spec.gitops = Some(
        serde_json::from_value(json!({"revertBranch": {"secretRef": {"name": "git-push"}}}))
            .unwrap(),
    );
    let world = waiting_on_git()
        .policy(Arc::new(policy))
        .reconciled_by(flux(true, "main@sha1:bbbb", "main@sha1:bbbb"));
    let (incident, seen) = world.at("2026-01-01T00:02:00Z");
    let decision = decide(&incident, &seen);
    let plan = decision.revert.clone().expect("the revert asked for");
    assert_eq!(
        (
            plan.good.as_str(),
            plan.bad.as_str(),
            plan.branch.as_str(),
            plan.secret.as_deref()
        ),
        (
            "aaaa",
            "bbbb",
            "healing-guard/revert-api-crashloop",
            Some("git-push")
        )
    );
    assert_eq!(plan.url, "http://git/apps.git");
    let pushed = crate::gitops::revert::Pushed {
        branch: plan.branch.clone(),
        commit: "cccc".into(),
    };
    let done = crate::incident::sync_hold::reverted(decision, &plan, Ok(pushed), seen.now);
    let revert = done
        .status
        .sync_holds
        .last()
        .unwrap()
        .revert
        .clone()
        .unwrap();
    assert_eq!(revert.commit.as_deref(), Some("cccc"));
    assert!(reasons(&done).contains(&"GitOpsRevertPushed"));
    assert!(
        crate::gitops::hold::what_to_revert(done.status.sync_holds.last().unwrap())
            .contains("a revert is ready to merge on branch healing-guard/revert-api-crashloop")
    );
    // Asked once: not again with the outcome recorded.
    let again = decide(
        &after(incident, &done),
        &world.seen_at("2026-01-01T00:02:05Z"),
    );
    assert_eq!(again.revert, None);
    // Without the opt-in, never.
    let plain = waiting_on_git().reconciled_by(flux(true, "main@sha1:bbbb", "main@sha1:bbbb"));
    let (incident, seen) = plain.at("2026-01-01T00:02:00Z");
    assert_eq!(decide(&incident, &seen).revert, None);
}

#[test]
fn a_release_still_rolling_out_or_still_being_applied_is_not_yet_judged() {
    // Healthy once (the old pods, as helm-controller named the release it
    // began to apply), then the new release rolls out: not a failure.
    let world = waiting_on_git()
        .holding(|hold| {
            hold.resumed_at = Some(Time(at("2026-01-01T00:05:00Z")));
            hold.release = Some("main@sha1:cccc".into());
            hold.healthy_since = Some(Time(at("2026-01-01T00:05:01Z")));
        })
        .target(api(false, json!({})))
        .reconciled_by(flux(false, "main@sha1:cccc", "main@sha1:cccc"));
    let (incident, seen) = world.at("2026-01-01T00:05:10Z");
    let rolling = decide(&incident, &seen);
    let hold = rolling.status.sync_holds.last().unwrap();
    assert_eq!(hold.failed_at, None, "{hold:?}");
    assert_ne!(rolling.status.phase, Some(Phase::Resolved));
    // Still being applied (a reconcile under way): not yet either.
    let mut busy = flux(false, "main@sha1:cccc", "main@sha1:cccc");
    if let SyncRead::Read(state) = &mut busy {
        state.busy = true;
    }
    let world = world.ready().reconciled_by(busy);
    let (incident, seen) = world.at("2026-01-01T00:05:10Z");
    let applying = decide(&incident, &seen);
    assert_eq!(applying.status.sync_holds.last().unwrap().failed_at, None);
    assert_ne!(applying.status.phase, Some(Phase::Resolved));
}
