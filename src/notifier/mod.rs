//! The notifier: tells an incident's channels what happens to it and pages
//! its escalation policy's people, as `crate::communication` plans. Each
//! message is recorded in `status.communication` (Pending, under its own
//! field manager) before it is sent, and settled after: a restart or a new
//! leader reads the record and neither sends twice nor skips. It runs as
//! its own controller, so a slow receiver never holds remediation.

mod deliver;
mod dispatch;
pub mod readiness;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, PatchParams, PostParams},
    runtime::{controller::Action, reflector::ObjectRef},
};
use tracing::{debug, info, instrument, warn};

use crate::reconcile::{Error, retry};
use crate::{
    communication::{
        escalation,
        in_flight::Claim,
        moments,
        outbox::{self, Channel},
        report,
    },
    context::Context,
    crd::{
        CommunicationStatus, Delivery, DeliveryState, EscalationPolicy, Incident,
        NotificationChannel, NotifyEvent, Phase,
    },
    k8s::status_patch,
    names::{MANAGED_BY, MANAGED_BY_LABEL, NOTIFIER_FIELD_MANAGER, REPORT_OF_LABEL},
};

/// Name used in metrics and logs.
pub const CONTROLLER: &str = "notifier";
/// The longest an incident with messages or pages ahead sleeps.
const LOOK_AGAIN: Duration = Duration::from_secs(300);
/// How soon an incident whose messages are being sent is looked at again,
/// in case their outcomes could not be written.
const SETTLE_CHECK: Duration = Duration::from_secs(30);

/// The channels and escalation policy an incident names (directly or
/// through its RemediationPolicy), as the shared watches hold them.
struct Wiring {
    channels: Vec<Arc<NotificationChannel>>,
    escalation: Option<Arc<EscalationPolicy>>,
}

impl Wiring {
    /// The rate limit of a channel in the wiring; `None` if it is gone.
    fn per_minute(&self, name: &str) -> Option<i32> {
        self.channels
            .iter()
            .find(|c| c.name_any() == name)
            .map(|c| c.spec.per_minute)
    }
}

