//! Runs every valid policy's probes, each in its own task on its own
//! interval, so one slow probe never delays another (each check is bounded
//! by its timeout). Each task keeps its probe's [`Tracker`] and reports
//! every result to the detector; the latest state of each probe is shared
//! (`ProbeStates`) for verification and metrics. A probe whose spec changes
//! starts over; one whose policy goes away stops.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use kube::{Client, ResourceExt};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{debug, warn};

use super::{
    check,
    tracker::{Change, Tracker},
};
use crate::{
    authority::Remediators,
    crd::{Probe, RemediationPolicy},
    metrics::Metrics,
};

/// A probe, by namespace, policy and name.
pub type ProbeKey = (String, String, String);

/// What one check did to a probe, for the detector.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    pub key: ProbeKey,
    pub probe: Arc<Probe>,
    pub change: Change,
    pub tracker: Tracker,
}

/// Every running probe's latest state, and word of each probe whose
/// standing changed (failing, healthy, neither) for those who wait on it.
pub struct ProbeStates {
    states: RwLock<HashMap<ProbeKey, Tracker>>,
    changed: tokio::sync::broadcast::Sender<ProbeKey>,
}

impl Default for ProbeStates {
    fn default() -> Self {
        ProbeStates {
            states: RwLock::default(),
            changed: tokio::sync::broadcast::channel(256).0,
        }
    }
}

/// How a probe stands, as a verification reads it.
fn standing(tracker: &Tracker, successes: i32) -> (bool, bool) {
    (tracker.failing, tracker.healthy(successes))
}

impl ProbeStates {
    /// Probes whose standing changed, from now on.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<ProbeKey> {
        self.changed.subscribe()
    }

    /// The probe's state, if it runs.
    pub fn get(&self, key: &ProbeKey) -> Option<Tracker> {
        self.states.read().ok()?.get(key).cloned()
    }

    fn set(&self, key: &ProbeKey, tracker: &Tracker, successes: i32) {
        let before = match self.states.write() {
            Ok(mut states) => states.insert(key.clone(), tracker.clone()),
            Err(_) => return,
        };
        let moved = before.is_none_or(|b| standing(&b, successes) != standing(tracker, successes));
        if moved {
            // Nobody listening is fine: then nobody waits.
            let _ = self.changed.send(key.clone());
        }
    }

    fn remove(&self, key: &ProbeKey) {
        if let Ok(mut states) = self.states.write() {
            states.remove(key);
        }
    }
}

/// What the probe tasks run with: the clients a check reaches out with,
/// where each probe's latest state is shared, and the metrics. The caller
/// picks them from its context, so signals never depends on it.
#[derive(Clone)]
pub struct ProbeHandles {
    /// Read the probes' Secrets, each as its policy's remediator.
    pub remediators: Arc<Remediators>,
    /// Reaches HTTP services and Prometheus.
    pub http: reqwest::Client,
    pub states: Arc<ProbeStates>,
    pub metrics: Arc<Metrics>,
}

/// A probe as its policy asks for it, and the account its Secrets are read as.
type Wanted = (Arc<Probe>, Option<String>);

/// The probe tasks.
pub struct Prober {
    handles: ProbeHandles,
    sender: mpsc::Sender<ProbeReport>,
    running: HashMap<ProbeKey, (Wanted, JoinHandle<()>)>,
}

impl Prober {
    pub fn new(handles: ProbeHandles, sender: mpsc::Sender<ProbeReport>) -> Self {
        Prober {
            handles,
            sender,
            running: HashMap::new(),
        }
    }

    /// Starts, restarts and stops tasks so that exactly the probes of
    /// `policies` (valid ones only) run.
    pub fn sync(&mut self, policies: &[Arc<RemediationPolicy>]) {
        let mut wanted: HashMap<ProbeKey, Wanted> = HashMap::new();
        for policy in policies {
            let (Some(namespace), name) = (policy.namespace(), policy.name_any()) else {
                continue;
            };
            for probe in &policy.spec.probes {
                wanted.insert(
                    (namespace.clone(), name.clone(), probe.name.clone()),
                    (
                        Arc::new(probe.clone()),
                        policy.spec.service_account_name.clone(),
                    ),
                );
            }
        }
        let stale: Vec<ProbeKey> = self
            .running
            .iter()
            .filter(|(key, (asked, _))| wanted.get(*key) != Some(asked))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some((_, task)) = self.running.remove(&key) {
                task.abort();
            }
            self.handles.states.remove(&key);
            self.handles.metrics.probe_failing.remove(&labels(&key));
            debug!(probe = %key.2, policy = %key.1, "probe stopped");
        }
        for (key, asked) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let client = match self.handles.remediators.client(&key.0, asked.1.as_deref()) {
                Ok(client) => client,
                Err(error) => {
                    warn!(probe = %key.2, policy = %key.1, %error, "probe cannot start");
                    continue;
                }
            };
            let task = tokio::spawn(run(
                self.handles.clone(),
                client,
                key.clone(),
                asked.0.clone(),
                self.sender.clone(),
            ));
            debug!(probe = %key.2, policy = %key.1, "probe started");
            self.running.insert(key, (asked, task));
        }
    }

    /// Stops every task.
    pub fn stop(&mut self) {
        for (key, (_, task)) in self.running.drain() {
            task.abort();
            self.handles.states.remove(&key);
            self.handles.metrics.probe_failing.remove(&labels(&key));
        }
    }
}

fn labels(key: &ProbeKey) -> crate::metrics::ProbeKeyLabels {
    crate::metrics::ProbeKeyLabels {
        namespace: key.0.clone(),
        policy: key.1.clone(),
        probe: key.2.clone(),
    }
}

/// One probe, until aborted.
async fn run(
    handles: ProbeHandles,
    client: Client,
    key: ProbeKey,
    probe: Arc<Probe>,
    sender: mpsc::Sender<ProbeReport>,
) {
    let kind = check::kind(&probe);
    let mut tracker = Tracker::default();
    let mut every = tokio::time::interval(probe.every.as_std());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut misconfigured = false;
    loop {
        every.tick().await;
        let started = std::time::Instant::now();
        let checked = check::run(&client, &handles.http, &key.0, &probe, tracker.failing);
        let outcome = match checked.await {
            Ok(outcome) => outcome,
            Err(problem) => {
                // Said once per run of the problem, not every interval.
                if !misconfigured {
                    warn!(probe = %key.2, policy = %key.1, namespace = %key.0, %problem, "probe cannot run");
                }
                misconfigured = true;
                handles
                    .metrics
                    .count_probe_check(kind, "misconfigured", None);
                continue;
            }
        };
        misconfigured = false;
        let result = if outcome.passed { "passed" } else { "failed" };
        handles
            .metrics
            .count_probe_check(kind, result, Some(started.elapsed().as_secs_f64()));
        let change = tracker.record(outcome, probe.failure_threshold, probe.success_threshold);
        handles.states.set(&key, &tracker, probe.success_threshold);
        handles
            .metrics
            .probe_failing
            .get_or_create(&labels(&key))
            .set(i64::from(tracker.failing));
        let report = ProbeReport {
            key: key.clone(),
            probe: probe.clone(),
            change,
            tracker: tracker.clone(),
        };
        if sender.send(report).await.is_err() {
            return;
        }
    }
}
