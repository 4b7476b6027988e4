//! When to hold a GitOps sync and when to lift it. Pure: what was read and
//! what the incident records in, the move out.

use crate::crd::{GitOpsOwner, OnRollback, ResumeSync, SyncHold};

use super::sync::{SyncRead, SyncState};

/// What a step does about the object that reconciles its target.
#[derive(Clone, Debug, PartialEq)]
pub enum HoldPlan {
    /// Nothing to hold: the target is not reconciled from Git, the policy
    /// says Ignore, or Git would not undo the action.
    NotNeeded,
    /// Suspend it, in the step's own ledger entry, before the change.
    Suspend(Box<SyncState>),
    /// Already held by this incident: the change is made under that hold.
    Held,
    /// Held by this incident, and a reconcile it began before is still
    /// under way: the change waits until it ends.
    HeldBusy,
    /// Not suspended, and why, for the ledger.
    Unheld(String),
    /// The step is not made: it needs a hold it cannot have.
    Refuse(String),
}

/// The plan for a step on a target whose labels name `owner`, given what
/// was read of it. `holder` is the incident, `namespace/name`.
pub fn plan(
    on_rollback: OnRollback,
    undone_by_git: bool,
    owner: Option<&GitOpsOwner>,
    read: Option<&SyncRead>,
    holder: &str,
) -> HoldPlan {
    let Some(owner) = owner else {
        return HoldPlan::NotNeeded;
    };
    if !undone_by_git || on_rollback == OnRollback::Ignore {
        return HoldPlan::NotNeeded;
    }
    match read {
        None => HoldPlan::NotNeeded,
        Some(SyncRead::Missing) => HoldPlan::Unheld(format!(
            "not held: the target's labels name {owner}, which does not exist"
        )),
        Some(SyncRead::Refused(words)) => HoldPlan::Refuse(format!(
            "{owner} reconciles the target from Git and would undo this step at its next sync, \
             and it cannot be held: {words}; grant the remediator get and patch on it, or set \
             the policy's gitops.onRollback: Ignore"
        )),
        Some(SyncRead::Read(state)) if !state.manages_target => HoldPlan::Unheld(format!(
            "not held: the target's labels name {owner}, whose inventory does not list the target"
        )),
        Some(SyncRead::Read(state))
            if state.suspended && state.held_by.as_deref() == Some(holder) =>
        {
            if state.busy {
                HoldPlan::HeldBusy
            } else {
                HoldPlan::Held
            }
        }
        Some(SyncRead::Read(state)) if state.suspended => HoldPlan::Unheld(match &state.held_by {
            Some(other) => {
                format!("not held by this incident: {owner} is held by incident {other}")
            }
            None if owner.kind == crate::crd::GitOpsKind::Application => format!(
                "not held: {owner} does not self-heal, so Argo CD leaves this change alone \
                 until the next commit"
            ),
            None => format!(
                "not held by this incident: {owner} is already suspended by someone else; \
                 whoever suspended it resumes it"
            ),
        }),
        Some(SyncRead::Read(state)) => HoldPlan::Suspend(state.clone()),
    }
}

/// What becomes of a hold this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum Lift {
    /// It stays.
    Keep,
    /// The operator lifts it: why, and the source's revision (the release
    /// that follows).
    Resume {
        because: String,
        release: Option<String>,
    },
    /// Someone else lifted it (or the object is gone): recorded, nothing
    /// to do.
    LiftedElsewhere {
        because: String,
        release: Option<String>,
    },
}

