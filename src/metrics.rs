//! Prometheus metrics, served on `/metrics`.

use std::{sync::OnceLock, time::Instant};

use kube::runtime::reflector::Store;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::crd::{Incident, Phase};

/// Which controller a reconcile metric belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

/// A failed reconcile, by controller and error reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: String,
}

/// A notification attempt, by channel kind, the moment it told of and how it went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub kind: &'static str,
    pub event: String,
    pub result: &'static str,
}

/// A channel kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// A page, by the escalation step (0-based) and role paged.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PageLabels {
    pub step: i32,
    pub role: String,
}

/// A probe check, by probe kind and result (passed, failed, misconfigured).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

/// One probe.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeKeyLabels {
    pub namespace: String,
    pub policy: String,
    pub probe: String,
}

/// A severity.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabels {
    pub severity: String,
}

/// An SLA deadline that passed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlaLabels {
    pub severity: String,
    pub deadline: &'static str,
}

/// An incident opened, by source (Manual, Detected) and rule.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpenedLabels {
    pub source: &'static str,
    pub rule: String,
}

/// Open incidents by severity, type and phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpenLabels {
    pub severity: String,
    pub r#type: String,
    pub phase: &'static str,
}

/// A remediation step that ended, by action and result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub action: &'static str,
    pub result: &'static str,
}

/// A policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub namespace: String,
    pub policy: String,
}

