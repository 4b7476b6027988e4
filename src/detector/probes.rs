//! Probe results as detector reports: a probe that starts failing opens (or
//! updates) the incident of the rule that names it, each further failure is
//! counted, and a probe healthy again clears it. Pure.

use k8s_openapi::jiff::Timestamp;

use super::report::Report;
use crate::{
    crd::{RemediationPolicy, Symptom},
    signals::{prober::ProbeReport, tracker::Change},
};

/// The report a probe result makes, if any. `open` says whether an
/// incident of this probe is open with its signal not yet cleared (after a
/// restart the probe starts afresh, healthy: that incident must still be
/// cleared).
pub fn report_for(
    policy: &RemediationPolicy,
    result: &ProbeReport,
    open: bool,
    now: Timestamp,
) -> Option<Report> {
    let (namespace, policy_name, probe_name) = &result.key;
    let rule = policy.spec.rules.iter().find(|rule| {
        rule.when.symptom == Symptom::ProbeFailing
            && rule.when.probe.as_deref() == Some(probe_name.as_str())
    });
    let cleared = match result.change {
        Change::Failed | Change::StillFailing => false,
        Change::Recovered => true,
        Change::None if open && result.tracker.healthy(result.probe.success_threshold) => true,
        Change::None => return None,
    };
    let base = Report::clear(
        (namespace.clone(), result.probe.target.clone()),
        (Symptom::ProbeFailing, Some(probe_name.clone())),
        policy_name.clone(),
        policy.spec.detection.reopen_window.as_std(),
        now,
    );
    if cleared {
        return Some(base);
    }
    // A probe no rule names is for verification only.
    let rule = rule?;
    let last = result.tracker.last.as_ref();
    Some(Report {
        rule: rule.name.clone(),
        severity: rule.severity,
        incident_type: rule.incident_type,
        occurrences: 1,
        detail: format!(
            "probe {probe_name} failing: {}",
            last.map_or("", |l| l.detail.as_str())
        ),
        first_seen: result.tracker.failing_since.unwrap_or(now),
        last_seen: last.map_or(now, |l| l.at),
        cleared: false,
        ..base
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crd::{IncidentType, Severity};
    use crate::signals::tracker::{Outcome, Tracker};

    fn policy() -> RemediationPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
            "metadata": {"name": "workers", "namespace": "hg"},
            "spec": {
                "targets": [{"kind": "Deployment", "names": ["webhook-worker"]}],
                "probes": [
                    {"name": "queue", "target": {"kind": "Deployment", "name": "webhook-worker"},
                     "redis": {"secretRef": {"name": "redis"}, "list": "webhook_queue", "above": 1000}},
                    {"name": "health", "target": {"kind": "Deployment", "name": "webhook-worker"},
                     "http": {"url": "http://x/health"}}
                ],
                "rules": [{"name": "backlog", "when": {"symptom": "ProbeFailing", "probe": "queue"},
                           "severity": "P1", "type": "IntegrationFailure",
                           "actions": [{"action": "scale", "scale": {"replicas": 5}}]}]
            }
        }))
        .unwrap()
    }

    fn result(
        policy: &RemediationPolicy,
        probe: &str,
        change: Change,
        failing: bool,
    ) -> ProbeReport {
        let spec = policy.spec.probes.iter().find(|p| p.name == probe).unwrap();
        let at: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        ProbeReport {
            key: ("hg".into(), "workers".into(), probe.into()),
            probe: Arc::new(spec.clone()),
            change,
            tracker: Tracker {
                failing,
                failures: if failing { 3 } else { 0 },
                passes: if failing { 0 } else { 2 },
                failing_since: failing.then(|| "2026-01-01T00:00:30Z".parse().unwrap()),
                passing_since: None,
                last: Some(Outcome {
                    passed: !failing,
                    inconclusive: false,
                    value: Some(1500.0),
                    detail: "webhook_queue has 1500 entries (above 1000)".into(),
                    at,
                }),
            },
        }
    }

    #[test]
    fn a_failing_probe_opens_its_rules_incident_and_a_healthy_one_clears_it() {
        let policy = policy();
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let failed = report_for(
            &policy,
            &result(&policy, "queue", Change::Failed, true),
            false,
            now,
        )
        .unwrap();
        assert!(!failed.cleared);
        assert_eq!(
            (failed.rule.as_str(), failed.severity, failed.incident_type),
            ("backlog", Severity::P1, IncidentType::IntegrationFailure)
        );
        assert_eq!(failed.key(), "Deployment/webhook-worker/ProbeFailing/queue");
        assert_eq!(
            failed.first_seen,
            "2026-01-01T00:00:30Z".parse::<Timestamp>().unwrap()
        );
        assert!(failed.detail.contains("1500 entries"), "{}", failed.detail);

        let recovered = report_for(
            &policy,
            &result(&policy, "queue", Change::Recovered, false),
            true,
            now,
        )
        .unwrap();
        assert!(recovered.cleared);
        // After a restart the tracker starts healthy: an open incident is still cleared.
        let after_restart = report_for(
            &policy,
            &result(&policy, "queue", Change::None, false),
            true,
            now,
        )
        .unwrap();
        assert!(after_restart.cleared);
        assert!(
            report_for(
                &policy,
                &result(&policy, "queue", Change::None, false),
                false,
                now
            )
            .is_none()
        );
        // A probe no rule names opens nothing.
        assert!(
            report_for(
                &policy,
                &result(&policy, "health", Change::Failed, true),
                false,
                now
            )
            .is_none()
        );
    }
}
