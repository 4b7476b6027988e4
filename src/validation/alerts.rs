//! Checks on a policy's alerts: unique names, label names Prometheus
//! accepts, rules that name alerts that exist, and a target the policy
//! guards.

use std::collections::HashSet;

use super::{
    Problems,
    signals::{guarded_target, rules_name_existing},
};
use crate::crd::{RemediationPolicySpec, Symptom};

/// A Prometheus label name.
fn label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Adds the problems of `spec`'s alerts.
pub fn alerts(spec: &RemediationPolicySpec, problems: &mut Problems) {
    let mut names = HashSet::new();
    for (a, signal) in spec.alerts.iter().enumerate() {
        let here = format!("spec.alerts[{a}]");
        if !names.insert(signal.name.as_str()) {
            problems.add(
                format!("{here}.name"),
                format!("alert name {:?} is used twice", signal.name),
            );
        }
        // An older schema let `match: {}` in: it would take every alert.
        if signal.matchers.is_empty() {
            problems.add(
                format!("{here}.match"),
                "must name at least one label: an empty match takes every alert",
            );
        }
        for label in signal.matchers.keys() {
            if !label_name(label) {
                problems.add(
                    format!("{here}.match"),
                    format!("{label:?} is not a Prometheus label name"),
                );
            }
        }
        guarded_target(spec, format!("{here}.target"), &signal.target, problems);
    }
    rules_name_existing(
        spec,
        Symptom::AlertFiring,
        ("alert", "alerts"),
        &names,
        |when| when.alert.as_ref(),
        problems,
    );
}

#[cfg(test)]
mod tests {
    use crate::crd::RemediationPolicySpec;

    #[test]
    fn alerts_must_be_named_once_labelled_properly_and_guarded() {
        let spec: RemediationPolicySpec = serde_yaml::from_str(
            r#"
targets: [{kind: Deployment, names: [healing-guard]}]
alerts:
- {name: down, target: {kind: Deployment, name: healing-guard}, match: {alertname: HealingGuardDown}}
- {name: down, target: {kind: Deployment, name: api}, match: {"bad-label": x}}
- {name: any, target: {kind: Deployment, name: healing-guard}, match: {}}
rules:
- {name: r, when: {symptom: AlertFiring, alert: missing}, severity: P0, type: ServiceOutage, actions: [{action: restart}]}
"#,
        )
        .unwrap();
        let found: Vec<String> = crate::validation::policy(&spec)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        for expected in [
            "spec.alerts[1].name: alert name \"down\" is used twice",
            "spec.alerts[1].match: \"bad-label\" is not a Prometheus label name",
            "spec.alerts[1].target: Deployment/api is not among the policy's targets: its incidents could not act on it",
            "spec.rules[0].when.alert: no alert named \"missing\" in spec.alerts",
            "spec.alerts[2].match: must name at least one label: an empty match takes every alert",
        ] {
            assert!(
                found.iter().any(|p| p == expected),
                "{expected:?} not in {found:#?}"
            );
        }
    }
}
