//! The symptom classifier: which symptoms a pod or workload shows, and which
//! policy rule they trigger. Pure and total: any object the API server hands
//! over, however partial, gives an answer and never a panic.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use crate::{
    crd::{PolicyRule, Symptom, SymptomMatch},
    pod::PodFacts,
    workload::Workload,
};

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
pub fn pod_observations(pod: &PodFacts) -> Vec<Observation> {
    let mut found = Vec::new();
    if pod.is_terminating() {
        return found;
    }
    let since = pod
        .ready
        .as_ref()
        .filter(|r| !r.ready)
        .and_then(|r| r.since)
        .or(pod.start_time);
    let restarts = pod.restarts();
    let observe = |symptom, detail: String| Observation {
        symptom,
        restarts,
        ratio: None,
        since,
        detail,
    };

    match pod.phase.as_deref() {
        Some("Succeeded") => return found,
        Some("Failed") => {
            if pod.reason.as_deref() == Some("Evicted") {
                let message = pod.message.clone().unwrap_or_else(|| "evicted".into());
                found.push(observe(Symptom::Evicted, format!("evicted: {message}")));
            } else {
                let reason = pod.reason.clone().unwrap_or_else(|| "Failed".into());
                found.push(observe(
                    Symptom::PodFailed,
                    format!("phase Failed ({reason})"),
                ));
            }
            return found;
        }
        _ => {}
    }

    for container in &pod.containers {
        let waiting = container.waiting.as_deref();
        let last_reason = container.last_terminated.as_deref();
        let current_reason = container.terminated.as_deref();
        let name = &container.name;
        let oom_killed = last_reason == Some("OOMKilled") || current_reason == Some("OOMKilled");
        if waiting == Some("CrashLoopBackOff") {
            let detail = format!(
                "container {name} in CrashLoopBackOff, {} restarts, last exit {}",
                container.restart_count,
                last_reason.unwrap_or("unknown")
            );
            push_once(&mut found, observe(Symptom::CrashLoopBackOff, detail));
        }
        if oom_killed {
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
                &container.image
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

    if let Some(readiness) = pod.ready.as_ref().filter(|r| !r.ready) {
        let reason = readiness
            .reason
            .clone()
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

/// Symptoms of the workload itself. `short_since` is when the detector first
/// saw it below its desired replicas (it keeps that in memory).
pub fn workload_observations(
    workload: &Workload,
    short_since: Option<Timestamp>,
) -> Vec<Observation> {
    let mut found = Vec::new();
    if let Workload::Deployment(deployment) = workload {
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
            Workload::Deployment(_) => "available",
            Workload::StatefulSet(_) => "ready",
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
    workload: &Workload,
    pods: impl IntoIterator<Item = &'p PodFacts>,
    short_since: Option<Timestamp>,
    now: Timestamp,
) -> Evaluation {
    let mut evaluation = Evaluation::default();
    let mut subject = |mut observations: Vec<Observation>, pod: Option<&str>| {
        // A container killed for its memory also crash-loops between kills:
        // one failure. When a rule names OOMKilled, that symptom names it.
        let oom = observations
            .iter()
            .find(|o| o.symptom == Symptom::OOMKilled)
            .cloned();
        if let Some(oom) = oom
            && rules
                .iter()
                .any(|r| rule_matches(&r.when, &oom, now) != RuleMatch::No)
        {
            observations.retain(|o| o.symptom != Symptom::CrashLoopBackOff);
        }
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
        subject(pod_observations(pod), Some(pod.name()));
    }
    evaluation
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::Pod,
    };
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn pod(status: Value) -> PodFacts {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap();
        pod.into()
    }

    fn rule(when: Value) -> PolicyRule {
        serde_json::from_value(json!({
            "name": "r", "when": when, "severity": "P1", "type": "ServiceOutage", "actions": [{"action": "restart"}]
        }))
        .unwrap()
    }

    fn symptoms(status: Value) -> Vec<Symptom> {
        pod_observations(&pod(status))
            .into_iter()
            .map(|o| o.symptom)
            .collect()
    }

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().unwrap()
    }

    #[test]
    fn pod_symptoms_table() {
        let not_ready = json!({"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"});
        let cases = [
            (json!({}), vec![]),
            (
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
                vec![],
            ),
            (json!({"phase": "Succeeded"}), vec![]),
            (json!({"phase": "Failed"}), vec![Symptom::PodFailed]),
            (
                json!({"phase": "Failed", "reason": "Evicted"}),
                vec![Symptom::Evicted],
            ),
            (
                json!({"phase": "Running", "conditions": [not_ready], "containerStatuses": [{
                    "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
                vec![
                    Symptom::CrashLoopBackOff,
                    Symptom::OOMKilled,
                    Symptom::NotReady,
                ],
            ),
            (
                json!({"phase": "Running", "conditions": [not_ready], "containerStatuses": [{
                    "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
                vec![Symptom::CrashLoopBackOff, Symptom::NotReady],
            ),
            (
                json!({"phase": "Pending", "containerStatuses": [{
                    "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ErrImagePull"}}}]}),
                vec![Symptom::ImagePullBackOff],
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(symptoms(status.clone()), expected, "{status}");
        }
    }

    #[test]
    fn a_terminating_pod_shows_nothing() {
        let mut terminating = pod(json!({"phase": "Failed"}));
        terminating.deleted = Some(now());
        assert!(pod_observations(&terminating).is_empty());
    }

    #[test]
    fn thresholds_and_sustained_periods() {
        let crashing = |restarts: i32| Observation {
            symptom: Symptom::CrashLoopBackOff,
            restarts,
            ratio: None,
            since: Some("2026-01-01T00:09:00Z".parse().unwrap()),
            detail: String::new(),
        };
        let when = rule(json!({"symptom": "CrashLoopBackOff"})).when;
        assert_eq!(rule_matches(&when, &crashing(2), now()), RuleMatch::No);
        assert_eq!(rule_matches(&when, &crashing(3), now()), RuleMatch::Now);
        let sustained =
            rule(json!({"symptom": "CrashLoopBackOff", "minRestarts": 1, "sustainedFor": "2m"}))
                .when;
        assert_eq!(
            rule_matches(&sustained, &crashing(1), now()),
            RuleMatch::At("2026-01-01T00:11:00Z".parse().unwrap())
        );
        let other = rule(json!({"symptom": "OOMKilled"})).when;
        assert_eq!(rule_matches(&other, &crashing(9), now()), RuleMatch::No);
    }

    #[test]
    fn a_pod_killed_for_its_memory_is_one_failure_named_by_the_oom_rule() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "db"},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"availableReplicas": 1}
        }))
        .unwrap();
        let oom = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "db", "image": "i", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
        let crash = rule(json!({"symptom": "CrashLoopBackOff", "minRestarts": 1}));
        let memory = rule(json!({"symptom": "OOMKilled"}));
        let workload = Workload::from(deployment);
        let symptoms = |rules: &[PolicyRule]| {
            evaluate(rules, &workload, [&oom], None, now())
                .signals
                .into_keys()
                .collect::<Vec<_>>()
        };
        // Both rules, in either order: one signal, the more specific one.
        assert_eq!(
            symptoms(&[crash.clone(), memory.clone()]),
            [Symptom::OOMKilled]
        );
        assert_eq!(symptoms(&[memory, crash.clone()]), [Symptom::OOMKilled]);
        // No rule names OOMKilled: the crash loop is still caught.
        assert_eq!(symptoms(&[crash]), [Symptom::CrashLoopBackOff]);
    }

    #[test]
    fn the_first_matching_rule_wins_per_subject() {
        let rules = [
            rule(json!({"symptom": "NotReady", "sustainedFor": "1h"})),
            rule(json!({"symptom": "CrashLoopBackOff", "minRestarts": 1})),
            rule(json!({"symptom": "NotReady", "sustainedFor": "1s"})),
        ];
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "api"},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"availableReplicas": 1}
        }))
        .unwrap();
        let crashing = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}));
        let evaluation = evaluate(
            &rules,
            &Workload::from(deployment.clone()),
            [&crashing],
            None,
            now(),
        );
        assert_eq!(
            evaluation.signals.keys().copied().collect::<Vec<_>>(),
            [Symptom::CrashLoopBackOff]
        );
        assert_eq!(evaluation.signals[&Symptom::CrashLoopBackOff].rule, 1);
        assert_eq!(evaluation.signals[&Symptom::CrashLoopBackOff].pods["p"], 2);
        // The 1h NotReady rule is still running: look again when it is due.
        assert_eq!(
            evaluation.recheck_at,
            Some("2026-01-01T01:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn workload_ratio_and_progress_deadline() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "api"},
            "spec": {"replicas": 4, "selector": {}, "template": {}},
            "status": {"availableReplicas": 1, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}
        }))
        .unwrap();
        let found = workload_observations(&Workload::from(deployment.clone()), None);
        let kinds: Vec<_> = found.iter().map(|o| o.symptom).collect();
        assert_eq!(
            kinds,
            [
                Symptom::ProgressDeadlineExceeded,
                Symptom::ReplicasUnavailable
            ]
        );
        assert_eq!(found[1].ratio, Some(0.25));
        let below_half = rule(json!({"symptom": "ReplicasUnavailable", "belowRatio": 0.5})).when;
        let below_tenth = rule(json!({"symptom": "ReplicasUnavailable", "belowRatio": 0.1})).when;
        assert_eq!(rule_matches(&below_half, &found[1], now()), RuleMatch::Now);
        assert_eq!(rule_matches(&below_tenth, &found[1], now()), RuleMatch::No);
        let scaled_to_zero: StatefulSet =
            serde_json::from_value(json!({"metadata": {"name": "db"}, "spec": {"replicas": 0, "selector": {}, "template": {}, "serviceName": "db"}}))
                .unwrap();
        assert!(workload_observations(&Workload::from(scaled_to_zero.clone()), None).is_empty());
    }

    /// Arbitrary JSON shaped like the objects the classifier reads: the right
    /// keys in odd combinations, odd values, missing parts.
    fn json_like() -> impl Strategy<Value = Value> {
        let keys = prop::sample::select(vec![
            "status",
            "phase",
            "reason",
            "message",
            "conditions",
            "type",
            "lastTransitionTime",
            "lastUpdateTime",
            "containerStatuses",
            "initContainerStatuses",
            "name",
            "image",
            "imageID",
            "ready",
            "restartCount",
            "state",
            "lastState",
            "waiting",
            "terminated",
            "running",
            "exitCode",
            "startTime",
            "replicas",
            "availableReplicas",
            "readyReplicas",
            "spec",
            "selector",
            "metadata",
            "deletionTimestamp",
            "x",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            prop::sample::select(vec![
                "CrashLoopBackOff",
                "OOMKilled",
                "ImagePullBackOff",
                "ErrImagePull",
                "Failed",
                "Running",
                "Evicted",
                "Ready",
                "True",
                "False",
                "Progressing",
                "ProgressDeadlineExceeded",
                "",
                "2026-01-01T00:00:00Z",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|map| {
                    Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    fn word() -> impl Strategy<Value = Value> {
        prop_oneof![
            prop::sample::select(vec![
                "CrashLoopBackOff",
                "OOMKilled",
                "ImagePullBackOff",
                "ErrImagePull",
                "Error",
                "Failed",
                "Running",
                "Pending",
                "Succeeded",
                "Evicted",
                "Ready",
                "ContainersReady",
                "Progressing",
                "Available",
                "True",
                "False",
                "Unknown",
                "ProgressDeadlineExceeded",
                "",
                "2026-01-01T00:00:00Z",
            ])
            .prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            Just(Value::Null),
        ]
    }

    /// An object with each of `fields` present or absent at random.
    fn object_of(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
        let parts: Vec<_> = fields
            .into_iter()
            .map(|(key, value)| {
                prop::option::of(value).prop_map(move |v| v.map(|v| (key.to_owned(), v)))
            })
            .collect();
        parts
            .prop_map(|entries| Value::Object(entries.into_iter().flatten().collect()))
            .boxed()
    }

    fn container_state() -> BoxedStrategy<Value> {
        let reason = || {
            object_of(vec![
                ("reason", word().boxed()),
                ("exitCode", any::<i32>().prop_map(Value::from).boxed()),
            ])
        };
        object_of(vec![
            ("waiting", reason()),
            ("terminated", reason()),
            ("running", Just(json!({})).boxed()),
        ])
    }

    /// Pods with the fields the classifier reads, each maybe missing or odd.
    fn pod_like() -> impl Strategy<Value = Value> {
        let condition = object_of(vec![
            ("type", word().boxed()),
            ("status", word().boxed()),
            ("reason", word().boxed()),
            (
                "lastTransitionTime",
                prop::sample::select(vec!["2026-01-01T00:00:00Z", "1970-01-01T00:00:00Z"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
        ]);
        let container = object_of(vec![
            ("name", Just(Value::from("app")).boxed()),
            ("image", word().boxed()),
            ("imageID", Just(Value::from("")).boxed()),
            ("ready", any::<bool>().prop_map(Value::from).boxed()),
            ("restartCount", any::<i32>().prop_map(Value::from).boxed()),
            ("state", container_state()),
            ("lastState", container_state()),
        ]);
        let status = object_of(vec![
            ("phase", word().boxed()),
            ("reason", word().boxed()),
            ("message", word().boxed()),
            (
                "conditions",
                prop::collection::vec(condition, 0..4)
                    .prop_map(Value::Array)
                    .boxed(),
            ),
            (
                "containerStatuses",
                prop::collection::vec(container.clone(), 0..3)
                    .prop_map(Value::Array)
                    .boxed(),
            ),
            (
                "initContainerStatuses",
                prop::collection::vec(container, 0..2)
                    .prop_map(Value::Array)
                    .boxed(),
            ),
        ]);
        prop_oneof![
            4 => status.prop_map(|status| json!({"metadata": {"name": "p"}, "status": status})),
            1 => json_like(),
        ]
    }

    /// Workloads with the fields the classifier reads, each maybe missing or odd.
    fn workload_like() -> impl Strategy<Value = Value> {
        let number = || prop_oneof![any::<i32>().prop_map(Value::from), Just(Value::Null)].boxed();
        let condition = object_of(vec![
            ("type", word().boxed()),
            ("status", word().boxed()),
            ("reason", word().boxed()),
            ("message", word().boxed()),
        ]);
        let status = object_of(vec![
            ("availableReplicas", number()),
            ("readyReplicas", number()),
            ("replicas", number()),
            (
                "conditions",
                prop::collection::vec(condition, 0..3)
                    .prop_map(Value::Array)
                    .boxed(),
            ),
        ]);
        let spec = object_of(vec![
            ("replicas", number()),
            ("selector", Just(json!({})).boxed()),
            ("template", Just(json!({})).boxed()),
            ("serviceName", Just(Value::from("s")).boxed()),
        ]);
        prop_oneof![
            4 => (spec, status).prop_map(|(spec, status)| json!({"metadata": {"name": "w"}, "spec": spec, "status": status})),
            1 => json_like(),
        ]
    }

    #[test]
    fn the_generator_reaches_the_classifier() {
        // The property below is only worth something if many generated
        // values are objects serde accepts, with a status to classify.
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (pods, workloads) = (pod_like(), workload_like());
        let (mut classified_pods, mut classified_workloads) = (0, 0);
        for _ in 0..1000 {
            let pod = pods.new_tree(&mut runner).unwrap().current();
            if serde_json::from_value::<Pod>(pod).is_ok_and(|p| p.status.is_some()) {
                classified_pods += 1;
            }
            let workload = workloads.new_tree(&mut runner).unwrap().current();
            if serde_json::from_value::<Deployment>(workload).is_ok_and(|d| d.status.is_some()) {
                classified_workloads += 1;
            }
        }
        assert!(
            classified_pods >= 200,
            "only {classified_pods} of 1000 generated pods had a status"
        );
        assert!(
            classified_workloads >= 200,
            "only {classified_workloads} of 1000 workloads had a status"
        );
    }

    proptest! {
        #[test]
        fn the_classifier_never_panics(pod_json in pod_like(), workload_json in workload_like(), ratio in 0.0f64..=1.0) {
            let rules = [
                rule(json!({"symptom": "CrashLoopBackOff", "minRestarts": 1, "sustainedFor": "1s"})),
                rule(json!({"symptom": "ReplicasUnavailable", "belowRatio": ratio})),
                rule(json!({"symptom": "NotReady", "sustainedFor": "1m"})),
                rule(json!({"symptom": "ProgressDeadlineExceeded"})),
            ];
            // Whatever deserializes is classified; what does not is rejected by serde, not by a panic.
            let pods: Vec<PodFacts> = serde_json::from_value::<Pod>(pod_json.clone()).into_iter().map(PodFacts::from).collect();
            for pod in &pods {
                let _ = pod_observations(pod);
            }
            if let Ok(deployment) = serde_json::from_value::<Deployment>(workload_json.clone()) {
                let _ = evaluate(&rules, &Workload::from(deployment.clone()), pods.iter(), Some(now()), now());
            }
            if let Ok(statefulset) = serde_json::from_value::<StatefulSet>(workload_json) {
                let _ = evaluate(&rules, &Workload::from(statefulset.clone()), pods.iter(), None, Timestamp::MAX);
            }
        }
    }
}
