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
//! 7. 30,000 pods, 20,000 guarded: 10,000 more guarded pods and 10,000 that
//!    no policy guards beside them, and a third round on those, when the
//!    nodes hold them (`make bench` starts its cluster so; HGO_BENCH_SCALE=0
//!    skips it). Should the control plane give out, the report says what
//!    and at what size, and the rest of the run stands.
//!
//! Memory (VmRSS, VmHWM) is read after each step, after 10 s of settling;
//! the operator's CPU time every second, and what each phase used of it.
//! The results are printed and written to `target/bench/latest.json` (the
//! figures alone to `target/bench/figures.json`), and compared with the last
//! committed run's, `benches/baseline.json`, figure by figure.
//!
//! Where the operator runs (`HGO_BENCH_OPERATOR`, `operator.rs`): `host`
//! (the default) as in the integration tests, whose harness
//! (`tests/cluster/support.rs`) this shares: the release binary, as the Helm
//! chart's ServiceAccount with the chart's RBAC, but watching every
//! namespace. `pod`: as users run it, its image installed by the chart (its
//! default resources) on the cluster's real node (`in_pod.rs`); its cgroup's
//! memory and CPU throttling are read too, and the figures are printed
//! beside the last host run's and kept with them, under `pod`. `make bench`
//! runs both, a fresh cluster each.
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
use serde_json::Value;

// The integration tests' harness: client and CRDs, namespaces, polling, the
// operator process. The bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/cluster/support.rs"]
mod support;

#[path = "detection/baseline.rs"]
mod baseline;
#[path = "detection/cgroup.rs"]
mod cgroup;
#[path = "detection/cpu.rs"]
mod cpu;
#[path = "detection/in_pod.rs"]
mod in_pod;
#[path = "detection/latency.rs"]
mod latency;
#[path = "detection/memory.rs"]
mod memory;
#[path = "detection/operator.rs"]
mod operator;
#[path = "detection/reconcile.rs"]
mod reconcile;
#[path = "detection/report.rs"]
mod report;
#[path = "detection/requests.rs"]
mod requests;
#[path = "detection/workloads.rs"]
mod workloads;

use memory::MemoryPoint;
use operator::{Mode, Running};
use report::{Phase, Report};

type BenchError = support::Error;
type Result<T> = std::result::Result<T, BenchError>;

/// Samples in each latency round: one per Deployment.
const SAMPLES: usize = 200;
/// The first set of guarded Deployments: 200 x 5 = 1,000 pods.
const LATENCY_REPLICAS: i32 = 5;
/// The second: 200 x 45 = 9,000 more, 10,000 guarded pods in all.
const BIG_REPLICAS: i32 = 45;
/// The third round's guarded Deployments: 250 x 40 = 10,000 more, 20,000
/// guarded pods in all (each below the bench policy's floor, as the
/// others); and 100 x 100 pods beside them that no policy guards, in the same
/// namespace (so the operator's pod watch holds them too): 30,000 pods.
const SCALE_DEPLOYMENTS: usize = 250;
const SCALE_REPLICAS: i32 = 40;
const UNGUARDED_DEPLOYMENTS: usize = 100;
const UNGUARDED_REPLICAS: i32 = 100;
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
    let mode = Mode::from_env()?;
    let client = support::try_client().await?;
    workloads::check_capacity(
        &client,
        SAMPLES * usize::try_from(LATENCY_REPLICAS + BIG_REPLICAS)?,
    )
    .await?;
    let memory_only = std::env::var("HGO_BENCH_MEMORY_ONLY").is_ok_and(|v| v == "1");
    let mut namespaces = Vec::new();
    let outcome = run_with_operator(&client, mode, &mut namespaces, memory_only).await;
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
    let (json, figures) = match mode {
        Mode::Host => {
            baseline::compare(&json, "");
            let figures = baseline::figures_only(&json);
            (json, figures)
        }
        // Beside the host run's figures (the last one `make bench` wrote),
        // and kept with them, under "pod".
        Mode::Pod => {
            let host = report::last_host_run();
            report::print_side_by_side(host.as_ref(), &json);
            baseline::compare(&json, "/pod");
            let with_pod = |host: Option<Value>, pod: Value| {
                let mut root = match host {
                    Some(Value::Object(root)) => root,
                    _ => serde_json::Map::new(),
                };
                root.insert("pod".into(), pod);
                Value::Object(root)
            };
            let figures = with_pod(
                host.as_ref().map(baseline::figures_only),
                baseline::figures_only(&json),
            );
            (with_pod(host, json), figures)
        }
    };
    let path = report::write_json(&json, &figures)?;
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

