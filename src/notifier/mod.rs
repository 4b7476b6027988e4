//! The notifier: tells an incident's channels what happens to it and pages
//! its escalation policy's people, as `crate::communication` plans. Each
//! message is recorded in `status.communication` (Pending, under its own
//! field manager) before it is sent, and settled after: a restart or a new
//! leader reads the record and neither sends twice nor skips. It runs as
//! its own controller, so a slow receiver never holds remediation. What to
//! do is decided without the API (`plan`, and `compose` for one message),
//! so an offline replay on a virtual clock decides as this does.

pub mod compose;
mod deliver;
mod dispatch;
pub mod plan;
pub mod readiness;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, PatchParams, PostParams},
    runtime::{controller::Action, reflector::ObjectRef},
};
use tracing::{debug, info, instrument, warn};

use plan::{Decision, Move, Wiring};

use crate::reconcile::{Error, retry};
use crate::{
    communication::report,
    context::Context,
    crd::{CommunicationStatus, Delivery, DeliveryState, Incident},
    k8s::status_patch,
    names::{MANAGED_BY, MANAGED_BY_LABEL, NOTIFIER_FIELD_MANAGER, REPORT_OF_LABEL},
};

/// Name used in metrics and logs.
pub const CONTROLLER: &str = "notifier";
/// How soon an incident whose messages are being sent is looked at again,
/// in case their outcomes could not be written.
const SETTLE_CHECK: Duration = Duration::from_secs(30);

/// The channels and escalation policy an incident names (directly or
/// through its RemediationPolicy), as the shared watches hold them.
fn wiring(ctx: &Context, incident: &Incident, namespace: &str) -> Wiring {
    let policy = incident.policy_name().and_then(|name| {
        ctx.watches
            .policies
            .store()
            .get(&ObjectRef::new(name).within(namespace))
    });
    let names = plan::wiring_names(incident, policy.as_deref());
    Wiring::resolve(
        &names,
        |name| {
            ctx.watches
                .channels
                .store()
                .get(&ObjectRef::new(name).within(namespace))
        },
        |name| {
            ctx.watches
                .escalations
                .store()
                .get(&ObjectRef::new(name).within(namespace))
        },
    )
}

