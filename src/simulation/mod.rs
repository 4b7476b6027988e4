//! Policies tested before merge: a test file's cases run on a virtual
//! clock through the operator's own detector, incident pipeline and
//! notifier, each reading a simulated world instead of the cluster (see
//! docs/policy-testing.md).
//!
//! - [`case`]: the test file as written;
//! - [`load`]: reading it and the manifests it names, policies validated first;
//! - [`cluster`]: the simulated workloads and pods;
//! - [`world`]: the incident pipeline's `World`, simulated;
//! - [`engine`]: one case on the virtual clock;
//! - [`expect`], [`output`]: what was expected against what happened.

pub mod case;
pub mod check;
pub mod cluster;
pub mod engine;
pub mod expect;
pub mod load;
pub mod output;
pub mod replay;
pub mod world;

use std::path::Path;

use self::output::FileResult;

/// Runs every case of a test file.
pub fn run_file(path: &Path, verbose: bool) -> FileResult {
    let file = path.display().to_string();
    let loaded = match load::load(path) {
        Ok(loaded) => loaded,
        Err(error) => {
            return FileResult {
                file,
                problems: vec![error.to_string()],
                cases: Vec::new(),
            };
        }
    };
    if !loaded.invalid.is_empty() {
        return FileResult {
            file,
            problems: loaded
                .invalid
                .iter()
                .map(|(policy, message)| {
                    format!("RemediationPolicy {policy} is not Ready (InvalidSpec): {message}")
                })
                .collect(),
            cases: Vec::new(),
        };
    }
    FileResult {
        file,
        problems: Vec::new(),
        cases: run_cases(&loaded, verbose),
    }
}

/// Runs the cases of a loaded (and valid) test file.
pub fn run_cases(loaded: &load::Loaded, verbose: bool) -> Vec<output::CaseResult> {
    // Cases are independent: each its own world, run on every core.
    in_parallel(&loaded.file.cases, |case| {
        // A case that panics fails with the panic's words; the others run on.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine::run(loaded, case, verbose)
        }))
        .unwrap_or_else(|panic| {
            let words = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            output::CaseResult {
                name: case.name.clone(),
                passed: false,
                failures: vec![expect::Failure {
                    at: None,
                    subject: "the simulation".into(),
                    expected: serde_json::json!("runs the case"),
                    got: serde_json::json!(format!("panicked: {words}")),
                }],
                timeline: Vec::new(),
                incidents: Vec::new(),
            }
        })
    })
}

/// `run` of each item, on as many threads as there are cores, in order.
fn in_parallel<T: Sync, R: Send>(items: &[T], run: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(items.len());
    if workers <= 1 {
        return items.iter().map(run).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(index) else {
                            break mine;
                        };
                        mine.push((index, run(item)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            // `run` catches its own panics; a worker cannot end early.
            .flat_map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Like `promtool test rules`.
    #[default]
    Text,
    Json,
}

/// What `test` prints, and whether every case passed.
pub struct Report {
    pub output: String,
    /// How many cases ran, and how long that took: for stderr.
    pub summary: String,
    pub passed: bool,
}

impl Report {
    /// Prints the output on stdout and the summary on stderr (a reader
    /// gone away is not worth a panic); the process's exit code: 1 when
    /// a case failed or the run could not be made.
    pub fn finish(&self) -> std::process::ExitCode {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out
            .write_all(self.output.as_bytes())
            .and_then(|()| out.flush());
        let _ = writeln!(std::io::stderr(), "{}", self.summary);
        if self.passed {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        }
    }
}

/// `healing-guard-operator test FILE...` (and `kubectl healing-guard test`).
pub fn test(files: &[std::path::PathBuf], format: Format, verbose: bool) -> Report {
    test_recording(files, format, verbose, None)
}

/// [`test`], writing the incidents each case ends with into `record`
/// (`FILE-STEM/NN.yaml`, a List as `kubectl get incidents -o yaml` gives
/// it): what `replay` reads.
pub fn test_recording(
    files: &[std::path::PathBuf],
    format: Format,
    verbose: bool,
    record: Option<&Path>,
) -> Report {
    let started = std::time::Instant::now();
    let results: Vec<FileResult> = files.iter().map(|f| run_file(f, verbose)).collect();
    let elapsed = started.elapsed();
    if let Some(folder) = record
        && let Err(error) = write_records(folder, files, &results)
    {
        return failed(format!("cannot record into {}: {error}", folder.display()));
    }
    let cases: usize = results.iter().map(|r| r.cases.len()).sum();
    let failed: usize = results
        .iter()
        .flat_map(|r| &r.cases)
        .filter(|c| !c.passed)
        .count();
    let passed = results.iter().all(FileResult::passed);
    Report {
        output: match format {
            Format::Text => output::text(&results),
            Format::Json => output::json(&results),
        },
        summary: format!(
            "{cases} cases in {} files, {failed} failed, in {:.1} ms",
            results.len(),
            elapsed.as_secs_f64() * 1000.0
        ),
        passed,
    }
}

#[cfg(test)]
mod tests;

/// `healing-guard-operator replay --policy FILE INCIDENT.yaml...`: what the
/// policy would have done differently with each recorded incident.
/// `passed` is false only when the replay could not run.
pub fn replay(policy: &Path, records: &[std::path::PathBuf], format: Format) -> Report {
    let started = std::time::Instant::now();
    let mut incidents = Vec::new();
    for path in records {
        match replay::read_incidents(path) {
            Ok(read) => incidents.extend(read),
            Err(error) => return failed(error.to_string()),
        }
    }
    let replayed = match replay::replay(policy, &incidents) {
        Ok(replayed) => replayed,
        Err(error) => return failed(error.to_string()),
    };
    let different = replayed
        .iter()
        .filter(|r| !r.differences.is_empty())
        .count();
    Report {
        output: match format {
            Format::Text => replay::text(&replayed),
            Format::Json => serde_json::to_string_pretty(&replayed).unwrap_or_default(),
        },
        summary: format!(
            "{} incidents replayed, {different} would go differently, in {:.1} ms",
            replayed.len(),
            started.elapsed().as_secs_f64() * 1000.0
        ),
        passed: true,
    }
}

fn write_records(
    folder: &Path,
    files: &[std::path::PathBuf],
    results: &[FileResult],
) -> std::io::Result<()> {
    for (path, result) in files.iter().zip(results) {
        let stem = path.file_stem().unwrap_or_default();
        let dir = folder.join(stem);
        std::fs::create_dir_all(&dir)?;
        for (index, case) in result.cases.iter().enumerate() {
            let items: Vec<&crate::crd::Incident> =
                case.incidents.iter().map(AsRef::as_ref).collect();
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            let text = serde_yaml::to_string(&list).map_err(std::io::Error::other)?;
            let header = format!("# {}: {}\n", path.display(), case.name);
            std::fs::write(dir.join(format!("{:02}.yaml", index + 1)), header + &text)?;
        }
    }
    Ok(())
}

fn failed(error: String) -> Report {
    Report {
        output: String::new(),
        summary: format!("error: {error}"),
        passed: false,
    }
}
