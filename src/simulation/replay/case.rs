//! The case a recorded incident makes: its target as a workload (with the
//! revisions its evidence recorded), its signal as first seen, each step
//! turning out as its ledger says, a signal that stopped by itself
//! stopping when it did, and its responders at their times. What could
//! not be read from the record is assumed, and said.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use crate::{
    crd::{
        ActionKind, Duration, Incident, IncidentStatus, RemediationPolicy, SourceKind, StepResult,
        Symptom, WorkloadKind,
    },
    incident::evidence::revision_of_line,
    remediation::actions::{ConfigAssumed, restore_config::restored_config_map},
    simulation::case::{
        AlertInput, AvailableInput, Case, Input, Outcome, PodState, PodsInput, ProbeInput,
        Responder, StepOutcome, WorkloadSpec,
    },
};

/// How long a replay runs after the record's last input.
const AFTERWARDS: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

/// The case a recorded incident makes, its target as a workload, and what
/// the replay had to assume.
pub fn case_of(
    record: &Incident,
    policies: &[Arc<RemediationPolicy>],
) -> (Case, WorkloadSpec, Vec<String>) {
    let mut assumed = Vec::new();
    let status = record.status.as_ref();
    let workload = workload_of(record, policies, &mut assumed);
    let clock = Clock::of(record);
    let signal = Signal::of(record);
    let first_seen = signal.first_seen(record, policies, &mut assumed);
    let cleared = signal.cleared(record, &first_seen, &clock);
    let mut timeline = vec![first_seen];
    timeline.extend(cleared);
    timeline.extend(responders(record, &clock));
    let last = timeline
        .iter()
        .map(|i| i.at.as_std())
        .max()
        .unwrap_or_default();
    let case = Case {
        name: format!("replay of {}", record.name_any()),
        workloads: Vec::new(),
        timeline,
        steps: outcomes(status, policies),
        until: Some(Duration::from_secs((last + AFTERWARDS).as_secs())),
        expect: Vec::new(),
        messages: None,
        pages: None,
    };
    (case, workload, assumed)
}

/// Times of the record as offsets from when its signal was first seen.
struct Clock {
    started: Option<Timestamp>,
}

impl Clock {
    fn of(record: &Incident) -> Self {
        let detection = record.status.as_ref().and_then(|s| s.detection.as_ref());
        Clock {
            started: detection
                .and_then(|d| d.first_seen_at.as_ref())
                .or(record.spec.detected_at.as_ref())
                .or(record.metadata.creation_timestamp.as_ref())
                .map(|t| t.0),
        }
    }

