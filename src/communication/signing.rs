//! A generic webhook's signature, so its receiver can tell our requests
//! from anyone else's and refuse a replay: HMAC-SHA256 with the channel's
//! `signingKey` over `<timestamp>.<body>`, as Stripe and Slack sign theirs.
//! The receiver recomputes it over the raw body it got and compares in
//! constant time (docs/communication.md shows how).

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

/// When the request was signed, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-healing-guard-timestamp";
/// `v1=<hex>`: the scheme's version, then the HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "x-healing-guard-signature";
/// The scheme's version, as the signature header names it.
const VERSION: &str = "v1";

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the signing key cannot key HMAC-SHA256")]
    Key(#[from] hmac::digest::InvalidLength),
    #[error("the signature is not a header value")]
    Header(#[from] reqwest::header::InvalidHeaderValue),
}

fn mac(key: &[u8], timestamp: i64, body: &[u8]) -> Result<Hmac<Sha256>, SigningError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> Result<String, SigningError> {
    let digest = mac(key, timestamp, body)?.finalize().into_bytes();
    Ok(format!("{VERSION}={}", hex::encode(digest)))
}

/// Both headers of a signed request.
pub fn headers(key: &[u8], timestamp: i64, body: &[u8]) -> Result<HeaderMap, SigningError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static(TIMESTAMP_HEADER),
        HeaderValue::from(timestamp),
    );
    headers.insert(
        HeaderName::from_static(SIGNATURE_HEADER),
        HeaderValue::from_str(&signature(key, timestamp, body)?)?,
    );
    Ok(headers)
}

/// Whether `header` signs `body` sent at `timestamp` with `key`, compared
/// in constant time: what a receiver checks (and the tests do).
pub fn verify(key: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header
        .strip_prefix(VERSION)
        .and_then(|rest| rest.strip_prefix('='))
    else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    mac(key, timestamp, body).is_ok_and(|mac| mac.verify_slice(&digest).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"whsec_test";
    const AT: i64 = 1_767_225_600;
    const BODY: &[u8] = br#"{"event":"Opened","text":"hi"}"#;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test",
        //   b"1767225600." + b"{\"event\":\"Opened\",\"text\":\"hi\"}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(KEY, AT, BODY).unwrap(),
            "v1=0f14f3ad7efe5005a772bb84ba408d7fa0d02fbc38b3d7f7cd16387c4282d1b9"
        );
        let headers = headers(KEY, AT, BODY).unwrap();
        assert_eq!(headers[TIMESTAMP_HEADER], "1767225600");
        assert_eq!(
            headers[SIGNATURE_HEADER],
            "v1=0f14f3ad7efe5005a772bb84ba408d7fa0d02fbc38b3d7f7cd16387c4282d1b9"
        );
    }

    #[test]
    fn a_receiver_refuses_a_tampered_body_an_old_timestamp_or_another_key() {
        let header = signature(KEY, AT, BODY).unwrap();
        assert!(verify(KEY, AT, BODY, &header));
        let tampered = br#"{"event":"Resolved","text":"hi"}"#;
        assert!(!verify(KEY, AT, tampered, &header));
        assert!(
            !verify(KEY, AT + 1, BODY, &header),
            "the timestamp is signed"
        );
        assert!(!verify(b"another key", AT, BODY, &header));
        assert!(!verify(KEY, AT, BODY, "v0=00"));
        assert!(!verify(KEY, AT, BODY, "v1=not hex"));
    }
}
