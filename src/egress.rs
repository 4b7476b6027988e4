//! Calls to addresses that policy and channel authors choose (http steps,
//! HTTP and Prometheus probes, notification channels): one HTTP client,
//! whose redirects never leave the origin first asked, so a header sent
//! there (a token from a Secret) never reaches a host nobody named, and
//! which never reaches a link-local address, where cloud metadata services
//! answer with the node's credentials, nor a destination the operator-wide
//! allow and deny lists (chart: `egress`) keep it from.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{Arc, OnceLock},
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
        .dns_resolver(Arc::new(Guarded))
        .build()
}

/// Where calls authors chose may go, operator-wide: set once as the
/// operator starts (before any call) and never changed, like the resolver
/// that applies it; without it, anywhere but link-local addresses.
static RULES: OnceLock<Rules> = OnceLock::new();

/// Sets the operator-wide rules; only the first call counts.
pub fn set_rules(rules: Rules) {
    let _ = RULES.set(rules);
}

fn rules() -> &'static Rules {
    RULES.get_or_init(Rules::default)
}

/// One entry of an allow or deny list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Destination {
    /// A host name, exactly (lowercase).
    Host(String),
    /// `*.example.com`: any name under it (not the name itself).
    Under(String),
    /// An address range, `10.0.0.0/8`; one address is a range of one.
    Net(ipnet::IpNet),
}

impl Destination {
    fn parse(text: &str) -> Result<Self, BadDestination> {
        let text = text.trim().to_ascii_lowercase();
        if let Ok(net) = text.parse::<ipnet::IpNet>() {
            return Ok(Destination::Net(net));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Destination::Net(ipnet::IpNet::from(ip)));
        }
        let name = text.strip_prefix("*.").unwrap_or(&text);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        match (valid, text.starts_with("*.")) {
            (false, _) => Err(BadDestination(text)),
            (true, true) => Ok(Destination::Under(name.to_owned())),
            (true, false) => Ok(Destination::Host(name.to_owned())),
        }
    }

    fn names(&self, host: &str) -> bool {
        match self {
            Destination::Host(name) => host == name,
            Destination::Under(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.ends_with('.')),
            Destination::Net(_) => false,
        }
    }

    fn holds(&self, ip: IpAddr) -> bool {
        matches!(self, Destination::Net(net) if net.contains(&ip))
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Host(name) => f.write_str(name),
            Destination::Under(suffix) => write!(f, "*.{suffix}"),
            Destination::Net(net) => write!(f, "{net}"),
        }
    }
}

/// An allow or deny entry that is neither a host name, `*.domain`, an
/// address nor a CIDR range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a host name, *.domain, address or CIDR range")]
pub struct BadDestination(String);

/// The operator-wide allow and deny lists. A destination denied (by name
/// or address) is never called; with an allow list, only a destination it
/// names (by name, or by the address a name resolves to) is.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    allow: Vec<Destination>,
    deny: Vec<Destination>,
}

impl Rules {
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Self, BadDestination> {
        let parse = |list: &[String]| -> Result<Vec<Destination>, BadDestination> {
            list.iter()
                .filter(|entry| !entry.trim().is_empty())
                .map(|entry| Destination::parse(entry))
                .collect()
        };
        Ok(Rules {
            allow: parse(allow)?,
            deny: parse(deny)?,
        })
    }

    /// Why a URL's host (a name, or an address written as such) is not
    /// called, if it is not.
    fn refuse_host(&self, host: &str) -> Option<ForbiddenAddress> {
        let host = host.to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.refuse_address(None, ip);
        }
        if let Some(rule) = self.deny.iter().find(|d| d.names(&host)) {
            return Some(ForbiddenAddress::Denied(host, rule.to_string()));
        }
        // Names only, and none matches: no address it resolves to can be allowed.
        let nets = self.allow.iter().any(|d| matches!(d, Destination::Net(_)));
        let named = self.allow.iter().any(|d| d.names(&host));
        (!self.allow.is_empty() && !nets && !named).then_some(ForbiddenAddress::NotAllowed(host))
    }

    /// Why an address (`name` resolved to it, if through a name) is not
    /// called, if it is not.
    fn refuse_address(&self, name: Option<&str>, ip: IpAddr) -> Option<ForbiddenAddress> {
        if forbidden(ip) {
            return Some(ForbiddenAddress::LinkLocal(ip.to_string()));
        }
        if let Some(rule) = self.deny.iter().find(|d| d.holds(ip)) {
            return Some(ForbiddenAddress::Denied(ip.to_string(), rule.to_string()));
        }
        let allowed = self.allow.is_empty()
            || self.allow.iter().any(|d| d.holds(ip))
            || name.is_some_and(|name| self.allow.iter().any(|d| d.names(name)));
        (!allowed).then(|| ForbiddenAddress::NotAllowed(ip.to_string()))
    }
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
pub enum ForbiddenAddress {
    #[error(
        "{0} is a link-local address (where cloud metadata services answer); the operator does not call it"
    )]
    LinkLocal(String),
    #[error("{0} is denied by the operator's egress rule {1} (chart: egress.deny)")]
    Denied(String, String),
    #[error("{0} is not on the operator's egress allow list (chart: egress.allow)")]
    NotAllowed(String),
}

