//! What the bench puts in the cluster: the policy, the guarded Deployments,
//! the policies that select nothing; and how it knows they are ready.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use healing_guard_operator::crd::RemediationPolicy;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Node, Pod},
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

use crate::{BenchError, Result, support};

/// Label on the guarded Deployments, which the bench policy selects.
const GUARD_LABEL: (&str, &str) = ("bench", "guarded");
/// Label on Deployments beside them that no policy guards.
const UNGUARDED_LABEL: (&str, &str) = ("bench", "unguarded");
/// Pod label naming the set a guarded pod belongs to (`latency`, `big`).
pub const ROLE_LABEL: &str = "bench-role";
/// Objects created at once; the API server, not the bench, sets the pace.
const CREATE_CONCURRENCY: usize = 32;
/// Longest wait for pods to be ready, or policies reconciled: the scheduler
/// binds about 50 pods/s (its client's rate).
const READY_TIMEOUT: Duration = Duration::from_secs(900);

/// Fails early when the nodes cannot hold the guarded pods.
pub async fn check_capacity(client: &Client, needed: usize) -> Result<()> {
    let capacity = capacity(client).await?;
    if capacity < needed {
        return Err(format!(
            "the nodes hold {capacity} pods, the bench needs {needed}: start the cluster with \
             more capacity (`make bench` does; see `cluster/up.sh --help`, --max-pods)"
        )
        .into());
    }
    Ok(())
}

/// How many pods the nodes hold in all.
pub async fn capacity(client: &Client) -> Result<usize> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(nodes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|node| node.status.as_ref()?.allocatable.as_ref()?.get("pods"))
        .filter_map(count_quantity)
        .sum())
}

/// A count such as "110" or "4k" (the API server writes 4000 pods as 4k).
fn count_quantity(Quantity(text): &Quantity) -> Option<usize> {
    let (digits, factor) = match text.strip_suffix('k') {
        Some(digits) => (digits, 1_000),
        None => match text.strip_suffix('M') {
            Some(digits) => (digits, 1_000_000),
            None => (text.as_str(), 1),
        },
    };
    digits.parse::<usize>().ok()?.checked_mul(factor)
}

/// What a namespace's owner does for the operator to change anything in it
/// (the chart's cluster-wide levels, README "Security model"): the
/// remediator ServiceAccount, bound to the `workloads` level there.
pub async fn grant_remediator(client: &Client, namespace: &str) -> Result<()> {
    use k8s_openapi::api::{core::v1::ServiceAccount, rbac::v1::RoleBinding};
    let account: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": support::REMEDIATOR}
    }))?;
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &account)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{}-workloads", support::REMEDIATOR)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": format!("{}-workloads", support::REMEDIATOR)},
        "subjects": [{"kind": "ServiceAccount", "name": support::REMEDIATOR, "namespace": namespace}]
    }))?;
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// The policy under test: a crash-looping pod is deleted (evicted) and its
/// ReplicaSet replaces it; nothing in the safety limits holds a sample back.
///
/// A DeletePods restart goes on to evict every other pod of the Deployment,
/// one at a time, while more than `minReadyReplicas` are ready. With the
/// floor above the largest Deployment (`above_replicas`), only the failing
/// pod goes: 45 evictions per sample would churn all 9,000 pods of the round
/// at 10,000, and the round would measure the churn. A target below its
/// floor may still be acted on, so no sample is refused.
pub async fn create_bench_policy(
    client: &Client,
    namespace: &str,
    above_replicas: i32,
) -> Result<()> {
    let policy: RemediationPolicy = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"name": "bench"},
        "spec": {
            "mode": "Auto",
            "targets": [{"kind": "Deployment", "selector": {"matchLabels": {GUARD_LABEL.0: GUARD_LABEL.1}}}],
            "rules": [{
                "name": "crash",
                "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                "severity": "P1",
                "type": "ServiceOutage",
                "actions": [{"action": "restart", "restart": {"method": "DeletePods"}}],
                "verify": {"timeout": "2m", "holdDown": "1s"}
            }],
            // One action per Deployment in the whole run; a failed step must
            // not open the breaker on the samples after it.
            "safety": {
                "cooldown": "0s",
                "circuitBreakerThreshold": 100,
                "minReadyReplicas": above_replicas
            }
        }
    }))?;
    let api: Api<RemediationPolicy> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &policy).await?;
    Ok(())
}