/// Whether `hold`, still held, is to be lifted: Git moved past its bad
/// revision, a responder asked, or the incident is being deleted.
pub fn lift(
    hold: &SyncHold,
    read: Option<&SyncRead>,
    holder: &str,
    asked: Option<&ResumeSync>,
    deleting: bool,
) -> Lift {
    let state = match read {
        Some(SyncRead::Read(state)) => Some(state.as_ref()),
        _ => None,
    };
    let release = state
        .and_then(|s| s.source.as_ref())
        .and_then(|s| s.revision.clone());
    if matches!(read, Some(SyncRead::Missing)) {
        return Lift::LiftedElsewhere {
            because: format!("{} no longer exists", hold.owner),
            release: None,
        };
    }
    if let Some(state) = state
        && (!state.suspended || state.held_by.as_deref() != Some(holder))
    {
        return Lift::LiftedElsewhere {
            because: format!("{} was resumed outside the operator", hold.owner),
            release,
        };
    }
    if deleting {
        return Lift::Resume {
            because: "the incident is being deleted".into(),
            release,
        };
    }
    if let (Some(now), Some(bad)) = (&release, &hold.bad_revision)
        && now != bad
    {
        let source = hold.source.as_deref().unwrap_or("its source");
        return Lift::Resume {
            because: format!("Git moved past the bad revision: {source} is at {now}"),
            release,
        };
    }
    if let Some(asked) = asked
        && asked
            .at
            .as_ref()
            .is_none_or(|at| at.0 >= hold.suspended_at.0)
    {
        return Lift::Resume {
            because: format!("{} asked (kubectl healing-guard resume-sync)", asked.by),
            release,
        };
    }
    Lift::Keep
}

