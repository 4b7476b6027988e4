//! One check of one probe against its service. A service that does not
//! answer as expected is a failed check; a probe that cannot run at all
//! (its Secret or key missing, a URL that does not parse) is a
//! misconfiguration, reported as such and never counted as the service
//! failing: a typo must not open an incident.

use std::time::Instant;

use kube::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

pub use super::reading::Misconfigured;
use super::{
    reading::{Measured, secret_values},
    stores,
    tracker::Outcome,
};
use crate::{
    crd::{HttpProbe, Probe},
    placeholders::fill,
};

/// Which kind of probe, for logs and metrics.
pub fn kind(probe: &Probe) -> &'static str {
    if probe.http.is_some() {
        "http"
    } else if probe.redis.is_some() {
        "redis"
    } else if probe.prometheus.is_some() {
        "prometheus"
    } else {
        "postgres"
    }
}

/// Runs one check of `probe` (whose target is in `namespace`). `failing`
/// says whether the probe is failing now: a Redis list must drain to
/// `clearBelow` to pass again. `client` reads the probe's Secrets; `http`
/// reaches HTTP services and Prometheus.
pub async fn run(
    client: &Client,
    http: &reqwest::Client,
    namespace: &str,
    probe: &Probe,
    failing: bool,
) -> Result<Outcome, Misconfigured> {
    let timeout = probe.timeout.as_std();
    let checked = async {
        if let Some(settings) = &probe.http {
            check_http(client, http, namespace, probe, settings).await
        } else if let Some(redis) = &probe.redis {
            stores::check_redis(client, namespace, redis, failing).await
        } else if let Some(postgres) = &probe.postgres {
            stores::check_postgres(client, namespace, postgres, timeout).await
        } else if let Some(prometheus) = &probe.prometheus {
            check_prometheus(http, namespace, probe, prometheus).await
        } else {
            Err(Misconfigured::Invalid(
                "a probe needs one of http, redis, postgres, prometheus".into(),
            ))
        }
    };
    let result = match tokio::time::timeout(timeout, checked).await {
        Ok(result) => result?,
        Err(_) => Measured::failed(format!(
            "no answer within {}",
            crate::crd::duration::spoken(timeout)
        )),
    };
    Ok(Outcome {
        passed: result.passed,
        inconclusive: result.inconclusive,
        value: result.value,
        detail: result.detail,
        at: crate::k8s::now_whole_seconds(),
    })
}

/// What a Prometheus instant query's answer says, against the bounds: every
/// series must keep them; no series or NaN says nothing. Pure.
pub fn judge_prometheus(
    answer: &serde_json::Value,
    query: &str,
    below: Option<f64>,
    above: Option<f64>,
) -> (Option<bool>, Option<f64>, String) {
    let data = &answer["data"];
    let values: Vec<Option<f64>> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .map(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()))
                    .collect()
            })
            .unwrap_or_default(),
        Some("scalar") => vec![data["result"][1].as_str().and_then(|v| v.parse().ok())],
        other => {
            return (
                Some(false),
                None,
                format!("{query}: a {other:?} result, not a vector or scalar"),
            );
        }
    };
    if values.is_empty() {
        return (None, None, format!("{query}: no data (inconclusive)"));
    }
    let Some(values) = values
        .into_iter()
        .map(|v| v.filter(|v| !v.is_nan()))
        .collect::<Option<Vec<f64>>>()
    else {
        return (None, None, format!("{query}: NaN (inconclusive)"));
    };
    let worst = match below {
        Some(_) => values.iter().copied().fold(f64::MIN, f64::max),
        None => values.iter().copied().fold(f64::MAX, f64::min),
    };
    let ok = values
        .iter()
        .all(|v| below.is_none_or(|b| *v < b) && above.is_none_or(|a| *v > a));
    let bound = match (below, above) {
        (Some(b), Some(a)) => format!("between {a} and {b}"),
        (Some(b), None) => format!("below {b}"),
        (None, Some(a)) => format!("above {a}"),
        (None, None) => "unbounded".to_owned(),
    };
    let verdict = if ok { "" } else { "not " };
    (
        Some(ok),
        Some(worst),
        format!("{query} = {worst} ({verdict}{bound})"),
    )
}

