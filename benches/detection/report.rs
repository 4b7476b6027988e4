//! The results: a table on stdout and the same as JSON in
//! `target/bench/latest.json`; after a run in a pod, its figures beside the
//! host run's, a column each.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::{
    Result, cpu,
    latency::{self, Round, Sample},
    memory::MemoryPoint,
    operator::{Mode, Reading},
    requests::PerIncident,
};

/// The guarded pods of each round, as its name says.
const ROUNDS: [(&str, usize); 2] = [("1,000", 1_000), ("10,000", 10_000)];
/// One of a sample's times.
type Measure = fn(&Sample) -> Duration;
const MEASURES: [(&str, Measure); 3] = [
    ("bare_watch", |s| s.bare_watch),
    ("detection", |s| s.detection),
    ("first_write", |s| s.first_write),
];

pub struct Phase {
    /// Its name in the JSON report.
    pub key: &'static str,
    pub name: String,
    pub took: Duration,
    /// The operator's CPU in the phase.
    pub cpu: Option<cpu::Use>,
}

pub struct Report {
    pub mode: Mode,
    /// Where and how the operator ran.
    pub operator: String,
    pub samples_per_round: usize,
    pub rounds: [Round; 2],
    pub memory: Vec<MemoryPoint>,
    /// The operator at the end of the run (in a pod: restarts, OOM kills).
    pub final_reading: Reading,
    /// Declared Incident created -> first phase seen, sorted.
    pub reconcile_empty: Vec<Duration>,
    pub reconcile_with_1000: Vec<Duration>,
    /// The third round, at 20,000 guarded pods of 30,000: None when not
    /// run, the error when the cluster gave out.
    pub at_20000: Option<std::result::Result<Round, String>>,
    pub phases: Vec<Phase>,
    /// The operator's CPU over the whole run.
    pub cpu_run: Option<cpu::Use>,
    pub wall: Duration,
}

/// p50, p99 and max of sorted samples (nearest rank).
struct Stats {
    samples: usize,
    p50: Option<Duration>,
    p99: Option<Duration>,
    max: Option<Duration>,
}

impl Stats {
    fn of(sorted: &[Duration]) -> Stats {
        Stats {
            samples: sorted.len(),
            p50: percentile(sorted, 0.50),
            p99: percentile(sorted, 0.99),
            max: sorted.last().copied(),
        }
    }

    fn json(&self) -> Value {
        let seconds = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        json!({
            "p50_s": seconds(self.p50),
            "p99_s": seconds(self.p99),
            "max_s": seconds(self.max),
            "samples": self.samples,
        })
    }
}

/// The nearest-rank percentile of sorted samples.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.3} s", d.as_secs_f64()))
}

fn signed(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| format!("{s:+.3} s"))
}

fn ratio(a: Option<Duration>, floor: Option<Duration>) -> String {
    match (a, floor) {
        (Some(a), Some(floor)) if !floor.is_zero() => {
            format!("{:.1}x", a.as_secs_f64() / floor.as_secs_f64())
        }
        _ => "-".to_owned(),
    }
}

