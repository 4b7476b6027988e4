//! Alertmanager deliveries as detector reports. An alert counts once per
//! firing (its fingerprint and start): Alertmanager's resends and an HA
//! pair's second copy change nothing. A signal clears when none of its
//! alerts is firing any more; the incident still resolves by verification.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio::sync::oneshot;

use super::{dedup, report::Report};
use crate::{
    crd::{RemediationPolicy, Symptom},
    signals::alerts::{self, Notification},
};

/// How many firings of one signal are remembered, to recognise repeats.
const REMEMBERED: usize = 256;

/// Most alerts remembered firing per signal: a delivery of a million
/// fingerprints costs no more than this.
const MAX_FIRING: usize = 1000;

/// A delivery from the webhook, answered once it is recorded.
pub struct Intake {
    pub notification: Notification,
    /// How many signals it moved, or why it could not be recorded.
    pub reply: oneshot::Sender<Result<usize, NotRecorded>>,
}

/// Why a delivery was not recorded; Alertmanager sends it again.
#[derive(Debug, thiserror::Error)]
pub enum NotRecorded {
    #[error("this replica is not the leader")]
    NotLeader,
    /// Each signal whose incident could not be written, with why.
    #[error("{}", .0.join("; "))]
    Writes(Vec<String>),
    #[error("the detector is not running")]
    DetectorDown,
    #[error("the detector stopped")]
    DetectorStopped,
}

/// What the detector remembers of alerts, by namespace and dedup key.
#[derive(Default)]
pub struct AlertMemory {
    /// Fingerprints firing now.
    firing: HashMap<(String, String), BTreeSet<String>>,
    /// Firings seen (fingerprint, start), oldest first.
    seen: HashMap<(String, String), VecDeque<(String, String)>>,
}

impl AlertMemory {
    /// The reports a delivery makes for `policies` (valid ones).
    pub fn reports(
        &mut self,
        notification: &Notification,
        policies: &[Arc<RemediationPolicy>],
        now: Timestamp,
    ) -> Vec<Report> {
        let mut reports = Vec::new();
        for policy in policies {
            let Some(namespace) = policy.namespace() else {
                continue;
            };
            for signal in &policy.spec.alerts {
                let matching: Vec<&alerts::Alert> = notification
                    .alerts
                    .iter()
                    .filter(|alert| alerts::matches(signal, &namespace, alert))
                    .collect();
                if matching.is_empty() {
                    continue;
                }
                let key = dedup::dedup_key(
                    signal.target.kind,
                    &signal.target.name,
                    Symptom::AlertFiring,
                    Some(&signal.name),
                );
                let memory = (namespace.clone(), key);
                let seen = self.seen.entry(memory.clone()).or_default();
                let firing = self.firing.entry(memory.clone()).or_default();
                let mut new = Vec::new();
                let mut resolved = false;
                for alert in &matching {
                    let identity = alert.identity();
                    if alert.firing() {
                        // Past the bound the signal fires all the same.
                        if firing.len() < MAX_FIRING {
                            firing.insert(identity.0.clone());
                        }
                        if !seen.contains(&identity) {
                            seen.push_back(identity);
                            new.push(*alert);
                        }
                    } else {
                        firing.remove(&identity.0);
                        resolved = true;
                    }
                }
                while seen.len() > REMEMBERED {
                    seen.pop_front();
                }
                let rule = policy.spec.rules.iter().find(|rule| {
                    rule.when.symptom == Symptom::AlertFiring
                        && rule.when.alert.as_deref() == Some(signal.name.as_str())
                });
                let base = Report::clear(
                    (namespace.clone(), signal.target.clone()),
                    (Symptom::AlertFiring, Some(signal.name.clone())),
                    policy.name_any(),
                    policy.spec.detection.reopen_window.as_std(),
                    now,
                );
                if let (Some(rule), Some(first)) = (rule, new.first()) {
                    let started = new
                        .iter()
                        .filter_map(|a| a.starts_at.parse::<Timestamp>().ok())
                        .min()
                        .unwrap_or(now);
                    reports.push(Report {
                        rule: rule.name.clone(),
                        severity: rule.severity,
                        incident_type: rule.incident_type,
                        occurrences: i64::try_from(new.len()).unwrap_or(i64::MAX),
                        detail: format!("alert {}", first.describe()),
                        first_seen: started.min(now),
                        cleared: false,
                        ..base
                    });
                } else if resolved && firing.is_empty() {
                    reports.push(base);
                }
            }
        }
        reports
    }

