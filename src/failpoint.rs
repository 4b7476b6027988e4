//! Fault injection for tests: the operator aborts itself at a named point
//! when `HGO_FAILPOINTS` lists it (comma-separated), as a SIGKILL would
//! stop it there. Tests use it to prove what happens in windows too narrow
//! to hit by chance (a change made, its record not yet saved). Unset, it
//! costs one environment lookup per point.

/// After a remediation change is made, before the status that records it is saved.
pub const AFTER_APPLY: &str = "after-apply";

/// After messages are sent, before the status that records how it went is saved.
pub const AFTER_SEND: &str = "after-send";

/// Aborts the process if `HGO_FAILPOINTS` names `point`.
pub fn hit(point: &str) {
    let armed = std::env::var("HGO_FAILPOINTS")
        .is_ok_and(|points| points.split(',').any(|p| p.trim() == point));
    if armed {
        tracing::error!(point, "failpoint hit: aborting");
        std::process::abort();
    }
}
