//! Leader election and fencing: only the holder of a Lease runs the
//! controllers and the detector, and only while it can show it still holds
//! it. kube-lease-manager acquires and renews the Lease; the [`Fence`]
//! here confirms each renewal by reading the Lease back, and keeps a local
//! deadline shorter than the lease duration. Past the deadline (renewals
//! failing, the API out of reach, the Lease taken) the replica is no longer
//! leader: every write is refused at the one gate they all pass, and the
//! operator stops at once, cancelling work in flight rather than draining it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

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

/// A write refused because this replica may no longer act.
#[derive(Debug, thiserror::Error)]
#[error("not the leader (lease {0}): write dropped")]
pub struct Fenced(pub String);

/// Whether this replica may write now.
pub struct Fence {
    lease: String,
    /// Local deadline, Unix milliseconds: no write after it unless a
    /// renewal is confirmed before.
    valid_until_ms: AtomicI64,
    lost: AtomicBool,
    on_loss: CancellationToken,
}

impl Fence {
    fn new(lease: &str, valid_for: Duration) -> Self {
        let fence = Fence {
            lease: lease.to_owned(),
            valid_until_ms: AtomicI64::new(0),
            lost: AtomicBool::new(false),
            on_loss: CancellationToken::new(),
        };
        fence.extend_to(
            Timestamp::now()
                .checked_add(valid_for)
                .unwrap_or(Timestamp::MAX),
        );
        fence
    }

    /// A fence for a replica that does not elect (the only one): always current.
    pub fn unfenced() -> Arc<Self> {
        Arc::new(Fence {
            lease: String::new(),
            valid_until_ms: AtomicI64::new(i64::MAX),
            lost: AtomicBool::new(false),
            on_loss: CancellationToken::new(),
        })
    }

    /// Whether the lease is held and its last renewal recent enough.
    pub fn is_current(&self) -> bool {
        !self.lost.load(Ordering::SeqCst)
            && Timestamp::now().as_millisecond() < self.valid_until_ms.load(Ordering::SeqCst)
    }

    /// The gate every write passes: Ok while current.
    pub fn check(&self) -> Result<(), Fenced> {
        if self.is_current() {
            Ok(())
        } else {
            Err(Fenced(self.lease.clone()))
        }
    }

    /// Whether leadership was lost (for good: this process stops).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Resolves once leadership is lost.
    pub async fn lost(&self) {
        self.on_loss.cancelled().await;
    }

    fn extend_to(&self, until: Timestamp) {
        self.valid_until_ms
            .fetch_max(until.as_millisecond(), Ordering::SeqCst);
    }

    fn lose(&self, why: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            error!(lease = %self.lease, why, "lost the lease: stopping at once");
            self.on_loss.cancel();
        }
    }
}

/// Held leadership: its fence, and the lease manager to release.
pub struct Leadership {
    fence: Arc<Fence>,
    tasks: Vec<JoinHandle<()>>,
    manager: JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>,
    release: Option<watch::Receiver<bool>>,
}

impl Leadership {
    /// The gate this replica's writes pass.
    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// Gives the lease up, so a standby takes over at once rather than after
    /// the lease expires.
    pub async fn release(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Dropping the last receiver tells the manager to release the lock.
        self.release.take();
        let _ = self.manager.await;
    }
}

/// Waits until this replica holds the lease (None if `shutdown` comes first).
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
    let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(duration)
        .with_grace(renew_grace(duration))
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
    let renew_deadline = renew_deadline(duration);
    let fence = Arc::new(Fence::new(&config.lease_name, renew_deadline));
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let confirm = tokio::spawn(confirm_renewals(
        leases,
        config.clone(),
        renew_deadline,
        fence.clone(),
    ));
    let follow = tokio::spawn(follow_manager(is_leader.clone(), fence.clone()));
    Ok(Some(Leadership {
        fence,
        tasks: vec![confirm, follow],
        manager,
        release: Some(is_leader),
    }))
}

/// How long before the lease expires the manager renews it: it renews a
/// third of the way in, so a renewal is made and confirmed well before the
/// renew deadline (renewing at the deadline fenced every write for a moment
/// on every renewal).
pub fn renew_grace(duration_seconds: u64) -> u64 {
    let duration = duration_seconds.max(3);
    duration - (duration / 3).max(1)
}

/// How long after a renewal the replica may still act: two thirds of the
/// lease duration, so it has stopped well before a standby may take over.
pub fn renew_deadline(duration_seconds: u64) -> Duration {
    Duration::from_millis(duration_seconds.max(3) * 1000 * 2 / 3)
}

/// Reads the Lease back a few times per renew deadline: a renewal by this
/// identity moves the deadline on; another holder, or no confirmed renewal
/// before the deadline, is a loss.
async fn confirm_renewals(
    leases: Api<Lease>,
    config: LeaderConfig,
    renew_deadline: Duration,
    fence: Arc<Fence>,
) {
    let every = (renew_deadline / 4).max(Duration::from_millis(250));
    loop {
        match leases.get(&config.lease_name).await {
            Ok(lease) => {
                let spec = lease.spec.unwrap_or_default();
                match spec.holder_identity {
                    Some(holder) if holder == config.identity => {
                        if let Some(renewed) = spec.renew_time {
                            let until = renewed
                                .0
                                .checked_add(renew_deadline)
                                .unwrap_or(Timestamp::MAX);
                            fence.extend_to(until);
                        }
                    }
                    holder => {
                        let holder = holder.unwrap_or_else(|| "nobody".into());
                        fence.lose(&format!("the lease is held by {holder}"));
                        return;
                    }
                }
            }
            Err(error) => {
                warn!(%error, "could not confirm the lease; acting until the renew deadline")
            }
        }
        if !fence.is_current() {
            fence.lose("no renewal confirmed before the renew deadline");
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// The lease manager's own view: leadership given up, or its task gone, is a loss.
async fn follow_manager(mut is_leader: watch::Receiver<bool>, fence: Arc<Fence>) {
    loop {
        if is_leader.changed().await.is_err() {
            fence.lose("the lease manager stopped");
            return;
        }
        if !*is_leader.borrow_and_update() {
            fence.lose("the lease manager reports the lease lost");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renew_deadline_comes_before_a_standby_may_take_over() {
        assert_eq!(renew_deadline(15), Duration::from_secs(10));
        assert_eq!(
            renew_deadline(1),
            Duration::from_secs(2),
            "at least 3 s of lease"
        );
    }

    #[test]
    fn the_lease_is_renewed_well_before_the_renew_deadline() {
        for duration in [3, 4, 15, 60, 300] {
            let renewed_after = Duration::from_secs(duration - renew_grace(duration));
            let deadline = renew_deadline(duration);
            assert!(
                renewed_after * 2 <= deadline,
                "{duration} s: renewed after {renewed_after:?}, deadline {deadline:?}"
            );
            assert!(renew_grace(duration) < duration);
        }
        assert_eq!(renew_grace(15), 10, "renewed every 5 s");
    }

    #[test]
    fn a_fence_is_current_until_its_deadline_or_a_loss() {
        let fence = Fence::new("l", Duration::from_secs(60));
        assert!(fence.check().is_ok());
        fence.lose("test");
        assert!(fence.is_lost() && fence.check().is_err());

        let expired = Fence::new("l", Duration::ZERO);
        assert!(!expired.is_current(), "past its deadline");
        expired.extend_to(
            Timestamp::now()
                .checked_add(Duration::from_secs(5))
                .unwrap(),
        );
        assert!(expired.is_current(), "a confirmed renewal moves it on");
        assert!(Fence::unfenced().is_current());
    }
}
