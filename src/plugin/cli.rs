//! The command line, as clap reads it. Here rather than in the binary so
//! that completion and its tests see the same command tree.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::output::Format;
use crate::crd::{IncidentType, Severity};

/// Respond to healing-guard incidents.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl healing-guard",
    bin_name = "kubectl-healing_guard",
    version
)]
pub struct Cli {
    /// Namespace of the incident (default: the context's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file to use (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List incidents: open ones first, then by severity, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// Across all namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only incidents not resolved or declined.
        #[arg(long)]
        open: bool,
        /// text (for people), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Show one incident: phase, current step, what waits on you, next
    /// page, deadlines, last steps and timeline entries, conditions.
    #[command(visible_alias = "get")]
    Status {
        /// The Incident's name.
        name: String,
        /// Print again on each change, until the incident is closed.
        #[arg(short, long)]
        watch: bool,
        /// text (for people), json or yaml.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Declare an incident (the runbook's first step).
    Declare {
        name: String,
        #[arg(long)]
        title: String,
        #[arg(long, value_parser = parse_severity)]
        severity: Severity,
        #[arg(long = "type", value_parser = parse_type)]
        incident_type: IncidentType,
        /// Deployment/NAME or StatefulSet/NAME.
        #[arg(long)]
        target: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        rule: Option<String>,
    },
    /// Acknowledge an incident as yourself.
    Ack {
        name: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Approve a step waiting for approval, as yourself.
    Approve { name: String, step: String },
    /// Resolve an incident, with its root cause.
    Resolve {
        name: String,
        #[arg(long)]
        root_cause: String,
        #[arg(long)]
        summary: String,
        /// A follow-up action (repeatable).
        #[arg(long = "follow-up")]
        follow_ups: Vec<String>,
    },
    /// Lift the incident's hold on its target's GitOps sync (a Flux
    /// Kustomization the operator suspended) before Git moves on, as
    /// yourself: the operator resumes it and verifies the release.
    ResumeSync { name: String },
    /// Decline an incident as a false positive.
    Decline {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Print the incident's whole timeline and steps.
    Timeline { name: String },
    /// Print the post-incident report.
    Report { name: String },
    /// Test RemediationPolicies offline, before merge: each test file's
    /// cases run on a virtual clock through the operator's own pipeline (no
    /// cluster needed). Exit 1 when a case fails.
    Test {
        /// Test files (see docs/policy-testing.md).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// text (like promtool) or json.
        #[arg(short, long, value_enum, default_value_t)]
        output: crate::simulation::Format,
        /// Show what happened in every case, passing ones too.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Replay recorded Incidents (kubectl get incidents -o yaml) against a
    /// changed policy: what it would have done differently with each. No
    /// cluster needed.
    Replay {
        /// The policy file (a RemediationPolicy manifest, as in Git).
        #[arg(long)]
        policy: std::path::PathBuf,
        /// Recorded incidents: an Incident, a List, or several documents per file.
        #[arg(required = true)]
        incidents: Vec<std::path::PathBuf>,
        /// text or json.
        #[arg(short, long, value_enum, default_value_t)]
        output: crate::simulation::Format,
    },
    /// Print a shell completion script for kubectl-healing_guard (for
    /// `kubectl healing-guard <TAB>`, put kubectl_complete-healing_guard on PATH).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// A command-line value that is not one of those allowed.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not one of {allowed}")]
pub struct NotOneOf {
    text: String,
    allowed: &'static str,
}

fn parse_severity(text: &str) -> Result<Severity, NotOneOf> {
    serde_json::from_value(serde_json::Value::String(text.to_uppercase())).map_err(|_| NotOneOf {
        text: text.to_owned(),
        allowed: "P0, P1, P2, P3",
    })
}

fn parse_type(text: &str) -> Result<IncidentType, NotOneOf> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| NotOneOf {
        text: text.to_owned(),
        allowed: "ServiceOutage, PerformanceDegradation, DataCorruption, SecurityIncident, \
                  IntegrationFailure, ResourceExhaustion",
    })
}
