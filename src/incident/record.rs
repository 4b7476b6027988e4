//! Record: save the status a decision arrived at; then, and only then,
//! announce it (Events on the Incident and its target) and count it
//! (metrics). A save that fails announces and counts nothing, so a retried
//! reconcile never counts twice.

use std::sync::Arc;

use kube::{Api, Resource, ResourceExt, api::PatchParams, runtime::events::Recorder};
use tracing::info;

use super::decision::{Decision, Tally};
use crate::{
    context::Context,
    crd::{Incident, IncidentStatus},
    k8s::status_patch,
    metrics::{ActionLabels, Metrics, OpenedLabels, SeverityLabels, SlaLabels, StepLabels},
    names::FIELD_MANAGER,
    reconcile::Error,
    workload::Workload,
};

/// Saves `status` alone, before a change nothing in the cluster will show
/// is made (its step marked as begun). Returns the incident as saved, which
/// the decision's own save is then conditional on.
pub async fn mark(
    ctx: &Context,
    incident: &Incident,
    status: &IncidentStatus,
) -> Result<Arc<Incident>, Error> {
    ctx.may_write()?;
    Ok(Arc::new(save_status(ctx, incident, status).await?))
}

/// Writes the incident controller's part of the status, conditional on the
/// version `incident` was read at: a status that moved on since (another
/// replica, a stale cache) is not overwritten. status.detection belongs to
/// the detector's field manager, status.communication to the notifier's.
async fn save_status(
    ctx: &Context,
    incident: &Incident,
    status: &IncidentStatus,
) -> Result<Incident, Error> {
    let namespace = incident
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = incident
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let owned = IncidentStatus {
        detection: None,
        communication: None,
        ..status.clone()
    };
    let version = incident.resource_version();
    let patch = status_patch::<Incident>(&owned, version.as_deref()).map_err(Error::Serialize)?;
    Ok(Api::<Incident>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &patch)
        .await?)
}

/// How many times the record of a change already made is saved again on a
/// newer version whose own part is unchanged.
const RECORD_TRIES: usize = 3;

/// The incident controller's own part of a status: what its writes are
/// conditional on.
fn own_part(status: Option<&IncidentStatus>) -> IncidentStatus {
    IncidentStatus {
        detection: None,
        communication: None,
        ..status.cloned().unwrap_or_default()
    }
}

/// Saves the status that records a change already made. A conflict caused
/// by another writer's part alone (the detector's counts, the notifier's
/// deliveries) does not lose the record: it is saved on the newer version,
/// whose own part is the one the decision was made from. A change to the
/// own part (another replica, a stale cache) still conflicts, and the next
/// reconcile decides from a fresh read.
async fn save_change_record(
    ctx: &Context,
    incident: &Incident,
    status: &IncidentStatus,
) -> Result<Incident, Error> {
    let mut base = incident.clone();
    let mut status = status.clone();
    let mut tries = 1;
    loop {
        match save_status(ctx, &base, &status).await {
            Err(error) if error.is_conflict() && tries < RECORD_TRIES => {
                let namespace = base.namespace().unwrap_or_default();
                let fresh = Api::<Incident>::namespaced(ctx.client.clone(), &namespace)
                    .get(&base.name_any())
                    .await?;
                if own_part(fresh.status.as_ref()) != own_part(incident.status.as_ref()) {
                    // Decided from a stale read: the decision is not saved,
                    // but the lines of the change it made are, on the
                    // newer status (the next reconcile decides afresh).
                    match with_lines_of(fresh.status.as_ref(), &status) {
                        Some(merged) => status = merged,
                        None => return Err(error),
                    }
                    info!(
                        "decided from a stale read; saving the change's lines on the newer status"
                    );
                } else {
                    info!(
                        "status moved on in another writer's part; saving the change's record again"
                    );
                }
                base = fresh;
                tries += 1;
            }
            other => return other,
        }
    }
}

/// `fresh` with the ledger lines of `decided` it lacks, step by step (the
/// same step id at the same place); `None` when there are none to add.
fn with_lines_of(
    fresh: Option<&IncidentStatus>,
    decided: &IncidentStatus,
) -> Option<IncidentStatus> {
    let mut merged = fresh?.clone();
    let mut added = false;
    for (kept, made) in merged.steps.iter_mut().zip(&decided.steps) {
        if kept.id != made.id {
            continue;
        }
        for line in &made.changes {
            if !kept.changes.contains(line) {
                kept.changes.push(line.clone());
                added = true;
            }
        }
    }
    added.then_some(merged)
}