    /// An input at `time` (at the start when unknown).
    fn input_at(&self, time: Option<&Time>) -> Input {
        let seconds = match (self.started, time) {
            (Some(start), Some(time)) => time.0.duration_since(start).as_secs().max(0),
            _ => 0,
        };
        Input::at(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
    }
}

/// The target as the record tells it: its revisions from the rollout
/// history of its evidence, its replicas, the labels that make the new
/// policy guard it, and the ConfigMaps a recorded restore found changed.
fn workload_of(
    record: &Incident,
    policies: &[Arc<RemediationPolicy>],
    assumed: &mut Vec<String>,
) -> WorkloadSpec {
    let status = record.status.as_ref();
    let evidence = status.and_then(|s| s.evidence.as_ref());
    let target = &record.spec.target;
    let namespace = record.namespace().unwrap_or_else(|| "default".into());
    let mut revisions: Vec<_> = evidence
        .map(|e| e.rollout_history.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|line| revision_of_line(line))
        .collect();
    revisions.sort_by_key(|r| r.number);
    if revisions.is_empty() {
        assumed.push("no rollout history recorded: one revision".into());
    }
    let replicas = revisions
        .last()
        .map(|r| r.replicas)
        .filter(|r| *r > 0)
        .or_else(|| {
            let pods = evidence.map_or(0, |e| e.pods.len());
            i32::try_from(pods).ok().filter(|p| *p > 0)
        })
        .unwrap_or_else(|| {
            assumed.push("replicas unknown: 1".into());
            1
        });
    let config_maps: BTreeMap<String, ConfigAssumed> = status
        .map(|s| s.steps.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|s| s.action == ActionKind::RestoreConfig)
        .flat_map(|s| &s.changes)
        .filter_map(|line| {
            Some((
                restored_config_map(line)?.to_owned(),
                ConfigAssumed::Changed,
            ))
        })
        .collect();
    WorkloadSpec {
        kind: target.kind,
        name: target.name.clone(),
        labels: guarding_labels(policies, &namespace, target.kind, &target.name),
        namespace: Some(namespace),
        replicas,
        revisions: revisions.into_iter().map(|r| r.image).collect(),
        healthy_revision: None,
        containers: Vec::new(),
        rollout: Duration::from_secs(10),
        annotations: BTreeMap::new(),
        config_maps,
    }
}

/// The record's signal: how it was declared or detected.
struct Signal {
    manual: bool,
    symptom: Option<Symptom>,
    /// The probe's or alert's name, the last part of the dedup key.
    named: Option<String>,
    restarts: i32,
    workload: String,
    namespace: String,
}

impl Signal {
    fn of(record: &Incident) -> Self {
        let status = record.status.as_ref();
        let detection = status.and_then(|s| s.detection.as_ref());
        let evidence = status.and_then(|s| s.evidence.as_ref());
        let key = record.spec.source.dedup_key.clone().unwrap_or_default();
        Signal {
            manual: record.spec.source.kind == SourceKind::Manual,
            symptom: detection.and_then(|d| d.symptom),
            named: key.rsplit('/').next().map(str::to_owned),
            restarts: evidence
                .map(|e| e.pods.iter().map(|p| p.restarts).max().unwrap_or(0))
                .unwrap_or(0)
                .max(i32::try_from(detection.map_or(0, |d| d.occurrences)).unwrap_or(0)),
            workload: record.spec.target.name.clone(),
            namespace: record.namespace().unwrap_or_else(|| "default".into()),
        }
    }

    fn pods(&self, state: PodState) -> Option<PodsInput> {
        Some(PodsInput {
            workload: self.workload.clone(),
            state,
            restarts: self.restarts,
            count: None,
        })
    }

    fn probe(&self, passing: bool) -> Option<ProbeInput> {
        Some(ProbeInput {
            name: self.named.clone()?,
            passing,
            policy: None,
        })
    }

    /// The input at the start that makes the operator see it again.
    fn first_seen(
        &self,
        record: &Incident,
        policies: &[Arc<RemediationPolicy>],
        assumed: &mut Vec<String>,
    ) -> Input {
        let mut input = Input::at(Duration::from_secs(0));
        if self.manual {
            input.declare = Some(Box::new(declared(record)));
            return input;
        }
        match self.symptom {
            Some(Symptom::CrashLoopBackOff) => input.pods = self.pods(PodState::CrashLoopBackOff),
            Some(Symptom::OOMKilled) => input.pods = self.pods(PodState::OOMKilled),
            Some(Symptom::ImagePullBackOff) => input.pods = self.pods(PodState::ImagePullBackOff),
            Some(Symptom::NotReady) => input.pods = self.pods(PodState::NotReady),
            Some(Symptom::PodFailed) => input.pods = self.pods(PodState::Failed),
            Some(Symptom::Evicted) => input.pods = self.pods(PodState::Evicted),
            Some(Symptom::ProgressDeadlineExceeded) => {
                input.rollout_stuck = Some(self.workload.clone());
            }
            Some(Symptom::ReplicasUnavailable) => {
                input.available = Some(AvailableInput {
                    workload: self.workload.clone(),
                    replicas: 0,
                });
                assumed.push("no replica available".into());
            }
            Some(Symptom::ProbeFailing) => input.probes.extend(self.probe(false)),
            Some(Symptom::AlertFiring) => {
                // An alert the new policy's signal of the same name matches.
                let signal = self.named.as_deref().and_then(|name| {
                    policies
                        .iter()
                        .flat_map(|p| &p.spec.alerts)
                        .find(|a| a.name == name)
                });
                match signal {
                    Some(signal) => {
                        let mut labels = signal.matchers.clone();
                        labels.insert("namespace".into(), self.namespace.clone());
                        input.alerts.push(AlertInput {
                            labels,
                            status: "firing".into(),
                        });
                    }
                    None => assumed.push(format!(
                        "the new policy has no alert {}: nothing fires",
                        self.named.clone().unwrap_or_default()
                    )),
                }
            }
            None => assumed.push("no symptom recorded".into()),
        }
        input
    }

