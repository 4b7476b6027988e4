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

use crate::{leader::Fence, metrics::Metrics};

/// What the endpoints read.
#[derive(Clone)]
pub struct ServerState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// What `/healthz` and `/readyz` report.
#[derive(Default)]
pub struct Health {
    /// Set once the CRDs are established (a standby is ready too).
    ready: AtomicBool,
    /// The detector ended while the operator was not shutting down.
    detector_stopped: AtomicBool,
    /// This replica's lease, when it leads; its loss is the end of it.
    fence: std::sync::OnceLock<Arc<Fence>>,
}

impl Health {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn detector_stopped(&self) {
        tracing::error!("the detector stopped");
        self.detector_stopped.store(true, Ordering::Relaxed);
    }

    pub fn leading_with(&self, fence: Arc<Fence>) {
        let _ = self.fence.set(fence);
    }

    fn lease_lost(&self) -> bool {
        self.fence.get().is_some_and(|f| f.is_lost())
    }

    /// Alive: nothing has stopped that only a restart brings back.
    fn live(&self) -> Result<(), &'static str> {
        if self.detector_stopped.load(Ordering::Relaxed) {
            return Err("the detector stopped");
        }
        if self.lease_lost() {
            return Err("the lease was lost");
        }
        Ok(())
    }

    /// Ready: serving, and, when leading, still the current leader.
    fn ready(&self) -> Result<(), &'static str> {
        self.live()?;
        if !self.ready.load(Ordering::Relaxed) {
            return Err("waiting for CRDs");
        }
        if self.fence.get().is_some_and(|f| !f.is_current()) {
            return Err("the lease is not confirmed current");
        }
        Ok(())
    }
}

/// Serves the endpoints until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    state: ServerState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn healthz(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    answer(state.health.live())
}

async fn readyz(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    answer(state.health.ready())
}

fn answer(check: Result<(), &'static str>) -> (StatusCode, &'static str) {
    match check {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
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
