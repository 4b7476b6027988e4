//! Writes what the detector saw into Incidents: creates them, counts repeats,
//! reopens them, and marks signals cleared. The detector owns only
//! `status.detection` (its own field manager); the Incident controller owns
//! the rest of the status and reacts to what is written here.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::reflector::Store,
};
use tracing::info;

use super::{
    dedup::{self, Decision},
    report::Report,
};
use crate::{
    crd::{DetectionStatus, Incident, IncidentSource, IncidentSpec, SourceKind},
    metrics::Metrics,
    names::{
        DETECTOR_FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, POLICY_LABEL, SYMPTOM_LABEL,
        TARGET_LABEL,
    },
};

/// The longest title the Incident schema accepts.
const MAX_TITLE: usize = 256;
/// The fastest an open incident's detection is updated when only its counts
/// move (a crash that goes on after escalation): repeats in between are
/// folded into the next update.
pub const UPDATE_EVERY: Duration = Duration::from_secs(10);
/// Once an incident is escalated (nothing more will be done for it), each
/// count-only update waits twice as long as the one before, up to this.
pub const ESCALATED_UPDATE_EVERY: Duration = Duration::from_secs(300);
/// How many affected pods an Incident lists; the rest are counted.
pub const MAX_AFFECTED_PODS: usize = 20;

/// The detection status after a report. `affected` holds every pod seen so
/// far for this incident, so the omitted count does not double-count.
pub fn merge_detection(
    previous: Option<&DetectionStatus>,
    report: &Report,
    reopen: bool,
    affected: &mut BTreeSet<String>,
) -> DetectionStatus {
    let mut detection = previous.cloned().unwrap_or_default();
    detection.symptom = Some(report.symptom);
    if report.cleared {
        if detection.cleared_at.is_none() {
            detection.cleared_at = Some(Time(report.last_seen));
        }
        return detection;
    }
    affected.extend(detection.affected_pods.iter().cloned());
    affected.extend(report.pods.iter().cloned());
    detection.occurrences += report.occurrences.max(0);
    detection
        .first_seen_at
        .get_or_insert(Time(report.first_seen));
    detection.last_seen_at = Some(Time(report.last_seen));
    detection.message = Some(report.detail.clone());
    detection.cleared_at = None;
    // The pods failing now first, then earlier ones, up to the bound.
    let mut listed: Vec<String> = report
        .pods
        .iter()
        .take(MAX_AFFECTED_PODS)
        .cloned()
        .collect();
    for pod in affected.iter() {
        if listed.len() >= MAX_AFFECTED_PODS {
            break;
        }
        if !listed.contains(pod) {
            listed.push(pod.clone());
        }
    }
    detection.affected_pods_omitted =
        i64::try_from(affected.len().saturating_sub(listed.len())).unwrap_or(i64::MAX);
    detection.affected_pods = listed;
    if reopen {
        detection.reopens += 1;
        detection.last_reopened_at = Some(Time(report.last_seen));
    }
    detection
}

/// What became of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// In the API (or nothing to write).
    Done,
    /// Only counts moved and the incident was updated a moment ago: keep
    /// the report and fold it into the next one.
    Deferred,
}

/// Applies reports to the API.
pub struct Writer {
    client: Client,
    metrics: Arc<Metrics>,
    incidents: Store<Incident>,
    written: HashMap<(String, String), DetectionStatus>,
    affected: HashMap<(String, String), BTreeSet<String>>,
    created: HashMap<(String, String), String>,
    /// When each incident's detection was last written, and how long its
    /// counts wait after that.
    last_write: HashMap<(String, String), (Instant, Duration)>,
}

impl Writer {
    pub fn new(client: Client, metrics: Arc<Metrics>, incidents: Store<Incident>) -> Self {
        Writer {
            client,
            metrics,
            incidents,
            written: HashMap::new(),
            affected: HashMap::new(),
            created: HashMap::new(),
            last_write: HashMap::new(),
        }
    }

    /// Whether an open detected incident exists for the key whose signal is
    /// not yet marked cleared (so a clear report has something to do).
    pub fn open_uncleared(&self, namespace: &str, key: &str) -> Vec<Arc<Incident>> {
        self.same_key(namespace, key)
            .into_iter()
            .filter(|incident| {
                let status = incident.status.as_ref();
                let open = incident.is_open();
                let name = incident.name_any();
                let cleared = self
                    .written
                    .get(&(namespace.to_owned(), name))
                    .or_else(|| status.and_then(|s| s.detection.as_ref()))
                    .is_some_and(|d| d.cleared_at.is_some());
                open && !cleared
            })
            .collect()
    }

    fn same_key(&self, namespace: &str, key: &str) -> Vec<Arc<Incident>> {
        self.incidents.state_filter(|incident| {
            incident.namespace().as_deref() == Some(namespace)
                && incident.spec.source.dedup_key.as_deref() == Some(key)
        })
    }

