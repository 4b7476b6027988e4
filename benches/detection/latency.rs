//! One latency round: a crash-loop injected into one pod of each Deployment,
//! open-loop, each timed three ways from the label patch. The floor is a bare
//! pod watcher that sees the failure; the operator's incident and its first
//! remediation write are measured against it, sample by sample. The round
//! ends when every sample's Incident is Resolved; the operator's requests in
//! that window, and in an idle window before it, come from the audit log.

use std::{
    collections::HashMap,
    fmt::Debug,
    time::{Duration, Instant},
};

use futures::StreamExt;
use healing_guard_operator::{
    crd::{Incident, Phase},
    names::STEP_ANNOTATION,
};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    Result,
    requests::{self, PerIncident, Window},
    workloads::{ROLE_LABEL, is_ready},
};

const INJECT_LABEL: &str = "healing-guard.io/inject";
/// Longest a sample may take to show all three measures.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After the last injection, how long every incident gets to resolve: its
/// step verifies within 2 min, and the cluster may be slow to replace pods.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(300);
/// The audit log is written as requests complete; this covers the last ones.
const AUDIT_FLUSH: Duration = Duration::from_secs(2);

/// One sample: the times from the label patch to each thing seen.
pub struct Sample {
    pub deployment: String,
    /// The bare watcher saw the pod fail: the floor.
    pub bare_watch: Duration,
    /// The Incident for the Deployment was seen.
    pub detection: Duration,
    /// The detector's status write (what it saw: the affected pods) was
    /// seen on it; the incident controller's first reconcile waits for it.
    pub detection_recorded: Duration,
    /// Its first phase was seen (the incident controller's first reconcile
    /// written, the first step recorded with it).
    pub phased: Duration,
    /// The operator's mark was seen on the Deployment.
    pub first_write: Duration,
}

pub struct Round {
    pub samples: Vec<Sample>,
    /// From the first injection until every incident resolved (or gave up).
    pub window: Duration,
    pub idle_window: Duration,
    /// Last injection to the last incident resolved.
    pub resolved_after: Duration,
    /// Samples whose incident was not Resolved within RESOLVE_TIMEOUT.
    pub unresolved: Vec<String>,
    pub requests: PerIncident,
}

