//! One check of one probe against its service. A service that does not
//! answer as expected is a failed check; a probe that cannot run at all
//! (its Secret or key missing, a URL that does not parse) is a
//! misconfiguration, reported as such and never counted as the service
//! failing: a typo must not open an incident.

use std::{collections::BTreeMap, time::Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::tracker::Outcome;
use crate::{
    context::Context,
    crd::{HttpProbe, PostgresProbe, Probe, RedisProbe, SecretRef},
};

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum Misconfigured {
    #[error("Secret {0} not found")]
    SecretMissing(String),
    #[error("Secret {secret} has no key {key}")]
    KeyMissing { secret: String, key: &'static str },
    #[error("reading Secret {secret}: {source}")]
    SecretUnreadable {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Which kind of probe, for logs and metrics.
pub fn kind(probe: &Probe) -> &'static str {
    if probe.http.is_some() {
        "http"
    } else if probe.redis.is_some() {
        "redis"
    } else {
        "postgres"
    }
}

/// Runs one check of `probe` (whose target is in `namespace`). `failing`
/// says whether the probe is failing now: a Redis list must drain to
/// `clearBelow` to pass again.
pub async fn run(
    ctx: &Context,
    namespace: &str,
    probe: &Probe,
    failing: bool,
) -> Result<Outcome, Misconfigured> {
    let timeout = probe.timeout.as_std();
    let checked = async {
        if let Some(http) = &probe.http {
            check_http(ctx, namespace, probe, http).await
        } else if let Some(redis) = &probe.redis {
            check_redis(ctx, namespace, redis, failing).await
        } else if let Some(postgres) = &probe.postgres {
            check_postgres(ctx, namespace, postgres).await
        } else {
            Err(Misconfigured::Invalid(
                "a probe needs one of http, redis, postgres".into(),
            ))
        }
    };
    let result = match tokio::time::timeout(timeout, checked).await {
        Ok(result) => result?,
        Err(_) => Measured::failed(format!(
            "no answer within {}",
            crate::communication::templates::human(timeout)
        )),
    };
    Ok(Outcome {
        passed: result.passed,
        value: result.value,
        detail: result.detail,
        at: crate::k8s::now_whole_seconds(),
    })
}

/// What a check found.
struct Measured {
    passed: bool,
    value: Option<f64>,
    detail: String,
}

impl Measured {
    fn failed(detail: String) -> Measured {
        Measured {
            passed: false,
            value: None,
            detail,
        }
    }
}

/// The URL with the target filled in: `{{ namespace }}` and `{{ name }}`.
pub fn url_for(template: &str, namespace: &str, name: &str) -> String {
    template
        .replace("{{ namespace }}", namespace)
        .replace("{{namespace}}", namespace)
        .replace("{{ name }}", name)
        .replace("{{name}}", name)
}

async fn check_http(
    ctx: &Context,
    namespace: &str,
    probe: &Probe,
    http: &HttpProbe,
) -> Result<Measured, Misconfigured> {
    let url = url_for(&http.url, namespace, &probe.target.name);
    let url = reqwest::Url::parse(&url)
        .map_err(|error| Misconfigured::Invalid(format!("http.url {url:?}: {error}")))?;
    let mut headers = HeaderMap::new();
    if let Some(secret) = &http.headers_from {
        for (key, value) in secret_values(ctx, namespace, secret).await? {
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                Misconfigured::Invalid(format!(
                    "Secret {}: {key} is not a header name",
                    secret.name
                ))
            })?;
            let value = HeaderValue::from_str(&value).map_err(|_| {
                Misconfigured::Invalid(format!(
                    "Secret {}: {key} is not a header value",
                    secret.name
                ))
            })?;
            headers.insert(name, value);
        }
    }
    let started = Instant::now();
    let answer = ctx.http.get(url).headers(headers).send().await;
    let took = started.elapsed();
    let seconds = took.as_secs_f64();
    let response = match answer {
        Ok(response) => response,
        // Without the URL's query or credentials: only what went wrong.
        Err(error) if error.is_connect() => {
            return Ok(Measured::failed("could not connect".into()));
        }
        Err(error) if error.is_timeout() => return Ok(Measured::failed("timed out".into())),
        Err(_) => return Ok(Measured::failed("the request failed".into())),
    };
    let status = response.status();
    let expected = if http.expect_status.is_empty() {
        status.is_success()
    } else {
        http.expect_status.contains(&i32::from(status.as_u16()))
    };
    let shown = format!("{} in {seconds:.3}s", status.as_u16());
    if !expected {
        return Ok(Measured {
            passed: false,
            value: Some(seconds),
            detail: format!("answered {shown}, not an expected status"),
        });
    }
    if let Some(limit) = http.slower_than
        && took > limit.as_std()
    {
        return Ok(Measured {
            passed: false,
            value: Some(seconds),
            detail: format!(
                "answered {shown}, slower than {}",
                crate::communication::templates::human(limit.as_std())
            ),
        });
    }
    Ok(Measured {
        passed: true,
        value: Some(seconds),
        detail: format!("answered {shown}"),
    })
}

async fn check_redis(
    ctx: &Context,
    namespace: &str,
    redis: &RedisProbe,
    failing: bool,
) -> Result<Measured, Misconfigured> {
    let url = secret_key(ctx, namespace, &redis.secret_ref, "url").await?;
    let client = ::redis::Client::open(url.as_str()).map_err(|_| {
        Misconfigured::Invalid(format!(
            "Secret {}: url is not a Redis URL",
            redis.secret_ref.name
        ))
    })?;
    let length = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        ::redis::cmd("LLEN")
            .arg(&redis.list)
            .query_async::<i64>(&mut connection)
            .await
    };
    let length = match length.await {
        Ok(length) => length,
        Err(error) => {
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
        value: Some(length as f64),
        detail,
    })
}

