//! The Incident controller: drives each incident through its lifecycle, one
//! reconcile at a time, in four stages a newcomer reads top to bottom:
//!
//! 1. [`observe`]: read the world once (shared stores first, the API for the rest);
//! 2. [`decide`]: a pure function from that to the next status and at most
//!    one change (lifecycle, ladder, safety; [`phase`] moves the phase);
//! 3. [`act`]: make that change, and [`settle`] how it went;
//! 4. [`record`]: save the status, then publish Events and count metrics.

pub mod act;
pub mod decide;
pub mod decision;
pub mod evidence;
mod finalizer;
pub mod gate;
pub mod lifecycle;
mod live;
pub mod moves;
pub mod observe;
pub mod phase;
pub mod record;
pub mod restore_moves;
pub mod settle;
pub mod sync_hold;
pub mod wind_down;
pub mod world;

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{ResourceExt, runtime::controller::Action};
use tracing::instrument;

use self::{observe::TargetRead, world::World};
use crate::context::Context;
use crate::crd::Incident;
use crate::reconcile::{Error, retry};

/// Name used in metrics and logs.
pub const CONTROLLER: &str = "incident";

/// Most passes one reconcile makes: a step recorded, then run, is two; a
/// failed step, the next recorded and run, three.
const MAX_PASSES: usize = 3;

/// Most a detected incident waits for the detector's status write (what it
/// saw: the affected pods, first seen) before it is reconciled without it.
const DETECTION_GRACE: Duration = Duration::from_secs(5);

/// Reconciles one Incident: observe, decide, act, record; again at once
/// when what was saved leads straight to the next move (a step recorded
/// runs in the same reconcile, after its record is saved).
#[instrument(skip_all, fields(incident = %incident.name_any(), namespace = incident.namespace().unwrap_or_default()))]
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> Result<Action, Error> {
    if let Some(wait) = awaiting_detection(&incident, k8s_openapi::jiff::Timestamp::now()) {
        // Its status write wakes this; nothing is read or written before.
        return Ok(Action::requeue(wait));
    }
    let _timer = ctx.metrics.count_and_time(CONTROLLER);
    Ok(match reconcile_in(ctx.as_ref(), incident).await? {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    })
}

/// How long a detected incident, created but not yet given its detection
/// by the detector (a status write right after the create), still waits
/// for it. The detector's create and status write are two requests; the
/// first reconcile waits for the second instead of a fixed delay.
fn awaiting_detection(incident: &Incident, now: k8s_openapi::jiff::Timestamp) -> Option<Duration> {
    let status = incident.status.as_ref();
    let written = status.is_some_and(|s| s.detection.is_some() || s.phase.is_some());
    if incident.spec.source.kind != crate::crd::SourceKind::Detected || written {
        return None;
    }
    let created = incident.metadata.creation_timestamp.as_ref()?.0;
    let age = Duration::try_from(now.duration_since(created)).unwrap_or_default();
    DETECTION_GRACE
        .checked_sub(age)
        .filter(|left| !left.is_zero())
}

/// One reconcile of an incident in `world`: the live cluster or a
/// simulated one. Returns when to look again unless something changes.
pub async fn reconcile_in<W: World>(
    world: &W,
    incident: Arc<Incident>,
) -> Result<Option<Duration>, Error> {
    let mut incident = incident;
    let mut pass = 1;
    // The first pass reads a target about to change fresh; the passes that
    // follow it in this reconcile read the store (see `TargetRead`).
    let mut read = TargetRead::Fresh;
    loop {
        let outcome = reconcile_once(&incident, world, read).await?;
        if outcome.stale_target {
            read = TargetRead::Fresh;
            continue;
        }
        match outcome.go_on {
            Some(saved) if pass < MAX_PASSES => {
                incident = saved;
                pass += 1;
                read = TargetRead::Stored;
            }
            _ => return Ok(outcome.requeue),
        }
    }
}

/// How one pass ended.
#[derive(Default)]
struct Pass {
    /// When to look again, unless something changes first.
    requeue: Option<Duration>,
    /// The incident as saved, when the next move follows at once.
    go_on: Option<Arc<Incident>>,
    /// The change was refused as planned on a stored target that had
    /// moved on (409), before anything was written: the same pass again,
    /// on the target read fresh.
    stale_target: bool,
}

