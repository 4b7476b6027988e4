//! Decide: from an incident and what was observed, the status it should
//! have, at most one change to make to the world, and what to announce once
//! the status is saved. Pure: no API calls, no clock, no metrics; table-tested.
//!
//! Two passes around the one write: [`decide`] plans it, [`settle`] records
//! how it went. The lifecycle (responders, deadlines, the detector's signal)
//! and the ladder (remediation steps and their verification) both move the
//! phase through [`super::phase`] only.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::{
    lifecycle,
    observe::Observation,
    phase::{self, Transition},
};
use crate::{
    conditions::{ConditionUpdate, set_condition},
    context::PlannedEvent,
    crd::{
        ActionKind, Detection, Incident, IncidentStatus, Mode, Phase, PolicyRule, SourceKind,
        StepRecord, StepResult, TimelineEntry,
    },
    detector::symptoms,
    remediation::{
        actions::{self, Mark, Planned, Refusal},
        ladder::{self, Health, Ladder, Next},
        safety,
    },
    workload::Workload,
};

/// Condition set when automatic remediation has run out and a human must act.
pub const NEEDS_HUMAN: &str = "NeedsHuman";
/// Condition set while the safety limits hold a step back.
pub const REMEDIATION_BLOCKED: &str = "RemediationBlocked";

/// How soon to look again after recording a step (the next reconcile runs it).
const AFTER_RECORD: Duration = Duration::from_millis(200);
/// How soon to look again while a change rolls out.
const AFTER_CHANGE: Duration = Duration::from_secs(1);
/// How soon to look again for a target that does not exist (yet).
const TARGET_MISSING: Duration = Duration::from_secs(30);
/// How soon to check again a circuit breaker only a human can close.
const BREAKER_RECHECK: Duration = Duration::from_secs(60);

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
}

impl Decision {
    fn requeue_within(&mut self, wait: Duration) {
        self.requeue = Some(self.requeue.map_or(wait, |r| r.min(wait)));
    }

