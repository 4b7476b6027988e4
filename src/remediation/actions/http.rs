//! `http`: a call to the service's own API, the runbook's "force garbage
//! collection" (`POST /api/v1/admin/gc`) or "revoke all tokens". Observe
//! reads the Secrets its headers and body come from; the plan is the
//! request with the target filled in; apply makes the call (a dry run
//! makes none) and keeps the status and the start of the answer as
//! evidence, with every Secret value blanked out of it.

use std::{collections::BTreeMap, fmt, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use reqwest::{
    Method,
    header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue},
};

use super::{
    action::{Action, Io, Plan, Request},
    errors::{ApplyError, CallError, Refusal},
};
use crate::authority::Grant;
use crate::crd::WorkloadKind;
use crate::{
    crd::{self, ActionKind, HttpAction, HttpMethod},
    placeholders::fill,
    workload::Workload,
};

/// The longest a call may take when the action does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a call may take at all.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How many times an idempotent call is tried.
const IDEMPOTENT_TRIES: u32 = 3;
/// The shortest word of a Secret value blanked out on its own.
const MIN_SECRET_WORD: usize = 6;
/// How much of the answer is kept as evidence.
const EVIDENCE_BYTES: usize = 1024;

/// What the Secrets hold for the call, and what could not be read.
#[derive(Clone, Default, PartialEq)]
pub struct Inputs {
    headers: BTreeMap<String, String>,
    body: Option<String>,
    problems: Vec<String>,
}

impl fmt::Debug for Inputs {
    // Secret values stay out of every log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inputs")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body", &self.body.as_ref().map(|_| "[from a Secret]"))
            .field("problems", &self.problems)
            .finish()
    }
}

/// The request to make.
#[derive(Clone, PartialEq)]
pub struct Change {
    method: HttpMethod,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    content_type: String,
    expect: Vec<i32>,
    timeout: Duration,
    tries: u32,
    /// Values that must never appear in the evidence.
    secrets: Vec<String>,
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("expect", &self.expect)
            .field("tries", &self.tries)
            .finish_non_exhaustive()
    }
}

pub struct Http;

impl Action for Http {
    const KIND: ActionKind = ActionKind::Http;
    const POLICY_ONLY: bool = true;
    const MARKED_BEFORE: bool = true;
    type Settings = HttpAction;
    type Inputs = Inputs;
    type Change = Change;

    fn settings(action: &crd::Action) -> Option<&HttpAction> {
        action.http.as_ref()
    }

    /// Reads the Secrets the headers and body come from. A Secret or key that
    /// is missing is a problem the plan reports, not an error to retry.
    async fn observe(
        io: Io<'_>,
        settings: &HttpAction,
        workload: &Workload,
    ) -> Result<Inputs, kube::Error> {
        let client = io.client;
        let secrets = Api::<Secret>::namespaced(client.clone(), &workload.namespace());
        let mut inputs = Inputs::default();
        if let Some(source) = &settings.headers_from {
            match secrets.get_opt(&source.name).await? {
                Some(secret) => inputs.headers = crate::k8s::secret_text(&secret),
                None => inputs
                    .problems
                    .push(format!("Secret {} (headersFrom) not found", source.name)),
            }
        }
        if let Some(source) = &settings.body_from {
            match secrets.get_opt(&source.name).await? {
                Some(secret) => match crate::k8s::secret_text(&secret).remove(&source.key) {
                    Some(body) => inputs.body = Some(body),
                    None => inputs.problems.push(format!(
                        "Secret {} has no key {} (bodyFrom)",
                        source.name, source.key
                    )),
                },
                None => inputs
                    .problems
                    .push(format!("Secret {} (bodyFrom) not found", source.name)),
            }
        }
        Ok(inputs)
    }

