//! Calls to addresses that policy and channel authors choose (http steps,
//! HTTP and Prometheus probes, notification channels): one HTTP client,
//! whose redirects never leave the origin first asked, so a header sent
//! there (a token from a Secret) never reaches a host nobody named.

use std::time::Duration;

use reqwest::redirect::{Attempt, Policy};

/// Most redirects followed within one origin.
const MAX_REDIRECTS: usize = 5;

/// The client for every call an author chose; each call may take `timeout`.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(Policy::custom(within_origin))
        .build()
}

/// Follows a redirect to the same scheme, host and port only; any other is
/// handed back to the caller as the answer (a 3xx it did not expect).
fn within_origin(attempt: Attempt<'_>) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else {
        return attempt.stop();
    };
    let next = attempt.url();
    let same_origin = first.scheme() == next.scheme()
        && first.host_str() == next.host_str()
        && first.port_or_known_default() == next.port_or_known_default();
    if !same_origin {
        tracing::info!(from = %first, to = %next, "redirect to another origin not followed");
        attempt.stop()
    } else if attempt.previous().len() > MAX_REDIRECTS {
        attempt.error("too many redirects")
    } else {
        attempt.follow()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{
        Router,
        http::{HeaderMap, StatusCode, header::LOCATION},
        routing::get,
    };

    use super::*;

    /// A loopback server of `router`; its address.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn a_redirect_is_followed_within_its_origin_and_never_to_another() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Another host: "localhost" where the first was asked as 127.0.0.1.
        let heard = Arc::new(AtomicUsize::new(0));
        let counted = heard.clone();
        let elsewhere = serve(Router::new().route(
            "/collect",
            get(move |headers: HeaderMap| async move {
                counted.fetch_add(1, Ordering::SeqCst);
                format!("{:?}", headers.get("x-token"))
            }),
        ))
        .await
        .replace("127.0.0.1", "localhost");
        let away = format!("{elsewhere}/collect");
        let origin = serve(
            Router::new()
                .route(
                    "/moved",
                    get(|| async { (StatusCode::FOUND, [(LOCATION, "/here")]) }),
                )
                .route("/here", get(|| async { "here" }))
                .route(
                    "/away",
                    get(move || async move { (StatusCode::FOUND, [(LOCATION, away)]) }),
                ),
        )
        .await;
        let client = client(Duration::from_secs(5)).unwrap();
        let same = client
            .get(format!("{origin}/moved"))
            .header("x-token", "s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(same.status(), StatusCode::OK);
        assert_eq!(same.text().await.unwrap(), "here");
        let other = client
            .get(format!("{origin}/away"))
            .header("x-token", "s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(
            other.status(),
            StatusCode::FOUND,
            "handed back, not followed"
        );
        assert_eq!(
            heard.load(Ordering::SeqCst),
            0,
            "the other host heard nothing"
        );
    }
}
