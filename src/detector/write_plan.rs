//! What to write about a report, decided from what the detector wrote
//! before and the incidents that carry its key: nothing, later, a new
//! incident, or a new `status.detection`. Pure: the clock is an argument,
//! so the live writer (`writer.rs`, which makes the API calls) and a
//! replay against an in-memory list of incidents plan the same writes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, api::ObjectMeta};

use super::{
    dedup::{self, Decision},
    report::Report,
};
use crate::{
    crd::{DetectionStatus, Incident, IncidentSource, IncidentSpec, Phase, SourceKind},
    names::{MANAGED_BY, MANAGED_BY_LABEL, POLICY_LABEL, SYMPTOM_LABEL, TARGET_LABEL},
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

/// An incident: namespace and name.
pub type IncidentId = (String, String);

/// What to do about a report.
#[derive(Clone, Debug)]
pub enum WritePlan {
    /// Nothing: a clear with no open incident to clear.
    Nothing,
    /// Create this incident (one that already exists is as good), then
    /// record it with [`WriteMemory::created`] and plan its detection with
    /// [`WriteMemory::plan_detection`] against what exists after the create.
    Create(Box<Incident>),
    /// Write (or not) an existing incident's detection.
    Detection(DetectionPlan),
}

/// What to do about an existing incident's detection.
#[derive(Clone, Debug, PartialEq)]
pub enum DetectionPlan {
    /// It would not change.
    Unchanged,
    /// Only counts moved and the incident was updated a moment ago: keep
    /// the report and fold it into the next one.
    Deferred,
    /// Apply it (server-side, the detector's field manager), then tell
    /// [`WriteMemory::wrote`]; if the incident is gone, [`WriteMemory::forget`] it.
    Patch(Box<DetectionPatch>),
}

/// A detection to write.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectionPatch {
    pub namespace: String,
    pub name: String,
    pub detection: DetectionStatus,
    /// The signal came back within the reopen window: this reopens it.
    pub reopen: bool,
    /// How long count-only updates wait once this one is written.
    pub wait: Duration,
}

impl DetectionPatch {
    pub fn id(&self) -> IncidentId {
        (self.namespace.clone(), self.name.clone())
    }
}

/// What the detector wrote, by incident: the store of incidents may lag
/// behind its own writes.
#[derive(Clone, Debug, Default)]
pub struct WriteMemory {
    /// The detection last written to each incident.
    written: HashMap<IncidentId, DetectionStatus>,
    /// Every pod seen failing for each incident.
    affected: HashMap<IncidentId, BTreeSet<String>>,
    /// The incident created for each namespace and dedup key.
    created: HashMap<(String, String), String>,
    /// When each incident's detection was last written, and how long its
    /// counts wait after that.
    last_write: HashMap<IncidentId, (Timestamp, Duration)>,
}

impl WriteMemory {
    /// What to write about `report`, given the incidents of its namespace
    /// that carry its key (`same_key`) and the stored incident of a name.
    pub fn plan(
        &mut self,
        report: &Report,
        same_key: &[Arc<Incident>],
        stored: impl Fn(&str) -> Option<Arc<Incident>>,
        now: Timestamp,
    ) -> WritePlan {
        let key = report.key();
        let namespace = &report.namespace;
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
        if let Some(name) = self.created.get(&(namespace.clone(), key))
            && !same_key.iter().any(|i| i.name_any() == *name)
        {
            decision = Decision::Update(name.clone());
        }
        if let Decision::Reopen(name) = &decision
            && self.reopen_pending(namespace, name, same_key)
        {
            decision = Decision::Update(name.clone());
        }
        let (name, reopen) = match decision {
            Decision::Update(name) => (name, false),
            // Only an open incident has a signal to clear.
            _ if report.cleared => return WritePlan::Nothing,
            Decision::Reopen(name) => (name, true),
            Decision::Create { name, previous } => {
                return WritePlan::Create(Box::new(new_incident(&name, previous, report)));
            }
        };
        let stored = stored(&name);
        WritePlan::Detection(self.plan_detection(report, &name, reopen, stored.as_deref(), now))
    }

