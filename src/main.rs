//! The operator binary: `run` the controllers, print the `crd`s, or write
//! the `docs reference` generated from them.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use healing_guard_operator::{
    authority::Remediators,
    context::Settings,
    controller, crd, egress,
    k8s::Scope,
    leader::{self, Fence, LeaderConfig},
    metrics::Metrics,
    reference,
    server::{self, AlertWebhook, Health, ServerState},
    telemetry::{self, LogFormat},
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    version,
    about = "Runs the incident-response runbook on Kubernetes by itself"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (kubeconfig or in-cluster credentials, as kubectl finds them).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Test RemediationPolicies offline: run each test file's cases on a
    /// virtual clock through the operator's own pipeline (no cluster).
    /// Exit 1 when a case fails.
    Test {
        /// Test files (see docs/policy-testing.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// text (like promtool) or json.
        #[arg(short, long, value_enum, default_value_t)]
        output: healing_guard_operator::simulation::Format,
        /// Show what happened in every case, passing ones too.
        #[arg(short, long)]
        verbose: bool,
        /// Write the incidents each case ends with into this folder (as
        /// `kubectl get incidents -o yaml` gives them), for `replay`.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Replay recorded Incidents (kubectl get incidents -o yaml) against a
    /// changed policy: what it would have done differently with each
    /// (rule, severity, steps, refusals). No cluster.
    Replay {
        /// The policy file (a RemediationPolicy manifest, as in Git).
        #[arg(long)]
        policy: PathBuf,
        /// Recorded incidents: an Incident, a List, or several documents per file.
        #[arg(required = true)]
        incidents: Vec<PathBuf>,
        /// text or json.
        #[arg(short, long, value_enum, default_value_t)]
        output: healing_guard_operator::simulation::Format,
    },
    /// Write documentation generated from the code.
    Docs {
        #[command(subcommand)]
        command: DocsCommand,
    },
}

