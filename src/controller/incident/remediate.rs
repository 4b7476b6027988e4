//! Carries out the ladder the planner decides on, one move per reconcile:
//! a step is written to the ledger (and the status saved) before it runs,
//! a Pending step already visible on the workload is not applied again, and
//! every change carries the incident's and step's names.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        core::v1::{ConfigMap, Pod},
    },
    apimachinery::pkg::{apis::meta::v1::Time, util::intstr::IntOrString},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    core::Selector,
};
use tracing::info;

use super::super::error::Error;
use crate::{
    conditions::{ConditionUpdate, set_condition},
    context::{Context, FIELD_MANAGER, PlannedEvent},
    crd::{
        Action, ActionKind, Incident, IncidentStatus, Mode, Phase, PolicyRule, RemediationPolicy,
        RestartMethod, RollbackTarget, Safety, StepRecord, StepResult, TimelineEntry, Verify,
        WorkloadKind,
    },
    detector::{
        snapshots,
        symptoms::{self, WorkloadView},
        watches::pod_belongs_to,
    },
    metrics::{ActionLabels, StepLabels},
    remediation::{
        actions::{self, Change, Target},
        plan::{self, Health, Next, Timing},
        safety,
    },
};

/// Condition set when automatic remediation has run out and a human must act.
pub const NEEDS_HUMAN: &str = "NeedsHuman";

/// The ladder that applies to an incident and how it runs.
pub struct Ladder {
    pub steps: Vec<Action>,
    pub modes: Vec<Mode>,
    pub timing: Vec<Timing>,
    /// The policy whose safety limits apply (defaults without one).
    pub policy: Option<String>,
    pub safety: Safety,
    pub breaker_reset_at: Option<Timestamp>,
    /// The rule whose symptom verification watches; None for an incident's own ladder.
    pub rule: Option<PolicyRule>,
}

/// The incident's own actions, else its policy rule's; None when there are none.
pub fn ladder(incident: &Incident, policy: Option<&RemediationPolicy>) -> Option<Ladder> {
    let spec = &incident.spec;
    let rule_name = spec.rule.as_ref().or(spec.source.rule.as_ref());
    let rule = policy
        .as_ref()
        .and_then(|p| p.spec.rules.iter().find(|r| Some(&r.name) == rule_name));
    let matched_rule = rule.cloned();
    let (steps, verify) = match (&spec.actions, rule) {
        (Some(actions), rule) => (
            actions.clone(),
            rule.map(|r| r.verify.clone()).unwrap_or_default(),
        ),
        (None, Some(rule)) => (rule.actions.clone(), rule.verify.clone()),
        (None, None) => return None,
    };
    let policy_mode = policy.as_ref().map(|p| p.spec.mode).unwrap_or_default();
    let modes = steps
        .iter()
        .map(|s| plan::step_mode(s, spec.mode, policy_mode))
        .collect();
    let timing = steps.iter().map(|s| step_timing(s, &verify)).collect();
    let breaker_reset_at = policy
        .as_ref()
        .and_then(|p| p.annotations().get(safety::BREAKER_RESET_ANNOTATION))
        .and_then(|t| t.parse().ok());
    Some(Ladder {
        steps,
        modes,
        timing,
        policy: policy.as_ref().map(|p| p.name_any()),
        safety: policy.map(|p| p.spec.safety.clone()).unwrap_or_default(),
        breaker_reset_at,
        rule: matched_rule,
    })
}

fn step_timing(step: &Action, verify: &Verify) -> Timing {
    Timing {
        timeout: step.timeout.map_or(verify.timeout.as_std(), |t| t.as_std()),
        hold_down: verify.hold_down.as_std(),
    }
}

/// The workload as the executor needs it.
enum Workload {
    Deployment(Deployment, Vec<ReplicaSet>),
    StatefulSet(StatefulSet),
}

