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
};
use crate::{
    crd::{
        Detection, Incident, IncidentStatus, Phase, PolicyRule, SourceKind, StepResult,
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
    // The ladder moves one step per reconcile, after the evidence is in.
    let active = matches!(
        phase,
        Some(Phase::Triggered | Phase::Acknowledged | Phase::Mitigating | Phase::Monitoring)
    );
    if active {
        match ladder_of(incident, seen, &decision.status) {
            Ok(ladder) => remediate(&mut decision, incident, &ladder, seen),
            Err(Some((reason, message))) => block(&mut decision, incident, reason, message, now),
            Err(None) => {}
        }
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
        let problems = validation::policy(&policy.spec);
        if !problems.is_empty() {
            if verifying {
                return Ok(ladder::remnant());
            }
            let message = format!(
                "RemediationPolicy {} is invalid ({}); no step runs until it is fixed",
                kube::ResourceExt::name_any(policy.as_ref()),
                validation::summary(&problems)
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
    let approvals = &incident.spec.approvals;
    let approved = |name: &str| ladder.approved(approvals, name);
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
    let round = step.round(&decision.status);
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
    match ladder::next(ladder, &decision.status.steps, round, approved, health, now) {
        Next::Record { .. } if recovered => {}
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
    let Some(planned) = rung.act().follow_up(
        &rung.action,
        &seen.pods,
        actions::Progress { started, replacing },
        min_ready,
    ) else {
        return false;
    };
    decision.effect = Some(Effect {
        entry,
        planned,
        dry_run: false,
        follow_up: true,
        then: None,
    });
    decision.requeue_within(AFTER_CHANGE);
    true
}

#[cfg(test)]
mod tests {
    //! Every phase, every step result, approvals, safety refusals and a
    //! policy edited under a running ladder, each as one reconcile: an
    //! incident and an observation in, a decision out.

    use std::sync::Arc;

    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use serde_json::{Value, json};

    use super::*;
    use crate::controller::incident::decision::{
        AFTER_RECORD, BREAKER_RECHECK, NEEDS_HUMAN, REMEDIATION_BLOCKED, TARGET_MISSING,
    };
    use crate::controller::incident::settle::{
        MAX_APPLY_FAILURES, settle, settle_gave_up, settle_refused,
    };
    use crate::crd::{ActionKind, StepRecord};
    use crate::pod::PodFacts;
    use crate::{
        crd::RemediationPolicy,
        names::{REVISION_ANNOTATION, STEP_ANNOTATION},
        remediation::actions::{Inputs, rollback},
    };

    const UID: &str = "0123abcd-0000-0000-0000-000000000000";

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn policy(mode: &str, actions: Value, safety: Value) -> Arc<RemediationPolicy> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
                "metadata": {"name": "guard", "namespace": "hg"},
                "spec": {
                    "mode": mode,
                    "safety": safety,
                    "targets": [{"kind": "Deployment", "names": ["api"]}],
                    "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff"},
                        "severity": "P1", "type": "ServiceOutage", "actions": actions,
                        "verify": {"timeout": "5m", "holdDown": "1m"}}],
                }
            }))
            .unwrap(),
        )
    }

    fn two_steps(mode: &str) -> Arc<RemediationPolicy> {
        policy(
            mode,
            json!([{"action": "rollback"}, {"action": "restart"}]),
            json!({}),
        )
    }

    /// A detected incident under the policy's `crash` rule, with `status`.
    fn incident(status: Value) -> Incident {
        let mut value = json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-crashloop", "namespace": "hg", "uid": UID, "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"title": "CrashLoopBackOff on Deployment/api", "severity": "P1",
                "type": "ServiceOutage", "target": {"kind": "Deployment", "name": "api"},
                "policy": "guard", "rule": "crash",
                "source": {"kind": "Detected", "policy": "guard", "rule": "crash",
                    "dedupKey": "Deployment/api/CrashLoopBackOff"}},
        });
        if !status.is_null() {
            value["status"] = status;
        }
        serde_json::from_value(value).unwrap()
    }

    /// The incident as the previous reconcile left it.
    fn after(mut incident: Incident, decision: &Decision) -> Incident {
        incident.status = Some(decision.status.clone());
        incident
    }

    fn entry(name: &str, action: &str, result: &str, started: &str) -> Value {
        json!({"id": format!("0123abcd-0-{name}-1"), "name": name, "action": action,
            "rule": "crash", "attempt": 1, "result": result, "startedAt": started,
            "changes": ["something changed"]})
    }

    fn with_steps(phase: &str, steps: Value) -> Incident {
        incident(
            json!({"phase": phase, "milestones": {"detectedAt": "2026-01-01T00:00:00Z"},
            "evidence": {}, "steps": steps}),
        )
    }

    /// A Deployment at revision 2 (revision 1 in its history): rolled out
    /// and ready, or with its rollout stuck halfway and nothing ready.
    fn api(ready: bool, annotations: Value) -> Workload {
        let (ready_replicas, updated) = if ready { (2, 2) } else { (0, 1) };
        let mut annotations = annotations;
        annotations[REVISION_ANNOTATION] = json!("2");
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "api", "namespace": "hg", "uid": "d-1", "generation": 2,
                "annotations": annotations},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "app", "image": "api:2"}]}}},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": updated,
                "readyReplicas": ready_replicas, "availableReplicas": ready_replicas},
        }))
        .unwrap();
        deployment.into()
    }

    fn history() -> Inputs {
        let set = |revision: &str| -> ReplicaSet {
            serde_json::from_value(json!({
                "metadata": {"name": format!("api-{revision}"), "annotations": {REVISION_ANNOTATION: revision},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "d-1"}]},
                "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {
                    "metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "app", "image": format!("api:{revision}")}]}}}
            }))
            .unwrap()
        };
        Inputs::of(rollback::Inputs {
            replica_sets: vec![set("1"), set("2")],
            last_healthy: None,
        })
    }

    fn seen(policy: &Arc<RemediationPolicy>, workload: Option<Workload>, now: &str) -> Observation {
        Observation {
            now: at(now),
            policy: Some(policy.clone()),
            workload,
            pods: Vec::new(),
            inputs: Inputs::default(),
            target_steps: Vec::new(),
            approval_pending: None,
            target_holder: None,
            policy_steps: Vec::new(),
            evidence: Some(crate::crd::Evidence::default()),
            probe: None,
            verify_probes: Vec::new(),
            probe_results: Vec::new(),
            dependency_down: None,
            job: None,
            workflow_probe: None,
        }
    }

    /// A pod of `api` in CrashLoopBackOff, the `crash` rule's symptom.
    fn crashing_pod() -> PodFacts {
        serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({
            "metadata": {"name": "api-1", "labels": {"pod-template-hash": "h"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-h", "uid": "r"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "app", "image": "i", "imageID": "",
                "ready": false, "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        }))
        .unwrap()
        .into()
    }

    fn reasons(decision: &Decision) -> Vec<&str> {
        decision.events.iter().map(|e| e.reason.as_str()).collect()
    }

    fn last_step(decision: &Decision) -> &StepRecord {
        decision.status.steps.last().unwrap()
    }

    #[test]
    fn a_new_incident_opens_records_its_first_step_and_counts_once() {
        let policy = two_steps("Auto");
        let decision = decide(
            &incident(Value::Null),
            &seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:05Z"),
        );
        assert_eq!(decision.status.phase, Some(Phase::Mitigating));
        assert!(decision.status.evidence.is_some(), "evidence before acting");
        let step = last_step(&decision);
        assert_eq!(
            (step.name.as_str(), step.result, step.rule.as_deref()),
            ("rollback", StepResult::Pending, Some("crash"))
        );
        assert_eq!(step.id, "0123abcd-0-rollback-1");
        assert_eq!(decision.effect, None, "recorded first, run next time");
        assert_eq!(reasons(&decision), ["Triggered", "StepRecorded"]);
        assert_eq!(
            decision.tallies,
            [Tally::Opened {
                source: "Detected",
                rule: "crash".into()
            }]
        );
        assert_eq!(decision.requeue, Some(AFTER_RECORD));
    }

    #[test]
    fn a_pending_step_is_planned_then_settled_as_applied() {
        let policy = two_steps("Auto");
        let pending = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let mut observed = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:06Z");
        observed.inputs = history();
        let decision = decide(&pending, &observed);
        let effect = decision.effect.clone().unwrap();
        assert!(!effect.dry_run && !effect.follow_up);
        assert!(effect.planned.change.get::<rollback::Rollback>().is_some());
        assert_eq!(
            last_step(&decision).result,
            StepResult::Pending,
            "nothing is recorded as done before it is done"
        );
        assert!(decision.events.is_empty());

        let settled = settle(decision, vec![], &pending, at("2026-01-01T00:00:06Z"));
        let step = last_step(&settled);
        assert_eq!(step.result, StepResult::Verifying);
        assert_eq!(
            step.changes,
            ["Deployment/api rolled back from revision 2 to revision 1"]
        );
        assert_eq!(reasons(&settled), ["StepApplied"]);
        assert_eq!(settled.workload_events[0].reason, "RemediationApplied");
        assert!(settled.tallies.is_empty(), "counted when the verdict is in");
    }

    #[test]
    fn a_step_found_on_the_workload_after_a_crash_is_not_applied_again() {
        let policy = two_steps("Auto");
        let pending = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let marked = api(false, json!({STEP_ANNOTATION: "0123abcd-0-rollback-1"}));
        let decision = decide(
            &pending,
            &seen(&policy, Some(marked), "2026-01-01T00:00:06Z"),
        );
        assert_eq!(decision.effect, None);
        assert_eq!(last_step(&decision).result, StepResult::Verifying);
    }

    #[test]
    fn verification_holds_then_resolves_with_its_metrics() {
        let policy = two_steps("Auto");
        let verifying = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Verifying",
                "2026-01-01T00:00:06Z"
            )]),
        );
        let healthy = Some(api(true, json!({})));
        let first = decide(
            &verifying,
            &seen(&policy, healthy.clone(), "2026-01-01T00:00:30Z"),
        );
        assert_eq!(first.status.phase, Some(Phase::Monitoring));
        assert_eq!(
            last_step(&first).healthy_since,
            Some(Time(at("2026-01-01T00:00:30Z")))
        );
        assert_eq!(first.requeue, Some(Duration::from_secs(61)));

        let holding = after(verifying.clone(), &first);
        let early = decide(
            &holding,
            &seen(&policy, healthy.clone(), "2026-01-01T00:01:00Z"),
        );
        assert_eq!(
            early.status, first.status,
            "nothing until the hold-down ends"
        );

        let done = decide(&holding, &seen(&policy, healthy, "2026-01-01T00:01:30Z"));
        assert_eq!(done.status.phase, Some(Phase::Resolved));
        assert_eq!(last_step(&done).result, StepResult::Succeeded);
        assert_eq!(
            done.status.milestones.mitigated_at,
            Some(Time(at("2026-01-01T00:00:30Z")))
        );
        assert_eq!(reasons(&done), ["Remediated"]);
        assert!(matches!(
            done.tallies.as_slice(),
            [
                Tally::StepEnded {
                    result: StepResult::Succeeded,
                    ..
                },
                Tally::Mitigated { seconds: 30.0 },
                Tally::Resolved { seconds: 90.0 },
            ]
        ));

        let relapse = decide(
            &holding,
            &seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:01:00Z"),
        );
        assert_eq!(relapse.status.phase, Some(Phase::Mitigating));
        assert_eq!(last_step(&relapse).healthy_since, None);
    }

    #[test]
    fn a_step_that_does_not_help_fails_the_next_is_recorded_then_the_ladder_exhausts() {
        let policy = two_steps("Auto");
        let unhealthy = || Some(api(false, json!({})));
        let verifying = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Verifying",
                "2026-01-01T00:00:00Z"
            )]),
        );
        let failed = decide(
            &verifying,
            &seen(&policy, unhealthy(), "2026-01-01T00:05:00Z"),
        );
        assert_eq!(last_step(&failed).result, StepResult::Failed);
        assert_eq!(reasons(&failed), ["StepFailed"]);
        assert!(matches!(
            failed.tallies.as_slice(),
            [Tally::StepEnded {
                result: StepResult::Failed,
                ..
            }]
        ));

        let next = decide(
            &after(verifying, &failed),
            &seen(&policy, unhealthy(), "2026-01-01T00:05:01Z"),
        );
        assert_eq!(last_step(&next).name, "restart");
        assert_eq!(last_step(&next).id, "0123abcd-1-restart-1");

        let both_failed = with_steps(
            "Mitigating",
            json!([
                entry("rollback", "rollback", "Failed", "2026-01-01T00:00:00Z"),
                entry("restart", "restart", "Failed", "2026-01-01T00:05:01Z")
            ]),
        );
        let escalated = decide(
            &both_failed,
            &seen(&policy, unhealthy(), "2026-01-01T00:11:00Z"),
        );
        assert_eq!(escalated.status.phase, Some(Phase::Escalated));
        assert!(crate::conditions::is_true(
            &escalated.status.conditions,
            NEEDS_HUMAN
        ));
        assert_eq!(escalated.tallies, [Tally::LadderExhausted]);
        let again = decide(
            &after(both_failed, &escalated),
            &seen(&policy, unhealthy(), "2026-01-01T00:12:00Z"),
        );
        assert!(
            again.events.is_empty() && again.tallies.is_empty(),
            "escalated once"
        );
        assert_eq!(again.status, escalated.status);
    }

    #[test]
    fn dry_run_walks_the_ladder_without_changing_the_phase() {
        let policy = two_steps("DryRun");
        let opened = decide(
            &incident(Value::Null),
            &seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:05Z"),
        );
        assert_eq!(opened.status.phase, Some(Phase::Triggered));
        let pending = after(incident(Value::Null), &opened);
        let mut observed = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:06Z");
        observed.inputs = history();
        let planned = decide(&pending, &observed);
        assert!(planned.effect.as_ref().unwrap().dry_run);
        let settled = settle(planned, vec![], &pending, at("2026-01-01T00:00:06Z"));
        assert_eq!(last_step(&settled).result, StepResult::DryRun);
        assert!(settled.workload_events.is_empty(), "nothing changed");
        assert!(matches!(
            settled.tallies.as_slice(),
            [Tally::StepEnded {
                result: StepResult::DryRun,
                ..
            }]
        ));

        let both = with_steps(
            "Triggered",
            json!([
                entry("rollback", "rollback", "DryRun", "2026-01-01T00:00:06Z"),
                entry("restart", "restart", "DryRun", "2026-01-01T00:00:07Z")
            ]),
        );
        let complete = decide(
            &both,
            &seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:08Z"),
        );
        assert_eq!(reasons(&complete), ["DryRunComplete"]);
        assert_eq!(complete.status.phase, Some(Phase::Triggered));
        let again = decide(
            &after(both, &complete),
            &seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:09Z"),
        );
        assert!(again.events.is_empty());
    }

    #[test]
    fn a_step_that_needs_approval_waits_for_it() {
        let policy = two_steps("RequireApproval");
        let unhealthy = || Some(api(false, json!({})));
        let opened = decide(
            &incident(Value::Null),
            &seen(&policy, unhealthy(), "2026-01-01T00:00:05Z"),
        );
        assert_eq!(last_step(&opened).result, StepResult::AwaitingApproval);
        assert_eq!(opened.status.phase, Some(Phase::Triggered));
        let waiting = after(incident(Value::Null), &opened);
        let still = decide(
            &waiting,
            &seen(&policy, unhealthy(), "2026-01-01T00:10:00Z"),
        );
        assert_eq!(last_step(&still).result, StepResult::AwaitingApproval);
        assert_eq!(still.effect, None);

        let mut approved = waiting.clone();
        approved.spec.approvals = vec![crate::crd::Approval {
            step: "rollback".into(),
            by: "alice".into(),
        }];
        let go = decide(
            &approved,
            &seen(&policy, unhealthy(), "2026-01-01T00:10:01Z"),
        );
        assert_eq!(last_step(&go).result, StepResult::Pending);
        assert_eq!(go.status.phase, Some(Phase::Mitigating));
    }

    #[test]
    fn the_safety_limits_hold_a_step_back_and_say_why() {
        use crate::remediation::safety::AppliedStep;
        let policy = policy(
            "Auto",
            json!([{"action": "rollback"}, {"action": "restart"}]),
            json!({"cooldown": "5m", "circuitBreakerThreshold": 2}),
        );
        let failed_before = || {
            with_steps(
                "Mitigating",
                json!([entry(
                    "rollback",
                    "rollback",
                    "Failed",
                    "2026-01-01T00:00:00Z"
                )]),
            )
        };
        let step = |minute: i64, result| AppliedStep {
            started: at("2026-01-01T00:00:00Z")
                + k8s_openapi::jiff::SignedDuration::from_mins(minute),
            finished: None,
            result,
        };
        let mut cooling = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:02:00Z");
        cooling.target_steps = vec![step(0, StepResult::Failed)];
        let held = decide(&failed_before(), &cooling);
        assert_eq!(held.status.steps.len(), 1, "no new step");
        let blocked = held
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == REMEDIATION_BLOCKED)
            .unwrap();
        assert_eq!(
            (blocked.status.as_str(), blocked.reason.as_str()),
            ("True", "SafetyLimit")
        );
        assert_eq!(held.requeue, Some(Duration::from_secs(181)));
        assert_eq!(reasons(&held), [REMEDIATION_BLOCKED]);

        let mut broken = seen(&policy, Some(api(false, json!({}))), "2026-01-01T01:00:00Z");
        broken.policy_steps = vec![step(0, StepResult::Failed), step(10, StepResult::Failed)];
        let refused = decide(&failed_before(), &broken);
        assert!(
            refused
                .status
                .conditions
                .iter()
                .any(|c| c.reason == "CircuitBreakerOpen")
        );
        assert_eq!(refused.requeue, Some(BREAKER_RECHECK));

        let allowed = decide(
            &after(failed_before(), &held),
            &seen(&policy, Some(api(false, json!({}))), "2026-01-01T01:00:00Z"),
        );
        assert_eq!(allowed.status.steps.len(), 2);
        let cleared = allowed
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == REMEDIATION_BLOCKED)
            .unwrap();
        assert_eq!(cleared.status, "False");
    }

    #[test]
    fn the_ready_floor_refuses_a_step_and_the_ladder_goes_on() {
        let policy = policy(
            "Auto",
            json!([{"action": "restart"}, {"action": "scale", "scale": {"replicas": 4}}]),
            json!({"minReadyReplicas": 2}),
        );
        let pending = with_steps(
            "Mitigating",
            json!([entry(
                "restart",
                "restart",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        // Both ready, maxUnavailable 25% of 2 rounds to 0: the floor holds.
        // A pod crash-loops still (the rule's symptom), ready between crashes.
        let crashing = |workload| {
            let mut observed = seen(&policy, Some(workload), "2026-01-01T00:00:06Z");
            observed.pods = vec![crashing_pod()];
            observed
        };
        let fine = decide(&pending, &crashing(api(true, json!({}))));
        assert!(fine.effect.is_some());
        let mut three = api(true, json!({}));
        if let Workload::Deployment(d) = &mut three {
            let d = Arc::make_mut(d);
            d.spec.as_mut().unwrap().strategy =
                Some(serde_json::from_value(json!({"type": "Recreate"})).unwrap());
        }
        let refused = decide(&pending, &crashing(three));
        assert_eq!(refused.effect, None);
        assert_eq!(last_step(&refused).result, StepResult::Failed);
        assert_eq!(reasons(&refused), ["StepRefused"]);
    }

    #[test]
    fn a_policy_edited_under_a_running_ladder_never_runs_the_recorded_step_as_another_action() {
        // Recorded as a rollback; then the rule's first step became a scale of the same name.
        let edited = policy(
            "Auto",
            json!([{"name": "rollback", "action": "scale", "scale": {"replicas": 5}}, {"action": "restart"}]),
            json!({}),
        );
        let pending = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let decision = decide(
            &pending,
            &seen(&edited, Some(api(false, json!({}))), "2026-01-01T00:00:06Z"),
        );
        assert_eq!(
            decision.effect, None,
            "the scale never runs in the rollback's place"
        );
        assert_eq!(last_step(&decision).result, StepResult::Skipped);
        assert_eq!(reasons(&decision), ["StepSkipped"]);
        // The next reconcile goes on with the ladder as it now is.
        let next = decide(
            &after(pending, &decision),
            &seen(&edited, Some(api(false, json!({}))), "2026-01-01T00:00:07Z"),
        );
        let step = last_step(&next);
        assert_eq!(
            (step.name.as_str(), step.action),
            ("rollback", ActionKind::Scale)
        );
    }

    #[test]
    fn a_missing_target_waits_and_a_closed_incident_does_nothing() {
        let policy = two_steps("Auto");
        let missing = decide(
            &incident(Value::Null),
            &seen(&policy, None, "2026-01-01T00:00:05Z"),
        );
        assert!(missing.status.steps.is_empty());
        assert!(missing.requeue.is_some_and(|r| r <= TARGET_MISSING));

        let resolved = with_steps(
            "Resolved",
            json!([entry(
                "rollback",
                "rollback",
                "Succeeded",
                "2026-01-01T00:00:00Z"
            )]),
        );
        let decision = decide(
            &resolved,
            &seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:30:00Z"),
        );
        assert_eq!(decision.effect, None);
        assert!(decision.events.is_empty() && decision.tallies.is_empty());
        assert_eq!(decision.status.steps, resolved.status.unwrap().steps);
    }

    #[test]
    fn a_pod_by_pod_restart_goes_on_batch_by_batch_while_it_verifies() {
        let policy = policy(
            "Auto",
            json!([{"action": "restart", "restart": {"method": "DeletePods"}}]),
            json!({}),
        );
        let verifying = with_steps(
            "Mitigating",
            json!([entry(
                "restart",
                "restart",
                "Verifying",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let mut observed = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:06Z");
        observed.pods = vec![
            serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({
            "metadata": {"name": "api-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}}))
            .unwrap()
            .into(),
        ];
        let decision = decide(&verifying, &observed);
        let effect = decision.effect.clone().unwrap();
        assert!(effect.follow_up);
        let settled = settle(
            decision,
            vec!["pod api-1 evicted".into()],
            &verifying,
            observed.now,
        );
        let step = last_step(&settled);
        assert_eq!(step.result, StepResult::Verifying);
        assert_eq!(step.changes, ["something changed", "pod api-1 evicted"]);
        assert!(settled.events.is_empty());
    }

    #[test]
    fn responders_close_an_incident_whatever_the_ladder_is_doing() {
        let policy = two_steps("Auto");
        let mut verifying = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Verifying",
                "2026-01-01T00:00:06Z"
            )]),
        );
        verifying.metadata.generation = Some(2);
        verifying.spec.resolution = Some(crate::crd::Resolution {
            by: "bob".into(),
            root_cause: "bad config".into(),
            summary: "fixed by hand".into(),
            follow_ups: Vec::new(),
        });
        let decision = decide(
            &verifying,
            &seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:01:00Z"),
        );
        assert_eq!(decision.status.phase, Some(Phase::Resolved));
        assert_eq!(decision.effect, None);
        assert!(matches!(
            decision.tallies.as_slice(),
            [Tally::Resolved { seconds: 60.0 }]
        ));
    }

    #[test]
    fn a_step_verifying_when_its_policy_went_away_still_concludes() {
        let verifying = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Verifying",
                "2026-01-01T00:00:06Z"
            )]),
        );
        let mut gone = seen(
            &two_steps("Auto"),
            Some(api(true, json!({}))),
            "2026-01-01T00:00:30Z",
        );
        gone.policy = None;
        let holding = decide(&verifying, &gone);
        assert_eq!(holding.status.phase, Some(Phase::Monitoring));
        gone.now = at("2026-01-01T00:01:30Z");
        let done = decide(&after(verifying, &holding), &gone);
        assert_eq!(done.status.phase, Some(Phase::Resolved));
        assert_eq!(last_step(&done).result, StepResult::Succeeded);
    }

    #[test]
    fn a_pending_step_whose_policy_is_gone_waits_and_resumes_when_it_is_back() {
        let policy = two_steps("Auto");
        let pending = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let mut gone = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:06Z");
        gone.policy = None;
        let waiting = decide(&pending, &gone);
        assert_eq!(waiting.effect, None);
        assert_eq!(
            last_step(&waiting).result,
            StepResult::Pending,
            "not skipped"
        );
        let blocked = waiting
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == REMEDIATION_BLOCKED)
            .unwrap();
        assert_eq!(blocked.reason, "PolicyNotFound");
        assert_eq!(reasons(&waiting), [REMEDIATION_BLOCKED]);
        assert!(waiting.requeue.is_some());

        let mut back = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:05:00Z");
        back.inputs = history();
        let resumed = decide(&after(pending.clone(), &waiting), &back);
        assert!(resumed.effect.is_some());
        let condition = resumed
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == REMEDIATION_BLOCKED)
            .unwrap();
        assert_eq!(
            condition.status, "False",
            "unblocked once the policy is back: {condition:?}"
        );

        let mut renamed = incident(Value::Null);
        renamed.spec.rule = Some("gone".into());
        renamed.status = pending.status.clone();
        let no_rule = decide(
            &renamed,
            &seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:06Z"),
        );
        assert!(
            no_rule
                .status
                .conditions
                .iter()
                .any(|c| c.reason == "RuleNotFound")
        );
    }

    #[test]
    fn a_reopened_incident_runs_its_ladder_again() {
        let policy = two_steps("Auto");
        let mut reopened = with_steps(
            "Resolved",
            json!([entry(
                "rollback",
                "rollback",
                "Succeeded",
                "2026-01-01T00:00:06Z"
            )]),
        );
        let status = reopened.status.as_mut().unwrap();
        status.detection = Some(crate::crd::DetectionStatus {
            reopens: 1,
            ..Default::default()
        });
        let decision = decide(
            &reopened,
            &seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:10:00Z"),
        );
        assert_eq!(decision.status.phase, Some(Phase::Mitigating));
        let step = last_step(&decision);
        assert_eq!(
            (step.name.as_str(), step.attempt, step.result),
            ("rollback", 2, StepResult::Pending)
        );
        assert_eq!(step.id, "0123abcd-1-rollback-2");
        assert_eq!(reasons(&decision), ["Reopened", "StepRecorded"]);
    }

    #[test]
    fn a_change_the_api_server_refuses_for_good_fails_the_step() {
        let policy = two_steps("Auto");
        let pending = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let mut observed = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:06Z");
        observed.inputs = history();
        let planned = decide(&pending, &observed);
        let refused = settle_refused(planned, "422 spec.template: Invalid value", observed.now);
        assert_eq!(refused.effect, None);
        let step = last_step(&refused);
        assert_eq!(step.result, StepResult::Failed);
        assert!(
            step.message
                .as_deref()
                .unwrap()
                .contains("422 spec.template"),
            "{step:?}"
        );
        assert_eq!(reasons(&refused), ["StepRefused"]);
        assert!(refused.workload_events.is_empty());
    }

    #[test]
    fn a_config_that_already_matches_its_snapshot_is_skipped_not_counted() {
        use crate::remediation::actions::restore_config;
        let policy = policy(
            "Auto",
            json!([{"action": "restoreConfig", "restoreConfig": {"configMap": "cfg"}}, {"action": "restart"}]),
            json!({}),
        );
        let pending = with_steps(
            "Mitigating",
            json!([entry(
                "restoreConfig",
                "restoreConfig",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let config: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}}))
                .unwrap();
        let mut observed = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:06Z");
        observed.inputs = Inputs::of(restore_config::Inputs {
            current: Some(config.clone()),
            snapshot: Some(config),
            ignored: Vec::new(),
        });
        let decision = decide(&pending, &observed);
        assert_eq!(decision.effect, None);
        let step = last_step(&decision);
        assert_eq!(step.result, StepResult::Skipped);
        assert!(
            step.changes.iter().all(|c| c == "something changed"),
            "nothing added"
        );
        assert!(decision.tallies.is_empty());
    }

    #[test]
    fn a_change_that_keeps_failing_fails_the_step() {
        let policy = two_steps("Auto");
        let incident = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let mut observed = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:06Z");
        observed.inputs = history();
        let planned = decide(&incident, &observed);
        let given_up = settle_gave_up(
            planned,
            MAX_APPLY_FAILURES,
            "500 etcd timeout",
            observed.now,
        );
        let step = last_step(&given_up);
        assert_eq!(step.result, StepResult::Failed);
        assert!(
            step.message
                .as_deref()
                .unwrap()
                .contains("failed 5 times in a row"),
            "{step:?}"
        );
        assert_eq!(reasons(&given_up), ["StepRefused"]);
    }

    #[test]
    fn an_approval_waiting_on_the_target_holds_every_other_action_on_it() {
        let policy = two_steps("Auto");
        let mut observed = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:05Z");
        observed.approval_pending = Some(("api-oomkilled".into(), "scale".into()));
        let held = decide(&incident(Value::Null), &observed);
        assert!(held.status.steps.is_empty(), "nothing recorded to run");
        let blocked = held
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == REMEDIATION_BLOCKED)
            .unwrap();
        assert_eq!(blocked.reason, "AwaitingApprovalOnTarget");
        assert!(blocked.message.contains("api-oomkilled"), "{blocked:?}");
    }

    #[test]
    fn a_step_a_responder_approved_is_not_held_by_another_waiting_approval() {
        // Both incidents on one target wait for approval; the responder
        // approves this one: it runs (the gate holds automatic actions only).
        let policy = two_steps("RequireApproval");
        let mut waiting = with_steps(
            "Triggered",
            json!([entry(
                "rollback",
                "rollback",
                "AwaitingApproval",
                "2026-01-01T00:00:05Z"
            )]),
        );
        waiting.spec.approvals = vec![crate::crd::Approval {
            step: "rollback".into(),
            by: "commander".into(),
        }];
        let mut observed = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:06Z");
        observed.approval_pending = Some(("api-oomkilled".into(), "scale".into()));
        let approved = decide(&waiting, &observed);
        assert_eq!(
            last_step(&approved).result,
            StepResult::Pending,
            "approved runs"
        );
        // Not approved, the same step stays held.
        waiting.spec.approvals.clear();
        let held = decide(&waiting, &observed);
        assert_eq!(last_step(&held).result, StepResult::AwaitingApproval);
    }

    #[test]
    fn another_incidents_unconcluded_step_on_the_target_holds_it() {
        let policy = two_steps("Auto");
        let pending = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let mut observed = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:06Z");
        observed.inputs = history();
        observed.target_holder = Some("api-notready".into());
        let held = decide(&pending, &observed);
        assert_eq!(held.effect, None, "no second actor");
        assert_eq!(last_step(&held).result, StepResult::Pending);
        assert!(
            held.status
                .conditions
                .iter()
                .any(|c| c.reason == "TargetBusy" && c.message.contains("api-notready"))
        );
    }

    #[test]
    fn a_target_that_recovered_gets_no_new_step_and_its_pending_one_is_skipped() {
        let policy = two_steps("Auto");
        let healthy = || Some(api(true, json!({})));
        let opened = decide(
            &incident(Value::Null),
            &seen(&policy, healthy(), "2026-01-01T00:00:05Z"),
        );
        assert!(opened.status.steps.is_empty(), "nothing to fix: no step");
        let pending = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let skipped = decide(&pending, &seen(&policy, healthy(), "2026-01-01T00:05:06Z"));
        assert_eq!(skipped.effect, None, "no rollback of a healthy workload");
        let step = last_step(&skipped);
        assert_eq!(step.result, StepResult::Skipped);
        assert!(step.changes.iter().all(|c| c == "something changed"));
    }

    #[test]
    fn a_recovery_that_is_the_pending_steps_own_doing_is_verified_not_skipped() {
        let policy = two_steps("Auto");
        let pending = with_steps(
            "Mitigating",
            json!([entry(
                "rollback",
                "rollback",
                "Pending",
                "2026-01-01T00:00:05Z"
            )]),
        );
        let marked = api(true, json!({STEP_ANNOTATION: "0123abcd-0-rollback-1"}));
        let decision = decide(
            &pending,
            &seen(&policy, Some(marked), "2026-01-01T00:00:06Z"),
        );
        assert_eq!(last_step(&decision).result, StepResult::Verifying);
    }

    #[test]
    fn a_symptom_with_a_sustained_period_counts_at_once_in_verification() {
        let rule: PolicyRule = serde_json::from_value(json!({"name": "short",
            "when": {"symptom": "ReplicasUnavailable", "belowRatio": 0.5, "sustainedFor": "2s"},
            "severity": "P1", "type": "ServiceOutage", "actions": []}))
        .unwrap();
        let mut short = api(true, json!({}));
        if let Workload::Deployment(d) = &mut short {
            let d = Arc::make_mut(d);
            d.spec.as_mut().unwrap().replicas = Some(3);
            d.status = Some(
                serde_json::from_value(json!({"observedGeneration": 2,
                "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1, "availableReplicas": 1}))
                .unwrap(),
            );
        }
        assert_eq!(
            health(
                &short,
                &[],
                Some(&rule),
                None,
                &[],
                at("2026-01-01T00:00:00Z")
            ),
            Health::Unhealthy
        );
    }

    #[test]
    fn a_dependency_that_is_down_holds_every_action_until_it_is_resolved() {
        let policy = two_steps("Auto");
        let mut observed = seen(&policy, Some(api(false, json!({}))), "2026-01-01T00:00:05Z");
        let postgres = crate::crd::WorkloadRef {
            kind: crate::crd::WorkloadKind::StatefulSet,
            name: "postgres".into(),
        };
        observed.dependency_down = Some(("postgres-sts-probe-db".into(), postgres));
        let held = decide(&incident(Value::Null), &observed);
        assert!(
            held.status.steps.is_empty(),
            "no step while the database is down"
        );
        let blocked = held
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "RemediationBlocked")
            .unwrap();
        assert_eq!(blocked.reason, "DependencyDown");
        assert!(
            blocked.message.contains("postgres-sts-probe-db"),
            "{}",
            blocked.message
        );
        // Resolved: the ladder starts where it would have.
        observed.dependency_down = None;
        let resumed = decide(&after(incident(Value::Null), &held), &observed);
        assert_eq!(last_step(&resumed).name, "rollback");
        let condition = resumed
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "RemediationBlocked")
            .unwrap();
        assert_eq!(condition.status, "False", "{condition:?}");
    }

    #[test]
    fn a_probes_rule_is_verified_by_the_probe_not_the_pods() {
        let rule: PolicyRule = serde_json::from_value(json!({"name": "db-down",
            "when": {"symptom": "ProbeFailing", "probe": "db"},
            "severity": "P0", "type": "ServiceOutage", "actions": []}))
        .unwrap();
        // Every pod ready and the rollout complete: that says nothing of the database.
        let ready = api(true, json!({}));
        let now = at("2026-01-01T00:00:00Z");
        let check = |probe| health(&ready, &[], Some(&rule), probe, &[], now);
        assert_eq!(check(Some((ProbeHealth::Failing, true))), Health::Unhealthy);
        assert_eq!(check(Some((ProbeHealth::Healthy, false))), Health::Healthy);
        // Just started: the detector's clear decides.
        assert_eq!(
            check(Some((ProbeHealth::Unknown, false))),
            Health::Unhealthy
        );
        assert_eq!(check(Some((ProbeHealth::Unknown, true))), Health::Healthy);
        // A pod rule that also waits for a probe: ready pods are not enough.
        let crash: PolicyRule = serde_json::from_value(json!({"name": "crash",
            "when": {"symptom": "CrashLoopBackOff"}, "severity": "P0", "type": "ServiceOutage",
            "actions": [], "verify": {"probes": ["health"]}}))
        .unwrap();
        let with = |probes: &[ProbeHealth]| health(&ready, &[], Some(&crash), None, probes, now);
        assert_eq!(with(&[ProbeHealth::Healthy]), Health::Healthy);
        assert_eq!(with(&[ProbeHealth::Unknown]), Health::Unhealthy);
        assert_eq!(with(&[ProbeHealth::Failing]), Health::Unhealthy);
    }

    mod hostile {
        //! Hostile and malformed manifests: a valid policy and incident with
        //! random fields replaced by random values (huge and negative
        //! numbers, durations of any length, far-future times, wrong types,
        //! deleted keys). Whatever decodes goes through validation, the
        //! ladder, the detector's classifier, the lifecycle and a whole
        //! reconcile decision; none of it may panic.

        use proptest::prelude::*;

        use super::*;
        use crate::{controller::incident::lifecycle, validation};

        /// Every path to a value in `value`, objects' keys and arrays' items.
        fn paths(value: &Value, here: Vec<String>, out: &mut Vec<Vec<String>>) {
            out.push(here.clone());
            match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        let mut next = here.clone();
                        next.push(key.clone());
                        paths(child, next, out);
                    }
                }
                Value::Array(items) => {
                    for (index, child) in items.iter().enumerate() {
                        let mut next = here.clone();
                        next.push(index.to_string());
                        paths(child, next, out);
                    }
                }
                _ => {}
            }
        }

        fn set(root: &mut Value, path: &[String], new: Option<Value>) {
            let Some((last, parents)) = path.split_last() else {
                return;
            };
            let mut at = root;
            for step in parents {
                at = match at {
                    Value::Object(map) => match map.get_mut(step) {
                        Some(next) => next,
                        None => return,
                    },
                    Value::Array(items) => {
                        match step.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                            Some(next) => next,
                            None => return,
                        }
                    }
                    _ => return,
                };
            }
            match (at, new) {
                (Value::Object(map), Some(value)) => {
                    map.insert(last.clone(), value);
                }
                (Value::Object(map), None) => {
                    map.remove(last);
                }
                (Value::Array(items), Some(value)) => {
                    if let Some(slot) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                        *slot = value;
                    }
                }
                _ => {}
            }
        }

        fn hostile_value() -> impl Strategy<Value = Option<Value>> {
            let words = prop::sample::select(vec![
                "P0",
                "P3",
                "Auto",
                "DryRun",
                "RequireApproval",
                "Deployment",
                "StatefulSet",
                "rollback",
                "scale",
                "restart",
                "restoreConfig",
                "CrashLoopBackOff",
                "NotReady",
                "Pending",
                "Verifying",
                "Succeeded",
                "Failed",
                "AwaitingApproval",
                "Resolved",
                "Escalated",
                "Declined",
                "Monitoring",
                "",
                "api",
                "guard",
                "crash",
            ]);
            prop_oneof![
                Just(None),
                any::<i64>().prop_map(|n| Some(json!(n))),
                prop::num::f64::NORMAL.prop_map(|n| Some(json!(n))),
                "[0-9]{1,25}(\\.[0-9]{1,5})?(ns|us|ms|s|m|h|d)?".prop_map(|t| Some(json!(t))),
                "(0001|1970|2026|9999)-(01|12)-(01|31)T(00|23):(00|59):(00|59)Z"
                    .prop_map(|t| Some(json!(t))),
                ".{0,40}".prop_map(|t| Some(json!(t))),
                words.prop_map(|w| Some(json!(w))),
                Just(Some(json!([]))),
                Just(Some(json!({}))),
                Just(Some(Value::Null)),
                Just(Some(json!(true))),
            ]
        }

        fn full_policy() -> Value {
            json!({
                "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
                "metadata": {"name": "guard", "namespace": "hg",
                    "annotations": {"healing-guard.io/circuit-breaker-reset": "2026-01-01T00:00:00Z"}},
                "spec": {
                    "mode": "Auto", "priority": 1,
                    "incidents": {"allowedActions": ["scale", "restart"]},
                    "safety": {"cooldown": "1m", "maxActions": 3, "window": "1h",
                        "minReadyReplicas": 1, "circuitBreakerThreshold": 2},
                    "detection": {"holdDown": "1m", "reopenWindow": "10m", "flapThreshold": 2,
                        "keepClosed": 3, "maxClosedAge": "24h"},
                    "targets": [{"kind": "Deployment", "names": ["api"],
                        "selector": {"matchLabels": {"app": "api"},
                            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}}],
                    "rules": [{"name": "crash",
                        "when": {"symptom": "CrashLoopBackOff", "minRestarts": 2, "sustainedFor": "10s"},
                        "severity": "P1", "type": "ServiceOutage",
                        "actions": [
                            {"action": "rollback", "rollback": {"to": "LastHealthy"}, "timeout": "2m"},
                            {"action": "scale", "name": "more", "scale": {"increment": 2, "maxReplicas": 8,
                                "resources": {"container": "app", "limits": {"memory": "2Gi"}}}},
                            {"action": "restart", "restart": {"method": "DeletePods", "maxUnavailable": 1}},
                            {"action": "restoreConfig", "restoreConfig": {"configMap": "cfg"}, "mode": "RequireApproval"}
                        ],
                        "verify": {"timeout": "5m", "holdDown": "1m"}}]
                }
            })
        }

        fn full_incident() -> Value {
            json!({
                "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
                "metadata": {"name": "api-crashloop", "namespace": "hg", "uid": UID, "generation": 3,
                    "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"title": "CrashLoopBackOff on Deployment/api", "severity": "P1",
                    "severityReason": "r", "type": "ServiceOutage",
                    "target": {"kind": "Deployment", "name": "api"},
                    "detectedAt": "2026-01-01T00:00:00Z", "policy": "guard", "rule": "crash",
                    "mode": "Auto",
                    "actions": [{"action": "scale", "scale": {"replicas": 4, "maxReplicas": 4}}],
                    "source": {"kind": "Detected", "policy": "guard", "rule": "crash",
                        "dedupKey": "Deployment/api/CrashLoopBackOff"},
                    "acknowledged": {"by": "alice", "note": "on it"},
                    "approvals": [{"step": "scale", "by": "bob"}],
                    "resolution": null, "declined": null},
                "status": {"phase": "Mitigating", "reopensHandled": 1,
                    "milestones": {"detectedAt": "2026-01-01T00:00:00Z", "acknowledgedAt": "2026-01-01T00:01:00Z"},
                    "sla": {"acknowledgeBy": "2026-01-01T01:00:00Z", "resolveBy": "2026-01-02T00:00:00Z"},
                    "detection": {"symptom": "CrashLoopBackOff", "occurrences": 5, "reopens": 2,
                        "firstSeenAt": "2026-01-01T00:00:00Z", "lastSeenAt": "2026-01-01T00:05:00Z",
                        "affectedPods": ["api-1"], "affectedPodsOmitted": 0},
                    "evidence": {},
                    "steps": [
                        {"id": "a-0-scale-1", "name": "scale", "action": "scale", "rule": "crash", "attempt": 1,
                         "result": "Verifying", "startedAt": "2026-01-01T00:02:00Z",
                         "healthySince": "2026-01-01T00:03:00Z", "changes": ["x"]},
                        {"id": "a-1-more-2", "name": "more", "action": "scale", "rule": "crash", "attempt": 2,
                         "result": "Pending", "startedAt": "2026-01-01T00:04:00Z", "changes": []}
                    ],
                    "timeline": [{"at": "2026-01-01T00:00:00Z", "reason": "Triggered", "message": "m"}]}
            })
        }

        fn mutated(base: Value, mutations: &[(prop::sample::Index, Option<Value>)]) -> Value {
            let mut value = base;
            for (index, new) in mutations {
                let mut all = Vec::new();
                paths(&value, Vec::new(), &mut all);
                let path = index.get(&all).clone();
                set(&mut value, &path, new.clone());
            }
            value
        }

        #[test]
        fn no_manifest_can_panic_a_reconcile() {
            use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
            let (policies, incidents, decided) = (
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            );
            let mutations =
                || prop::collection::vec((any::<prop::sample::Index>(), hostile_value()), 0..4);
            let cases = (mutations(), mutations(), any::<bool>(), any::<bool>());
            let mut runner =
                proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(1000));
            runner
                .run(
                    &cases,
                    |(policy_mutations, incident_mutations, ready, late)| {
                        let policy_json = mutated(full_policy(), &policy_mutations);
                        let incident_json = mutated(full_incident(), &incident_mutations);
                        let policy = serde_json::from_value::<RemediationPolicy>(policy_json)
                            .ok()
                            .map(Arc::new);
                        let now = if late {
                            "9999-12-01T00:00:00Z"
                        } else {
                            "2026-01-01T00:10:00Z"
                        };
                        let workload = api(ready, json!({}));
                        if let Some(policy) = &policy {
                            policies.fetch_add(1, Relaxed);
                            let _ = validation::policy(&policy.spec);
                            let _ = symptoms::evaluate(
                                &policy.spec.rules,
                                &workload,
                                [crashing_pod()].iter(),
                                Some(at(now)),
                                at(now),
                            );
                        }
                        let Ok(incident) = serde_json::from_value::<Incident>(incident_json) else {
                            return Ok(());
                        };
                        incidents.fetch_add(1, Relaxed);
                        let _ = validation::incident(&incident.spec);
                        let settings = policy
                            .as_ref()
                            .map(|p| p.spec.detection.clone())
                            .unwrap_or_default();
                        let _ = lifecycle::plan(&incident, &settings, at(now));
                        let mut observed = Observation {
                            now: at(now),
                            policy: policy.clone(),
                            workload: Some(workload),
                            pods: vec![crashing_pod()],
                            inputs: history(),
                            target_steps: Vec::new(),
                            approval_pending: None,
                            target_holder: None,
                            policy_steps: Vec::new(),
                            evidence: Some(crate::crd::Evidence::default()),
                            probe: None,
                            verify_probes: Vec::new(),
                            probe_results: Vec::new(),
                            dependency_down: None,
                            job: None,
                            workflow_probe: None,
                        };
                        let first = decide(&incident, &observed);
                        // And the reconcile after it, from what it decided.
                        observed.inputs = Inputs::default();
                        let _ = decide(&after(incident, &first), &observed);
                        if policy.is_some() {
                            decided.fetch_add(1, Relaxed);
                        }
                        Ok(())
                    },
                )
                .unwrap();
            // Enough of the hostile objects decode to reach the code under test.
            let (policies, incidents, decided) = (
                policies.into_inner(),
                incidents.into_inner(),
                decided.into_inner(),
            );
            assert!(policies >= 250, "only {policies} of 1000 policies decoded");
            assert!(
                incidents >= 300,
                "only {incidents} of 1000 incidents decoded"
            );
            assert!(decided >= 60, "only {decided} reconciles had both");
        }
    }
}
