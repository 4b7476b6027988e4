//! The runbook's responder actions as a responder types them - declare,
//! ack, approve, resolve, decline - with the current user filled in (the API
//! server says who that is; the chart's admission policy checks it again).

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::PluginError;
use crate::crd::{Incident, IncidentType, Severity, WorkloadKind, WorkloadRef};

/// Who the API server says the current user is.
pub async fn whoami(client: &Client) -> Result<String, PluginError> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or(PluginError::WhoAmI)
}

/// What `declare` needs.
pub struct Declaration {
    pub name: String,
    pub title: String,
    pub severity: Severity,
    pub incident_type: IncidentType,
    pub target: String,
    pub description: Option<String>,
    pub policy: Option<String>,
    pub rule: Option<String>,
}

/// `Deployment/api` as a workload reference.
pub fn parse_target(text: &str) -> Result<WorkloadRef, PluginError> {
    let (kind, name) = text
        .split_once('/')
        .ok_or_else(|| PluginError::Target(text.to_owned()))?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "deployment" | "deploy" | "deployments" => WorkloadKind::Deployment,
        "statefulset" | "sts" | "statefulsets" => WorkloadKind::StatefulSet,
        _ => return Err(PluginError::Target(text.to_owned())),
    };
    if name.is_empty() {
        return Err(PluginError::Target(text.to_owned()));
    }
    Ok(WorkloadRef {
        kind,
        name: name.to_owned(),
    })
}

pub async fn declare(
    api: &Api<Incident>,
    declaration: Declaration,
) -> Result<Incident, PluginError> {
    let target = parse_target(&declaration.target)?;
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": declaration.name},
        "spec": {
            "title": declaration.title,
            "severity": declaration.severity,
            "type": declaration.incident_type,
            "target": target,
            "description": declaration.description,
            "policy": declaration.policy,
            "rule": declaration.rule,
        }
    }))?;
    Ok(api.create(&PostParams::default(), &incident).await?)
}

async fn merge(
    api: &Api<Incident>,
    name: &str,
    spec: serde_json::Value,
) -> Result<Incident, PluginError> {
    let patch = json!({"spec": spec});
    Ok(api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

pub async fn ack(
    api: &Api<Incident>,
    name: &str,
    me: &str,
    note: Option<String>,
) -> Result<Incident, PluginError> {
    // The time renews an acknowledgement that expired without progress.
    let at = crate::k8s::now_whole_seconds().to_string();
    merge(
        api,
        name,
        json!({"acknowledged": {"by": me, "note": note, "at": at}}),
    )
    .await
}

/// Adds an approval by `me`, conditional on the Incident as read, so a
/// concurrent approval is never lost. Returns whether the step is already
/// in the ledger (else it is approved in advance, for when it comes).
pub async fn approve(
    api: &Api<Incident>,
    name: &str,
    step: &str,
    me: &str,
) -> Result<bool, PluginError> {
    let incident = api.get(name).await?;
    // An approval counts for the ladder's current round only.
    let round = incident.status.as_ref().map_or(1, |s| s.round());
    let recorded = incident
        .status
        .iter()
        .flat_map(|s| s.steps.iter())
        .any(|s| s.name == step && s.attempt == round);
    let mut approvals = incident.spec.approvals.clone();
    approvals.push(crate::crd::Approval {
        step: step.to_owned(),
        by: me.to_owned(),
        round: (round > 1).then_some(round),
    });
    let patch = json!({
        "metadata": {"resourceVersion": incident.metadata.resource_version},
        "spec": {"approvals": approvals}
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(recorded)
}

pub async fn resolve(
    api: &Api<Incident>,
    name: &str,
    me: &str,
    root_cause: &str,
    summary: &str,
    follow_ups: &[String],
) -> Result<Incident, PluginError> {
    merge(
        api,
        name,
        json!({"resolution": {"by": me, "rootCause": root_cause, "summary": summary, "followUps": follow_ups}}),
    )
    .await
}

/// Asks the operator to lift the incident's hold on its target's sync.
/// Refused when it holds none, so a typo is not taken for a request.
pub async fn resume_sync(api: &Api<Incident>, name: &str, me: &str) -> Result<String, PluginError> {
    let incident = api.get(name).await?;
    let held = incident
        .status
        .as_ref()
        .and_then(|s| s.sync_holds.last())
        .filter(|hold| hold.is_held())
        .map(|hold| hold.owner.to_string());
    let held = held.ok_or_else(|| PluginError::NoHold(name.to_owned()))?;
    let at = crate::k8s::now_whole_seconds().to_string();
    merge(api, name, json!({"resumeSync": {"by": me, "at": at}})).await?;
    Ok(held)
}

pub async fn decline(
    api: &Api<Incident>,
    name: &str,
    me: &str,
    reason: &str,
) -> Result<Incident, PluginError> {
    merge(api, name, json!({"declined": {"by": me, "reason": reason}})).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_kubectl_writes_them() {
        assert_eq!(
            parse_target("deploy/api").unwrap().to_string(),
            "Deployment/api"
        );
        assert_eq!(
            parse_target("StatefulSet/postgres").unwrap().to_string(),
            "StatefulSet/postgres"
        );
        for bad in ["api", "pod/api", "deployment/", "/api"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
