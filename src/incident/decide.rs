//! Decide: from an incident and what was observed, the status it should
//! have, at most one change to make to the world, and what to announce once
//! the status is saved. Pure: no API calls, no clock, no metrics; table-tested.
//!
//! Two passes around the one write: [`decide`] plans it, [`super::settle`]
//! records how it went. The lifecycle (responders, deadlines, the detector's
//! signal) and the ladder (its moves in [`super::moves`], behind the gate in
//! [`super::gate`]) both move the phase through [`super::phase`] only.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    decision::{AFTER_CHANGE, Decision, Effect, Tally, seconds_between},
    gate::{block, unblock},
    lifecycle,
    moves::Step,
    observe::{Observation, ProbeHealth},
    sync_hold, wind_down,
};
use crate::{
    crd::{
        Detection, Incident, IncidentStatus, Mode, Phase, PolicyRule, SourceKind, StepResult,
        WorkflowStage,
    },
    detector::symptoms,
    remediation::{
        actions::{self, run_job::Outcome as JobOutcome},
        ladder::{self, Health, Ladder, Next},
    },
    validation,
    workload::Workload,
};

/// How often a running Job of a step is looked at.
const JOB_POLL: Duration = Duration::from_secs(3);

/// Decides the next status of an incident and the one change to make.
pub fn decide(incident: &Incident, seen: &Observation) -> Decision {
    let now = seen.now;
    let settings = match (&incident.spec.source.kind, &seen.policy) {
        (SourceKind::Detected, Some(policy)) => policy.spec.detection.clone(),
        _ => Detection::default(),
    };
    let plan = lifecycle::plan(incident, &settings, now);
    let mut decision = Decision {
        status: plan.status,
        events: plan.events,
        tallies: plan
            .breaches
            .into_iter()
            .map(|deadline| Tally::SlaBreached { deadline })
            .collect(),
        requeue: plan.requeue_after,
        ..Decision::default()
    };
    let phase = decision.status.phase;
    if decision.status.evidence.is_none() && !phase.is_some_and(Phase::is_closed) {
        decision.status.evidence = seen.evidence.clone();
    }
    // A restore that wound down and has its writers back ends first.
    wind_down::conclude(&mut decision, &Time(now));
    // A sync this incident holds is always in its record.
    sync_hold::adopt(&mut decision, incident, seen);
    // The ladder moves one step per reconcile, after the evidence is in;
    // an incident being deleted takes no new step.
    let deleting = incident.metadata.deletion_timestamp.is_some();
    let active = !deleting
        && matches!(
            phase,
            Some(Phase::Triggered | Phase::Acknowledged | Phase::Mitigating | Phase::Monitoring)
        );
    if active {
        match ladder_of(incident, seen, &decision.status) {
            Ok(ladder) => remediate(&mut decision, incident, &ladder, seen),
            Err(Some((reason, message))) => block(&mut decision, incident, reason, message, now),
            Err(None) => {}
        }
    } else if deleting || phase.is_some_and(Phase::is_closed) {
        // A restore under way brings its writers back first.
        wind_down::wind_down(&mut decision, incident, seen);
    }
    // A held sync outlives the ladder: lifted when Git moves on, a
    // responder asks, or the incident goes.
    if deleting || !active {
        sync_hold::follow_ended(&mut decision, incident, seen);
    }

    let before = incident.status.as_ref().and_then(|s| s.phase);
    if before.is_none() {
        decision.tallies.push(Tally::Opened {
            source: match incident.spec.source.kind {
                SourceKind::Manual => "Manual",
                SourceKind::Detected => "Detected",
            },
            rule: incident
                .spec
                .source
                .rule
                .clone()
                .or(incident.spec.rule.clone())
                .unwrap_or_default(),
        });
    }
    let milestones = &decision.status.milestones;
    let acknowledged_before = incident
        .status
        .as_ref()
        .is_some_and(|s| s.milestones.acknowledged_at.is_some());
    if !acknowledged_before
        && let (Some(detected), Some(acknowledged)) =
            (&milestones.detected_at, &milestones.acknowledged_at)
    {
        decision.tallies.push(Tally::Acknowledged {
            severity: incident.spec.severity,
            seconds: seconds_between(detected.0, acknowledged.0),
        });
    }
    if before != Some(Phase::Resolved)
        && decision.status.phase == Some(Phase::Resolved)
        && let (Some(detected), Some(resolved)) = (&milestones.detected_at, &milestones.resolved_at)
    {
        decision.tallies.push(Tally::Resolved {
            seconds: seconds_between(detected.0, resolved.0),
        });
    }
    decision
}

