//! The operator as users run it: `helm install` of the chart, its default
//! resources, with the image `make image` built (the real node imported it,
//! `HGO_NODE_IMAGES`), cluster-wide, on the one real node (the kwok nodes
//! cannot run a container). Its process and cgroup are this kernel's.

use std::{
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde_json::{Value, json};

use crate::{
    Result,
    cgroup::{self, Cgroup},
    support,
};

/// The Helm release: the chart's resources are named `hgo-bench-healing-guard-operator`.
pub const RELEASE: &str = "hgo-bench";
/// The label and taint the real nodes carry (cluster/node.sh).
const REAL_NODE: &str = "healing-guard.io/real-node";
/// Long enough for the first start of a node's container (the image unpacked).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Where the operator's container is, on this host.
struct Located {
    container_id: String,
    pid: u32,
    cgroup: Cgroup,
}

pub struct InPod {
    client: Client,
    namespace: String,
    pub pod: String,
    pub node: String,
    pub image: String,
    /// The chart's resources as installed (its defaults).
    pub resources: Value,
    located: Mutex<Located>,
}

/// The container's restarts and why the last one ended (`OOMKilled`).
pub struct Restarts {
    pub count: i32,
    pub last_reason: Option<String>,
}

/// The image the real node imported: its repository (written beside the
/// archive by `make image`) and tag (the crate's version, as image.sh tags it).
fn image() -> Result<(String, String)> {
    let archives = std::env::var("HGO_NODE_IMAGES").unwrap_or_default();
    let archive = archives.split_whitespace().next().ok_or(
        "HGO_BENCH_OPERATOR=pod needs the image on a real node: `make bench` builds it \
         (make image) and starts the cluster with HGO_REAL_NODES=1 HGO_NODE_IMAGES=<archive>",
    )?;
    let repository = std::fs::read_to_string(format!("{archive}.repository"))
        .map_err(|error| format!("{archive}.repository: {error}"))?;
    Ok((
        repository.trim().to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    ))
}

/// The values that place the chart on this cluster, and nothing else: the
/// image, the real node (its label and taint), the node's network (there is
/// no kube-proxy, so the API server is on loopback). Resources, log level,
/// leader election, replicas are the chart's defaults.
fn values(repository: &str, tag: &str) -> Result<Value> {
    let server = std::env::var("HGO_APISERVER").map_err(|_| "HGO_APISERVER is not set")?;
    let port = server
        .rsplit(':')
        .next()
        .ok_or("HGO_APISERVER has no port")?;
    // On the node's network the metrics port must be free on the host.
    let metrics_port = std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port();
    Ok(json!({
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "hostNetwork": true,
        "metrics": {"port": metrics_port},
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port}
        ],
        "nodeSelector": {REAL_NODE: "true"},
        "tolerations": [{"key": REAL_NODE, "operator": "Exists", "effect": "NoSchedule"}],
    }))
}

fn chart() -> PathBuf {
    support::repo()
        .join("charts")
        .join("healing-guard-operator")
}

impl InPod {
    /// `helm install` into `namespace`; waits until the pod is Ready and its
    /// process found.
    pub async fn install(client: &Client, namespace: &str) -> Result<InPod> {
        let (repository, tag) = image()?;
        let dir = support::repo().join("target").join("bench");
        std::fs::create_dir_all(&dir)?;
        let values_path = dir.join("pod-values.json");
        std::fs::write(&values_path, values(&repository, &tag)?.to_string())?;
        let chart = chart();
        let (chart, values_path) = (
            chart.to_str().ok_or("chart path")?,
            values_path.to_str().ok_or("values path")?,
        );
        support::try_run(
            "helm",
            &[
                "install",
                RELEASE,
                chart,
                "-n",
                namespace,
                "-f",
                values_path,
            ],
            None,
        )?;
        let resources = serde_json::from_str::<Value>(&support::try_run(
            "helm",
            &[
                "get", "values", RELEASE, "-n", namespace, "--all", "-o", "json",
            ],
            None,
        )?)?["resources"]
            .clone();
        let pod = ready_pod(client, namespace).await?;
        let located = locate(&pod)?;
        Ok(InPod {
            client: client.clone(),
            namespace: namespace.to_owned(),
            pod: pod.name_any(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            image: format!("{repository}:{tag}"),
            resources,
            located: Mutex::new(located),
        })
    }

    /// The process's PID and cgroup now; found again when the container
    /// was replaced (a restart gives it a new ID, process and cgroup).
    pub async fn current(&self) -> Result<(u32, Cgroup)> {
        {
            let located = self.located.lock().map_err(|_| "poisoned")?;
            let alive = std::fs::read_to_string(format!("/proc/{}/cgroup", located.pid))
                .is_ok_and(|text| text.contains(&located.container_id));
            if alive {
                return Ok((located.pid, located.cgroup.clone()));
            }
        }
        let pod = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .get(&self.pod)
            .await?;
        let found = locate(&pod)?;
        let current = (found.pid, found.cgroup.clone());
        *self.located.lock().map_err(|_| "poisoned")? = found;
        Ok(current)
    }

    pub async fn restarts(&self) -> Result<Restarts> {
        let pod = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .get(&self.pod)
            .await?;
        let status = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.into_iter().next())
            .ok_or("the operator's pod has no container status")?;
        Ok(Restarts {
            count: status.restart_count,
            last_reason: status
                .last_state
                .and_then(|s| s.terminated)
                .and_then(|t| t.reason),
        })
    }

    pub fn pid(&self) -> u32 {
        self.located.lock().map_or(0, |l| l.pid)
    }

    /// Keeps the container's log beside the report, then `helm uninstall`.
    pub fn uninstall(&self) -> Result<PathBuf> {
        let log = support::repo()
            .join("target")
            .join("bench")
            .join("pod-operator.log");
        let text = support::try_run("kubectl", &["logs", "-n", &self.namespace, &self.pod], None)
            .unwrap_or_else(|error| format!("(no log: {error})"));
        std::fs::write(&log, text)?;
        support::try_run(
            "helm",
            &[
                "uninstall",
                RELEASE,
                "-n",
                &self.namespace,
                "--wait",
                "--timeout",
                "60s",
            ],
            None,
        )?;
        Ok(log)
    }
}

/// The release's one pod once it is Ready.
async fn ready_pod(client: &Client, namespace: &str) -> Result<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let started = Instant::now();
    loop {
        let pods = api.list(&ListParams::default().labels(&selector)).await?;
        let ready = pods.items.into_iter().find(|pod| {
            pod.metadata.deletion_timestamp.is_none()
                && pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        if let Some(pod) = ready {
            return Ok(pod);
        }
        if started.elapsed() > READY_TIMEOUT {
            let described = support::try_run(
                "kubectl",
                &["describe", "pods", "-n", namespace, "-l", &selector],
                None,
            )
            .unwrap_or_default();
            return Err(format!(
                "the operator's pod was not Ready within {} s:\n{described}",
                READY_TIMEOUT.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The container's process on this host, by the container's ID.
fn locate(pod: &Pod) -> Result<Located> {
    let container_id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.as_deref())
        .ok_or_else(|| format!("{}: no container ID yet", pod.name_any()))?;
    // `containerd://<id>`.
    let container_id = container_id
        .rsplit("://")
        .next()
        .unwrap_or(container_id)
        .to_owned();
    let pid = cgroup::container_pid(&container_id)?;
    Ok(Located {
        cgroup: Cgroup::of(pid)?,
        container_id,
        pid,
    })
}
