//! Checks on a RemediationPolicy's spec that its schema cannot express,
//! or that an older schema let in.

use std::collections::HashSet;

use super::{Problem, Problems, labels::label_selector, ladder::ladder};
use crate::crd::{
    RemediationPolicySpec, Symptom, WorkloadKind,
    bounds::{
        COOLDOWN, HOLD_DOWN, MAX_COUNT, MAX_REPLICAS, MAX_RESTARTS, REOPEN_WINDOW, RETENTION,
        STEP_TIMEOUT, SUSTAINED_FOR, WINDOW,
    },
};

/// Every problem found in the spec, in field order.
pub fn policy(spec: &RemediationPolicySpec) -> Vec<Problem> {
    let mut problems = Problems::default();

    for (t, target) in spec.targets.iter().enumerate() {
        if let Some(selector) = &target.selector {
            label_selector(
                &format!("spec.targets[{t}].selector"),
                selector,
                &mut problems,
            );
        }
    }
    let kinds: Vec<(String, WorkloadKind)> = spec
        .targets
        .iter()
        .enumerate()
        .map(|(t, target)| (format!("spec.targets[{t}]"), target.kind))
        .collect();

    let mut rule_names = HashSet::new();
    for (r, rule) in spec.rules.iter().enumerate() {
        let here = format!("spec.rules[{r}]");
        if !rule_names.insert(rule.name.as_str()) {
            problems.add(
                format!("{here}.name"),
                format!("rule name {:?} is used twice", rule.name),
            );
        }
        if rule.when.symptom == Symptom::ProgressDeadlineExceeded {
            for (kind_field, kind) in &kinds {
                if *kind != WorkloadKind::Deployment {
                    problems.add(
                        format!("{here}.when.symptom"),
                        format!(
                            "ProgressDeadlineExceeded only happens to Deployments, but {kind_field} is a {kind}"
                        ),
                    );
                }
            }
        }
        if let Some(restarts) = rule.when.min_restarts {
            problems.range(
                format!("{here}.when.minRestarts"),
                restarts,
                1,
                MAX_RESTARTS,
            );
        }
        if let Some(sustained) = &rule.when.sustained_for {
            problems.duration(
                format!("{here}.when.sustainedFor"),
                sustained,
                SUSTAINED_FOR,
            );
        }
        ladder(
            &format!("{here}.actions"),
            &rule.actions,
            &kinds,
            &mut problems,
        );
        for (a, action) in rule.actions.iter().enumerate() {
            if let Some(scale) = &action.scale
                && let Some(max) = scale.max_replicas
                && max < spec.safety.min_ready_replicas
            {
                problems.add(
                    format!("{here}.actions[{a}].scale.maxReplicas"),
                    format!(
                        "maxReplicas {max} is below safety.minReadyReplicas {}",
                        spec.safety.min_ready_replicas
                    ),
                );
            }
        }
        problems.duration(
            format!("{here}.verify.timeout"),
            &rule.verify.timeout,
            STEP_TIMEOUT,
        );
        problems.duration(
            format!("{here}.verify.holdDown"),
            &rule.verify.hold_down,
            HOLD_DOWN,
        );
    }

    let safety = &spec.safety;
    problems.duration("spec.safety.cooldown", &safety.cooldown, COOLDOWN);
    problems.duration("spec.safety.window", &safety.window, WINDOW);
    problems.range("spec.safety.maxActions", safety.max_actions, 1, MAX_COUNT);
    problems.range(
        "spec.safety.minReadyReplicas",
        safety.min_ready_replicas,
        0,
        MAX_REPLICAS,
    );
    problems.range(
        "spec.safety.circuitBreakerThreshold",
        safety.circuit_breaker_threshold,
        1,
        MAX_COUNT,
    );
    let detection = &spec.detection;
    problems.duration("spec.detection.holdDown", &detection.hold_down, HOLD_DOWN);
    problems.duration(
        "spec.detection.reopenWindow",
        &detection.reopen_window,
        REOPEN_WINDOW,
    );
    problems.duration(
        "spec.detection.maxClosedAge",
        &detection.max_closed_age,
        RETENTION,
    );
    problems.range(
        "spec.detection.flapThreshold",
        detection.flap_threshold,
        1,
        MAX_COUNT,
    );
    super::probes::probes(spec, &mut problems);
    super::alerts::alerts(spec, &mut problems);
    problems.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RemediationPolicy;

    fn spec(yaml: &str) -> RemediationPolicySpec {
        let policy: RemediationPolicy = serde_yaml::from_str(yaml).unwrap();
        policy.spec
    }

    const VALID: &str = r#"
apiVersion: healing-guard.io/v1alpha1
kind: RemediationPolicy
metadata: { name: api }
spec:
  targets:
  - kind: Deployment
    selector: { matchLabels: { app: healing-guard } }
  rules:
  - name: crashloop
    when: { symptom: CrashLoopBackOff, minRestarts: 3 }
    severity: P0
    type: ServiceOutage
    actions:
    - action: rollback
    - action: restart
"#;

    #[test]
    fn a_valid_policy_has_no_problems() {
        assert_eq!(policy(&spec(VALID)), vec![]);
    }

    #[test]
    fn table_of_invalid_policies() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "rollback on a StatefulSet",
                "kind: Deployment",
                "kind: StatefulSet",
                "spec.rules[0].actions[0].action: rollback cannot apply to a StatefulSet (spec.targets[0])",
            ),
            (
                "two steps with one name",
                "- action: restart",
                "- action: rollback",
                "spec.rules[0].actions[1].name: step name \"rollback\" is used twice in this ladder; give each step a name",
            ),
            (
                "bad selector operator",
                "selector: { matchLabels: { app: healing-guard } }",
                "selector: { matchExpressions: [ { key: app, operator: Near, values: [x] } ] }",
                "spec.targets[0].selector.matchExpressions[0].operator: \"Near\" is not one of",
            ),
        ];
        for (name, from, to, expected) in cases {
            let problems = policy(&spec(&VALID.replace(from, to)));
            assert_eq!(problems.len(), 1, "{name}: {problems:?}");
            assert!(
                problems[0].to_string().starts_with(expected),
                "{name}: {}",
                problems[0]
            );
        }
    }

    #[test]
    fn progress_deadline_needs_deployments() {
        let yaml = VALID
            .replace("kind: Deployment", "kind: StatefulSet")
            .replace(
                "symptom: CrashLoopBackOff, minRestarts: 3",
                "symptom: ProgressDeadlineExceeded",
            )
            .replace("- action: rollback\n", "");
        let problems = policy(&spec(&yaml));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "spec.rules[0].when.symptom");
    }
}