/// The ladder that applies, or why none does: Err(None) when the incident
/// has nothing to run (no policy, no actions of its own), Err(Some) when
/// what it names is missing (it waits, and resumes when it comes back).
/// A step that was verifying when its policy went away still concludes.
fn ladder_of(
    incident: &Incident,
    seen: &Observation,
    status: &IncidentStatus,
) -> Result<Ladder, Option<(&'static str, String)>> {
    let verifying = status
        .steps
        .last()
        .is_some_and(|s| s.result == StepResult::Verifying);
    // What is invalid runs nothing new; a step already applied concludes.
    let problems = validation::incident(&incident.spec);
    if !problems.is_empty() {
        if verifying {
            return Ok(ladder::remnant());
        }
        let message = format!(
            "{}; no step runs until the Incident is fixed",
            validation::summary(&problems)
        );
        return Err(Some(("InvalidSpec", message)));
    }
    if let Some(policy) = &seen.policy {
        let problems = &seen.policy_problems;
        if !problems.is_empty() {
            if verifying {
                return Ok(ladder::remnant());
            }
            let message = format!(
                "RemediationPolicy {} is invalid ({}); no step runs until it is fixed",
                kube::ResourceExt::name_any(policy.as_ref()),
                validation::summary(problems)
            );
            return Err(Some(("PolicyInvalid", message)));
        }
    }
    let guarded = ladder::guards(seen.policy.as_deref(), seen.workload.as_ref());
    if let Some(ladder) = ladder::resolve(incident, seen.policy.as_deref(), guarded) {
        return Ok(ladder);
    }
    if verifying {
        return Ok(ladder::remnant());
    }
    let spec = &incident.spec;
    let Some(policy) = incident.policy_name() else {
        return Err(None);
    };
    let rule = spec.rule.as_ref().or(spec.source.rule.as_ref());
    Err(Some(match (&seen.policy, rule) {
        (None, _) => (
            "PolicyNotFound",
            format!("RemediationPolicy {policy} not found; remediation resumes when it exists"),
        ),
        (Some(_), Some(rule)) => (
            "RuleNotFound",
            format!(
                "RemediationPolicy {policy} has no rule {rule}; remediation resumes when it does"
            ),
        ),
        (Some(_), None) => return Err(None),
    }))
}

/// Whether the target has recovered: the rollout is complete, and the
/// rule's symptom is gone (without a rule: every replica ready). A failing
/// probe is gone when the probe passes again; while its state is unknown
/// (the operator just started), when the detector has cleared the signal.
/// Probes the verification names must pass as well (unknown is not yet).
pub fn health(
    workload: &Workload,
    pods: &[crate::pod::PodFacts],
    rule: Option<&PolicyRule>,
    probe: Option<(ProbeHealth, bool)>,
    verify_probes: &[ProbeHealth],
    now: Timestamp,
) -> Health {
    let recovered = match rule {
        // An alert's incident: verified once the alert has resolved (the
        // workload's own health and any verify.probes as well).
        Some(rule) if rule.when.symptom == crate::crd::Symptom::AlertFiring => {
            probe.is_some_and(|(_, cleared)| cleared)
        }
        Some(rule) if rule.when.symptom == crate::crd::Symptom::ProbeFailing => match probe {
            Some((ProbeHealth::Healthy, _)) => true,
            Some((ProbeHealth::Failing, _)) => false,
            Some((ProbeHealth::Unknown, cleared)) => cleared,
            None => false,
        },
        Some(rule) => {
            // The symptom as it is now: how long it must last before it
            // opens an incident does not delay seeing it still there.
            let mut now_rule = rule.clone();
            now_rule.when.sustained_for = None;
            symptoms::evaluate(std::slice::from_ref(&now_rule), workload, pods, None, now)
                .signals
                .is_empty()
        }
        None => workload.all_ready(),
    };
    let probes_pass = verify_probes.iter().all(|p| *p == ProbeHealth::Healthy);
    if workload.rollout_complete() && recovered && probes_pass {
        Health::Healthy
    } else {
        Health::Unhealthy
    }
}

