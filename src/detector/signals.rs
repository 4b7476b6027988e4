//! The detector's signals beyond pod status: probe results from the
//! prober, and Alertmanager's deliveries, turned into reports (see
//! `probes` and `alerts` for what each result means).

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tracing::info;

use super::{Detector, alerts::NotRecorded, dedup, probes, writer::Written};
use crate::{
    crd::{RemediationPolicy, Symptom},
    signals::{prober::ProbeReport, tracker::Change as ProbeChange},
};

impl Detector {
    /// An Alertmanager delivery: written at once (not batched), so the
    /// webhook answers 200 only once the incident is in the API.
    pub(super) async fn alerts_delivered(
        &mut self,
        notification: &crate::signals::alerts::Notification,
    ) -> Result<usize, NotRecorded> {
        self.ctx.may_write().map_err(|_| NotRecorded::NotLeader)?;
        let policies: Vec<Arc<RemediationPolicy>> = self
            .valid_policies()
            .into_iter()
            .filter(|p| !p.spec.alerts.is_empty())
            .collect();
        let reports = self
            .alert_memory
            .reports(notification, &policies, Timestamp::now());
        let moved = reports.len();
        let mut failed = Vec::new();
        for report in reports {
            let key = (report.namespace.clone(), report.key());
            let report = self.take_merged(&key, report);
            match self.writer.write(report.clone()).await {
                Ok(Written::Done) => {}
                // Counted in the next write of an incident that exists.
                Ok(Written::Deferred) => self.queue(key, report),
                Err(error) => {
                    failed.push(format!("{}: {error}", key.1));
                    // What it carried from the queue must not be lost;
                    // Alertmanager's retry finds the alert already seen.
                    self.queue(key, report);
                }
            }
        }
        if failed.is_empty() {
            info!(
                alerts = notification.alerts.len(),
                signals = moved,
                "alerts recorded"
            );
            Ok(moved)
        } else {
            Err(NotRecorded::Writes(failed))
        }
    }

    /// A probe's result: opens, counts or clears its incident.
    pub(super) fn probe_result(&mut self, result: &ProbeReport) {
        let (namespace, policy, _) = &result.key;
        let Some(policy) = self
            .watches
            .policies
            .store()
            .get(&kube::runtime::reflector::ObjectRef::new(policy).within(namespace))
        else {
            return;
        };
        let key = dedup::dedup_key(
            result.probe.target.kind,
            &result.probe.target.name,
            Symptom::ProbeFailing,
            Some(&result.key.2),
        );
        let pending_key = (namespace.clone(), key.clone());
        let open = !self.writer.open_uncleared(namespace, &key).is_empty()
            || self.pending.get(&pending_key).is_some_and(|r| !r.cleared);
        if let Some(report) = probes::report_for(&policy, result, open, Timestamp::now()) {
            if !report.cleared && result.change == ProbeChange::Failed {
                info!(probe = %result.key.2, policy = %result.key.1, %namespace, "probe failing");
                self.urgent = true;
            }
            if report.cleared && result.change == ProbeChange::Recovered {
                info!(probe = %result.key.2, policy = %result.key.1, %namespace, "probe healthy again");
            }
            self.queue(pending_key, report);
        }
    }
}
