//! GitOps awareness: which GitOps object reconciles a workload, so that a
//! change Git would undo is made with that object held (issue 24).

pub mod owner;

pub use owner::owner_of;