/// What the watches and the injector tell the measuring loop.
enum Seen {
    Synced(&'static str),
    Failing {
        pod: String,
        at: Instant,
    },
    Incident {
        target: String,
        at: Instant,
        detection_recorded: bool,
        phased: bool,
        resolved: bool,
    },
    Marked {
        deployment: String,
        at: Instant,
    },
    Injected {
        index: usize,
        at: Instant,
    },
}

/// Aborts its task when dropped, so an early error leaves no watch running.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a round on one pod of each of `deployments` (pods labelled
/// `bench-role=<role>` in `namespace`).
pub async fn round(
    client: &Client,
    namespace: &str,
    role: &str,
    deployments: &[String],
) -> Result<Round> {
    let targets = pick_pods(client, namespace, role, deployments).await?;
    let user = requests::operator_user(client, namespace).await?;
    let (sender, mut seen) = mpsc::unbounded_channel();
    let selector = format!("{ROLE_LABEL}={role}");
    let _watches = [
        watch(
            Api::<Pod>::namespaced(client.clone(), namespace),
            watcher::Config::default().labels(&selector),
            "pods (the floor)",
            sender.clone(),
            |pod: &Pod, at| {
                failing(pod).then(|| Seen::Failing {
                    pod: pod.name_any(),
                    at,
                })
            },
        ),
        watch(
            Api::<Incident>::namespaced(client.clone(), namespace),
            watcher::Config::default(),
            "incidents",
            sender.clone(),
            |incident: &Incident, at| {
                let phase = incident.status.as_ref().and_then(|s| s.phase);
                Some(Seen::Incident {
                    target: incident.spec.target.name.clone(),
                    at,
                    detection_recorded: incident
                        .status
                        .as_ref()
                        .is_some_and(|s| s.detection.is_some()),
                    phased: phase.is_some(),
                    resolved: phase == Some(Phase::Resolved),
                })
            },
        ),
        watch(
            Api::<Deployment>::namespaced(client.clone(), namespace),
            watcher::Config::default(),
            "deployments",
            sender.clone(),
            |deployment: &Deployment, at| {
                deployment
                    .annotations()
                    .contains_key(STEP_ANNOTATION)
                    .then(|| Seen::Marked {
                        deployment: deployment.name_any(),
                        at,
                    })
            },
        ),
    ];
    let mut synced = 0;
    while synced < 3 {
        match seen.recv().await {
            Some(Seen::Synced(what)) => {
                eprintln!("[bench] watch of {what} synced");
                synced += 1;
            }
            Some(_) => {}
            None => return Err("a watch ended before it synced".into()),
        }
    }

    // The operator idle, everything ready: what it costs to do nothing.
    let idle_length = schedule_span(targets.len());
    let idle_from = Timestamp::now();
    eprintln!(
        "[bench] idle window of {:.0} s before the round",
        idle_length.as_secs_f64()
    );
    tokio::time::sleep(idle_length).await;
    let idle = Window {
        from: idle_from,
        to: Timestamp::now(),
    };
    let round_from = Timestamp::now();
    let injector = tokio::spawn(inject(
        Api::namespaced(client.clone(), namespace),
        targets.iter().map(|(_, pod)| pod.clone()).collect(),
        sender,
    ));
    let measured = measure(&targets, &mut seen, injector).await?;
    let round = Window {
        from: round_from,
        to: Timestamp::now(),
    };
    tokio::time::sleep(AUDIT_FLUSH).await;
    let counts = requests::count(&requests::audit_log()?, &user, &[idle, round])?;
    let [idle_counts, round_counts] =
        <[_; 2]>::try_from(counts).map_err(|_| "the audit log was counted for two windows")?;
    let requests = PerIncident::new(
        &round_counts,
        round.length(),
        &idle_counts,
        idle.length(),
        targets.len(),
    );
    if requests.lists > 0 {
        eprintln!(
            "[bench] !!! {} LIST requests by the operator during the round: {:?}",
            requests.lists, requests.lists_by_resource
        );
    }
    Ok(Round {
        samples: measured.samples,
        window: round.length(),
        idle_window: idle.length(),
        resolved_after: measured.resolved_after,
        unresolved: measured.unresolved,
        requests,
    })
}

/// One ready pod of each Deployment, as (Deployment, pod), in the given order.
async fn pick_pods(
    client: &Client,
    namespace: &str,
    role: &str,
    deployments: &[String],
) -> Result<Vec<(String, String)>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{ROLE_LABEL}={role}"));
    let mut ready: HashMap<String, String> = HashMap::new();
    for pod in api.list(&params).await?.items {
        if is_ready(&pod)
            && pod.metadata.deletion_timestamp.is_none()
            && let Some(app) = pod.labels().get("app")
        {
            ready.entry(app.clone()).or_insert_with(|| pod.name_any());
        }
    }
    deployments
        .iter()
        .map(|deployment| {
            let pod = ready
                .remove(deployment)
                .ok_or_else(|| format!("{deployment} has no ready pod to inject into"))?;
            Ok((deployment.clone(), pod))
        })
        .collect()
}

/// Watches `api`, telling `sender` what `see` makes of each object, with the
/// Instant its event arrived.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
    sender: mpsc::UnboundedSender<Seen>,
    see: impl Fn(&K, Instant) -> Option<Seen> + Send + 'static,
) -> Task
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    Task(tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut synced = false;
        while let Some(event) = events.next().await {
            let at = Instant::now();
            let message = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    see(&object, at)
                }
                Ok(watcher::Event::InitDone) if !synced => {
                    synced = true;
                    Some(Seen::Synced(what))
                }
                Ok(_) => None,
                Err(error) => {
                    eprintln!("[bench] watch of {what}: {error}; retrying");
                    None
                }
            };
            if let Some(message) = message
                && sender.send(message).is_err()
            {
                return;
            }
        }
    }))
}

