//! GitOps awareness: which GitOps object reconciles a workload, so that a
//! change Git would undo is made with that object held (issue 24).

pub mod client;
pub mod hold;
pub mod owner;
pub mod revert;
pub mod smart_http;
pub mod sync;

pub use owner::owner_of;
pub use sync::{SyncRead, SyncState};
