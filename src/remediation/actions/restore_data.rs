//! `restoreData`: the runbook's "Database Corruption" as one step of
//! sub-steps, each written to the ledger (`workflow.stage`) before it is
//! carried out: the writers' replicas recorded, the writers scaled to 0,
//! the restore Job created and waited for, the data verified, the writers
//! scaled back to exactly the recorded replicas. Every sub-step is safe to
//! carry out twice (a scale to a number, a Job named after the step), so a
//! restart carries out the recorded one and goes on. A failure once the
//! writers are down stops there and escalates with what is down and the
//! commands that bring it back: the data may be half restored, and nothing
//! automatic should write to it.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{
    action::{Action, Io, Mark, Plan, Planned, Request},
    errors::{ApplyError, Refusal},
    run_job::{self, RunJob},
    write::patch_named,
};
use crate::authority::Grant;
use crate::{
    crd::{
        self, ActionKind, IncidentType, RecordedReplicas, RestoreDataAction, RunJobAction,
        Workflow, WorkflowStage, WorkloadKind,
    },
    names::{FIELD_MANAGER, INCIDENT_ANNOTATION, STEP_ANNOTATION},
    workload::Workload,
};

/// How long the restore may run when the action does not say: 30 minutes.
const DEFAULT_DEADLINE_SECONDS: u64 = 1800;

/// The writers as they are before the restore.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    replicas: Vec<RecordedReplicas>,
    problems: Vec<String>,
}

/// Writers scaled to given replicas.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleWriters {
    namespace: String,
    to: Vec<RecordedReplicas>,
    step: String,
    incident: String,
}

/// What a restoreData step does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Move {
    /// Make this change; once made, the workflow is at `then`.
    Act {
        planned: Planned,
        then: WorkflowStage,
    },
    /// Only go on to `then` (a line for the ledger says why).
    Advance { then: WorkflowStage, line: String },
    /// Wait and look again.
    Wait,
    /// Stop here and escalate, with the exact state.
    Fail(String),
}

pub struct RestoreData;

impl Action for RestoreData {
    const KIND: ActionKind = ActionKind::RestoreData;
    const POLICY_ONLY: bool = true;
    type Settings = RestoreDataAction;
    type Inputs = Inputs;
    type Change = ScaleWriters;

    fn settings(action: &crd::Action) -> Option<&RestoreDataAction> {
        action.restore_data.as_ref()
    }

    /// Reads the writers' replicas.
    async fn observe(
        io: Io<'_>,
        settings: &RestoreDataAction,
        workload: &Workload,
    ) -> Result<Inputs, kube::Error> {
        let client = io.client;
        let namespace = workload.namespace();
        let mut inputs = Inputs::default();
        for writer in &settings.writers {
            let replicas = match writer.kind {
                WorkloadKind::Deployment => {
                    Api::<Deployment>::namespaced(client.clone(), &namespace)
                        .get_opt(&writer.name)
                        .await?
                        .map(|d| d.spec.and_then(|s| s.replicas).unwrap_or(1))
                }
                // Listed by name: the remediator's workloads level lists
                // StatefulSets (rotateSecret finds their readers) and needs
                // no more than that to read one.
                WorkloadKind::StatefulSet => {
                    Api::<StatefulSet>::namespaced(client.clone(), &namespace)
                        .list(
                            &kube::api::ListParams::default()
                                .fields(&format!("metadata.name={}", writer.name)),
                        )
                        .await?
                        .items
                        .into_iter()
                        .next()
                        .map(|s| s.spec.and_then(|s| s.replicas).unwrap_or(1))
                }
            };
            match replicas {
                Some(replicas) => inputs.replicas.push(RecordedReplicas {
                    kind: writer.kind,
                    name: writer.name.clone(),
                    replicas,
                }),
                None => inputs.problems.push(format!("writer {writer} not found")),
            }
        }
        Ok(inputs)
    }

