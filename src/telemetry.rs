//! Tracing set-up: human-readable or JSON logs, filtered by `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// The filter when `RUST_LOG` is unset: `info` for this crate, `warn` for
/// everything else, and nothing from kube's HTTP trace layer, which logs an
/// ERROR for every 5xx answer - also for the expected ones (a log fetch from
/// a node without a kubelet, recorded in the evidence). The operator reports
/// every failure it cares about itself, with its context.
pub const DEFAULT_FILTER: &str =
    "warn,healing_guard_operator=info,kube_client::client::builder=off";

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        // Colour only on a terminal: `kubectl logs` and collectors get plain text.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .init(),
    }
}
