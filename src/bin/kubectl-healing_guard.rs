//! `kubectl healing-guard`: the runbook's responder actions from the
//! command line (a kubectl plugin: put this binary on PATH).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use healing_guard_operator::{
    crd::{Incident, IncidentType, Severity},
    plugin::{self, Declaration, PluginError},
};
use kube::{Api, Client};

/// Respond to healing-guard incidents.
#[derive(Parser)]
#[command(name = "kubectl healing-guard", version)]
struct Cli {
    /// Namespace of the incident (default: the kubeconfig's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Decline an incident as a false positive.
    Decline {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Print the incident's timeline and steps.
    Timeline { name: String },
    /// Print the post-incident report.
    Report { name: String },
}

/// A command-line value that is not one of those allowed.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not one of {allowed}")]
struct NotOneOf {
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

async fn run(cli: Cli) -> Result<String, PluginError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<Incident> = Api::namespaced(client.clone(), &namespace);
    Ok(match cli.command {
        Command::Declare {
            name,
            title,
            severity,
            incident_type,
            target,
            description,
            policy,
            rule,
        } => {
            let declaration = Declaration {
                name,
                title,
                severity,
                incident_type,
                target,
                description,
                policy,
                rule,
            };
            let incident = plugin::declare(&api, declaration).await?;
            format!(
                "incident {} declared",
                kube::ResourceExt::name_any(&incident)
            )
        }
        Command::Ack { name, note } => {
            let me = plugin::whoami(&client).await?;
            plugin::ack(&api, &name, &me, note).await?;
            format!("incident {name} acknowledged by {me}")
        }
        Command::Approve { name, step } => {
            let me = plugin::whoami(&client).await?;
            if plugin::approve(&api, &name, &step, &me).await? {
                format!("step {step} of incident {name} approved by {me}")
            } else {
                format!(
                    "step {step} of incident {name} approved in advance by {me} (no step of that name is recorded yet)"
                )
            }
        }
        Command::Resolve {
            name,
            root_cause,
            summary,
            follow_ups,
        } => {
            let me = plugin::whoami(&client).await?;
            plugin::resolve(&api, &name, &me, &root_cause, &summary, &follow_ups).await?;
            format!("incident {name} resolved by {me}")
        }
        Command::Decline { name, reason } => {
            let me = plugin::whoami(&client).await?;
            plugin::decline(&api, &name, &me, &reason).await?;
            format!("incident {name} declined by {me}")
        }
        Command::Timeline { name } => plugin::timeline(&api.get(&name).await?),
        Command::Report { name } => {
            let incident = api.get(&name).await?;
            plugin::report_text(&client, &namespace, &incident).await?
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(output) => {
            println!("{}", output.trim_end());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