    /// The whole workflow in words, for a dry run; its change is the scale
    /// down, checked by the API server. Pure.
    fn plan(
        request: &Request<'_>,
        _: &RestoreDataAction,
        inputs: &Inputs,
    ) -> Result<Plan<ScaleWriters>, Refusal> {
        let (action, workload, mark) = (request.action, request.workload, request.mark);
        let workflow = begin(action, inputs)?;
        let writers: Vec<String> = workflow
            .replicas
            .iter()
            .map(|r| format!("{}/{} ({})", r.kind, r.name, r.replicas))
            .collect();
        Ok(Plan {
            change: scale(workload, &workflow.replicas, true, mark),
            summary: format!(
                "restore: scale {} to 0, run the restore Job {}, verify the data, scale them back",
                writers.join(", "),
                crate::remediation::step_id::job_name(mark.step)
            ),
        })
    }

    /// Scales each writer (a merge patch of `spec.replicas`, marked with the
    /// step). The same scale again changes nothing.
    async fn apply(
        io: Io<'_>,
        _: &Workload,
        change: &ScaleWriters,
        dry_run: bool,
    ) -> Result<Vec<String>, ApplyError> {
        let client = io.client;
        let params = PatchParams {
            dry_run,
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        for writer in &change.to {
            let patch = json!({
                "metadata": {"annotations": {STEP_ANNOTATION: change.step, INCIDENT_ANNOTATION: change.incident}},
                "spec": {"replicas": writer.replicas}
            });
            patch_named(
                client,
                (&change.namespace, writer.kind, &writer.name),
                &params,
                &Patch::Merge(patch),
            )
            .await?;
        }
        Ok(Vec::new())
    }

    /// It takes its writers down on purpose, approved by a named person.
    fn grants(action: &crd::Action, _: WorkloadKind) -> Vec<Grant> {
        let mut grants = vec![
            Grant::new("batch", "jobs", "create"),
            Grant::new("batch", "jobs", "get"),
        ];
        for writer in Self::settings(action).iter().flat_map(|s| &s.writers) {
            grants.push(Grant::patch_workload(writer.kind));
        }
        grants
    }

    fn rolls_pods(_: &crd::Action) -> bool {
        false
    }

    /// It takes its writers down and loses what was written since the
    /// backup: a named person approves it, always.
    fn needs_approval(_: &crd::Action, _: IncidentType) -> bool {
        true
    }
}

/// The workflow's first record: the writers' replicas, before anything
/// is changed. Pure.
pub fn begin(action: &crd::Action, inputs: &Inputs) -> Result<Workflow, Refusal> {
    let settings = RestoreData::required(action)?;
    if let Some(problem) = inputs.problems.first() {
        return Err(Refusal::Unusable(problem.clone()));
    }
    run_job::job_spec(&restore_job(settings))
        .map_err(|error| Refusal::Unusable(error.to_string()))?;
    Ok(Workflow {
        wound_down: false,
        stage: WorkflowStage::ScaleDown,
        replicas: inputs.replicas.clone(),
    })
}

/// The restore Job, as a runJob would make it.
fn restore_job(settings: &RestoreDataAction) -> RunJobAction {
    RunJobAction {
        job: settings.job.clone(),
        deadline: Some(
            settings
                .deadline
                .unwrap_or_else(|| crate::crd::Duration::from_secs(DEFAULT_DEADLINE_SECONDS)),
        ),
        keep_for: None,
    }
}

fn scale(
    workload: &Workload,
    replicas: &[RecordedReplicas],
    down: bool,
    mark: Mark<'_>,
) -> ScaleWriters {
    ScaleWriters {
        namespace: workload.namespace(),
        to: replicas
            .iter()
            .map(|r| RecordedReplicas {
                replicas: if down { 0 } else { r.replicas },
                ..r.clone()
            })
            .collect(),
        step: mark.step.to_owned(),
        incident: mark.incident.to_owned(),
    }
}

/// What is down and how to bring it back by hand.
pub fn state(workflow: &Workflow, namespace: &str) -> String {
    let down: Vec<String> = workflow
        .replicas
        .iter()
        .map(|r| format!("{}/{} (was {} replicas)", r.kind, r.name, r.replicas))
        .collect();
    let commands: Vec<String> = workflow
        .replicas
        .iter()
        .map(|r| {
            format!(
                "kubectl -n {namespace} scale {}/{} --replicas={}",
                r.kind.to_string().to_lowercase(),
                r.name,
                r.replicas
            )
        })
        .collect();
    format!(
        "down: {}; to bring them back by hand once the data is sound: {}",
        down.join(", "),
        commands.join("; ")
    )
}

/// The next sub-step, from the recorded stage and what is seen now. Pure.
pub fn advance(
    action: &crd::Action,
    workload: &Workload,
    workflow: &Workflow,
    job: Option<&run_job::Outcome>,
    data_verified: Option<bool>,
    mark: Mark<'_>,
) -> Move {
    let Ok(settings) = RestoreData::required(action) else {
        return Move::Fail("the step's restoreData settings are gone".into());
    };
    let namespace = workload.namespace();
    let stopped = |why: String| {
        Move::Fail(format!(
            "restore stopped at {}: {why}; {}",
            workflow.stage,
            state(workflow, &namespace)
        ))
    };
    match workflow.stage {
        WorkflowStage::ScaleDown => {
            let names: Vec<String> = workflow
                .replicas
                .iter()
                .map(|r| format!("{}/{}", r.kind, r.name))
                .collect();
            let summary = format!("writers scaled to 0: {}", names.join(", "));
            scale_move(
                workload,
                workflow,
                true,
                mark,
                summary,
                WorkflowStage::Restore,
            )
        }
        WorkflowStage::Restore => match run_job::plan_job(&restore_job(settings), workload, mark) {
            Ok(plan) => Move::Act {
                planned: Planned::new::<RunJob>(plan),
                then: WorkflowStage::AwaitRestore,
            },
            Err(refusal) => stopped(refusal.to_string()),
        },
        WorkflowStage::AwaitRestore => match job {
            Some(run_job::Outcome::Succeeded) => Move::Advance {
                then: WorkflowStage::VerifyData,
                line: "the restore Job succeeded".into(),
            },
            Some(run_job::Outcome::Failed(why)) => stopped(why.clone()),
            Some(run_job::Outcome::Gone) => stopped("the restore Job is gone".into()),
            Some(run_job::Outcome::Running) | None => Move::Wait,
        },
        WorkflowStage::VerifyData => match (data_verified, &settings.verify_probe) {
            (Some(true), Some(probe)) => Move::Advance {
                then: WorkflowStage::ScaleBack,
                line: format!("probe {probe} passes on the restored data"),
            },
            (_, None) => Move::Advance {
                then: WorkflowStage::ScaleBack,
                line: "no verifyProbe: the restore Job's success verifies it".into(),
            },
            (_, Some(_)) => Move::Wait,
        },
        WorkflowStage::ScaleBack => scale_back(workload, workflow, mark),
        WorkflowStage::Done => Move::Wait,
    }
}

/// Whether the workflow may have its writers down: from the record of their
/// replicas (taken before the scale-down) until they are back. While it
/// does, the incident is not let go (a finalizer) and closing it winds the
/// restore down first.
pub fn writers_may_be_down(workflow: &Workflow) -> bool {
    workflow.stage != WorkflowStage::Done
}

/// The next sub-step of a restore whose incident was closed (resolved,
/// declined) or is being deleted: the writers come back before anything
/// else. A restore Job already running finishes first (stopping it halfway
/// would leave the data worse); one not yet made is never made; the data
/// is not verified. A restore that failed leaves them down and says so, as
/// it does for an open incident: its data may be half-written. Pure.
pub fn wind_down(
    workload: &Workload,
    workflow: &Workflow,
    job: Option<&run_job::Outcome>,
    mark: Mark<'_>,
) -> Move {
    let back = |line: &str| Move::Advance {
        then: WorkflowStage::ScaleBack,
        line: format!("the incident was closed mid-restore: {line}; its writers are brought back"),
    };
    match workflow.stage {
        WorkflowStage::ScaleDown => back("before its writers were scaled down (or as they were)"),
        WorkflowStage::Restore => back("before the restore Job was made, so none is made"),
        WorkflowStage::AwaitRestore => match job {
            Some(run_job::Outcome::Succeeded) => {
                back("the restore Job it was waiting for succeeded; the data is not verified")
            }
            Some(run_job::Outcome::Failed(why)) => Move::Fail(format!(
                "restore stopped at AwaitRestore after the incident was closed: {why}; {}",
                state(workflow, &workload.namespace())
            )),
            Some(run_job::Outcome::Gone) => Move::Fail(format!(
                "restore stopped at AwaitRestore after the incident was closed: the restore Job \
                 is gone; {}",
                state(workflow, &workload.namespace())
            )),
            Some(run_job::Outcome::Running) | None => Move::Wait,
        },
        WorkflowStage::VerifyData => back("before the restored data was verified"),
        WorkflowStage::ScaleBack => scale_back(workload, workflow, mark),
        WorkflowStage::Done => Move::Wait,
    }
}

/// The writers back to their recorded replicas; then the workflow is done.
fn scale_back(workload: &Workload, workflow: &Workflow, mark: Mark<'_>) -> Move {
    let back: Vec<String> = workflow
        .replicas
        .iter()
        .map(|r| format!("{}/{} to {}", r.kind, r.name, r.replicas))
        .collect();
    let summary = format!("writers scaled back: {}", back.join(", "));
    scale_move(
        workload,
        workflow,
        false,
        mark,
        summary,
        WorkflowStage::Done,
    )
}

/// The writers scaled down to 0 or back to their recorded replicas, then `then`.
fn scale_move(
    workload: &Workload,
    workflow: &Workflow,
    down: bool,
    mark: Mark<'_>,
    summary: String,
    then: WorkflowStage,
) -> Move {
    Move::Act {
        planned: Planned::new::<RestoreData>(Plan {
            change: scale(workload, &workflow.replicas, down, mark),
            summary,
        }),
        then,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use serde_json::json;

    fn restore() -> crd::Action {
        action(json!({"action": "restoreData", "restoreData": {
            "approver": "alice",
            "writers": [{"kind": "Deployment", "name": "api"}, {"kind": "Deployment", "name": "webhook-worker"}],
            "job": {"template": {"spec": {"containers": [{"name": "restore", "image": "postgres:15"}]}}},
            "verifyProbe": "integrity"}}))
    }

    fn recorded(stage: WorkflowStage) -> Workflow {
        Workflow {
            stage,
            wound_down: false,
            replicas: vec![
                RecordedReplicas {
                    kind: WorkloadKind::Deployment,
                    name: "api".into(),
                    replicas: 3,
                },
                RecordedReplicas {
                    kind: WorkloadKind::Deployment,
                    name: "webhook-worker".into(),
                    replicas: 2,
                },
            ],
        }
    }

    #[test]
    fn each_stage_leads_to_the_next_and_back_to_the_recorded_replicas() {
        let workload = deployment("1", 3);
        let step = |stage, job: Option<run_job::Outcome>, verified| {
            advance(
                &restore(),
                &workload,
                &recorded(stage),
                job.as_ref(),
                verified,
                MARK,
            )
        };
        let Move::Act { planned, then } = step(WorkflowStage::ScaleDown, None, None) else {
            panic!()
        };
        assert_eq!(then, WorkflowStage::Restore);
        let down = planned.change.get::<RestoreData>().unwrap();
        assert!(down.to.iter().all(|w| w.replicas == 0));
        assert!(matches!(
            step(WorkflowStage::Restore, None, None),
            Move::Act { then: WorkflowStage::AwaitRestore, planned } if planned.change.get::<RunJob>().is_some()
        ));
        assert_eq!(
            step(
                WorkflowStage::AwaitRestore,
                Some(run_job::Outcome::Running),
                None
            ),
            Move::Wait
        );
        assert!(matches!(
            step(
                WorkflowStage::AwaitRestore,
                Some(run_job::Outcome::Succeeded),
                None
            ),
            Move::Advance {
                then: WorkflowStage::VerifyData,
                ..
            }
        ));
        assert_eq!(
            step(WorkflowStage::VerifyData, None, Some(false)),
            Move::Wait
        );
        assert!(matches!(
            step(WorkflowStage::VerifyData, None, Some(true)),
            Move::Advance {
                then: WorkflowStage::ScaleBack,
                ..
            }
        ));
        let Move::Act { planned, then } = step(WorkflowStage::ScaleBack, None, None) else {
            panic!()
        };
        assert_eq!(then, WorkflowStage::Done);
        let back = planned.change.get::<RestoreData>().unwrap();
        let replicas: Vec<i32> = back.to.iter().map(|w| w.replicas).collect();
        assert_eq!(replicas, [3, 2], "exactly as recorded");
    }

    #[test]
    fn a_restore_whose_incident_closed_brings_its_writers_back_first() {
        let workload = deployment("1", 3);
        let wind = |stage, job: Option<run_job::Outcome>| {
            wind_down(&workload, &recorded(stage), job.as_ref(), MARK)
        };
        for stage in [
            WorkflowStage::ScaleDown,
            WorkflowStage::Restore,
            WorkflowStage::VerifyData,
        ] {
            assert!(
                matches!(
                    wind(stage, None),
                    Move::Advance { then: WorkflowStage::ScaleBack, ref line }
                        if line.starts_with("the incident was closed mid-restore: ")
                ),
                "{stage}"
            );
        }
        // A restore Job running finishes first; then the writers come back.
        assert_eq!(
            wind(WorkflowStage::AwaitRestore, Some(run_job::Outcome::Running)),
            Move::Wait
        );
        assert!(matches!(
            wind(
                WorkflowStage::AwaitRestore,
                Some(run_job::Outcome::Succeeded)
            ),
            Move::Advance {
                then: WorkflowStage::ScaleBack,
                ..
            }
        ));
        // One that failed leaves them down, and says how to bring them back.
        let Move::Fail(why) = wind(
            WorkflowStage::AwaitRestore,
            Some(run_job::Outcome::Failed("Job hg-x failed".into())),
        ) else {
            panic!()
        };
        assert!(
            why.contains("kubectl -n hg scale deployment/api --replicas=3"),
            "{why}"
        );
        let Move::Act { planned, then } = wind(WorkflowStage::ScaleBack, None) else {
            panic!()
        };
        assert_eq!(then, WorkflowStage::Done);
        let back = planned.change.get::<RestoreData>().unwrap();
        let replicas: Vec<i32> = back.to.iter().map(|w| w.replicas).collect();
        assert_eq!(replicas, [3, 2], "exactly as recorded");
        assert!(writers_may_be_down(&recorded(WorkflowStage::ScaleBack)));
        assert!(!writers_may_be_down(&recorded(WorkflowStage::Done)));
    }

    #[test]
    fn a_failed_restore_stops_with_what_is_down_and_how_to_bring_it_back() {
        let failed = advance(
            &restore(),
            &deployment("1", 3),
            &recorded(WorkflowStage::AwaitRestore),
            Some(&run_job::Outcome::Failed(
                "Job hg-x failed: BackoffLimitExceeded".into(),
            )),
            None,
            MARK,
        );
        assert_eq!(
            failed,
            Move::Fail(
                "restore stopped at AwaitRestore: Job hg-x failed: BackoffLimitExceeded; \
                 down: Deployment/api (was 3 replicas), Deployment/webhook-worker (was 2 replicas); \
                 to bring them back by hand once the data is sound: kubectl -n hg scale deployment/api --replicas=3; \
                 kubectl -n hg scale deployment/webhook-worker --replicas=2"
                    .into()
            )
        );
    }
}