/// A remediation action.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub sla_breaches: Family<SlaLabels, Counter>,
    pub detection_latency: Histogram,
    pub incidents_opened: Family<OpenedLabels, Counter>,
    open_incidents: Family<OpenLabels, Gauge>,
    pub steps: Family<StepLabels, Counter>,
    pub step_duration: Family<ActionLabels, Histogram>,
    pub time_to_mitigate: Histogram,
    pub time_to_resolve: Histogram,
    pub ladder_exhaustions: Counter,
    circuit_breakers: Family<PolicyLabels, Gauge>,
    /// Writes dropped because this replica was no longer the current leader.
    pub fenced_writes: Counter,
    /// What the detector holds in memory about workloads and incidents;
    /// back to where it was once they are gone.
    pub detector_entries: Gauge,
    /// Notification attempts: sent, failed for good, or to be retried.
    pub notifications: Family<NotificationLabels, Counter>,
    /// From a message recorded to its receiver accepting it, by channel kind.
    pub delivery_latency: Family<KindLabels, Histogram>,
    /// Pages recorded, by escalation step and role.
    pub pages: Family<PageLabels, Counter>,
    /// From detection to acknowledgement, by severity.
    pub time_to_acknowledge: Family<SeverityLabels, Histogram>,
    /// Probe checks, by kind and result.
    pub probe_checks: Family<ProbeLabels, Counter>,
    /// How long a probe check took, by kind.
    pub probe_duration: Family<KindLabels, Histogram>,
    /// 1 while a probe is failing, 0 while it runs and is not.
    pub probe_failing: Family<ProbeKeyLabels, Gauge>,
    /// Where the open-incident gauges are counted from at scrape time.
    pub incident_store: OnceLock<Store<Incident>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("healing_guard");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            });
        let sla_breaches = Family::<SlaLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took",
            reconcile_duration.clone(),
        );
        registry.register(
            "sla_breaches",
            "Incident deadlines that passed",
            sla_breaches.clone(),
        );
        let detection_latency = Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]);
        registry.register(
            "detection_latency_seconds",
            "From the detector seeing a failure to the Incident being created",
            detection_latency.clone(),
        );
        let steps = Family::<StepLabels, Counter>::default();
        registry.register(
            "remediation_steps",
            "Remediation steps ended, by action and result",
            steps.clone(),
        );
        let step_duration = Family::<ActionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0])
        });
        registry.register(
            "remediation_step_duration_seconds",
            "From a step being applied to its verdict",
            step_duration.clone(),
        );
        let minutes = || {
            Histogram::new([
                10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 14400.0,
            ])
        };
        let time_to_mitigate = minutes();
        registry.register(
            "time_to_mitigate_seconds",
            "From detection to the step that contained the impact",
            time_to_mitigate.clone(),
        );
        let time_to_resolve = minutes();
        registry.register(
            "time_to_resolve_seconds",
            "From detection to resolution",
            time_to_resolve.clone(),
        );
        let ladder_exhaustions = Counter::default();
        registry.register(
            "ladder_exhaustions",
            "Incidents escalated because every step was tried",
            ladder_exhaustions.clone(),
        );
        let circuit_breakers = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "circuit_breaker_open",
            "1 while a policy's circuit breaker is open",
            circuit_breakers.clone(),
        );
        let fenced_writes = Counter::default();
        registry.register(
            "fenced_writes",
            "Writes dropped because this replica was no longer the current leader",
            fenced_writes.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification attempts by event and result (sent, failed, retry)",
            notifications.clone(),
        );
        let delivery_latency = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
        });
        registry.register(
            "notification_delivery_seconds",
            "From a message recorded to its receiver accepting it, by channel kind",
            delivery_latency.clone(),
        );
        let pages = Family::<PageLabels, Counter>::default();
        registry.register(
            "escalation_pages",
            "Pages recorded, by escalation step (0 is the first) and role",
            pages.clone(),
        );
        let time_to_acknowledge =
            Family::<SeverityLabels, Histogram>::new_with_constructor(minutes);
        registry.register(
            "time_to_acknowledge_seconds",
            "From detection to acknowledgement, by severity",
            time_to_acknowledge.clone(),
        );
        let probe_checks = Family::<ProbeLabels, Counter>::default();
        registry.register(
            "probe_checks",
            "Probe checks by probe kind and result (passed, failed, misconfigured)",
            probe_checks.clone(),
        );
        let probe_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "probe_duration_seconds",
            "How long a probe check took, by probe kind",
            probe_duration.clone(),
        );
        let probe_failing = Family::<ProbeKeyLabels, Gauge>::default();
        registry.register(
            "probe_failing",
            "1 while a probe is failing (past its failure threshold), 0 while it runs and is not",
            probe_failing.clone(),
        );
        let detector_entries = Gauge::default();
        registry.register(
            "detector_entries",
            "Entries the detector keeps about guarded workloads and their incidents",
            detector_entries.clone(),
        );
        let incidents_opened = Family::<OpenedLabels, Counter>::default();
        registry.register(
            "incidents_opened",
            "Incidents opened, by source and rule",
            incidents_opened.clone(),
        );
        let open_incidents = Family::<OpenLabels, Gauge>::default();
        registry.register(
            "open_incidents",
            "Incidents not yet resolved or declined",
            open_incidents.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            sla_breaches,
            detection_latency,
            incidents_opened,
            open_incidents,
            steps,
            step_duration,
            time_to_mitigate,
            time_to_resolve,
            ladder_exhaustions,
            circuit_breakers,
            fenced_writes,
            detector_entries,
            notifications,
            delivery_latency,
            pages,
            time_to_acknowledge,
            probe_checks,
            probe_duration,
            probe_failing,
            incident_store: OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn count_and_time(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            histogram: self
                .reconcile_duration
                .get_or_create(&ControllerLabels { controller })
                .clone(),
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn count_notification(&self, kind: &'static str, event: &str, result: &'static str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                kind,
                event: event.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts a probe check (and times it, when it ran).
    pub fn count_probe_check(
        &self,
        kind: &'static str,
        result: &'static str,
        seconds: Option<f64>,
    ) {
        self.probe_checks
            .get_or_create(&ProbeLabels { kind, result })
            .inc();
        if let Some(seconds) = seconds {
            self.probe_duration
                .get_or_create(&KindLabels { kind })
                .observe(seconds);
        }
    }

    pub fn count_error(&self, controller: &'static str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        if let Some(store) = self.incident_store.get() {
            self.count_open_incidents(&store.state());
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Metrics {
    /// Records whether a policy's circuit breaker is open.
    pub fn set_circuit_breaker(&self, namespace: &str, policy: &str, open: bool) {
        let labels = PolicyLabels {
            namespace: namespace.to_owned(),
            policy: policy.to_owned(),
        };
        self.circuit_breakers
            .get_or_create(&labels)
            .set(i64::from(open));
    }

    /// Sets the open-incident gauges from the incidents as they are now.
    pub fn count_open_incidents(&self, incidents: &[std::sync::Arc<Incident>]) {
        self.open_incidents.clear();
        for incident in incidents {
            let phase = incident
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(Phase::Triggered);
            if phase.is_closed() {
                continue;
            }
            let labels = OpenLabels {
                severity: incident.spec.severity.to_string(),
                r#type: incident.spec.incident_type.to_string(),
                phase: phase.as_str(),
            };
            self.open_incidents.get_or_create(&labels).inc();
        }
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_durations() {
        let metrics = Metrics::default();
        drop(metrics.count_and_time("incident"));
        metrics.count_error("incident", "kube");
        let text = metrics.render().unwrap();
        assert!(
            text.contains("healing_guard_reconciles_total{controller=\"incident\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "healing_guard_reconcile_errors_total{controller=\"incident\",reason=\"kube\"} 1"
        ));
        assert!(
            text.contains(
                "healing_guard_reconcile_duration_seconds_count{controller=\"incident\"} 1"
            )
        );
    }
}
