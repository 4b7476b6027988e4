//! The operator binary: `run` the controllers, or print the `crd`s.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, sync::atomic::Ordering};

use clap::{Parser, Subcommand};
use healing_guard_operator::{
    context::Context,
    controller::{self, Scope},
    crd,
    metrics::Metrics,
    server::{self, ServerState},
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
    Run {
        /// Address of the /healthz, /readyz and /metrics endpoints.
        #[arg(long, env = "HGO_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "HGO_NAMESPACE")]
        namespace: Option<String>,
        /// Log format.
        #[arg(long, env = "HGO_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

fn main() -> ExitCode {
    match Cli::parse().command {
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
        Command::Run {
            listen,
            namespace,
            log_format,
        } => {
            telemetry::init(log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(err) => {
                    error!(%err, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(listen, Scope { namespace })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    error!(%err, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(listen: SocketAddr, scope: Scope) -> Result<(), Box<dyn std::error::Error>> {
    // kube and any HTTP client share the one TLS provider: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let state = ServerState {
        metrics: metrics.clone(),
        ready: Default::default(),
    };
    let server = tokio::spawn(server::serve(listen, state.clone(), shutdown.clone()));

    tokio::select! {
        waited = controller::wait_for_crds(&client) => waited?,
        () = shutdown.cancelled() => return Ok(()),
    }
    state.ready.store(true, Ordering::Relaxed);
    let ctx = Arc::new(Context::new(client, metrics));
    controller::run(ctx, scope, shutdown.clone()).await;
    shutdown.cancel();
    server.await??;
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
