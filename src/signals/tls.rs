//! TLS for the Redis and PostgreSQL probes, on the binary's one provider
//! (rustls with ring). Pure parts only: which PostgreSQL sslmode a URL asks
//! for, the CA a Secret holds, the rustls configuration a mode needs, and a
//! failed handshake told in a fixed phrase. `check` reads the Secrets and
//! connects.

use std::{
    error::Error as StdError,
    sync::{Arc, OnceLock},
};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

/// Why a probe's TLS settings cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TlsError {
    #[error("holds no PEM certificate")]
    NoCertificate,
    #[error("is not PEM: {0}")]
    NotPem(String),
    #[error("holds a certificate that cannot be a trust anchor: {0}")]
    NotAnAnchor(String),
    #[error("sslmode {0:?} is not one of disable, prefer, require, verify-full")]
    UnknownSslMode(String),
    #[error("sslmode {0} is not supported: use require (encrypted) or verify-full (verified)")]
    UnsupportedSslMode(&'static str),
    #[error(
        "sslmode {0} does not verify the server, so tls.caSecretRef would be unused: use sslmode=verify-full (or none) or remove tls"
    )]
    CaUnused(SslMode),
    #[error("no system roots to verify against: give the CA in tls.caSecretRef")]
    NoSystemRoots,
    #[error("rediss://...#insecure is refused: give the CA in tls.caSecretRef")]
    InsecureRedis,
    #[error("tls.caSecretRef needs a rediss:// URL")]
    CaWithoutTls,
    #[error("building the TLS client: {0}")]
    Rustls(#[source] rustls::Error),
}

/// PostgreSQL's sslmode, as far as the probe honours it (libpq's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "kebab-case")]
pub enum SslMode {
    /// Plain; never TLS.
    Disable,
    /// TLS if the server offers it, unverified; libpq's default.
    Prefer,
    /// TLS or nothing, the certificate not verified (libpq's `require`
    /// without a root file): protects against a passive listener only.
    Require,
    /// TLS, the chain and the host name verified.
    VerifyFull,
}

impl SslMode {
    /// What tokio-postgres negotiates; verification is in the rustls config.
    pub fn negotiated(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// The PostgreSQL connection string without its `sslmode`, and the
/// sslmode as written (the last one, as libpq takes it). tokio-postgres
/// knows no `verify-full`, so the probe takes the parameter out and sets
/// the mode itself. Both forms: `postgres://...?sslmode=x&...` and
/// `host=... sslmode=x`.
pub fn split_sslmode(url: &str) -> (String, Option<String>) {
    let mut written = None;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.strip_prefix("sslmode=") {
                Some(value) => {
                    written = Some(value.to_owned());
                    false
                }
                None => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, written);
    }
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|pair| match pair.strip_prefix("sslmode=") {
            Some(value) => {
                written = Some(value.to_owned());
                false
            }
            None => true,
        })
        .collect();
    (kept.join(" "), written)
}

/// The mode a PostgreSQL probe connects with: the URL's sslmode, and
/// whether the probe names a CA. A CA means verification, so without an
/// sslmode it is `verify-full`, and a mode that would not use it is refused
/// rather than ignored; without either, libpq's default `prefer`.
pub fn postgres_mode(written: Option<&str>, has_ca: bool) -> Result<SslMode, TlsError> {
    let mode = match written {
        None if has_ca => SslMode::VerifyFull,
        None | Some("prefer") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("require") => SslMode::Require,
        Some("verify-full") => SslMode::VerifyFull,
        Some("allow") => return Err(TlsError::UnsupportedSslMode("allow")),
        Some("verify-ca") => return Err(TlsError::UnsupportedSslMode("verify-ca")),
        Some(other) => return Err(TlsError::UnknownSslMode(other.to_owned())),
    };
    if has_ca && mode != SslMode::VerifyFull {
        return Err(TlsError::CaUnused(mode));
    }
    Ok(mode)
}

/// Whether a Redis address and the probe's CA go together: a CA needs
/// `rediss://`, and `#insecure` (no verification at all) is refused.
pub fn redis_tls(address: &redis::ConnectionAddr, has_ca: bool) -> Result<(), TlsError> {
    match address {
        redis::ConnectionAddr::TcpTls { insecure: true, .. } => Err(TlsError::InsecureRedis),
        redis::ConnectionAddr::TcpTls { .. } => Ok(()),
        _ if has_ca => Err(TlsError::CaWithoutTls),
        _ => Ok(()),
    }
}

