//! Whether each NotificationChannel can send and each EscalationPolicy can
//! page, reported as their `Ready` condition before an incident needs them
//! (a wrong Secret key found at 3 a.m. is found too late). The checks are
//! `communication::readiness`; this reads what they need. Secrets are read
//! with `get` only (never watched), so a channel is looked at again every
//! few minutes and whenever it changes.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    api::PatchParams,
    runtime::{controller::Action, reflector::ObjectRef},
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::{info, instrument, warn};

use crate::reconcile::{Error, retry};
use crate::{
    communication::{
        readiness::{self, SecretSeen},
        templates,
    },
    conditions::{ConditionUpdate, set_condition},
    context::Context,
    crd::{
        EscalationPolicy, EscalationPolicyStatus, NotificationChannel, NotificationChannelStatus,
        Templates,
    },
    k8s::status_patch,
    names::FIELD_MANAGER,
};

/// Names used in metrics and logs.
pub const CHANNELS: &str = "notificationchannel";
pub const ESCALATIONS: &str = "escalationpolicy";
/// The condition both report.
pub const READY: &str = "Ready";
/// How often what is not watched (Secrets, ConfigMaps, rotations) is looked at again.
const LOOK_AGAIN: Duration = Duration::from_secs(300);

/// Why a channel's templates could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    #[error("reading ConfigMap {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("ConfigMap {0} (templates) not found")]
    Missing(String),
    #[error(transparent)]
    Authority(#[from] crate::authority::AuthorityError),
}

/// The channel's templates: its own, else its ConfigMap's; or why the
/// ConfigMap could not be read.
pub async fn channel_templates(
    ctx: &Context,
    channel: &NotificationChannel,
    namespace: &str,
) -> Result<Templates, TemplatesError> {
    let own = &channel.spec.templates;
    let Some(name) = &own.config_map else {
        return Ok(own.clone());
    };
    // Read as the namespace's remediator, like the channel's Secret.
    let remediator = ctx.remediator(namespace, None)?;
    let config = Api::<ConfigMap>::namespaced(remediator, namespace)
        .get_opt(name)
        .await
        .map_err(|source| TemplatesError::Read {
            name: name.clone(),
            source,
        })?
        .ok_or_else(|| TemplatesError::Missing(name.clone()))?;
    Ok(templates::with_config_map(
        own,
        &config.data.unwrap_or_default(),
    ))
}

/// Checks one channel.
#[instrument(skip_all, fields(channel = %channel.name_any(), namespace = channel.namespace().unwrap_or_default()))]
pub async fn reconcile_channel(
    channel: Arc<NotificationChannel>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.count_and_time(CHANNELS);
    let namespace = channel
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let secret_name = &channel.spec.secret_ref.name;
    // A channel's Secret is read as the namespace's remediator: a channel
    // author gets no Secret the namespace did not grant.
    let remediator = ctx.remediator(&namespace, None)?;
    let secret = match Api::<Secret>::namespaced(remediator, &namespace)
        .get_opt(secret_name)
        .await
    {
        Ok(Some(secret)) => SecretSeen::Keys(keys(&secret)),
        Ok(None) => SecretSeen::Missing,
        Err(error) => SecretSeen::Unreadable(error.to_string()),
    };
    let templates = channel_templates(&ctx, &channel, &namespace).await;
    let problems = readiness::channel_problems(&channel.spec, &secret, &templates);
    let mut status = channel.status.clone().unwrap_or_default();
    let changed = set_ready(
        &mut status.conditions,
        &problems,
        "the channel can send",
        channel.metadata.generation,
    );
    let generation_seen = status.observed_generation != channel.metadata.generation;
    status.observed_generation = channel.metadata.generation;
    if changed || generation_seen {
        write::<NotificationChannel, NotificationChannelStatus>(&ctx, &channel, &status).await?;
        log_readiness(&problems);
    }
    Ok(Action::requeue(LOOK_AGAIN))
}

/// Checks one escalation policy and says who is on call now.
#[instrument(skip_all, fields(escalation = %policy.name_any(), namespace = policy.namespace().unwrap_or_default()))]
pub async fn reconcile_escalation(
    policy: Arc<EscalationPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.count_and_time(ESCALATIONS);
    let namespace = policy
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let channels = ctx.watches.channels.store();
    let problems = readiness::escalation_problems(&policy.spec, |name| {
        channels
            .get(&ObjectRef::new(name).within(&namespace))
            .is_some()
    });
    let now = crate::k8s::now_whole_seconds();
    let mut status = policy.status.clone().unwrap_or_default();
    let changed = set_ready(
        &mut status.conditions,
        &problems,
        "every step pages someone",
        policy.metadata.generation,
    );
    let on_call = readiness::on_call_now(&policy.spec, now);
    let handoff = on_call
        .iter()
        .filter_map(|o| o.until.as_ref().map(|t| t.0))
        .min();
    let moved =
        status.on_call != on_call || status.observed_generation != policy.metadata.generation;
    status.on_call = on_call;
    status.observed_generation = policy.metadata.generation;
    if changed || moved {
        write::<EscalationPolicy, EscalationPolicyStatus>(&ctx, &policy, &status).await?;
        log_readiness(&problems);
    }
    // Looked at again by the next hand-off at the latest.
    let wait = handoff
        .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
        .map_or(LOOK_AGAIN, |wait| {
            (wait + Duration::from_secs(1)).min(LOOK_AGAIN)
        });
    Ok(Action::requeue(wait))
}

fn keys(secret: &Secret) -> BTreeSet<String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(key, _)| key.clone())
        .chain(
            secret
                .string_data
                .iter()
                .flatten()
                .map(|(key, _)| key.clone()),
        )
        .collect()
}

/// Sets `Ready` from the problems found; whether it changed.
fn set_ready(
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    problems: &[String],
    ready: &str,
    generation: Option<i64>,
) -> bool {
    let update = if problems.is_empty() {
        ConditionUpdate {
            type_: READY,
            status: true,
            reason: "Ready",
            message: ready.to_owned(),
        }
    } else {
        ConditionUpdate {
            type_: READY,
            status: false,
            reason: "NotReady",
            message: problems.join("; "),
        }
    };
    set_condition(
        conditions,
        update,
        generation,
        &Time(crate::k8s::now_whole_seconds()),
    )
}

fn log_readiness(problems: &[String]) {
    if problems.is_empty() {
        info!("ready");
    } else {
        warn!(problems = %problems.join("; "), "not ready");
    }
}

async fn write<K, S>(ctx: &Context, object: &K, status: &S) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    ctx.may_write()?;
    let namespace = object
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let patch = status_patch::<K>(&serde_json::json!(status), None).map_err(Error::Serialize)?;
    Api::<K>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &object.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &patch,
        )
        .await?;
    Ok(())
}

/// Retries a channel with the per-object backoff.
pub fn channel_error_policy(
    channel: Arc<NotificationChannel>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    retry::error_policy(CHANNELS, channel.as_ref(), error, &ctx)
}

/// Retries an escalation policy with the per-object backoff.
pub fn escalation_error_policy(
    policy: Arc<EscalationPolicy>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    retry::error_policy(ESCALATIONS, policy.as_ref(), error, &ctx)
}