/// Makes the namespaces (into `created`, for deletion afterwards), starts
/// the operator where `mode` says, runs the measurements (its CPU sampled
/// meanwhile), stops the operator.
async fn run_with_operator(
    client: &Client,
    mode: Mode,
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
    // Cluster-wide, as in production.
    let operator = Running::start(mode, client, &namespaces.guarded).await?;
    eprintln!("[bench] {}", operator.describe());
    let log = operator.log();
    let sampler = cpu::Sampler::default();
    let measured = async {
        if memory_only {
            run_memory(client, &namespaces, &operator)
                .await
                .map(Outcome::Memory)
        } else {
            run(client, &namespaces, &operator, &sampler)
                .await
                .map(|report| Outcome::Full(Box::new(report)))
        }
    };
    let outcome = tokio::select! {
        outcome = measured => outcome,
        never = sampler.run(&operator) => match never {},
    };
    if let Err(error) = operator.stop() {
        eprintln!("[bench] stopping the operator: {error}");
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

/// Whether the third round runs: wanted (HGO_BENCH_SCALE is not 0), and
/// the nodes hold 20,000 pods more than there are.
async fn scale_wanted(client: &Client) -> Result<bool> {
    if std::env::var("HGO_BENCH_SCALE").is_ok_and(|value| value == "0") {
        eprintln!("[bench] the round at 30,000 pods is skipped (HGO_BENCH_SCALE=0)");
        return Ok(false);
    }
    let needed = workloads::pods_in_cluster(client).await?
        + workloads::guarded_pod_count(SCALE_REPLICAS, SCALE_DEPLOYMENTS)?
        + workloads::guarded_pod_count(UNGUARDED_REPLICAS, UNGUARDED_DEPLOYMENTS)?;
    let capacity = workloads::capacity(client).await?;
    if capacity < needed {
        eprintln!(
            "[bench] the round at 30,000 pods is skipped: the nodes hold {capacity} pods, it needs {needed} (make bench starts the cluster with room)"
        );
    }
    Ok(capacity >= needed)
}

/// 10,000 more guarded pods and 10,000 unguarded beside them, their memory
/// point, and the round at 20,000 guarded pods.
async fn scale_round<F>(
    client: &Client,
    guarded: &str,
    guarded_before: usize,
    memory: &mut Vec<MemoryPoint>,
    point: &F,
) -> Result<latency::Round>
where
    F: AsyncFn(&str, usize, Duration) -> Result<MemoryPoint>,
{
    let phase = Instant::now();
    workloads::create_unguarded(
        client,
        guarded,
        "free",
        UNGUARDED_REPLICAS,
        UNGUARDED_DEPLOYMENTS,
    )
    .await?;
    let huge = workloads::create_guarded(
        client,
        guarded,
        "huge",
        "huge",
        SCALE_REPLICAS,
        SCALE_DEPLOYMENTS,
    )
    .await?;
    let at_20000 =
        guarded_before + workloads::guarded_pod_count(SCALE_REPLICAS, SCALE_DEPLOYMENTS)?;
    workloads::wait_ready(client, guarded, at_20000).await?;
    let took = phase.elapsed();
    eprintln!("[bench] 30,000 pods ready: {:.1} s", took.as_secs_f64());
    memory.push(point("guarded_20000", at_20000, took).await?);
    let samples = &huge[..SAMPLES.min(huge.len())];
    latency::round(client, guarded, "huge", samples).await
}

/// Times each phase of the run, and the operator's CPU in it, for the report.
struct Phases<'a> {
    done: Vec<Phase>,
    sampler: &'a cpu::Sampler,
}

impl Phases<'_> {
    fn done(&mut self, key: &'static str, name: &str, since: Instant) {
        let took = since.elapsed();
        eprintln!("[bench] {name}: {:.1} s", took.as_secs_f64());
        self.done.push(Phase {
            key,
            name: name.to_owned(),
            took,
            cpu: self.sampler.between(since, Instant::now()),
        });
    }
}

/// The operator's memory after `SETTLE`, at a point of the run.
async fn point(
    client: &Client,
    operator: &Running,
    label: &str,
    guarded_pods: usize,
    took: Duration,
) -> Result<MemoryPoint> {
    tokio::time::sleep(SETTLE).await;
    let reading = operator.reading().await?;
    let point = MemoryPoint {
        label: label.to_owned(),
        pods_in_cluster: workloads::pods_in_cluster(client).await?,
        guarded_pods,
        memory: reading.memory,
        cgroup: reading.cgroup,
        restarts: reading.restarts,
        took,
    };
    eprintln!(
        "[bench] memory at {label}: VmRSS {} KiB, VmHWM {} KiB",
        point.memory.rss_kib, point.memory.peak_kib
    );
    Ok(point)
}