    /// Forgets signals no policy has any more.
    pub fn retain(&mut self, keep: impl Fn(&(String, String)) -> bool) {
        self.firing.retain(|key, _| keep(key));
        self.seen.retain(|key, _| keep(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Severity;
    use crate::signals::alerts::parse;

    fn policy() -> Arc<RemediationPolicy> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
                "metadata": {"name": "api", "namespace": "hg"},
                "spec": {
                    "targets": [{"kind": "Deployment", "names": ["healing-guard"]}],
                    "alerts": [{"name": "api-down", "target": {"kind": "Deployment", "name": "healing-guard"},
                                "match": {"alertname": "HealingGuardDown"}}],
                    "rules": [{"name": "down", "when": {"symptom": "AlertFiring", "alert": "api-down"},
                               "severity": "P0", "type": "ServiceOutage", "actions": [{"action": "restart"}]}]
                }
            }))
            .unwrap(),
        )
    }

    fn delivery(status: &str, instances: &[(&str, &str)]) -> Notification {
        let alerts: Vec<serde_json::Value> = instances
            .iter()
            .map(|(fingerprint, start)| {
                serde_json::json!({"status": status, "labels": {"alertname": "HealingGuardDown", "instance": fingerprint, "namespace": "hg"},
                                   "annotations": {"summary": "down"}, "startsAt": start, "fingerprint": fingerprint})
            })
            .collect();
        let body = serde_json::json!({"version": "4", "status": status, "alerts": alerts});
        parse(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn each_firing_counts_once_and_the_signal_clears_when_none_fires() {
        let mut memory = AlertMemory::default();
        let policies = [policy()];
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let first = memory.reports(
            &delivery("firing", &[("a", "2026-01-01T00:00:00Z")]),
            &policies,
            now,
        );
        assert_eq!(first.len(), 1);
        assert_eq!(
            (
                first[0].rule.as_str(),
                first[0].severity,
                first[0].occurrences,
                first[0].cleared
            ),
            ("down", Severity::P0, 1, false)
        );
        assert_eq!(
            first[0].key(),
            "Deployment/healing-guard/AlertFiring/api-down"
        );
        assert_eq!(
            first[0].first_seen,
            "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap()
        );
        // Resent, and the HA twin: nothing new.
        let again = delivery("firing", &[("a", "2026-01-01T00:00:00Z")]);
        assert!(memory.reports(&again, &policies, now).is_empty());
        assert!(memory.reports(&again, &policies, now).is_empty());
        // A second instance fires: counted.
        let both = delivery(
            "firing",
            &[("a", "2026-01-01T00:00:00Z"), ("b", "2026-01-01T00:00:30Z")],
        );
        assert_eq!(memory.reports(&both, &policies, now)[0].occurrences, 1);
        // One resolves: the other still fires, nothing clears.
        assert!(
            memory
                .reports(
                    &delivery("resolved", &[("a", "2026-01-01T00:00:00Z")]),
                    &policies,
                    now
                )
                .is_empty()
        );
        let cleared = memory.reports(
            &delivery("resolved", &[("b", "2026-01-01T00:00:30Z")]),
            &policies,
            now,
        );
        assert!(cleared.len() == 1 && cleared[0].cleared);
        // Firing again later is a new firing.
        let later = memory.reports(
            &delivery("firing", &[("a", "2026-01-01T01:00:00Z")]),
            &policies,
            now,
        );
        assert!(later.len() == 1 && !later[0].cleared);
        // Another namespace's alert is not this policy's.
        let mut foreign = delivery("firing", &[("c", "2026-01-01T02:00:00Z")]);
        foreign.alerts[0]
            .labels
            .insert("namespace".into(), "elsewhere".into());
        assert!(memory.reports(&foreign, &policies, now).is_empty());
    }
}