/// The failure the operator reacts to, as its pod watch would see it.
fn failing(pod: &Pod) -> bool {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref());
    statuses.into_iter().flatten().any(|status| {
        let waiting = status
            .state
            .as_ref()
            .and_then(|state| state.waiting.as_ref())
            .and_then(|waiting| waiting.reason.as_deref());
        status.restart_count >= 1 || waiting == Some("CrashLoopBackOff")
    })
}

/// Pauses of 0 to 1 s, spread evenly (golden-ratio steps). Injections at a
/// fixed rate would fall in step with the detector's periodic writes (every
/// 500 ms) and all measure the same phase of it.
fn pause_before(index: usize) -> Duration {
    const GOLDEN_RATIO_FRACTION: f64 = 0.618_033_988_749_895;
    Duration::from_secs_f64((index as f64 * GOLDEN_RATIO_FRACTION).fract())
}

/// How long injecting `count` samples takes.
fn schedule_span(count: usize) -> Duration {
    (0..count).map(pause_before).sum()
}

/// Labels each pod on schedule, without waiting for anything to follow
/// (open loop): each patch runs in its own task, so a slow answer delays no
/// later injection.
async fn inject(
    api: Api<Pod>,
    pods: Vec<String>,
    sender: mpsc::UnboundedSender<Seen>,
) -> Result<()> {
    let start = tokio::time::Instant::now();
    let mut due = start;
    let mut patches = JoinSet::new();
    let label = json!({"metadata": {"labels": {INJECT_LABEL: "crashloop"}}});
    for (index, pod) in pods.into_iter().enumerate() {
        due += pause_before(index);
        tokio::time::sleep_until(due).await;
        // Sent before the patch, so it is ahead of anything the patch causes.
        if sender
            .send(Seen::Injected {
                index,
                at: Instant::now(),
            })
            .is_err()
        {
            break;
        }
        let (api, label) = (api.clone(), label.clone());
        patches.spawn(async move {
            api.patch(&pod, &PatchParams::default(), &Patch::Merge(&label))
                .await
                .map(|_| ())
                .map_err(|error| format!("labelling {pod}: {error}"))
        });
    }
    while let Some(patched) = patches.join_next().await {
        patched??;
    }
    Ok(())
}

/// A sample as it is being measured.
struct Pending {
    deployment: String,
    pod: String,
    injected: Option<Instant>,
    bare_watch: Option<Instant>,
    detection: Option<Instant>,
    detection_recorded: Option<Instant>,
    phased: Option<Instant>,
    first_write: Option<Instant>,
    resolved: Option<Instant>,
}

impl Pending {
    fn measured(&self) -> bool {
        self.bare_watch.is_some()
            && self.detection.is_some()
            && self.detection_recorded.is_some()
            && self.phased.is_some()
            && self.first_write.is_some()
    }

    fn missing(&self) -> Vec<&'static str> {
        [
            ("the failure on the bare watch", self.bare_watch),
            ("Incident", self.detection),
            ("detection recorded", self.detection_recorded),
            ("first phase", self.phased),
            ("mark on the Deployment", self.first_write),
        ]
        .into_iter()
        .filter(|(_, at)| at.is_none())
        .map(|(what, _)| what)
        .collect()
    }
}

struct Measured {
    samples: Vec<Sample>,
    resolved_after: Duration,
    unresolved: Vec<String>,
}

