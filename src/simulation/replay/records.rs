//! Recorded incidents as `kubectl get incidents -o yaml` gives them.

use std::path::Path;

use serde::Deserialize;

use super::ReplayError;
use crate::crd::Incident;

/// Recorded incidents: one Incident, a List of them, or several documents.
pub fn read_incidents(path: &Path) -> Result<Vec<Incident>, ReplayError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ReplayError::Records {
        path: shown.clone(),
        why: error.to_string(),
    })?;
    let bad = |why: String| ReplayError::Records {
        path: shown.clone(),
        why,
    };
    let mut incidents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| bad(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let items = match value.get("kind").and_then(serde_yaml::Value::as_str) {
            Some("List" | "IncidentList") => value
                .get("items")
                .and_then(serde_yaml::Value::as_sequence)
                .cloned()
                .unwrap_or_default(),
            Some("Incident") => vec![value],
            other => {
                return Err(bad(format!(
                    "a {} is not an Incident (kubectl get incidents -o yaml)",
                    other.unwrap_or("document without a kind")
                )));
            }
        };
        for item in items {
            incidents.push(serde_yaml::from_value(item).map_err(|e| bad(e.to_string()))?);
        }
    }
    Ok(incidents)
}
