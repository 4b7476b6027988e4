//! How results are shown: like `promtool test rules` (each failing case,
//! what was expected and what happened, side by side), or as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::expect::Failure;

/// The results of one test file.
#[derive(Clone, Debug, Serialize)]
pub struct FileResult {
    pub file: String,
    /// Why the file could not run: unreadable, or a policy invalid (with
    /// its `Ready` condition's message).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    pub cases: Vec<CaseResult>,
}

impl FileResult {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.cases.iter().all(|c| c.failures.is_empty())
    }
}

/// The result of one case.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
    /// What the pipeline did, in order: for reading a failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<String>,
    /// The incidents as the case ends, for `--record`.
    #[serde(skip)]
    pub incidents: Vec<std::sync::Arc<crate::crd::Incident>>,
}

/// The results as text.
pub fn text(results: &[FileResult]) -> String {
    let mut out = String::new();
    for file in results {
        let _ = writeln!(out, "Unit Testing:  {}", file.file);
        if file.passed() {
            let _ = writeln!(out, "  SUCCESS ({} cases)", file.cases.len());
        } else {
            let _ = writeln!(out, "  FAILED:");
        }
        for problem in &file.problems {
            let _ = writeln!(out, "    {problem}");
        }
        // Failing cases, and with --verbose passing ones with what happened.
        for case in file
            .cases
            .iter()
            .filter(|c| !c.passed || !c.timeline.is_empty())
        {
            let verdict = if case.passed { "passed" } else { "failed" };
            let _ = writeln!(out, "    case {:?} {verdict}:", case.name);
            for failure in &case.failures {
                let at = failure
                    .at
                    .as_ref()
                    .map(|at| format!("at {at}, "))
                    .unwrap_or_default();
                let _ = writeln!(out, "      {at}{}:", failure.subject);
                let _ = writeln!(out, "        exp: {}", failure.expected);
                let _ = writeln!(out, "        got: {}", failure.got);
            }
            if !case.timeline.is_empty() {
                let _ = writeln!(out, "      what happened:");
                for line in &case.timeline {
                    let _ = writeln!(out, "        {line}");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The results as JSON.
pub fn json(results: &[FileResult]) -> String {
    serde_json::to_string_pretty(results).unwrap_or_default()
}
