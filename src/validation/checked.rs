//! Policies checked once per generation. Validation is pure but not free
//! (durations parsed, URLs and templates checked), and the detector and
//! every incident reconcile ask about the same policy again and again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use super::Problem;
use crate::crd::RemediationPolicy;

/// A policy generation: its uid and generation.
type Generation = (String, i64);

/// Most policy generations remembered; past it the memory starts over.
const MAX_REMEMBERED: usize = 10_000;

/// The problems of each policy generation seen (by uid and generation).
#[derive(Debug, Default)]
pub struct Checked {
    problems: Mutex<HashMap<Generation, Arc<Vec<Problem>>>>,
}

impl Checked {
    /// The problems of `policy` (none: it is valid). A policy without uid
    /// or generation (not from the API server) is checked each time.
    pub fn policy(&self, policy: &RemediationPolicy) -> Arc<Vec<Problem>> {
        let (Some(uid), Some(generation)) = (&policy.metadata.uid, policy.metadata.generation)
        else {
            return Arc::new(super::policy(&policy.spec));
        };
        let key = (uid.clone(), generation);
        let mut problems = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = problems.get(&key) {
            return Arc::clone(found);
        }
        if problems.len() >= MAX_REMEMBERED {
            problems.clear();
        }
        let found = Arc::new(super::policy(&policy.spec));
        problems.insert(key, Arc::clone(&found));
        found
    }

    /// Whether `policy` is valid.
    pub fn valid(&self, policy: &RemediationPolicy) -> bool {
        self.policy(policy).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(uid: Option<&str>, generation: i64, rules: serde_json::Value) -> RemediationPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
            "metadata": {"name": "p", "namespace": "shop", "uid": uid, "generation": generation},
            "spec": {"targets": [{"kind": "Deployment", "names": ["api"]}], "rules": rules}
        }))
        .unwrap()
    }

    #[test]
    fn each_generation_is_checked_once_and_a_new_one_again() {
        let checked = Checked::default();
        let valid = serde_json::json!([{"name": "r", "when": {"symptom": "CrashLoopBackOff"},
            "severity": "P1", "type": "ServiceOutage", "actions": [{"action": "restart"}]}]);
        let invalid = serde_json::json!([{"name": "r", "when": {"symptom": "CrashLoopBackOff"},
            "severity": "P1", "type": "ServiceOutage",
            "actions": [{"action": "restart"}, {"action": "restart"}]}]);
        let first = checked.policy(&policy(Some("u"), 1, valid.clone()));
        assert!(first.is_empty());
        assert!(Arc::ptr_eq(
            &first,
            &checked.policy(&policy(Some("u"), 1, valid))
        ));
        // The next generation is checked anew.
        assert!(!checked.valid(&policy(Some("u"), 2, invalid.clone())));
        // Without a uid nothing is remembered: each is checked.
        assert!(!checked.valid(&policy(None, 1, invalid)));
    }
}