    /// What to write into the detection of the incident `name` (`stored`,
    /// as the store holds it, if it does) about `report`.
    pub fn plan_detection(
        &mut self,
        report: &Report,
        name: &str,
        reopen: bool,
        stored: Option<&Incident>,
        now: Timestamp,
    ) -> DetectionPlan {
        let id = (report.namespace.clone(), name.to_owned());
        let escalated = stored
            .and_then(|i| i.status.as_ref()?.phase)
            .is_some_and(|phase| phase == Phase::Escalated);
        let from_store = stored.and_then(|i| i.status.as_ref()?.detection.clone());
        let previous = self.written.get(&id).cloned().or(from_store);
        let affected = self.affected.entry(id.clone()).or_default();
        let detection = merge_detection(previous.as_ref(), report, reopen, affected);
        if previous.as_ref() == Some(&detection) {
            return DetectionPlan::Unchanged;
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
        let recent = waited
            .is_some_and(|(at, wait)| at.checked_add(wait).ok().is_none_or(|until| now < until));
        if !course_changed && recent {
            return DetectionPlan::Deferred;
        }
        let wait = match (escalated, waited) {
            (true, Some((_, wait))) => (wait * 2).min(ESCALATED_UPDATE_EVERY),
            _ => UPDATE_EVERY,
        };
        DetectionPatch {
            namespace: id.0,
            name: id.1,
            detection,
            reopen,
            wait,
        }
        .into()
    }

    /// The incident `name` was created for `report` (or already existed).
    pub fn created(&mut self, report: &Report, name: &str) {
        self.created
            .insert((report.namespace.clone(), report.key()), name.to_owned());
    }

    /// A detection was written at `at`.
    pub fn wrote(&mut self, patch: DetectionPatch, at: Timestamp) {
        let id = patch.id();
        self.last_write.insert(id.clone(), (at, patch.wait));
        self.written.insert(id, patch.detection);
    }

    /// Whether one of `same_key` (the incidents of `namespace` carrying a
    /// key) is open with its signal not yet marked cleared: a clear report
    /// then has something to do.
    pub fn open_uncleared(&self, namespace: &str, same_key: &[Arc<Incident>]) -> bool {
        same_key.iter().any(|incident| {
            let status = incident.status.as_ref();
            let cleared = self
                .written
                .get(&(namespace.to_owned(), incident.name_any()))
                .or_else(|| status.and_then(|s| s.detection.as_ref()))
                .is_some_and(|d| d.cleared_at.is_some());
            incident.is_open() && !cleared
        })
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

    /// Forgets what it remembers of incidents not in `existing` (after a
    /// resync, when deletions may have been missed).
    pub fn prune(&mut self, existing: &BTreeSet<IncidentId>) {
        self.written.retain(|id, _| existing.contains(id));
        self.affected.retain(|id, _| existing.contains(id));
        self.last_write.retain(|id, _| existing.contains(id));
        self.created
            .retain(|(namespace, _), name| existing.contains(&(namespace.clone(), name.clone())));
    }

    /// Forgets what it remembers of one incident (deleted).
    pub fn forget(&mut self, id: &IncidentId) {
        self.written.remove(id);
        self.affected.remove(id);
        self.last_write.remove(id);
        self.created
            .retain(|(namespace, _), name| !(*namespace == id.0 && *name == id.1));
    }

    /// How many entries it keeps about incidents.
    pub fn remembered(&self) -> usize {
        self.written.len() + self.affected.len() + self.created.len() + self.last_write.len()
    }
}

impl From<DetectionPatch> for DetectionPlan {
    fn from(patch: DetectionPatch) -> Self {
        DetectionPlan::Patch(Box::new(patch))
    }
}

/// The incident a report opens, named `name`, linked to `previous`.
pub fn new_incident(name: &str, previous: Option<String>, report: &Report) -> Incident {
    let mut labels = BTreeMap::new();
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
            previous_incident: previous,
        },
        acknowledged: None,
        approvals: Vec::new(),
        resolution: None,
        declined: None,
        communication: None,
        resume_sync: None,
    };
    Incident {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(report.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

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
    use super::*;
    use crate::{
        crd::{Severity, Symptom},
        detector::fixtures::{CRASH_KEY, at, clear_report, crash_report, incident},
    };

    const NONE_STORED: fn(&str) -> Option<Arc<Incident>> = |_| None;

    /// The patch of a plan, or a failure saying what it was.
    fn patch(plan: WritePlan) -> DetectionPatch {
        match plan {
            WritePlan::Detection(DetectionPlan::Patch(patch)) => *patch,
            other => panic!("expected a patch, got {other:?}"),
        }
    }

    /// A memory that created `api-crashloop` and wrote its first detection
    /// at t0, the store not showing it yet.
    fn after_first_write() -> WriteMemory {
        let mut memory = WriteMemory::default();
        let first = crash_report(at(0), &["api-1"], 1);
        let WritePlan::Create(created) = memory.plan(&first, &[], NONE_STORED, at(0)) else {
            panic!("the first signal creates");
        };
        memory.created(&first, &created.name_any());
        let DetectionPlan::Patch(patch) =
            memory.plan_detection(&first, &created.name_any(), false, None, at(0))
        else {
            panic!("a new incident's detection is written at once");
        };
        memory.wrote(*patch, at(0));
        memory
    }

    #[test]
    fn the_first_signal_creates_an_incident_then_writes_its_detection() {
        let mut memory = WriteMemory::default();
        let report = crash_report(at(0), &["api-1"], 1);
        let WritePlan::Create(created) = memory.plan(&report, &[], NONE_STORED, at(0)) else {
            panic!("the first signal creates");
        };
        assert_eq!(created.name_any(), "api-crashloop");
        assert_eq!(created.namespace().as_deref(), Some("hg"));
        assert_eq!(created.spec.source.dedup_key.as_deref(), Some(CRASH_KEY));
        assert_eq!(created.spec.severity, Severity::P1);
        assert_eq!(created.spec.title, "CrashLoopBackOff on Deployment/api");
        memory.created(&report, "api-crashloop");
        let plan = memory.plan_detection(&report, "api-crashloop", false, None, at(0));
        let DetectionPlan::Patch(patch) = plan else {
            panic!("expected a patch, got {plan:?}");
        };
        assert_eq!(
            (patch.namespace.as_str(), patch.name.as_str()),
            ("hg", "api-crashloop")
        );
        assert_eq!(patch.detection.symptom, Some(Symptom::CrashLoopBackOff));
        assert_eq!(patch.detection.occurrences, 1);
        assert_eq!(patch.detection.affected_pods, ["api-1"]);
        assert_eq!(patch.detection.first_seen_at, Some(Time(at(0))));
        assert_eq!((patch.reopen, patch.wait), (false, UPDATE_EVERY));
    }

    #[test]
    fn count_only_updates_wait_update_every_and_a_clear_goes_at_once() {
        let mut memory = after_first_write();
        // The store lags: what was created is updated all the same.
        let repeat = crash_report(at(5), &["api-1"], 1);
        assert!(matches!(
            memory.plan(&repeat, &[], NONE_STORED, at(5)),
            WritePlan::Detection(DetectionPlan::Deferred)
        ));
        let later = patch(memory.plan(&repeat, &[], NONE_STORED, at(11)));
        assert_eq!(later.name, "api-crashloop");
        assert_eq!(later.detection.occurrences, 2);
        assert_eq!(later.detection.last_seen_at, Some(Time(at(5))));
        memory.wrote(later, at(11));
        // A pod newly failing goes at once: the blast radius grew.
        let spread = crash_report(at(12), &["api-2"], 1);
        let spread = patch(memory.plan(&spread, &[], NONE_STORED, at(12)));
        assert_eq!(spread.detection.affected_pods, ["api-2", "api-1"]);
        memory.wrote(spread, at(12));
        // The signal stops a moment later: written at once.
        let cleared = patch(memory.plan(&clear_report(at(14)), &[], NONE_STORED, at(14)));
        assert_eq!(cleared.detection.cleared_at, Some(Time(at(14))));
        assert_eq!(cleared.detection.occurrences, 3);
        memory.wrote(cleared, at(14));
        // Cleared twice: nothing changes.
        assert!(matches!(
            memory.plan(&clear_report(at(15)), &[], NONE_STORED, at(15)),
            WritePlan::Detection(DetectionPlan::Unchanged)
        ));
    }

    #[test]
    fn an_escalated_incidents_counts_wait_twice_as_long_each_time() {
        let mut memory = after_first_write();
        let escalated = Arc::new(incident("api-crashloop", Some(Phase::Escalated), None));
        let same_key = [escalated.clone()];
        let stored = |_: &str| Some(escalated.clone());
        let repeat = |t| crash_report(at(t), &["api-1"], 1);
        let first = patch(memory.plan(&repeat(11), &same_key, stored, at(11)));
        assert_eq!(first.wait, UPDATE_EVERY * 2);
        memory.wrote(first, at(11));
        assert!(matches!(
            memory.plan(&repeat(25), &same_key, stored, at(25)),
            WritePlan::Detection(DetectionPlan::Deferred)
        ));
        let second = patch(memory.plan(&repeat(32), &same_key, stored, at(32)));
        assert_eq!(second.wait, UPDATE_EVERY * 4);
    }

    #[test]
    fn a_clear_with_no_open_incident_writes_nothing() {
        let mut memory = WriteMemory::default();
        let clear = clear_report(at(0));
        assert!(matches!(
            memory.plan(&clear, &[], NONE_STORED, at(0)),
            WritePlan::Nothing
        ));
        let resolved = [Arc::new(incident(
            "api-crashloop",
            Some(Phase::Resolved),
            Some(at(-60)),
        ))];
        assert!(matches!(
            memory.plan(&clear, &resolved, NONE_STORED, at(0)),
            WritePlan::Nothing
        ));
    }

    #[test]
    fn a_signal_back_within_the_reopen_window_reopens_once() {
        let mut memory = WriteMemory::default();
        let resolved = Arc::new(incident(
            "api-crashloop",
            Some(Phase::Resolved),
            Some(at(60)),
        ));
        let same_key = [resolved.clone()];
        let stored = |_: &str| Some(resolved.clone());
        let back = crash_report(at(120), &["api-1"], 1);
        let reopened = patch(memory.plan(&back, &same_key, stored, at(120)));
        assert!(reopened.reopen);
        assert_eq!(reopened.name, "api-crashloop");
        assert_eq!(reopened.detection.reopens, 1);
        assert_eq!(reopened.detection.last_reopened_at, Some(Time(at(120))));
        memory.wrote(reopened, at(120));
        // The lifecycle has not acted on it yet: counted, not reopened again.
        let again = crash_report(at(121), &["api-2"], 1);
        let counted = patch(memory.plan(&again, &same_key, stored, at(121)));
        assert!(!counted.reopen);
        assert_eq!(counted.detection.reopens, 1);
        // Past the window, a new incident links to the old one.
        let mut fresh = WriteMemory::default();
        let late = crash_report(at(60 + 1801), &["api-1"], 1);
        let WritePlan::Create(created) = fresh.plan(&late, &same_key, stored, at(60 + 1801)) else {
            panic!("past the window a new incident opens");
        };
        assert_eq!(created.name_any(), "api-crashloop-2");
        assert_eq!(
            created.spec.source.previous_incident.as_deref(),
            Some("api-crashloop")
        );
    }

    #[test]
    fn an_incident_is_open_uncleared_until_a_clear_is_written() {
        let mut memory = after_first_write();
        let open = [Arc::new(incident("api-crashloop", None, None))];
        assert!(memory.open_uncleared("hg", &open));
        let cleared = patch(memory.plan(&clear_report(at(3)), &open, NONE_STORED, at(3)));
        memory.wrote(cleared, at(3));
        assert!(
            !memory.open_uncleared("hg", &open),
            "the store lags, the memory does not"
        );
        let resolved = [Arc::new(incident(
            "api-crashloop",
            Some(Phase::Resolved),
            Some(at(9)),
        ))];
        assert!(!WriteMemory::default().open_uncleared("hg", &resolved));
    }

    /// A memory that wrote the incidents `names` of namespace "shop".
    fn memory(names: &[&str]) -> WriteMemory {
        let mut memory = WriteMemory::default();
        let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        for name in names {
            let id = ("shop".to_owned(), (*name).to_owned());
            memory
                .written
                .insert(id.clone(), DetectionStatus::default());
            memory.affected.insert(id.clone(), BTreeSet::new());
            memory.last_write.insert(id, (at, UPDATE_EVERY));
            memory.created.insert(
                ("shop".to_owned(), format!("key-{name}")),
                (*name).to_owned(),
            );
        }
        memory
    }

    #[test]
    fn forgets_incidents_that_are_gone() {
        let mut memory = memory(&["kept", "gone"]);
        assert_eq!(memory.remembered(), 8);
        let kept = ("shop".to_owned(), "kept".to_owned());
        memory.prune(&BTreeSet::from([kept.clone()]));
        assert_eq!(memory.remembered(), 4, "only what is kept remains");
        assert!(memory.written.contains_key(&kept));
        assert_eq!(
            memory.created.values().collect::<Vec<_>>(),
            ["kept"],
            "a create pointing at a gone incident is forgotten too"
        );
        memory.forget(&kept);
        assert_eq!(memory.remembered(), 0, "a deleted incident leaves nothing");
    }
}
