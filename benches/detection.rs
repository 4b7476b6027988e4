//! The operator against the floor, at scale, on the local control plane
//! (`make bench`: a fresh cluster with 3 kwok nodes x 4,000 pods, the release
//! binary). One run, one operator, cluster-wide, as in production:
//!
//! 1. A guarded namespace whose Auto policy `bench` evicts a crash-looping
//!    pod of any Deployment labelled `bench=guarded` (a DeletePods restart;
//!    its floor of ready replicas keeps it to the failing pod, see
//!    `workloads::create_bench_policy`); 200 Deployments x 5 replicas, 1,000
//!    guarded pods.
//! 2. A latency round at 1,000 guarded pods: one crash-loop per Deployment
//!    (the pod label `healing-guard.io/inject=crashloop`, kwok's stage),
//!    injected open-loop, 0-1 s apart. Each sample is timed from the label
//!    patch three ways: `bare_watch`, a bare kube-runtime pod watcher seeing
//!    the failure (the floor: what any watch-based operator waits for);
//!    `detection`, the Incident seen; `first_write`, the operator's mark
//!    (`healing-guard.io/remediation-step`) seen on the Deployment. The
//!    round ends when every incident is Resolved. The API server's audit log
//!    gives the operator's requests per incident: gross, idle (the rate of
//!    an idle window just before the round, over the round's length) and
//!    net.
//! 3. 200 more Deployments x 45 replicas: 10,000 guarded pods.
//! 4. The same round on those.
//! 5. 1,000 RemediationPolicies that select nothing.
//! 6. Declared Incidents: creation to the first phase written, with none and
//!    then with 1,000 open Incidents in the namespace.
//!
//! Memory (VmRSS, VmHWM) is read after each step, after 10 s of settling.
//! The results are printed and written to `target/bench/latest.json` (the
//! figures alone to `target/bench/figures.json`), and compared with the last
//! committed run's, `benches/baseline.json`, figure by figure.
//!
//! The operator runs as in the integration tests, whose harness
//! (`tests/cluster/support.rs`) this shares: the release binary, as the Helm
//! chart's ServiceAccount with the chart's RBAC, but watching every namespace.
//!
//! `HGO_BENCH_MEMORY_ONLY=1` skips the latency rounds and the reconcile
//! samples: the memory points alone, in some 5 minutes, printed and not
//! written (the points are not comparable with a full run's, whose rounds
//! leave 400 resolved Incidents behind).
//!
//! Under `cargo test` (which runs benches without `--bench`) it does nothing.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::DeleteParams};

// The integration tests' harness: client and CRDs, namespaces, polling, the
// operator process. The bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/cluster/support.rs"]
mod support;

#[path = "detection/baseline.rs"]
mod baseline;
#[path = "detection/latency.rs"]
mod latency;
#[path = "detection/memory.rs"]
mod memory;
#[path = "detection/reconcile.rs"]
mod reconcile;
#[path = "detection/report.rs"]
mod report;
#[path = "detection/requests.rs"]
mod requests;
#[path = "detection/workloads.rs"]
mod workloads;

use memory::MemoryPoint;
use report::{Phase, Report};
use support::{Launch, Operator};

type BenchError = support::Error;
type Result<T> = std::result::Result<T, BenchError>;

/// Samples in each latency round: one per Deployment.
const SAMPLES: usize = 200;
/// The first set of guarded Deployments: 200 x 5 = 1,000 pods.
const LATENCY_REPLICAS: i32 = 5;
/// The second: 200 x 45 = 9,000 more, 10,000 guarded pods in all.
const BIG_REPLICAS: i32 = 45;
/// Policies that select nothing, and open Incidents, at their memory points.
const POLICIES: usize = 1_000;
const OPEN_INCIDENTS: usize = 1_000;
/// Declared Incidents timed, before and after the open ones.
const RECONCILE_SAMPLES: usize = 20;
/// Time the operator gets after a change before its memory is read.
const SETTLE: Duration = Duration::from_secs(10);

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
    let client = support::try_client().await?;
    workloads::check_capacity(
        &client,
        SAMPLES * usize::try_from(LATENCY_REPLICAS + BIG_REPLICAS)?,
    )
    .await?;
    let memory_only = std::env::var("HGO_BENCH_MEMORY_ONLY").is_ok_and(|v| v == "1");
    let mut namespaces = Vec::new();
    let outcome = run_with_operator(&client, &mut namespaces, memory_only).await;
    delete_namespaces(&client, &namespaces).await;
    let mut report = match outcome? {
        Outcome::Full(report) => report,
        Outcome::Memory(points) => {
            report::print_memory(&points);
            return Ok(());
        }
    };
    report.wall = started.elapsed();
    report.print();
    let json = report.json();
    baseline::compare(&json);
    let path = report.write_json(&json, &baseline::figures_only(&json))?;
    println!("JSON: {}", path.display());
    Ok(())
}

