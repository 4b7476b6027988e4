//! Leader election: only the holder of a Lease runs the controllers and the
//! detector, so two replicas can run and one takes over when the other goes.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::names::LEADER_FIELD_MANAGER;

/// Where the Lease lives and how long it holds.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// Seconds a holder keeps the lease without renewing it (at least 3).
    pub duration_seconds: u64,
}

/// Why leadership could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {name} in {namespace}: {source}")]
    Lease {
        name: String,
        namespace: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("the lease manager stopped before this replica became leader")]
    ManagerGone,
}

/// Held leadership: watches for its loss and releases the lease when dropped
/// through [`Leadership::release`].
pub struct Leadership {
    watcher: JoinHandle<()>,
    manager: JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>,
    lost: Arc<AtomicBool>,
}

impl Leadership {
    /// Whether the lease was lost while the controllers ran.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Gives the lease up, so a standby takes over at once rather than after
    /// the lease expires.
    pub async fn release(self) {
        // Dropping the last receiver tells the manager to release the lock.
        self.watcher.abort();
        let _ = self.watcher.await;
        let _ = self.manager.await;
    }
}

/// Waits until this replica holds the lease (None if `shutdown` comes first).
/// Losing the lease later cancels `shutdown`: a replica that is no longer
/// leader must stop acting at once.
pub async fn acquire(
    client: Client,
    config: &LeaderConfig,
    shutdown: CancellationToken,
) -> Result<Option<Leadership>, LeaderError> {
    let lease_error = |source| LeaderError::Lease {
        name: config.lease_name.clone(),
        namespace: config.namespace.clone(),
        source,
    };
    let duration = config.duration_seconds.max(3);
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .with_field_manager(LEADER_FIELD_MANAGER)
        .build()
        .await
        .map_err(lease_error)?;
    let (mut is_leader, manager) = manager.watch().await;
    info!(lease = %config.lease_name, identity = %config.identity, "waiting to become leader");
    while !*is_leader.borrow_and_update() {
        tokio::select! {
            changed = is_leader.changed() => if changed.is_err() { return Err(LeaderError::ManagerGone) },
            () = shutdown.cancelled() => return Ok(None),
        }
    }
    info!(lease = %config.lease_name, identity = %config.identity, "became leader");
    let lost = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_for_loss(is_leader, lost.clone(), shutdown));
    Ok(Some(Leadership {
        watcher,
        manager,
        lost,
    }))
}

async fn watch_for_loss(
    mut is_leader: watch::Receiver<bool>,
    lost: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    while is_leader.changed().await.is_ok() {
        if !*is_leader.borrow_and_update() {
            error!("lost the lease: stopping");
            lost.store(true, Ordering::Relaxed);
            shutdown.cancel();
            return;
        }
    }
}