/// Collects what the watches see until every sample is measured and its
/// incident resolved. A sample not measured within SAMPLE_TIMEOUT is an
/// error; incidents not resolved within RESOLVE_TIMEOUT of the last
/// injection are reported, not fatal.
async fn measure(
    targets: &[(String, String)],
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    injector: tokio::task::JoinHandle<Result<()>>,
) -> Result<Measured> {
    let mut pending: Vec<Pending> = targets
        .iter()
        .map(|(deployment, pod)| Pending {
            deployment: deployment.clone(),
            pod: pod.clone(),
            injected: None,
            bare_watch: None,
            detection: None,
            detection_recorded: None,
            phased: None,
            first_write: None,
            resolved: None,
        })
        .collect();
    let by_pod: HashMap<String, usize> = targets
        .iter()
        .enumerate()
        .map(|(index, (_, pod))| (pod.clone(), index))
        .collect();
    let by_deployment: HashMap<String, usize> = targets
        .iter()
        .enumerate()
        .map(|(index, (deployment, _))| (deployment.clone(), index))
        .collect();
    let mut injector = Some(injector);
    let mut last_injection = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut reported = 0;
    loop {
        tokio::select! {
            message = seen.recv() => {
                let Some(message) = message else {
                    return Err("the watches ended".into());
                };
                record(&mut pending, &by_pod, &by_deployment, message, &mut last_injection);
            }
            joined = async { injector.as_mut()?.await.ok() }, if injector.is_some() => {
                injector = None;
                joined.ok_or("the injector stopped")??;
            }
            _ = tick.tick() => {}
        }
        let measured = pending.iter().filter(|p| p.measured()).count();
        if measured >= reported + 50 {
            reported = measured;
            eprintln!("[bench] {measured}/{} samples measured", pending.len());
        }
        for sample in &pending {
            if let Some(injected) = sample.injected
                && !sample.measured()
                && injected.elapsed() > SAMPLE_TIMEOUT
            {
                return Err(format!(
                    "sample {} (pod {}): no {} within {} s of the injection",
                    sample.deployment,
                    sample.pod,
                    sample.missing().join(", no "),
                    SAMPLE_TIMEOUT.as_secs()
                )
                .into());
            }
        }
        let Some(last) = last_injection.filter(|_| injector.is_none()) else {
            continue;
        };
        let unresolved: Vec<&Pending> = pending.iter().filter(|p| p.resolved.is_none()).collect();
        if unresolved.is_empty() && measured == pending.len() {
            break;
        }
        if measured == pending.len() && last.elapsed() > RESOLVE_TIMEOUT {
            let names: Vec<String> = unresolved.iter().map(|p| p.deployment.clone()).collect();
            eprintln!(
                "[bench] !!! {} incidents not Resolved {} s after the last injection: {}",
                names.len(),
                RESOLVE_TIMEOUT.as_secs(),
                names.join(", ")
            );
            return Ok(finish(&pending, last, names));
        }
    }
    let last = last_injection.ok_or("no injection")?;
    Ok(finish(&pending, last, Vec::new()))
}

fn record(
    pending: &mut [Pending],
    by_pod: &HashMap<String, usize>,
    by_deployment: &HashMap<String, usize>,
    message: Seen,
    last_injection: &mut Option<Instant>,
) {
    // Only the first sighting after the injection counts.
    let first = |slot: &mut Option<Instant>, injected: Option<Instant>, at: Instant| {
        if slot.is_none() && injected.is_some_and(|injected| injected <= at) {
            *slot = Some(at);
        }
    };
    match message {
        Seen::Injected { index, at } => {
            if let Some(sample) = pending.get_mut(index) {
                sample.injected = Some(at);
                *last_injection = Some(at);
            }
        }
        Seen::Failing { pod, at } => {
            if let Some(sample) = by_pod.get(&pod).and_then(|i| pending.get_mut(*i)) {
                first(&mut sample.bare_watch, sample.injected, at);
            }
        }
        Seen::Incident {
            target,
            at,
            detection_recorded,
            phased,
            resolved,
        } => {
            if let Some(sample) = by_deployment.get(&target).and_then(|i| pending.get_mut(*i)) {
                first(&mut sample.detection, sample.injected, at);
                if detection_recorded {
                    first(&mut sample.detection_recorded, sample.injected, at);
                }
                if phased {
                    first(&mut sample.phased, sample.injected, at);
                }
                if resolved {
                    first(&mut sample.resolved, sample.injected, at);
                }
            }
        }
        Seen::Marked { deployment, at } => {
            if let Some(sample) = by_deployment
                .get(&deployment)
                .and_then(|i| pending.get_mut(*i))
            {
                first(&mut sample.first_write, sample.injected, at);
            }
        }
        Seen::Synced(_) => {}
    }
}

