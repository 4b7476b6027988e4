//! Policies tested before merge: a test file's cases run on a virtual
//! clock through the operator's own detector, incident pipeline and
//! notifier, each reading a simulated world instead of the cluster.

pub mod case;
pub mod cluster;
pub mod world;