impl Workload {
    fn target(&self) -> Target<'_> {
        match self {
            Workload::Deployment(d, _) => Target::Deployment(d),
            Workload::StatefulSet(s) => Target::StatefulSet(s),
        }
    }

    /// Recovered: the rollout is complete, and the rule's symptom is gone
    /// (without a rule: every replica ready).
    fn health(&self, pods: &[Pod], rule: Option<&PolicyRule>, now: Timestamp) -> Health {
        let (complete, all_ready) = match self {
            Workload::Deployment(d, _) => {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let status = d.status.clone().unwrap_or_default();
                let complete = status.observed_generation >= d.metadata.generation
                    && status.updated_replicas.unwrap_or(0) == want
                    && status.replicas.unwrap_or(0) == want;
                (
                    complete,
                    status.ready_replicas.unwrap_or(0) == want
                        && status.available_replicas.unwrap_or(0) == want,
                )
            }
            Workload::StatefulSet(s) => {
                let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let status = s.status.clone().unwrap_or_default();
                let complete = status.observed_generation >= s.metadata.generation
                    && status.updated_replicas.unwrap_or(0) == want;
                (complete, status.ready_replicas.unwrap_or(0) == want)
            }
        };
        let recovered = match rule {
            Some(rule) => {
                let view = match self {
                    Workload::Deployment(d, _) => WorkloadView::Deployment(d),
                    Workload::StatefulSet(s) => WorkloadView::StatefulSet(s),
                };
                symptoms::evaluate(std::slice::from_ref(rule), view, pods, None, now)
                    .signals
                    .is_empty()
            }
            None => all_ready,
        };
        if complete && recovered {
            Health::Healthy
        } else {
            Health::Unhealthy
        }
    }
}

async fn read_workload(
    ctx: &Context,
    namespace: &str,
    incident: &Incident,
) -> Result<Option<Workload>, Error> {
    let name = &incident.spec.target.name;
    Ok(match incident.spec.target.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
            let Some(deployment) = api.get_opt(name).await? else {
                return Ok(None);
            };
            let selector = deployment
                .spec
                .as_ref()
                .map(|s| s.selector.clone())
                .unwrap_or_default();
            let sets = match Selector::try_from(selector) {
                Ok(selector) => {
                    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
                    api.list(&ListParams::default().labels_from(&selector))
                        .await?
                        .items
                }
                Err(_) => Vec::new(),
            };
            Some(Workload::Deployment(deployment, sets))
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
            api.get_opt(name).await?.map(Workload::StatefulSet)
        }
    })
}

