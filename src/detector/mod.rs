//! The detector: watches what policies guard and opens, updates, reopens and
//! clears Incidents from what it sees. Event-driven: watches feed it, and a
//! timer wakes it only when a `sustainedFor` period runs out.

pub mod dedup;
pub mod snapshots;
pub mod symptoms;
pub mod watches;
pub mod writer;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Client, ResourceExt,
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use tokio::{sync::mpsc, task::AbortHandle};
use tokio_util::{sync::CancellationToken, time::DelayQueue};
use tracing::{debug, info, warn};

use self::{
    symptoms::{Evaluation, Signal},
    watches::{Input, PodWatchKey, Workload, WorkloadWatchKey},
    writer::{Report, Writer},
};
use crate::{
    controller::Scope,
    crd::{Incident, RemediationPolicy, Symptom, WorkloadKind, WorkloadRef},
    metrics::Metrics,
};

/// How often collected reports are written; repeats within it are coalesced.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

type WorkloadId = (WorkloadKind, String, String);

struct PodWatch {
    handle: AbortHandle,
    synced: bool,
    pods: HashMap<String, Pod>,
    seen_in_init: Option<BTreeSet<String>>,
}

struct Detector {
    client: Client,
    policies: Store<RemediationPolicy>,
    writer: Writer,
    sender: mpsc::Sender<Input>,
    workload_watches: HashMap<WorkloadWatchKey, (AbortHandle, Option<BTreeSet<WorkloadId>>)>,
    pod_watches: HashMap<PodWatchKey, PodWatch>,
    workloads: HashMap<WorkloadId, (Workload, BTreeSet<WorkloadWatchKey>)>,
    evaluations: HashMap<WorkloadId, Evaluation>,
    short_since: HashMap<WorkloadId, Timestamp>,
    timers: DelayQueue<WorkloadId>,
    timer_keys: HashMap<WorkloadId, tokio_util::time::delay_queue::Key>,
    pending: BTreeMap<(String, String), Report>,
    noticed: HashMap<(String, String), Instant>,
    /// Since when each workload has been healthy (no signal, every replica ready).
    healthy_since: HashMap<WorkloadId, Timestamp>,
    /// Workloads whose config was snapshotted in their current healthy period.
    snapshotted: BTreeSet<WorkloadId>,
    /// Workloads due a config snapshot.
    snapshot_jobs: BTreeSet<WorkloadId>,
}

/// Runs the detector until `shutdown` is cancelled.
pub async fn run(client: Client, metrics: Arc<Metrics>, scope: Scope, shutdown: CancellationToken) {
    debug!("detector starting");
    let (incidents, incident_writer) = reflector::store::<Incident>();
    let incident_stream = reflector(
        incident_writer,
        watcher(
            scope.api::<Incident>(&client),
            watcher::Config::default().any_semantic(),
        ),
    )
    .default_backoff()
    .for_each(|event| async move {
        if let Err(error) = event {
            warn!(%error, "incident watch error; retrying");
        }
    });
    let incident_task = tokio::spawn(async move {
        incident_stream.await;
        warn!("incident reflector ended");
    });

    let (policies, policy_writer) = reflector::store::<RemediationPolicy>();
    let mut policy_events = reflector(
        policy_writer,
        watcher(
            scope.api::<RemediationPolicy>(&client),
            watcher::Config::default().any_semantic(),
        ),
    )
    .default_backoff()
    .boxed();

    let (sender, mut inputs) = mpsc::channel(1024);
    let mut detector = Detector {
        client: client.clone(),
        policies: policies.clone(),
        writer: Writer::new(client, metrics, incidents.clone()),
        sender,
        workload_watches: HashMap::new(),
        pod_watches: HashMap::new(),
        workloads: HashMap::new(),
        evaluations: HashMap::new(),
        short_since: HashMap::new(),
        timers: DelayQueue::new(),
        timer_keys: HashMap::new(),
        pending: BTreeMap::new(),
        noticed: HashMap::new(),
        healthy_since: HashMap::new(),
        snapshotted: BTreeSet::new(),
        snapshot_jobs: BTreeSet::new(),
    };
    // Dedup is derived from the Incidents in the API: wait until they are known.
    tokio::select! {
        ready = incidents.wait_until_ready() => if let Err(error) = ready {
            warn!(%error, "detector cannot start");
            return;
        },
        () = shutdown.cancelled() => return,
    }
    info!("detector started");
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(event) = policy_events.next() => match event {
                Ok(watcher::Event::InitApply(_) | watcher::Event::Init) => {}
                Ok(_) => detector.policies_changed(),
                Err(error) => warn!(%error, "policy watch error; retrying"),
            },
            Some(input) = inputs.recv() => detector.handle(input),
            Some(expired) = futures::future::poll_fn(|cx| detector.timers.poll_expired(cx)) => {
                let id = expired.into_inner();
                detector.timer_keys.remove(&id);
                detector.evaluate(&id);
            }
            _ = flush.tick() => detector.flush().await,
        }
    }
    detector.flush().await;
    for (handle, _) in detector.workload_watches.values() {
        handle.abort();
    }
    for watch in detector.pod_watches.values() {
        watch.handle.abort();
    }
    incident_task.abort();
    info!("detector stopped");
}

