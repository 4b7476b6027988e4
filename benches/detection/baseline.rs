//! The regression guard: this run's figures beside those of the last run
//! committed (`benches/baseline.json`), each with its ratio. A run worth
//! keeping becomes the baseline with `make bench-baseline`, committed with
//! the work it measured.

use std::path::PathBuf;

use serde_json::Value;

/// The figures compared: a name, and where the report keeps it (a JSON
/// pointer; an object there is summed, as the requests per verb are).
const FIGURES: [(&str, &str); 27] = [
    ("1,000: bare watch p99", "/bare_watch/p99_s"),
    ("1,000: detection p99", "/detection/p99_s"),
    ("1,000: first write p99", "/first_write/p99_s"),
    (
        "1,000: first write p99 over floor",
        "/over_floor/at_1000/first_write/p99_s",
    ),
    (
        "1,000: requests per incident (net)",
        "/requests_per_incident/net",
    ),
    ("10,000: bare watch p99", "/at_10000/bare_watch/p99_s"),
    ("10,000: detection p99", "/at_10000/detection/p99_s"),
    ("10,000: first write p99", "/at_10000/first_write/p99_s"),
    (
        "10,000: first write p99 over floor",
        "/over_floor/at_10000/first_write/p99_s",
    ),
    (
        "10,000: requests per incident (net)",
        "/at_10000/requests_per_incident/net",
    ),
    (
        "20,000 of 30,000: first write p99 over floor",
        "/over_floor/at_20000/first_write/p99_s",
    ),
    (
        "20,000 of 30,000: requests per incident (net)",
        "/at_20000/requests_per_incident/net",
    ),
    ("memory idle (MiB)", "/rss_mib/idle"),
    ("memory 1,000 guarded pods (MiB)", "/rss_mib/guarded_1000"),
    ("memory 10,000 guarded pods (MiB)", "/rss_mib/guarded_10000"),
    ("memory + 1,000 policies (MiB)", "/rss_mib/policies_1000"),
    (
        "memory + 1,000 open Incidents (MiB)",
        "/rss_mib/incidents_1000",
    ),
    (
        "memory 20,000 guarded of 30,000 pods (MiB)",
        "/rss_mib/guarded_20000",
    ),
    ("KiB per guarded pod", "/kib_per_guarded_pod"),
    (
        "CPU, round at 1,000: mean cores",
        "/cpu/round_1000/mean_cores",
    ),
    (
        "CPU, round at 10,000: mean cores",
        "/cpu/round_10000/mean_cores",
    ),
    (
        "CPU, round at 10,000: busiest second (cores)",
        "/cpu/round_10000/busiest_cores",
    ),
    ("CPU, the whole run (s)", "/cpu/run/cpu_s"),
    (
        "declared Incident reconcile p50",
        "/incident_reconcile/empty/p50_s",
    ),
    (
        "... with 1,000 open, p50",
        "/incident_reconcile/with_1000/p50_s",
    ),
    (
        "1,000: incidents resolved after last injection (s)",
        "/resolved_after_last_injection_s",
    ),
    ("wall time (s)", "/wall_s"),
];

/// Where the committed figures are.
pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join("baseline.json")
}

/// The figure at `pointer`: a number, or the sum of an object's numbers.
pub fn figure(report: &Value, pointer: &str) -> Option<f64> {
    match report.pointer(pointer)? {
        Value::Number(n) => n.as_f64(),
        Value::Object(parts) => Some(parts.values().filter_map(Value::as_f64).sum()),
        _ => None,
    }
}

/// Prints each figure of `now` beside the baseline's at `section` (a JSON
/// pointer: "" for the host run, "/pod" for the run in a pod), and their ratio.
pub fn compare(now: &Value, section: &str) {
    println!();
    let baseline = std::fs::read_to_string(path())
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|baseline| baseline.pointer(section).cloned());
    let Some(baseline) = baseline else {
        println!(
            "Against the last committed run: no {}{} to compare with (make bench-baseline keeps this run's)",
            path().display(),
            if section.is_empty() {
                String::new()
            } else {
                format!(" (its \"{}\")", section.trim_start_matches('/'))
            }
        );
        return;
    };
    let short = |key: &str| {
        baseline[key]
            .as_str()
            .map_or_else(|| "?".to_owned(), |s| s.chars().take(10).collect())
    };
    println!(
        "Against the last committed run (benches/baseline.json: commit {}, {}); ratio now/then, lower is better:",
        short("commit"),
        short("date")
    );
    println!(
        "  {:<52} {:>10} {:>10} {:>7}",
        "figure", "then", "now", "ratio"
    );
    for (name, pointer) in FIGURES {
        let (then, now) = (figure(&baseline, pointer), figure(now, pointer));
        let shown = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let ratio = match (then, now) {
            (Some(then), Some(now)) if then.abs() > f64::EPSILON => format!("{:.2}", now / then),
            _ => "-".to_owned(),
        };
        println!(
            "  {name:<52} {:>10} {:>10} {ratio:>7}",
            shown(then),
            shown(now)
        );
    }
}

/// The report without its raw samples: what is kept as the baseline.
pub fn figures_only(report: &Value) -> Value {
    let mut kept = report.clone();
    if let Some(root) = kept.as_object_mut() {
        root.remove("raw_samples");
        for round in ["at_10000", "at_20000"] {
            if let Some(round) = root.get_mut(round).and_then(Value::as_object_mut) {
                round.remove("raw_samples");
            }
        }
    }
    kept
}
