//! `runJob`: a Job from the action's spec (a smoke test, a backup, a
//! restore), named after the step so it is created once: after a restart
//! the Job is found, not made again. The step then waits for it: a failed
//! Job fails the step, a running one holds verification until it ends or
//! its deadline passes; its outcome and, where logs are served, the tail
//! of its log are kept as evidence. Finished Jobs go by TTL.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    batch::v1::{Job, JobSpec},
    core::v1::Pod,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, LogParams, ObjectMeta, PostParams},
};

use super::{
    action::{Action, Io, Mark, Plan, Request},
    errors::{ApplyError, Refusal},
};
use crate::authority::Grant;
use crate::crd::WorkloadKind;
use crate::{
    crd::{self, ActionKind, RunJobAction},
    names::{FIELD_MANAGER, INCIDENT_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, STEP_ANNOTATION},
    remediation::step_id::job_name,
    workload::Workload,
};

/// How long a Job may run when the action does not say: ten minutes.
const DEFAULT_DEADLINE_SECONDS: i64 = 600;
/// The longest a Job may run: a day.
const LONGEST_DEADLINE_SECONDS: i64 = 86_400;
/// How long a finished Job is kept when the action does not say: an hour.
const DEFAULT_KEEP_SECONDS: i32 = 3600;
/// The longest a finished Job is kept: a week.
const LONGEST_KEEP_SECONDS: i32 = 604_800;
/// Log lines kept as evidence.
const LOG_LINES: i64 = 10;

/// The Job to create.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub job: Box<Job>,
}

pub struct RunJob;

impl Action for RunJob {
    const KIND: ActionKind = ActionKind::RunJob;
    const POLICY_ONLY: bool = true;
    type Settings = RunJobAction;
    type Inputs = ();
    type Change = Change;

    fn settings(action: &crd::Action) -> Option<&RunJobAction> {
        action.run_job.as_ref()
    }

    /// The Job, from the action's spec, with the operator's deadline, TTL,
    /// name and marks. Pure.
    fn plan(
        request: &Request<'_>,
        settings: &RunJobAction,
        _: &(),
    ) -> Result<Plan<Change>, Refusal> {
        plan_job(settings, request.workload, request.mark)
    }