impl Detector {
    /// Brings the workload watches in line with the policies, then re-evaluates everything.
    fn policies_changed(&mut self) {
        let desired: BTreeSet<WorkloadWatchKey> = self
            .policies
            .state()
            .iter()
            .flat_map(|p| watches::workload_watch_keys(p))
            .collect();
        let stale: Vec<_> = self
            .workload_watches
            .keys()
            .filter(|k| !desired.contains(k))
            .cloned()
            .collect();
        for key in stale {
            if let Some((handle, _)) = self.workload_watches.remove(&key) {
                handle.abort();
            }
            debug!(?key, "stopped workload watch");
            let ids: Vec<WorkloadId> = self.workloads.keys().cloned().collect();
            for id in ids {
                self.drop_source(&id, &key);
            }
        }
        for key in desired {
            if !self.workload_watches.contains_key(&key) {
                debug!(?key, "watching guarded workloads");
                let handle =
                    watches::spawn_workload_watch(&self.client, key.clone(), self.sender.clone());
                self.workload_watches.insert(key, (handle, None));
            }
        }
        self.sync_pod_watches();
        let ids: Vec<WorkloadId> = self.workloads.keys().cloned().collect();
        for id in ids {
            self.evaluate(&id);
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Workload(key, event) => self.workload_event(key, event),
            Input::Pod(key, event) => self.pod_event(key, event),
        }
    }