#[derive(Subcommand)]
enum DocsCommand {
    /// Write the field reference of every kind (Markdown, from the CRDs).
    Reference {
        /// The folder to write the pages into.
        #[arg(long, default_value = reference::DIRECTORY)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "HGO_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "HGO_NAMESPACE")]
    namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "HGO_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Act only while holding a Lease, so several replicas can run.
    #[arg(long, env = "HGO_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease (in a cluster: the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Seconds the Lease holds without renewal; a standby takes over after it.
    #[arg(long, env = "HGO_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    lease_duration: u64,
    /// Name of the Lease (default: healing-guard-operator, or
    /// healing-guard-operator-NAMESPACE with --namespace); the chart
    /// grants access to this one Lease only.
    #[arg(long, env = "HGO_LEASE_NAME")]
    lease_name: Option<String>,
    /// Copy the failing container's last log lines into the Incident's
    /// evidence (needs `pods/log`; logs may hold secrets, so it is off).
    #[arg(long, env = "HGO_CAPTURE_LOGS")]
    capture_logs: bool,
    /// The bearer token Alertmanager presents to `POST /alertmanager`
    /// (from a Secret); without one the webhook is off.
    #[arg(long, env = "HGO_ALERTMANAGER_TOKEN", hide_env_values = true)]
    alertmanager_token: Option<String>,
    /// The ServiceAccount, in each namespace, whose authority every
    /// change there is made with (a policy may name another of its own
    /// namespace). The operator impersonates it; a namespace without it
    /// is watched and never changed.
    #[arg(long, env = "HGO_REMEDIATOR", default_value = healing_guard_operator::authority::DEFAULT_REMEDIATOR)]
    remediator: String,
    /// Where calls policy and channel authors choose may go, if not
    /// anywhere: host names, `*.domain`, addresses or CIDR ranges,
    /// comma-separated. A name is allowed by name, or by the addresses
    /// it resolves to.
    #[arg(long, env = "HGO_EGRESS_ALLOW", value_delimiter = ',')]
    egress_allow: Vec<String>,
    /// Where they may never go (as --egress-allow); link-local
    /// addresses never, whatever the lists.
    #[arg(long, env = "HGO_EGRESS_DENY", value_delimiter = ',')]
    egress_deny: Vec<String>,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Replay {
            policy,
            incidents,
            output,
        } => healing_guard_operator::simulation::replay(&policy, &incidents, output).finish(),
        Command::Test {
            files,
            output,
            verbose,
            record,
        } => healing_guard_operator::simulation::test_recording(
            &files,
            output,
            verbose,
            record.as_deref(),
        )
        .finish(),
        Command::Crd => match crd::to_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("cannot render CRDs: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Docs {
            command: DocsCommand::Reference { out },
        } => {
            let pages = reference::pages(&crd::all());
            match reference::write(&out, &pages) {
                Ok(written) => {
                    for path in written {
                        println!("{}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("cannot write the reference: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            let RunArgs {
                listen,
                namespace,
                log_format,
                leader_elect,
                leader_election_namespace,
                lease_duration,
                lease_name,
                capture_logs,
                alertmanager_token,
                remediator,
                egress_allow,
                egress_deny,
            } = *args;
            telemetry::init(log_format);
            match egress::Rules::parse(&egress_allow, &egress_deny) {
                Ok(rules) => egress::set_rules(rules),
                Err(err) => {
                    error!(%err, "--egress-allow / --egress-deny");
                    return ExitCode::FAILURE;
                }
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(err) => {
                    error!(%err, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            let leader = leader_elect.then(|| {
                // One lease per watched scope: namespaced instances do not compete.
                let lease_name = lease_name.unwrap_or_else(|| match &namespace {
                    Some(watched) => format!("healing-guard-operator-{watched}"),
                    None => "healing-guard-operator".to_owned(),
                });
                let host = std::env::var("POD_NAME")
                    .or_else(|_| std::env::var("HOSTNAME"))
                    .unwrap_or_default();
                LeaderConfig {
                    namespace: leader_election_namespace,
                    lease_name,
                    // Unique to this process: a container restarted in the
                    // same pod (PID 1 again) must not take its predecessor's
                    // lease for its own, before that lease has expired.
                    identity: format!(
                        "{host}-{}-{:08x}",
                        std::process::id(),
                        rand::random::<u32>()
                    ),
                    duration_seconds: lease_duration,
                }
            });
            let settings = Settings { capture_logs };
            let run = run(
                listen,
                Scope { namespace },
                (settings, alertmanager_token, remediator),
                leader,
            );
            match runtime.block_on(run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    error!(%err, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(
    listen: SocketAddr,
    scope: Scope,
    (settings, alertmanager_token, remediator): (Settings, Option<String>, String),
    leader: Option<LeaderConfig>,
) -> Result<(), Box<dyn std::error::Error>> {
    // kube and any HTTP client share the one TLS provider: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let mut config = kube::Config::infer().await?;
    // kube retries 429s on its own, for minutes: a PodDisruptionBudget that
    // refuses an eviction would hold a reconcile for as long. The operator
    // has its own per-object backoff, and says in the ledger what it waits for.
    config.default_retry = false;
    let remediators = Remediators::new(config.clone(), remediator);
    let client = kube::Client::try_from(config)?;
    // Calls authors chose (receivers, http steps, probes): each gets at most
    // this long to answer, and no redirect leaves the origin asked.
    let http = egress::client(healing_guard_operator::communication::send::ATTEMPT_TIMEOUT)?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    // Alertmanager's deliveries go to the detector, once it runs.
    let (alerts, deliveries) = tokio::sync::mpsc::channel(64);
    let state = ServerState {
        metrics: metrics.clone(),
        health: health.clone(),
        alerts: alertmanager_token
            .filter(|token| !token.is_empty())
            .map(|token| AlertWebhook {
                token: token.into(),
                detector: alerts,
            }),
    };
    let server = tokio::spawn(server::serve(listen, state, shutdown.clone()));

    tokio::select! {
        waited = controller::wait_for_crds(&client, &scope) => waited?,
        () = shutdown.cancelled() => return Ok(()),
    }
    // A standby is ready too: it serves and waits to take over.
    health.set_ready();
    let leadership = match &leader {
        Some(config) => match leader::acquire(client.clone(), config, shutdown.clone()).await? {
            Some(leadership) => Some(leadership),
            None => {
                server.await??;
                return Ok(());
            }
        },
        None => None,
    };
    let fence = match &leadership {
        Some(leadership) => {
            health.leading_with(leadership.fence());
            leadership.fence()
        }
        None => Fence::unfenced(),
    };
    let controllers = controller::run(
        (client, remediators, http, deliveries),
        settings,
        metrics,
        scope,
        fence.clone(),
        health,
        shutdown.clone(),
    );
    // On a lost lease the controllers are dropped, not drained: work in
    // flight stops at its next await, and the fence refuses what is left.
    let lost = tokio::select! {
        () = controllers => false,
        () = fence.lost() => true,
    };
    shutdown.cancel();
    server.await??;
    if lost {
        return Err(
            "lost the lease while acting; exiting so that a restart waits for it again".into(),
        );
    }
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    info!("shut down cleanly");
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted, shutting down"),
        () = terminate => info!("SIGTERM, shutting down"),
    }
    shutdown.cancel();
}
