//! The data stores' checks: a Redis list's length (it must drain to
//! `clearBelow` to pass again) and a PostgreSQL query, each over TLS when
//! its URL or `sslmode` asks (`super::tls`). What a store answers is the
//! check; what keeps the probe from reaching it at all is `Misconfigured`.

use std::time::{Duration, Instant};

use kube::Client;

use super::{
    reading::{Measured, Misconfigured, ca_pem, secret_key},
    tls::{self, SslMode, Trust},
};
use crate::crd::{PostgresProbe, RedisProbe};

pub(super) async fn check_redis(
    client: &Client,
    namespace: &str,
    redis: &RedisProbe,
    failing: bool,
) -> Result<Measured, Misconfigured> {
    let url = secret_key(client, namespace, &redis.secret_ref, "url").await?;
    let not_redis = || {
        Misconfigured::Invalid(format!(
            "Secret {}: url is not a Redis URL",
            redis.secret_ref.name
        ))
    };
    let info =
        ::redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(|_| not_redis())?;
    tls::redis_tls(info.addr(), redis.tls.is_some()).map_err(|source| Misconfigured::Tls {
        field: "redis.tls",
        source,
    })?;
    let redis_client = match &redis.tls {
        None => {
            // rediss:// without a CA of the probe's: the redis crate reads
            // the system roots itself; none at all is a misconfiguration,
            // as for PostgreSQL, not the server failing.
            if matches!(info.addr(), ::redis::ConnectionAddr::TcpTls { .. }) {
                tls::system_roots().map_err(|source| Misconfigured::Tls {
                    field: "redis.tls",
                    source,
                })?;
            }
            ::redis::Client::open(info)
        }
        Some(settings) => {
            let (pem, _) = ca_pem(client, namespace, settings, "redis.tls.caSecretRef").await?;
            ::redis::Client::build_with_tls(
                info,
                ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.into_bytes()),
                },
            )
        }
    }
    .map_err(|_| not_redis())?;
    let length = async {
        let mut connection = redis_client.get_multiplexed_async_connection().await?;
        ::redis::cmd("LLEN")
            .arg(&redis.list)
            .query_async::<i64>(&mut connection)
            .await
    };
    let length = match length.await {
        Ok(length) => length,
        Err(error) => {
            // A certificate that does not verify is what every client of
            // the server meets (an expired or rotated certificate, an
            // impostor): the service failing, told in a fixed phrase.
            if let Some(failure) = tls::handshake_failure(&error) {
                return Ok(Measured::failed(format!("Redis: TLS: {failure}")));
            }
            let said = error.to_string();
            let first = said.lines().next().unwrap_or("failed");
            return Ok(Measured::failed(format!("Redis: {first}")));
        }
    };
    // Once failing, it must drain to clearBelow to pass.
    let limit = if failing {
        redis.clear_below.unwrap_or(redis.above)
    } else {
        redis.above
    };
    let passed = length <= limit;
    let detail = if passed {
        format!("{} has {length} entries", redis.list)
    } else if failing {
        format!(
            "{} has {length} entries (must drain to {limit})",
            redis.list
        )
    } else {
        format!("{} has {length} entries (above {limit})", redis.list)
    };
    Ok(Measured {
        passed,
        inconclusive: false,
        value: Some(length as f64),
        detail,
    })
}