    /// Forgets what it remembers of incidents that no longer exist (after
    /// a resync, when deletions may have been missed).
    pub fn prune(&mut self) {
        let existing: BTreeSet<(String, String)> = self
            .incidents
            .state()
            .iter()
            .map(|i| (i.namespace().unwrap_or_default(), i.name_any()))
            .collect();
        self.written.retain(|id, _| existing.contains(id));
        self.affected.retain(|id, _| existing.contains(id));
        self.last_write.retain(|id, _| existing.contains(id));
        self.created
            .retain(|(namespace, _), name| existing.contains(&(namespace.clone(), name.clone())));
    }

    /// Records one report.
    pub async fn write(&mut self, report: Report) -> Result<Written, kube::Error> {
        let key = report.key();
        let namespace = report.namespace.clone();
        let same_key = self.same_key(&namespace, &key);
        let mut decision = dedup::decide(
            report.target.kind,
            &report.target.name,
            report.symptom,
            report.probe.as_deref(),
            same_key.iter().map(AsRef::as_ref),
            report.reopen_window,
            report.last_seen,
        );
        // The store may lag behind our own writes: a create it has not seen
        // yet, or a reopen the controller has not acted on yet.
        if let Some(name) = self.created.get(&(namespace.clone(), key.clone()))
            && !same_key.iter().any(|i| i.name_any() == *name)
        {
            decision = Decision::Update(name.clone());
        }
        if let Decision::Reopen(name) = &decision
            && self.reopen_pending(&namespace, name, &same_key)
        {
            decision = Decision::Update(name.clone());
        }
        if report.cleared {
            // Only an open incident has a signal to clear.
            if let Decision::Update(name) = decision {
                return self
                    .patch_detection(&namespace, &name, &report, false)
                    .await;
            }
            return Ok(Written::Done);
        }
        match decision {
            Decision::Update(name) => {
                self.patch_detection(&namespace, &name, &report, false)
                    .await
            }
            Decision::Reopen(name) => {
                info!(incident = %name, %key, "signal returned within the reopen window: reopening");
                self.patch_detection(&namespace, &name, &report, true).await
            }
            Decision::Create { name, previous } => {
                self.create(&name, previous, &report).await?;
                self.created.insert((namespace.clone(), key), name.clone());
                self.patch_detection(&namespace, &name, &report, false)
                    .await
            }
        }
    }

    /// Whether we reopened this incident and the lifecycle has not acted on it yet.
    fn reopen_pending(&self, namespace: &str, name: &str, same_key: &[Arc<Incident>]) -> bool {
        let Some(written) = self.written.get(&(namespace.to_owned(), name.to_owned())) else {
            return false;
        };
        let handled = same_key
            .iter()
            .find(|i| i.name_any() == name)
            .and_then(|i| i.status.as_ref()?.reopens_handled)
            .unwrap_or(0);
        written.reopens > handled
    }

