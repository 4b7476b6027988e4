//! Redis and PostgreSQL probes over TLS, against real servers started with
//! `cluster/signals/start.sh KIND DIR --tls` (a throwaway CA, a certificate
//! for localhost and 127.0.0.1, TLS only), their URLs and CAs in Secrets on
//! the real API server. One check at a time (`check::run`), each outcome
//! asserted exactly.
//!
//! A CA that does not match the server's certificate (or a host name the
//! certificate does not name) is a failed check, not a misconfiguration:
//! the probe cannot tell a wrong CA from a server whose certificate was
//! rotated, expired or is an impostor's, and every other client of the
//! server fails the same way, so it is the service as its clients see it.
//! A CA the probe cannot even read (Secret or key missing, no PEM) is the
//! probe's misconfiguration.

use healing_guard_operator::{
    crd::Probe,
    signals::{
        check::{Misconfigured, run},
        tracker::Outcome,
    },
};
use kube::Client;
use serde_json::{Value, json};

use crate::{
    signals::{SignalServer, secret},
    support::{client, namespace, repo},
};

/// One check of a probe whose kind-specific part is `settings`.
async fn check(client: &Client, ns: &str, settings: Value) -> Result<Outcome, Misconfigured> {
    let mut probe = json!({"name": "tls", "target": {"kind": "StatefulSet", "name": "db"},
                           "every": "10s", "timeout": "5s"});
    let (kind, settings) = settings
        .as_object()
        .and_then(|o| o.iter().next())
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    probe[kind] = settings;
    let probe: Probe = serde_json::from_value(probe).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    run(client, &reqwest::Client::new(), ns, &probe, false).await
}

/// A failed check's detail.
fn failed(outcome: Result<Outcome, Misconfigured>) -> String {
    let outcome = outcome.unwrap();
    assert!(!outcome.passed && !outcome.inconclusive, "{outcome:?}");
    outcome.detail
}

/// A passed check's detail.
fn passed(outcome: Result<Outcome, Misconfigured>) -> String {
    let outcome = outcome.unwrap();
    assert!(outcome.passed, "{outcome:?}");
    outcome.detail
}