/// One move of the ladder. Changes `status` (the caller saves it) and returns
/// events to publish and when to look again.
pub async fn step(
    ctx: &Arc<Context>,
    namespace: &str,
    incident: &Incident,
    ladder: &Ladder,
    status: &mut IncidentStatus,
    now: Timestamp,
) -> Result<(Vec<PlannedEvent>, Option<Duration>), Error> {
    let mut events = Vec::new();
    let now_time = Time(now);
    let Some(workload) = read_workload(ctx, namespace, incident).await? else {
        return Ok((events, Some(Duration::from_secs(30))));
    };
    let pods = workload_pods(ctx, namespace, &workload).await?;
    // A DeletePods restart goes on batch by batch while it verifies.
    if let Some(index) = status.steps.len().checked_sub(1)
        && let (Some(record), Some(action)) = (status.steps.get(index), ladder.steps.get(index))
        && record.result == StepResult::Verifying
        && let Some(restart) = action
            .restart
            .as_ref()
            .filter(|r| r.method == RestartMethod::DeletePods)
    {
        let started = record.started_at.as_ref().map_or(now, |t| t.0);
        let min_ready = ladder.safety.min_ready_replicas;
        let deleted = delete_batch(
            ctx,
            namespace,
            &pods,
            started,
            restart.max_unavailable.max(1),
            min_ready,
            false,
        )
        .await?;
        if !deleted.is_empty() {
            status.steps[index]
                .changes
                .extend(deleted.iter().map(|pod| format!("pod {pod} deleted")));
            return Ok((events, Some(Duration::from_secs(1))));
        }
    }
    let approvals = &incident.spec.approvals;
    let approved = |name: &str| approvals.iter().any(|a| a.step == name);
    let next = plan::next(
        &ladder.steps,
        &ladder.modes,
        &status.steps,
        approved,
        workload.health(&pods, ladder.rule.as_ref(), now),
        &ladder.timing,
        now,
    );
    let uid = incident.uid().unwrap_or_default();
    let incident_name = incident.name_any();
    let mut requeue = None;
    match next {
        Next::Record {
            index,
            awaiting_approval,
        } => {
            let Some(action) = ladder.steps.get(index) else {
                return Ok((events, None));
            };
            let runs_now = !awaiting_approval && ladder.modes.get(index) != Some(&Mode::DryRun);
            if runs_now
                && let Some(wait) =
                    gate(ctx, namespace, incident, ladder, status, &mut events, now).await?
            {
                return Ok((events, Some(wait)));
            }
            let result = if awaiting_approval {
                StepResult::AwaitingApproval
            } else {
                StepResult::Pending
            };
            let id = plan::step_id(&uid, index, action, 1);
            status.steps.push(StepRecord {
                id: id.clone(),
                name: action.step_name().to_owned(),
                action: action.action,
                attempt: 1,
                result,
                started_at: Some(now_time.clone()),
                finished_at: None,
                healthy_since: None,
                message: awaiting_approval.then(|| {
                    format!(
                        "waiting for approval of step {:?} in spec.approvals",
                        action.step_name()
                    )
                }),
                changes: Vec::new(),
            });
            let mode = ladder.modes.get(index).copied().unwrap_or_default();
            if !awaiting_approval
                && mode != Mode::DryRun
                && !status.phase.is_some_and(Phase::is_closed)
            {
                status.phase = Some(Phase::Mitigating);
            }
            let message = if awaiting_approval {
                format!(
                    "step {} ({}) needs approval",
                    action.step_name(),
                    action.action
                )
            } else {
                format!(
                    "step {} ({}) recorded, mode {mode:?}",
                    action.step_name(),
                    action.action
                )
            };
            timeline(status, &now_time, "StepRecorded", &message);
            events.push(PlannedEvent::normal("StepRecorded", "Remediate", message));
            // Saved first; the next reconcile runs it.
            requeue = Some(Duration::from_millis(200));
        }
        Next::Approved { index } => {
            if let Some(wait) =
                gate(ctx, namespace, incident, ladder, status, &mut events, now).await?
            {
                return Ok((events, Some(wait)));
            }
            if let Some(record) = status.steps.get_mut(index) {
                record.result = StepResult::Pending;
                record.message = Some("approved".into());
            }
            requeue = Some(Duration::from_millis(200));
        }
        Next::Execute { index } => {
            let (Some(action), Some(record)) =
                (ladder.steps.get(index), status.steps.get(index).cloned())
            else {
                return Ok((events, None));
            };
            let mode = ladder.modes.get(index).copied().unwrap_or_default();
            let sets: &[ReplicaSet] = match &workload {
                Workload::Deployment(_, sets) => sets,
                Workload::StatefulSet(_) => &[],
            };
            let target = workload.target();
            let entry = &mut status.steps[index];
            if target.applied_step() == Some(record.id.as_str()) {
                // Applied before a restart cut the bookkeeping short: never again.
                entry.result = StepResult::Verifying;
                entry.message =
                    Some("already applied (found on the workload after a restart)".into());
            } else {
                let planned = match ready_floor(&workload, action, ladder.safety.min_ready_replicas)
                {
                    Some(refusal) => Err(refusal),
                    None => {
                        let last_healthy = match action.rollback.as_ref().map(|r| r.to) {
                            Some(RollbackTarget::LastHealthy) => {
                                snapshots::last_healthy_revision(
                                    &ctx.client,
                                    namespace,
                                    &incident.spec.target.name,
                                )
                                .await?
                            }
                            _ => None,
                        };
                        actions::plan(
                            action,
                            target,
                            sets,
                            last_healthy,
                            &record.id,
                            &incident_name,
                            now,
                        )
                    }
                };
                match planned {
                    Err(refusal) => {
                        entry.result = StepResult::Failed;
                        entry.finished_at = Some(now_time.clone());
                        entry.message = Some(refusal.to_string());
                        count_step(ctx, entry, now);
                        let message = format!("step {} refused: {refusal}", record.name);
                        timeline(status, &now_time, "StepRefused", &message);
                        events.push(PlannedEvent::warning("StepRefused", "Remediate", message));
                    }
                    Ok(planned) => {
                        let dry_run = mode == Mode::DryRun;
                        let detail =
                            apply(ctx, namespace, incident, &planned.change, dry_run).await;
                        let detail = match detail {
                            Ok(detail) => detail,
                            Err(ApplyError::Refused(refusal)) => {
                                entry.result = StepResult::Failed;
                                entry.finished_at = Some(now_time.clone());
                                entry.message = Some(refusal.clone());
                                count_step(ctx, entry, now);
                                let message = format!("step {} refused: {refusal}", record.name);
                                timeline(status, &now_time, "StepRefused", &message);
                                events.push(PlannedEvent::warning(
                                    "StepRefused",
                                    "Remediate",
                                    message,
                                ));
                                return Ok((events, Some(Duration::from_millis(200))));
                            }
                            Err(ApplyError::Api(error)) => return Err(error),
                        };
                        entry.changes = vec![planned.summary.clone()];
                        entry.changes.extend(detail);
                        if let Change::DeletePods {
                            max_unavailable, ..
                        } = planned.change
                        {
                            let min_ready = ladder.safety.min_ready_replicas;
                            let deleted = delete_batch(
                                ctx,
                                namespace,
                                &pods,
                                now,
                                max_unavailable,
                                min_ready,
                                dry_run,
                            )
                            .await?;
                            entry
                                .changes
                                .extend(deleted.iter().map(|pod| format!("pod {pod} deleted")));
                        }
                        entry.started_at = Some(now_time.clone());
                        let message = if dry_run {
                            entry.result = StepResult::DryRun;
                            entry.finished_at = Some(now_time.clone());
                            entry.message =
                                Some("server-side dry run passed; nothing changed".into());
                            count_step(ctx, entry, now);
                            format!(
                                "dry run of step {}: would do {}",
                                record.name, planned.summary
                            )
                        } else {
                            entry.result = StepResult::Verifying;
                            format!("step {} applied: {}", record.name, planned.summary)
                        };
                        info!(incident = %incident_name, step = %record.id, dry_run, change = %planned.summary, "remediation step");
                        if !dry_run {
                            let note = format!(
                                "{} (incident {incident_name}, step {})",
                                planned.summary, record.id
                            );
                            let event =
                                PlannedEvent::normal("RemediationApplied", "Remediate", note)
                                    .into_event();
                            match &workload {
                                Workload::Deployment(d, _) => ctx.publish(d, event).await,
                                Workload::StatefulSet(s) => ctx.publish(s, event).await,
                            }
                        }
                        timeline(status, &now_time, "StepApplied", &message);
                        events.push(PlannedEvent::normal("StepApplied", "Remediate", message));
                    }
                }
            }
            requeue = Some(Duration::from_secs(1));
        }
        Next::HealthySince { index } => {
            if let Some(record) = status.steps.get_mut(index) {
                record.healthy_since = Some(now_time.clone());
            }
            status.phase = Some(Phase::Monitoring);
            let hold = ladder
                .timing
                .get(index)
                .map_or(Duration::ZERO, |t| t.hold_down);
            requeue = Some(hold + Duration::from_secs(1));
        }
        Next::Relapsed { index } => {
            if let Some(record) = status.steps.get_mut(index) {
                record.healthy_since = None;
            }
            status.phase = Some(Phase::Mitigating);
            requeue = Some(Duration::from_secs(2));
        }
        Next::Succeeded { index } => {
            let Some(record) = status.steps.get_mut(index) else {
                return Ok((events, None));
            };
            record.result = StepResult::Succeeded;
            record.finished_at = Some(now_time.clone());
            count_step(ctx, record, now);
            let healthy_since = record.healthy_since.clone();
            let name = record.name.clone();
            status.milestones.mitigated_at = healthy_since.or(Some(now_time.clone()));
            if let (Some(detected), Some(mitigated)) = (
                &status.milestones.detected_at,
                &status.milestones.mitigated_at,
            ) {
                ctx.metrics
                    .time_to_mitigate
                    .observe(seconds_between(detected.0, mitigated.0));
            }
            status.milestones.resolved_at = Some(now_time.clone());
            status.phase = Some(Phase::Resolved);
            let message = format!(
                "step {name} verified: the workload recovered and stayed healthy; resolved"
            );
            timeline(status, &now_time, "Remediated", &message);
            events.push(PlannedEvent::normal("Remediated", "Remediate", message));
        }
        Next::Failed { index, reason } => {
            let Some(record) = status.steps.get_mut(index) else {
                return Ok((events, None));
            };
            record.result = StepResult::Failed;
            record.finished_at = Some(now_time.clone());
            record.message = Some(reason.clone());
            count_step(ctx, record, now);
            let message = format!("step {} did not help: {reason}", record.name);
            timeline(status, &now_time, "StepFailed", &message);
            events.push(PlannedEvent::warning("StepFailed", "Remediate", message));
            requeue = Some(Duration::from_millis(200));
        }
        Next::Exhausted => {
            if status.phase != Some(Phase::Escalated) {
                ctx.metrics.ladder_exhaustions.inc();
                status.phase = Some(Phase::Escalated);
                let message = format!(
                    "all {} step(s) tried, none brought recovery; a human must act",
                    ladder.steps.len()
                );
                let update = ConditionUpdate {
                    type_: NEEDS_HUMAN,
                    status: true,
                    reason: "LadderExhausted",
                    message: message.clone(),
                };
                set_condition(
                    &mut status.conditions,
                    update,
                    incident.metadata.generation,
                    &now_time,
                );
                timeline(status, &now_time, "Escalated", &message);
                events.push(PlannedEvent::warning("Escalated", "Remediate", message));
            }
        }
        Next::DryRunComplete => {
            if !status.timeline.iter().any(|e| e.reason == "DryRunComplete") {
                let message = format!(
                    "dry run: {} step(s) planned and checked; nothing was changed",
                    ladder.steps.len()
                );
                timeline(status, &now_time, "DryRunComplete", &message);
                events.push(PlannedEvent::normal("DryRunComplete", "Remediate", message));
            }
        }
        Next::Wait(until) => {
            requeue = until.map(|at| {
                Duration::try_from(at.duration_since(now)).unwrap_or_default()
                    + Duration::from_millis(500)
            });
        }
    }
    Ok((events, requeue))
}