    /// The request, with the target filled in. Pure.
    fn plan(
        request: &Request<'_>,
        settings: &HttpAction,
        inputs: &Inputs,
    ) -> Result<Plan<Change>, Refusal> {
        let workload = request.workload;
        if let Some(problem) = inputs.problems.first() {
            return Err(Refusal::Unusable(problem.clone()));
        }
        let (namespace, name) = (workload.namespace(), workload.name());
        let url = fill(&settings.url, &namespace, &name)
            .map_err(|error| Refusal::Unusable(format!("http.url: {error}")))?;
        let parsed = reqwest::Url::parse(&url)
            .map_err(|error| Refusal::Unusable(format!("http.url {url:?}: {error}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Refusal::Unusable(format!(
                "http.url {url:?}: only http and https"
            )));
        }
        crate::egress::check_url(&parsed)
            .map_err(|refused| Refusal::Unusable(format!("http.url: {refused}")))?;
        for (key, value) in &inputs.headers {
            if HeaderName::from_bytes(key.as_bytes()).is_err()
                || HeaderValue::from_str(value).is_err()
            {
                return Err(Refusal::Unusable(format!(
                    "Secret {}: {key} is not a usable header",
                    settings
                        .headers_from
                        .as_ref()
                        .map_or("", |s| s.name.as_str())
                )));
            }
        }
        let body = match (&settings.body, &inputs.body) {
            (Some(body), _) => Some(
                fill(body, &namespace, &name)
                    .map_err(|error| Refusal::Unusable(format!("http.body: {error}")))?,
            ),
            (None, from_secret) => from_secret.clone(),
        };
        let timeout = settings
            .timeout
            .map_or(DEFAULT_TIMEOUT, |t| t.as_std())
            .min(LONGEST_TIMEOUT);
        // Each value, and each word of it long enough to be a credential
        // (`Bearer TOKEN` echoed back as `TOKEN`), longest first.
        let mut secrets: Vec<String> = inputs
            .headers
            .values()
            .chain(inputs.body.iter())
            .flat_map(|value| {
                std::iter::once(value.as_str()).chain(
                    value
                        .split(|c: char| c.is_whitespace() || c == ':' || c == ',')
                        .filter(|word| word.len() >= MIN_SECRET_WORD),
                )
            })
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        let expect = if settings.expect_status.is_empty() {
            "2xx".to_owned()
        } else {
            settings
                .expect_status
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let summary = format!(
            "{} {url} (expects {expect}{})",
            settings.method,
            if settings.idempotent {
                ", idempotent"
            } else {
                ""
            }
        );
        Ok(Plan {
            change: Change {
                method: settings.method,
                url,
                headers: inputs
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                body,
                content_type: settings
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/json".to_owned()),
                expect: settings.expect_status.clone(),
                timeout,
                tries: if settings.idempotent {
                    IDEMPOTENT_TRIES
                } else {
                    1
                },
                secrets,
            },
            summary,
        })
    }

    async fn apply(
        io: Io<'_>,
        _: &Workload,
        change: &Change,
        dry_run: bool,
    ) -> Result<Vec<String>, ApplyError> {
        Ok(apply(io.http, change, dry_run).await?)
    }

    /// A call to a service: the target's pods are not rolled by it.
    fn grants(action: &crd::Action, _: WorkloadKind) -> Vec<Grant> {
        let reads_secrets = Self::settings(action)
            .is_some_and(|s| s.headers_from.is_some() || s.body_from.is_some());
        match reads_secrets {
            true => vec![Grant::new("", "secrets", "get")],
            false => Vec::new(),
        }
    }

    fn rolls_pods(_: &crd::Action) -> bool {
        false
    }

    /// Only an idempotent call is made again after its outcome was lost.
    fn repeatable(action: &crd::Action) -> bool {
        Self::settings(action).is_some_and(|h| h.idempotent)
    }
}

/// Makes the call; a dry run makes none (nothing can check a call without
/// making it). Returns the answer as evidence.
async fn apply(
    http: &reqwest::Client,
    change: &Change,
    dry_run: bool,
) -> Result<Vec<String>, CallError> {
    if dry_run {
        return Ok(Vec::new());
    }
    let method = match change.method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Delete => Method::DELETE,
    };
    let mut headers = HeaderMap::new();
    for (key, value) in &change.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    if change.body.is_some()
        && let Ok(value) = HeaderValue::from_str(&change.content_type)
    {
        headers.insert(CONTENT_TYPE, value);
    }
    let mut tried = 0;
    loop {
        tried += 1;
        let mut request = http
            .request(method.clone(), &change.url)
            .headers(headers.clone())
            .timeout(change.timeout);
        if let Some(body) = &change.body {
            request = request.body(body.clone());
        }
        let last = tried >= change.tries;
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(error) if !last => {
                tracing::info!(url = %change.url, %error, tried, "no answer; trying again (idempotent)");
                tokio::time::sleep(Duration::from_secs(u64::from(tried))).await;
                continue;
            }
            Err(error) => {
                let error = redact(&error.to_string(), &change.secrets);
                return Err(if change.tries > 1 {
                    CallError::NoAnswerAfterTries {
                        tries: tried,
                        error,
                    }
                } else {
                    CallError::NoAnswer(error)
                });
            }
        };
        let status = answer.status();
        let excerpt = redact(&read_bounded(answer).await, &change.secrets);
        let code = i32::from(status.as_u16());
        let expected = if change.expect.is_empty() {
            status.is_success()
        } else {
            change.expect.contains(&code)
        };
        if expected {
            return Ok(vec![format!("answered {code}: {excerpt}")]);
        }
        if status.is_server_error() && !last {
            tracing::info!(url = %change.url, code, tried, "server error; trying again (idempotent)");
            tokio::time::sleep(Duration::from_secs(u64::from(tried))).await;
            continue;
        }
        return Err(CallError::Unexpected { code, excerpt });
    }
}

