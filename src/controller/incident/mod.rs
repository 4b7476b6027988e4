//! The Incident controller: drives each incident through its lifecycle.

pub mod evidence;
pub mod lifecycle;
pub mod remediate;

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client, ResourceExt, api::PatchParams, runtime::controller::Action};
use tracing::{info, instrument, warn};

use super::{error::Error, status_patch};
use crate::{
    context::{Context, FIELD_MANAGER},
    crd::{Detection, Incident, IncidentStatus, Phase, RemediationPolicy, SourceKind},
    metrics::{OpenedLabels, SlaLabels},
};

/// Name used in metrics and logs.
pub const CONTROLLER: &str = "incident";

/// Reconciles one Incident: plans its next status, writes it, then publishes
/// the Events the plan asks for.
#[instrument(skip_all, fields(incident = %incident.name_any(), namespace = incident.namespace().unwrap_or_default()))]
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.count_and_time(CONTROLLER);
    let namespace = incident
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = incident
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;

    // Whole seconds: the API server stores times at that precision, and a
    // plan compared against a round-tripped status must not differ by nanos.
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
    // One read of the policy serves the lifecycle's settings and the ladder.
    let policy = incident_policy(&ctx.client, &namespace, &incident).await?;
    let settings = match (&incident.spec.source.kind, &policy) {
        (SourceKind::Detected, Some(policy)) => policy.spec.detection.clone(),
        _ => Detection::default(),
    };
    let mut plan = lifecycle::plan(&incident, &settings, now);
    let is_open = !plan.status.phase.is_some_and(|p| p.is_closed());
    if plan.status.evidence.is_none() && is_open {
        plan.status.evidence =
            Some(evidence::capture(&ctx.client, &namespace, &incident.spec.target, now).await);
    }
    // The ladder moves one step per reconcile, after the evidence is in.
    let active = matches!(
        plan.status.phase,
        Some(Phase::Triggered | Phase::Acknowledged | Phase::Mitigating | Phase::Monitoring)
    );
    if active && let Some(ladder) = remediate::ladder(&incident, policy.as_ref()) {
        let (events, requeue) =
            remediate::step(&ctx, &namespace, &incident, &ladder, &mut plan.status, now).await?;
        plan.events.extend(events);
        if let Some(requeue) = requeue {
            plan.requeue_after = Some(plan.requeue_after.map_or(requeue, |r| r.min(requeue)));
        }
    }
    let was_resolved = incident.status.as_ref().and_then(|s| s.phase) == Some(Phase::Resolved);
    if !was_resolved
        && plan.status.phase == Some(Phase::Resolved)
        && let (Some(detected), Some(resolved)) = (
            &plan.status.milestones.detected_at,
            &plan.status.milestones.resolved_at,
        )
    {
        let seconds = resolved.0.duration_since(detected.0).as_secs_f64().max(0.0);
        ctx.metrics.time_to_resolve.observe(seconds);
    }
    if incident.status.as_ref() != Some(&plan.status) {
        let api: Api<Incident> = Api::namespaced(ctx.client.clone(), &namespace);
        // status.detection belongs to the detector's field manager.
        let owned = IncidentStatus {
            detection: None,
            ..plan.status.clone()
        };
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &status_patch::<Incident>(&owned)?,
        )
        .await?;
        let phase = plan.status.phase.map(|p| p.as_str()).unwrap_or_default();
        info!(phase, "incident status updated");
    }
    if incident.status.as_ref().and_then(|s| s.phase).is_none() {
        let source = match incident.spec.source.kind {
            SourceKind::Manual => "Manual",
            SourceKind::Detected => "Detected",
        };
        let rule = incident
            .spec
            .source
            .rule
            .clone()
            .or(incident.spec.rule.clone())
            .unwrap_or_default();
        ctx.metrics
            .incidents_opened
            .get_or_create(&OpenedLabels { source, rule })
            .inc();
    }
    for deadline in &plan.breaches {
        warn!(deadline, "incident deadline breached");
        ctx.metrics
            .sla_breaches
            .get_or_create(&SlaLabels {
                severity: incident.spec.severity.to_string(),
                deadline,
            })
            .inc();
    }
    for event in plan.events {
        ctx.publish(incident.as_ref(), event.into_event()).await;
    }
    Ok(match plan.requeue_after {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    })
}

/// The incident's RemediationPolicy (same namespace), if it names one that exists.
async fn incident_policy(
    client: &Client,
    namespace: &str,
    incident: &Incident,
) -> Result<Option<RemediationPolicy>, Error> {
    let spec = &incident.spec;
    let Some(name) = spec.policy.as_ref().or(spec.source.policy.as_ref()) else {
        return Ok(None);
    };
    let api: Api<RemediationPolicy> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?)
}

/// Retries failed reconciles with a delay.
pub fn error_policy(incident: Arc<Incident>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(incident = %incident.name_any(), %error, "incident reconcile failed");
    ctx.metrics.count_error(CONTROLLER, &error.metric_label());
    Action::requeue(Duration::from_secs(5))
}
