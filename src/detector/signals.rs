//! The detector's signals beyond pod status: probe results from the
//! prober, and Alertmanager's deliveries, turned into reports (see
//! `probes` and `alerts` for what each result means).

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tracing::info;

use super::{Detector, alerts::NotRecorded, writer::Written};
use crate::{
    crd::RemediationPolicy,
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
            .sensing
            .alert_reports(notification, &policies, Timestamp::now());
        let moved = reports.len();
        let mut failed = Vec::new();
        for report in reports {
            let key = (report.namespace.clone(), report.key());
            let report = self.sensing.take_merged(&key, report);
            match self.writer.write(report.clone()).await {
                Ok(Written::Done) => {}
                // Counted in the next write of an incident that exists.
                Ok(Written::Deferred) => self.sensing.queue(key, report),
                Err(error) => {
                    failed.push(format!("{}: {error}", key.1));
                    // What it carried from the queue must not be lost;
                    // Alertmanager's retry finds the alert already seen.
                    self.sensing.queue(key, report);
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
        let (namespace, policy, probe) = &result.key;
        let Some(policy) = self
            .watches
            .policies
            .store()
            .get(&kube::runtime::reflector::ObjectRef::new(policy).within(namespace))
        else {
            return;
        };
        let writer = &self.writer;
        let queued = self.sensing.probe_result(
            &policy,
            result,
            |namespace, key| writer.open_uncleared(namespace, key),
            Timestamp::now(),
        );
        if !queued {
            return;
        }
        match result.change {
            ProbeChange::Failed => {
                info!(%probe, policy = %result.key.1, %namespace, "probe failing");
            }
            ProbeChange::Recovered => {
                info!(%probe, policy = %result.key.1, %namespace, "probe healthy again");
            }
            ProbeChange::StillFailing | ProbeChange::None => {}
        }
    }
}
