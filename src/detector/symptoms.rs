//! The symptom classifier: which symptoms a pod or workload shows, and which
//! policy rule they trigger. Pure and total: any object the API server hands
//! over, however partial, gives an answer and never a panic.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{ContainerStatus, Pod},
    },
    jiff::Timestamp,
};

use crate::crd::{PolicyRule, Symptom, SymptomMatch};

/// Restarts at which CrashLoopBackOff counts when a rule does not say.
pub const DEFAULT_MIN_RESTARTS: i32 = 3;

/// One symptom seen on one subject (a pod or the workload itself).
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub symptom: Symptom,
    /// Container restarts (pods) so a rising count reads as a repeat.
    pub restarts: i32,
    /// Available/desired replicas (workload-level).
    pub ratio: Option<f64>,
    /// Since when the subject has been unhealthy, where known.
    pub since: Option<Timestamp>,
    /// What was seen, in words.
    pub detail: String,
}

/// Every symptom a pod shows now. Terminating and succeeded pods show none.
pub fn pod_observations(pod: &Pod) -> Vec<Observation> {
    let mut found = Vec::new();
    if pod.metadata.deletion_timestamp.is_some() {
        return found;
    }
    let Some(status) = &pod.status else {
        return found;
    };
    let since = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status != "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .or_else(|| status.start_time.as_ref().map(|t| t.0));
    let containers: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    let restarts = containers
        .iter()
        .map(|c| c.restart_count.max(0))
        .fold(0i32, i32::saturating_add);
    let observe = |symptom, detail: String| Observation {
        symptom,
        restarts,
        ratio: None,
        since,
        detail,
    };

    match status.phase.as_deref() {
        Some("Succeeded") => return found,
        Some("Failed") => {
            if status.reason.as_deref() == Some("Evicted") {
                let message = status.message.clone().unwrap_or_else(|| "evicted".into());
                found.push(observe(Symptom::Evicted, format!("evicted: {message}")));
            } else {
                let reason = status.reason.clone().unwrap_or_else(|| "Failed".into());
                found.push(observe(
                    Symptom::PodFailed,
                    format!("phase Failed ({reason})"),
                ));
            }
            return found;
        }
        _ => {}
    }

    for container in &containers {
        let waiting = container
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref());
        let last_reason = container
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.reason.as_deref());
        let current_reason = container
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.reason.as_deref());
        let name = &container.name;
        if waiting == Some("CrashLoopBackOff") {
            let detail = format!(
                "container {name} in CrashLoopBackOff, {} restarts, last exit {}",
                container.restart_count,
                last_reason.unwrap_or("unknown")
            );
            push_once(&mut found, observe(Symptom::CrashLoopBackOff, detail));
        }
        if last_reason == Some("OOMKilled") || current_reason == Some("OOMKilled") {
            let detail = format!(
                "container {name} was OOMKilled, {} restarts",
                container.restart_count
            );
            push_once(&mut found, observe(Symptom::OOMKilled, detail));
        }
        if let Some(reason @ ("ImagePullBackOff" | "ErrImagePull")) = waiting {
            let image = if container.image.is_empty() {
                "its image"
            } else {
                container.image.as_str()
            };
            push_once(
                &mut found,
                observe(
                    Symptom::ImagePullBackOff,
                    format!("container {name}: {reason} pulling {image}"),
                ),
            );
        }
    }

    let not_ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status != "True");
    if not_ready {
        let reason = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .and_then(|c| c.reason.clone())
            .unwrap_or_else(|| "NotReady".into());
        found.push(observe(Symptom::NotReady, format!("not Ready ({reason})")));
    }
    found
}

fn push_once(found: &mut Vec<Observation>, observation: Observation) {
    if !found.iter().any(|o| o.symptom == observation.symptom) {
        found.push(observation);
    }
}

/// A guarded workload, as the classifier sees it.
#[derive(Clone, Copy, Debug)]
pub enum WorkloadView<'a> {
    Deployment(&'a Deployment),
    StatefulSet(&'a StatefulSet),
}

impl WorkloadView<'_> {
    /// Desired and available (Deployment) or ready (StatefulSet) replicas.
    pub fn replicas(&self) -> (i32, i32) {
        match self {
            WorkloadView::Deployment(d) => (
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                d.status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0),
            ),
            WorkloadView::StatefulSet(s) => (
                s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                s.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
            ),
        }
    }
}

