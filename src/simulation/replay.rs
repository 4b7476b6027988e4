//! Replay: recorded Incidents (`kubectl get inc -o yaml`) played again
//! against a changed policy. Each record becomes a case (its target, its
//! symptom from when it was first seen, its responders' inputs at their
//! times, each step turning out as it did), run on the virtual clock with
//! the new policy; what the new policy would have done differently (rule,
//! severity, steps, refusals) is printed. For a pull request that changes
//! a policy, this is the review.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::{
    case::{
        AlertInput, Case, Input, Outcome, PodState, PodsInput, ProbeInput, Responder, StepOutcome,
        TestFile, WorkloadSpec,
    },
    engine,
    load::{LoadError, Loaded},
};
use crate::crd::{
    Duration, Incident, RemediationPolicy, SourceKind, StepResult, Symptom, WorkloadKind,
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
                    .is_some_and(|m| !m.starts_with("not healthy within"))
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

/// Recorded incidents: one Incident, a List of them, or several documents.
pub fn read_incidents(path: &Path) -> Result<Vec<Incident>, ReplayError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ReplayError::Records {
        path: shown.clone(),
        why: error.to_string(),
    })?;
    let bad = |why: String| ReplayError::Records {
        path: shown.clone(),
        why,
    };
    let mut incidents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| bad(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let items = match value.get("kind").and_then(serde_yaml::Value::as_str) {
            Some("List" | "IncidentList") => value
                .get("items")
                .and_then(serde_yaml::Value::as_sequence)
                .cloned()
                .unwrap_or_default(),
            Some("Incident") => vec![value],
            other => {
                return Err(bad(format!(
                    "a {} is not an Incident (kubectl get incidents -o yaml)",
                    other.unwrap_or("document without a kind")
                )));
            }
        };
        for item in items {
            incidents.push(serde_yaml::from_value(item).map_err(|e| bad(e.to_string()))?);
        }
    }
    Ok(incidents)
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
    let (case, workload, assumed) = case_of(record, &loaded.policies);
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
    let mut differences = differences(&recorded, replayed.as_ref());
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

