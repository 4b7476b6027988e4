//! Runs the controllers: waits for the CRDs, then drives Incidents and
//! RemediationPolicies until shutdown.

pub mod error;
pub mod incident;
pub mod policy;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::apps::v1::{Deployment, StatefulSet},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt, Resource, ResourceExt,
    api::{PartialObjectMeta, Patch},
    runtime::{
        Controller, WatchStreamExt, conditions, predicates,
        reflector::{ObjectRef, Store},
        wait::await_condition,
        watcher,
    },
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    context::Context,
    crd::{Incident, RemediationPolicy},
    detector::writer::POLICY_LABEL,
};
pub use error::Error;

/// A namespaced kind the typed API can read and list.
pub trait NamespacedKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> NamespacedKind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// Where the controllers look.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Watch only this namespace; all namespaces when None.
    pub namespace: Option<String>,
}

impl Scope {
    /// An Api for a namespaced kind within the scope.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
}

/// Errors that stop the operator from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("waiting for CRD {name} to be established: {source}")]
    Crd {
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
}

/// Blocks until both CRDs are established, logging while it waits.
pub async fn wait_for_crds(client: &Client) -> Result<(), StartError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [RemediationPolicy::crd_name(), Incident::crd_name()] {
        info!(crd = name, "waiting for CRD to be established");
        await_condition(api.clone(), name, conditions::is_crd_established())
            .await
            .map_err(|source| StartError::Crd {
                name: name.into(),
                source,
            })?;
    }
    Ok(())
}

/// Runs both controllers until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let config = kube::runtime::controller::Config::default().debounce(Duration::from_millis(500));

    let incident_controller = Controller::new(
        scope.api::<Incident>(&client),
        watcher::Config::default().any_semantic(),
    );
    let _ = ctx.metrics.incident_store.set(incident_controller.store());
    let incidents = incident_controller
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(incident::reconcile, incident::error_policy, ctx.clone())
        .for_each(|result| async move { log_result("incident", result) });

    let policy_controller = Controller::new(
        scope.api::<RemediationPolicy>(&client),
        watcher::Config::default().any_semantic(),
    );
    let store = policy_controller.store();
    // A workload appearing or relabelled can change what a policy matches.
    let deployments = workload_triggers(scope.api::<PartialObjectMeta<Deployment>>(&client));
    let statefulsets = workload_triggers(scope.api::<PartialObjectMeta<StatefulSet>>(&client));
    // A detected incident updates its policy's lastTriggered.
    let opened = watcher(
        scope.api::<PartialObjectMeta<Incident>>(&client),
        watcher::Config::default()
            .any_semantic()
            .labels(POLICY_LABEL),
    )
    .touched_objects()
    // Every change: step results (status) move the policy's circuit breaker.
    .predicate_filter(predicates::resource_version, Default::default());
    let policies = policy_controller
        .with_config(config)
        .watches_stream(deployments, policies_in_namespace(store.clone()))
        .watches_stream(statefulsets, policies_in_namespace(store))
        .watches_stream(opened, |incident| {
            let policy = incident
                .metadata
                .labels
                .as_ref()?
                .get(POLICY_LABEL)?
                .clone();
            let namespace = incident.metadata.namespace.as_deref()?;
            Some(ObjectRef::new(&policy).within(namespace))
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(policy::reconcile, policy::error_policy, ctx.clone())
        .for_each(|result| async move { log_result("remediationpolicy", result) });

    let detector =
        crate::detector::run(client.clone(), ctx.metrics.clone(), scope.clone(), shutdown);

    info!(
        namespace = scope.namespace.as_deref().unwrap_or("<all>"),
        "controllers started"
    );
    tokio::join!(incidents, policies, detector);
    info!("controllers stopped");
}

fn workload_triggers<K>(
    api: Api<PartialObjectMeta<K>>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    PartialObjectMeta<K>: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    watcher(api, watcher::Config::default().any_semantic())
        .touched_objects()
        .predicate_filter(predicates::labels, Default::default())
}

fn policies_in_namespace<K>(
    store: Store<RemediationPolicy>,
) -> impl Fn(PartialObjectMeta<K>) -> Vec<ObjectRef<RemediationPolicy>> + Send + Sync + 'static {
    move |workload| {
        let namespace = workload.metadata.namespace;
        store
            .state()
            .iter()
            .filter(|policy| policy.namespace() == namespace)
            .map(|policy| ObjectRef::from_obj(policy.as_ref()))
            .collect()
    }
}

fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(controller: &str, result: Result<T, E>) {
    // Reconcile errors are logged by the error policies; these are scheduling and watch errors.
    if let Err(error) = result {
        warn!(controller, %error, "controller stream error");
    }
}

/// A server-side apply patch that sets an object's status.
pub fn status_patch<K>(status: &impl Serialize) -> Result<Patch<serde_json::Value>, Error>
where
    K: Resource<DynamicType = ()>,
{
    let status = serde_json::to_value(status).map_err(Error::Serialize)?;
    Ok(Patch::Apply(serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })))
}
