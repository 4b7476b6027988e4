//! What a policy's remediator must be granted, and what it lacks: asked of
//! the API server as that account (a SelfSubjectAccessReview each), so a
//! missing grant is in the policy's `Ready` condition before an incident
//! needs it.

use std::collections::BTreeSet;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::{Api, Client, api::PostParams};

use crate::{
    authority::{Grant, role_hint},
    crd::RemediationPolicySpec,
    remediation::actions,
};

/// Everything the policy's ladders and probes need of the remediator, on
/// every kind of workload it targets; and the known-good snapshots taken of
/// what it guards.
pub fn needed(spec: &RemediationPolicySpec) -> BTreeSet<Grant> {
    let kinds: BTreeSet<_> = spec.targets.iter().map(|t| t.kind).collect();
    let mut needed: BTreeSet<Grant> = spec
        .rules
        .iter()
        .flat_map(|rule| &rule.actions)
        .flat_map(|action| {
            let acting = actions::resolve(action.action);
            kinds
                .iter()
                .filter(|kind| acting.applies_to(**kind))
                .flat_map(|kind| acting.grants(action, *kind))
                .collect::<Vec<_>>()
        })
        .collect();
    let probe_secrets = spec.probes.iter().any(|probe| {
        probe.redis.is_some()
            || probe.postgres.is_some()
            || probe
                .http
                .as_ref()
                .is_some_and(|h| h.headers_from.is_some())
    });
    if probe_secrets {
        needed.insert(Grant::new("", "secrets", "get"));
    }
    needed.insert(Grant::new("", "configmaps", "create"));
    needed.insert(Grant::new("", "configmaps", "patch"));
    needed
}

/// The grants of `needed` that `remediator` (a client acting as it) lacks
/// in `namespace`.
pub async fn missing(
    remediator: &Client,
    namespace: &str,
    needed: &BTreeSet<Grant>,
) -> Result<Vec<Grant>, kube::Error> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(remediator.clone());
    let asked = needed.iter().map(|grant| {
        let reviews = reviews.clone();
        async move {
            allowed(&reviews, namespace, grant)
                .await
                .map(|yes| (!yes).then(|| grant.clone()))
        }
    });
    let answers = futures::future::try_join_all(asked).await?;
    Ok(answers.into_iter().flatten().collect())
}

async fn allowed(
    reviews: &Api<SelfSubjectAccessReview>,
    namespace: &str,
    grant: &Grant,
) -> Result<bool, kube::Error> {
    let (resource, subresource) = match grant.resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub.to_owned())),
        None => (grant.resource.as_str(), None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                group: Some(grant.group.clone()),
                resource: Some(resource.to_owned()),
                subresource,
                verb: Some(grant.verb.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = reviews.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The missing grants in words, each with the Role that would grant it.
pub fn describe(account: &str, missing: &[Grant]) -> String {
    let each: Vec<String> = missing
        .iter()
        .map(|grant| format!("{grant} ({})", role_hint(&grant.group, &grant.resource)))
        .collect();
    format!(
        "ServiceAccount {account} may not {}: the steps that need it fail until it is granted",
        each.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rules: serde_json::Value, probes: serde_json::Value) -> RemediationPolicySpec {
        serde_json::from_value(serde_json::json!({
            "targets": [{"kind": "Deployment", "names": ["api"]}],
            "rules": rules,
            "probes": probes,
        }))
        .unwrap()
    }

    #[test]
    fn a_ladder_needs_what_each_of_its_steps_changes() {
        let spec = spec(
            serde_json::json!([{
                "name": "crash", "when": {"symptom": "CrashLoopBackOff"}, "severity": "P1",
                "type": "ServiceOutage",
                "actions": [
                    {"action": "rollback"},
                    {"action": "restart", "restart": {"method": "DeletePods"}},
                    {"action": "runJob", "runJob": {"job": {"template": {"spec": {"containers": [{"name": "t", "image": "busybox"}], "restartPolicy": "Never"}}}}},
                ],
            }]),
            serde_json::json!([]),
        );
        let needed: Vec<String> = needed(&spec).iter().map(Grant::to_string).collect();
        assert_eq!(
            needed,
            [
                "create configmaps",
                "get configmaps",
                "patch configmaps",
                "create pods/eviction",
                "patch deployments.apps",
                "list replicasets.apps",
                "create jobs.batch",
                "get jobs.batch",
            ]
        );
    }

    #[test]
    fn a_missing_grant_is_named_with_the_role_that_grants_it() {
        let words = describe(
            "shop/healing-guard-remediator",
            &[
                Grant::new("batch", "jobs", "create"),
                Grant::new("acid.zalan.do", "postgresqls", "patch"),
            ],
        );
        assert_eq!(
            words,
            "ServiceAccount shop/healing-guard-remediator may not create jobs.batch \
             (the Role healing-guard-remediator-jobs grants it), patch \
             postgresqls.acid.zalan.do (the Role healing-guard-remediator-patch grants it \
             once the chart's actions.patch lists the kind): the steps that need it fail \
             until it is granted"
        );
    }
}