fn differences(recorded: &Course, replayed: Option<&Course>) -> Vec<String> {
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

/// The case a recorded incident makes, its target as a workload, and what
/// the replay had to assume.
fn case_of(
    record: &Incident,
    policies: &[Arc<RemediationPolicy>],
) -> (Case, WorkloadSpec, Vec<String>) {
    let mut assumed = Vec::new();
    let status = record.status.as_ref();
    let detection = status.and_then(|s| s.detection.as_ref());
    let evidence = status.and_then(|s| s.evidence.as_ref());
    let started: Option<Timestamp> = detection
        .and_then(|d| d.first_seen_at.as_ref())
        .or(record.spec.detected_at.as_ref())
        .or(record.metadata.creation_timestamp.as_ref())
        .map(|t| t.0);
    let offset = |time: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        let seconds = match (started, time) {
            (Some(start), Some(time)) => time.0.duration_since(start).as_secs().max(0),
            _ => 0,
        };
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    };
    let target = &record.spec.target;
    let namespace = record.namespace().unwrap_or_else(|| "default".into());

    // The workload: its revisions from the evidence's rollout history
    // (`revision N: NAME IMAGES (R ready of N)`, newest first).
    let mut revisions: Vec<(i64, String, i32)> = evidence
        .map(|e| e.rollout_history.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("revision ")?;
            let (number, rest) = rest.split_once(": ")?;
            let mut words = rest.split_whitespace();
            let _replica_set = words.next()?;
            let image = words.next()?.split(',').next()?.to_owned();
            let replicas = line
                .rsplit_once(" of ")
                .and_then(|(_, n)| n.trim_end_matches(')').parse().ok())
                .unwrap_or(0);
            Some((number.parse().ok()?, image, replicas))
        })
        .collect();
    revisions.sort_by_key(|(number, _, _)| *number);
    if revisions.is_empty() {
        assumed.push("no rollout history recorded: one revision".into());
    }
    let replicas = revisions
        .last()
        .map(|(_, _, replicas)| *replicas)
        .filter(|r| *r > 0)
        .or_else(|| {
            let pods = evidence.map_or(0, |e| e.pods.len());
            i32::try_from(pods).ok().filter(|p| *p > 0)
        })
        .unwrap_or_else(|| {
            assumed.push("replicas unknown: 1".into());
            1
        });
    let labels = guarding_labels(policies, &namespace, target.kind, &target.name);
    // A ConfigMap a recorded restore found changed since its snapshot.
    let config_maps: BTreeMap<String, crate::remediation::actions::ConfigAssumed> = status
        .map(|s| s.steps.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|s| s.action == crate::crd::ActionKind::RestoreConfig)
        .flat_map(|s| &s.changes)
        .filter_map(|line| {
            let name = line.strip_prefix("ConfigMap/")?.split_whitespace().next()?;
            Some((
                name.to_owned(),
                crate::remediation::actions::ConfigAssumed::Changed,
            ))
        })
        .collect();
    let workload = WorkloadSpec {
        kind: target.kind,
        name: target.name.clone(),
        namespace: Some(namespace.clone()),
        labels,
        replicas,
        revisions: revisions
            .iter()
            .map(|(_, image, _)| image.clone())
            .collect(),
        healthy_revision: None,
        containers: Vec::new(),
        rollout: Duration::from_secs(10),
        annotations: BTreeMap::new(),
        config_maps,
    };

    // The signal, as first seen.
    let mut timeline = Vec::new();
    let symptom = detection.and_then(|d| d.symptom);
    let key = record.spec.source.dedup_key.clone().unwrap_or_default();
    let named = key.rsplit('/').next().map(str::to_owned);
    let restarts = evidence
        .map(|e| e.pods.iter().map(|p| p.restarts).max().unwrap_or(0))
        .unwrap_or(0)
        .max(i32::try_from(detection.map_or(0, |d| d.occurrences)).unwrap_or(0));
    let mut input = Input::at(Duration::from_secs(0));
    let pods_show = |state| PodsInput {
        workload: target.name.clone(),
        state,
        restarts,
        count: None,
    };
    match (record.spec.source.kind, symptom) {
        (SourceKind::Manual, _) => {
            let mut declared = record.clone();
            declared.status = None;
            declared.metadata.resource_version = None;
            declared.metadata.generation = None;
            declared.metadata.uid = None;
            declared.spec.acknowledged = None;
            declared.spec.approvals = Vec::new();
            declared.spec.resolution = None;
            declared.spec.declined = None;
            input.declare = Some(Box::new(declared));
        }
        (_, Some(Symptom::CrashLoopBackOff)) => {
            input.pods = Some(pods_show(PodState::CrashLoopBackOff))
        }
        (_, Some(Symptom::OOMKilled)) => input.pods = Some(pods_show(PodState::OOMKilled)),
        (_, Some(Symptom::ImagePullBackOff)) => {
            input.pods = Some(pods_show(PodState::ImagePullBackOff))
        }
        (_, Some(Symptom::NotReady)) => input.pods = Some(pods_show(PodState::NotReady)),
        (_, Some(Symptom::PodFailed)) => input.pods = Some(pods_show(PodState::Failed)),
        (_, Some(Symptom::Evicted)) => input.pods = Some(pods_show(PodState::Evicted)),
        (_, Some(Symptom::ProgressDeadlineExceeded)) => {
            input.rollout_stuck = Some(target.name.clone())
        }
        (_, Some(Symptom::ReplicasUnavailable)) => {
            input.available = Some(super::case::AvailableInput {
                workload: target.name.clone(),
                replicas: 0,
            });
            assumed.push("no replica available".into());
        }
        (_, Some(Symptom::ProbeFailing)) => {
            if let Some(probe) = named.clone() {
                input.probes.push(ProbeInput {
                    name: probe,
                    passing: false,
                    policy: None,
                });
            }
        }
        (_, Some(Symptom::AlertFiring)) => {
            // An alert the new policy's signal of the same name matches.
            let signal = named.as_deref().and_then(|name| {
                policies
                    .iter()
                    .flat_map(|p| &p.spec.alerts)
                    .find(|a| a.name == name)
            });
            match signal {
                Some(signal) => {
                    let mut labels = signal.matchers.clone();
                    labels.insert("namespace".into(), namespace.clone());
                    input.alerts.push(AlertInput {
                        labels,
                        status: "firing".into(),
                    });
                }
                None => assumed.push(format!(
                    "the new policy has no alert {}: nothing fires",
                    named.clone().unwrap_or_default()
                )),
            }
        }
        (_, None) => assumed.push("no symptom recorded".into()),
    }
    timeline.push(input);

    // How each step turned out, by its action (names may change).
    let mut steps = Vec::new();
    for step in status.map(|s| s.steps.as_slice()).unwrap_or_default() {
        let outcome = match step.result {
            StepResult::Succeeded => Outcome::Recovers,
            StepResult::Failed
                if step
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("refused")) =>
            {
                Outcome::Refused
            }
            StepResult::Failed => Outcome::Fails,
            _ => continue,
        };
        for name in step_names(policies, step.action) {
            steps.push(StepOutcome {
                step: name,
                incident: None,
                attempt: None,
                outcome,
                message: step.message.clone(),
            });
        }
    }

    // The signal stopped by itself (no step fixed it): cleared then.
    let fixed_by_a_step =
        status.is_some_and(|s| s.steps.iter().any(|x| x.result == StepResult::Succeeded));
    if let Some(cleared) = detection.and_then(|d| d.cleared_at.as_ref())
        && !fixed_by_a_step
    {
        let mut input = Input::at(offset(Some(cleared)));
        match symptom {
            Some(Symptom::ProbeFailing) => {
                if let Some(probe) = named.clone() {
                    input.probes.push(ProbeInput {
                        name: probe,
                        passing: true,
                        policy: None,
                    });
                }
            }
            Some(Symptom::AlertFiring) => {
                for alert in timeline
                    .first()
                    .map(|i| i.alerts.clone())
                    .unwrap_or_default()
                {
                    input.alerts.push(AlertInput {
                        status: "resolved".into(),
                        ..alert
                    });
                }
            }
            _ => input.pods = Some(pods_show(PodState::Running)),
        }
        timeline.push(input);
    }

    // The responders, at their times.
    let name = record.name_any();
    if let Some(ack) = &record.spec.acknowledged {
        let mut input = Input::at(offset(ack.at.as_ref()));
        input.acknowledge = Some(Responder {
            incident: name.clone(),
            value: ack.clone(),
        });
        timeline.push(input);
    }
    for approval in &record.spec.approvals {
        // When it was approved is not recorded: when its step started.
        let started = status
            .and_then(|s| s.steps.iter().find(|x| x.name == approval.step))
            .and_then(|x| x.started_at.as_ref());
        let mut input = Input::at(offset(started));
        input.approve = Some(Responder {
            incident: name.clone(),
            value: approval.clone(),
        });
        timeline.push(input);
    }
    let closed_at = status.and_then(|s| s.milestones.resolved_at.as_ref());
    if let Some(resolution) = &record.spec.resolution {
        let mut input = Input::at(offset(closed_at));
        input.resolve = Some(Responder {
            incident: name.clone(),
            value: resolution.clone(),
        });
        timeline.push(input);
    }
    if let Some(decline) = &record.spec.declined {
        let mut input = Input::at(offset(closed_at));
        input.decline = Some(Responder {
            incident: name.clone(),
            value: decline.clone(),
        });
        timeline.push(input);
    }
    let last = timeline
        .iter()
        .map(|i| i.at.as_std())
        .max()
        .unwrap_or_default();
    let case = Case {
        name: format!("replay of {name}"),
        workloads: Vec::new(),
        timeline,
        steps,
        until: Some(Duration::from_secs(
            (last + std::time::Duration::from_secs(3 * 3600)).as_secs(),
        )),
        expect: Vec::new(),
        messages: None,
        pages: None,
    };
    (case, workload, assumed)
}

/// The labels that make a policy of the namespace guard the workload
/// (the matchLabels of a target that names it or names none).
fn guarding_labels(
    policies: &[Arc<RemediationPolicy>],
    namespace: &str,
    kind: WorkloadKind,
    name: &str,
) -> BTreeMap<String, String> {
    policies
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace))
        .flat_map(|p| &p.spec.targets)
        .filter(|t| {
            t.kind == kind
                && t.names
                    .as_ref()
                    .is_none_or(|names| names.is_empty() || names.iter().any(|n| n == name))
        })
        .find_map(|t| t.selector.as_ref()?.match_labels.clone())
        .unwrap_or_default()
}

/// The names of the steps of the policies' ladders that take `action`.
fn step_names(policies: &[Arc<RemediationPolicy>], action: crate::crd::ActionKind) -> Vec<String> {
    let mut names: Vec<String> = policies
        .iter()
        .flat_map(|p| &p.spec.rules)
        .flat_map(|r| &r.actions)
        .filter(|a| a.action == action)
        .map(|a| a.name.clone().unwrap_or_else(|| a.action.to_string()))
        .collect();
    names.sort();
    names.dedup();
    names
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