/// Refuses a URL whose host the rules keep calls from (an address written
/// as such is judged here; a name also as it resolves).
pub fn check_url(url: &reqwest::Url) -> Result<(), ForbiddenAddress> {
    check_url_with(rules(), url)
}

fn check_url_with(rules: &Rules, url: &reqwest::Url) -> Result<(), ForbiddenAddress> {
    let host = url.host_str().unwrap_or_default();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    rules.refuse_host(literal).map_or(Ok(()), Err)
}

/// The system's resolver, without the addresses the rules keep calls
/// from: a name that resolves only to them is not called.
struct Guarded;

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_ascii_lowercase();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .filter(|a| match rules().refuse_address(Some(&host), a.ip()) {
                    Some(why) => {
                        refusal = Some(why);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let why = refusal.unwrap_or(ForbiddenAddress::NotAllowed(host));
                let refused: Box<dyn std::error::Error + Send + Sync> = Box::new(why);
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

    #[test]
    fn the_allow_and_deny_lists_judge_names_and_addresses() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let list = |entries: &[&str]| entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>();
        let rules = Rules::parse(
            &list(&["*.svc.cluster.local", "hooks.slack.com", "10.0.0.0/8"]),
            &list(&["admin.svc.cluster.local", "10.9.0.0/16"]),
        )
        .unwrap();
        for (target, verdict) in [
            ("http://api.hg.svc.cluster.local/health", Ok(())),
            ("https://hooks.slack.com/services/x", Ok(())),
            ("http://10.1.2.3:8080/", Ok(())),
            (
                "http://admin.svc.cluster.local/",
                Err(ForbiddenAddress::Denied(
                    "admin.svc.cluster.local".into(),
                    "admin.svc.cluster.local".into(),
                )),
            ),
            (
                "http://10.9.0.1/",
                Err(ForbiddenAddress::Denied(
                    "10.9.0.1".into(),
                    "10.9.0.0/16".into(),
                )),
            ),
            (
                "http://[fe80::1]/",
                Err(ForbiddenAddress::LinkLocal("fe80::1".into())),
            ),
            (
                "http://192.168.1.1/",
                Err(ForbiddenAddress::NotAllowed("192.168.1.1".into())),
            ),
        ] {
            assert_eq!(check_url_with(&rules, &url(target)), verdict, "{target}");
        }
        // A name the allow list does not name: judged by its addresses
        // (10.0.0.0/8 is allowed), so it is left to the resolver.
        assert_eq!(check_url_with(&rules, &url("http://evil.example/")), Ok(()));
        assert_eq!(
            rules.refuse_address(Some("evil.example"), "93.184.216.34".parse().unwrap()),
            Some(ForbiddenAddress::NotAllowed("93.184.216.34".into()))
        );
        assert_eq!(
            rules.refuse_address(Some("hooks.slack.com"), "93.184.216.34".parse().unwrap()),
            None,
            "allowed by name, wherever it resolves"
        );
        // Names only: a name it does not name is refused before resolving.
        let names_only = Rules::parse(&list(&["hooks.slack.com"]), &[]).unwrap();
        assert_eq!(
            check_url_with(&names_only, &url("http://evil.example/")),
            Err(ForbiddenAddress::NotAllowed("evil.example".into()))
        );
        // No lists: anywhere but link-local.
        let open = Rules::default();
        assert_eq!(check_url_with(&open, &url("http://192.168.1.1/")), Ok(()));
        assert!(Rules::parse(&list(&["not a host!"]), &[]).is_err());
        assert!(Rules::parse(&list(&["*."]), &[]).is_err());
    }

    #[tokio::test]
    async fn a_name_is_resolved_to_its_allowed_addresses() {
        let resolved: Vec<SocketAddr> = Guarded
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()));
    }
}