/// The memory points, as a table (with the container's cgroup, in a pod).
pub fn print_memory(points: &[MemoryPoint]) {
    println!(
        "Operator memory (/proc/PID/status, after {} s of settling):",
        crate::SETTLE.as_secs()
    );
    let in_pod = points.iter().any(|p| p.cgroup.is_some());
    let cgroup_header = if in_pod {
        format!(" {:>13} {:>13} {:>13}", "cg usage", "cg working", "cg peak")
    } else {
        String::new()
    };
    println!(
        "  {:<16} {:>8} {:>8} {:>11} {:>11} {:>9}{cgroup_header}",
        "point", "pods", "guarded", "VmRSS", "VmHWM", "took"
    );
    for point in points {
        let cgroup = point.cgroup.map_or_else(String::new, |c| {
            format!(
                " {:>9.1} MiB {:>9.1} MiB {:>9} MiB",
                bytes_mib(c.memory_bytes),
                bytes_mib(c.working_set_bytes),
                c.memory_peak_bytes
                    .map_or_else(|| "-".to_owned(), |b| format!("{:.1}", bytes_mib(b)))
            )
        });
        println!(
            "  {:<16} {:>8} {:>8} {:>7.1} MiB {:>7.1} MiB {:>8.1}s{cgroup}",
            point.label,
            point.pods_in_cluster,
            point.guarded_pods,
            mebibytes(point.memory.rss_kib),
            mebibytes(point.memory.peak_kib),
            point.took.as_secs_f64(),
        );
    }
    println!(
        "  pods: in every namespace; guarded: pods the bench policy guards; took: to reach the point"
    );
    if in_pod {
        println!(
            "  cg: the container's cgroup (usage; working set = usage - inactive file, what the \
             kubelet evicts by; peak = the highest usage so far)"
        );
    }
}