/// The start of the answer's body, as text.
async fn read_bounded(answer: reqwest::Response) -> String {
    let (kept, cut) = crate::egress::read_capped(answer, EVIDENCE_BYTES).await;
    let mut text = String::from_utf8_lossy(&kept).trim().to_owned();
    if cut {
        text.push_str(" ...");
    }
    if text.is_empty() {
        "(empty)".to_owned()
    } else {
        text
    }
}

/// `text` with every Secret value blanked out.
fn redact(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), "[redacted]")
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn plan(
        action: &crd::Action,
        workload: &Workload,
        inputs: &Inputs,
    ) -> Result<Plan<Change>, Refusal> {
        plan_of::<Http>(action, workload, inputs, MARK)
    }
    use serde_json::json;

    fn inputs(headers: &[(&str, &str)]) -> Inputs {
        Inputs {
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Inputs::default()
        }
    }

    #[test]
    fn the_call_is_planned_for_the_target_and_keeps_secrets_out_of_its_summary() {
        let gc = action(json!({"action": "http", "http": {
            "url": "http://{{ name }}.{{ namespace }}.svc:8000/api/v1/admin/gc",
            "headersFrom": {"name": "admin"}}}));
        let planned = plan(
            &gc,
            &deployment("1", 3),
            &inputs(&[("Authorization", "Bearer s3cret")]),
        )
        .unwrap();
        assert_eq!(
            planned.summary,
            "POST http://api.hg.svc:8000/api/v1/admin/gc (expects 2xx)"
        );
        let change = &planned.change;
        assert_eq!(change.tries, 1, "not idempotent: one try");
        assert!(!format!("{planned:?}").contains("s3cret"));
        assert_eq!(
            redact("token s3cret refused", &change.secrets),
            "token [redacted] refused"
        );
    }

    #[test]
    fn what_cannot_be_called_is_refused_with_the_reason() {
        let missing = Inputs {
            problems: vec!["Secret admin (headersFrom) not found".into()],
            ..Inputs::default()
        };
        let gc = action(json!({"action": "http", "http": {"url": "http://api/gc"}}));
        assert_eq!(
            plan(&gc, &deployment("1", 3), &missing),
            Err(Refusal::Unusable(
                "Secret admin (headersFrom) not found".into()
            ))
        );
        let bad_url = action(json!({"action": "http", "http": {"url": "http://exa mple/"}}));
        assert!(matches!(
            plan(&bad_url, &deployment("1", 3), &Inputs::default()),
            Err(Refusal::Unusable(_))
        ));
        let bad_header = inputs(&[("Bad Header", "x")]);
        assert!(matches!(
            plan(&gc, &deployment("1", 3), &bad_header),
            Err(Refusal::Unusable(_))
        ));
        // A placeholder with a typo is refused, never sent half filled;
        // a link-local address (cloud metadata) is never called.
        for (settings, field) in [
            (
                json!({"url": "http://169.254.169.254/latest/meta-data/iam/"}),
                "http.url: 169.254.169.254 is a link-local address",
            ),
            (json!({"url": "http://{{ nmae }}/gc"}), "http.url"),
            (
                json!({"url": "http://{{ name }}/gc", "body": "{{ name }"}),
                "http.body",
            ),
        ] {
            let typo = action(json!({"action": "http", "http": settings}));
            match plan(&typo, &deployment("1", 3), &Inputs::default()) {
                Err(Refusal::Unusable(why)) => assert!(why.starts_with(field), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