/// Saves the decision's status (when it changed), then publishes and counts.
/// Returns the incident as saved, if it was. `changed` says a change was
/// made in the world this pass: its record is not lost to another writer.
pub async fn record(
    ctx: &Context,
    incident: &Incident,
    workload: Option<&Workload>,
    decision: Decision,
    changed: bool,
) -> Result<Option<Arc<Incident>>, Error> {
    ctx.may_write()?;
    let mut saved = None;
    if incident.status.as_ref() != Some(&decision.status) {
        let written = if changed {
            save_change_record(ctx, incident, &decision.status).await?
        } else {
            save_status(ctx, incident, &decision.status).await?
        };
        saved = Some(Arc::new(written));
        let phase = decision
            .status
            .phase
            .map(|p| p.as_str())
            .unwrap_or_default();
        info!(phase, "incident status updated");
    }
    for tally in &decision.tallies {
        count(&ctx.metrics, incident, tally);
    }
    for event in decision.events {
        ctx.publish(incident, event.into_event()).await;
    }
    if let Some(workload) = workload {
        for event in decision.workload_events {
            // The incident is the Event's related object: who changed it, and why.
            let event = kube::runtime::events::Event {
                secondary: Some(incident.object_ref(&())),
                ..event.into_event()
            };
            publish_on(ctx, &ctx.recorder, workload, event).await;
        }
    }
    Ok(saved)
}

async fn publish_on(
    ctx: &Context,
    recorder: &Recorder,
    workload: &Workload,
    event: kube::runtime::events::Event,
) {
    if ctx.may_write().is_err() {
        return;
    }
    if let Err(error) = recorder.publish(&event, &workload.object_reference()).await {
        tracing::warn!(%error, reason = %event.reason, "could not publish event");
    }
}

fn count(metrics: &Metrics, incident: &Incident, tally: &Tally) {
    match tally {
        Tally::Opened { source, rule } => {
            let labels = OpenedLabels {
                source,
                rule: rule.clone(),
            };
            metrics.incidents_opened.get_or_create(&labels).inc();
        }
        Tally::SlaBreached { deadline } => {
            tracing::warn!(deadline, "incident deadline breached");
            let labels = SlaLabels {
                severity: incident.spec.severity.to_string(),
                deadline,
            };
            metrics.sla_breaches.get_or_create(&labels).inc();
        }
        Tally::StepEnded {
            action,
            result,
            seconds,
        } => {
            let action = action.as_str();
            let labels = StepLabels {
                action,
                result: result.as_str(),
            };
            metrics.steps.get_or_create(&labels).inc();
            if let Some(seconds) = seconds {
                let labels = ActionLabels { action };
                metrics
                    .step_duration
                    .get_or_create(&labels)
                    .observe(*seconds);
            }
        }
        Tally::Acknowledged { severity, seconds } => metrics
            .time_to_acknowledge
            .get_or_create(&SeverityLabels {
                severity: severity.to_string(),
            })
            .observe(*seconds),
        Tally::Mitigated { seconds } => metrics.time_to_mitigate.observe(*seconds),
        Tally::Resolved { seconds } => metrics.time_to_resolve.observe(*seconds),
        Tally::LadderExhausted => {
            metrics.ladder_exhaustions.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::StepResult;

    fn status(steps: serde_json::Value) -> IncidentStatus {
        serde_json::from_value(serde_json::json!({"steps": steps})).unwrap()
    }

    #[test]
    fn the_lines_of_a_change_decided_from_a_stale_read_are_kept_on_the_newer_status() {
        let fresh = status(serde_json::json!([
            {"id": "s1", "name": "scale", "action": "scale", "attempt": 1, "result": "Succeeded",
             "changes": ["replicas 1 -> 3"]}]));
        let decided = status(serde_json::json!([
            {"id": "s1", "name": "scale", "action": "scale", "attempt": 1, "result": "Verifying",
             "changes": ["replicas 1 -> 3", "pod db-0 evicted"]}]));
        let merged = with_lines_of(Some(&fresh), &decided).unwrap();
        assert_eq!(
            merged.steps[0].result,
            StepResult::Succeeded,
            "the newer progress kept"
        );
        assert_eq!(
            merged.steps[0].changes,
            ["replicas 1 -> 3", "pod db-0 evicted"]
        );
        assert!(
            with_lines_of(Some(&merged), &decided).is_none(),
            "nothing more to add"
        );
        let other = status(serde_json::json!([
            {"id": "s2", "name": "scale", "action": "scale", "attempt": 2, "result": "Pending"}]));
        assert!(
            with_lines_of(Some(&other), &decided).is_none(),
            "another step: nothing"
        );
    }
}
