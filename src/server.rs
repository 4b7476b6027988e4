//! The HTTP endpoints: `/healthz`, `/readyz` and `/metrics` on one port.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Clone)]
pub struct ServerState {
    pub metrics: Arc<Metrics>,
    /// Set once the CRDs are established and the controllers run.
    pub ready: Arc<AtomicBool>,
}

/// Serves the endpoints until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    state: ServerState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn readyz(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for CRDs")
    }
}

async fn metrics(
    State(state): State<ServerState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let content_type = [(
        "content-type",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )];
    match state.metrics.render() {
        Ok(text) => (StatusCode::OK, content_type, text),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            content_type,
            String::new(),
        ),
    }
}
