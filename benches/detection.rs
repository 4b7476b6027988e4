//! Detection latency and operator memory on the local control plane (`make
//! bench`, which starts a fresh cluster and builds the release binary).
//!
//! Latency: N guarded Deployments (HGO_BENCH_N, default 20) each get one pod
//! labelled `healing-guard.io/inject=crashloop`, one after another; a sample is
//! the time from that label patch to a watch seeing the Incident.
//!
//! Memory: the operator's VmRSS/VmHWM when idle, after detection, with 1,000
//! and 10,000 pods in the cluster (unguarded, in another namespace; the
//! operator watches every namespace) and with
//! 1,000 more guarded pods.
//!
//! The operator runs as in the integration tests, whose harness
//! (`tests/cluster/support.rs`) this shares: the release binary, as the Helm
//! chart's ServiceAccount with the chart's RBAC, but watching every namespace.
//!
//! Under `cargo test` (which runs benches without `--bench`) it does nothing.

use std::{
    collections::BTreeMap,
    process::ExitCode,
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use healing_guard_operator::crd::{Incident, RemediationPolicy};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Node, Pod},
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

// The integration tests' harness: client and CRDs, namespaces, polling, the
// operator process. The bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/cluster/support.rs"]
mod support;

use support::{Launch, Operator, poll, try_create_deployment};

type BenchError = support::Error;
type Result<T> = std::result::Result<T, BenchError>;

const FIELD_MANAGER: &str = "healing-guard-bench";
const INJECT_LABEL: &str = "healing-guard.io/inject";
/// Label on the guarded Deployments, which the bench policy selects.
const GUARD_LABEL: (&str, &str) = ("bench", "guarded");
/// Pod label of the latency Deployments, to list their pods.
const ROLE_LABEL: &str = "bench-role";
const DEFAULT_GUARDED: usize = 20;
/// Cluster sizes (pods in every namespace) at which memory is read.
const CLUSTER_SIZES: [usize; 2] = [1_000, 10_000];
/// Replicas of the one big guarded Deployment: what guarding pods costs.
const WIDE_GUARDED: i32 = 1_000;
/// Time the operator gets after a change before its memory is read.
const SETTLE: Duration = Duration::from_secs(10);
/// Longest wait for one Incident after its pod was labelled.
const DETECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Filler pods created at once; the API server, not the bench, sets the pace.
const CREATE_CONCURRENCY: usize = 32;

#[tokio::main]
async fn main() -> ExitCode {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("detection bench: skipped (run it with `make bench`)");
        return ExitCode::SUCCESS;
    }
    match bench().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn bench() -> Result<()> {
    let started = Instant::now();
    let guarded = guarded_count()?;
    let client = support::try_client().await?;
    let nodes = check_capacity(&client, guarded).await?;

    let mut namespaces = Vec::new();
    let outcome = run_with_operator(&client, nodes, guarded, &mut namespaces).await;
    delete_namespaces(&client, &namespaces).await;
    let report = outcome?;
    report.print(started.elapsed());
    Ok(())
}

/// Makes the namespaces (into `namespaces`, for deletion afterwards), runs
/// the operator and the measurements, stops the operator.
async fn run_with_operator(
    client: &Client,
    nodes: Vec<String>,
    guarded: usize,
    namespaces: &mut Vec<String>,
) -> Result<Report> {
    for prefix in ["hgo-bench", "hgo-bench-filler", "hgo-bench-fix"] {
        namespaces.push(support::try_namespace(client, prefix).await?);
    }
    let bench = Bench {
        client: client.clone(),
        namespace: namespaces[0].clone(),
        filler_namespace: namespaces[1].clone(),
        fix_namespace: namespaces[2].clone(),
        nodes,
        guarded,
    };
    let operator = Operator::launch(&Launch {
        namespace: &bench.namespace,
        // Cluster-wide, as in production: the unguarded pods of other
        // namespaces are visible to it, and must cost it nothing.
        namespaced: false,
        extra: &[],
        log_filter: "warn",
        failpoints: "",
        capture_logs: false,
        chart_values: &[],
    })
    .await?;
    let log = operator.log.clone();
    eprintln!(
        "[bench] operator {} started (pid {}), log {}",
        env!("CARGO_BIN_EXE_healing-guard-operator"),
        operator.pid(),
        log.display()
    );
    let outcome = run(&bench, &operator).await;
    if !operator.terminate() {
        eprintln!("[bench] the operator did not stop cleanly on SIGTERM");
    }
    outcome.map_err(|error| format!("{error} (operator log: {})", log.display()).into())
}

