//! What the detector has to say about one target and symptom: a report,
//! queued until written, folded with later ones for the same key. Pure.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::dedup;
use crate::crd::{IncidentType, Severity, Symptom, WorkloadRef};

/// What the detector has to say about one target and symptom.
#[derive(Clone, Debug)]
pub struct Report {
    pub namespace: String,
    pub target: WorkloadRef,
    pub symptom: Symptom,
    /// For `ProbeFailing`, which probe.
    pub probe: Option<String>,
    pub policy: String,
    pub rule: String,
    pub severity: Severity,
    pub incident_type: IncidentType,
    pub reopen_window: Duration,
    /// New observations since the last report.
    pub occurrences: i64,
    /// Pods that show the symptom now.
    pub pods: Vec<String>,
    pub detail: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// The signal has stopped.
    pub cleared: bool,
    /// When the detector first saw this signal, for the latency metric.
    pub noticed: Timestamp,
}

impl Report {
    /// That a signal (a symptom on a target; for a probe or an alert, which
    /// one) stopped. A report that it goes on is this with the rule's
    /// severity, type and counts filled in.
    pub fn clear(
        (namespace, target): (String, WorkloadRef),
        (symptom, probe): (Symptom, Option<String>),
        policy: String,
        reopen_window: Duration,
        now: Timestamp,
    ) -> Report {
        Report {
            namespace,
            target,
            symptom,
            probe,
            policy,
            rule: String::new(),
            severity: Severity::P3,
            incident_type: IncidentType::ServiceOutage,
            reopen_window,
            occurrences: 0,
            pods: Vec::new(),
            detail: String::new(),
            first_seen: now,
            last_seen: now,
            cleared: true,
            noticed: now,
        }
    }

    pub fn key(&self) -> String {
        dedup::dedup_key(
            self.target.kind,
            &self.target.name,
            self.symptom,
            self.probe.as_deref(),
        )
    }

    /// Folds a newer report for the same key into this one.
    pub fn absorb(&mut self, newer: Report) {
        let occurrences = self.occurrences + newer.occurrences;
        let first_seen = self.first_seen.min(newer.first_seen);
        let noticed = self.noticed.min(newer.noticed);
        *self = Report {
            occurrences,
            first_seen,
            noticed,
            ..newer
        };
    }
}