/// One move of the ladder: the next move decided by [`ladder::next`],
/// carried out by the function of that move below.
fn remediate(decision: &mut Decision, incident: &Incident, ladder: &Ladder, seen: &Observation) {
    let now = seen.now;
    let Some(workload) = &seen.workload else {
        let target = &incident.spec.target;
        let message = format!("{target} not found; remediation resumes when it exists");
        block(decision, incident, "TargetNotFound", message, now);
        return;
    };
    // A dependency that is down holds every new move; a step already
    // verifying still concludes.
    let verifying = decision
        .status
        .steps
        .last()
        .is_some_and(|r| r.result == StepResult::Verifying);
    if let Some((dependency, target)) = &seen.dependency_down
        && !verifying
    {
        let message = format!(
            "{target}, which this depends on, has an open incident ({dependency}); no action until it is resolved"
        );
        block(decision, incident, "DependencyDown", message, now);
        return;
    }
    unblock(decision, incident, &Time(now));
    if follow_up(decision, ladder, seen) {
        return;
    }
    let cleared = incident
        .status
        .as_ref()
        .and_then(|s| s.detection.as_ref())
        .is_some_and(|d| d.cleared_at.is_some());
    // An alert's signal has no probe: its clear is what counts.
    let probe = seen
        .probe
        .or(Some(ProbeHealth::Unknown))
        .map(|p| (p, cleared));
    let health = health(
        workload,
        &seen.pods,
        ladder.rule.as_ref(),
        probe,
        &seen.verify_probes,
        now,
    );
    let step = Step {
        incident,
        ladder,
        seen,
        workload,
        now: Time(now),
    };
    // A restoreData step runs its sub-steps while it verifies; the usual
    // verification follows once its writers are back.
    let under_way = decision.status.steps.last().and_then(|record| {
        (record.result == StepResult::Verifying)
            .then(|| record.workflow.clone())
            .flatten()
            .filter(|w| w.stage != WorkflowStage::Done)
    });
    if let Some(workflow) = under_way {
        let entry = decision.status.steps.len() - 1;
        step.advance_workflow(decision, entry, &workflow);
        return;
    }
    // A runJob step's Job decides first: a Job that failed (or is gone
    // before the step concluded) fails the step; one still running holds
    // verification until it ends or the step's timeout passes.
    let verifying = decision
        .status
        .steps
        .len()
        .checked_sub(1)
        .filter(|&entry| decision.status.steps[entry].result == StepResult::Verifying);
    let health = match (&seen.job, verifying) {
        (Some(JobOutcome::Failed(why)), Some(entry)) => {
            step.fail(decision, entry, why);
            return;
        }
        (Some(JobOutcome::Gone), Some(entry)) => {
            let why = "its Job no longer exists (deleted, or removed after keepFor) before the step concluded";
            step.fail(decision, entry, why);
            return;
        }
        (Some(JobOutcome::Running), _) => {
            // Jobs are not watched (they are few and short): looked at again.
            decision.requeue_within(JOB_POLL);
            Health::Unhealthy
        }
        _ => health,
    };
    // A held sync waits on Git once its step is verified; the release that
    // follows is verified like a step.
    if sync_hold::follow(decision, incident, seen, ladder, health) {
        return;
    }
    let round = step.round(&decision.status);
    let approvals = &incident.spec.approvals;
    let approved = |name: &str| ladder.approved(approvals, name, round);
    // The rule's symptom is gone (the signal cleared, or another incident's
    // step fixed it): no new step starts, and one not yet applied is skipped.
    // An automatic action on a target that has recovered can only do harm.
    let recovered = ladder.rule.is_some() && health == Health::Healthy;
    // A step the target already carries was applied (its record lost): it
    // is verified, not skipped - the recovery may well be its doing.
    // So is one begun whose outcome was never recorded (a call to a
    // service): it is not skipped as if it had never run.
    let last_applied = decision.status.steps.last().is_some_and(|r| {
        workload.applied_step() == Some(r.id.as_str()) || r.applying_since.is_some()
    });
    // A person who declared the incident may see what the pods do not (a
    // 503 behind the load balancer, a bad config nothing crashes on): its
    // next step is proposed all the same, and runs once a person approves
    // it. Nothing runs on a healthy-looking target without that approval.
    let declared = incident.spec.source.kind == SourceKind::Manual;
    let asked_for = |entry: usize| {
        decision.status.steps.get(entry).is_some_and(|record| {
            approved(&record.name)
                || ladder
                    .rung_of(record)
                    .is_some_and(|rung| rung.mode == Mode::DryRun)
        })
    };
    match ladder::next(ladder, &decision.status.steps, round, approved, health, now) {
        Next::Record { rung, .. } if recovered && declared => {
            let dry_run = ladder
                .rungs
                .get(rung)
                .is_some_and(|r| r.mode == Mode::DryRun);
            step.record(decision, rung, !dry_run);
            if !dry_run {
                symptom_absent(decision, ladder, workload, round);
            }
        }
        Next::Record { .. } if recovered => {}
        Next::Execute { entry, rung } if recovered && declared && asked_for(entry) => {
            step.execute(decision, entry, rung);
        }
        // Recorded while the symptom showed, gone before it ran: a person
        // declared it, so it waits for one rather than being skipped.
        Next::Execute { entry, .. } if recovered && declared && !last_applied => {
            if let Some(record) = decision.status.steps.get_mut(entry) {
                record.result = StepResult::AwaitingApproval;
            }
            symptom_absent(decision, ladder, workload, round);
        }
        Next::Execute { entry, .. } if recovered && !last_applied => step.skip_with(
            decision,
            entry,
            "StepSkipped",
            "the target recovered before the step ran; nothing to do".into(),
            false,
        ),
        Next::Record {
            rung,
            awaiting_approval,
        } => step.record(decision, rung, awaiting_approval),
        Next::Approved { entry } => step.approve(decision, entry),
        Next::Execute { entry, rung } => step.execute(decision, entry, rung),
        Next::Orphaned { entry } => step.skip(decision, entry),
        Next::HealthySince { entry } => step.hold(decision, entry),
        Next::Relapsed { entry } => step.relapse(decision, entry),
        Next::Succeeded { entry } => step.succeed(decision, entry),
        Next::Failed { entry, reason } => step.fail(decision, entry, &reason),
        Next::Exhausted => step.exhaust(decision),
        Next::DryRunComplete => step.complete_dry_run(decision),
        Next::Wait(until) => {
            if let Some(at) = until {
                let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
                decision.requeue_within(wait + Duration::from_millis(500));
            }
        }
    }
}