/// Reconciles what is told about one incident: what to do is
/// [`plan::plan`]'s to decide; this does it.
#[instrument(skip_all, fields(incident = %incident.name_any(), namespace = incident.namespace().unwrap_or_default()))]
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.count_and_time(CONTROLLER);
    let namespace = incident
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let now = crate::k8s::now_whole_seconds();
    let wiring = wiring(&ctx, &incident, &namespace);
    let recorded = incident.communication().cloned().unwrap_or_default();
    let Decision { next, problems } = plan::plan(&incident, &wiring, now);
    if let Some(policy) = &wiring.escalation {
        for problem in &problems {
            warn!(escalation = %policy.name_any(), problem, "escalation policy cannot page");
        }
    }
    match next {
        Move::Report => {
            let name = write_report(&ctx, &incident, &namespace).await?;
            info!(report = %name, "post-incident report written");
            let next = plan::reported(&recorded, name);
            write(&ctx, &incident, &namespace, &next).await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Move::AwaitChange => Ok(Action::await_change()),
        Move::Record {
            next,
            messages,
            pages,
        } => {
            for page in &pages {
                info!(person = %page.person, role = %page.role, step = page.step, "paging");
            }
            debug!(messages, "recording messages before sending them");
            write(&ctx, &incident, &namespace, &next).await?;
            for page in pages {
                let labels = crate::metrics::PageLabels {
                    step: page.step,
                    role: page.role,
                };
                ctx.metrics.pages.get_or_create(&labels).inc();
            }
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Move::Send { by_channel, wake } => {
            if send(&ctx, &incident, &wiring, recorded, by_channel) {
                // The outcomes' write wakes this again; should it fail, look soon.
                Ok(Action::requeue(wake.min(SETTLE_CHECK)))
            } else {
                Ok(Action::requeue(wake))
            }
        }
        Move::Wait(wake) => Ok(Action::requeue(wake)),
    }
}

/// Sends what is due: each channel in its own task, so a slow receiver
/// holds back only its own channel. A channel this process is still
/// sending to is left to that task. Whether any was started.
fn send(
    ctx: &Arc<Context>,
    incident: &Arc<Incident>,
    wiring: &Wiring,
    recorded: CommunicationStatus,
    by_channel: BTreeMap<String, Vec<usize>>,
) -> bool {
    let uid = incident.uid().unwrap_or_default();
    let recorded = Arc::new(recorded);
    let mut started = false;
    for (name, indexes) in by_channel {
        let Some(channel) = wiring.channels.get(&name) else {
            continue;
        };
        let Some(claim) = ctx.sending.claim(&uid, &name) else {
            continue;
        };
        let batch = dispatch::Batch {
            ctx: Arc::clone(ctx),
            incident: Arc::clone(incident),
            recorded: Arc::clone(&recorded),
            channel: Arc::clone(channel),
            indexes,
            claim,
        };
        tokio::spawn(batch.run());
        started = true;
    }
    started
}

fn count(ctx: &Context, kind: &'static str, delivery: &Delivery) {
    let (channel, key) = (&delivery.channel, &delivery.key);
    let error = delivery.last_error.as_deref().unwrap_or_default();
    let result = match delivery.state {
        DeliveryState::Sent => {
            info!(%channel, %key, "message sent");
            "sent"
        }
        DeliveryState::Failed => {
            warn!(%channel, %key, error, "message failed for good");
            "failed"
        }
        DeliveryState::Pending => {
            info!(%channel, %key, error, "message to be tried again");
            "retry"
        }
        DeliveryState::Unconfirmed => {
            warn!(%channel, %key, error, "message not sent again: it may be missing");
            "unconfirmed"
        }
    };
    ctx.metrics
        .count_notification(kind, &delivery.event.to_string(), result);
    if let Some(sent) = &delivery.sent_at {
        let seconds = sent.0.duration_since(delivery.recorded_at.0).as_secs_f64();
        ctx.metrics
            .delivery_latency
            .get_or_create(&crate::metrics::KindLabels { kind })
            .observe(seconds.max(0.0));
    }
}

/// Writes the report ConfigMap, owned by the Incident (it goes with it).
/// An existing one (written before a restart) is kept.
async fn write_report(
    ctx: &Context,
    incident: &Incident,
    namespace: &str,
) -> Result<String, Error> {
    ctx.may_write()?;
    let name = report::config_map_name(incident);
    let owner = incident
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (
                    REPORT_OF_LABEL.to_owned(),
                    incident.name_any().chars().take(63).collect(),
                ),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "report.md".to_owned(),
            report::render(incident),
        )])),
        ..ConfigMap::default()
    };
    let params = PostParams {
        dry_run: false,
        field_manager: Some(NOTIFIER_FIELD_MANAGER.into()),
    };
    // The report is a ConfigMap of the namespace: made as its remediator.
    let remediator = ctx.remediator(namespace, None)?;
    match Api::<ConfigMap>::namespaced(remediator, namespace)
        .create(&params, &config_map)
        .await
    {
        Ok(_) => Ok(name),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(name),
        Err(error) => Err(error.into()),
    }
}

/// The part of an Incident's status the notifier owns.
#[derive(serde::Serialize)]
struct CommunicationOnly {
    communication: CommunicationStatus,
}

async fn write(
    ctx: &Context,
    incident: &Incident,
    namespace: &str,
    communication: &CommunicationStatus,
) -> Result<Incident, Error> {
    ctx.may_write()?;
    // Only status.communication: the rest of the status is the incident
    // controller's (and detection the detector's). Conditional on the
    // version it was planned from.
    let status = CommunicationOnly {
        communication: communication.clone(),
    };
    let version = incident.resource_version();
    let patch = status_patch::<Incident>(&status, version.as_deref()).map_err(Error::Serialize)?;
    Ok(Api::<Incident>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            &incident.name_any(),
            &PatchParams::apply(NOTIFIER_FIELD_MANAGER).force(),
            &patch,
        )
        .await?)
}

/// Retries with the per-object backoff; a lost race looks again at once.
pub fn error_policy(incident: Arc<Incident>, error: &Error, ctx: Arc<Context>) -> Action {
    retry::error_policy(CONTROLLER, incident.as_ref(), error, &ctx)
}