/// Deletion finishes in the background; a throwaway cluster is gone soon anyway.
async fn delete_namespaces(client: &Client, namespaces: &[String]) {
    let api: Api<Namespace> = Api::all(client.clone());
    for namespace in namespaces {
        match api.delete(namespace, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => eprintln!("[bench] could not delete namespace {namespace}: {error}"),
        }
    }
}

struct Bench {
    client: Client,
    /// Where the operator runs and the guarded Deployments live.
    namespace: String,
    /// Where the unguarded pods live.
    filler_namespace: String,
    /// Where bad releases are rolled back (an Auto policy).
    fix_namespace: String,
    /// Node names, for binding filler pods directly.
    nodes: Vec<String>,
    guarded: usize,
}

struct Report {
    guarded: usize,
    operator_pid: u32,
    latencies: Vec<Duration>,
    /// Bad release -> rollback applied, and -> incident resolved (verified).
    remediations: Vec<(Duration, Duration)>,
    operator_histogram: Option<Histogram>,
    memory: Vec<MemoryPoint>,
}

struct MemoryPoint {
    label: String,
    pods_in_cluster: usize,
    guarded_pods: usize,
    memory: Memory,
    /// How long it took to bring the cluster to this point (settling excluded).
    took: Duration,
}

async fn run(bench: &Bench, operator: &Operator) -> Result<Report> {
    create_policy(bench).await?;
    let mut memory = Vec::new();

    let setup = Instant::now();
    for index in 0..bench.guarded {
        let deployment = guarded_deployment(&latency_name(index), 1, "latency");
        try_create_deployment(&bench.client, &bench.namespace, deployment).await?;
    }
    let pods = wait_latency_pods_ready(bench).await?;
    let took = setup.elapsed();
    tokio::time::sleep(SETTLE).await;
    memory.push(MemoryPoint {
        label: format!("idle, {} guarded Deployments", bench.guarded),
        pods_in_cluster: pods_in_cluster(&bench.client).await?,
        guarded_pods: bench.guarded,
        memory: operator_memory(operator)?,
        took,
    });

    let detection = Instant::now();
    let latencies = measure_latencies(bench, &pods).await?;
    heal(bench, &pods).await?;
    let took = detection.elapsed();
    tokio::time::sleep(SETTLE).await;
    memory.push(MemoryPoint {
        label: format!("after detection, {} incidents", bench.guarded),
        pods_in_cluster: pods_in_cluster(&bench.client).await?,
        guarded_pods: bench.guarded,
        memory: operator_memory(operator)?,
        took,
    });
    let operator_histogram = Histogram::parse(
        &operator.try_metrics().await?,
        "healing_guard_detection_latency_seconds",
    );
    let remediations = measure_remediations(bench).await?;

    let mut filler_created = 0;
    for size in CLUSTER_SIZES {
        let growing = Instant::now();
        let present = pods_in_cluster(&bench.client).await?;
        let missing = size.saturating_sub(present);
        create_filler_pods(bench, filler_created, missing).await?;
        filler_created += missing;
        let took = growing.elapsed();
        eprintln!(
            "[bench] {missing} unguarded pods created in {:.1} s",
            took.as_secs_f64()
        );
        tokio::time::sleep(SETTLE).await;
        memory.push(MemoryPoint {
            label: format!("{size} pods in the cluster"),
            pods_in_cluster: pods_in_cluster(&bench.client).await?,
            guarded_pods: bench.guarded,
            memory: operator_memory(operator)?,
            took,
        });
    }

    let growing = Instant::now();
    let wide = guarded_deployment("wide", WIDE_GUARDED, "wide");
    try_create_deployment(&bench.client, &bench.namespace, wide).await?;
    wait_ready_replicas(bench, "wide", WIDE_GUARDED).await?;
    let took = growing.elapsed();
    eprintln!(
        "[bench] {WIDE_GUARDED} guarded pods ready in {:.1} s",
        took.as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let wide = usize::try_from(WIDE_GUARDED)?;
    memory.push(MemoryPoint {
        label: format!("+ {wide} guarded pods (1 Deployment)"),
        pods_in_cluster: pods_in_cluster(&bench.client).await?,
        guarded_pods: bench.guarded + wide,
        memory: operator_memory(operator)?,
        took,
    });

    Ok(Report {
        guarded: bench.guarded,
        operator_pid: operator.pid(),
        latencies,
        remediations,
        operator_histogram,
        memory,
    })
}

/// Failure to remediation: a bad release of each of N guarded Deployments, one
/// after another; a sample is the time from the release to the operator's
/// rollback being on the Deployment, and to its incident resolving (the
/// verification hold-down is 1 s).
async fn measure_remediations(bench: &Bench) -> Result<Vec<(Duration, Duration)>> {
    let namespace = &bench.fix_namespace;
    let policy: RemediationPolicy = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"name": "bench-fix"},
        "spec": {
            "mode": "Auto",
            "targets": [{"kind": "Deployment", "selector": {"matchLabels": {GUARD_LABEL.0: GUARD_LABEL.1}}}],
            "rules": [{
                "name": "bad-release",
                "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                "severity": "P0",
                "type": "ServiceOutage",
                "actions": [{"action": "rollback"}],
                "verify": {"timeout": "2m", "holdDown": "1s"}
            }]
        }
    }))?;
    Api::<RemediationPolicy>::namespaced(bench.client.clone(), namespace)
        .create(&PostParams::default(), &policy)
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(bench.client.clone(), namespace);
    let incidents: Api<Incident> = Api::namespaced(bench.client.clone(), namespace);
    for index in 0..bench.guarded {
        let deployment = guarded_deployment(&fix_name(index), 1, "fix");
        try_create_deployment(&bench.client, namespace, deployment).await?;
    }
    for index in 0..bench.guarded {
        let name = fix_name(index);
        poll(&format!("{name} available"), DETECTION_TIMEOUT, || {
            let deployments = deployments.clone();
            let name = name.clone();
            async move {
                let available = deployments
                    .get(&name)
                    .await?
                    .status
                    .and_then(|s| s.available_replicas);
                Ok::<_, kube::Error>((available == Some(1)).then_some(()))
            }
        })
        .await?;
    }
    let mut samples = Vec::new();
    for index in 0..bench.guarded {
        tokio::time::sleep(pause_before(index)).await;
        let name = fix_name(index);
        let bad =
            json!({"spec": {"template": {"metadata": {"labels": {INJECT_LABEL: "crashloop"}}}}});
        deployments
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(&bad),
            )
            .await?;
        let released = Instant::now();
        let mut applied = None;
        loop {
            if released.elapsed() > DETECTION_TIMEOUT * 2 {
                return Err(format!(
                    "{name}: not remediated within {} s",
                    (DETECTION_TIMEOUT * 2).as_secs()
                )
                .into());
            }
            if applied.is_none() {
                let deployment = deployments.get(&name).await?;
                if deployment
                    .annotations()
                    .contains_key("healing-guard.io/remediation-step")
                {
                    applied = Some(released.elapsed());
                }
            }
            if let Some(applied) = applied {
                let incident = incidents.get_opt(&format!("{name}-crashloop")).await?;
                let phase = incident.and_then(|i| i.status?.phase);
                if phase == Some(healing_guard_operator::crd::Phase::Resolved) {
                    samples.push((applied, released.elapsed()));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(samples)
}

fn fix_name(index: usize) -> String {
    format!("fix-{index:03}")
}

fn guarded_count() -> Result<usize> {
    match std::env::var("HGO_BENCH_N") {
        Err(_) => Ok(DEFAULT_GUARDED),
        Ok(value) => match value.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("HGO_BENCH_N wants a positive number, got {value:?}").into()),
        },
    }
}

