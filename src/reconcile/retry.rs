//! The one error policy of every controller: a lost write race looks again
//! soon, an object that cannot be reconciled as it is waits for a change,
//! anything else retries after a delay that grows with each failure of
//! that object.

use std::time::Duration;

use kube::{Resource, ResourceExt, runtime::controller::Action};
use tracing::warn;

use super::error::Error;
use crate::context::Context;

/// How soon a reconcile that lost a write race (409) looks again.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(300);

/// How soon a reconcile whose write the lease's fence held back looks
/// again. Waiting for a change instead left a resolved incident untold.
pub const FENCED_RETRY: Duration = Duration::from_secs(1);

/// Counts the error for `controller` and says when to look at `object` again.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    object: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics.count_error(controller, &error.metric_label());
    if error.is_conflict() {
        // Lost a race to another writer: the next look starts from its result.
        return Action::requeue(CONFLICT_RETRY);
    }
    if error.is_fenced() {
        return Action::requeue(FENCED_RETRY);
    }
    let kind = K::kind(&());
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    if error.is_permanent() {
        warn!(controller, %kind, %namespace, %name, %error, "cannot be reconciled; waiting for a change");
        return Action::await_change();
    }
    let retry = ctx.backoffs.next(&backoff_key(controller, object));
    warn!(controller, %kind, %namespace, %name, %error, retry_in = ?retry, "reconcile failed");
    Action::requeue(retry)
}

/// Which retry delays an object's failures grow: one per controller and
/// object, so the Incident and notifier controllers back off one incident
/// apart. A controller resets it with the same key when it succeeds.
pub fn backoff_key<K: Resource>(controller: &str, object: &K) -> String {
    format!(
        "{controller}/{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    #[test]
    fn a_fenced_write_is_retried_and_only_missing_metadata_waits_for_a_change() {
        let fenced = Error::Fenced(crate::leader::Fenced("lease".into()));
        assert!(fenced.is_fenced() && !fenced.is_permanent());
        assert!(Error::MissingMetadata("name").is_permanent());
    }

    #[test]
    fn the_backoff_key_names_controller_namespace_and_object() {
        let object = ConfigMap {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        assert_eq!(backoff_key("incident", &object), "incident/shop/web");
    }
}
