//! Sending one message over HTTP and saying how it went: accepted, to be
//! tried again (429, which also slows its channel, and 5xx, honouring
//! `Retry-After`; a timeout or a
//! connection that failed), or refused for good (any other 4xx, kept with
//! the receiver's answer). Nothing here ever logs or returns a URL or a
//! credential: they are Secrets.

use std::time::Duration;

use reqwest::{Client, Method, StatusCode, header::HeaderMap};
use serde_json::Value;

/// How long one attempt may take; a slow receiver never holds the others.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts before a message is given up as Failed.
pub const MAX_ATTEMPTS: i32 = 8;
/// The longest wait between attempts, whatever a receiver asks.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);
/// How much of a receiver's answer is kept with a refusal.
const MAX_ANSWER: usize = 512;

/// How one attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver took it; what it calls it, when it says.
    Accepted { external_ref: Option<String> },
    /// Try again after this long.
    Retry { after: Duration, why: String },
    /// The receiver asked to be sent less (429): try again after this long,
    /// and send its channel nothing else meanwhile.
    Throttled { after: Duration, why: String },
    /// Refused for good.
    Refused { why: String },
    /// An earlier attempt's fate is unknown and the receiver cannot
    /// recognise a repeat: not sent again.
    Unconfirmed { why: String },
}

/// The wait before attempt `attempts + 1`: 5 s doubling to 10 minutes, or
/// what the receiver asked for (up to an hour).
pub fn backoff(attempts: i32, retry_after: Option<Duration>) -> Duration {
    if let Some(asked) = retry_after {
        return asked.min(LONGEST_WAIT);
    }
    let exponent = u32::try_from(attempts.clamp(0, 7)).unwrap_or(7);
    Duration::from_secs(5u64.saturating_mul(2u64.saturating_pow(exponent)))
        .min(Duration::from_secs(600))
}

/// `Retry-After` in seconds, if the receiver sent one.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// How an answer reads as an outcome. `reference` picks what the receiver
/// calls the message out of its JSON answer.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
    attempts: i32,
    reference: impl Fn(&Value) -> Option<String>,
) -> Outcome {
    let answer: String = body.chars().take(MAX_ANSWER).collect();
    if status.is_success() {
        let external_ref = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| reference(&v));
        Outcome::Accepted { external_ref }
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        Outcome::Throttled {
            after: backoff(attempts, retry_after),
            why: format!("{status}: {answer}"),
        }
    } else if status.is_server_error() {
        Outcome::Retry {
            after: backoff(attempts, retry_after),
            why: format!("{status}: {answer}"),
        }
    } else {
        Outcome::Refused {
            why: format!("{status}: {answer}"),
        }
    }
}

/// What a receiver's successful (2xx) JSON answer says: accepted, with
/// what it calls the message, or refused in words (Slack's Web API
/// answers 200 `{"ok": false, "error": ...}`).
pub enum Answer {
    Accepted(Option<String>),
    Refused(String),
    Throttled,
}

fn clip_answer(text: &str) -> String {
    text.chars().take(MAX_ANSWER).collect()
}

/// Sends `body` as JSON with `headers`; never fails, says how it went.
pub async fn send(
    client: &Client,
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: &Value,
    attempts: i32,
    reference: impl Fn(&Value) -> Option<String>,
) -> Outcome {
    send_reading(client, method, url, headers, body, attempts, |answer| {
        Answer::Accepted(reference(answer))
    })
    .await
}