    async fn create(
        &self,
        name: &str,
        previous: Option<String>,
        report: &Report,
    ) -> Result<(), kube::Error> {
        let api: Api<Incident> = Api::namespaced(self.client.clone(), &report.namespace);
        let mut labels = std::collections::BTreeMap::new();
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
        labels.insert(SYMPTOM_LABEL.to_owned(), report.symptom.to_string());
        if report.target.name.len() <= 63 {
            labels.insert(TARGET_LABEL.to_owned(), report.target.name.clone());
        }
        // Policy names are DNS subdomains, but label values stop at 63.
        if report.policy.len() <= 63 {
            labels.insert(POLICY_LABEL.to_owned(), report.policy.clone());
        }
        let spec = IncidentSpec {
            // The schema bounds titles; a long workload name must not make
            // the incident impossible to create.
            title: truncate(
                &match &report.probe {
                    Some(probe) => format!("{} ({probe}) on {}", report.symptom, report.target),
                    None => format!("{} on {}", report.symptom, report.target),
                },
                MAX_TITLE,
            ),
            severity: report.severity,
            severity_reason: None,
            incident_type: report.incident_type,
            target: report.target.clone(),
            detected_at: Some(Time(report.first_seen)),
            description: Some(truncate(&report.detail, 4000)),
            policy: Some(report.policy.clone()),
            rule: Some(report.rule.clone()),
            actions: None,
            mode: None,
            source: IncidentSource {
                kind: SourceKind::Detected,
                policy: Some(report.policy.clone()),
                rule: Some(report.rule.clone()),
                dedup_key: Some(report.key()),
                previous_incident: previous.clone(),
            },
            acknowledged: None,
            approvals: Vec::new(),
            resolution: None,
            declined: None,
            communication: None,
            resume_sync: None,
        };
        let incident = Incident {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(report.namespace.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        };
        match api.create(&PostParams::default(), &incident).await {
            Ok(_) => {
                let latency = Timestamp::now().duration_since(report.noticed);
                self.metrics
                    .detection_latency
                    .observe(latency.as_secs_f64().max(0.0));
                info!(
                    incident = name,
                    key = %report.key(),
                    rule = %report.rule,
                    severity = %report.severity,
                    previous = previous.as_deref().unwrap_or("-"),
                    "incident opened"
                );
                Ok(())
            }
            // Created before (a restart, or a report racing its own create).
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn patch_detection(
        &mut self,
        namespace: &str,
        name: &str,
        report: &Report,
        reopen: bool,
    ) -> Result<Written, kube::Error> {
        let id = (namespace.to_owned(), name.to_owned());
        let stored = self
            .incidents
            .state_filter(|i| i.namespace().as_deref() == Some(namespace) && i.name_any() == name)
            .into_iter()
            .next();
        let escalated = stored
            .as_ref()
            .and_then(|i| i.status.as_ref()?.phase)
            .is_some_and(|phase| phase == crate::crd::Phase::Escalated);
        let from_store = stored.and_then(|i| i.status.as_ref().and_then(|s| s.detection.clone()));
        let previous = self.written.get(&id).cloned().or(from_store);
        let affected = self.affected.entry(id.clone()).or_default();
        let detection = merge_detection(previous.as_ref(), report, reopen, affected);
        if previous.as_ref() == Some(&detection) {
            return Ok(Written::Done);
        }
        // What changes the incident's course goes at once: the first
        // record, a clear, a return after a clear, a reopen, a pod newly
        // failing (the blast radius grew). Repeats of the same pods wait.
        let course_changed = previous.as_ref().is_none_or(|p| {
            p.cleared_at.is_some() != detection.cleared_at.is_some()
                || p.affected_pods.len() + usize::try_from(p.affected_pods_omitted).unwrap_or(0)
                    < detection.affected_pods.len()
                        + usize::try_from(detection.affected_pods_omitted).unwrap_or(0)
        }) || reopen;
        let waited = self.last_write.get(&id).copied();
        let recent = waited.is_some_and(|(at, wait)| at.elapsed() < wait);
        if !course_changed && recent {
            return Ok(Written::Deferred);
        }
        let api: Api<Incident> = Api::namespaced(self.client.clone(), namespace);
        let detection_value = serde_json::to_value(&detection).map_err(kube::Error::SerdeError)?;
        let patch = serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1",
            "kind": "Incident",
            "status": { "detection": detection_value },
        });
        let written = api
            .patch_status(
                name,
                &PatchParams::apply(DETECTOR_FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await;
        if let Err(kube::Error::Api(status)) = &written
            && status.code == 404
        {
            // Deleted by a human: forget it, so that the signal, if it goes
            // on, opens a new incident rather than updating a gone one.
            info!(incident = %name, "incident deleted; a signal that goes on opens it again");
            self.forget(&id);
        }
        written?;
        self.written.insert(id.clone(), detection);
        let wait = match (escalated, waited) {
            (true, Some((_, wait))) => (wait * 2).min(ESCALATED_UPDATE_EVERY),
            _ => UPDATE_EVERY,
        };
        self.last_write.insert(id, (Instant::now(), wait));
        Ok(Written::Done)
    }

    /// How many entries it keeps about incidents.
    pub fn remembered(&self) -> usize {
        self.written.len() + self.affected.len() + self.created.len() + self.last_write.len()
    }

    /// Forgets what it remembers of one incident (deleted).
    pub fn forget(&mut self, id: &(String, String)) {
        self.written.remove(id);
        self.affected.remove(id);
        self.last_write.remove(id);
        self.created
            .retain(|(namespace, _), name| !(*namespace == id.0 && *name == id.1));
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), with "..."
/// where it was cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn incident(name: &str) -> Incident {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"title": "t", "severity": "P1", "type": "ServiceOutage",
                     "target": {"kind": "Deployment", "name": "api"},
                     "source": {"kind": "Detected"}}
        }))
        .unwrap()
    }

    /// A writer whose store holds `existing`, remembering `names`.
    fn writer(existing: &[&str], names: &[&str]) -> Writer {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let (store, mut filler) = reflector::store::<Incident>();
        for name in existing {
            filler.apply_watcher_event(&watcher::Event::Apply(incident(name)));
        }
        let mut writer = Writer::new(
            Client::new(service, "default"),
            Arc::new(Metrics::default()),
            store,
        );
        for name in names {
            let id = ("shop".to_owned(), (*name).to_owned());
            writer
                .written
                .insert(id.clone(), DetectionStatus::default());
            writer.affected.insert(id.clone(), BTreeSet::new());
            writer.last_write.insert(id, (Instant::now(), UPDATE_EVERY));
            writer.created.insert(
                ("shop".to_owned(), format!("key-{name}")),
                (*name).to_owned(),
            );
        }
        writer
    }

    #[tokio::test]
    async fn forgets_incidents_that_are_gone() {
        let mut writer = writer(&["kept"], &["kept", "gone"]);
        assert_eq!(writer.remembered(), 8);
        writer.prune();
        assert_eq!(writer.remembered(), 4, "only what is kept remains");
        let kept = ("shop".to_owned(), "kept".to_owned());
        assert!(writer.written.contains_key(&kept));
        assert_eq!(
            writer.created.values().collect::<Vec<_>>(),
            ["kept"],
            "a create pointing at a gone incident is forgotten too"
        );
        writer.forget(&kept);
        assert_eq!(writer.remembered(), 0, "a deleted incident leaves nothing");
    }
}
