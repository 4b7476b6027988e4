//! The incident's record as a responder reads it: the timeline and the
//! ledger, and the post-incident report.

use std::fmt::Write;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

use super::PluginError;
use crate::{communication::report, crd::Incident};

/// The incident's timeline and ledger, as a responder reads them.
pub fn timeline(incident: &Incident) -> String {
    let mut out = String::new();
    let spec = &incident.spec;
    let status = incident.status.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "{} {} {} on {} - {}",
        kube::ResourceExt::name_any(incident),
        spec.severity,
        status
            .phase
            .map(|p| p.to_string())
            .unwrap_or_else(|| "New".into()),
        spec.target,
        spec.title
    );
    for entry in &status.timeline {
        let _ = writeln!(
            out,
            "{}  {:<22} {}",
            entry.at.0, entry.reason, entry.message
        );
    }
    if !status.steps.is_empty() {
        let _ = writeln!(out, "\nsteps:");
        for step in &status.steps {
            let _ = writeln!(
                out,
                "  {:<16} {:<14} {:<16} {}",
                step.name,
                step.action,
                step.result,
                step.changes.join("; ")
            );
        }
    }
    out
}

/// The post-incident report: the one written when it closed, else the
/// report as it would read now.
pub async fn report_text(
    client: &Client,
    namespace: &str,
    incident: &Incident,
) -> Result<String, PluginError> {
    let name = report::config_map_name(incident);
    // Responders may not read ConfigMaps: then the report as it reads now.
    let written = match Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(&name)
        .await
    {
        Ok(found) => found
            .and_then(|c| c.data)
            .and_then(|d| d.get("report.md").cloned()),
        Err(kube::Error::Api(status)) if status.code == 403 => None,
        Err(error) => return Err(error.into()),
    };
    Ok(written.unwrap_or_else(|| report::render(incident)))
}
