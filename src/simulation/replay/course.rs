//! What an incident came to, as a replay compares it: the fields a
//! policy change can change.

use serde::Serialize;

use crate::{
    crd::{Incident, StepResult},
    remediation::ladder::NOT_HEALTHY_WITHIN,
};

/// What an incident came to: the fields a policy change can change.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Course {
    pub rule: Option<String>,
    pub severity: Option<String>,
    #[serde(rename = "type")]
    pub incident_type: Option<String>,
    pub phase: Option<String>,
    /// Each step: name (action) result.
    pub steps: Vec<String>,
    /// Steps refused or skipped, and why; the safety gate's hold.
    pub refusals: Vec<String>,
}

impl Course {
    /// The course of an incident as recorded (or as simulated).
    pub fn of(incident: &Incident) -> Course {
        let status = incident.status.as_ref();
        let steps = status.map(|s| s.steps.as_slice()).unwrap_or_default();
        let mut refusals: Vec<String> = steps
            .iter()
            .filter(|s| matches!(s.result, StepResult::Skipped | StepResult::Failed))
            .filter(|s| {
                s.message
                    .as_deref()
                    .is_some_and(|m| !m.starts_with(NOT_HEALTHY_WITHIN))
            })
            .map(|s| format!("{}: {}", s.name, s.message.clone().unwrap_or_default()))
            .collect();
        refusals.extend(
            status
                .into_iter()
                .flat_map(|s| &s.conditions)
                .filter(|c| {
                    c.type_ == crate::incident::decision::REMEDIATION_BLOCKED && c.status == "True"
                })
                .map(|c| format!("blocked ({}): {}", c.reason, c.message)),
        );
        Course {
            rule: incident
                .spec
                .source
                .rule
                .clone()
                .or(incident.spec.rule.clone()),
            severity: Some(incident.spec.severity.to_string()),
            incident_type: Some(incident.spec.incident_type.to_string()),
            phase: status.and_then(|s| s.phase).map(|p| p.as_str().to_owned()),
            steps: steps
                .iter()
                .map(|s| format!("{} ({}) {}", s.name, s.action, s.result.as_str()))
                .collect(),
            refusals,
        }
    }
}

/// The fields of `replayed` that differ from `recorded`, by name
/// (`incident` when the new policy opens none).
pub fn differences(recorded: &Course, replayed: Option<&Course>) -> Vec<String> {
    let Some(replayed) = replayed else {
        return vec!["incident".into()];
    };
    let mut differ = Vec::new();
    let mut field = |name: &str, same: bool| {
        if !same {
            differ.push(name.to_owned());
        }
    };
    field("rule", recorded.rule == replayed.rule);
    field("severity", recorded.severity == replayed.severity);
    field("type", recorded.incident_type == replayed.incident_type);
    field("phase", recorded.phase == replayed.phase);
    field("steps", recorded.steps == replayed.steps);
    field("refusals", recorded.refusals == replayed.refusals);
    differ
}
