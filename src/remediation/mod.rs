//! Remediation: the containment ladder of a policy rule (or an incident's own
//! list of actions), the safety limits around it, the actions themselves
//! (one file each), and the known-good state they restore.

pub mod actions;
pub mod known_good;
pub mod ladder;
pub mod safety;
pub mod step_id;