/// The workload's pods (those its owner references tie to it).
async fn workload_pods(
    ctx: &Context,
    namespace: &str,
    workload: &Workload,
) -> Result<Vec<Pod>, Error> {
    let (kind, name, selector) = match workload {
        Workload::Deployment(d, _) => (
            WorkloadKind::Deployment,
            d.name_any(),
            d.spec.as_ref().map(|s| s.selector.clone()),
        ),
        Workload::StatefulSet(s) => (
            WorkloadKind::StatefulSet,
            s.name_any(),
            s.spec.as_ref().map(|s| s.selector.clone()),
        ),
    };
    let Some(Ok(selector)) = selector.map(Selector::try_from) else {
        return Ok(Vec::new());
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = api
        .list(&ListParams::default().labels_from(&selector))
        .await?
        .items;
    Ok(pods
        .into_iter()
        .filter(|pod| pod_belongs_to(pod, kind, &name))
        .collect())
}

/// Deletes the next batch of a DeletePods restart: the workload's pods created
/// before the step started, unhealthy first, within the availability limits.
async fn delete_batch(
    ctx: &Context,
    namespace: &str,
    pods: &[Pod],
    started: Timestamp,
    max_unavailable: i32,
    min_ready: i32,
    dry_run: bool,
) -> Result<Vec<String>, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let states: Vec<actions::PodState> = pods
        .iter()
        .map(|pod| actions::PodState {
            name: pod.name_any(),
            ready: pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            original: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| t.0 < started),
        })
        .collect();
    let batch = actions::next_batch(&states, max_unavailable, min_ready);
    let params = DeleteParams {
        dry_run,
        ..DeleteParams::default()
    };
    for pod in &batch {
        match api.delete(pod, &params).await {
            Ok(_) => {}
            // Gone already: what the step wanted.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(batch)
}

/// Why a change was not sent.
enum ApplyError {
    /// Nothing to apply with (e.g. no snapshot): the step fails, the ladder goes on.
    Refused(String),
    Api(Error),
}

impl From<kube::Error> for ApplyError {
    fn from(error: kube::Error) -> Self {
        ApplyError::Api(error.into())
    }
}

/// Sends a change to the target, for real or as a server-side dry run.
/// Returns extra lines for the ledger.
async fn apply(
    ctx: &Context,
    namespace: &str,
    incident: &Incident,
    change: &Change,
    dry_run: bool,
) -> Result<Option<String>, ApplyError> {
    let name = &incident.spec.target.name;
    let mut detail = None;
    let (params, patch) = match change {
        Change::Apply(body) | Change::DeletePods { mark: body, .. } => (
            PatchParams::apply(FIELD_MANAGER).force(),
            Patch::Apply(body.clone()),
        ),
        Change::ReplaceTemplate(ops) => {
            let ops: json_patch::Patch = serde_json::from_value(ops.clone())
                .map_err(|e| ApplyError::Api(Error::Serialize(e)))?;
            (
                PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                Patch::Json(ops),
            )
        }
        Change::RestoreConfig {
            config_map,
            workload,
        } => {
            detail = Some(
                restore_config(ctx, namespace, config_map, &incident.name_any(), dry_run).await?,
            );
            (
                PatchParams::apply(FIELD_MANAGER).force(),
                Patch::Apply(workload.clone()),
            )
        }
    };
    let params = PatchParams { dry_run, ..params };
    match incident.spec.target.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(ctx.client.clone(), namespace)
                .patch(name, &params, &patch)
                .await?;
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
                .patch(name, &params, &patch)
                .await?;
        }
    }
    Ok(detail)
}

