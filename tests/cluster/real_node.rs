//! The operator as users run it: `helm install` of the chart with the image
//! built by `make image`, on real nodes (kubelet, containerd, runc) beside
//! the kwok ones. Two replicas; the leader's pod deleted, then its container
//! SIGKILLed, each mid remediation; `helm upgrade` to a new tag while an
//! incident is open; `helm uninstall`. Needs a control plane with real nodes:
//! `make test` starts one (`cluster/with-cluster.sh --real-nodes 2`).

use std::time::{Duration, Instant};

use healing_guard_operator::crd::{Incident, Phase, StepResult};
use k8s_openapi::api::{
    apps::v1::Deployment, coordination::v1::Lease, core::v1::Pod, discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde_json::json;

use crate::remediation::{bad_release_of, policy_with};
use crate::support::{
    client, eventually, eventually_within, incident_where, namespace, phase_of, repo, run,
    run_status,
};

const RELEASE: &str = "hgo";
const FULLNAME: &str = "hgo-healing-guard-operator";
const LEASE_SECONDS: u64 = 15;

/// The image `make image` built and the cluster's nodes imported.
fn image() -> (String, String) {
    let archives = std::env::var("HGO_NODE_IMAGES").unwrap_or_default();
    let archive = archives.split_whitespace().next().unwrap_or_else(|| {
        panic!(
            "no image for the real nodes: run this with `make test`, or \
             `make image` and HGO_NODE_IMAGES=target/image/...oci.tar \
             cluster/with-cluster.sh --real-nodes 2 -- cargo test --test cluster -- real_node"
        )
    });
    let repository = std::fs::read_to_string(format!("{archive}.repository")).unwrap();
    (
        repository.trim().to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )
}

/// The API server's port: without kube-proxy, pods on the host's network
/// reach it on loopback, as the kubeconfig does.
fn apiserver_port() -> String {
    let server = std::env::var("HGO_APISERVER").expect("HGO_APISERVER (make test sets it)");
    server.rsplit(':').next().unwrap().to_string()
}

/// Values a user of this cluster would write: the image, the real nodes
/// (their taint and label), the host's network, two replicas.
fn values(ns: &str, repository: &str, tag: &str) -> serde_json::Value {
    json!({
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "replicas": 2,
        "watchNamespace": ns,
        "logFormat": "text",
        "logLevel": "info,healing_guard_operator=debug",
        "leaderElection": {"enabled": true, "leaseDurationSeconds": LEASE_SECONDS},
        "hostNetwork": true,
        // In the node's network, each replica listens on its node's address.
        "metrics": {"port": free_port()},
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": apiserver_port()}
        ],
        "nodeSelector": {"healing-guard.io/real-node": "true"},
        "tolerations": [{"key": "healing-guard.io/real-node", "operator": "Exists", "effect": "NoSchedule"}],
    })
}

/// A port free on every address: two clusters' operators may share this host.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn helm(args: &[&str]) -> String {
    let (ok, stdout, stderr) = run_status("helm", args, None);
    assert!(ok, "helm {args:?} failed:\n{stderr}\n{stdout}");
    stdout
}

async fn ready_operator_pods(pods: &Api<Pod>, image: &str, count: usize) -> Vec<Pod> {
    eventually_within(
        &format!("{count} operator pods of {image} Ready"),
        Duration::from_secs(180),
        || {
            let pods = pods.clone();
            let image = image.to_string();
            async move {
                let list = pods
                    .list(
                        &ListParams::default()
                            .labels("app.kubernetes.io/name=healing-guard-operator"),
                    )
                    .await
                    .ok()?;
                let ready: Vec<Pod> = list
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        p.spec
                            .as_ref()
                            .is_some_and(|s| s.containers[0].image.as_deref() == Some(&image))
                    })
                    .filter(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .collect();
                (ready.len() == count).then_some(ready)
            }
        },
    )
    .await
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get(FULLNAME).await.ok()?.spec?.holder_identity
}

/// The pod whose name the Lease holder's identity starts with.
async fn leader_pod(leases: &Api<Lease>, pods: &[Pod]) -> (String, Pod) {
    let identity = eventually("a leader", || async { holder(leases).await }).await;
    let pod = pods
        .iter()
        .find(|p| identity.starts_with(&format!("{}-", p.name_any())))
        .unwrap_or_else(|| panic!("the holder {identity} is none of the operator's pods"))
        .clone();
    (identity, pod)
}

/// Waits until another identity holds the Lease; how long that took.
async fn takeover(leases: &Api<Lease>, old: &str, since: Instant) -> (String, Duration) {
    let new = eventually_within(
        "a standby to take the Lease over",
        Duration::from_secs(LEASE_SECONDS * 3),
        || async { holder(leases).await.filter(|h| h != old) },
    )
    .await;
    (new, since.elapsed())
}

