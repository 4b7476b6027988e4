//! `status NAME --watch`: the incident now, then each new version of it,
//! until it is closed or deleted. One object, watched by its name.

use futures::{StreamExt, pin_mut};
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};

use super::PluginError;
use crate::crd::Incident;

/// What the watch saw.
#[derive(Clone, Debug)]
pub enum Update {
    /// The incident as it is now.
    Changed(Box<Incident>),
    /// It is gone.
    Deleted,
}

/// Calls `on_update` with the incident as it is, then with each change,
/// and returns once it is closed or deleted. A watch error ends it, as
/// `kubectl get --watch` ends (the watcher's backoff covers a dropped
/// connection first).
pub async fn follow(
    api: &Api<Incident>,
    name: &str,
    mut on_update: impl FnMut(&Update),
) -> Result<(), PluginError> {
    let first = super::get(api, name).await?;
    let mut version = first.resource_version();
    let closed = !first.is_open();
    on_update(&Update::Changed(Box::new(first)));
    if closed {
        return Ok(());
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(api.clone(), config).default_backoff();
    pin_mut!(events);
    // A relist that no longer finds it means it was deleted unseen.
    let mut listed = false;
    while let Some(event) = events.next().await {
        let incident = match event? {
            watcher::Event::Init => {
                listed = false;
                continue;
            }
            watcher::Event::InitDone if !listed => {
                on_update(&Update::Deleted);
                return Ok(());
            }
            watcher::Event::InitDone => continue,
            watcher::Event::Delete(_) => {
                on_update(&Update::Deleted);
                return Ok(());
            }
            watcher::Event::InitApply(incident) => {
                listed = true;
                incident
            }
            watcher::Event::Apply(incident) => incident,
        };
        // The first list repeats what was read already.
        if incident.resource_version() == version {
            continue;
        }
        version = incident.resource_version();
        let closed = !incident.is_open();
        on_update(&Update::Changed(Box::new(incident)));
        if closed {
            return Ok(());
        }
    }
    Ok(())
}