fn latency_name(index: usize) -> String {
    format!("guarded-{index:03}")
}

/// Fails early when the nodes cannot hold every pod the bench makes: the
/// guarded ones must be scheduled to become healthy.
async fn check_capacity(client: &Client, guarded: usize) -> Result<Vec<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await?;
    let capacity: usize = list
        .items
        .iter()
        .filter_map(|node| node.status.as_ref()?.allocatable.as_ref()?.get("pods"))
        .filter_map(count_quantity)
        .sum();
    let largest = CLUSTER_SIZES.iter().max().copied().unwrap_or_default();
    let needed = largest.max(guarded) + usize::try_from(WIDE_GUARDED)?;
    if capacity < needed {
        return Err(format!(
            "the nodes hold {capacity} pods, the bench needs {needed}: start the cluster with \
             more capacity (`make bench` does; see `cluster/up.sh --help`, --max-pods)"
        )
        .into());
    }
    Ok(list.items.iter().map(ResourceExt::name_any).collect())
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

async fn create_policy(bench: &Bench) -> Result<()> {
    let policy: RemediationPolicy = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"name": "bench"},
        "spec": {
            "mode": "DryRun",
            "targets": [{"kind": "Deployment", "selector": {"matchLabels": {GUARD_LABEL.0: GUARD_LABEL.1}}}],
            "rules": [{
                "name": "crash",
                "when": {"symptom": "CrashLoopBackOff", "minRestarts": 1},
                "severity": "P1",
                "type": "ServiceOutage",
                "actions": [{"action": "restart"}]
            }]
        }
    }))?;
    let api: Api<RemediationPolicy> = Api::namespaced(bench.client.clone(), &bench.namespace);
    api.create(&PostParams::default(), &policy).await?;
    Ok(())
}

