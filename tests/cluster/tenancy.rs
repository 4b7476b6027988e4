//! Tenancy: the operator acts in a namespace with the authority its owner
//! granted that namespace's remediator ServiceAccount, and with no other.
//! One namespace grants only the workloads level: its policy says what it
//! lacks before any incident, its Secret header and its Job are refused
//! with the reason (nothing sent, nothing run), and its scale is made, as
//! the remediator. A policy naming a more powerful account of the namespace
//! cannot act as it; another tenant's namespace cannot be touched.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use healing_guard_operator::crd::{Incident, Phase, RemediationPolicy, StepResult};
use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job, core::v1::Secret};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{
    Launch, Operator, REMEDIATOR, client, eventually, incident_where, namespace, phase_of,
    run_status,
};

/// A Deployment whose pods crash-loop (kwok's injected failure), so that
/// its policy's rule opens an incident and runs its ladder.
async fn deployment(client: &Client, ns: &str, name: &str, replicas: i32) -> Api<Deployment> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name, "healing-guard.io/inject": "crashloop"}},
                              "spec": {"containers": [{"name": "app", "image": format!("{name}:1")}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    deployments
}

async fn create<K>(client: &Client, ns: &str, object: Value)
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

fn policy(name: &str, target: &str, account: Option<&str>, actions: Value) -> Value {
    let mut spec = json!({
        "mode": "Auto",
        "targets": [{"kind": "Deployment", "names": [target]}],
        "rules": [{"name": "crash", "when": {"symptom": "CrashLoopBackOff"},
                   "severity": "P1", "type": "ServiceOutage", "actions": actions,
                   "verify": {"timeout": "10s", "holdDown": "2s"}}]
    });
    if let Some(account) = account {
        spec["serviceAccountName"] = account.into();
    }
    json!({"apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
           "metadata": {"name": name}, "spec": spec})
}

/// The incident detection opens for `target`'s crash loop, once its ladder
/// is exhausted (no step can cure kwok's injected crash).
async fn escalated(client: &Client, ns: &str, target: &str) -> Incident {
    incident_where(
        client,
        ns,
        &format!("{target}-crashloop"),
        "escalated",
        |i| phase_of(i) == Some(Phase::Escalated),
    )
    .await
}

/// The policy's Ready condition, once it has one: (status, reason, message).
async fn ready_of(client: &Client, ns: &str, name: &str) -> (String, String, String) {
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), ns);
    eventually("the policy's Ready condition", || {
        let policies = policies.clone();
        async move {
            let policy = policies.get(name).await.ok()?;
            let ready = policy
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            Some((ready.status, ready.reason, ready.message))
        }
    })
    .await
}

/// A loopback listener that only counts the connections it gets: where a
/// call must never arrive.
async fn counting_listener() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let arrived = Arc::new(AtomicUsize::new(0));
    let counting = arrived.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counting.fetch_add(1, Ordering::SeqCst);
        }
    });
    (address, arrived)
}

/// `kubectl auth can-i VERB RESOURCE -n NS --as USER` (as the admin).
fn can(user: &str, verb: &str, resource: &str, ns: &str) -> bool {
    let (yes, ..) = run_status(
        "kubectl",
        &["auth", "can-i", verb, resource, "-n", ns, "--as", user],
        None,
    );
    yes
}