    /// A timeline entry and an Event saying the same thing.
    fn note(&mut self, now: &Time, warning: bool, reason: &str, message: String) {
        lifecycle::push_timeline(
            &mut self.status,
            TimelineEntry {
                at: now.clone(),
                reason: reason.into(),
                message: message.clone(),
            },
        );
        self.events.push(if warning {
            PlannedEvent::warning(reason, "Remediate", message)
        } else {
            PlannedEvent::normal(reason, "Remediate", message)
        });
    }
}

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
    if active && let Some(ladder) = ladder::resolve(incident, seen.policy.as_deref()) {
        remediate(&mut decision, incident, &ladder, seen);
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

/// Whether the target has recovered: the rollout is complete, and the
/// rule's symptom is gone (without a rule: every replica ready).
pub fn health(
    workload: &Workload,
    pods: &[k8s_openapi::api::core::v1::Pod],
    rule: Option<&PolicyRule>,
    now: Timestamp,
) -> Health {
    let recovered = match rule {
        Some(rule) => symptoms::evaluate(std::slice::from_ref(rule), workload, pods, None, now)
            .signals
            .is_empty(),
        None => workload.all_ready(),
    };
    if workload.rollout_complete() && recovered {
        Health::Healthy
    } else {
        Health::Unhealthy
    }
}

/// One move of the ladder.
fn remediate(decision: &mut Decision, incident: &Incident, ladder: &Ladder, seen: &Observation) {
    let now = seen.now;
    let now_time = Time(now);
    let Some(workload) = &seen.workload else {
        decision.requeue_within(TARGET_MISSING);
        return;
    };
    let min_ready = ladder.safety.min_ready_replicas;

    // A step applied in parts goes on while it verifies (a DeletePods
    // restart, batch by batch).
    if let Some(entry) = decision.status.steps.len().checked_sub(1)
        && let Some(record) = decision.status.steps.get(entry)
        && record.result == StepResult::Verifying
        && let Some(rung) = ladder.rung_of(record)
    {
        let started = record.started_at.as_ref().map_or(now, |t| t.0);
        if let Some(planned) = actions::follow_up(&rung.action, &seen.pods, started, min_ready) {
            decision.effect = Some(Effect {
                entry,
                planned,
                dry_run: false,
                follow_up: true,
            });
            decision.requeue_within(AFTER_CHANGE);
            return;
        }
    }

    let approvals = &incident.spec.approvals;
    let approved = |name: &str| approvals.iter().any(|a| a.step == name);
    let health = health(workload, &seen.pods, ladder.rule.as_ref(), now);
    let next = ladder::next(ladder, &decision.status.steps, approved, health, now);
    let incident_name = incident.name_any();
    match next {
        Next::Record {
            rung: index,
            awaiting_approval,
        } => {
            let Some(rung) = ladder.rungs.get(index) else {
                return;
            };
            let runs_now = !awaiting_approval && rung.mode != Mode::DryRun;
            if runs_now && let Some(wait) = gate(decision, incident, ladder, seen) {
                decision.requeue_within(wait);
                return;
            }
            let entry = decision.status.steps.len();
            let uid = incident.uid().unwrap_or_default();
            decision.status.steps.push(StepRecord {
                id: ladder::step_id(&uid, entry, rung.name(), 1),
                name: rung.name().to_owned(),
                action: rung.action.action,
                rule: ladder.rule_name.clone(),
                attempt: 1,
                result: if awaiting_approval {
                    StepResult::AwaitingApproval
                } else {
                    StepResult::Pending
                },
                started_at: Some(now_time.clone()),
                finished_at: None,
                healthy_since: None,
                message: awaiting_approval.then(|| {
                    format!(
                        "waiting for approval of step {:?} in spec.approvals",
                        rung.name()
                    )
                }),
                changes: Vec::new(),
            });
            if runs_now {
                phase::enter(&mut decision.status, Transition::StartStep, &now_time);
            }
            let message = if awaiting_approval {
                format!(
                    "step {} ({}) needs approval",
                    rung.name(),
                    rung.action.action
                )
            } else {
                format!(
                    "step {} ({}) recorded, mode {:?}",
                    rung.name(),
                    rung.action.action,
                    rung.mode
                )
            };
            decision.note(&now_time, false, "StepRecorded", message);
            // Saved first; the next reconcile runs it.
            decision.requeue_within(AFTER_RECORD);
        }
        Next::Approved { entry } => {
            if let Some(wait) = gate(decision, incident, ladder, seen) {
                decision.requeue_within(wait);
                return;
            }
            if let Some(record) = decision.status.steps.get_mut(entry) {
                record.result = StepResult::Pending;
                record.message = Some("approved".into());
            }
            phase::enter(&mut decision.status, Transition::StartStep, &now_time);
            decision.requeue_within(AFTER_RECORD);
        }
        Next::Execute { entry, rung } => {
            let (Some(rung), Some(record)) =
                (ladder.rungs.get(rung), decision.status.steps.get(entry))
            else {
                return;
            };
            if workload.applied_step() == Some(record.id.as_str()) {
                // Applied before a restart cut the bookkeeping short: never again.
                let record = &mut decision.status.steps[entry];
                record.result = StepResult::Verifying;
                record.message =
                    Some("already applied (found on the workload after a restart)".into());
            } else {
                let mark = Mark {
                    step: &record.id,
                    incident: &incident_name,
                };
                let planned = match actions::ready_floor(&rung.action, workload, min_ready) {
                    Some(refusal) => Err(refusal),
                    None => actions::plan(&rung.action, workload, &seen.inputs, mark, now),
                };
                match planned {
                    Ok(planned) => {
                        decision.effect = Some(Effect {
                            entry,
                            planned,
                            dry_run: rung.mode == Mode::DryRun,
                            follow_up: false,
                        });
                    }
                    Err(refusal) => refuse(decision, entry, &refusal, &now_time),
                }
            }
            decision.requeue_within(AFTER_CHANGE);
        }
        Next::Orphaned { entry } => {
            let Some(record) = decision.status.steps.get_mut(entry) else {
                return;
            };
            let message = format!(
                "step {} ({}) is no longer in the ladder (the policy changed); it was not run",
                record.name, record.action
            );
            record.result = StepResult::Skipped;
            record.finished_at = Some(now_time.clone());
            record.message = Some(message.clone());
            decision.note(&now_time, true, "StepSkipped", message);
            decision.requeue_within(AFTER_RECORD);
        }
        Next::HealthySince { entry } => {
            if let Some(record) = decision.status.steps.get_mut(entry) {
                record.healthy_since = Some(now_time.clone());
            }
            phase::enter(&mut decision.status, Transition::HoldHealthy, &now_time);
            let hold = ladder
                .rung_of(&decision.status.steps[entry])
                .map_or(ladder.default_timing, |r| r.timing)
                .hold_down;
            decision.requeue_within(hold + Duration::from_secs(1));
        }
        Next::Relapsed { entry } => {
            if let Some(record) = decision.status.steps.get_mut(entry) {
                record.healthy_since = None;
            }
            phase::enter(&mut decision.status, Transition::Relapse, &now_time);
            decision.requeue_within(Duration::from_secs(2));
        }
        Next::Succeeded { entry } => {
            let Some(record) = decision.status.steps.get_mut(entry) else {
                return;
            };
            record.result = StepResult::Succeeded;
            record.finished_at = Some(now_time.clone());
            let ended = step_ended(record, now);
            let healthy_since = record.healthy_since.clone();
            let name = record.name.clone();
            decision.tallies.push(ended);
            let milestones = &mut decision.status.milestones;
            milestones.mitigated_at = healthy_since.or(Some(now_time.clone()));
            if let (Some(detected), Some(mitigated)) =
                (&milestones.detected_at, &milestones.mitigated_at)
            {
                let seconds = seconds_between(detected.0, mitigated.0);
                decision.tallies.push(Tally::Mitigated { seconds });
            }
            phase::enter(&mut decision.status, Transition::Remediated, &now_time);
            let message = format!(
                "step {name} verified: the workload recovered and stayed healthy; resolved"
            );
            decision.note(&now_time, false, "Remediated", message);
        }
        Next::Failed { entry, reason } => {
            let Some(record) = decision.status.steps.get_mut(entry) else {
                return;
            };
            record.result = StepResult::Failed;
            record.finished_at = Some(now_time.clone());
            record.message = Some(reason.clone());
            let ended = step_ended(record, now);
            let message = format!("step {} did not help: {reason}", record.name);
            decision.tallies.push(ended);
            decision.note(&now_time, true, "StepFailed", message);
            decision.requeue_within(AFTER_RECORD);
        }
        Next::Exhausted => {
            if phase::enter(&mut decision.status, Transition::Exhaust, &now_time) {
                decision.tallies.push(Tally::LadderExhausted);
                let message = format!(
                    "all {} step(s) tried, none brought recovery; a human must act",
                    ladder.rungs.len()
                );
                let update = ConditionUpdate {
                    type_: NEEDS_HUMAN,
                    status: true,
                    reason: "LadderExhausted",
                    message: message.clone(),
                };
                set_condition(
                    &mut decision.status.conditions,
                    update,
                    incident.metadata.generation,
                    &now_time,
                );
                decision.note(&now_time, true, "Escalated", message);
            }
        }
        Next::DryRunComplete => {
            let done = decision
                .status
                .timeline
                .iter()
                .any(|e| e.reason == "DryRunComplete");
            if !done {
                let message = format!(
                    "dry run: {} step(s) planned and checked; nothing was changed",
                    ladder.rungs.len()
                );
                decision.note(&now_time, false, "DryRunComplete", message);
            }
        }
        Next::Wait(until) => {
            if let Some(at) = until {
                let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
                decision.requeue_within(wait + Duration::from_millis(500));
            }
        }
    }
}

/// A step refused before it changed anything: it fails, the ladder goes on.
fn refuse(decision: &mut Decision, entry: usize, refusal: &Refusal, now: &Time) {
    let Some(record) = decision.status.steps.get_mut(entry) else {
        return;
    };
    record.result = StepResult::Failed;
    record.finished_at = Some(now.clone());
    record.message = Some(refusal.to_string());
    let ended = step_ended(record, now.0);
    let message = format!("step {} refused: {refusal}", record.name);
    decision.tallies.push(ended);
    decision.note(now, true, "StepRefused", message);
    decision.requeue_within(AFTER_RECORD);
}

/// Records the outcome of the decision's effect, applied with `lines` for
/// the ledger. Pure, like [`decide`].
pub fn settle(
    mut decision: Decision,
    lines: Vec<String>,
    incident: &Incident,
    now: Timestamp,
) -> Decision {
    let Some(effect) = decision.effect.clone() else {
        return decision;
    };
    let now_time = Time(now);
    let Some(record) = decision.status.steps.get_mut(effect.entry) else {
        return decision;
    };
    if effect.follow_up {
        record.changes.extend(lines);
        return decision;
    }
    let summary = effect.planned.summary.clone();
    record.changes = std::iter::once(summary.clone()).chain(lines).collect();
    record.started_at = Some(now_time.clone());
    let name = record.name.clone();
    let message = if effect.dry_run {
        record.result = StepResult::DryRun;
        record.finished_at = Some(now_time.clone());
        record.message = Some("server-side dry run passed; nothing changed".into());
        let ended = step_ended(record, now);
        decision.tallies.push(ended);
        format!("dry run of step {name}: would do {summary}")
    } else {
        record.result = StepResult::Verifying;
        let note = format!(
            "{summary} (incident {}, step {})",
            incident.name_any(),
            record.id
        );
        decision.workload_events.push(PlannedEvent::normal(
            "RemediationApplied",
            "Remediate",
            note,
        ));
        format!("step {name} applied: {summary}")
    };
    decision.note(&now_time, false, "StepApplied", message);
    decision
}

/// Applies the safety limits before a step may run. Returns how long to
/// wait when blocked (and says why in a condition); None when it may run.
fn gate(
    decision: &mut Decision,
    incident: &Incident,
    ladder: &Ladder,
    seen: &Observation,
) -> Option<Duration> {
    let now = seen.now;
    let limits = safety::Limits {
        cooldown: ladder.safety.cooldown.as_std(),
        max_actions: ladder.safety.max_actions,
        window: ladder.safety.window.as_std(),
        breaker_threshold: ladder.safety.circuit_breaker_threshold,
    };
    let breaker = safety::breaker(
        &seen.policy_steps,
        limits.breaker_threshold,
        ladder.breaker_reset_at,
    );
    let now_time = Time(now);
    let generation = incident.metadata.generation;
    let conditions = &mut decision.status.conditions;
    let (message, wait) = match safety::check(&seen.target_steps, breaker, &limits, now) {
        safety::Verdict::Allow => {
            if conditions.iter().any(|c| c.type_ == REMEDIATION_BLOCKED) {
                let update = ConditionUpdate {
                    type_: REMEDIATION_BLOCKED,
                    status: false,
                    reason: "Allowed",
                    message: "safety limits allow the next step".into(),
                };
                set_condition(conditions, update, generation, &now_time);
            }
            return None;
        }
        safety::Verdict::WaitUntil(until, why) => {
            let wait = Duration::try_from(until.duration_since(now)).unwrap_or_default()
                + Duration::from_secs(1);
            (format!("{why}; next step not before {until}"), wait)
        }
        // Re-checked now and then: a reset is an annotation on the policy.
        safety::Verdict::Refuse(why) => (why, BREAKER_RECHECK),
    };
    let update = ConditionUpdate {
        type_: REMEDIATION_BLOCKED,
        status: true,
        reason: if breaker.open {
            "CircuitBreakerOpen"
        } else {
            "SafetyLimit"
        },
        message: message.clone(),
    };
    if set_condition(conditions, update, generation, &now_time) {
        decision.note(&now_time, true, REMEDIATION_BLOCKED, message);
    }
    Some(wait)
}

/// The metric of a step that reached its verdict, with its duration.
fn step_ended(record: &StepRecord, now: Timestamp) -> Tally {
    Tally::StepEnded {
        action: record.action,
        result: record.result,
        seconds: record
            .started_at
            .as_ref()
            .map(|started| seconds_between(started.0, now)),
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}
