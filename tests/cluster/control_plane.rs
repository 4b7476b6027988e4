//! The local control plane is real and behaves as the tests need.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::support::{client, eventually, namespace};

fn deployment(name: &str, replicas: i32, pod_labels: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "app", "image": "registry.local/app:1"}]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn the_server_reports_kubernetes_1_36_3() {
    let client = client().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.36.3");
}

#[tokio::test]
async fn a_deployment_of_three_gets_three_running_pods_on_kwok_nodes() {
    let client = client().await;
    let ns = namespace(&client, "cp-deploy").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 3, json!({"app": "web"})),
        )
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = eventually("3 Running pods", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let running: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            (running.len() == 3).then_some(running)
        }
    })
    .await;

    let nodes: Api<Node> = Api::all(client.clone());
    for pod in running {
        let node_name = pod
            .spec
            .unwrap()
            .node_name
            .expect("a running pod is scheduled");
        let node = nodes.get(&node_name).await.unwrap();
        let annotations = node.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations.get("kwok.x-k8s.io/node").map(String::as_str),
            Some("fake"),
            "{node_name}"
        );
    }
}

#[tokio::test]
async fn a_labelled_pod_turns_into_crash_loop_back_off() {
    let client = client().await;
    let ns = namespace(&client, "cp-crash").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let labels = json!({"app": "crashy", "healing-guard.io/inject": "crashloop"});
    deployments
        .create(&PostParams::default(), &deployment("crashy", 1, labels))
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let restarts_of = |pods: Api<Pod>| async move {
        let list = pods
            .list(&ListParams::default().labels("app=crashy"))
            .await
            .ok()?;
        let status = list.items.into_iter().next()?.status?;
        let container = status.container_statuses?.into_iter().next()?;
        let waiting = container.state?.waiting?.reason?;
        (waiting == "CrashLoopBackOff"
            && !container.ready
            && status.phase.as_deref() == Some("Running"))
        .then_some(container.restart_count)
    };
    let first = eventually("the pod in CrashLoopBackOff", || restarts_of(pods.clone())).await;
    eventually("the restart count to rise", || {
        let pods = pods.clone();
        async move { restarts_of(pods).await.filter(|count| *count > first) }
    })
    .await;
}