pub(super) async fn check_postgres(
    client: &Client,
    namespace: &str,
    postgres: &PostgresProbe,
    timeout: Duration,
) -> Result<Measured, Misconfigured> {
    let url = secret_key(client, namespace, &postgres.secret_ref, "url").await?;
    let (url, written) = tls::split_sslmode(&url);
    let mode =
        tls::postgres_mode(written.as_deref(), postgres.tls.is_some()).map_err(|source| {
            Misconfigured::SslMode {
                secret: postgres.secret_ref.name.clone(),
                source,
            }
        })?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|_| {
        Misconfigured::Invalid(format!(
            "Secret {}: url is not a PostgreSQL URL",
            postgres.secret_ref.name
        ))
    })?;
    config.ssl_mode(mode.negotiated());
    let trust = match (mode, &postgres.tls) {
        (SslMode::Disable, _) => None,
        (SslMode::Prefer | SslMode::Require, _) => Some(Trust::Anything),
        (SslMode::VerifyFull, Some(settings)) => {
            let (_, roots) =
                ca_pem(client, namespace, settings, "postgres.tls.caSecretRef").await?;
            Some(Trust::Roots(roots))
        }
        (SslMode::VerifyFull, None) => {
            Some(Trust::Roots(tls::system_roots().map_err(|source| {
                Misconfigured::Tls {
                    field: "postgres.tls",
                    source,
                }
            })?))
        }
    };
    let started = Instant::now();
    let answered = match trust {
        None => query_once(&config, tokio_postgres::NoTls, &postgres.query, timeout).await,
        Some(trust) => {
            let tls_config = tls::client_config(trust).map_err(|source| Misconfigured::Tls {
                field: "postgres.tls",
                source,
            })?;
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config);
            query_once(&config, connector, &postgres.query, timeout).await
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(match answered {
        Ok(()) => Measured {
            passed: true,
            inconclusive: false,
            value: Some(seconds),
            detail: format!("answered in {seconds:.3}s"),
        },
        Err(Failed::Connecting(error)) => {
            Measured::failed(format!("PostgreSQL: {}", connect_failure(&error)))
        }
        Err(Failed::Querying(error)) => Measured {
            passed: false,
            inconclusive: false,
            value: Some(seconds),
            detail: format!("PostgreSQL: {}", sql_failure(&error)),
        },
    })
}

/// Where a PostgreSQL check failed: before the query (no time measured)
/// or in it.
enum Failed {
    Connecting(tokio_postgres::Error),
    Querying(tokio_postgres::Error),
}

/// Connects (plain or over TLS, as `tls` makes the connection), runs the
/// probe's query, and closes.
async fn query_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    query: &str,
    timeout: Duration,
) -> Result<(), Failed>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (mut database, connection) = config.connect(tls).await.map_err(Failed::Connecting)?;
    let connection = tokio::spawn(connection);
    let answered = read_only(&mut database, query, timeout).await;
    drop(database);
    connection.abort();
    answered.map_err(Failed::Querying)
}

/// Why a connection failed: a TLS handshake that failed (the certificate
/// did not verify: the service failing, as every client sees it) in a
/// fixed phrase, else as `sql_failure` tells it.
fn connect_failure(error: &tokio_postgres::Error) -> String {
    match tls::handshake_failure(error) {
        Some(failure) => format!("TLS: {failure}"),
        None => sql_failure(error),
    }
}

/// Runs a probe's query as the policy author wrote it, bounded: in a
/// read-only transaction (no write, whatever the query says), under a
/// statement timeout, and alone (the extended protocol takes one
/// statement, so `SELECT 1; DROP TABLE t` is refused whole). Rolled back.
async fn read_only(
    database: &mut tokio_postgres::Client,
    query: &str,
    timeout: Duration,
) -> Result<(), tokio_postgres::Error> {
    let transaction = database.build_transaction().read_only(true).start().await?;
    // The server cancels the statement before the probe stops waiting, so
    // a slow query is told as such (and stops using the database).
    let statement_timeout = (timeout.as_millis() * 3 / 4).max(1);
    transaction
        .batch_execute(&format!(
            "SET LOCAL statement_timeout = {statement_timeout}"
        ))
        .await?;
    transaction.query(query, &[]).await?;
    transaction.rollback().await
}

/// What a failure says: its SQLSTATE class and a fixed phrase, never the
/// server's own text (which can carry row data or a secret), nor the
/// connection's (which names the server).
fn sql_failure(error: &tokio_postgres::Error) -> String {
    let Some(state) = error.code() else {
        return if error.is_closed() {
            "the connection closed".into()
        } else {
            "could not connect, or no answer".into()
        };
    };
    let class = state.code().get(..2).unwrap_or("??");
    let phrase = match class {
        "08" => "connection exception",
        "0A" => "feature not supported",
        "22" => "data exception",
        "23" => "integrity constraint violation",
        "25" => "invalid transaction state (a probe may only read)",
        "28" => "invalid authorization",
        "3D" => "invalid database name",
        "40" => "transaction rollback",
        "42" => "syntax error or access rule violation",
        "53" => "insufficient resources",
        "57" => "operator intervention (the statement timed out, or the server is shutting down)",
        "58" => "system error",
        "XX" => "internal error",
        _ => "error",
    };
    format!("SQLSTATE class {class}: {phrase}")
}