/// Creates `count` guarded Deployments `<prefix>-000`... of `replicas` pods
/// labelled `bench-role=<role>`; returns their names.
pub async fn create_guarded(
    client: &Client,
    namespace: &str,
    prefix: &str,
    role: &str,
    replicas: i32,
    count: usize,
) -> Result<Vec<String>> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:03}")).collect();
    futures::stream::iter(names.clone())
        .map(|name| async move {
            support::try_create_deployment(
                client,
                namespace,
                guarded_deployment(&name, replicas, role),
            )
            .await
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    Ok(names)
}

/// Creates `count` Deployments `<prefix>-000`... of `replicas` pods that no
/// policy guards, and waits until their pods are ready.
pub async fn create_unguarded(
    client: &Client,
    namespace: &str,
    prefix: &str,
    replicas: i32,
    count: usize,
) -> Result<()> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:03}")).collect();
    futures::stream::iter(names)
        .map(|name| async move {
            let mut deployment = guarded_deployment(&name, replicas, "unguarded");
            deployment["metadata"]["labels"] = json!({UNGUARDED_LABEL.0: UNGUARDED_LABEL.1});
            support::try_create_deployment(client, namespace, deployment).await
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    let label = format!("{}={}", UNGUARDED_LABEL.0, UNGUARDED_LABEL.1);
    wait_labelled_ready(
        client,
        namespace,
        &label,
        guarded_pod_count(replicas, count)?,
    )
    .await
}

pub fn guarded_pod_count(replicas: i32, count: usize) -> Result<usize> {
    Ok(usize::try_from(replicas)? * count)
}

fn guarded_deployment(name: &str, replicas: i32, role: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {GUARD_LABEL.0: GUARD_LABEL.1}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, ROLE_LABEL: role}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "app", "image": format!("registry.local/{name}:1")}]
                }
            }
        }
    })
}

/// Waits until the guarded Deployments of `namespace` have `expected` ready
/// replicas in all, and no more pods than they want.
pub async fn wait_ready(client: &Client, namespace: &str, expected: usize) -> Result<()> {
    let label = format!("{}={}", GUARD_LABEL.0, GUARD_LABEL.1);
    wait_labelled_ready(client, namespace, &label, expected).await
}

/// Waits until the Deployments of `namespace` labelled `label` have
/// `expected` ready replicas in all, and no more pods than they want.
async fn wait_labelled_ready(
    client: &Client,
    namespace: &str,
    label: &str,
    expected: usize,
) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(label);
    let started = Instant::now();
    let mut told = Instant::now();
    support::poll(
        &format!("{expected} pods of {label} ready"),
        READY_TIMEOUT,
        || {
            let (api, params) = (api.clone(), params.clone());
            let tell = told.elapsed() > Duration::from_secs(30);
            if tell {
                told = Instant::now();
            }
            async move {
                let (mut ready, mut pods) = (0, 0);
                for deployment in api.list(&params).await?.items {
                    let status = deployment.status.unwrap_or_default();
                    ready += usize::try_from(status.ready_replicas.unwrap_or_default())?;
                    pods += usize::try_from(status.replicas.unwrap_or_default())?;
                }
                if tell {
                    eprintln!(
                        "[bench] {ready}/{expected} pods of {label} ready after {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                Ok::<_, BenchError>((ready == expected && pods == expected).then_some(()))
            }
        },
    )
    .await
}

/// Pods in every namespace, counted page by page from metadata only.
pub async fn pods_in_cluster(client: &Client) -> Result<usize> {
    let api: Api<Pod> = Api::all(client.clone());
    let mut params = ListParams::default().limit(1000);
    let mut count = 0;
    loop {
        let page = api.list_metadata(&params).await?;
        count += page.items.len();
        match page.metadata.continue_.as_deref() {
            Some(token) if !token.is_empty() => params = params.continue_token(token),
            _ => return Ok(count),
        }
    }
}

/// Creates `count` valid policies that each select a label nothing has, and
/// waits until the operator has reconciled each (its observedGeneration).
pub async fn create_idle_policies(client: &Client, namespace: &str, count: usize) -> Result<()> {
    let api: Api<RemediationPolicy> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(0..count)
        .map(|index| {
            let api = api.clone();
            async move {
                let name = format!("idle-{index:04}");
                let policy: RemediationPolicy = serde_json::from_value(json!({
                    "apiVersion": "healing-guard.io/v1alpha1",
                    "kind": "RemediationPolicy",
                    "metadata": {"name": name},
                    "spec": {
                        "mode": "Auto",
                        "targets": [{"kind": "Deployment", "selector": {"matchLabels": {"bench-idle": name}}}],
                        "rules": [{
                            "name": "crash",
                            "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                            "severity": "P2",
                            "type": "ServiceOutage",
                            "actions": [{"action": "restart"}]
                        }]
                    }
                }))?;
                api.create(&PostParams::default(), &policy).await?;
                Ok::<_, BenchError>(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    support::poll(
        &format!("{count} policies reconciled"),
        READY_TIMEOUT,
        || {
            let api = api.clone();
            async move {
                let policies = api.list(&ListParams::default()).await?.items;
                let reconciled = policies
                    .iter()
                    .filter(|policy| {
                        let observed = policy.status.as_ref().and_then(|s| s.observed_generation);
                        observed.is_some() && observed >= policy.metadata.generation
                    })
                    .count();
                Ok::<_, kube::Error>((reconciled == count).then_some(()))
            }
        },
    )
    .await
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}