/// [`send`] to a receiver whose 2xx answer may still refuse: `read` says
/// what its JSON answer means.
pub async fn send_reading(
    client: &Client,
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: &Value,
    attempts: i32,
    read: impl Fn(&Value) -> Answer,
) -> Outcome {
    // A receiver's address comes from a Secret its channel's author chose.
    if let Some(refused) = reqwest::Url::parse(url)
        .ok()
        .and_then(|parsed| crate::egress::check_url(&parsed).err())
    {
        return Outcome::Refused {
            why: refused.to_string(),
        };
    }
    let sent = client
        .request(method, url)
        .headers(headers)
        .json(body)
        .timeout(ATTEMPT_TIMEOUT)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            let wait = retry_after(response.headers());
            let (body, _) = crate::egress::read_capped(response, crate::egress::MAX_ANSWER).await;
            let text = String::from_utf8_lossy(&body);
            let answer = status
                .is_success()
                .then(|| serde_json::from_str::<Value>(&text).ok())
                .flatten();
            match answer.as_ref().map(&read) {
                Some(Answer::Accepted(external_ref)) => Outcome::Accepted { external_ref },
                Some(Answer::Refused(why)) => Outcome::Refused {
                    why: format!("{status}, refused: {why}"),
                },
                Some(Answer::Throttled) => Outcome::Throttled {
                    after: backoff(attempts, wait),
                    why: format!("{status}, throttled: {}", clip_answer(&text)),
                },
                None => classify(status, wait, &text, attempts, |_| None),
            }
        }
        // Without the URL: reqwest's errors name it, and it is a secret.
        Err(error) => Outcome::Retry {
            after: backoff(attempts, None),
            why: if error.is_timeout() {
                format!(
                    "no answer within {}",
                    crate::crd::duration::spoken(ATTEMPT_TIMEOUT)
                )
            } else if error.is_connect() {
                "could not connect".to_owned()
            } else {
                "the request failed".to_owned()
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(value: &Value) -> Option<String> {
        value["id"].as_str().map(str::to_owned)
    }

    #[test]
    fn answers_read_as_outcomes() {
        assert_eq!(
            classify(StatusCode::CREATED, None, r#"{"id": "p1"}"#, 0, id),
            Outcome::Accepted {
                external_ref: Some("p1".into())
            }
        );
        assert_eq!(
            classify(StatusCode::OK, None, "ok", 0, id),
            Outcome::Accepted { external_ref: None }
        );
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(30)),
                "slow down",
                0,
                id
            ),
            Outcome::Throttled {
                after: Duration::from_secs(30),
                why: "429 Too Many Requests: slow down".into()
            }
        );
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, None, "", 2, id),
            Outcome::Retry { after, .. } if after == Duration::from_secs(20)
        ));
        let refused = classify(StatusCode::BAD_REQUEST, None, &"x".repeat(5000), 0, id);
        let Outcome::Refused { why } = refused else {
            panic!("a 400 is for good")
        };
        assert!(why.starts_with("400 Bad Request: xxx") && why.len() < 600);
    }

    #[test]
    fn waits_double_and_are_capped() {
        let waits: Vec<u64> = (0..10).map(|n| backoff(n, None).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(
            backoff(0, Some(Duration::from_secs(86_400))),
            Duration::from_secs(3600)
        );
    }

    #[tokio::test]
    async fn a_real_receiver_is_retried_when_it_says_so_and_its_answer_kept() {
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };

        use axum::{Router, http::StatusCode as Code, routing::post as route};

        let _ = rustls::crypto::ring::default_provider().install_default();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = Router::new().route(
            "/hook",
            route(move |body: String| {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    let body: Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(body["text"], "hello");
                    match n {
                        0 => (
                            Code::TOO_MANY_REQUESTS,
                            [("retry-after", "7")],
                            "busy".to_owned(),
                        ),
                        1 => (
                            Code::BAD_REQUEST,
                            [("retry-after", "0")],
                            "no_text".to_owned(),
                        ),
                        _ => (
                            Code::OK,
                            [("retry-after", "0")],
                            r#"{"id": "m-1"}"#.to_owned(),
                        ),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new();
        let body = serde_json::json!({"text": "hello"});
        let send = || super::send(&client, Method::POST, &url, HeaderMap::new(), &body, 0, id);
        assert_eq!(
            send().await,
            Outcome::Throttled {
                after: Duration::from_secs(7),
                why: "429 Too Many Requests: busy".into()
            }
        );
        assert_eq!(
            send().await,
            Outcome::Refused {
                why: "400 Bad Request: no_text".into()
            }
        );
        assert_eq!(
            send().await,
            Outcome::Accepted {
                external_ref: Some("m-1".into())
            }
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Nobody there: tried again later, and the URL is not in the reason.
        let gone = super::send(
            &client,
            Method::POST,
            "http://127.0.0.1:9/hook",
            HeaderMap::new(),
            &body,
            1,
            id,
        )
        .await;
        assert!(
            matches!(&gone, Outcome::Retry { why, .. } if !why.contains("127.0.0.1")),
            "{gone:?}"
        );
    }
}
