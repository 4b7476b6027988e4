//! One watch per resource kind, shared by every part of the operator: a
//! reflector store to read from, and a fan-out of what changed to each
//! consumer (the controllers' triggers, the detector).
//!
//! kube-runtime's shared streams carry applied objects only; the detector
//! must also see deletions (a policy removed stops guarding its targets), so
//! the fan-out here is a broadcast of [`Change`]s. A consumer that falls
//! behind is told to resync from the store instead of slowing the others.

use std::{fmt::Debug, future::Future, hash::Hash, sync::Arc};

use futures::{Stream, StreamExt, stream};
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tracing::warn;

/// How many changes a slow consumer may fall behind before it resyncs.
const FAN_OUT_CAPACITY: usize = 1024;

/// What happened to the objects of a kind.
#[derive(Debug)]
pub enum Change<K> {
    /// Created or changed.
    Applied(Arc<K>),
    /// Deleted.
    Deleted(Arc<K>),
    /// The store was (re)filled from a LIST, or this consumer fell behind:
    /// look at everything again.
    Resynced,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(object) => Change::Applied(object.clone()),
            Change::Deleted(object) => Change::Deleted(object.clone()),
            Change::Resynced => Change::Resynced,
        }
    }
}

impl<K> Change<K> {
    /// The same change, of the object seen through `view`.
    pub fn map<T>(self, view: impl Fn(Arc<K>) -> T) -> Change<T> {
        match self {
            Change::Applied(object) => Change::Applied(Arc::new(view(object))),
            Change::Deleted(object) => Change::Deleted(Arc::new(view(object))),
            Change::Resynced => Change::Resynced,
        }
    }
}

/// A receiver of changes that turns falling behind into a resync.
pub struct Changes<K> {
    receiver: broadcast::Receiver<Change<K>>,
}

impl<K: Clone> Changes<K> {
    /// The next change; None once the watch has stopped.
    pub async fn next(&mut self) -> Option<Change<K>> {
        match self.receiver.recv().await {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(
                    missed,
                    "a consumer fell behind its watch; resyncing from the store"
                );
                Some(Change::Resynced)
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// One watch of kind `K`: its store and its fan-out.
pub struct Shared<K>
where
    K: Resource + 'static,
    K::DynamicType: Hash + Eq,
{
    store: Store<K>,
    sender: broadcast::Sender<Change<K>>,
}

impl<K> Clone for Shared<K>
where
    K: Resource + 'static,
    K::DynamicType: Hash + Eq,
{
    fn clone(&self) -> Self {
        Shared {
            store: self.store.clone(),
            sender: self.sender.clone(),
        }
    }
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    /// A watch of `api`, with managedFields dropped (nothing here reads them,
    /// and they are often half of an object). Returns the handle and the
    /// future that drives the watch; it runs until dropped.
    pub fn watch(
        api: Api<K>,
        config: watcher::Config,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (store, writer) = reflector::store();
        let (sender, _) = broadcast::channel(FAN_OUT_CAPACITY);
        let shared = Shared {
            store: store.clone(),
            sender: sender.clone(),
        };
        let kind = K::kind(&()).into_owned();
        let driver = watcher(api, config)
            .default_backoff()
            .modify(|object| object.meta_mut().managed_fields = None)
            .reflect(writer)
            .for_each(move |event| {
                let change = match event {
                    Ok(watcher::Event::Apply(object)) => {
                        // The store's copy, not a second one.
                        let stored = store.get(&ObjectRef::from_obj(&object));
                        Some(Change::Applied(stored.unwrap_or_else(|| Arc::new(object))))
                    }
                    Ok(watcher::Event::Delete(object)) => Some(Change::Deleted(Arc::new(object))),
                    Ok(watcher::Event::InitDone) => Some(Change::Resynced),
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                    // The watcher retries with backoff; an undecodable object
                    // or a lost connection must not end the watch.
                    Err(error) => {
                        warn!(%kind, %error, "watch error; retrying");
                        None
                    }
                };
                if let Some(change) = change {
                    // No receiver yet is fine: consumers start from the store.
                    let _ = sender.send(change);
                }
                futures::future::ready(())
            });
        (shared, driver)
    }

    /// The store every consumer reads from.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The changes from now on.
    pub fn changes(&self) -> Changes<K> {
        Changes {
            receiver: self.sender.subscribe(),
        }
    }

    /// Every object in the store, then every object created or changed
    /// (and every object again after a resync): a controller's own trigger
    /// stream. Subscribes at once, so nothing is missed between this call
    /// and the stream's first poll.
    pub fn applied(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let store = self.store.clone();
        let current = stream::once(async move { stream::iter(store.state()) }).flatten();
        current.chain(self.changed(false))
    }

    /// Objects created, changed or deleted from now on (every object again
    /// after a resync): a trigger of related objects.
    pub fn touched(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.changed(true)
    }

    fn changed(&self, with_deleted: bool) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let changes = self.changes();
        let store = self.store.clone();
        stream::unfold(changes, move |mut changes| {
            let store = store.clone();
            async move {
                loop {
                    let batch = match changes.next().await? {
                        Change::Applied(object) => vec![object],
                        Change::Deleted(object) if with_deleted => vec![object],
                        Change::Deleted(_) => continue,
                        Change::Resynced => store.state(),
                    };
                    return Some((stream::iter(batch), changes));
                }
            }
        })
        .flatten()
    }
}