/// The namespaces the bench makes; all are deleted at the end.
struct Namespaces {
    /// The operator's, with the guarded Deployments and the `bench` policy.
    guarded: String,
    policies: String,
    incidents: String,
}

/// What a run measured: everything, or the memory points alone.
enum Outcome {
    Full(Box<Report>),
    Memory(Vec<MemoryPoint>),
}

/// Makes the namespaces (into `created`, for deletion afterwards), runs the
/// operator and the measurements, stops the operator.
async fn run_with_operator(
    client: &Client,
    created: &mut Vec<String>,
    memory_only: bool,
) -> Result<Outcome> {
    for prefix in ["hgo-bench", "hgo-bench-policies", "hgo-bench-incidents"] {
        created.push(support::try_namespace(client, prefix).await?);
    }
    let namespaces = Namespaces {
        guarded: created[0].clone(),
        policies: created[1].clone(),
        incidents: created[2].clone(),
    };
    let operator = Operator::launch(&Launch {
        namespace: &namespaces.guarded,
        // Cluster-wide, as in production.
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
    let outcome = if memory_only {
        run_memory(client, &namespaces, &operator)
            .await
            .map(Outcome::Memory)
    } else {
        run(client, &namespaces, &operator)
            .await
            .map(|report| Outcome::Full(Box::new(report)))
    };
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

/// Times each phase of the run, for the report.
struct Phases(Vec<Phase>);

impl Phases {
    fn done(&mut self, name: &str, since: Instant) {
        let took = since.elapsed();
        eprintln!("[bench] {name}: {:.1} s", took.as_secs_f64());
        self.0.push(Phase {
            name: name.to_owned(),
            took,
        });
    }
}

/// The operator's memory after `SETTLE`, at a point of the run.
async fn point(
    client: &Client,
    operator: &Operator,
    label: &str,
    guarded_pods: usize,
    took: Duration,
) -> Result<MemoryPoint> {
    tokio::time::sleep(SETTLE).await;
    let point = MemoryPoint {
        label: label.to_owned(),
        pods_in_cluster: workloads::pods_in_cluster(client).await?,
        guarded_pods,
        memory: memory::read(operator.pid())?,
        took,
    };
    eprintln!(
        "[bench] memory at {label}: VmRSS {} KiB, VmHWM {} KiB",
        point.memory.rss_kib, point.memory.peak_kib
    );
    Ok(point)
}

/// The memory points of `run`, in the same order, without the rounds and
/// the reconcile samples.
async fn run_memory(
    client: &Client,
    namespaces: &Namespaces,
    operator: &Operator,
) -> Result<Vec<MemoryPoint>> {
    let guarded = &namespaces.guarded;
    let point = async |label: &str, guarded_pods: usize, took: Duration| {
        point(client, operator, label, guarded_pods, took).await
    };
    let mut memory = Vec::new();
    let phase = Instant::now();
    for namespace in [guarded, &namespaces.incidents] {
        workloads::grant_remediator(client, namespace).await?;
    }
    workloads::create_bench_policy(client, guarded, BIG_REPLICAS + 1).await?;
    memory.push(point("idle", 0, phase.elapsed()).await?);

    let phase = Instant::now();
    workloads::create_guarded(client, guarded, "lat", "latency", LATENCY_REPLICAS, SAMPLES).await?;
    let at_1000 = workloads::guarded_pod_count(LATENCY_REPLICAS, SAMPLES)?;
    workloads::wait_ready(client, guarded, at_1000).await?;
    memory.push(point("guarded_1000", at_1000, phase.elapsed()).await?);

    let phase = Instant::now();
    workloads::create_guarded(client, guarded, "big", "big", BIG_REPLICAS, SAMPLES).await?;
    let at_10000 = at_1000 + workloads::guarded_pod_count(BIG_REPLICAS, SAMPLES)?;
    workloads::wait_ready(client, guarded, at_10000).await?;
    memory.push(point("guarded_10000", at_10000, phase.elapsed()).await?);

    let phase = Instant::now();
    workloads::create_idle_policies(client, &namespaces.policies, POLICIES).await?;
    memory.push(point("policies_1000", at_10000, phase.elapsed()).await?);

    let phase = Instant::now();
    let mut reconciles = reconcile::Reconciles::start(client, &namespaces.incidents).await?;
    reconciles.open(OPEN_INCIDENTS).await?;
    memory.push(point("incidents_1000", at_10000, phase.elapsed()).await?);
    Ok(memory)
}

async fn run(client: &Client, namespaces: &Namespaces, operator: &Operator) -> Result<Report> {
    let guarded = &namespaces.guarded;
    let mut phases = Phases(Vec::new());
    let mut memory = Vec::new();
    let point = async |label: &str, guarded_pods: usize, took: Duration| {
        point(client, operator, label, guarded_pods, took).await
    };

    let phase = Instant::now();
    // Since the operator acts as each namespace's remediator (issue 14), the
    // bench grants it, as a namespace's owner would; without, nothing is changed.
    for namespace in [guarded, &namespaces.incidents] {
        workloads::grant_remediator(client, namespace).await?;
    }
    workloads::create_bench_policy(client, guarded, BIG_REPLICAS + 1).await?;
    memory.push(point("idle", 0, phase.elapsed()).await?);

    // 1. 1,000 guarded pods.
    let phase = Instant::now();
    let latency =
        workloads::create_guarded(client, guarded, "lat", "latency", LATENCY_REPLICAS, SAMPLES)
            .await?;
    let at_1000 = workloads::guarded_pod_count(LATENCY_REPLICAS, SAMPLES)?;
    workloads::wait_ready(client, guarded, at_1000).await?;
    let took = phase.elapsed();
    phases.done("1,000 guarded pods created and ready", phase);
    memory.push(point("guarded_1000", at_1000, took).await?);

    // 2. The round at 1,000.
    let phase = Instant::now();
    let round_1000 = latency::round(client, guarded, "latency", &latency).await?;
    phases.done(
        "round at 1,000 guarded pods (idle window, samples, resolution)",
        phase,
    );

    // 3. 10,000 guarded pods.
    let phase = Instant::now();
    let big =
        workloads::create_guarded(client, guarded, "big", "big", BIG_REPLICAS, SAMPLES).await?;
    let at_10000 = at_1000 + workloads::guarded_pod_count(BIG_REPLICAS, SAMPLES)?;
    workloads::wait_ready(client, guarded, at_10000).await?;
    let took = phase.elapsed();
    phases.done("9,000 more guarded pods created and ready", phase);
    memory.push(point("guarded_10000", at_10000, took).await?);

    // 4. The round at 10,000.
    let phase = Instant::now();
    let round_10000 = latency::round(client, guarded, "big", &big).await?;
    phases.done(
        "round at 10,000 guarded pods (idle window, samples, resolution)",
        phase,
    );

    // 5. Policies that select nothing.
    let phase = Instant::now();
    workloads::create_idle_policies(client, &namespaces.policies, POLICIES).await?;
    let took = phase.elapsed();
    phases.done("1,000 policies created and reconciled", phase);
    memory.push(point("policies_1000", at_10000, took).await?);

    // 6. One more incident, with none and with 1,000 open.
    let phase = Instant::now();
    let mut reconciles = reconcile::Reconciles::start(client, &namespaces.incidents).await?;
    let reconcile_empty = reconciles.samples("one", RECONCILE_SAMPLES).await?;
    phases.done("incident reconcile, 20 samples", phase);
    let phase = Instant::now();
    reconciles.open(OPEN_INCIDENTS).await?;
    let took = phase.elapsed();
    phases.done("1,000 open Incidents created and reconciled", phase);
    memory.push(point("incidents_1000", at_10000, took).await?);
    let phase = Instant::now();
    let reconcile_with_1000 = reconciles.samples("more", RECONCILE_SAMPLES).await?;
    phases.done("incident reconcile with 1,000 open, 20 samples", phase);

    Ok(Report {
        operator_pid: operator.pid(),
        samples_per_round: SAMPLES,
        rounds: [round_1000, round_10000],
        memory,
        reconcile_empty,
        reconcile_with_1000,
        phases: phases.0,
        wall: Duration::ZERO,
    })
}