fn mebibytes(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    /// The RSS growth from 1,000 to 10,000 guarded pods, per pod added.
    fn kib_per_guarded_pod(&self) -> Option<f64> {
        let at = |label: &str| self.memory.iter().find(|p| p.label == label);
        let (small, big) = (at("guarded_1000")?, at("guarded_10000")?);
        let added = big.guarded_pods.checked_sub(small.guarded_pods)?;
        (added > 0)
            .then(|| (big.memory.rss_kib as f64 - small.memory.rss_kib as f64) / added as f64)
    }

    pub fn print(&self) {
        println!();
        println!(
            "healing-guard-operator bench: the operator against the floor (operator: {}; {} samples per round)",
            self.operator, self.samples_per_round
        );
        for ((name, _), round) in ROUNDS.iter().zip(&self.rounds) {
            print_round(name, round);
        }
        match &self.at_20000 {
            Some(Ok(round)) => print_round("20,000 (of 30,000 in the cluster)", round),
            Some(Err(error)) => {
                println!();
                println!("The round at 30,000 pods (20,000 guarded) gave out: {error}");
            }
            None => {}
        }
        println!();
        print_memory(&self.memory);
        match self.kib_per_guarded_pod() {
            Some(kib) => println!(
                "  memory per guarded pod (RSS at 10,000 - at 1,000) / 9,000: {kib:.2} KiB"
            ),
            None => println!("  memory per guarded pod: -"),
        }
        if let Some(usage) = self.final_reading.cgroup {
            println!(
                "  at the end: limits memory {}, CPU {}; OOM kills {}; restarts {}",
                usage
                    .memory_limit_bytes
                    .map_or_else(|| "none".to_owned(), |b| format!("{:.0} MiB", bytes_mib(b))),
                usage
                    .cpu_limit_cores
                    .map_or_else(|| "none".to_owned(), |c| format!("{c:.2} cores")),
                usage
                    .oom_kills
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                self.final_reading.restarts.as_ref().map_or_else(
                    || "-".to_owned(),
                    |r| match &r.last_reason {
                        Some(reason) => format!("{} (the last: {reason})", r.count),
                        None => r.count.to_string(),
                    }
                ),
            );
        }
        println!();
        println!(
            "Incident reconcile, a declared Incident created -> its first phase seen by a watch:"
        );
        for (label, sorted) in [
            ("empty", &self.reconcile_empty),
            ("with_1000", &self.reconcile_with_1000),
        ] {
            let stats = Stats::of(sorted);
            println!(
                "  {:<10} n {:>3}   p50 {}   p99 {}   max {}",
                label,
                stats.samples,
                seconds(stats.p50),
                seconds(stats.p99),
                seconds(stats.max)
            );
        }
        println!();
        let in_pod = self.memory.iter().any(|p| p.cgroup.is_some());
        println!(
            "Phases, and the operator's CPU in each (/proc/PID/stat read every second; busiest: \
             the most between two readings){}:",
            if in_pod {
                "; throttled: CFS periods throttled / all, and time"
            } else {
                ""
            }
        );
        for phase in &self.phases {
            println!(
                "  {:>7.1} s  {:<64} {}",
                phase.took.as_secs_f64(),
                phase.name,
                cpu_text(phase.cpu)
            );
        }
        println!(
            "  {:>9}  {:<64} {}",
            "",
            "the whole run",
            cpu_text(self.cpu_run)
        );
        println!("Wall time: {:.0} s", self.wall.as_secs_f64());
    }

    pub fn json(&self) -> Value {
        let [at_1000, at_10000] = &self.rounds;
        let mut root = Map::new();
        root.insert("date".into(), json!(Timestamp::now().to_string()));
        root.insert("commit".into(), json!(commit()));
        root.insert("operator".into(), json!(self.mode.name()));
        root.insert("operator_run".into(), json!(self.operator));
        root.insert("samples_per_round".into(), json!(self.samples_per_round));
        for (name, value) in round_json(at_1000) {
            root.insert(name, value);
        }
        root.insert("at_10000".into(), Value::Object(round_json(at_10000)));
        let mut over_floor =
            json!({"at_1000": over_floor_json(at_1000), "at_10000": over_floor_json(at_10000)});
        match &self.at_20000 {
            Some(Ok(round)) => {
                root.insert("at_20000".into(), Value::Object(round_json(round)));
                over_floor["at_20000"] = over_floor_json(round);
            }
            Some(Err(error)) => {
                root.insert("at_20000".into(), json!({"gave_out": error}));
            }
            None => {}
        }
        root.insert("over_floor".into(), over_floor);
        let memory = |part: fn(&MemoryPoint) -> u64| {
            let points: Map<String, Value> = self
                .memory
                .iter()
                .map(|p| (p.label.clone(), json!(mebibytes(part(p)))))
                .collect();
            Value::Object(points)
        };
        root.insert("rss_mib".into(), memory(|p| p.memory.rss_kib));
        root.insert("hwm_mib".into(), memory(|p| p.memory.peak_kib));
        let pods: Map<String, Value> = self
            .memory
            .iter()
            .map(|p| {
                let value = json!({"in_cluster": p.pods_in_cluster, "guarded": p.guarded_pods, "took_s": p.took.as_secs_f64()});
                (p.label.clone(), value)
            })
            .collect();
        root.insert("memory_points".into(), Value::Object(pods));
        if self.memory.iter().any(|p| p.cgroup.is_some()) {
            let cgroups: Map<String, Value> = self
                .memory
                .iter()
                .filter_map(|p| {
                    let c = p.cgroup?;
                    let value = json!({
                        "usage": bytes_mib(c.memory_bytes),
                        "working_set": bytes_mib(c.working_set_bytes),
                        "peak": c.memory_peak_bytes.map(bytes_mib),
                        "restarts": p.restarts.as_ref().map(|r| r.count),
                    });
                    Some((p.label.clone(), value))
                })
                .collect();
            root.insert("cgroup_mib".into(), Value::Object(cgroups));
        }
        if let Some(usage) = self.final_reading.cgroup {
            let restarts = self.final_reading.restarts.as_ref();
            root.insert(
                "container".into(),
                json!({
                    "memory_limit_mib": usage.memory_limit_bytes.map(bytes_mib),
                    "cpu_limit_cores": usage.cpu_limit_cores,
                    "memory_peak_mib": usage.memory_peak_bytes.map(bytes_mib),
                    "oom_kills": usage.oom_kills,
                    "restarts": restarts.map(|r| r.count),
                    "last_termination": restarts.and_then(|r| r.last_reason.clone()),
                    "periods": usage.periods,
                    "throttled_periods": usage.throttled_periods,
                    "throttled_s": usage.throttled_s,
                }),
            );
        }
        root.insert(
            "kib_per_guarded_pod".into(),
            json!(self.kib_per_guarded_pod()),
        );
        root.insert(
            "incident_reconcile".into(),
            json!({
                "empty": Stats::of(&self.reconcile_empty).json(),
                "with_1000": Stats::of(&self.reconcile_with_1000).json(),
            }),
        );
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|p| json!({"phase": p.name, "took_s": p.took.as_secs_f64(), "cpu": cpu_json(p.cpu)}))
            .collect();
        root.insert("phases".into(), json!(phases));
        let mut cpu: Map<String, Value> = self
            .phases
            .iter()
            .map(|p| (p.key.to_owned(), cpu_json(p.cpu)))
            .collect();
        cpu.insert("run".into(), cpu_json(self.cpu_run));
        root.insert("cpu".into(), Value::Object(cpu));
        root.insert("wall_s".into(), json!(self.wall.as_secs_f64()));
        Value::Object(root)
    }
}