/// A Deployment the bench policy guards; its pods carry `bench-role=<role>`.
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

/// Waits until every latency Deployment has one ready pod; returns the pod of each.
async fn wait_latency_pods_ready(bench: &Bench) -> Result<BTreeMap<String, String>> {
    let api: Api<Pod> = Api::namespaced(bench.client.clone(), &bench.namespace);
    let params = ListParams::default().labels(&format!("{ROLE_LABEL}=latency"));
    poll(
        "the guarded pods to be ready",
        Duration::from_secs(120),
        || {
            let (api, params) = (api.clone(), params.clone());
            async move {
                let pods = api.list(&params).await?.items;
                let ready: BTreeMap<String, String> = pods
                    .iter()
                    .filter(|pod| is_ready(pod) && pod.metadata.deletion_timestamp.is_none())
                    .filter_map(|pod| Some((pod.labels().get("app")?.clone(), pod.name_any())))
                    .collect();
                let settled = pods.len() == bench.guarded && ready.len() == bench.guarded;
                Ok::<_, kube::Error>(settled.then_some(ready))
            }
        },
    )
    .await
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

async fn wait_ready_replicas(bench: &Bench, name: &str, replicas: i32) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(bench.client.clone(), &bench.namespace);
    // The controller manager creates pods at its client's 20 requests/s.
    poll(
        &format!("{replicas} ready replicas of {name}"),
        Duration::from_secs(600),
        || {
            let api = api.clone();
            async move {
                let ready = api
                    .get_status(name)
                    .await?
                    .status
                    .and_then(|status| status.ready_replicas)
                    .unwrap_or_default();
                Ok::<_, kube::Error>((ready >= replicas).then_some(()))
            }
        },
    )
    .await
}

/// What the Incident watch reports to the measuring loop.
enum Seen {
    /// The initial list is done: later events are new.
    Synced,
    /// An event of the Incident for this target, and when it arrived.
    Incident { target: String, at: Instant },
}