/// The incident of `name` once its rollback is recorded and not yet verified.
async fn mid_remediation(client: &Client, ns: &str, name: &str) -> Incident {
    incident_where(
        client,
        ns,
        &format!("{name}-crashloop"),
        "a step recorded, unverified",
        |i| {
            i.status
                .as_ref()
                .and_then(|s| s.steps.last())
                .is_some_and(|s| matches!(s.result, StepResult::Pending | StepResult::Verifying))
        },
    )
    .await
}

/// Resolved with exactly one step, the rollback, applied once: revision 3,
/// the good image back.
async fn resolved_with_one_rollback(client: &Client, ns: &str, name: &str) {
    let incident = incident_where(client, ns, &format!("{name}-crashloop"), "resolved", |i| {
        phase_of(i) == Some(Phase::Resolved)
    })
    .await;
    let steps = incident.status.unwrap().steps;
    assert_eq!(steps.len(), 1, "{name}: {steps:?}");
    assert_eq!(steps[0].result, StepResult::Succeeded, "{name}: {steps:?}");
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let revision =
        deployment.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"].clone();
    assert_eq!(
        revision, "3",
        "{name}: a second rollback would make revision 4"
    );
    let image = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image, Some(format!("registry.local/{name}:1")));
}

/// The host PID of a pod's container, from its node's containerd.
fn container_pid(pod: &Pod) -> u32 {
    let status = pod.status.as_ref().unwrap();
    let id = status.container_statuses.as_ref().unwrap()[0]
        .container_id
        .as_deref()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
    let number = node.trim_start_matches("hgo-node-");
    let dir = std::env::var("HGO_CLUSTER_DIR").unwrap();
    let socket = format!("{dir}/node-{number}/containerd/containerd.sock");
    let tasks = run(
        "ctr",
        &["--address", &socket, "-n", "k8s.io", "tasks", "ls"],
        None,
    );
    tasks
        .lines()
        .find(|l| l.starts_with(&id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no task {id} on {node}:\n{tasks}"))
}

/// What the kernel says of the container's process: its user and whether
/// its root filesystem is read-only, its effective capabilities.
fn process_facts(pid: u32) -> (String, bool, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).unwrap();
    let root_read_only = mounts
        .lines()
        .rfind(|l| l.split_whitespace().nth(1) == Some("/"))
        .is_some_and(|l| {
            l.split_whitespace()
                .nth(3)
                .unwrap_or_default()
                .split(',')
                .any(|o| o == "ro")
        });
    (field("Uid:"), root_read_only, field("CapEff:"))
}

/// /metrics of every replica, found as Prometheus finds them: through the
/// chart's Service, by its EndpointSlices.
async fn scrape_through_the_service(client: &Client, ns: &str) -> Vec<(String, String)> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={FULLNAME}")))
        .await
        .unwrap();
    let mut scraped = Vec::new();
    for slice in list.items {
        let port = slice.ports.as_ref().unwrap()[0].port.unwrap();
        for endpoint in slice.endpoints.into_iter().flatten() {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(true) {
                continue;
            }
            let address = endpoint.addresses[0].clone();
            let url = format!("http://{address}:{port}/metrics");
            let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
            scraped.push((url, body));
        }
    }
    scraped
}

