//! Remediation: the containment ladder of a policy rule (or an incident's own
//! list of actions), planned by pure code and carried out step by step.

pub mod actions;
pub mod plan;
pub mod safety;