/// Writes the JSON report, and its figures alone (what a baseline keeps);
/// returns the report's path.
pub fn write_json(report: &Value, figures: &Value) -> Result<PathBuf> {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("figures.json"),
        serde_json::to_string_pretty(figures)?,
    )?;
    let path = dir.join("latest.json");
    std::fs::write(&path, serde_json::to_string_pretty(report)?)?;
    Ok(path)
}

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench")
}

/// The last host run's report (`target/bench/latest.json`, which `make
/// bench` writes just before the run in a pod), if that is what it holds.
pub fn last_host_run() -> Option<Value> {
    let text = std::fs::read_to_string(bench_dir().join("latest.json")).ok()?;
    let report: Value = serde_json::from_str(&text).ok()?;
    let host = report.get("operator").is_none_or(|o| o == "host");
    (host && report.pointer("/rss_mib/idle").is_some()).then_some(report)
}

fn bytes_mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn cpu_text(cpu: Option<cpu::Use>) -> String {
    let Some(cpu) = cpu else {
        return "CPU -".to_owned();
    };
    let throttled = cpu
        .throttling
        .map_or_else(String::new, |(periods, throttled, time)| {
            format!(", throttled {throttled} / {periods}, {time:.2} s")
        });
    format!(
        "CPU {:>6.1} s, mean {:.2}, busiest {:.2} cores{throttled}",
        cpu.cpu_s, cpu.mean_cores, cpu.busiest_cores
    )
}

fn cpu_json(cpu: Option<cpu::Use>) -> Value {
    let Some(cpu) = cpu else {
        return Value::Null;
    };
    let (periods, throttled_periods, throttled_s) = match cpu.throttling {
        Some((periods, throttled, time)) => (Some(periods), Some(throttled), Some(time)),
        None => (None, None, None),
    };
    json!({
        "cpu_s": cpu.cpu_s,
        "mean_cores": cpu.mean_cores,
        "busiest_cores": cpu.busiest_cores,
        "periods": periods,
        "throttled_periods": throttled_periods,
        "throttled_s": throttled_s,
    })
}