/// Injects a crashloop into each guarded pod in turn and times the Incident's arrival.
async fn measure_latencies(
    bench: &Bench,
    pods: &BTreeMap<String, String>,
) -> Result<Vec<Duration>> {
    let incidents: Api<Incident> = Api::namespaced(bench.client.clone(), &bench.namespace);
    let (sender, mut seen) = mpsc::unbounded_channel();
    let watch = tokio::spawn(async move {
        let mut events = watcher(incidents, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let message = match event {
                Ok(watcher::Event::InitDone) => Seen::Synced,
                Ok(watcher::Event::Apply(incident) | watcher::Event::InitApply(incident)) => {
                    Seen::Incident {
                        target: incident.spec.target.name,
                        at: Instant::now(),
                    }
                }
                Ok(_) => continue,
                Err(error) => {
                    eprintln!("[bench] incident watch error: {error}; retrying");
                    continue;
                }
            };
            if sender.send(message).is_err() {
                return;
            }
        }
    });
    let measured = async {
        while !matches!(seen.recv().await, Some(Seen::Synced) | None) {}
        let api: Api<Pod> = Api::namespaced(bench.client.clone(), &bench.namespace);
        let inject = json!({"metadata": {"labels": {INJECT_LABEL: "crashloop"}}});
        let mut latencies = Vec::with_capacity(pods.len());
        for (index, (deployment, pod)) in pods.iter().enumerate() {
            tokio::time::sleep(pause_before(index)).await;
            let patched = Instant::now();
            api.patch(pod, &PatchParams::default(), &Patch::Merge(&inject))
                .await?;
            let arrived = tokio::time::timeout(DETECTION_TIMEOUT, async {
                loop {
                    match seen.recv().await {
                        Some(Seen::Incident { target, at }) if target == *deployment => {
                            return Ok(at);
                        }
                        Some(_) => {}
                        None => return Err("the incident watch ended"),
                    }
                }
            })
            .await
            .map_err(|_| {
                format!(
                    "no Incident for {deployment} within {} s",
                    DETECTION_TIMEOUT.as_secs()
                )
            })??;
            latencies.push(arrived.duration_since(patched));
        }
        Ok::<_, BenchError>(latencies)
    }
    .await;
    watch.abort();
    let latencies = measured?;
    eprintln!("[bench] {} detections measured", latencies.len());
    Ok(latencies)
}

/// Pauses of 0 to 1 s, spread evenly (golden-ratio steps). Back-to-back
/// injections would fall in step with the detector's periodic writes (every
/// 500 ms) and all measure the same phase of it.
fn pause_before(index: usize) -> Duration {
    const GOLDEN_RATIO_FRACTION: f64 = 0.618_033_988_749_895;
    Duration::from_secs_f64((index as f64 * GOLDEN_RATIO_FRACTION).fract())
}

/// Removes the injected failure, so crashlooping pods do not keep the
/// operator busy while memory is measured.
async fn heal(bench: &Bench, pods: &BTreeMap<String, String>) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(bench.client.clone(), &bench.namespace);
    let heal = json!({"metadata": {"labels": {INJECT_LABEL: null}}});
    for pod in pods.values() {
        api.patch(pod, &PatchParams::default(), &Patch::Merge(&heal))
            .await?;
    }
    Ok(())
}

/// Creates `count` unguarded pods, bound to the nodes directly.
///
/// Through Deployments they would come at the controller manager's client
/// rate limit (20 requests/s: 10,000 pods took 8.5 min here). The operator
/// watches neither kind, and bound pods skip the scheduler's queue, which the
/// guarded pods made later would otherwise wait behind.
async fn create_filler_pods(bench: &Bench, first: usize, count: usize) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(bench.client.clone(), &bench.filler_namespace);
    let node_count = bench.nodes.len().max(1);
    futures::stream::iter(first..first + count)
        .map(|index| {
            let api = api.clone();
            let node = bench.nodes.get(index % node_count).cloned();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("filler-{index:05}"), "labels": {"app": "filler"}},
                    "spec": {
                        "nodeName": node,
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "app", "image": "registry.local/filler:1"}]
                    }
                }))?;
                api.create(&PostParams::default(), &pod).await?;
                Ok::<_, BenchError>(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// Pods in every namespace, counted page by page from metadata only.
async fn pods_in_cluster(client: &Client) -> Result<usize> {
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

/// The operator's VmRSS and VmHWM, from /proc/PID/status.
fn operator_memory(operator: &Operator) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", operator.pid()))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .ok_or_else(|| format!("no {name} in /proc/PID/status"))?;
        let kib = line.trim().trim_end_matches("kB").trim().parse::<u64>()?;
        Ok(kib)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

#[derive(Clone, Copy)]
struct Memory {
    rss_kib: u64,
    /// VmHWM: the highest RSS so far.
    peak_kib: u64,
}

/// A Prometheus histogram read from the text format.
struct Histogram {
    /// (upper bound, cumulative count), in order.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn parse(text: &str, name: &str) -> Option<Histogram> {
        let bucket_prefix = format!("{name}_bucket{{le=\"");
        let mut buckets = Vec::new();
        let (mut sum, mut count) = (None, None);
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket_prefix) {
                let (bound, value) = rest.split_once("\"}")?;
                buckets.push((bound.parse().ok()?, value.trim().parse().ok()?));
            } else if let Some(value) = line.strip_prefix(&format!("{name}_sum ")) {
                sum = value.trim().parse().ok();
            } else if let Some(value) = line.strip_prefix(&format!("{name}_count ")) {
                count = value.trim().parse().ok();
            }
        }
        Some(Histogram {
            buckets,
            sum: sum?,
            count: count?,
        })
    }

    /// The upper bound of the bucket that holds quantile `q`.
    fn quantile_bound(&self, q: f64) -> Option<f64> {
        let rank = (q * self.count as f64).ceil().max(1.0);
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative as f64 >= rank)
            .map(|(bound, _)| *bound)
    }
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

