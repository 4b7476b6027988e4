//! Policies that select the same workload: which one guards it, said on
//! both, so that one never silently shadows another. Pure.

use std::collections::BTreeMap;

use crate::{crd::RemediationPolicy, workload::Workload};

/// Another policy that also selects some of this policy's workloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    /// The other policy.
    pub other: String,
    /// The workloads both select, as `Kind/name`.
    pub workloads: Vec<String>,
    /// Whether this policy guards them (it comes first by priority, then name).
    pub this_guards: bool,
}

/// The overlaps of `policy` with the other policies of its namespace, over
/// the workloads it selects.
pub fn overlaps(
    policy: &RemediationPolicy,
    name: &str,
    others: &[(String, &RemediationPolicy)],
    selected: &[Workload],
) -> Vec<Overlap> {
    let mut shared: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    for (other_name, other) in others {
        if other_name == name {
            continue;
        }
        for workload in selected {
            if other
                .spec
                .targets
                .iter()
                .any(|t| workload.is_selected_by(t))
            {
                let this_guards = policy.spec.precedence(name) < other.spec.precedence(other_name);
                let entry = shared
                    .entry(other_name.clone())
                    .or_insert_with(|| (Vec::new(), this_guards));
                entry.0.push(workload.reference().to_string());
            }
        }
    }
    shared
        .into_iter()
        .map(|(other, (workloads, this_guards))| Overlap {
            other,
            workloads,
            this_guards,
        })
        .collect()
}

/// The overlaps in words, for the `Overlapping` condition.
pub fn describe(overlaps: &[Overlap], policy: &RemediationPolicy) -> String {
    overlaps
        .iter()
        .map(|o| {
            let who = if o.this_guards {
                "this policy guards them".to_owned()
            } else {
                format!("{} guards them", o.other)
            };
            format!(
                "{} also selected by policy {} ({who}; priority {} here)",
                o.workloads.join(", "),
                o.other,
                policy.spec.priority
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use super::*;

    fn policy(priority: i32, names: &[&str]) -> RemediationPolicy {
        serde_json::from_value(json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
            "metadata": {"name": "p", "namespace": "hg"},
            "spec": {"priority": priority,
                "targets": [{"kind": "Deployment", "names": names}],
                "rules": [{"name": "r", "when": {"symptom": "OOMKilled"}, "severity": "P1",
                           "type": "ServiceOutage", "actions": []}]}
        }))
        .unwrap()
    }

    fn deployment(name: &str) -> Workload {
        let d: Deployment =
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "hg"}})).unwrap();
        d.into()
    }

    #[test]
    fn overlaps_name_the_other_policy_and_who_guards() {
        let a = policy(0, &["api", "worker"]);
        let b = policy(0, &["api"]);
        let urgent = policy(10, &["worker"]);
        let others = [
            ("a".to_owned(), &a),
            ("b".to_owned(), &b),
            ("urgent".to_owned(), &urgent),
        ];
        let selected = [deployment("api"), deployment("worker")];
        let found = overlaps(&a, "a", &others, &selected);
        assert_eq!(
            found,
            [
                Overlap {
                    other: "b".into(),
                    workloads: vec!["Deployment/api".into()],
                    this_guards: true
                },
                Overlap {
                    other: "urgent".into(),
                    workloads: vec!["Deployment/worker".into()],
                    this_guards: false
                },
            ],
            "a ties with b and wins by name; urgent wins by priority"
        );
        let from_b = overlaps(&b, "b", &others, &[deployment("api")]);
        assert!(!from_b[0].this_guards, "b sees a winning: said on both");
        assert!(describe(&found, &a).contains("urgent guards them"));
        assert!(overlaps(&urgent, "urgent", &[], &selected).is_empty());
    }
}