/// The PEM of a CA that signed nothing the servers show.
fn other_ca() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(repo().join("cluster/signals/tls.sh"))
        .arg(dir.path())
        .args(["--ca-only", "--name", "some other CA"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pem = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    (dir, pem)
}

/// CA Secrets: `ca` (the server's), `other-ca`, and `not-pem`.
async fn ca_secrets(client: &Client, ns: &str, server_ca: &str) -> tempfile::TempDir {
    let (dir, other) = other_ca();
    let server_ca = std::fs::read_to_string(server_ca).unwrap();
    secret(client, ns, "ca", json!({"ca.crt": server_ca})).await;
    secret(client, ns, "other-ca", json!({"ca.crt": other})).await;
    secret(client, ns, "not-pem", json!({"ca.crt": "hello"})).await;
    dir
}

fn ca(name: &str, key: &str) -> Value {
    json!({"caSecretRef": {"name": name, "key": key}})
}

#[tokio::test]
async fn a_rediss_probe_verifies_the_server_against_the_ca_from_its_secret() {
    let redis = SignalServer::start_with("redis", tempfile::tempdir().unwrap(), &["--tls"]);
    let url = redis.var("HGO_REDIS_URL");
    assert!(url.starts_with("rediss://127.0.0.1:"), "{url}");
    let client = client().await;
    let ns = namespace(&client, "tls-redis").await;
    let _other = ca_secrets(&client, &ns, &redis.var("HGO_REDIS_CA")).await;
    secret(&client, &ns, "rediss", json!({"url": url})).await;
    let plain = url.replacen("rediss://", "redis://", 1);
    secret(&client, &ns, "plain", json!({"url": plain})).await;
    let probe = |secret: &str, tls: Option<Value>| {
        let mut redis =
            json!({"secretRef": {"name": secret}, "list": "webhook_queue", "above": 10});
        if let Some(tls) = tls {
            redis["tls"] = tls;
        }
        json!({"redis": redis})
    };

    assert_eq!(
        passed(check(&client, &ns, probe("rediss", Some(ca("ca", "ca.crt")))).await),
        "webhook_queue has 0 entries"
    );
    // The server's certificate chains to neither: the check fails.
    for tls in [Some(ca("other-ca", "ca.crt")), None] {
        assert_eq!(
            failed(check(&client, &ns, probe("rediss", tls.clone())).await),
            "Redis: TLS: the server's certificate is not signed by a trusted CA",
            "{tls:?} (None: the system roots)"
        );
    }
    // What the probe cannot use is its own misconfiguration.
    for (secret, tls, said) in [
        (
            "rediss",
            ca("ca", "tls.crt"),
            "redis.tls.caSecretRef: Secret ca has no key tls.crt",
        ),
        (
            "rediss",
            ca("no-such", "ca.crt"),
            "redis.tls.caSecretRef: Secret no-such not found",
        ),
        (
            "rediss",
            ca("not-pem", "ca.crt"),
            "redis.tls.caSecretRef: Secret not-pem key ca.crt holds no PEM certificate",
        ),
        (
            "plain",
            ca("ca", "ca.crt"),
            "redis.tls: tls.caSecretRef needs a rediss:// URL",
        ),
    ] {
        let outcome = check(&client, &ns, probe(secret, Some(tls))).await;
        assert_eq!(
            outcome.as_ref().err().map(ToString::to_string).as_deref(),
            Some(said),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_postgres_probe_honours_sslmode_against_a_tls_only_server() {
    let postgres = SignalServer::start_with("postgres", tempfile::tempdir().unwrap(), &["--tls"]);
    let url = postgres.var("HGO_POSTGRES_URL");
    let port = postgres.var("HGO_POSTGRES_PORT");
    let client = client().await;
    let ns = namespace(&client, "tls-pg").await;
    let _other = ca_secrets(&client, &ns, &postgres.var("HGO_POSTGRES_CA")).await;
    // hostaddr connects to the server while the host name checked against
    // its certificate is one it does not name.
    let elsewhere = format!(
        "postgresql://hgo:hgo@db.example.invalid:{port}/hgo?hostaddr=127.0.0.1&sslmode=verify-full"
    );
    let localhost = url.replacen("127.0.0.1", "localhost", 1);
    for (name, url) in [
        ("none", url.clone()),
        ("disable", format!("{url}?sslmode=disable")),
        ("prefer", format!("{url}?sslmode=prefer")),
        ("require", format!("{url}?sslmode=require")),
        ("verify-full", format!("{url}?sslmode=verify-full")),
        ("localhost", format!("{localhost}?sslmode=verify-full")),
        ("elsewhere", elsewhere),
        ("verify-ca", format!("{url}?sslmode=verify-ca")),
    ] {
        secret(&client, &ns, name, json!({"url": url})).await;
    }
    let probe = |secret: &str, tls: Option<Value>| {
        let mut postgres = json!({"secretRef": {"name": secret}});
        if let Some(tls) = tls {
            postgres["tls"] = tls;
        }
        json!({"postgres": postgres})
    };

    // Encrypted, not verified (libpq's prefer, the default, and require).
    for secret in ["none", "prefer", "require"] {
        let detail = passed(check(&client, &ns, probe(secret, None)).await);
        assert!(detail.starts_with("answered in "), "{secret}: {detail}");
    }
    // Plain: the server refuses it (hostnossl ... reject).
    assert_eq!(
        failed(check(&client, &ns, probe("disable", None)).await),
        "PostgreSQL: SQLSTATE class 28: invalid authorization"
    );
    // Verified against the CA: by IP address and by name, with the mode
    // written, and with none (a CA means verify-full).
    for secret in ["verify-full", "localhost", "none"] {
        let detail = passed(check(&client, &ns, probe(secret, Some(ca("ca", "ca.crt")))).await);
        assert!(detail.starts_with("answered in "), "{secret}: {detail}");
    }
    assert_eq!(
        failed(check(&client, &ns, probe("elsewhere", Some(ca("ca", "ca.crt")))).await),
        "PostgreSQL: TLS: the server's certificate is not valid for the host name"
    );
    assert_eq!(
        failed(
            check(
                &client,
                &ns,
                probe("verify-full", Some(ca("other-ca", "ca.crt")))
            )
            .await
        ),
        "PostgreSQL: TLS: the server's certificate is not signed by a trusted CA"
    );
    // verify-full without a CA of the probe's: the system roots, which do
    // not know the throwaway CA.
    assert_eq!(
        failed(check(&client, &ns, probe("verify-full", None)).await),
        "PostgreSQL: TLS: the server's certificate is not signed by a trusted CA"
    );
    for (secret, tls, said) in [
        (
            "require",
            Some(ca("ca", "ca.crt")),
            "Secret require: url: sslmode require does not verify the server, so tls.caSecretRef would be unused: use sslmode=verify-full (or none) or remove tls",
        ),
        (
            "verify-ca",
            None,
            "Secret verify-ca: url: sslmode verify-ca is not supported: use require (encrypted) or verify-full (verified)",
        ),
        (
            "verify-full",
            Some(ca("not-pem", "ca.crt")),
            "postgres.tls.caSecretRef: Secret not-pem key ca.crt holds no PEM certificate",
        ),
        (
            "verify-full",
            Some(ca("ca", "tls.crt")),
            "postgres.tls.caSecretRef: Secret ca has no key tls.crt",
        ),
    ] {
        let outcome = check(&client, &ns, probe(secret, tls)).await;
        assert_eq!(
            outcome.as_ref().err().map(ToString::to_string).as_deref(),
            Some(said),
            "{outcome:?}"
        );
    }
}
