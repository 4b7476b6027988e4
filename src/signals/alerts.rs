//! Alertmanager's webhook (payload version 4), read and matched against the
//! policies' `alerts`. Pure: the server parses, the detector matches and
//! writes, and answers only once the incident is written.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::crd::AlertSignal;

/// The largest body the receiver reads.
pub const MAX_BODY: usize = 1024 * 1024;

/// The longest an alert's description gets, in characters.
pub const MAX_DESCRIPTION: usize = 256;

/// One webhook delivery.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Notification {
    pub version: String,
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    pub alerts: Vec<Alert>,
}

/// One alert in it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    pub fn firing(&self) -> bool {
        self.status == "firing"
    }

    /// What Alertmanager resends and an HA pair sends twice: the same
    /// alert (fingerprint) since the same start.
    pub fn identity(&self) -> (String, String) {
        let fingerprint = if self.fingerprint.is_empty() {
            // Alertmanager always sets it; without one, the labels are the alert.
            format!("{:?}", self.labels)
        } else {
            self.fingerprint.clone()
        };
        // Compared at millisecond precision: Alertmanager's API shows the
        // start in milliseconds, the webhook in nanoseconds.
        let start = self
            .starts_at
            .parse::<k8s_openapi::jiff::Timestamp>()
            .ok()
            .and_then(|t| k8s_openapi::jiff::Timestamp::from_millisecond(t.as_millisecond()).ok())
            .map_or_else(|| self.starts_at.clone(), |t| t.to_string());
        (fingerprint, start)
    }

    /// In words, for the incident: its summary, else its name; clipped to
    /// [`MAX_DESCRIPTION`] characters, since whoever writes alert rules
    /// writes it and it reaches the Incident's status and messages.
    pub fn describe(&self) -> String {
        let name = self.labels.get("alertname").map_or("alert", String::as_str);
        let described = match self
            .annotations
            .get("summary")
            .or_else(|| self.annotations.get("description"))
        {
            Some(summary) => format!("{name}: {summary}"),
            None => name.to_owned(),
        };
        crate::communication::payloads::clip(&described, MAX_DESCRIPTION)
    }
}

/// Why a delivery is refused.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("not an Alertmanager webhook payload: {0}")]
    NotAPayload(#[from] serde_json::Error),
    #[error("payload version {0:?}: only version 4 is understood")]
    Version(String),
    #[error("alerts[{index}].status {status:?}: firing or resolved")]
    AlertStatus { index: usize, status: String },
}

/// Reads a delivery; the reason it is refused otherwise.
pub fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    let notification: Notification = serde_json::from_slice(body)?;
    if notification.version != "4" {
        return Err(PayloadError::Version(notification.version));
    }
    if let Some((index, alert)) = notification
        .alerts
        .iter()
        .enumerate()
        .find(|(_, alert)| !matches!(alert.status.as_str(), "firing" | "resolved"))
    {
        return Err(PayloadError::AlertStatus {
            index,
            status: alert.status.clone(),
        });
    }
    Ok(notification)
}

/// Whether `alert` is one of `signal`'s, for a policy in `namespace`: every
/// matcher's label has its value, and the alert names this namespace (an
/// alert about another team's namespace never acts here); one that names
/// none only where the signal takes cluster-wide alerts.
pub fn matches(signal: &AlertSignal, namespace: &str, alert: &Alert) -> bool {
    // An alert names its namespace, or the policy takes cluster-wide ones.
    alert
        .labels
        .get("namespace")
        .map_or(signal.cluster_wide, |labelled| labelled == namespace)
        && signal
            .matchers
            .iter()
            .all(|(label, value)| alert.labels.get(label) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELIVERY: &str = r#"{
      "version": "4", "groupKey": "{}:{alertname=\"HealingGuardDown\"}", "truncatedAlerts": 0,
      "status": "firing", "receiver": "healing-guard-operator",
      "groupLabels": {"alertname": "HealingGuardDown"},
      "commonLabels": {"alertname": "HealingGuardDown", "job": "healing-guard"},
      "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
      "alerts": [{
        "status": "firing",
        "labels": {"alertname": "HealingGuardDown", "job": "healing-guard", "namespace": "healing-guard", "severity": "P0"},
        "annotations": {"summary": "The healing-guard API is down"},
        "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph", "fingerprint": "4e8c2a1f7d6b9e03"
      }]
    }"#;

    fn signal() -> AlertSignal {
        serde_yaml::from_str(
            "name: api-down\ntarget: {kind: Deployment, name: healing-guard}\nmatch: {alertname: HealingGuardDown}\n",
        )
        .unwrap()
    }

    #[test]
    fn a_delivery_is_read_and_matched_within_its_namespace() {
        let notification = parse(DELIVERY.as_bytes()).unwrap();
        let alert = &notification.alerts[0];
        assert!(alert.firing());
        assert_eq!(
            alert.identity(),
            (
                "4e8c2a1f7d6b9e03".to_owned(),
                "2026-01-01T00:00:00Z".to_owned()
            )
        );
        // The same start read from Alertmanager's API (milliseconds) and
        // from a webhook (nanoseconds) is the same alert.
        let mut precise = alert.clone();
        precise.starts_at = "2026-01-01T00:00:00.123456789Z".into();
        let mut coarse = alert.clone();
        coarse.starts_at = "2026-01-01T00:00:00.123Z".into();
        assert_eq!(precise.identity(), coarse.identity());
        assert_eq!(
            alert.describe(),
            "HealingGuardDown: The healing-guard API is down"
        );
        assert!(matches(&signal(), "healing-guard", alert));
        assert!(
            !matches(&signal(), "other-team", alert),
            "another namespace's alert"
        );
        let mut other = alert.clone();
        other.labels.insert("alertname".into(), "Other".into());
        assert!(!matches(&signal(), "healing-guard", &other));
        // An alert without a namespace acts only where a policy opts in.
        let mut nowhere = alert.clone();
        nowhere.labels.remove("namespace");
        assert!(!matches(&signal(), "healing-guard", &nowhere));
        let mut everywhere = signal();
        everywhere.cluster_wide = true;
        assert!(matches(&everywhere, "healing-guard", &nowhere));
        assert!(matches(&everywhere, "other-team", &nowhere));
        assert!(!matches(&everywhere, "other-team", alert));
    }

    #[test]
    fn malformed_deliveries_are_refused_with_the_reason() {
        assert!(
            parse(b"{")
                .unwrap_err()
                .to_string()
                .contains("not an Alertmanager webhook payload")
        );
        let v3 = DELIVERY.replace("\"version\": \"4\"", "\"version\": \"3\"");
        assert!(
            parse(v3.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("only version 4")
        );
        let odd = DELIVERY.replace(
            "\"status\": \"firing\",\n        \"labels\"",
            "\"status\": \"odd\",\n        \"labels\"",
        );
        assert!(
            parse(odd.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("alerts[0].status")
        );
        assert!(
            parse(br#"{"version": "4", "status": "firing"}"#)
                .unwrap_err()
                .to_string()
                .contains("alerts")
        );
    }

    #[test]
    fn an_alerts_description_is_clipped() {
        let long: Alert = serde_json::from_value(serde_json::json!({
            "status": "firing", "labels": {"alertname": "Loud"},
            "annotations": {"summary": "x".repeat(100_000)},
            "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "f"
        }))
        .unwrap();
        let described = long.describe();
        assert_eq!(described.chars().count(), MAX_DESCRIPTION);
        assert!(described.starts_with("Loud: xxx") && described.ends_with('…'));
    }
}