/// Symptoms of the workload itself. `short_since` is when the detector first
/// saw it below its desired replicas (it keeps that in memory).
pub fn workload_observations(
    workload: WorkloadView<'_>,
    short_since: Option<Timestamp>,
) -> Vec<Observation> {
    let mut found = Vec::new();
    if let WorkloadView::Deployment(deployment) = workload {
        let stuck = deployment
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            });
        if let Some(condition) = stuck {
            found.push(Observation {
                symptom: Symptom::ProgressDeadlineExceeded,
                restarts: 0,
                ratio: None,
                since: condition
                    .last_update_time
                    .as_ref()
                    .or(condition.last_transition_time.as_ref())
                    .map(|t| t.0),
                detail: condition
                    .message
                    .clone()
                    .unwrap_or_else(|| "rollout exceeded its progress deadline".into()),
            });
        }
    }
    let (desired, available) = workload.replicas();
    if desired > 0 && available < desired {
        let ratio = f64::from(available.max(0)) / f64::from(desired);
        let word = match workload {
            WorkloadView::Deployment(_) => "available",
            WorkloadView::StatefulSet(_) => "ready",
        };
        found.push(Observation {
            symptom: Symptom::ReplicasUnavailable,
            restarts: 0,
            ratio: Some(ratio),
            since: short_since,
            detail: format!("{available}/{desired} replicas {word}"),
        });
    }
    found
}

/// Whether a rule's `when` matches an observation now, later, or not at all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RuleMatch {
    Now,
    /// It will match at this time if nothing changes (sustainedFor not yet reached).
    At(Timestamp),
    No,
}

pub fn rule_matches(when: &SymptomMatch, observation: &Observation, now: Timestamp) -> RuleMatch {
    if when.symptom != observation.symptom {
        return RuleMatch::No;
    }
    let meets_threshold = match when.symptom {
        Symptom::CrashLoopBackOff => {
            observation.restarts >= when.min_restarts.unwrap_or(DEFAULT_MIN_RESTARTS)
        }
        Symptom::ReplicasUnavailable => match (observation.ratio, when.below_ratio) {
            (Some(ratio), Some(below)) => ratio < below,
            _ => false,
        },
        _ => true,
    };
    if !meets_threshold {
        return RuleMatch::No;
    }
    let Some(sustained) = when.sustained_for else {
        return RuleMatch::Now;
    };
    // Without a start time, the sustained period starts now.
    let since = observation.since.unwrap_or(now);
    let due = since
        .checked_add(sustained.as_std())
        .unwrap_or(Timestamp::MAX);
    if due <= now {
        RuleMatch::Now
    } else {
        RuleMatch::At(due)
    }
}

/// One active signal of a workload: a symptom and the rule it triggered.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    /// Index of the first matching rule among the subjects with this symptom.
    pub rule: usize,
    /// Affected pods and their restart counts (empty for workload-level signals).
    pub pods: BTreeMap<String, i32>,
    /// The workload-level observation's detail, or the worst pod's.
    pub detail: String,
}

/// A workload's signals at `now`, and when to look again if a sustained
/// period is still running.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluation {
    pub signals: BTreeMap<Symptom, Signal>,
    pub recheck_at: Option<Timestamp>,
}

/// Classifies a workload and its pods by the policy's rules: each subject
/// (each pod, and the workload itself) triggers its first matching rule.
pub fn evaluate<'p>(
    rules: &[PolicyRule],
    workload: WorkloadView<'_>,
    pods: impl IntoIterator<Item = &'p Pod>,
    short_since: Option<Timestamp>,
    now: Timestamp,
) -> Evaluation {
    let mut evaluation = Evaluation::default();
    let mut subject = |observations: Vec<Observation>, pod: Option<&str>| {
        for (index, rule) in rules.iter().enumerate() {
            let mut matched = None;
            for observation in &observations {
                match rule_matches(&rule.when, observation, now) {
                    RuleMatch::Now => {
                        matched = Some(observation);
                        break;
                    }
                    RuleMatch::At(due) => {
                        evaluation.recheck_at =
                            Some(evaluation.recheck_at.map_or(due, |r| r.min(due)));
                    }
                    RuleMatch::No => {}
                }
            }
            if let Some(observation) = matched {
                let signal = evaluation
                    .signals
                    .entry(observation.symptom)
                    .or_insert_with(|| Signal {
                        rule: index,
                        pods: BTreeMap::new(),
                        detail: observation.detail.clone(),
                    });
                signal.rule = signal.rule.min(index);
                if let Some(pod) = pod {
                    let worst = signal.pods.values().copied().max().unwrap_or(-1);
                    if observation.restarts > worst {
                        signal.detail = format!("{pod}: {}", observation.detail);
                    }
                    signal.pods.insert(pod.to_owned(), observation.restarts);
                }
                return;
            }
        }
    };
    subject(workload_observations(workload, short_since), None);
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
        subject(pod_observations(pod), Some(name));
    }
    evaluation
}
