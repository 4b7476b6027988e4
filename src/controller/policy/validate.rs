//! Checks on a RemediationPolicy that its schema cannot express. Pure: no
//! API calls, so every case is a table-driven unit test.

use std::collections::HashSet;

use kube::core::Selector;

use crate::crd::{RemediationPolicySpec, Symptom, WorkloadKind};

/// One thing wrong with a policy, with the field it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in the spec, in field order.
pub fn validate(spec: &RemediationPolicySpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |field: String, message: String| problems.push(Problem { field, message });

    for (t, target) in spec.targets.iter().enumerate() {
        if let Some(selector) = &target.selector
            && let Err(error) = Selector::try_from(selector.clone())
        {
            problem(
                format!("spec.targets[{t}].selector"),
                format!("invalid label selector: {error}"),
            );
        }
    }

    let mut rule_names = HashSet::new();
    for (r, rule) in spec.rules.iter().enumerate() {
        if !rule_names.insert(rule.name.as_str()) {
            problem(
                format!("spec.rules[{r}].name"),
                format!("rule name {:?} is used twice", rule.name),
            );
        }
        if rule.when.symptom == Symptom::ProgressDeadlineExceeded {
            for (t, target) in spec.targets.iter().enumerate() {
                if target.kind != WorkloadKind::Deployment {
                    problem(
                        format!("spec.rules[{r}].when.symptom"),
                        format!(
                            "ProgressDeadlineExceeded only happens to Deployments, but spec.targets[{t}] is a {}",
                            target.kind
                        ),
                    );
                }
            }
        }
        let mut step_names = HashSet::new();
        for (a, action) in rule.actions.iter().enumerate() {
            let field = format!("spec.rules[{r}].actions[{a}]");
            if !step_names.insert(action.step_name()) {
                problem(
                    format!("{field}.name"),
                    format!(
                        "step name {:?} is used twice in this ladder; give each step a name",
                        action.step_name()
                    ),
                );
            }
            for (t, target) in spec.targets.iter().enumerate() {
                if !action.action.applies_to(target.kind) {
                    problem(
                        format!("{field}.action"),
                        format!(
                            "{} cannot apply to a {} (spec.targets[{t}])",
                            action.action, target.kind
                        ),
                    );
                }
            }
            if let Some(scale) = &action.scale
                && let Some(max) = scale.max_replicas
                && max < spec.safety.min_ready_replicas
            {
                problem(
                    format!("{field}.scale.maxReplicas"),
                    format!(
                        "maxReplicas {max} is below safety.minReadyReplicas {}",
                        spec.safety.min_ready_replicas
                    ),
                );
            }
        }
        if rule.verify.timeout.as_std().is_zero() {
            problem(
                format!("spec.rules[{r}].verify.timeout"),
                "must be longer than 0s".into(),
            );
        }
    }
    if spec.safety.window.as_std().is_zero() {
        problem("spec.safety.window".into(), "must be longer than 0s".into());
    }
    problems
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
        assert_eq!(validate(&spec(VALID)), vec![]);
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
                "spec.targets[0].selector: invalid label selector",
            ),
        ];
        for (name, from, to, expected) in cases {
            let problems = validate(&spec(&VALID.replace(from, to)));
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
        let problems = validate(&spec(&yaml));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "spec.rules[0].when.symptom");
    }
}
