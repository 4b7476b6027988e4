//! How fast policy tests run (`healing-guard-operator test`): 1,000 cases,
//! drawn in turn from the example policies' tests (examples/tests/), each
//! a runbook scenario of about an hour on the virtual clock. Prints the
//! figures; asserts nothing about time (tests assert behaviour).
//!
//!   cargo bench --bench policy_tests

use std::{path::Path, time::Instant};

use healing_guard_operator::simulation::{load, run_cases};

const CASES: usize = 1_000;

fn main() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tests");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let loaded: Vec<load::Loaded> = files
        .iter()
        .filter_map(|path| load::load(path).ok())
        .collect();
    let available: usize = loaded.iter().map(|l| l.file.cases.len()).sum();
    if available == 0 {
        eprintln!("no cases in {}", folder.display());
        std::process::exit(1);
    }
    // Each file's cases in turn until there are 1,000, kept with their file.
    let mut batches: Vec<load::Loaded> = loaded
        .iter()
        .map(|l| load::Loaded {
            file: healing_guard_operator::simulation::case::TestFile {
                cases: Vec::new(),
                ..l.file.clone()
            },
            ..l.clone()
        })
        .collect();
    let mut taken = 0;
    'fill: loop {
        for (source, batch) in loaded.iter().zip(batches.iter_mut()) {
            for case in &source.file.cases {
                if taken == CASES {
                    break 'fill;
                }
                batch.file.cases.push(case.clone());
                taken += 1;
            }
        }
    }
    let started = Instant::now();
    let mut failed = 0;
    for batch in &batches {
        failed += run_cases(batch, false).iter().filter(|c| !c.passed).count();
    }
    let elapsed = started.elapsed();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    println!(
        "policy tests: {taken} cases ({available} distinct, from {} files) on {cores} cores",
        files.len()
    );
    println!(
        "  {:.1} ms in all, {:.3} ms per case, {:.0} cases/s; {failed} failed",
        elapsed.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() * 1000.0 / taken as f64,
        taken as f64 / elapsed.as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
