//! Reading, suspending and resuming the GitOps object that reconciles a
//! target, with whatever client the caller hands in (the namespace's
//! remediator: the operator holds a sync only where the namespace's owner
//! and the GitOps object's owner granted it).

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::{Value, json};

use super::sync::{
    HELD_BY_ANNOTATION, HELD_FOR_STEP_ANNOTATION, SyncRead, api_version, plural, state_of,
    with_source,
};
use crate::crd::{GitOpsKind, GitOpsOwner, WorkloadRef};

/// The field manager of the operator's writes to GitOps objects.
pub const GITOPS_FIELD_MANAGER: &str = "healing-guard-operator-gitops";

fn resource(kind: GitOpsKind) -> ApiResource {
    let gvk = GroupVersionKind::gvk(kind.group(), api_version(kind), &format!("{kind:?}"));
    ApiResource::from_gvk_with_plural(&gvk, plural(kind))
}

fn api(client: &Client, owner: &GitOpsOwner) -> Option<Api<DynamicObject>> {
    let namespace = owner.namespace.as_deref()?;
    Some(Api::namespaced_with(
        client.clone(),
        namespace,
        &resource(owner.kind),
    ))
}

/// Reads the GitOps object `owner` reconciling `target` in `namespace`,
/// and its source. A refusal or a kind not served is an answer, not an
/// error: the step says so instead of retrying for ever.
pub async fn read(
    client: &Client,
    owner: &GitOpsOwner,
    namespace: &str,
    target: &WorkloadRef,
) -> Result<SyncRead, kube::Error> {
    let Some(api) = api(client, owner) else {
        return Ok(SyncRead::Refused(format!("{owner} names no namespace")));
    };
    let object = match api.get_opt(&owner.name).await {
        Ok(Some(object)) => object,
        Ok(None) => return Ok(SyncRead::Missing),
        Err(error) => return answer(error),
    };
    let object = serde_json::to_value(&object).unwrap_or(Value::Null);
    let state = state_of(owner, &object, namespace, target);
    // An Application's status says where Git is; a Flux object's source does.
    if owner.kind == GitOpsKind::Application {
        return Ok(SyncRead::Read(Box::new(state)));
    }
    let Some(source) = state.source.clone() else {
        return Ok(SyncRead::Read(Box::new(state)));
    };
    let source_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", &source.kind),
        &super::sync::source_plural(&source.kind),
    );
    let sources: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &source.namespace, &source_resource);
    match sources.get_opt(&source.name).await {
        Ok(Some(found)) => {
            let found = serde_json::to_value(&found).unwrap_or(Value::Null);
            Ok(SyncRead::Read(Box::new(with_source(state, &found))))
        }
        // The object is known; where Git is now is not, and the hold says why.
        Ok(None) => Ok(SyncRead::Read(Box::new(unread(
            state,
            format!("{source} not found"),
        )))),
        Err(error) if is_not_served(&error) => Ok(SyncRead::Read(Box::new(unread(
            state,
            format!("{source}: its kind is not served by this cluster"),
        )))),
        Err(error) if crate::authority::refusal(&error).is_some() => {
            let words = crate::authority::refusal(&error).unwrap_or_default();
            Ok(SyncRead::Read(Box::new(unread(
                state,
                format!("{source}: {words}"),
            ))))
        }
        Err(error) => Err(error),
    }
}

fn unread(mut state: super::SyncState, why: String) -> super::SyncState {
    state.source_unread = Some(why);
    state
}

fn answer(error: kube::Error) -> Result<SyncRead, kube::Error> {
    if let Some(words) = crate::authority::refusal(&error) {
        return Ok(SyncRead::Refused(words));
    }
    if is_not_served(&error) {
        return Ok(SyncRead::Refused(
            "its kind is not served by this cluster".into(),
        ));
    }
    Err(error)
}

fn is_not_served(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Suspends `owner` for incident `holder` (`namespace/name`) and its step
/// `step`: `spec.suspend` and the two annotations, applied server-side.
pub async fn suspend(
    client: &Client,
    owner: &GitOpsOwner,
    holder: &str,
    step: &str,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let body = body(owner, Some((holder, step)));
    apply(client, owner, &body, dry_run).await
}

/// Lifts the hold: `spec.suspend` false, the annotations gone (the
/// operator's field manager no longer applies them).
pub async fn resume(client: &Client, owner: &GitOpsOwner) -> Result<(), kube::Error> {
    let body = body(owner, None);
    apply(client, owner, &body, false).await
}

fn body(owner: &GitOpsOwner, held: Option<(&str, &str)>) -> Value {
    let mut metadata = json!({"name": owner.name, "namespace": owner.namespace});
    if let Some((holder, step)) = held {
        metadata["annotations"] =
            json!({HELD_BY_ANNOTATION: holder, HELD_FOR_STEP_ANNOTATION: step});
    }
    // Argo CD holds by self-heal off (new commits still sync); Flux by suspend.
    let spec = match owner.kind {
        GitOpsKind::Application => {
            json!({"syncPolicy": {"automated": {"selfHeal": held.is_none()}}})
        }
        _ => json!({"suspend": held.is_some()}),
    };
    json!({
        "apiVersion": format!("{}/{}", owner.kind.group(), api_version(owner.kind)),
        "kind": format!("{:?}", owner.kind),
        "metadata": metadata,
        "spec": spec,
    })
}

async fn apply(
    client: &Client,
    owner: &GitOpsOwner,
    body: &Value,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let Some(api) = api(client, owner) else {
        return Ok(());
    };
    let mut params = PatchParams::apply(GITOPS_FIELD_MANAGER).force();
    params.dry_run = dry_run;
    api.patch(&owner.name, &params, &Patch::Apply(body)).await?;
    Ok(())
}

/// The command that lifts a hold by hand.
pub fn undo_command(owner: &GitOpsOwner) -> String {
    let namespace = owner.namespace.as_deref().unwrap_or("default");
    let patch = match owner.kind {
        GitOpsKind::Application => r#"{"spec":{"syncPolicy":{"automated":{"selfHeal":true}}}}"#,
        _ => r#"{"spec":{"suspend":false}}"#,
    };
    format!(
        "kubectl -n {namespace} patch {} {} --type=merge -p '{patch}'",
        format!("{:?}", owner.kind).to_lowercase(),
        owner.name
    )
}