    /// The signal stopping when it did, if it stopped by itself (no step
    /// of the record fixed it).
    fn cleared(&self, record: &Incident, first_seen: &Input, clock: &Clock) -> Option<Input> {
        let status = record.status.as_ref()?;
        let fixed_by_a_step = status
            .steps
            .iter()
            .any(|s| s.result == StepResult::Succeeded);
        let cleared = status.detection.as_ref()?.cleared_at.as_ref()?;
        if fixed_by_a_step {
            return None;
        }
        let mut input = clock.input_at(Some(cleared));
        match self.symptom {
            Some(Symptom::ProbeFailing) => input.probes.extend(self.probe(true)),
            Some(Symptom::AlertFiring) => {
                input.alerts = first_seen
                    .alerts
                    .iter()
                    .map(|alert| AlertInput {
                        status: "resolved".into(),
                        ..alert.clone()
                    })
                    .collect();
            }
            _ => input.pods = self.pods(PodState::Running),
        }
        Some(input)
    }
}

/// The Incident as it was declared: its spec, without what responders
/// and the operator wrote since.
fn declared(record: &Incident) -> Incident {
    let mut declared = record.clone();
    declared.status = None;
    declared.metadata.resource_version = None;
    declared.metadata.generation = None;
    declared.metadata.uid = None;
    declared.spec.acknowledged = None;
    declared.spec.approvals = Vec::new();
    declared.spec.resolution = None;
    declared.spec.declined = None;
    declared
}

/// How each recorded step turned out, for each step of the policies that
/// takes its action (names may change).
fn outcomes(
    status: Option<&IncidentStatus>,
    policies: &[Arc<RemediationPolicy>],
) -> Vec<StepOutcome> {
    let mut outcomes = Vec::new();
    for step in status.map(|s| s.steps.as_slice()).unwrap_or_default() {
        let refused = step
            .message
            .as_deref()
            .is_some_and(|m| m.contains("refused"));
        let outcome = match step.result {
            StepResult::Succeeded => Outcome::Recovers,
            StepResult::Failed if refused => Outcome::Refused,
            StepResult::Failed => Outcome::Fails,
            _ => continue,
        };
        for name in step_names(policies, step.action) {
            outcomes.push(StepOutcome {
                step: name,
                incident: None,
                attempt: None,
                outcome,
                message: step.message.clone(),
            });
        }
    }
    outcomes
}

/// The responders' inputs at their recorded times.
fn responders(record: &Incident, clock: &Clock) -> Vec<Input> {
    let name = record.name_any();
    let status = record.status.as_ref();
    let spec = &record.spec;
    let mut inputs = Vec::new();
    if let Some(ack) = &spec.acknowledged {
        let mut input = clock.input_at(ack.at.as_ref());
        input.acknowledge = Some(Responder {
            incident: name.clone(),
            value: ack.clone(),
        });
        inputs.push(input);
    }
    for approval in &spec.approvals {
        // When it was approved is not recorded: when its step started.
        let started = status
            .and_then(|s| s.steps.iter().find(|x| x.name == approval.step))
            .and_then(|x| x.started_at.as_ref());
        let mut input = clock.input_at(started);
        input.approve = Some(Responder {
            incident: name.clone(),
            value: approval.clone(),
        });
        inputs.push(input);
    }
    let closed_at = status.and_then(|s| s.milestones.resolved_at.as_ref());
    if let Some(resolution) = &spec.resolution {
        let mut input = clock.input_at(closed_at);
        input.resolve = Some(Responder {
            incident: name.clone(),
            value: resolution.clone(),
        });
        inputs.push(input);
    }
    if let Some(decline) = &spec.declined {
        let mut input = clock.input_at(closed_at);
        input.decline = Some(Responder {
            incident: name.clone(),
            value: decline.clone(),
        });
        inputs.push(input);
    }
    inputs
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
fn step_names(policies: &[Arc<RemediationPolicy>], action: ActionKind) -> Vec<String> {
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