async fn reconcile_once<W: World>(
    incident: &Arc<Incident>,
    world: &W,
    read: TargetRead,
) -> Result<Pass, Error> {
    let seen = observe::observe(world, incident, read).await?;
    let mut decision = decide::decide(incident, &seen);
    let key = retry::backoff_key(CONTROLLER, incident.as_ref());
    let mut backing_off = None;
    // The incident as last written: the next write is conditional on it.
    let mut base = Arc::clone(incident);
    // Only a pass that changed nothing goes on at once: after a change the
    // stores have not seen it yet, and verification must not read them.
    let again = decision.again && decision.effect.is_none();
    if let (Some(effect), Some(workload)) = (&decision.effect, &seen.workload) {
        // After a failure, the change waits out its backoff, whatever else
        // (a status echo, a workload update) triggered this reconcile.
        if let Some(wait) = world.backoff_left(&key) {
            decision.effect = None;
            backing_off = Some(wait);
        } else {
            // A restore may take its writers down: the incident holds its
            // own deletion first, so a deletion winds the restore down.
            if wind_down::holds_writers(&decision.status) {
                base = world.hold_finalizer(&base, true).await?;
            }
            // A change nothing in the cluster will show is marked first.
            if effect.planned.change.marked_before()
                && !effect.dry_run
                && !effect.follow_up
                && !effect.hold_only
            {
                if let Some(record) = decision.status.steps.get_mut(effect.entry) {
                    record.applying_since = Some(Time(seen.now));
                }
                base = world.mark(&base, &decision.status).await?;
            }
            let account = seen
                .policy
                .as_ref()
                .and_then(|p| p.spec.service_account_name.as_deref());
            let holder = format!(
                "{}/{}",
                incident.namespace().unwrap_or_default(),
                incident.name_any()
            );
            let step = decision
                .status
                .steps
                .get(effect.entry)
                .map(|r| r.id.clone())
                .unwrap_or_default();
            let held_for = act::HeldFor {
                holder: &holder,
                step: &step,
            };
            decision = match world.act(account, workload, effect, held_for).await {
                Ok(lines) => {
                    world.after_apply().await;
                    settle::settle(decision, lines, incident, seen.now)
                }
                Err(act::ActError::Fenced(fenced)) => return Err(fenced.into()),
                Err(act::ActError::Authority(error)) => return Err(error.into()),
                Err(act::ActError::Apply(error)) => match error.refusal() {
                    Some(message) => {
                        let what = error.failure(effect.dry_run);
                        settle::settle_refused(decision, &what, &message, seen.now)
                    }
                    // Planned on the store's copy, which was behind, and
                    // nothing written yet: again at once on a fresh read.
                    None if error.is_conflict()
                        && read == TargetRead::Stored
                        && Arc::ptr_eq(&base, incident) =>
                    {
                        return Ok(Pass {
                            stale_target: true,
                            ..Pass::default()
                        });
                    }
                    // Lost a race: decide again from a fresh read, uncounted.
                    None if error.is_conflict() => return Err(error.into()),
                    None => {
                        let failures = world.backoff_failures(&key) + 1;
                        if failures < settle::MAX_APPLY_FAILURES {
                            return Err(error.into());
                        }
                        let error = error.to_string();
                        settle::settle_gave_up(decision, failures, &error, seen.now)
                    }
                },
            };
        }
    }
    // A hold lifted: the GitOps object resumed before the status says so.
    if let Some(owner) = &decision.resume {
        let namespace = incident.namespace().unwrap_or_default();
        let account = seen
            .policy
            .as_ref()
            .and_then(|p| p.spec.service_account_name.as_deref());
        match world.resume(&namespace, account, owner).await {
            Ok(()) => {}
            Err(act::ActError::Fenced(fenced)) => return Err(fenced.into()),
            Err(act::ActError::Authority(error)) => return Err(error.into()),
            Err(act::ActError::Apply(error)) => return Err(error.into()),
        }
    }
    // The revert branch of a hold (policy opt-in), pushed once.
    if let Some(plan) = decision.revert.clone() {
        let namespace = incident.namespace().unwrap_or_default();
        let account = seen
            .policy
            .as_ref()
            .and_then(|p| p.spec.service_account_name.as_deref());
        let outcome = match world.push_revert(&namespace, account, &plan).await {
            Ok(outcome) => outcome,
            Err(act::ActError::Fenced(fenced)) => return Err(fenced.into()),
            Err(act::ActError::Authority(error)) => return Err(error.into()),
            Err(act::ActError::Apply(error)) => return Err(error.into()),
        };
        decision = sync_hold::reverted(decision, &plan, outcome, seen.now);
    }
    let requeue = decision.requeue;
    let changed =
        decision.effect.is_some() || decision.resume.is_some() || decision.revert.is_some();
    let holds = wind_down::holds_writers(&decision.status);
    let mut saved = world
        .record(&base, seen.workload.as_ref(), decision, changed)
        .await?;
    // Held while a restore may have its writers down, let go once they are back.
    let latest = saved.clone().unwrap_or_else(|| Arc::clone(&base));
    let written = world.hold_finalizer(&latest, holds).await?;
    if !Arc::ptr_eq(&written, &latest) {
        saved = Some(written);
    }
    if let Some(wait) = backing_off {
        return Ok(Pass {
            requeue: Some(wait),
            ..Pass::default()
        });
    }
    world.backoff_reset(&key);
    Ok(Pass {
        requeue,
        go_on: saved.filter(|_| again),
        stale_target: false,
    })
}

/// Retries a failed reconcile with the incident's own backoff, the one
/// `reconcile_once` waits out and resets.
pub fn error_policy(incident: Arc<Incident>, error: &Error, ctx: Arc<Context>) -> Action {
    retry::error_policy(CONTROLLER, incident.as_ref(), error, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(kind: &str, status: serde_json::Value) -> Incident {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-crashloop", "namespace": "hg",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"title": "api", "severity": "P1", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"},
                     "source": {"kind": kind}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_detected_incident_waits_for_its_detection_a_little_and_no_longer() {
        let at = |t: &str| t.parse::<k8s_openapi::jiff::Timestamp>().unwrap();
        let fresh = incident("Detected", serde_json::json!({}));
        assert_eq!(
            awaiting_detection(&fresh, at("2026-01-01T00:00:01Z")),
            Some(Duration::from_secs(4))
        );
        // The detector never wrote it: reconciled without it.
        assert_eq!(awaiting_detection(&fresh, at("2026-01-01T00:00:05Z")), None);
        let detected = incident(
            "Detected",
            serde_json::json!({"detection": {"firstSeenAt": "2026-01-01T00:00:00Z"}}),
        );
        assert_eq!(
            awaiting_detection(&detected, at("2026-01-01T00:00:01Z")),
            None
        );
        // A person's incident has no detection to wait for.
        let declared = incident("Manual", serde_json::json!({}));
        assert_eq!(
            awaiting_detection(&declared, at("2026-01-01T00:00:01Z")),
            None
        );
    }
}