/// The message of a step proposed on a declared incident whose rule's
/// symptom is not seen: what is missing, and what runs it anyway.
fn symptom_absent(
    decision: &mut Decision,
    ladder: &Ladder,
    workload: &crate::workload::Workload,
    round: i32,
) {
    let Some(record) = decision.status.steps.last_mut() else {
        return;
    };
    if record.result != StepResult::AwaitingApproval {
        return;
    }
    let symptom = ladder
        .rule
        .as_ref()
        .map(|rule| rule.when.symptom.to_string())
        .unwrap_or_default();
    let approval = if round > 1 {
        format!("{{step: {}, by: <you>, round: {round}}}", record.name)
    } else {
        format!("{{step: {}, by: <you>}}", record.name)
    };
    record.message = Some(format!(
        "the rule's symptom {symptom} is not present on {}; this incident was declared by a \
         person, so its step is proposed: approve it in spec.approvals ({approval}) to run it anyway",
        workload.reference()
    ));
}

/// A step applied in parts goes on while it verifies (a DeletePods
/// restart, batch by batch). Returns whether there was more to do.
fn follow_up(decision: &mut Decision, ladder: &Ladder, seen: &Observation) -> bool {
    let Some(entry) = decision.status.steps.len().checked_sub(1) else {
        return false;
    };
    let record = &decision.status.steps[entry];
    let Some(rung) = ladder.rung_of(record) else {
        return false;
    };
    if record.result != StepResult::Verifying {
        return false;
    }
    let started = record.started_at.as_ref().map_or(seen.now, |t| t.0);
    // Past its timeout, verification concludes: a follow-up that keeps being
    // refused (a disruption budget) must not keep the step open for ever.
    let deadline = started
        .checked_add(rung.timing.timeout)
        .unwrap_or(Timestamp::MAX);
    if seen.now >= deadline {
        return false;
    }
    let min_ready = ladder.safety.min_ready_replicas;
    let replacing = &record.replacing;
    let more = rung.act().follow_up(
        &rung.action,
        &seen.pods,
        actions::Progress { started, replacing },
        min_ready,
    );
    // A StatefulSet waits for a pod broken on its old revision instead of
    // replacing it: a step that changed the template finishes the job.
    let stuck = || {
        rung.act()
            .rolls_pods(&rung.action)
            .then_some(seen.workload.as_ref())
            .flatten()
            .and_then(|workload| actions::restart::stuck_on_an_older_revision(workload, &seen.pods))
    };
    let Some(planned) = more.or_else(stuck) else {
        return false;
    };
    decision.effect = Some(Effect {
        entry,
        planned,
        dry_run: false,
        follow_up: true,
        then: None,
        hold: None,
        notes: Vec::new(),
        hold_only: false,
        first_batch: None,
    });
    decision.requeue_within(AFTER_CHANGE);
    true
}

#[cfg(test)]
mod tests;