/// The trust anchors in a PEM text (one CA or a bundle).
pub fn ca_roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::NotPem(error.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| TlsError::NotAnAnchor(error.to_string()))?;
    }
    Ok(roots)
}

/// The machine's roots, as the redis crate reads them for `rediss://`.
/// Read once: the image's CA bundle does not change while it runs.
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots
    });
    if roots.is_empty() {
        return Err(TlsError::NoSystemRoots);
    }
    Ok(roots.clone())
}

/// What a connection trusts.
pub enum Trust {
    /// Any certificate (sslmode `prefer` and `require`).
    Anything,
    /// A chain to these roots, for the host name connected to.
    Roots(RootCertStore),
}

/// A rustls client configuration on the ring provider, named here rather
/// than taken from the process default so no other provider can slip in.
pub fn client_config(trust: Trust) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let config = match trust {
        Trust::Roots(roots) => builder.with_root_certificates(roots),
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
    };
    Ok(config.with_no_client_auth())
}

/// libpq's `require`: the connection is encrypted, whoever the server
/// claims to be. The handshake's signatures are still checked, so the
/// server holds the key of the certificate it shows.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A failed TLS handshake anywhere in `error`'s chain, in a fixed phrase:
/// rustls's own text names the host and the certificate's names, which a
/// probe's detail does not repeat. None when TLS is not the cause.
pub fn handshake_failure(error: &(dyn StdError + 'static)) -> Option<&'static str> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = rustls_error(error) {
            return Some(phrase(tls));
        }
        next = error.source();
    }
    None
}

/// rustls's error in `error` itself or in the wrapper it comes in.
fn rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    // redis keeps its cause in an Arc; tokio-rustls puts rustls's error in
    // an io::Error. The source() of either skips the error they hold.
    if let Some(shared) = error.downcast_ref::<Arc<dyn StdError + Send + Sync>>() {
        return rustls_error(shared.as_ref());
    }
    error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| rustls_error(inner))
}