/// Replaces a ConfigMap's content with its newest known-good snapshot.
async fn restore_config(
    ctx: &Context,
    namespace: &str,
    config_map: &str,
    incident: &str,
    dry_run: bool,
) -> Result<String, ApplyError> {
    let snapshots = snapshots::snapshots_of(&ctx.client, namespace, config_map).await?;
    let Some(snapshot) = snapshots.first() else {
        return Err(ApplyError::Refused(format!(
            "no known-good snapshot of ConfigMap {config_map} yet"
        )));
    };
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(mut current) = api.get_opt(config_map).await? else {
        return Err(ApplyError::Refused(format!(
            "ConfigMap {config_map} not found"
        )));
    };
    let snapshot_name = snapshot.name_any();
    let taken = snapshots::taken_at(snapshot)
        .map(|t| t.to_string())
        .unwrap_or_default();
    if current.data == snapshot.data && current.binary_data == snapshot.binary_data {
        return Ok(format!(
            "ConfigMap/{config_map} already matches snapshot {snapshot_name} ({taken})"
        ));
    }
    current.data = snapshot.data.clone();
    current.binary_data = snapshot.binary_data.clone();
    let annotations = current
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(actions::INCIDENT_ANNOTATION.into(), incident.into());
    annotations.insert(
        "healing-guard.io/restored-from".into(),
        snapshot_name.clone(),
    );
    let params = PostParams {
        dry_run,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    api.replace(config_map, &params, &current).await?;
    Ok(format!(
        "ConfigMap/{config_map} content from snapshot {snapshot_name} taken {taken}"
    ))
}

/// Refuses an action that could take the workload below the policy's floor
/// of ready replicas (rollouts take up to maxUnavailable pods down at once).
fn ready_floor(workload: &Workload, action: &Action, min_ready: i32) -> Option<actions::Refusal> {
    let rolls = match action.action {
        ActionKind::Rollback | ActionKind::Restart | ActionKind::RestoreConfig => true,
        ActionKind::Scale => action.scale.as_ref().is_some_and(|s| s.resources.is_some()),
    };
    if !rolls || min_ready == 0 {
        return None;
    }
    let (ready, max_unavailable) = match workload {
        Workload::Deployment(d, _) => {
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
            let max_unavailable = match strategy {
                Some(s) if s.type_.as_deref() == Some("Recreate") => replicas,
                _ => {
                    let value = strategy
                        .and_then(|s| s.rolling_update.as_ref())
                        .and_then(|r| r.max_unavailable.clone());
                    match value {
                        Some(IntOrString::Int(n)) => n,
                        Some(IntOrString::String(text)) => percent_of(&text, replicas),
                        None => percent_of("25%", replicas),
                    }
                }
            };
            (
                d.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
                max_unavailable,
            )
        }
        // StatefulSets roll one pod at a time.
        Workload::StatefulSet(s) => (
            s.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            1,
        ),
    };
    (!safety::keeps_min_ready(ready, max_unavailable, min_ready)).then_some(
        actions::Refusal::BelowReadyFloor {
            ready,
            max_unavailable,
            min_ready,
        },
    )
}

/// Kubernetes rounds a percentage of maxUnavailable down.
fn percent_of(text: &str, replicas: i32) -> i32 {
    let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(25);
    i32::try_from(i64::from(replicas) * percent / 100).unwrap_or(0)
}

/// Condition set while the safety limits hold a step back.
pub const REMEDIATION_BLOCKED: &str = "RemediationBlocked";

/// Applies the safety limits before a step may run. Returns how long to wait
/// when blocked (and says why in a condition); None when the step may run.
async fn gate(
    ctx: &Context,
    namespace: &str,
    incident: &Incident,
    ladder: &Ladder,
    status: &mut IncidentStatus,
    events: &mut Vec<PlannedEvent>,
    now: Timestamp,
) -> Result<Option<Duration>, Error> {
    let all = Api::<Incident>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let target = &incident.spec.target;
    let target_steps = safety::applied_steps(all.iter().filter(|i| i.spec.target == *target));
    let policy_steps = safety::applied_steps(all.iter().filter(|i| {
        let policy = i.spec.policy.as_ref().or(i.spec.source.policy.as_ref());
        ladder.policy.is_some() && policy == ladder.policy.as_ref()
    }));
    let limits = safety::Limits {
        cooldown: ladder.safety.cooldown.as_std(),
        max_actions: ladder.safety.max_actions,
        window: ladder.safety.window.as_std(),
        breaker_threshold: ladder.safety.circuit_breaker_threshold,
    };
    let breaker = safety::breaker(
        &policy_steps,
        limits.breaker_threshold,
        ladder.breaker_reset_at,
    );
    let now_time = Time(now);
    let generation = incident.metadata.generation;
    let (message, wait) = match safety::check(&target_steps, breaker, &limits, now) {
        safety::Verdict::Allow => {
            let update = ConditionUpdate {
                type_: REMEDIATION_BLOCKED,
                status: false,
                reason: "Allowed",
                message: "safety limits allow the next step".into(),
            };
            if status
                .conditions
                .iter()
                .any(|c| c.type_ == REMEDIATION_BLOCKED)
            {
                set_condition(&mut status.conditions, update, generation, &now_time);
            }
            return Ok(None);
        }
        safety::Verdict::WaitUntil(until, why) => {
            let wait = Duration::try_from(until.duration_since(now)).unwrap_or_default()
                + Duration::from_secs(1);
            (format!("{why}; next step not before {until}"), wait)
        }
        // Re-checked now and then: a reset is an annotation on the policy.
        safety::Verdict::Refuse(why) => (why, Duration::from_secs(60)),
    };
    let reason = if breaker.open {
        "CircuitBreakerOpen"
    } else {
        "SafetyLimit"
    };
    let update = ConditionUpdate {
        type_: REMEDIATION_BLOCKED,
        status: true,
        reason,
        message: message.clone(),
    };
    if set_condition(&mut status.conditions, update, generation, &now_time) {
        timeline(status, &now_time, REMEDIATION_BLOCKED, &message);
        events.push(PlannedEvent::warning(
            REMEDIATION_BLOCKED,
            "Remediate",
            message,
        ));
    }
    Ok(Some(wait))
}

/// Counts a step that reached its verdict, with its duration.
fn count_step(ctx: &Context, record: &StepRecord, now: Timestamp) {
    let action = record.action.as_str();
    let labels = StepLabels {
        action,
        result: record.result.as_str(),
    };
    ctx.metrics.steps.get_or_create(&labels).inc();
    if let Some(started) = &record.started_at {
        let duration = seconds_between(started.0, now);
        ctx.metrics
            .step_duration
            .get_or_create(&ActionLabels { action })
            .observe(duration);
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

fn timeline(status: &mut IncidentStatus, at: &Time, reason: &str, message: &str) {
    super::lifecycle::push_timeline(
        status,
        TimelineEntry {
            at: at.clone(),
            reason: reason.into(),
            message: message.into(),
        },
    );
}