async fn check_prometheus(
    http: &reqwest::Client,
    namespace: &str,
    probe: &Probe,
    prometheus: &crate::crd::PrometheusProbe,
) -> Result<Measured, Misconfigured> {
    let query = fill(&prometheus.query, namespace, &probe.target.name).map_err(|source| {
        Misconfigured::Placeholders {
            field: "prometheus.query",
            source,
        }
    })?;
    let mut url = reqwest::Url::parse(&prometheus.address)
        .and_then(|base| base.join("api/v1/query"))
        .map_err(|error| {
            Misconfigured::Invalid(format!(
                "prometheus.address {:?}: {error}",
                prometheus.address
            ))
        })?;
    crate::egress::check_url(&url)
        .map_err(|refused| Misconfigured::Invalid(format!("prometheus.address: {refused}")))?;
    url.query_pairs_mut().append_pair("query", &query);
    let answer = match http.get(url).send().await {
        Ok(response) => response,
        Err(error) if error.is_connect() => {
            return Ok(Measured::failed("Prometheus: could not connect".into()));
        }
        Err(_) => return Ok(Measured::failed("Prometheus: the request failed".into())),
    };
    let status = answer.status();
    let body = match crate::egress::read_json(answer).await {
        Ok(body) => body,
        Err(crate::egress::TooLargeOrNotJson::NotJson) => {
            return Ok(Measured::failed(format!(
                "Prometheus answered {status} without JSON"
            )));
        }
        Err(too_large) => {
            return Ok(Measured::failed(format!(
                "Prometheus answered {status} with {too_large}"
            )));
        }
    };
    if body["status"] != "success" {
        let why = body["error"].as_str().unwrap_or("failed");
        return Ok(Measured::failed(format!("{query}: {why}")));
    }
    let (verdict, value, detail) =
        judge_prometheus(&body, &query, prometheus.below, prometheus.above);
    Ok(Measured {
        passed: verdict == Some(true),
        inconclusive: verdict.is_none(),
        value,
        detail,
    })
}

/// The URL with the target filled in: `{{ namespace }}` and `{{ name }}`;
/// one that cannot be filled comes back as written.
async fn check_http(
    client: &Client,
    http: &reqwest::Client,
    namespace: &str,
    probe: &Probe,
    settings: &HttpProbe,
) -> Result<Measured, Misconfigured> {
    let url = fill(&settings.url, namespace, &probe.target.name).map_err(|source| {
        Misconfigured::Placeholders {
            field: "http.url",
            source,
        }
    })?;
    let url = reqwest::Url::parse(&url)
        .map_err(|error| Misconfigured::Invalid(format!("http.url {url:?}: {error}")))?;
    crate::egress::check_url(&url)
        .map_err(|refused| Misconfigured::Invalid(format!("http.url: {refused}")))?;
    let mut headers = HeaderMap::new();
    if let Some(secret) = &settings.headers_from {
        for (key, value) in secret_values(client, namespace, secret).await? {
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
    let answer = http.get(url).headers(headers).send().await;
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
    let expected = if settings.expect_status.is_empty() {
        status.is_success()
    } else {
        settings.expect_status.contains(&i32::from(status.as_u16()))
    };
    let shown = format!("{} in {seconds:.3}s", status.as_u16());
    if !expected {
        return Ok(Measured {
            passed: false,
            inconclusive: false,
            value: Some(seconds),
            detail: format!("answered {shown}, not an expected status"),
        });
    }
    if let Some(limit) = settings.slower_than
        && took > limit.as_std()
    {
        return Ok(Measured {
            passed: false,
            inconclusive: false,
            value: Some(seconds),
            detail: format!(
                "answered {shown}, slower than {}",
                crate::crd::duration::spoken(limit.as_std())
            ),
        });
    }
    Ok(Measured {
        passed: true,
        inconclusive: false,
        value: Some(seconds),
        detail: format!("answered {shown}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_answers_are_judged_with_no_data_and_nan_inconclusive() {
        let vector = |values: &[&str]| {
            let result: Vec<serde_json::Value> = values
                .iter()
                .map(|v| serde_json::json!({"metric": {}, "value": [1.0, v]}))
                .collect();
            serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
        };
        assert_eq!(
            judge_prometheus(&vector(&["0.42", "0.8"]), "p95", Some(1.0), None),
            (Some(true), Some(0.8), "p95 = 0.8 (below 1)".to_owned())
        );
        assert_eq!(
            judge_prometheus(&vector(&["0.42", "1.3"]), "p95", Some(1.0), None).0,
            Some(false),
            "every series must keep the bound"
        );
        assert_eq!(
            judge_prometheus(&vector(&[]), "p95", Some(1.0), None).0,
            None
        );
        assert_eq!(
            judge_prometheus(&vector(&["NaN"]), "p95", Some(1.0), None).0,
            None
        );
        let scalar = serde_json::json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "7"]}});
        assert_eq!(
            judge_prometheus(&scalar, "q", None, Some(5.0)).0,
            Some(true)
        );
    }
}
