//! The operator's requests, from the API server's audit log (`audit.log`
//! beside the kubeconfig: JSON lines, every request of a ServiceAccount at
//! level Metadata, without the RequestReceived stage). A request has one
//! ResponseComplete line, a watch a ResponseStarted line too: each is counted
//! once, by `auditID`, in the window its request was received in.

use std::{
    collections::{BTreeMap, HashSet},
    io::BufRead,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{api::core::v1::ServiceAccount, jiff::Timestamp};
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde::Deserialize;

use crate::Result;

/// From `from` (inclusive) to `to` (exclusive), by the API server's clock,
/// which is this machine's.
#[derive(Clone, Copy)]
pub struct Window {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl Window {
    pub fn length(&self) -> Duration {
        Duration::try_from(self.to.duration_since(self.from)).unwrap_or_default()
    }
}

/// Requests in one window.
#[derive(Default)]
pub struct Counts {
    /// By verb (`get`, `list`, `watch`, `create`, `patch`, ...).
    pub by_verb: BTreeMap<String, u64>,
    /// By verb and resource (`patch incidents/status`, `create pods/eviction`).
    pub by_resource: BTreeMap<String, u64>,
}

/// The audit log of the cluster in `KUBECONFIG`.
pub fn audit_log() -> Result<PathBuf> {
    let kubeconfig = std::env::var("KUBECONFIG").map_err(|_| "KUBECONFIG is not set")?;
    Ok(Path::new(&kubeconfig).with_file_name("audit.log"))
}

/// The user the operator runs as: the chart's ServiceAccount, the one in its
/// namespace besides `default` and the namespace's remediator (which the
/// operator impersonates: the audit log names the operator as the user of
/// those requests, and the remediator as the one impersonated).
pub async fn operator_user(client: &Client, namespace: &str) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let accounts: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|name| name != "default" && name != crate::support::REMEDIATOR)
        .collect();
    match accounts.as_slice() {
        [account] => Ok(format!("system:serviceaccount:{namespace}:{account}")),
        _ => Err(format!(
            "expected one ServiceAccount besides default in {namespace}, found {accounts:?}"
        )
        .into()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    #[serde(rename = "auditID")]
    audit_id: String,
    verb: String,
    user: User,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    request_uri: String,
    request_received_timestamp: Timestamp,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: Option<String>,
}

/// Counts `user`'s requests in each window, in one pass over the log.
pub fn count(audit_log: &Path, user: &str, windows: &[Window]) -> Result<Vec<Counts>> {
    let file = std::fs::File::open(audit_log)
        .map_err(|error| format!("cannot read {}: {error}", audit_log.display()))?;
    let needle = format!("\"username\":\"{user}\"");
    let mut counts: Vec<Counts> = windows.iter().map(|_| Counts::default()).collect();
    let mut seen = HashSet::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        // Most lines are someone else's or outside the windows: skip the parse.
        if !line.contains(&needle) {
            continue;
        }
        let event: AuditEvent = serde_json::from_str(&line)?;
        if event.user.username != user || !seen.insert(event.audit_id) {
            continue;
        }
        let at = event.request_received_timestamp;
        let Some(index) = windows.iter().position(|w| w.from <= at && at < w.to) else {
            continue;
        };
        let resource = match &event.object_ref {
            Some(object) => match &object.subresource {
                Some(sub) => format!("{}/{sub}", object.resource),
                None => object.resource.clone(),
            },
            // Discovery and other paths outside the resource API.
            None => event
                .request_uri
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        let window = &mut counts[index];
        *window.by_verb.entry(event.verb.clone()).or_default() += 1;
        *window
            .by_resource
            .entry(format!("{} {resource}", event.verb))
            .or_default() += 1;
    }
    Ok(counts)
}

/// The round's requests per incident: gross, what idling for as long costs
/// (the idle window's rate over the round's length), and the difference.
pub struct PerIncident {
    pub gross: BTreeMap<String, f64>,
    pub idle: BTreeMap<String, f64>,
    pub net: BTreeMap<String, f64>,
    /// By verb and resource: (gross, idle, net) per incident.
    pub by_resource: BTreeMap<String, (f64, f64, f64)>,
    /// LIST requests in the whole round (not per incident): none is the goal.
    pub lists: u64,
    pub lists_by_resource: BTreeMap<String, u64>,
    /// Requests in the round and in the idle window, all verbs.
    pub total_round: u64,
    pub total_idle: u64,
}

impl PerIncident {
    pub fn new(
        round: &Counts,
        round_length: Duration,
        idle: &Counts,
        idle_length: Duration,
        incidents: usize,
    ) -> PerIncident {
        let incidents = incidents.max(1) as f64;
        let scale = round_length.as_secs_f64() / idle_length.as_secs_f64().max(f64::EPSILON);
        let split = |round: &BTreeMap<String, u64>, idle: &BTreeMap<String, u64>| {
            let keys: Vec<&String> = round.keys().chain(idle.keys()).collect();
            keys.into_iter()
                .map(|key| {
                    let gross = round.get(key).copied().unwrap_or_default() as f64 / incidents;
                    let idle =
                        idle.get(key).copied().unwrap_or_default() as f64 * scale / incidents;
                    (key.clone(), (gross, idle, gross - idle))
                })
                .collect::<BTreeMap<String, (f64, f64, f64)>>()
        };
        let by_verb = split(&round.by_verb, &idle.by_verb);
        let pick = |part: fn(&(f64, f64, f64)) -> f64| {
            by_verb
                .iter()
                .map(|(verb, parts)| (verb.clone(), part(parts)))
                .collect::<BTreeMap<String, f64>>()
        };
        let lists_by_resource: BTreeMap<String, u64> = round
            .by_resource
            .iter()
            .filter_map(|(key, n)| Some((key.strip_prefix("list ")?.to_owned(), *n)))
            .collect();
        PerIncident {
            gross: pick(|p| p.0),
            idle: pick(|p| p.1),
            net: pick(|p| p.2),
            by_resource: split(&round.by_resource, &idle.by_resource),
            lists: round.by_verb.get("list").copied().unwrap_or_default(),
            lists_by_resource,
            total_round: round.by_verb.values().sum(),
            total_idle: idle.by_verb.values().sum(),
        }
    }
}