/// Where the bad release came from and what to revert, in one sentence.
pub fn what_to_revert(hold: &SyncHold) -> String {
    let mut line = format!("the release came from Git through {}", hold.owner);
    if let Some(source) = &hold.source {
        line.push_str(&format!(", {source}"));
    }
    if let Some(url) = &hold.url {
        line.push_str(&format!(" ({url})"));
    }
    if let Some(bad) = &hold.bad_revision {
        line.push_str(&format!(", bad revision {bad}"));
    }
    if let Some(commits) = hold.commits() {
        line.push_str(&format!(
            "; revert there the commit(s) {commits} (git log {commits})"
        ));
    }
    if let Some(revert) = &hold.revert {
        match (&revert.commit, &revert.error) {
            (Some(commit), _) => line.push_str(&format!(
                "; a revert is ready to merge on branch {} (commit {commit})",
                revert.branch
            )),
            (None, Some(error)) => line.push_str(&format!(
                "; the revert branch {} could not be pushed: {error}",
                revert.branch
            )),
            (None, None) => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    use super::*;
    use crate::crd::GitOpsKind;
    use crate::gitops::sync::Source;

    const ME: &str = "shop/api-crashloop";

    fn owner() -> GitOpsOwner {
        GitOpsOwner {
            kind: GitOpsKind::Kustomization,
            name: "apps".into(),
            namespace: Some("flux-system".into()),
        }
    }

    fn state(suspended: bool, held_by: Option<&str>, at: &str) -> SyncState {
        SyncState {
            owner: owner(),
            suspended,
            held_by: held_by.map(str::to_owned),
            applied_revision: Some("main@sha1:bbbb".into()),
            previous_revision: Some("main@sha1:aaaa".into()),
            manages_target: true,
            source_unread: None,
            busy: false,
            source: Some(Source {
                kind: "GitRepository".into(),
                name: "apps".into(),
                namespace: "flux-system".into(),
                url: Some("http://git/apps.git".into()),
                revision: Some(at.into()),
            }),
        }
    }

    fn hold() -> SyncHold {
        SyncHold {
            owner: owner(),
            source: Some("GitRepository flux-system/apps".into()),
            url: Some("http://git/apps.git".into()),
            bad_revision: Some("main@sha1:bbbb".into()),
            good_revision: Some("main@sha1:aaaa".into()),
            step: "abc-rollback-1".into(),
            suspended_at: Time("2026-12-07T03:00:00Z".parse::<Timestamp>().unwrap()),
            resumed_at: None,
            resumed_because: None,
            release: None,
            healthy_since: None,
            verified_at: None,
            failed_at: None,
            revert: None,
        }
    }

    #[test]
    fn a_step_git_would_undo_suspends_the_object_that_really_manages_the_target() {
        let read = SyncRead::Read(Box::new(state(false, None, "main@sha1:bbbb")));
        let suspend = plan(OnRollback::Suspend, true, Some(&owner()), Some(&read), ME);
        assert!(matches!(suspend, HoldPlan::Suspend(_)));
        // Ignore, an action Git does not undo, or no GitOps owner: nothing.
        for (on, undone, owner) in [
            (OnRollback::Ignore, true, Some(owner())),
            (OnRollback::Suspend, false, Some(owner())),
            (OnRollback::Suspend, true, None),
        ] {
            assert_eq!(
                plan(on, undone, owner.as_ref(), Some(&read), ME),
                HoldPlan::NotNeeded
            );
        }
    }

    #[test]
    fn a_forged_label_an_unreadable_object_or_anothers_hold_is_never_suspended() {
        let mut forged = state(false, None, "main@sha1:bbbb");
        forged.manages_target = false;
        let forged = plan(
            OnRollback::Suspend,
            true,
            Some(&owner()),
            Some(&SyncRead::Read(Box::new(forged))),
            ME,
        );
        assert!(
            matches!(forged, HoldPlan::Unheld(ref why) if why.contains("inventory")),
            "{forged:?}"
        );
        let refused = SyncRead::Refused("forbidden".into());
        let refused = plan(
            OnRollback::Suspend,
            true,
            Some(&owner()),
            Some(&refused),
            ME,
        );
        assert!(matches!(refused, HoldPlan::Refuse(ref why) if why.contains("onRollback: Ignore")));
        let other = SyncRead::Read(Box::new(state(true, Some("shop/other"), "main@sha1:bbbb")));
        let other = plan(OnRollback::Suspend, true, Some(&owner()), Some(&other), ME);
        assert!(matches!(other, HoldPlan::Unheld(ref why) if why.contains("shop/other")));
        let mine = SyncRead::Read(Box::new(state(true, Some(ME), "main@sha1:bbbb")));
        assert_eq!(
            plan(OnRollback::Suspend, true, Some(&owner()), Some(&mine), ME),
            HoldPlan::Held
        );
    }

    #[test]
    fn a_hold_lasts_until_git_moves_a_responder_asks_or_the_incident_goes() {
        let still = SyncRead::Read(Box::new(state(true, Some(ME), "main@sha1:bbbb")));
        assert_eq!(lift(&hold(), Some(&still), ME, None, false), Lift::Keep);
        assert_eq!(lift(&hold(), None, ME, None, false), Lift::Keep);
        let moved = SyncRead::Read(Box::new(state(true, Some(ME), "main@sha1:cccc")));
        assert!(matches!(
            lift(&hold(), Some(&moved), ME, None, false),
            Lift::Resume { ref because, release: Some(ref r) } if because.contains("moved past") && r == "main@sha1:cccc"
        ));
        let early = ResumeSync {
            by: "alice".into(),
            at: None,
        };
        assert!(matches!(
            lift(&hold(), Some(&still), ME, Some(&early), false),
            Lift::Resume { ref because, .. } if because.starts_with("alice asked")
        ));
        // An old request (from before this hold) does not lift a new one.
        let old = ResumeSync {
            by: "alice".into(),
            at: Some(Time("2026-12-07T02:00:00Z".parse::<Timestamp>().unwrap())),
        };
        assert_eq!(
            lift(&hold(), Some(&still), ME, Some(&old), false),
            Lift::Keep
        );
        assert!(matches!(
            lift(&hold(), Some(&still), ME, None, true),
            Lift::Resume { .. }
        ));
        let elsewhere = SyncRead::Read(Box::new(state(false, None, "main@sha1:bbbb")));
        assert!(matches!(
            lift(&hold(), Some(&elsewhere), ME, None, false),
            Lift::LiftedElsewhere { .. }
        ));
        assert!(matches!(
            lift(&hold(), Some(&SyncRead::Missing), ME, None, false),
            Lift::LiftedElsewhere { .. }
        ));
    }

    #[test]
    fn the_revert_names_the_source_the_bad_revision_and_the_commits() {
        assert_eq!(
            what_to_revert(&hold()),
            "the release came from Git through Kustomization flux-system/apps, GitRepository \
             flux-system/apps (http://git/apps.git), bad revision main@sha1:bbbb; revert there \
             the commit(s) aaaa..bbbb (git log aaaa..bbbb)"
        );
    }
}