/// The three measures, the requests and the round's timing, as JSON keys.
fn round_json(round: &Round) -> Map<String, Value> {
    let mut keys = Map::new();
    for (name, measure) in MEASURES {
        keys.insert(
            name.into(),
            Stats::of(&latency::sorted(&round.samples, measure)).json(),
        );
    }
    keys.insert(
        "requests_per_incident".into(),
        requests_json(&round.requests),
    );
    keys.insert("window_s".into(), json!(round.window.as_secs_f64()));
    keys.insert(
        "idle_window_s".into(),
        json!(round.idle_window.as_secs_f64()),
    );
    keys.insert(
        "resolved_after_last_injection_s".into(),
        json!(round.resolved_after.as_secs_f64()),
    );
    keys.insert("unresolved".into(), json!(round.unresolved));
    let raw: Vec<Value> = round
        .samples
        .iter()
        .map(|s| {
            json!({
                "deployment": s.deployment,
                "bare_watch_s": s.bare_watch.as_secs_f64(),
                "detection_s": s.detection.as_secs_f64(),
                "detection_recorded_s": s.detection_recorded.as_secs_f64(),
                "phased_s": s.phased.as_secs_f64(),
                "first_write_s": s.first_write.as_secs_f64(),
            })
        })
        .collect();
    let stages: Map<String, Value> = latency::STAGES
        .iter()
        .map(|stage| {
            let lengths = latency::stage_lengths(&round.samples, stage);
            (
                stage.name.to_owned(),
                json!({"p50_s": percentile(&lengths, 0.50), "p99_s": percentile(&lengths, 0.99),
                       "max_s": lengths.last()}),
            )
        })
        .collect();
    keys.insert("stages".into(), Value::Object(stages));
    keys.insert("raw_samples".into(), json!(raw));
    keys
}

fn over_floor_json(round: &Round) -> Value {
    let mut value = Map::new();
    for (name, measure) in &MEASURES[1..] {
        let differences = latency::over_floor(&round.samples, *measure);
        value.insert(
            (*name).into(),
            json!({"p50_s": percentile(&differences, 0.50), "p99_s": percentile(&differences, 0.99)}),
        );
    }
    Value::Object(value)
}

fn requests_json(requests: &PerIncident) -> Value {
    let by_resource: BTreeMap<&String, Value> = requests
        .by_resource
        .iter()
        .map(|(key, (gross, idle, net))| (key, json!({"gross": gross, "idle": idle, "net": net})))
        .collect();
    json!({
        "gross": requests.gross,
        "idle": requests.idle,
        "net": requests.net,
        "lists": requests.lists,
        "lists_by_resource": requests.lists_by_resource,
        "by_resource": by_resource,
        "total_round": requests.total_round,
        "total_idle": requests.total_idle,
    })
}

