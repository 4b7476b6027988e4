//! Replay: recorded Incidents (`kubectl get inc -o yaml`) played again
//! against a changed policy. Each record becomes a case ([`case`]: its
//! target, its symptom from when it was first seen, its responders' inputs
//! at their times, each step turning out as it did), run on the virtual
//! clock with the new policy; what the new policy would have done
//! differently ([`course`]: rule, severity, steps, refusals) is printed.
//! For a pull request that changes a policy, this is the review.

mod case;
mod course;
mod records;

use std::path::Path;

use kube::ResourceExt;
use serde::Serialize;

pub use self::{course::Course, records::read_incidents};
use super::{
    case::TestFile,
    engine,
    load::{LoadError, Loaded},
};
use crate::crd::Incident;

/// One recorded incident replayed.
#[derive(Clone, Debug, Serialize)]
pub struct Replayed {
    pub incident: String,
    /// The incident the new policy opens for the same signal, when its
    /// name differs (another symptom's rule matched first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed_as: Option<String>,
    pub recorded: Course,
    /// What the new policy would have done; None when it would have opened
    /// no incident at all.
    pub replayed: Option<Course>,
    /// The fields that differ, by name.
    pub differences: Vec<String>,
    /// What the replay had to assume, in words.
    pub assumed: Vec<String>,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{path}: {why}")]
    Records { path: String, why: String },
    #[error("{0}: RemediationPolicy is invalid: {1}")]
    Invalid(String, String),
}

/// Replays each recorded incident against the policies of `policy_file`.
pub fn replay(policy_file: &Path, records: &[Incident]) -> Result<Vec<Replayed>, ReplayError> {
    // The policy file read like a test file's: validated first.
    let loaded = super::load::load_policies(policy_file)?;
    if let Some((policy, message)) = loaded.invalid.first() {
        return Err(ReplayError::Invalid(policy.clone(), message.clone()));
    }
    Ok(records
        .iter()
        .map(|record| replay_one(&loaded, record))
        .collect())
}

fn replay_one(loaded: &Loaded, record: &Incident) -> Replayed {
    let name = record.name_any();
    let recorded = Course::of(record);
    let (case, workload, assumed) = case::case_of(record, &loaded.policies);
    let loaded = Loaded {
        file: TestFile {
            policies: Vec::new(),
            communication: Vec::new(),
            workloads: vec![workload],
            cases: Vec::new(),
        },
        ..loaded.clone()
    };
    let simulated = engine::simulate(&loaded, &case);
    // The incident the same signal opens (the same name, the names being
    // derived from target and symptom), else the only one of its target.
    let found = simulated
        .incidents
        .iter()
        .find(|i| i.name_any() == name)
        .or_else(|| {
            simulated
                .incidents
                .iter()
                .find(|i| i.spec.target == record.spec.target)
        });
    let replayed = found.map(|i| Course::of(i));
    let replayed_as = found.map(|i| i.name_any()).filter(|n| *n != name);
    let mut differences = course::differences(&recorded, replayed.as_ref());
    if replayed_as.is_some() {
        differences.insert(0, "incident".into());
    }
    Replayed {
        incident: name,
        replayed_as,
        recorded,
        replayed,
        differences,
        assumed,
    }
}

/// The replays as text: per incident, what changes.
pub fn text(replayed: &[Replayed]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for one in replayed {
        let verdict = if one.differences.is_empty() {
            "the same"
        } else {
            "DIFFERENT"
        };
        let _ = writeln!(out, "Incident {}: {verdict}", one.incident);
        let Some(new) = &one.replayed else {
            let _ = writeln!(out, "  the new policy opens no incident for it");
            continue;
        };
        if let Some(other) = &one.replayed_as {
            let _ = writeln!(out, " *incident   opened as {other}");
        }
        let old = &one.recorded;
        let line = |out: &mut String, field: &str, was: String, now: String| {
            let mark = if was == now { " " } else { "*" };
            let _ = writeln!(out, " {mark}{field:<10} {was}");
            if was != now {
                let _ = writeln!(out, "  {:<10} -> {now}", "");
            }
        };
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        line(&mut out, "rule", show(&old.rule), show(&new.rule));
        line(
            &mut out,
            "severity",
            show(&old.severity),
            show(&new.severity),
        );
        line(
            &mut out,
            "type",
            show(&old.incident_type),
            show(&new.incident_type),
        );
        line(&mut out, "phase", show(&old.phase), show(&new.phase));
        line(
            &mut out,
            "steps",
            old.steps.join(", "),
            new.steps.join(", "),
        );
        line(
            &mut out,
            "refusals",
            old.refusals.join("; "),
            new.refusals.join("; "),
        );
        for assumption in &one.assumed {
            let _ = writeln!(out, "   assumed: {assumption}");
        }
        out.push('\n');
    }
    out
}