fn wiring(ctx: &Context, incident: &Incident, namespace: &str) -> Wiring {
    let policy = incident.policy_name().and_then(|name| {
        ctx.watches
            .policies
            .store()
            .get(&ObjectRef::new(name).within(namespace))
    });
    let from_policy = policy.as_ref().and_then(|p| p.spec.communication.clone());
    let own = incident.spec.communication.clone();
    // Channels named, and those of people paged: they hear how it ends
    // (a PagerDuty alert is acknowledged and resolved where it was raised).
    let paged = incident
        .communication()
        .map(|c| {
            c.outbox
                .iter()
                .filter(|d| d.event == NotifyEvent::Paged)
                .map(|d| d.channel.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut names: Vec<String> = from_policy
        .iter()
        .chain(own.iter())
        .flat_map(|c| c.channels.iter().cloned())
        .chain(paged)
        .collect();
    names.sort();
    names.dedup();
    let channels = names
        .iter()
        .filter_map(|name| {
            ctx.watches
                .channels
                .store()
                .get(&ObjectRef::new(name).within(namespace))
        })
        .collect();
    let escalation_name = own
        .and_then(|c| c.escalation_policy)
        .or_else(|| from_policy.and_then(|c| c.escalation_policy));
    let escalation = escalation_name.and_then(|name| {
        ctx.watches
            .escalations
            .store()
            .get(&ObjectRef::new(&name).within(namespace))
    });
    Wiring {
        channels,
        escalation,
    }
}

/// Reconciles what is told about one incident.
#[instrument(skip_all, fields(incident = %incident.name_any(), namespace = incident.namespace().unwrap_or_default()))]
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.count_and_time(CONTROLLER);
    let namespace = incident
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let now = crate::k8s::now_whole_seconds();
    let wiring = wiring(&ctx, &incident, &namespace);
    let recorded = incident.communication().cloned().unwrap_or_default();

    // A closed incident gets its post-incident report first: the last
    // message points to it.
    if incident
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(Phase::is_closed)
        && recorded.report.is_none()
    {
        let name = write_report(&ctx, &incident, &namespace).await?;
        info!(report = %name, "post-incident report written");
        let next = CommunicationStatus {
            report: Some(name),
            ..recorded
        };
        write(&ctx, &incident, &namespace, &next).await?;
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    if wiring.channels.is_empty() && wiring.escalation.is_none() {
        return Ok(Action::await_change());
    }

    // First record what is owed and who is paged; it is sent next time.
    let names: Vec<String> = wiring.channels.iter().map(|c| c.name_any()).collect();
    let channels: Vec<Channel<'_>> = wiring
        .channels
        .iter()
        .zip(&names)
        .map(|(channel, name)| Channel {
            name,
            spec: &channel.spec,
        })
        .collect();
    let mut new = outbox::owed(&incident, &channels, now);
    let mut escalation_state = recorded.escalation.clone();
    let mut paged = Vec::new();
    if let Some(policy) = &wiring.escalation {
        let planned = escalation::plan(&incident, &policy.spec, now);
        for problem in &planned.problems {
            warn!(escalation = %policy.name_any(), problem, "escalation policy cannot page");
        }
        for page in planned.pages {
            let key = page.key();
            let known = recorded
                .outbox
                .iter()
                .any(|d| d.channel == page.channel && d.key == key);
            if !known {
                info!(person = %page.person, role = %page.role, step = page.step, "paging");
                new.push(pending(&page.channel, NotifyEvent::Paged, key, now));
                paged.push(crate::metrics::PageLabels {
                    step: page.step,
                    role: page.role,
                });
            }
        }
        escalation_state = planned.state;
    }
    // Compared as status would keep it (whole seconds), so that a time
    // with a fraction never reads as a change to write again and again.
    let escalation_state = as_stored(escalation_state);
    if !new.is_empty() || escalation_state != recorded.escalation {
        debug!(
            messages = new.len(),
            "recording messages before sending them"
        );
        let next = CommunicationStatus {
            escalation: escalation_state,
            ..outbox::record(&recorded, new)
        };
        write(&ctx, &incident, &namespace, &next).await?;
        for labels in &paged {
            ctx.metrics.pages.get_or_create(labels).inc();
        }
        return Ok(Action::requeue(Duration::from_millis(100)));
    }

    // Then send what is due: each channel in its own task, so a slow
    // receiver holds back only its own channel. A channel this process is
    // still sending to is left to that task.
    let uid = incident.uid().unwrap_or_default();
    let mut by_channel: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for index in outbox::due(&recorded, |name| wiring.per_minute(name), now) {
        if let Some(delivery) = recorded.outbox.get(index) {
            by_channel
                .entry(delivery.channel.clone())
                .or_default()
                .push(index);
        }
    }
    let claimed: Vec<(Arc<NotificationChannel>, Vec<usize>, Claim)> = by_channel
        .into_iter()
        .filter_map(|(name, indexes)| {
            let channel = wiring.channels.iter().find(|c| c.name_any() == name)?;
            let claim = ctx.sending.claim(&uid, &name)?;
            Some((Arc::clone(channel), indexes, claim))
        })
        .collect();
    if !claimed.is_empty() {
        // Marked as being sent before it is: after a crash, a message whose
        // outcome was never written is known to be in doubt.
        let due: Vec<usize> = claimed
            .iter()
            .flat_map(|(_, indexes, _)| indexes.iter().copied())
            .collect();
        let begun = outbox::begin(&recorded, &due, now);
        let marked = write(&ctx, &incident, &namespace, &begun).await?;
        let recorded = Arc::new(recorded);
        for (channel, indexes, claim) in claimed {
            let batch = dispatch::Batch {
                ctx: Arc::clone(&ctx),
                incident: Arc::clone(&incident),
                marked: marked.clone(),
                recorded: Arc::clone(&recorded),
                channel,
                indexes,
                now,
                claim,
            };
            tokio::spawn(batch.run());
        }
        // The outcomes' write wakes this again; should it fail, look soon.
        return Ok(Action::requeue(
            wake(&incident, &wiring, &begun, now).min(SETTLE_CHECK),
        ));
    }
    Ok(Action::requeue(wake(&incident, &wiring, &recorded, now)))
}

/// `value` as it reads back from the API server.
fn as_stored<T: serde::Serialize + serde::de::DeserializeOwned>(value: T) -> T {
    serde_json::to_value(&value)
        .ok()
        .and_then(|json| serde_json::from_value(json).ok())
        .unwrap_or(value)
}

fn pending(channel: &str, event: NotifyEvent, key: String, now: Timestamp) -> Delivery {
    Delivery {
        channel: channel.to_owned(),
        event,
        key,
        state: DeliveryState::Pending,
        attempts: 0,
        recorded_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
        next_attempt_at: None,
        sending_since: None,
        sent_at: None,
        last_error: None,
        external_ref: None,
    }
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

/// When something is next due: a retry, a periodic update, the next page.
fn wake(
    incident: &Incident,
    wiring: &Wiring,
    recorded: &CommunicationStatus,
    now: Timestamp,
) -> Duration {
    let updates = wiring.channels.iter().filter_map(|channel| {
        let every = channel.spec.updates.of(incident.spec.severity)?;
        moments::next_update(incident, every, now)
    });
    let page = recorded
        .escalation
        .as_ref()
        .filter(|e| e.stopped.is_none())
        .and_then(|e| e.next_at.as_ref().map(|t| t.0));
    let acknowledgement_expires = recorded
        .escalation
        .as_ref()
        .and_then(|e| e.acknowledgement_expires_at.as_ref().map(|t| t.0));
    let next = updates
        .chain(page)
        .chain(acknowledgement_expires)
        .chain(outbox::next_attempt(recorded))
        .chain(outbox::rate_limit_lifts(
            recorded,
            |name| wiring.per_minute(name),
            now,
        ))
        .min();
    next.and_then(|at| Duration::try_from(at.duration_since(now)).ok())
        .map_or(LOOK_AGAIN, |wait| {
            (wait + Duration::from_secs(1)).min(LOOK_AGAIN)
        })
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
