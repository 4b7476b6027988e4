//! The Incident controller's reconcile of one more incident: a declared
//! Incident (as `kubectl apply` makes one: title, severity, type, target; no
//! policy) timed from its creation to a watch seeing its first phase, in a
//! namespace with no other Incident and then with 1,000 open ones.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use healing_guard_operator::crd::Incident;
use kube::{
    Api, Client, ResourceExt,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{BenchError, Result};

/// Longest wait for one Incident's first phase.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the 1,000 open Incidents to all have a phase.
const OPEN_TIMEOUT: Duration = Duration::from_secs(600);
const CREATE_CONCURRENCY: usize = 32;

/// Incidents created in one namespace, with a watch that reports each the
/// first time it has a phase.
pub struct Reconciles {
    api: Api<Incident>,
    phased: mpsc::UnboundedReceiver<(String, Instant)>,
    seen: HashMap<String, Instant>,
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for Reconciles {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl Reconciles {
    /// Starts the watch and waits until it has synced.
    pub async fn start(client: &Client, namespace: &str) -> Result<Reconciles> {
        let api: Api<Incident> = Api::namespaced(client.clone(), namespace);
        let (sender, phased) = mpsc::unbounded_channel();
        let (synced, mut is_synced) = mpsc::channel(1);
        let watched = api.clone();
        let watch = tokio::spawn(async move {
            let mut events = watcher(watched, watcher::Config::default())
                .default_backoff()
                .boxed();
            let mut told = HashSet::new();
            while let Some(event) = events.next().await {
                let at = Instant::now();
                match event {
                    Ok(watcher::Event::Apply(incident) | watcher::Event::InitApply(incident)) => {
                        let phased = incident.status.as_ref().and_then(|s| s.phase).is_some();
                        let name = incident.name_any();
                        if phased && told.insert(name.clone()) && sender.send((name, at)).is_err() {
                            return;
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        let _ = synced.try_send(());
                    }
                    Ok(_) => {}
                    Err(error) => eprintln!("[bench] incident watch: {error}; retrying"),
                }
            }
        });
        is_synced.recv().await.ok_or("the incident watch ended")?;
        Ok(Reconciles {
            api,
            phased,
            seen: HashMap::new(),
            watch,
        })
    }

    /// `count` Incidents `<prefix>-NN`, one after another: creation (the
    /// request sent) to the first phase seen.
    pub async fn samples(&mut self, prefix: &str, count: usize) -> Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(count);
        for index in 0..count {
            let name = format!("{prefix}-{index:02}");
            let created = Instant::now();
            self.api
                .create(&PostParams::default(), &declared(&name)?)
                .await?;
            let at = tokio::time::timeout(SAMPLE_TIMEOUT, self.until_phased(&name))
                .await
                .map_err(|_| {
                    format!(
                        "Incident {name}: no phase within {} s",
                        SAMPLE_TIMEOUT.as_secs()
                    )
                })??;
            samples.push(at.duration_since(created));
        }
        samples.sort();
        Ok(samples)
    }

    /// Creates `count` Incidents `open-NNNN` at once (bounded concurrency) and
    /// waits until all have a phase.
    pub async fn open(&mut self, count: usize) -> Result<()> {
        let names: Vec<String> = (0..count).map(|i| format!("open-{i:04}")).collect();
        let api = &self.api;
        futures::stream::iter(&names)
            .map(|name| async move {
                api.create(&PostParams::default(), &declared(name)?).await?;
                Ok::<_, BenchError>(())
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        let all = async {
            for name in &names {
                self.until_phased(name).await?;
            }
            Ok::<_, BenchError>(())
        };
        tokio::time::timeout(OPEN_TIMEOUT, all).await.map_err(|_| {
            format!(
                "{count} open Incidents: not all have a phase within {} s",
                OPEN_TIMEOUT.as_secs()
            )
        })?
    }

    /// When `name` was first seen with a phase.
    async fn until_phased(&mut self, name: &str) -> Result<Instant> {
        loop {
            if let Some(at) = self.seen.get(name) {
                return Ok(*at);
            }
            let (phased, at) = self.phased.recv().await.ok_or("the incident watch ended")?;
            self.seen.insert(phased, at);
        }
    }
}

/// An Incident as a responder declares it: no policy, nothing to run.
fn declared(name: &str) -> Result<Incident> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": name},
        "spec": {
            "title": format!("bench: {name} declared by hand"),
            "severity": "P2",
            "type": "ServiceOutage",
            "target": {"kind": "Deployment", "name": format!("web-{name}")}
        }
    }))?)
}
