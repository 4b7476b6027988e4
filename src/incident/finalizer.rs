//! The incident's hold on its own deletion while a restore may have its
//! writers down (`wind_down::WRITERS_DOWN_FINALIZER`): added before the
//! writers can go down, removed once they are back. A deletion meanwhile
//! waits, and the restore winds down first.

use std::sync::Arc;

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::wind_down::WRITERS_DOWN_FINALIZER;
use crate::{context::Context, crd::Incident, names::FIELD_MANAGER, reconcile::Error};

/// Makes the incident carry the finalizer (`hold`) or not; returns the
/// incident as written, or as it was when nothing had to change. The write
/// is conditional on the version read, and keeps others' finalizers.
pub async fn hold(
    ctx: &Context,
    incident: &Arc<Incident>,
    hold: bool,
) -> Result<Arc<Incident>, Error> {
    let has = incident
        .finalizers()
        .iter()
        .any(|f| f == WRITERS_DOWN_FINALIZER);
    if has == hold {
        return Ok(Arc::clone(incident));
    }
    ctx.may_write()?;
    let mut finalizers: Vec<String> = incident
        .finalizers()
        .iter()
        .filter(|f| *f != WRITERS_DOWN_FINALIZER)
        .cloned()
        .collect();
    if hold {
        finalizers.push(WRITERS_DOWN_FINALIZER.to_owned());
    }
    let namespace = incident
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": incident.resource_version(),
    }});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let written = Api::<Incident>::namespaced(ctx.client.clone(), &namespace)
        .patch(&incident.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    Ok(Arc::new(written))
}
