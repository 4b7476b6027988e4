//! What a case says, checked before it runs: every name it uses must name
//! something (a workload, a probe, a step of some ladder), every time must
//! fall within the case, and it must expect something. A typo must fail
//! the test, never make it pass by checking nothing.

use std::collections::BTreeSet;

use super::{
    case::{Case, WorkloadSpec},
    load::Loaded,
};
use crate::crd::Duration;

/// The problems of a case, in words; none when it can run.
pub fn case(loaded: &Loaded, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let workloads: BTreeSet<&str> = loaded
        .file
        .workloads
        .iter()
        .chain(&case.workloads)
        .map(|w: &WorkloadSpec| w.name.as_str())
        .collect();
    let probes: BTreeSet<&str> = loaded
        .policies
        .iter()
        .flat_map(|p| p.spec.probes.iter().map(|probe| probe.name.as_str()))
        .collect();
    let steps: BTreeSet<String> = loaded
        .policies
        .iter()
        .flat_map(|p| &p.spec.rules)
        .flat_map(|rule| &rule.actions)
        .map(|action| {
            action
                .name
                .clone()
                .unwrap_or_else(|| action.action.to_string())
        })
        .collect();
    for (index, spec) in case.workloads.iter().enumerate() {
        check_workload(&format!("workloads[{index}]"), spec, &mut problems);
    }
    for (index, spec) in loaded.file.workloads.iter().enumerate() {
        check_workload(
            &format!("the file's workloads[{index}]"),
            spec,
            &mut problems,
        );
    }
    let mut workload = |field: String, name: &str| {
        if !workloads.contains(name) {
            problems.push(format!(
                "{field}: no workload {name} in the file's or the case's workloads"
            ));
        }
    };
    for (index, input) in case.timeline.iter().enumerate() {
        let at = format!("timeline[{index}]");
        if let Some(pods) = &input.pods {
            workload(format!("{at}.pods.workload"), &pods.workload);
        }
        if let Some(available) = &input.available {
            workload(format!("{at}.available.workload"), &available.workload);
        }
        if let Some(name) = &input.rollout_stuck {
            workload(format!("{at}.rolloutStuck"), name);
        }
        if let Some(release) = &input.release {
            workload(format!("{at}.release.workload"), &release.workload);
        }
        if let Some(changed) = &input.config_changed {
            workload(format!("{at}.configChanged.workload"), &changed.workload);
        }
    }
    for (index, input) in case.timeline.iter().enumerate() {
        for probe in &input.probes {
            if !probes.contains(probe.name.as_str()) {
                problems.push(format!(
                    "timeline[{index}].probes: no policy has a probe {}",
                    probe.name
                ));
            }
        }
    }
    for (index, outcome) in case.steps.iter().enumerate() {
        if !steps.contains(&outcome.step) {
            problems.push(format!(
                "steps[{index}].step: no rule of the policies has a step {} (a step is named by its name, else its action)",
                outcome.step
            ));
        }
    }
    if let Some(until) = case.until {
        let late = |at: &Duration| at.as_std() > until.as_std();
        for (index, input) in case.timeline.iter().enumerate() {
            if late(&input.at) {
                problems.push(format!(
                    "timeline[{index}].at: {} is after until ({until})",
                    input.at
                ));
            }
        }
        for (index, expectation) in case.expect.iter().enumerate() {
            if late(&expectation.at) {
                problems.push(format!(
                    "expect[{index}].at: {} is after until ({until}): it would never be checked",
                    expectation.at
                ));
            }
        }
    }
    if case.expect.is_empty() && case.messages.is_none() && case.pages.is_none() {
        problems.push("it expects nothing: give expect, messages or pages".into());
    }
    problems
}

/// The most replicas a simulated workload may have: each is a pod built
/// and read at each change, and a test file must not make the runner
/// build millions.
pub const MAX_REPLICAS: i32 = 1000;

fn check_workload(field: &str, spec: &WorkloadSpec, problems: &mut Vec<String>) {
    if !(0..=MAX_REPLICAS).contains(&spec.replicas) {
        problems.push(format!(
            "{field}.replicas: {} is not between 0 and {MAX_REPLICAS}",
            spec.replicas
        ));
    }
    if spec.name.is_empty() {
        problems.push(format!("{field}.name: empty"));
    }
}