fn print_round(name: &str, round: &Round) {
    println!();
    println!(
        "Latency at {name} guarded pods, label patch -> seen by a watch ({} samples; round {:.0} s):",
        round.samples.len(),
        round.window.as_secs_f64()
    );
    println!(
        "  {:<12} {:>4} {:>9} {:>9} {:>9}  {:>9} {:>9}  {:>21}",
        "", "n", "p50", "p99", "max", "p50/floor", "p99/floor", "over floor p50 / p99"
    );
    let floor = Stats::of(&latency::sorted(&round.samples, MEASURES[0].1));
    for (index, (label, measure)) in MEASURES.iter().enumerate() {
        let stats = Stats::of(&latency::sorted(&round.samples, *measure));
        let over = if index == 0 {
            "(the floor)".to_owned()
        } else {
            let differences = latency::over_floor(&round.samples, *measure);
            format!(
                "{} / {}",
                signed(percentile(&differences, 0.50)),
                signed(percentile(&differences, 0.99))
            )
        };
        println!(
            "  {:<12} {:>4} {:>9} {:>9} {:>9}  {:>9} {:>9}  {:>21}",
            label,
            stats.samples,
            seconds(stats.p50),
            seconds(stats.p99),
            seconds(stats.max),
            ratio(stats.p50, floor.p50),
            ratio(stats.p99, floor.p99),
            over
        );
    }
    println!(
        "  bare_watch: a bare pod watcher sees the failure; detection: the Incident is seen; \
         first_write: the operator's mark is seen on the Deployment"
    );
    println!("  the first write, stage by stage (each sample's own stage lengths):");
    println!("  {:<36} {:>9} {:>9} {:>9}", "", "p50", "p99", "max");
    for stage in &latency::STAGES {
        let lengths = latency::stage_lengths(&round.samples, stage);
        println!(
            "  {:<36} {:>9} {:>9} {:>9}",
            stage.name,
            signed(percentile(&lengths, 0.50)),
            signed(percentile(&lengths, 0.99)),
            signed(lengths.last().copied())
        );
    }
    if round.unresolved.is_empty() {
        println!(
            "  every incident Resolved {:.1} s after the last injection",
            round.resolved_after.as_secs_f64()
        );
    } else {
        println!(
            "  !!! {} incidents not Resolved: {}",
            round.unresolved.len(),
            round.unresolved.join(", ")
        );
    }
    let requests = &round.requests;
    println!();
    println!(
        "Operator requests per incident at {name} guarded pods (audit log; {} in the round, {} in the {:.0} s idle window before it; \
         idle = that window's rate over the round's length):",
        requests.total_round,
        requests.total_idle,
        round.idle_window.as_secs_f64()
    );
    println!("  {:<40} {:>8} {:>8} {:>8}", "verb", "gross", "idle", "net");
    for (verb, gross) in &requests.gross {
        let idle = requests.idle.get(verb).copied().unwrap_or_default();
        let net = requests.net.get(verb).copied().unwrap_or_default();
        println!("  {verb:<40} {gross:>8.2} {idle:>8.2} {net:>8.2}");
    }
    let total = |part: &BTreeMap<String, f64>| part.values().sum::<f64>();
    println!(
        "  {:<40} {:>8.2} {:>8.2} {:>8.2}",
        "all",
        total(&requests.gross),
        total(&requests.idle),
        total(&requests.net)
    );
    println!("  by verb and resource:");
    for (key, (gross, idle, net)) in &requests.by_resource {
        println!("    {key:<38} {gross:>8.2} {idle:>8.2} {net:>8.2}");
    }
    println!(
        "  (periodic requests slower than the windows, such as watches renewed every \
         few minutes, fall in one window or the other: net may be off by them, even negative)"
    );
    if requests.lists == 0 {
        println!("  LIST requests in the round: 0");
    } else {
        println!(
            "  !!! LIST requests in the round: {} ({})",
            requests.lists,
            requests
                .lists_by_resource
                .iter()
                .map(|(resource, n)| format!("{resource}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// The checked-out commit, when git can tell.
fn commit() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// How a side-by-side figure is shown.
#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    MiB,
    Cores,
    Count,
}

/// The figures printed a column each, host and pod: (name, JSON pointer, unit).
const SIDE_BY_SIDE: [(&str, &str, Unit); 35] = [
    (
        "1,000: bare watch (floor) p99",
        "/bare_watch/p99_s",
        Unit::Seconds,
    ),
    ("1,000: detection p50", "/detection/p50_s", Unit::Seconds),
    ("1,000: detection p99", "/detection/p99_s", Unit::Seconds),
    (
        "1,000: first write p50",
        "/first_write/p50_s",
        Unit::Seconds,
    ),
    (
        "1,000: first write p99",
        "/first_write/p99_s",
        Unit::Seconds,
    ),
    (
        "1,000: first write p99 over floor",
        "/over_floor/at_1000/first_write/p99_s",
        Unit::Seconds,
    ),
    (
        "1,000: requests per incident (net)",
        "/requests_per_incident/net",
        Unit::Count,
    ),
    (
        "10,000: bare watch (floor) p99",
        "/at_10000/bare_watch/p99_s",
        Unit::Seconds,
    ),
    (
        "10,000: detection p50",
        "/at_10000/detection/p50_s",
        Unit::Seconds,
    ),
    (
        "10,000: detection p99",
        "/at_10000/detection/p99_s",
        Unit::Seconds,
    ),
    (
        "10,000: first write p50",
        "/at_10000/first_write/p50_s",
        Unit::Seconds,
    ),
    (
        "10,000: first write p99",
        "/at_10000/first_write/p99_s",
        Unit::Seconds,
    ),
    (
        "10,000: first write p99 over floor",
        "/over_floor/at_10000/first_write/p99_s",
        Unit::Seconds,
    ),
    (
        "10,000: requests per incident (net)",
        "/at_10000/requests_per_incident/net",
        Unit::Count,
    ),
    (
        "declared Incident reconcile p50",
        "/incident_reconcile/empty/p50_s",
        Unit::Seconds,
    ),
    (
        "... with 1,000 open, p50",
        "/incident_reconcile/with_1000/p50_s",
        Unit::Seconds,
    ),
    ("VmRSS idle", "/rss_mib/idle", Unit::MiB),
    (
        "VmRSS 1,000 guarded pods",
        "/rss_mib/guarded_1000",
        Unit::MiB,
    ),
    (
        "VmRSS 10,000 guarded pods",
        "/rss_mib/guarded_10000",
        Unit::MiB,
    ),
    (
        "VmRSS + 1,000 policies",
        "/rss_mib/policies_1000",
        Unit::MiB,
    ),
    (
        "VmRSS + 1,000 open Incidents",
        "/rss_mib/incidents_1000",
        Unit::MiB,
    ),
    ("VmHWM at the end", "/hwm_mib/incidents_1000", Unit::MiB),
    (
        "cgroup working set, + 1,000 open Incidents",
        "/cgroup_mib/incidents_1000/working_set",
        Unit::MiB,
    ),
    ("cgroup usage peak", "/container/memory_peak_mib", Unit::MiB),
    (
        "CPU, 9,000 pods created: mean",
        "/cpu/create_10000/mean_cores",
        Unit::Cores,
    ),
    (
        "CPU, 9,000 pods created: busiest second",
        "/cpu/create_10000/busiest_cores",
        Unit::Cores,
    ),
    (
        "CPU, round at 1,000: mean",
        "/cpu/round_1000/mean_cores",
        Unit::Cores,
    ),
    (
        "CPU, round at 1,000: busiest second",
        "/cpu/round_1000/busiest_cores",
        Unit::Cores,
    ),
    (
        "CPU, round at 10,000: mean",
        "/cpu/round_10000/mean_cores",
        Unit::Cores,
    ),
    (
        "CPU, round at 10,000: busiest second",
        "/cpu/round_10000/busiest_cores",
        Unit::Cores,
    ),
    ("CPU, the whole run (s)", "/cpu/run/cpu_s", Unit::Count),
    (
        "CFS periods throttled, the whole run",
        "/cpu/run/throttled_periods",
        Unit::Count,
    ),
    ("container restarts", "/container/restarts", Unit::Count),
    (
        "OOM kills in the container's cgroup",
        "/container/oom_kills",
        Unit::Count,
    ),
    ("wall time (s)", "/wall_s", Unit::Count),
];

/// This run in a pod beside the last host run, a column each.
pub fn print_side_by_side(host: Option<&Value>, pod: &Value) {
    println!();
    match host {
        Some(host) => println!(
            "The operator as a host process and in its pod (host run: {}, commit {}; the pod's: now):",
            host["date"].as_str().unwrap_or("?"),
            host["commit"]
                .as_str()
                .map_or("?", |c| c.get(..10).unwrap_or(c))
        ),
        None => println!(
            "The operator in its pod (no host run in target/bench/latest.json to set beside it: \
             `make bench` runs both):"
        ),
    }
    println!("  {:<46} {:>12} {:>12}", "figure", "host", "pod");
    for (name, pointer, unit) in SIDE_BY_SIDE {
        let shown = |report: Option<&Value>| {
            let Some(value) = report.and_then(|r| crate::baseline::figure(r, pointer)) else {
                return "-".to_owned();
            };
            match unit {
                Unit::Seconds => format!("{value:.3} s"),
                Unit::MiB => format!("{value:.1} MiB"),
                Unit::Cores => format!("{value:.2}"),
                Unit::Count => format!("{value:.1}"),
            }
        };
        println!("  {name:<46} {:>12} {:>12}", shown(host), shown(Some(pod)));
    }
}
