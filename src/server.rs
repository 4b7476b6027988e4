//! The HTTP endpoints on one port: `/healthz`, `/readyz`, `/metrics`, and
//! `POST /alertmanager`, Alertmanager's webhook (when a token is set).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio_util::sync::CancellationToken;

use crate::{detector::alerts::NotRecorded, leader::Fence, metrics::Metrics};

/// What the endpoints read.
#[derive(Clone)]
pub struct ServerState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The webhook, when a bearer token is configured.
    pub alerts: Option<AlertWebhook>,
}

/// Alertmanager's webhook: the token it must present, and the detector.
#[derive(Clone)]
pub struct AlertWebhook {
    pub token: Arc<str>,
    pub detector: tokio::sync::mpsc::Sender<crate::detector::alerts::Intake>,
}

/// How long a delivery may wait to be recorded before Alertmanager is told
/// to send it again.
const RECORD_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a delivery's body may take to arrive, once its token is checked.
const READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

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
        .route(
            "/alertmanager",
            axum::routing::post(alertmanager).layer(axum::extract::DefaultBodyLimit::max(
                crate::signals::alerts::MAX_BODY,
            )),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz, /metrics and /alertmanager");
    let listener = crate::listener::Bounded::new(
        listener,
        crate::listener::MAX_CONNECTIONS,
        crate::listener::IDLE,
    );
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

/// Alertmanager's webhook (payload version 4). 200 only once what it
/// reports is recorded in the API; 5xx when it could not be (Alertmanager
/// sends it again); 400 with the reason for a payload that is not one; 401
/// without the bearer token; 404 when no token is configured. The token is
/// checked before the body is read: an unauthenticated upload costs nothing
/// but its headers, and an authenticated one is bounded in size and time.
async fn alertmanager(
    State(state): State<ServerState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> (StatusCode, String) {
    let Some(webhook) = &state.alerts else {
        return (
            StatusCode::NOT_FOUND,
            "the Alertmanager webhook is off: no token is configured".into(),
        );
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|token| same(token.as_bytes(), webhook.token.as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            "a bearer token is required".into(),
        );
    }
    let read = axum::body::to_bytes(body, crate::signals::alerts::MAX_BODY);
    let body = match tokio::time::timeout(READ_WITHIN, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a delivery is at most {} bytes",
                    crate::signals::alerts::MAX_BODY
                ),
            );
        }
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}",
                    crate::crd::duration::spoken(READ_WITHIN)
                ),
            );
        }
    };
    let notification = match crate::signals::alerts::parse(&body) {
        Ok(notification) => notification,
        Err(why) => return (StatusCode::BAD_REQUEST, why.to_string()),
    };
    let (reply, recorded) = tokio::sync::oneshot::channel();
    let intake = crate::detector::alerts::Intake {
        notification,
        reply,
    };
    // Both bounded: a standby's detector does not run, and its queue fills.
    let recorded = async {
        webhook
            .detector
            .send(intake)
            .await
            .map_err(|_| NotRecorded::DetectorDown)?;
        recorded.await.map_err(|_| NotRecorded::DetectorStopped)?
    };
    match tokio::time::timeout(RECORD_WITHIN, recorded).await {
        Ok(Ok(signals)) => (
            StatusCode::OK,
            format!("recorded ({signals} signals moved)"),
        ),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, why.to_string()),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not recorded in time (is this replica the leader?); send it again".into(),
        ),
    }
}

/// Compares secrets without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn an_upload_without_the_token_is_refused_before_its_body_is_read() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let (detector, _deliveries) = tokio::sync::mpsc::channel(1);
        let state = ServerState {
            metrics: Arc::new(Metrics::default()),
            health: Arc::new(Health::default()),
            alerts: Some(AlertWebhook {
                token: "s3cret".into(),
                detector,
            }),
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(addr, state, shutdown.clone()));
        let mut connection = loop {
            if let Ok(connection) = tokio::net::TcpStream::connect(addr).await {
                break connection;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        // A megabyte announced, ten bytes sent, and the rest never.
        connection
            .write_all(
                b"POST /alertmanager HTTP/1.1\r\nHost: operator\r\n\
                  Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"version\"",
            )
            .await
            .unwrap();
        let mut answer = vec![0; 256];
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            connection.read(&mut answer),
        )
        .await
        .expect("answered without waiting for the body")
        .unwrap();
        let answer = String::from_utf8_lossy(answer.get(..read).unwrap_or_default());
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        shutdown.cancel();
    }
}