fn phrase(error: &rustls::Error) -> &'static str {
    let rustls::Error::InvalidCertificate(certificate) = error else {
        return "the handshake failed";
    };
    match certificate {
        CertificateError::UnknownIssuer => "the server's certificate is not signed by a trusted CA",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the server's certificate is not valid for the host name"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired"
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet"
        }
        CertificateError::Revoked => "the server's certificate is revoked",
        _ => "the server's certificate is invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_both_forms_of_connection_string() {
        for (url, rest, written) in [
            (
                "postgresql://u:p@db:5432/app?sslmode=verify-full",
                "postgresql://u:p@db:5432/app",
                Some("verify-full"),
            ),
            (
                "postgres://u:p@db/app?connect_timeout=3&sslmode=require&application_name=x",
                "postgres://u:p@db/app?connect_timeout=3&application_name=x",
                Some("require"),
            ),
            (
                "postgres://u:p@db/app?sslmode=disable&sslmode=require",
                "postgres://u:p@db/app",
                Some("require"),
            ),
            ("postgres://u:p@db/app", "postgres://u:p@db/app", None),
            (
                "postgres://u:p@db/app?connect_timeout=3",
                "postgres://u:p@db/app?connect_timeout=3",
                None,
            ),
            (
                "host=db user=u sslmode=verify-full dbname=app",
                "host=db user=u dbname=app",
                Some("verify-full"),
            ),
        ] {
            assert_eq!(
                split_sslmode(url),
                (rest.to_owned(), written.map(str::to_owned)),
                "{url}"
            );
        }
    }

    #[test]
    fn sslmode_and_a_ca_decide_the_mode() {
        use SslMode::*;
        for (written, has_ca, expected) in [
            (None, false, Ok(Prefer)),
            (None, true, Ok(VerifyFull)),
            (Some("disable"), false, Ok(Disable)),
            (Some("prefer"), false, Ok(Prefer)),
            (Some("require"), false, Ok(Require)),
            (Some("verify-full"), false, Ok(VerifyFull)),
            (Some("verify-full"), true, Ok(VerifyFull)),
            (Some("require"), true, Err(TlsError::CaUnused(Require))),
            (Some("disable"), true, Err(TlsError::CaUnused(Disable))),
            (
                Some("verify-ca"),
                true,
                Err(TlsError::UnsupportedSslMode("verify-ca")),
            ),
            (
                Some("allow"),
                false,
                Err(TlsError::UnsupportedSslMode("allow")),
            ),
            (
                Some("Require"),
                false,
                Err(TlsError::UnknownSslMode("Require".into())),
            ),
        ] {
            assert_eq!(
                postgres_mode(written, has_ca),
                expected,
                "{written:?} {has_ca}"
            );
        }
        assert_eq!(
            TlsError::CaUnused(Require).to_string(),
            "sslmode require does not verify the server, so tls.caSecretRef would be unused: use sslmode=verify-full (or none) or remove tls"
        );
        assert_eq!(
            VerifyFull.negotiated(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn a_redis_ca_needs_rediss_and_insecure_is_refused() {
        use redis::IntoConnectionInfo;
        let address = |url: &str| url.into_connection_info().unwrap().addr().clone();
        assert_eq!(redis_tls(&address("rediss://r:6380"), true), Ok(()));
        assert_eq!(redis_tls(&address("rediss://r:6380"), false), Ok(()));
        assert_eq!(redis_tls(&address("redis://r:6379"), false), Ok(()));
        assert_eq!(
            redis_tls(&address("redis://r:6379"), true),
            Err(TlsError::CaWithoutTls)
        );
        assert_eq!(
            redis_tls(&address("rediss://r:6380/#insecure"), false),
            Err(TlsError::InsecureRedis)
        );
    }

    /// A self-signed CA (P-256, CN "probe test CA"), made once with openssl.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBhzCCAS2gAwIBAgIUXmYcZ1qrMNVro/AwsABXXVFso3wwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNcHJvYmUgdGVzdCBDQTAgFw0yNjEyMDcwOTAyNDRaGA8yMTI2
MTExMzA5MDI0NFowGDEWMBQGA1UEAwwNcHJvYmUgdGVzdCBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABDlPlKr2QUJQIdiMwihS5xp1IjkJ05rFtcB9YyR8HwBS
VI80q7QbqQq7gEPEJenahG+3ee7FedPrpDpcquvyEnajUzBRMB0GA1UdDgQWBBQt
9HnIEJoIEgBHjZ6O5UbR4c75bjAfBgNVHSMEGDAWgBQt9HnIEJoIEgBHjZ6O5UbR
4c75bjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCICNvxxkP5034
cXz06Q/Xq18IsdVycf+omTMwnhs68wHcAiEAuKVFyrQdzixoCrXQzIh+mhT+0w2S
4ZvDtiaJzhDjrMk=
-----END CERTIFICATE-----
";

    #[test]
    fn a_ca_must_be_pem_certificates() {
        assert_eq!(ca_roots(CA.as_bytes()).map(|roots| roots.len()), Ok(1));
        let bundle = format!("{CA}{CA}");
        assert_eq!(ca_roots(bundle.as_bytes()).map(|roots| roots.len()), Ok(2));
        assert_eq!(
            ca_roots(b"not a certificate").err(),
            Some(TlsError::NoCertificate)
        );
        let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(
            matches!(ca_roots(not_der.as_bytes()), Err(TlsError::NotAnAnchor(_))),
            "{:?}",
            ca_roots(not_der.as_bytes()).err()
        );
        let not_base64 = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(
            matches!(ca_roots(not_base64.as_bytes()), Err(TlsError::NotPem(_))),
            "{:?}",
            ca_roots(not_base64.as_bytes()).err()
        );
    }

    #[test]
    fn both_trusts_build_on_ring() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for trust in [Trust::Anything, Trust::Roots(RootCertStore::empty())] {
            let config = client_config(trust).unwrap();
            assert!(!config.crypto_provider().cipher_suites.is_empty());
        }
    }

    #[test]
    fn a_failed_handshake_is_told_without_names() {
        let unknown = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(
            handshake_failure(&unknown),
            Some("the server's certificate is not signed by a trusted CA")
        );
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert_eq!(
            handshake_failure(&name),
            Some("the server's certificate is not valid for the host name")
        );
        let redis = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        ));
        assert_eq!(
            handshake_failure(&redis),
            Some("the server's certificate has expired")
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(handshake_failure(&refused), None);
    }
}
