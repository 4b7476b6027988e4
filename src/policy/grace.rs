//! The end of a rotation's grace period: the previous value of a rotated
//! Secret (kept under `previousKey` so that sessions signed with it still
//! work for a while) is removed once its time is up. Done here, by the
//! policy that names the rotation, because the incident may be long closed.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tracing::info;

use crate::{
    context::Context,
    crd::RemediationPolicy,
    names::{FIELD_MANAGER, PREVIOUS_UNTIL_ANNOTATION},
    reconcile::Error,
};

/// Removes the previous values whose grace period is over; says when to
/// look again for the next one to end.
pub async fn expire_previous_values(
    ctx: &Context,
    policy: &RemediationPolicy,
    namespace: &str,
) -> Result<Option<Duration>, Error> {
    let mut rotations: Vec<(&str, &str)> = policy
        .spec
        .rules
        .iter()
        .flat_map(|rule| rule.actions.iter())
        .filter_map(|action| {
            let rotation = action.rotate_secret.as_ref()?;
            rotation.grace_period?;
            Some((rotation.secret.as_str(), rotation.previous_key.as_deref()?))
        })
        .collect();
    rotations.sort_unstable();
    rotations.dedup();
    // The rotated Secrets are the namespace's: read and written as its remediator.
    let remediator = ctx.remediator(namespace, policy.spec.service_account_name.as_deref())?;
    let secrets: Api<Secret> = Api::namespaced(remediator, namespace);
    let now = Timestamp::now();
    let mut look_again: Option<Duration> = None;
    for (name, previous_key) in rotations {
        let Some(secret) = secrets.get_opt(name).await? else {
            continue;
        };
        let Some(until) = secret
            .annotations()
            .get(PREVIOUS_UNTIL_ANNOTATION)
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        if until > now {
            let wait = Duration::try_from(until.duration_since(now)).unwrap_or_default()
                + Duration::from_secs(1);
            look_again = Some(look_again.map_or(wait, |w| w.min(wait)));
            continue;
        }
        ctx.may_write()?;
        let patch = json!({
            "metadata": {
                "resourceVersion": secret.resource_version(),
                "annotations": {PREVIOUS_UNTIL_ANNOTATION: null}
            },
            "data": {previous_key: null}
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        secrets.patch(name, &params, &Patch::Merge(&patch)).await?;
        info!(
            secret = name,
            key = previous_key,
            "grace period over: previous value removed"
        );
    }
    Ok(look_again)
}
