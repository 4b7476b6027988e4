//! Calls to addresses that policy and channel authors choose (http steps,
//! HTTP and Prometheus probes, notification channels): one HTTP client,
//! whose redirects never leave the origin first asked, so a header sent
//! there (a token from a Secret) never reaches a host nobody named, and
//! which never reaches a link-local address, where cloud metadata services
//! answer with the node's credentials.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    redirect::{Attempt, Policy},
};

/// Most redirects followed within one origin.
const MAX_REDIRECTS: usize = 5;

/// The most of an answer ever read: what comes after is never read, so an
/// endless or enormous answer cannot exhaust the operator's memory.
pub const MAX_ANSWER: usize = 1 << 20;

/// The client for every call an author chose; each call may take `timeout`.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(Policy::custom(within_origin))
        .dns_resolver(Arc::new(AwayFromLinkLocal))
        .build()
}

/// Whether no call an author chose may reach `ip`: link-local addresses
/// (169.254.0.0/16, fe80::/10, and AWS's fd00:ec2::254), where metadata
/// services hand out the node's identity.
pub fn forbidden(ip: IpAddr) -> bool {
    const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == AWS_METADATA_V6
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
    }
}

/// Why a URL is not called.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0} is a link-local address (where cloud metadata services answer); the operator does not call it"
)]
pub struct ForbiddenAddress(pub String);

/// Refuses a URL whose host is a forbidden address written as such (the
/// resolver sees only names).
pub fn check_url(url: &reqwest::Url) -> Result<(), ForbiddenAddress> {
    let host = url.host_str().unwrap_or_default();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<IpAddr>() {
        Ok(ip) if forbidden(ip) => Err(ForbiddenAddress(ip.to_string())),
        _ => Ok(()),
    }
}

/// The system's resolver, without the forbidden addresses: a name that
/// resolves only to them is not called.
struct AwayFromLinkLocal;

impl Resolve for AwayFromLinkLocal {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|a| !forbidden(a.ip())).collect();
            if allowed.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(ForbiddenAddress(host));
                return Err(refused);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
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

/// At most `limit` bytes of the answer's body, and whether it had more.
/// A body that breaks off is what arrived until then.
pub async fn read_capped(mut answer: reqwest::Response, limit: usize) -> (Vec<u8>, bool) {
    let mut kept: Vec<u8> = Vec::new();
    loop {
        match answer.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit.saturating_sub(kept.len());
                if chunk.len() > room {
                    kept.extend_from_slice(chunk.get(..room).unwrap_or_default());
                    return (kept, true);
                }
                kept.extend_from_slice(&chunk);
            }
            _ => return (kept, false),
        }
    }
}

/// The answer's body as JSON, if it is JSON and no longer than [`MAX_ANSWER`].
pub async fn read_json(answer: reqwest::Response) -> Result<serde_json::Value, TooLargeOrNotJson> {
    let (body, cut) = read_capped(answer, MAX_ANSWER).await;
    if cut {
        return Err(TooLargeOrNotJson::TooLarge);
    }
    serde_json::from_slice(&body).map_err(|_| TooLargeOrNotJson::NotJson)
}

/// Why an answer was not read as JSON.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TooLargeOrNotJson {
    #[error("an answer larger than {} MiB", MAX_ANSWER >> 20)]
    TooLarge,
    #[error("an answer that is not JSON")]
    NotJson,
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

    #[tokio::test]
    async fn an_endless_answer_is_read_no_further_than_the_cap() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // 64 MiB in 64 KiB chunks, sent as fast as it is read.
        let endless = serve(Router::new().route(
            "/endless",
            get(|| async {
                let chunk = vec![b'x'; 64 * 1024];
                let stream = futures::stream::iter(
                    (0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                );
                axum::body::Body::from_stream(stream)
            }),
        ))
        .await;
        let client = client(Duration::from_secs(5)).unwrap();
        let answer = client
            .get(format!("{endless}/endless"))
            .send()
            .await
            .unwrap();
        let (body, cut) = read_capped(answer, MAX_ANSWER).await;
        assert!(cut);
        assert_eq!(body.len(), MAX_ANSWER);
        let answer = client
            .get(format!("{endless}/endless"))
            .send()
            .await
            .unwrap();
        assert_eq!(read_json(answer).await, Err(TooLargeOrNotJson::TooLarge));
    }

    #[test]
    fn link_local_addresses_are_forbidden_and_others_are_not() {
        for (ip, expected) in [
            ("169.254.169.254", true),
            ("169.254.0.1", true),
            ("fe80::1", true),
            ("fd00:ec2::254", true),
            ("::ffff:169.254.169.254", true),
            ("127.0.0.1", false),
            ("10.0.0.1", false),
            ("::1", false),
            ("93.184.216.34", false),
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), expected, "{ip}");
        }
        let metadata = reqwest::Url::parse("http://169.254.169.254/latest/meta-data/").unwrap();
        assert!(check_url(&metadata).is_err());
        let named = reqwest::Url::parse("http://api.hg.svc/health").unwrap();
        assert_eq!(check_url(&named), Ok(()));
    }

    #[tokio::test]
    async fn a_name_is_resolved_to_its_allowed_addresses() {
        let resolved: Vec<SocketAddr> = AwayFromLinkLocal
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()));
    }
}