/// Grants the remediator in the bench's namespaces and makes the bench
/// policy. Since the operator acts as each namespace's remediator (issue
/// 14), the bench grants it, as a namespace's owner would; without, nothing
/// is changed.
async fn prepare(client: &Client, namespaces: &Namespaces) -> Result<()> {
    for namespace in [&namespaces.guarded, &namespaces.incidents] {
        workloads::grant_remediator(client, namespace).await?;
    }
    workloads::create_bench_policy(client, &namespaces.guarded, BIG_REPLICAS + 1).await
}

/// The memory points of `run`, in the same order, without the rounds and
/// the reconcile samples.
async fn run_memory(
    client: &Client,
    namespaces: &Namespaces,
    operator: &Running,
) -> Result<Vec<MemoryPoint>> {
    let guarded = &namespaces.guarded;
    let point = async |label: &str, guarded_pods: usize, took: Duration| {
        point(client, operator, label, guarded_pods, took).await
    };
    let mut memory = Vec::new();
    let phase = Instant::now();
    prepare(client, namespaces).await?;
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

async fn run(
    client: &Client,
    namespaces: &Namespaces,
    operator: &Running,
    sampler: &cpu::Sampler,
) -> Result<Report> {
    let started = Instant::now();
    let guarded = &namespaces.guarded;
    let mut phases = Phases {
        done: Vec::new(),
        sampler,
    };
    let mut memory = Vec::new();
    let point = async |label: &str, guarded_pods: usize, took: Duration| {
        point(client, operator, label, guarded_pods, took).await
    };

    let phase = Instant::now();
    prepare(client, namespaces).await?;
    memory.push(point("idle", 0, phase.elapsed()).await?);

    // 1. 1,000 guarded pods.
    let phase = Instant::now();
    let latency =
        workloads::create_guarded(client, guarded, "lat", "latency", LATENCY_REPLICAS, SAMPLES)
            .await?;
    let at_1000 = workloads::guarded_pod_count(LATENCY_REPLICAS, SAMPLES)?;
    workloads::wait_ready(client, guarded, at_1000).await?;
    let took = phase.elapsed();
    phases.done("create_1000", "1,000 guarded pods created and ready", phase);
    memory.push(point("guarded_1000", at_1000, took).await?);

    // 2. The round at 1,000.
    let phase = Instant::now();
    let round_1000 = latency::round(client, guarded, "latency", &latency).await?;
    phases.done(
        "round_1000",
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
    phases.done(
        "create_10000",
        "9,000 more guarded pods created and ready",
        phase,
    );
    memory.push(point("guarded_10000", at_10000, took).await?);

    // 4. The round at 10,000.
    let phase = Instant::now();
    let round_10000 = latency::round(client, guarded, "big", &big).await?;
    phases.done(
        "round_10000",
        "round at 10,000 guarded pods (idle window, samples, resolution)",
        phase,
    );

    // 5. Policies that select nothing.
    let phase = Instant::now();
    workloads::create_idle_policies(client, &namespaces.policies, POLICIES).await?;
    let took = phase.elapsed();
    phases.done(
        "policies_1000",
        "1,000 policies created and reconciled",
        phase,
    );
    memory.push(point("policies_1000", at_10000, took).await?);

    // 6. One more incident, with none and with 1,000 open.
    let phase = Instant::now();
    let mut reconciles = reconcile::Reconciles::start(client, &namespaces.incidents).await?;
    let reconcile_empty = reconciles.samples("one", RECONCILE_SAMPLES).await?;
    phases.done("reconcile_empty", "incident reconcile, 20 samples", phase);
    let phase = Instant::now();
    reconciles.open(OPEN_INCIDENTS).await?;
    let took = phase.elapsed();
    phases.done(
        "incidents_1000",
        "1,000 open Incidents created and reconciled",
        phase,
    );
    memory.push(point("incidents_1000", at_10000, took).await?);
    let phase = Instant::now();
    let reconcile_with_1000 = reconciles.samples("more", RECONCILE_SAMPLES).await?;
    phases.done(
        "reconcile_with_1000",
        "incident reconcile with 1,000 open, 20 samples",
        phase,
    );

    // 7. 30,000 pods, 20,000 guarded.
    let at_20000 = if scale_wanted(client).await? {
        let phase = Instant::now();
        let outcome = scale_round(client, guarded, at_10000, &mut memory, &point).await;
        phases.done(
            "scale_30000",
            "30,000 pods (20,000 guarded): created, ready, round",
            phase,
        );
        Some(outcome.map_err(|error| error.to_string()))
    } else {
        None
    };

    let final_reading = operator.reading().await?;
    Ok(Report {
        mode: operator.mode(),
        operator: operator.summary(),
        samples_per_round: SAMPLES,
        rounds: [round_1000, round_10000],
        memory,
        final_reading,
        reconcile_empty,
        reconcile_with_1000,
        at_20000,
        phases: phases.done,
        cpu_run: sampler.between(started, Instant::now()),
        wall: Duration::ZERO,
    })
}
