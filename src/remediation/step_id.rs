//! Step ids and the names derived from them: stable across restarts, so
//! what a step creates is found again rather than made twice.

/// The ledger id of a step: stable across restarts, unique per incident.
pub fn step_id(incident_uid: &str, entry: usize, step_name: &str, round: i32) -> String {
    let prefix: String = incident_uid.chars().filter(|c| *c != '-').take(8).collect();
    format!("{prefix}-{entry}-{step_name}-{round}")
}

/// The name of the Job a `runJob` step creates: from the step's id, so
/// that it is created once (found again after a restart), unique per
/// incident, entry and round, and a valid name (at most 63 characters).
pub fn job_name(step_id: &str) -> String {
    // step_id is `{uid prefix}-{entry}-{step name}-{round}`.
    let parts = step_id.split_once('-').and_then(|(prefix, rest)| {
        let (entry, rest) = rest.split_once('-')?;
        let (name, round) = rest.rsplit_once('-')?;
        Some((prefix, entry, name, round))
    });
    let mut name = match parts {
        Some((prefix, entry, name, round)) => format!("hg-{prefix}-{entry}-{round}-{name}"),
        None => format!("hg-{step_id}"),
    };
    name.truncate(63);
    name.trim_end_matches(['-', '.']).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_named_after_its_step_within_the_limit() {
        let id = step_id("0f0e1d2c-aaaa", 2, "smoke-test", 1);
        assert_eq!(job_name(&id), "hg-0f0e1d2c-2-1-smoke-test");
        let long = step_id("0f0e1d2c-aaaa", 12, &"x".repeat(63), 3);
        let name = job_name(&long);
        assert_eq!(name.len(), 63);
        assert!(
            name.starts_with("hg-0f0e1d2c-12-3-xxx"),
            "the round survives: {name}"
        );
        assert_ne!(job_name(&step_id("0f0e1d2c", 12, &"x".repeat(63), 4)), name);
    }

    #[test]
    fn step_ids_are_stable() {
        assert_eq!(
            step_id("1f2e3d4c-aaaa-bbbb", 1, "restart", 1),
            "1f2e3d4c-1-restart-1"
        );
    }
}