fn finish(pending: &[Pending], last_injection: Instant, unresolved: Vec<String>) -> Measured {
    let since = |at: Option<Instant>, from: Option<Instant>| match (at, from) {
        (Some(at), Some(from)) => at.duration_since(from),
        _ => Duration::ZERO,
    };
    let samples = pending
        .iter()
        .map(|p| Sample {
            deployment: p.deployment.clone(),
            bare_watch: since(p.bare_watch, p.injected),
            detection: since(p.detection, p.injected),
            detection_recorded: since(p.detection_recorded, p.injected),
            phased: since(p.phased, p.injected),
            first_write: since(p.first_write, p.injected),
        })
        .collect();
    let resolved_after = pending
        .iter()
        .filter_map(|p| p.resolved)
        .max()
        .map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(last_injection)
        });
    Measured {
        samples,
        resolved_after,
        unresolved,
    }
}

/// The sorted samples of one measure.
pub fn sorted(samples: &[Sample], measure: fn(&Sample) -> Duration) -> Vec<Duration> {
    let mut all: Vec<Duration> = samples.iter().map(measure).collect();
    all.sort();
    all
}

/// The sorted per-sample differences `measure - bare_watch`, in seconds
/// (negative when the operator's watch saw it first).
pub fn over_floor(samples: &[Sample], measure: fn(&Sample) -> Duration) -> Vec<f64> {
    let mut all: Vec<f64> = samples
        .iter()
        .map(|s| measure(s).as_secs_f64() - s.bare_watch.as_secs_f64())
        .collect();
    all.sort_by(f64::total_cmp);
    all
}

/// One stage of the path from a failure to the first remediation write:
/// its name and where it starts and ends in a sample.
pub struct Stage {
    pub name: &'static str,
    pub from: fn(&Sample) -> Duration,
    pub to: fn(&Sample) -> Duration,
}

/// The path, stage by stage: the floor's watch to the Incident (the
/// detector), to the detector's status write on it, to its first phase
/// (queued, observed, decided and written with the first step by the
/// incident controller), to the write on the target seen (the action).
pub const STAGES: [Stage; 4] = [
    Stage {
        name: "detection (floor -> Incident)",
        from: |s| s.bare_watch,
        to: |s| s.detection,
    },
    Stage {
        name: "detector's status write (-> status.detection)",
        from: |s| s.detection,
        to: |s| s.detection_recorded,
    },
    Stage {
        name: "first reconcile (-> first phase and step)",
        from: |s| s.detection_recorded,
        to: |s| s.phased,
    },
    Stage {
        name: "the write (-> mark on target)",
        from: |s| s.phased,
        to: |s| s.first_write,
    },
];

/// The sorted per-sample lengths of `stage`, in seconds (negative where
/// its end was seen before its start, by watches that race).
pub fn stage_lengths(samples: &[Sample], stage: &Stage) -> Vec<f64> {
    let mut all: Vec<f64> = samples
        .iter()
        .map(|s| (stage.to)(s).as_secs_f64() - (stage.from)(s).as_secs_f64())
        .collect();
    all.sort_by(f64::total_cmp);
    all
}