#[tokio::test]
async fn real_node_helm_installs_the_image_which_survives_failover_and_upgrade() {
    let client = client().await;
    let ns = namespace(&client, "inpod").await;
    let (repository, tag) = image();
    let image = format!("{repository}:{tag}");
    let values_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values_file.path(),
        values(&ns, &repository, &tag).to_string(),
    )
    .unwrap();
    let values_path = values_file.path().to_str().unwrap().to_string();
    let chart = repo().join("charts/healing-guard-operator");
    let chart = chart.to_str().unwrap();

    // helm install, as a user would; both replicas Ready through their probes.
    let installing = Instant::now();
    helm(&["install", RELEASE, chart, "-n", &ns, "-f", &values_path]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let ready = ready_operator_pods(&pods, &image, 2).await;
    let to_ready = installing.elapsed();
    let nodes: std::collections::BTreeSet<_> = ready
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert_eq!(nodes.len(), 2, "one replica per real node: {nodes:?}");
    for pod in &ready {
        let (uid, root_read_only, capabilities) = process_facts(container_pid(pod));
        assert_eq!(
            uid,
            "65532",
            "{}: runs as the image's non-root user",
            pod.name_any()
        );
        assert!(
            root_read_only,
            "{}: read-only root filesystem",
            pod.name_any()
        );
        assert_eq!(
            capabilities,
            "0000000000000000",
            "{}: no capabilities",
            pod.name_any()
        );
    }
    let scraped = scrape_through_the_service(&client, &ns).await;
    assert_eq!(
        scraped.len(),
        2,
        "both replicas behind the Service: {:?}",
        scraped.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    for (url, body) in &scraped {
        assert!(
            body.contains("\nhealing_guard_fenced_writes_total 0\n"),
            "{url}:\n{body}"
        );
    }

    policy_with(
        &client,
        &ns,
        json!({
            "mode": "Auto",
            "targets": [{"kind": "Deployment", "selector": {"matchLabels": {"guarded": "yes"}}}],
            "rules": [{
                "name": "crash", "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                "severity": "P0", "type": "ServiceOutage", "actions": [{"action": "rollback"}],
                // A long hold-down: the leader goes while the step is unverified.
                "verify": {"timeout": "3m", "holdDown": "20s"}
            }]
        }),
    )
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);

    // 1. kubectl delete pod of the leader, mid remediation.
    bad_release_of(&client, &ns, "api").await;
    mid_remediation(&client, &ns, "api").await;
    let (old, leader) = leader_pod(&leases, &ready).await;
    // kubectl logs: the API server reaches the kubelet on its node's address.
    let logs = run("kubectl", &["logs", "-n", &ns, &leader.name_any()], None);
    assert!(
        logs.contains("became leader"),
        "{}:\n{logs}",
        leader.name_any()
    );
    let deleted = Instant::now();
    pods.delete(&leader.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let (_, after_delete) = takeover(&leases, &old, deleted).await;
    resolved_with_one_rollback(&client, &ns, "api").await;
    let ready = ready_operator_pods(&pods, &image, 2).await;

    // 2. SIGKILL of the leader's container, mid remediation.
    bad_release_of(&client, &ns, "web").await;
    mid_remediation(&client, &ns, "web").await;
    let (old, leader) = leader_pod(&leases, &ready).await;
    let pid = container_pid(&leader);
    let killed = Instant::now();
    run("kill", &["-KILL", &pid.to_string()], None);
    let (_, after_kill) = takeover(&leases, &old, killed).await;
    resolved_with_one_rollback(&client, &ns, "web").await;
    let restarted = eventually("the killed container restarted", || {
        let pods = pods.clone();
        let name = leader.name_any();
        async move {
            let pod = pods.get(&name).await.ok()?;
            let restarts = pod.status?.container_statuses?[0].restart_count;
            (restarts >= 1).then_some(restarts)
        }
    })
    .await;
    assert_eq!(restarted, 1);

    // 3. helm upgrade to a new tag while an incident is open.
    let next = format!("{tag}-next");
    let dir = std::env::var("HGO_CLUSTER_DIR").unwrap();
    for node in 1..=2 {
        let socket = format!("{dir}/node-{node}/containerd/containerd.sock");
        run(
            "ctr",
            &[
                "--address",
                &socket,
                "-n",
                "k8s.io",
                "images",
                "tag",
                "--force",
                &image,
                &format!("{repository}:{next}"),
            ],
            None,
        );
    }
    bad_release_of(&client, &ns, "worker").await;
    incident_where(&client, &ns, "worker-crashloop", "open", |i| {
        phase_of(i).is_some_and(|p| p != Phase::Resolved)
    })
    .await;
    let upgrading = Instant::now();
    helm(&[
        "upgrade",
        RELEASE,
        chart,
        "-n",
        &ns,
        "-f",
        &values_path,
        "--set",
        &format!("image.tag={next}"),
    ]);
    let upgraded = ready_operator_pods(&pods, &format!("{repository}:{next}"), 2).await;
    let upgrade_took = upgrading.elapsed();
    resolved_with_one_rollback(&client, &ns, "worker").await;
    assert_eq!(upgraded.len(), 2);

    // 4. helm uninstall keeps the CRDs, and so the Incidents.
    helm(&["uninstall", RELEASE, "-n", &ns, "--wait"]);
    let (ok, _, stderr) = run_status(
        "kubectl",
        &["get", "crd", "incidents.healing-guard.io"],
        None,
    );
    assert!(ok, "the CRD went with the release: {stderr}");
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let mut kept: Vec<String> = incidents
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|i| i.name_any())
        .collect();
    kept.sort();
    assert_eq!(kept, ["api-crashloop", "web-crashloop", "worker-crashloop"]);
    eventually("the operator's pods gone", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(
                    &ListParams::default().labels("app.kubernetes.io/name=healing-guard-operator"),
                )
                .await
                .ok()?;
            list.items.is_empty().then_some(())
        }
    })
    .await;

    println!(
        "real node figures: install to 2 pods Ready {:.1}s; takeover after the leader pod was \
         deleted {:.1}s, after its container was SIGKILLed {:.1}s (lease {LEASE_SECONDS}s); \
         upgrade to 2 new pods Ready {:.1}s",
        to_ready.as_secs_f64(),
        after_delete.as_secs_f64(),
        after_kill.as_secs_f64(),
        upgrade_took.as_secs_f64()
    );
}
