//! The API server rejects bad resources with a message naming the field.

use healing_guard_operator::crd::Incident;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde::Deserialize;
use serde_json::json;

use crate::support::{client, namespace, run_status};

/// A manifest's YAML with its namespace set to `ns`.
fn in_namespace(yaml: &str, ns: &str) -> String {
    let mut value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    value["metadata"]["namespace"] = ns.into();
    serde_yaml::to_string(&value).unwrap()
}

#[tokio::test]
async fn every_invalid_fixture_is_rejected_with_its_message() {
    let client = client().await;
    let ns = namespace(&client, "invalid").await;
    let mut fixtures: Vec<_> = std::fs::read_dir(crate::support::repo().join("examples/invalid"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 10,
        "expected the fixtures of examples/invalid, found {fixtures:?}"
    );

    let mut failures = Vec::new();
    for path in &fixtures {
        let text = std::fs::read_to_string(path).unwrap();
        let expected = text
            .lines()
            .find_map(|line| line.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{path:?} has no `# expect: ` line"))
            .trim()
            .to_owned();
        let manifest = in_namespace(&text, &ns);
        let (accepted, _, stderr) = run_status("kubectl", &["create", "-f", "-"], Some(&manifest));
        if accepted {
            failures.push(format!(
                "{}: accepted, expected rejection with {expected:?}",
                path.display()
            ));
        } else if !stderr.contains(&expected) {
            failures.push(format!(
                "{}: expected {expected:?} in:\n{stderr}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_examples_are_valid() {
    let client = client().await;
    let ns = namespace(&client, "examples").await;
    for dir in [
        "examples/policies",
        "examples/incidents",
        "examples/communication",
    ] {
        for entry in std::fs::read_dir(crate::support::repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(document).unwrap();
                if value.get("kind").is_none() {
                    continue; // a patch body, not a resource
                }
                let manifest = in_namespace(&serde_yaml::to_string(&value).unwrap(), &ns);
                let (accepted, _, stderr) = run_status(
                    "kubectl",
                    &["create", "--dry-run=server", "-f", "-"],
                    Some(&manifest),
                );
                assert!(accepted, "{} was rejected: {stderr}", path.display());
                // And nothing the controller would report either.
                if value.get("kind").and_then(|k| k.as_str()) == Some("RemediationPolicy") {
                    let policy: healing_guard_operator::crd::RemediationPolicy =
                        serde_yaml::from_value(value.clone()).unwrap();
                    let problems = healing_guard_operator::validation::policy(&policy.spec);
                    assert!(problems.is_empty(), "{}: {problems:?}", path.display());
                }
            }
        }
    }
}

#[tokio::test]
async fn severity_may_be_raised_freely_but_lowered_only_with_a_reason() {
    let client = client().await;
    let ns = namespace(&client, "severity").await;
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": "slow-api"},
        "spec": {
            "title": "API slow", "severity": "P1", "type": "PerformanceDegradation",
            "target": {"kind": "Deployment", "name": "healing-guard"}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &incident).await.unwrap();
    let patch = |spec: serde_json::Value| Patch::Merge(json!({ "spec": spec }));
    let params = PatchParams::default();

    let lowered = api
        .patch("slow-api", &params, &patch(json!({"severity": "P2"})))
        .await;
    let message = match lowered {
        Err(kube::Error::Api(status)) => status.message,
        other => panic!("lowering without a reason was accepted: {other:?}"),
    };
    assert!(message.contains("spec.severity"), "{message}");
    assert!(
        message.contains("lowering spec.severity needs a new spec.severityReason"),
        "{message}"
    );

    api.patch(
        "slow-api",
        &params,
        &patch(json!({"severity": "P2", "severityReason": "only the dashboard"})),
    )
    .await
    .unwrap();
    api.patch("slow-api", &params, &patch(json!({"severity": "P0"})))
        .await
        .unwrap();
    let again = api
        .patch("slow-api", &params, &patch(json!({"severity": "P3"})))
        .await;
    assert!(
        again.is_err(),
        "a stale reason must not allow lowering again"
    );

    let moved = api
        .patch(
            "slow-api",
            &params,
            &patch(json!({"target": {"kind": "Deployment", "name": "other"}})),
        )
        .await;
    assert!(
        matches!(moved, Err(kube::Error::Api(s)) if s.message.contains("spec.target is immutable"))
    );
}

#[tokio::test]
async fn what_the_schema_cannot_refuse_the_controller_reports_by_field() {
    use healing_guard_operator::crd::RemediationPolicy;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    let client = client().await;
    let ns = namespace(&client, "invalid-ctl").await;
    let _operator = crate::support::Operator::start(&ns).await;
    let dir = crate::support::repo().join("examples/invalid/controller");
    let mut fixtures: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 6, "{fixtures:?}");
    for path in &fixtures {
        let text = std::fs::read_to_string(path).unwrap();
        let expected = text
            .lines()
            .find_map(|line| line.strip_prefix("# expect-condition: "))
            .unwrap_or_else(|| panic!("{path:?} has no `# expect-condition: ` line"));
        let mut words = expected.splitn(3, ' ');
        let (type_, reason, message) = (
            words.next().unwrap().to_owned(),
            words.next().unwrap().to_owned(),
            words.next().unwrap().to_owned(),
        );
        let manifest = in_namespace(&text, &ns);
        let (accepted, _, stderr) = run_status("kubectl", &["create", "-f", "-"], Some(&manifest));
        assert!(
            accepted,
            "{}: the API server refused it: {stderr}",
            path.display()
        );
        let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let name = value["metadata"]["name"].as_str().unwrap().to_owned();
        let is_policy = value["kind"].as_str() == Some("RemediationPolicy");
        let (client, ns) = (client.clone(), ns.clone());
        let conditions = move || {
            let (client, ns, name) = (client.clone(), ns.clone(), name.clone());
            async move {
                let conditions: Vec<Condition> = if is_policy {
                    Api::<RemediationPolicy>::namespaced(client, &ns)
                        .get(&name)
                        .await
                        .ok()?
                        .status?
                        .conditions
                } else {
                    Api::<Incident>::namespaced(client, &ns)
                        .get(&name)
                        .await
                        .ok()?
                        .status?
                        .conditions
                };
                Some(conditions)
            }
        };
        let found = crate::support::eventually(&format!("{}: {expected}", path.display()), || {
            let conditions = conditions.clone();
            let (type_, reason, message) = (type_.clone(), reason.clone(), message.clone());
            async move {
                conditions().await?.into_iter().find(|c| {
                    c.type_ == type_ && c.reason == reason && c.message.contains(&message)
                })
            }
        })
        .await;
        // Ready is False for a policy; RemediationBlocked is True for an incident.
        assert_eq!(found.status, if is_policy { "False" } else { "True" });
    }
}