    /// Creates the Job (a server-side dry run creates nothing). One that
    /// exists already was created by this step before a restart.
    async fn apply(
        io: Io<'_>,
        _: &Workload,
        change: &Change,
        dry_run: bool,
    ) -> Result<Vec<String>, ApplyError> {
        let client = io.client;
        let namespace = change.job.namespace().unwrap_or_default();
        let name = change.job.name_any();
        let params = PostParams {
            dry_run,
            field_manager: Some(FIELD_MANAGER.to_owned()),
        };
        let jobs = Api::<Job>::namespaced(client.clone(), &namespace);
        match jobs.create(&params, &change.job).await {
            Ok(_) => Ok(Vec::new()),
            Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => {
                // Taken as this step's only if this step made it: anyone
                // may create a Job under the predictable name first.
                let step = change
                    .job
                    .annotations()
                    .get(STEP_ANNOTATION)
                    .cloned()
                    .unwrap_or_default();
                match jobs.get_opt(&name).await? {
                    Some(found) if made_by(&found, &step) => Ok(vec![format!(
                        "Job {name} was created before a restart; not created again"
                    )]),
                    _ => Err(ApplyError::Foreign(format!(
                        "Job {name} exists but this step did not create it (it carries no mark of step {step}); it is not taken as the step's"
                    ))),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Its own pods: the target's are not rolled by it.
    fn grants(_: &crd::Action, _: WorkloadKind) -> Vec<Grant> {
        vec![
            Grant::new("batch", "jobs", "create"),
            Grant::new("batch", "jobs", "get"),
        ]
    }

    fn rolls_pods(_: &crd::Action) -> bool {
        false
    }

    fn verified_by_job() -> bool {
        true
    }
}

/// What is wrong with a Job spec: the field (under the action's settings)
/// and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("runJob.{field}: {why}")]
pub struct JobSpecError {
    pub field: &'static str,
    pub why: String,
}

/// The Job of `settings` for the step of `mark`. Pure.
pub fn plan_job(
    settings: &RunJobAction,
    workload: &Workload,
    mark: Mark<'_>,
) -> Result<Plan<Change>, Refusal> {
    let mut spec = job_spec(settings).map_err(|error| Refusal::Unusable(error.to_string()))?;
    let Some(pod) = spec.template.spec.as_mut() else {
        return Err(Refusal::Unusable(
            "runJob.job.template.spec: the pod to run is missing".into(),
        ));
    };
    // A Job's pods may not restart Always; Never unless the spec says.
    pod.restart_policy.get_or_insert_with(|| "Never".to_owned());
    let images: Vec<String> = pod
        .containers
        .iter()
        .filter_map(|c| c.image.clone())
        .collect();
    let deadline = settings
        .deadline
        .map_or(DEFAULT_DEADLINE_SECONDS, |d| {
            i64::try_from(d.as_std().as_secs()).unwrap_or(LONGEST_DEADLINE_SECONDS)
        })
        .clamp(1, LONGEST_DEADLINE_SECONDS);
    let keep = settings
        .keep_for
        .map_or(DEFAULT_KEEP_SECONDS, |d| {
            i32::try_from(d.as_std().as_secs()).unwrap_or(LONGEST_KEEP_SECONDS)
        })
        .clamp(0, LONGEST_KEEP_SECONDS);
    spec.active_deadline_seconds = Some(deadline);
    spec.ttl_seconds_after_finished = Some(keep);
    let name = job_name(mark.step);
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(workload.namespace()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([
                (STEP_ANNOTATION.to_owned(), mark.step.to_owned()),
                (INCIDENT_ANNOTATION.to_owned(), mark.incident.to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        ..Job::default()
    };
    Ok(Plan {
        change: Change { job: Box::new(job) },
        summary: format!(
            "Job {name} ({}; deadline {deadline}s)",
            if images.is_empty() {
                "no image".to_owned()
            } else {
                images.join(", ")
            }
        ),
    })
}

/// The action's Job spec, or what is wrong with it (the field and why).
/// Pure: the policy's validation reports the same before any step runs.
pub fn job_spec(settings: &RunJobAction) -> Result<JobSpec, JobSpecError> {
    let problem = |field, why: &str| JobSpecError {
        field,
        why: why.to_owned(),
    };
    let spec: JobSpec = serde_json::from_value(settings.job.clone())
        .map_err(|error| problem("job", &format!("not a Job spec: {error}")))?;
    let Some(pod) = spec.template.spec.as_ref() else {
        return Err(problem("job.template.spec", "the pod to run is missing"));
    };
    if pod.containers.is_empty() {
        return Err(problem("job.template.spec.containers", "nothing to run"));
    }
    if pod.restart_policy.as_deref() == Some("Always") {
        return Err(problem(
            "job.template.spec.restartPolicy",
            "a Job's pods may not restart Always",
        ));
    }
    Ok(spec)
}

/// Whether the step `step_id` made this Job: it carries the step's mark,
/// which only the operator's own create writes.
fn made_by(job: &Job, step_id: &str) -> bool {
    !step_id.is_empty()
        && job.annotations().get(STEP_ANNOTATION).map(String::as_str) == Some(step_id)
}

/// Where a step's Job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished yet.
    Running,
    Succeeded,
    /// Failed (its reason and message), or past its deadline.
    Failed(String),
    /// No such Job: deleted before the step concluded.
    Gone,
}

/// How a Job stands, from its conditions. Pure.
pub fn judge(job: &Job) -> Outcome {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .cloned()
        .unwrap_or_default();
    let holds = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if holds("Complete").is_some() {
        return Outcome::Succeeded;
    }
    match holds("Failed").or_else(|| holds("FailureTarget")) {
        Some(failed) => Outcome::Failed(format!(
            "Job {} failed: {}{}",
            job.name_any(),
            failed.reason.as_deref().unwrap_or("Failed"),
            failed
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )),
        None => Outcome::Running,
    }
}

/// Reads the step's Job (with `client`, the remediator's): where it
/// stands, and lines of evidence (its counts, and with a `logs` client the
/// tail of a pod's log where it is served, read as evidence is).
pub async fn observe_outcome(
    client: &Client,
    logs: Option<&Client>,
    namespace: &str,
    step_id: &str,
) -> Result<(Outcome, Vec<String>), kube::Error> {
    let name = job_name(step_id);
    let Some(job) = Api::<Job>::namespaced(client.clone(), namespace)
        .get_opt(&name)
        .await?
    else {
        return Ok((Outcome::Gone, vec![format!("Job {name} not found")]));
    };
    if !made_by(&job, step_id) {
        return Ok((
            Outcome::Failed(format!(
                "Job {name} was not created by this step (it carries no mark of step {step_id})"
            )),
            Vec::new(),
        ));
    }
    let outcome = judge(&job);
    let status = job.status.clone().unwrap_or_default();
    let mut lines = vec![format!(
        "Job {name}: {} (active {}, succeeded {}, failed {})",
        match &outcome {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed(_) => "failed",
            Outcome::Gone => "gone",
        },
        status.active.unwrap_or(0),
        status.succeeded.unwrap_or(0),
        status.failed.unwrap_or(0)
    )];
    if let Some(logs) = logs.filter(|_| outcome != Outcome::Running) {
        lines.push(log_tail(logs, namespace, &name).await);
    }
    Ok((outcome, lines))
}

/// The last lines of the Job's newest pod's log, or why there are none.
async fn log_tail(client: &Client, namespace: &str, job: &str) -> String {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await;
    let newest = match listed {
        Ok(list) => list
            .items
            .into_iter()
            .max_by_key(|p| p.creation_timestamp().map(|t| t.0)),
        Err(error) => return format!("log of Job {job} not available: {error}"),
    };
    let Some(pod) = newest else {
        return format!("log of Job {job} not available: its pods are gone");
    };
    let params = LogParams {
        tail_lines: Some(LOG_LINES),
        limit_bytes: Some(2048),
        ..LogParams::default()
    };
    match pods.logs(&pod.name_any(), &params).await {
        Ok(text) => format!("log of {}: {}", pod.name_any(), text.trim()),
        Err(error) => format!("log of {} not available: {error}", pod.name_any()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn plan(
        action: &crd::Action,
        workload: &Workload,
        mark: Mark<'_>,
    ) -> Result<Plan<Change>, Refusal> {
        RunJob::plan(
            &Request {
                mark,
                ..request(action, workload)
            },
            RunJob::required(action)?,
            &(),
        )
    }
    use serde_json::json;

    #[test]
    fn the_job_is_named_after_the_step_and_bounded_in_time() {
        let smoke = action(json!({"action": "runJob", "runJob": {
            "job": {"backoffLimit": 0, "template": {"spec": {"containers": [
                {"name": "smoke", "image": "curlimages/curl:8", "args": ["-f", "http://api/health"]}]}}},
            "deadline": "2m"}}));
        let mark = Mark {
            step: "0f0e1d2c-1-smoke-test-1",
            incident: "api-crashloop",
        };
        let planned = plan(&smoke, &deployment("1", 3), mark).unwrap();
        assert_eq!(
            planned.summary,
            "Job hg-0f0e1d2c-1-1-smoke-test (curlimages/curl:8; deadline 120s)"
        );
        let change = planned.change;
        let spec = change.job.spec.clone().unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(120));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(
            spec.template.spec.unwrap().restart_policy.as_deref(),
            Some("Never")
        );
        assert_eq!(change.job.metadata.namespace.as_deref(), Some("hg"));
    }

    #[test]
    fn what_is_not_a_job_is_refused_with_the_field() {
        let mark = Mark {
            step: "s-0-x-1",
            incident: "i",
        };
        for (job, expected) in [
            (
                json!({"template": {"spec": {"containers": "no"}}}),
                "runJob.job: not a Job spec",
            ),
            (json!({"template": {}}), "runJob.job.template.spec"),
            (
                json!({"template": {"spec": {"containers": []}}}),
                "nothing to run",
            ),
        ] {
            let step = action(json!({"action": "runJob", "runJob": {"job": job}}));
            match plan(&step, &deployment("1", 3), mark) {
                Err(Refusal::Unusable(why)) => assert!(why.contains(expected), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_job_stands_by_its_conditions() {
        let job = |conditions: serde_json::Value| -> Job {
            serde_json::from_value(
                json!({"metadata": {"name": "hg-x"}, "status": {"conditions": conditions}}),
            )
            .unwrap()
        };
        assert_eq!(judge(&job(json!([]))), Outcome::Running);
        assert_eq!(
            judge(&job(json!([{"type": "Complete", "status": "True"}]))),
            Outcome::Succeeded
        );
        assert_eq!(
            judge(&job(
                json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                               "message": "Job was active longer than specified deadline"}])
            )),
            Outcome::Failed(
                "Job hg-x failed: DeadlineExceeded: Job was active longer than specified deadline"
                    .into()
            )
        );
    }
}