#[tokio::test]
async fn a_namespace_that_grants_only_workloads_gets_only_workloads_changed() {
    let client = client().await;
    let ns = namespace(&client, "tenant-a").await;
    let other = namespace(&client, "tenant-b").await;
    let theirs = deployment(&client, &other, "api", 2).await;
    let _operator = Operator::launch(&Launch {
        chart_values: &["remediator.grant={workloads}"],
        ..Launch::namespaced(&ns)
    })
    .await
    .unwrap();
    let deployments = deployment(&client, &ns, "api", 2).await;
    create::<Secret>(
        &client,
        &ns,
        json!({"metadata": {"name": "lb-token"},
               "stringData": {"Authorization": "Bearer tenant-a-secret"}}),
    )
    .await;
    // Where the http step would send the Secret: nothing may arrive.
    let (address, arrived) = counting_listener().await;
    let ladder = json!([
        {"name": "drain-lb", "action": "http",
         "http": {"url": format!("http://{address}/drain"), "headersFrom": {"name": "lb-token"}}},
        {"name": "smoke", "action": "runJob", "runJob": {"job": {"backoffLimit": 0, "template": {
            "spec": {"containers": [{"name": "run", "image": "registry.local/smoke:1"}]}}}}},
        {"name": "more", "action": "scale", "scale": {"replicas": 3, "maxReplicas": 3}},
    ]);
    create::<RemediationPolicy>(&client, &ns, policy("guard", "api", None, ladder)).await;

    // Before any incident: the policy says what its remediator lacks.
    let (status, reason, message) = ready_of(&client, &ns, "guard").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "MissingGrants"),
        "{message}"
    );
    let account = format!("{ns}/{REMEDIATOR}");
    for lack in [
        format!("ServiceAccount {account} may not "),
        "get secrets (the Role healing-guard-remediator-secrets grants it)".to_owned(),
        "create jobs.batch (the Role healing-guard-remediator-jobs grants it)".to_owned(),
    ] {
        assert!(message.contains(&lack), "{lack} not in: {message}");
    }
    assert!(!message.contains("deployments"), "{message}");

    let done = escalated(&client, &ns, "api").await;
    let steps = done.status.unwrap().steps;
    let outcome: Vec<_> = steps.iter().map(|s| (s.name.as_str(), s.result)).collect();
    // The scale is made, and does not cure a crash: it fails verification.
    assert_eq!(
        outcome,
        [
            ("drain-lb", StepResult::Failed),
            ("smoke", StepResult::Failed),
            ("more", StepResult::Failed),
        ]
    );
    assert!(
        steps[2]
            .changes
            .iter()
            .any(|c| c.contains("Deployment/api replicas 2 -> 3")),
        "{:?}",
        steps[2].changes
    );
    let user = format!("system:serviceaccount:{ns}:{REMEDIATOR}");
    let said = |i: usize| steps[i].message.clone().unwrap_or_default();
    for (i, words) in [
        (0, "cannot get resource \"secrets\""),
        (0, "the Role healing-guard-remediator-secrets grants it"),
        (1, "cannot create resource \"jobs\""),
        (1, "the Role healing-guard-remediator-jobs grants it"),
    ] {
        assert!(said(i).contains(words), "{words} not in: {}", said(i));
        assert!(said(i).contains(&user), "{user} not in: {}", said(i));
    }
    assert_eq!(arrived.load(Ordering::SeqCst), 0, "nothing was sent");
    let jobs = Api::<Job>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "no Job was made");
    let scaled = deployments.get("api").await.unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(3));

    // A policy naming a more powerful account of the namespace (the
    // operator's own) cannot act as it: it says so, and changes nothing.
    let operator_account = format!("op-{ns}-healing-guard-operator");
    let web = deployment(&client, &ns, "web", 1).await;
    let sneaky = json!([{"name": "more", "action": "scale",
                         "scale": {"replicas": 4, "maxReplicas": 4}}]);
    create::<RemediationPolicy>(
        &client,
        &ns,
        policy("sneaky", "web", Some(&operator_account), sneaky),
    )
    .await;
    let (status, reason, message) = ready_of(&client, &ns, "sneaky").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CannotActAs"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{ns}/{operator_account}")),
        "{message}"
    );
    let refused = incident_where(&client, &ns, "web-crashloop", "its step failed", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.first())
            .is_some_and(|s| s.result == StepResult::Failed)
    })
    .await;
    let message = refused.status.unwrap().steps[0]
        .message
        .clone()
        .unwrap_or_default();
    assert!(message.contains("cannot impersonate"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        web.get("web").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );

    // The other tenant: untouched, and out of reach of both identities.
    assert_eq!(
        theirs.get("api").await.unwrap().spec.unwrap().replicas,
        Some(2)
    );
    let operator = format!("system:serviceaccount:{ns}:{operator_account}");
    assert!(can(&user, "patch", "deployments", &ns));
    assert!(!can(&user, "patch", "deployments", &other));
    assert!(!can(&user, "get", "secrets", &ns));
    assert!(!can(&operator, "patch", "deployments", &ns));
    assert!(!can(&operator, "get", "secrets", &ns));
    let theirs_remediator = format!("serviceaccounts/{REMEDIATOR}");
    assert!(can(&operator, "impersonate", &theirs_remediator, &ns));
    assert!(!can(&operator, "impersonate", &theirs_remediator, &other));
    assert!(!can(
        &operator,
        "impersonate",
        "serviceaccounts/default",
        &ns
    ));
}

/// The operator-wide deny list keeps every author from a destination: a
/// policy's http step to it fails, naming the rule, and nothing arrives.
#[tokio::test]
async fn a_destination_the_operator_denies_is_never_called() {
    let client = client().await;
    let ns = namespace(&client, "egress-deny").await;
    let _operator = Operator::launch(&Launch {
        extra: &["--egress-deny", "127.0.0.0/8"],
        ..Launch::namespaced(&ns)
    })
    .await
    .unwrap();
    let deployments = deployment(&client, &ns, "api", 2).await;
    let (address, arrived) = counting_listener().await;
    let ladder = json!([
        {"name": "drain-lb", "action": "http", "http": {"url": format!("http://{address}/drain")}},
        {"name": "more", "action": "scale", "scale": {"replicas": 3, "maxReplicas": 3}},
    ]);
    create::<RemediationPolicy>(&client, &ns, policy("guard", "api", None, ladder)).await;
    let done = escalated(&client, &ns, "api").await;
    let steps = done.status.unwrap().steps;
    assert_eq!(steps[0].result, StepResult::Failed);
    let message = steps[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("127.0.0.1 is denied by the operator's egress rule 127.0.0.0/8"),
        "{message}"
    );
    assert_eq!(steps[1].name, "more");
    assert_eq!(arrived.load(Ordering::SeqCst), 0, "nothing was called");
    assert_eq!(
        deployments.get("api").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );
}