impl Report {
    fn print(&self, wall: Duration) {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let seconds = |d: Option<Duration>| {
            d.map_or_else(|| "-".to_owned(), |d| format!("{:.3} s", d.as_secs_f64()))
        };
        println!();
        println!(
            "healing-guard-operator detection bench: {} guarded Deployments, operator pid {}",
            self.guarded, self.operator_pid
        );
        println!();
        println!("Detection latency, label patch -> Incident seen by a watch:");
        println!(
            "  count {}   p50 {}   p99 {}   min {}   max {}",
            sorted.len(),
            seconds(percentile(&sorted, 0.50)),
            seconds(percentile(&sorted, 0.99)),
            seconds(sorted.first().copied()),
            seconds(sorted.last().copied()),
        );
        match &self.operator_histogram {
            Some(histogram) if histogram.count > 0 => {
                let bound = |q| {
                    histogram
                        .quantile_bound(q)
                        .map_or_else(|| "-".to_owned(), |b| format!("<= {b} s"))
                };
                println!(
                    "Operator's healing_guard_detection_latency_seconds (failure seen -> Incident created):"
                );
                println!(
                    "  count {}   sum {:.3} s   mean {:.3} s   p50 {}   p99 {}",
                    histogram.count,
                    histogram.sum,
                    histogram.sum / histogram.count as f64,
                    bound(0.50),
                    bound(0.99),
                );
            }
            _ => println!("Operator's healing_guard_detection_latency_seconds: no samples"),
        }
        let applied: Vec<Duration> = {
            let mut all: Vec<Duration> = self.remediations.iter().map(|(a, _)| *a).collect();
            all.sort();
            all
        };
        let resolved: Vec<Duration> = {
            let mut all: Vec<Duration> = self.remediations.iter().map(|(_, r)| *r).collect();
            all.sort();
            all
        };
        println!();
        println!("Failure to remediation, bad release -> rollback on the Deployment:");
        println!(
            "  count {}   p50 {}   p99 {}   max {}",
            applied.len(),
            seconds(percentile(&applied, 0.50)),
            seconds(percentile(&applied, 0.99)),
            seconds(applied.last().copied()),
        );
        println!(
            "Failure to resolution, bad release -> rollback verified (1 s hold-down) and incident Resolved:"
        );
        println!(
            "  count {}   p50 {}   p99 {}   max {}",
            resolved.len(),
            seconds(percentile(&resolved, 0.50)),
            seconds(percentile(&resolved, 0.99)),
            seconds(resolved.last().copied()),
        );
        println!();
        println!("Operator memory (/proc/PID/status):");
        println!(
            "  {:<40} {:>8} {:>8} {:>10} {:>10} {:>9}",
            "point", "pods", "guarded", "VmRSS", "VmHWM", "took"
        );
        for point in &self.memory {
            println!(
                "  {:<40} {:>8} {:>8} {:>10} {:>10} {:>8.1}s",
                point.label,
                point.pods_in_cluster,
                point.guarded_pods,
                mebibytes(point.memory.rss_kib),
                mebibytes(point.memory.peak_kib),
                point.took.as_secs_f64(),
            );
        }
        println!(
            "  pods: in every namespace; guarded: pods the operator watches; took: to reach the point, \
             before {} s of settling",
            SETTLE.as_secs()
        );
        println!();
        println!("Wall time: {:.0} s", wall.as_secs_f64());
    }
}

fn mebibytes(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