    fn workload_event(&mut self, key: WorkloadWatchKey, event: watcher::Event<Workload>) {
        if !self.workload_watches.contains_key(&key) {
            return; // a watch stopped a moment ago
        }
        match event {
            watcher::Event::Init => {
                if let Some((_, seen)) = self.workload_watches.get_mut(&key) {
                    *seen = Some(BTreeSet::new());
                }
            }
            watcher::Event::InitApply(workload) | watcher::Event::Apply(workload) => {
                let id = (workload.kind(), workload.namespace(), workload.name());
                if let Some((_, Some(seen))) = self.workload_watches.get_mut(&key) {
                    seen.insert(id.clone());
                }
                let sources = self
                    .workloads
                    .remove(&id)
                    .map(|(_, sources)| sources)
                    .unwrap_or_default();
                let mut sources = sources;
                sources.insert(key);
                self.workloads.insert(id.clone(), (workload, sources));
                self.sync_pod_watches();
                self.evaluate(&id);
            }
            watcher::Event::Delete(workload) => {
                let id = (workload.kind(), workload.namespace(), workload.name());
                self.drop_source(&id, &key);
                self.sync_pod_watches();
            }
            watcher::Event::InitDone => {
                let seen = self
                    .workload_watches
                    .get_mut(&key)
                    .and_then(|(_, seen)| seen.take())
                    .unwrap_or_default();
                let gone: Vec<WorkloadId> = self
                    .workloads
                    .iter()
                    .filter(|(id, (_, sources))| sources.contains(&key) && !seen.contains(*id))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    self.drop_source(&id, &key);
                }
                self.sync_pod_watches();
            }
        }
    }

    /// A workload is no longer seen through `key`; forget it when no watch sees it.
    fn drop_source(&mut self, id: &WorkloadId, key: &WorkloadWatchKey) {
        let Some((_, sources)) = self.workloads.get_mut(id) else {
            return;
        };
        sources.remove(key);
        if sources.is_empty() {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: &WorkloadId) {
        self.workloads.remove(id);
        self.evaluations.remove(id);
        self.short_since.remove(id);
        self.healthy_since.remove(id);
        self.snapshotted.remove(id);
        self.snapshot_jobs.remove(id);
        if let Some(timer) = self.timer_keys.remove(id) {
            self.timers.remove(&timer);
        }
        // Reports not yet written for an unguarded target are dropped.
        self.pending.retain(|(namespace, _), report| {
            !(report.target.kind == id.0 && *namespace == id.1 && report.target.name == id.2)
        });
    }

    /// Starts a pod watch for every guarded workload's selector and stops the rest.
    fn sync_pod_watches(&mut self) {
        let desired: BTreeSet<PodWatchKey> = self
            .workloads
            .values()
            .filter_map(|(workload, _)| workload.pod_watch_key())
            .collect();
        self.pod_watches.retain(|key, watch| {
            let keep = desired.contains(key);
            if !keep {
                watch.handle.abort();
            }
            keep
        });
        for key in desired {
            if !self.pod_watches.contains_key(&key) {
                debug!(%key, "watching pods");
                let handle =
                    watches::spawn_pod_watch(&self.client, key.clone(), self.sender.clone());
                let watch = PodWatch {
                    handle,
                    synced: false,
                    pods: HashMap::new(),
                    seen_in_init: None,
                };
                self.pod_watches.insert(key, watch);
            }
        }
    }

    fn pod_event(&mut self, key: PodWatchKey, event: watcher::Event<Pod>) {
        let Some(watch) = self.pod_watches.get_mut(&key) else {
            return;
        };
        let changed: Option<Pod> = match event {
            watcher::Event::Init => {
                watch.seen_in_init = Some(BTreeSet::new());
                None
            }
            watcher::Event::InitApply(pod) => {
                let name = pod.name_any();
                if let Some(seen) = &mut watch.seen_in_init {
                    seen.insert(name.clone());
                }
                watch.pods.insert(name, pod);
                None
            }
            watcher::Event::InitDone => {
                let seen = watch.seen_in_init.take().unwrap_or_default();
                watch.pods.retain(|name, _| seen.contains(name));
                watch.synced = true;
                let ids: Vec<WorkloadId> = self
                    .workloads
                    .iter()
                    .filter(|(_, (w, _))| w.pod_watch_key().as_ref() == Some(&key))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    self.evaluate(&id);
                }
                return;
            }
            watcher::Event::Apply(pod) => {
                watch.pods.insert(pod.name_any(), pod.clone());
                Some(pod)
            }
            watcher::Event::Delete(pod) => {
                watch.pods.remove(&pod.name_any());
                Some(pod)
            }
        };
        let Some(pod) = changed else { return };
        if !self.pod_watches.get(&key).is_some_and(|w| w.synced) {
            return;
        }
        let ids: Vec<WorkloadId> = self
            .workloads
            .iter()
            .filter(|(id, (w, _))| {
                w.pod_watch_key().as_ref() == Some(&key)
                    && watches::pod_belongs_to(&pod, id.0, &id.2)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.evaluate(&id);
        }
    }

    /// The policy that guards a workload: the first by name among those whose targets select it.
    fn guarding_policy(&self, workload: &Workload) -> Option<Arc<RemediationPolicy>> {
        let namespace = workload.namespace();
        let mut candidates: Vec<Arc<RemediationPolicy>> = self
            .policies
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|p| {
                p.spec
                    .targets
                    .iter()
                    .any(|t| watches::target_selects(t, workload))
            })
            .collect();
        candidates.sort_by_key(|p| p.name_any());
        candidates.into_iter().next()
    }

    /// Classifies a workload and its pods, and turns what changed into reports.
    fn evaluate(&mut self, id: &WorkloadId) {
        let Some((workload, _)) = self.workloads.get(id) else {
            return;
        };
        let Some(policy) = self.guarding_policy(workload) else {
            self.forget(id);
            return;
        };
        let Some(pod_key) = workload.pod_watch_key() else {
            return;
        };
        let Some(pod_watch) = self.pod_watches.get(&pod_key).filter(|w| w.synced) else {
            return;
        };
        let now = Timestamp::now();
        let (desired, available) = workload.view().replicas();
        let short_since = if available < desired {
            Some(*self.short_since.entry(id.clone()).or_insert(now))
        } else {
            self.short_since.remove(id);
            None
        };
        let pods = pod_watch
            .pods
            .values()
            .filter(|pod| watches::pod_belongs_to(pod, id.0, &id.2));
        let evaluation =
            symptoms::evaluate(&policy.spec.rules, workload.view(), pods, short_since, now);
        let previous = self.evaluations.remove(id).unwrap_or_default();
        let namespace = id.1.clone();
        let target = WorkloadRef {
            kind: id.0,
            name: id.2.clone(),
        };
        let policy_name = policy.name_any();
        let reopen_window = policy.spec.detection.reopen_window.as_std();

        for symptom in ALL_SYMPTOMS {
            let key = dedup::dedup_key(id.0, &id.2, symptom);
            let pending_key = (namespace.clone(), key.clone());
            match evaluation.signals.get(&symptom) {
                Some(signal) => {
                    let occurrences = new_occurrences(previous.signals.get(&symptom), signal);
                    if occurrences == 0 {
                        continue;
                    }
                    let Some(rule) = policy.spec.rules.get(signal.rule) else {
                        continue;
                    };
                    let noticed = *self
                        .noticed
                        .entry(pending_key.clone())
                        .or_insert_with(Instant::now);
                    let report = Report {
                        namespace: namespace.clone(),
                        target: target.clone(),
                        symptom,
                        policy: policy_name.clone(),
                        rule: rule.name.clone(),
                        severity: rule.severity,
                        incident_type: rule.incident_type,
                        reopen_window,
                        occurrences,
                        pods: signal.pods.keys().cloned().collect(),
                        detail: signal.detail.clone(),
                        first_seen: now,
                        last_seen: now,
                        cleared: false,
                        noticed,
                    };
                    self.queue(pending_key, report);
                }
                None => {
                    self.noticed.remove(&pending_key);
                    let was_active = previous.signals.contains_key(&symptom);
                    let pending_active = self.pending.get(&pending_key).is_some_and(|r| !r.cleared);
                    let open = || !self.writer.open_uncleared(&namespace, &key).is_empty();
                    if !(was_active || pending_active || open()) {
                        continue;
                    }
                    let report = Report {
                        namespace: namespace.clone(),
                        target: target.clone(),
                        symptom,
                        policy: policy_name.clone(),
                        rule: String::new(),
                        severity: crate::crd::Severity::P3,
                        incident_type: crate::crd::IncidentType::ServiceOutage,
                        reopen_window,
                        occurrences: 0,
                        pods: Vec::new(),
                        detail: String::new(),
                        first_seen: now,
                        last_seen: now,
                        cleared: true,
                        noticed: Instant::now(),
                    };
                    self.queue(pending_key, report);
                }
            }
        }

        // Healthy long enough: its config is known-good, worth a snapshot.
        let mut recheck_at = evaluation.recheck_at;
        if evaluation.signals.is_empty() && desired > 0 && available >= desired {
            let since = *self.healthy_since.entry(id.clone()).or_insert(now);
            let due = since
                .checked_add(policy.spec.detection.hold_down.as_std())
                .unwrap_or(Timestamp::MAX);
            if now >= due {
                if !self.snapshotted.contains(id) {
                    self.snapshot_jobs.insert(id.clone());
                }
            } else {
                recheck_at = Some(recheck_at.map_or(due, |r| r.min(due)));
            }
        } else {
            self.healthy_since.remove(id);
            self.snapshotted.remove(id);
        }
        if let Some(timer) = self.timer_keys.remove(id) {
            self.timers.remove(&timer);
        }
        if let Some(at) = recheck_at {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(100);
            let timer = self.timers.insert(id.clone(), wait);
            self.timer_keys.insert(id.clone(), timer);
        }
        self.evaluations.insert(id.clone(), evaluation);
    }

    fn queue(&mut self, key: (String, String), report: Report) {
        match self.pending.get_mut(&key) {
            // A clear after a not-yet-written signal keeps the signal's data.
            Some(existing) if report.cleared && !existing.cleared && existing.occurrences > 0 => {
                existing.absorb(Report {
                    occurrences: 0,
                    ..report
                });
            }
            Some(existing) => existing.absorb(report),
            None => {
                self.pending.insert(key, report);
            }
        }
    }

    /// Takes the config snapshots that are due.
    async fn snapshot(&mut self) {
        let jobs = std::mem::take(&mut self.snapshot_jobs);
        for id in jobs {
            let Some((workload, _)) = self.workloads.get(&id) else {
                continue;
            };
            let template = match workload {
                Workload::Deployment(d) => d.spec.as_ref().map(|s| s.template.clone()),
                Workload::StatefulSet(s) => s.spec.as_ref().map(|s| s.template.clone()),
            };
            let config_maps = template
                .as_ref()
                .map(snapshots::config_maps_used)
                .unwrap_or_default();
            let label = format!("{}/{}", id.0, id.2);
            let revision = match workload {
                Workload::Deployment(d) => d
                    .annotations()
                    .get("deployment.kubernetes.io/revision")
                    .cloned(),
                Workload::StatefulSet(_) => None,
            };
            if let Some(revision) = revision
                && let Err(error) =
                    snapshots::record_healthy_revision(&self.client, &id.1, &id.2, &revision).await
            {
                warn!(workload = %label, %error, "could not record the healthy revision; retrying");
                self.snapshot_jobs.insert(id);
                continue;
            }
            match snapshots::take(&self.client, &id.1, &label, &config_maps, Timestamp::now()).await
            {
                Ok(_) => {
                    self.snapshotted.insert(id);
                }
                Err(error) => {
                    warn!(workload = %label, %error, "config snapshot failed; retrying");
                    self.snapshot_jobs.insert(id);
                }
            }
        }
    }

    async fn flush(&mut self) {
        self.snapshot().await;
        let pending = std::mem::take(&mut self.pending);
        for (key, report) in pending {
            if let Err(error) = self.writer.write(report.clone()).await {
                warn!(key = %key.1, namespace = %key.0, %error, "could not record signal; retrying");
                self.queue(key, report);
            }
        }
    }
}

const ALL_SYMPTOMS: [Symptom; 8] = [
    Symptom::CrashLoopBackOff,
    Symptom::OOMKilled,
    Symptom::ImagePullBackOff,
    Symptom::PodFailed,
    Symptom::Evicted,
    Symptom::NotReady,
    Symptom::ProgressDeadlineExceeded,
    Symptom::ReplicasUnavailable,
];

/// New observations in a signal: pods newly showing it, pods restarting again,
/// or the signal itself appearing.
fn new_occurrences(previous: Option<&Signal>, current: &Signal) -> i64 {
    let Some(previous) = previous else {
        return i64::try_from(current.pods.len().max(1)).unwrap_or(i64::MAX);
    };
    let count = current
        .pods
        .iter()
        .filter(|(pod, restarts)| {
            previous
                .pods
                .get(*pod)
                .is_none_or(|before| *restarts > before)
        })
        .count();
    i64::try_from(count).unwrap_or(i64::MAX)
}
