//! GitOps awareness: which GitOps object reconciles a workload, so that a
//! change Git would undo is made with that object held (issue 24).

pub mod client;
pub mod hold;
pub mod owner;
pub mod revert;
pub mod smart_http;
pub mod sync;

pub use owner::owner_of;

/// How a hold's line begins in a step's ledger entry: it changed the
/// GitOps object, not the target (the safety limits do not count it as
/// the step's change), and it is kept first when the change follows.
pub const HOLD_LINE: &str = "suspended ";

/// Whether a ledger line is a hold's.
pub fn is_hold_line(line: &str) -> bool {
    line.starts_with(HOLD_LINE)
}

/// How often a held GitOps object still reconciling is looked at before
/// the step's change is made.
pub const BUSY_POLL: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a step waits for a reconcile begun before its hold to end.
pub const BUSY_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);
pub use sync::{SyncRead, SyncState};
