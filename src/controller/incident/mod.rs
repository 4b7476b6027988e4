//! The Incident controller: drives each incident through its lifecycle.

pub mod lifecycle;

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt, api::PatchParams, runtime::controller::Action};
use tracing::{info, instrument, warn};

use super::{error::Error, status_patch};
use crate::{
    context::{Context, FIELD_MANAGER},
    crd::Incident,
    metrics::SlaLabels,
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
    let plan = lifecycle::plan(&incident, now);
    if incident.status.as_ref() != Some(&plan.status) {
        let api: Api<Incident> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &status_patch::<Incident>(&plan.status)?,
        )
        .await?;
        let phase = plan.status.phase.map(|p| p.as_str()).unwrap_or_default();
        info!(phase, "incident status updated");
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

/// Retries failed reconciles with a delay.
pub fn error_policy(incident: Arc<Incident>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(incident = %incident.name_any(), %error, "incident reconcile failed");
    ctx.metrics.count_error(CONTROLLER, &error.metric_label());
    Action::requeue(Duration::from_secs(5))
}