async fn check_postgres(
    ctx: &Context,
    namespace: &str,
    postgres: &PostgresProbe,
) -> Result<Measured, Misconfigured> {
    let url = secret_key(ctx, namespace, &postgres.secret_ref, "url").await?;
    let config: tokio_postgres::Config = url.parse().map_err(|_| {
        Misconfigured::Invalid(format!(
            "Secret {}: url is not a PostgreSQL URL",
            postgres.secret_ref.name
        ))
    })?;
    let started = Instant::now();
    let (client, connection) = match config.connect(tokio_postgres::NoTls).await {
        Ok(connected) => connected,
        Err(error) => {
            return Ok(Measured::failed(format!(
                "PostgreSQL: {}",
                first_line(&error)
            )));
        }
    };
    let connection = tokio::spawn(connection);
    let answered = client.simple_query(&postgres.query).await;
    drop(client);
    connection.abort();
    let seconds = started.elapsed().as_secs_f64();
    Ok(match answered {
        Ok(_) => Measured {
            passed: true,
            value: Some(seconds),
            detail: format!("answered in {seconds:.3}s"),
        },
        Err(error) => Measured {
            passed: false,
            value: Some(seconds),
            detail: format!("PostgreSQL: {}", first_line(&error)),
        },
    })
}

/// An error's own words, without its sources (which can name the server).
fn first_line(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|db| db.message().to_owned())
        .or_else(|| error.to_string().lines().next().map(str::to_owned))
        .unwrap_or_else(|| "failed".into())
}

async fn secret_values(
    ctx: &Context,
    namespace: &str,
    secret: &SecretRef,
) -> Result<BTreeMap<String, String>, Misconfigured> {
    let found = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&secret.name)
        .await
        .map_err(|source| Misconfigured::SecretUnreadable {
            secret: secret.name.clone(),
            source,
        })?
        .ok_or_else(|| Misconfigured::SecretMissing(secret.name.clone()))?;
    let mut values = BTreeMap::new();
    for (key, value) in found.data.iter().flatten() {
        if let Ok(text) = String::from_utf8(value.0.clone()) {
            values.insert(key.clone(), text.trim().to_owned());
        }
    }
    for (key, value) in found.string_data.iter().flatten() {
        values.insert(key.clone(), value.trim().to_owned());
    }
    Ok(values)
}

async fn secret_key(
    ctx: &Context,
    namespace: &str,
    secret: &SecretRef,
    key: &'static str,
) -> Result<String, Misconfigured> {
    secret_values(ctx, namespace, secret)
        .await?
        .remove(key)
        .ok_or_else(|| Misconfigured::KeyMissing {
            secret: secret.name.clone(),
            key,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_filled_with_the_target() {
        assert_eq!(
            url_for(
                "http://{{ name }}.{{ namespace }}.svc:8000/health",
                "hg",
                "api"
            ),
            "http://api.hg.svc:8000/health"
        );
        assert_eq!(url_for("http://{{name}}/x", "hg", "api"), "http://api/x");
    }
}
