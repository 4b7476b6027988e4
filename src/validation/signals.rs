//! What probes and alerts check alike: a target the policy guards, a rule
//! that names one that exists, an http(s) URL.

use std::collections::HashSet;

use super::Problems;
use crate::crd::{RemediationPolicySpec, Symptom, WorkloadRef};

/// `target` must be among the policy's targets, or its incidents could not act.
pub fn guarded_target(
    spec: &RemediationPolicySpec,
    field: String,
    target: &WorkloadRef,
    problems: &mut Problems,
) {
    let guarded = spec.targets.iter().any(|t| {
        t.kind == target.kind
            && t.names
                .as_ref()
                .is_none_or(|names| names.contains(&target.name))
    });
    if !guarded {
        problems.add(
            field,
            format!(
                "{target} is not among the policy's targets: its incidents could not act on it"
            ),
        );
    }
}

/// Every rule with `symptom` names (in `when.<field>`, read by `named`) one
/// of `names`, listed in `spec.<list>`.
pub fn rules_name_existing(
    spec: &RemediationPolicySpec,
    symptom: Symptom,
    (field, list): (&str, &str),
    names: &HashSet<&str>,
    named: impl Fn(&crate::crd::SymptomMatch) -> Option<&String>,
    problems: &mut Problems,
) {
    for (r, rule) in spec.rules.iter().enumerate() {
        if rule.when.symptom != symptom {
            continue;
        }
        match named(&rule.when) {
            None => problems.add(
                format!("spec.rules[{r}].when.{field}"),
                format!("the {symptom} symptom needs {field}"),
            ),
            Some(name) if !names.contains(name.as_str()) => problems.add(
                format!("spec.rules[{r}].when.{field}"),
                format!("no {field} named {name:?} in spec.{list}"),
            ),
            Some(_) => {}
        }
    }
}

/// `url` must be an http or https URL.
pub fn http_url(field: String, url: &str, problems: &mut Problems) {
    match reqwest::Url::parse(url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        Ok(url) => problems.add(
            field,
            format!("scheme {:?}: only http and https", url.scheme()),
        ),
        Err(error) => problems.add(field, format!("not a URL: {error}")),
    }
}
