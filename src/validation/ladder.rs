//! One check for every ladder, a policy rule's or an incident's own.

use std::collections::HashSet;

use super::Problems;
use crate::{
    crd::{
        Action, WorkloadKind,
        bounds::{MAX_COUNT, MAX_INCREMENT, MAX_REPLICAS, STEP_TIMEOUT},
    },
    remediation::actions::{self, run_job::job_spec},
};

/// Every problem of the ladder `actions` at `field`, whose steps act on
/// workloads of `kinds` (each with the field that says so).
pub fn ladder(
    field: &str,
    actions: &[Action],
    kinds: &[(String, WorkloadKind)],
    problems: &mut Problems,
) {
    let mut step_names = HashSet::new();
    for (a, action) in actions.iter().enumerate() {
        let here = format!("{field}[{a}]");
        if !step_names.insert(action.step_name()) {
            problems.add(
                format!("{here}.name"),
                format!(
                    "step name {:?} is used twice in this ladder; give each step a name",
                    action.step_name()
                ),
            );
        }
        for (kind_field, kind) in kinds {
            if !actions::resolve(action.action).applies_to(*kind) {
                problems.add(
                    format!("{here}.action"),
                    format!("{} cannot apply to a {kind} ({kind_field})", action.action),
                );
            }
        }
        if let Some(timeout) = &action.timeout {
            problems.duration(format!("{here}.timeout"), timeout, STEP_TIMEOUT);
        }
        if let Some(settings) = &action.patch {
            let fits = match settings.patch_type {
                crate::crd::PatchType::Merge => settings.patch.is_object(),
                crate::crd::PatchType::Json => {
                    serde_json::from_value::<json_patch::Patch>(settings.patch.clone()).is_ok()
                }
            };
            if !fits {
                problems.add(
                    format!("{here}.patch.patch"),
                    match settings.patch_type {
                        crate::crd::PatchType::Merge => "a Merge patch is an object",
                        crate::crd::PatchType::Json => {
                            "a Json patch is a list of operations (op, path, value)"
                        }
                    },
                );
            }
        }
        if let Some(settings) = &action.run_job
            && let Err(problem) = job_spec(settings)
        {
            problems.add(format!("{here}.runJob.{}", problem.field), problem.why);
        }
        if let Some(settings) = &action.restore_data {
            let as_job = crate::crd::RunJobAction {
                job: settings.job.clone(),
                deadline: settings.deadline,
                keep_for: None,
            };
            if let Err(problem) = job_spec(&as_job) {
                problems.add(format!("{here}.restoreData.{}", problem.field), problem.why);
            }
        }
        if let Some(scale) = &action.scale {
            if let Some(replicas) = scale.replicas {
                problems.range(format!("{here}.scale.replicas"), replicas, 1, MAX_REPLICAS);
            }
            if let Some(increment) = scale.increment {
                problems.range(
                    format!("{here}.scale.increment"),
                    increment,
                    1,
                    MAX_INCREMENT,
                );
                if scale.max_replicas.is_none() {
                    problems.add(
                        format!("{here}.scale.maxReplicas"),
                        "a scale by increment needs maxReplicas, its ceiling",
                    );
                }
            }
            if let Some(max) = scale.max_replicas {
                problems.range(format!("{here}.scale.maxReplicas"), max, 1, MAX_REPLICAS);
            }
        }
        if let Some(restart) = &action.restart {
            problems.range(
                format!("{here}.restart.maxUnavailable"),
                restart.max_unavailable,
                1,
                MAX_COUNT,
            );
        }
    }
}
