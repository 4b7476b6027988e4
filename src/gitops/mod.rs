//! GitOps awareness: which GitOps object reconciles a workload, so that a
//! change Git would undo is made with that object held (issue 24).

pub mod client;
pub mod hold;
pub mod owner;
pub mod revert;
pub mod smart_http;
pub mod sync;

pub use owner::owner_of;

/// How often a held GitOps object still reconciling is looked at before
/// the step's change is made.
pub const BUSY_POLL: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a step waits for a reconcile begun before its hold to end.
pub const BUSY_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);
pub use sync::{SyncRead, SyncState};
