//! Per-object retry delays for failed reconciles: exponential with jitter
//! (kube-runtime's backoff), capped, and reset by the next success, so one
//! object that keeps failing neither hammers the API server nor slows the others.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::runtime::watcher::ExponentialBackoff;

/// The first retry of a failed reconcile.
const FIRST: Duration = Duration::from_secs(1);
/// The longest wait between retries.
const CAP: Duration = Duration::from_secs(300);

/// One object's failures since its last success.
struct Failing {
    backoff: ExponentialBackoff,
    failures: u32,
    /// No new attempt at a change before this.
    not_before: Instant,
}

/// The retry delays of every object that failed since its last success.
#[derive(Default)]
pub struct Backoffs {
    per_object: Mutex<HashMap<String, Failing>>,
}

impl Backoffs {
    /// Counts one more failure of `key`; returns how long to wait before
    /// retrying it.
    pub fn next(&self, key: &str) -> Duration {
        let Ok(mut per_object) = self.per_object.lock() else {
            return CAP;
        };
        let failing = per_object.entry(key.to_owned()).or_insert_with(|| {
            let builder = backon::ExponentialBuilder::default()
                .with_min_delay(FIRST)
                .with_max_delay(CAP)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times();
            Failing {
                backoff: ExponentialBackoff::from(builder),
                failures: 0,
                not_before: Instant::now(),
            }
        });
        // Jitter is added on top of the exponential delay; the cap holds.
        let delay = failing.backoff.next().map_or(CAP, |delay| delay.min(CAP));
        failing.failures = failing.failures.saturating_add(1);
        failing.not_before = Instant::now() + delay;
        delay
    }

    /// How many times in a row `key` failed.
    pub fn failures(&self, key: &str) -> u32 {
        self.per_object
            .lock()
            .ok()
            .and_then(|per_object| per_object.get(key).map(|f| f.failures))
            .unwrap_or(0)
    }

    /// How long `key` must still wait after its last failure, if at all.
    pub fn wait_left(&self, key: &str) -> Option<Duration> {
        let per_object = self.per_object.lock().ok()?;
        let left = per_object
            .get(key)?
            .not_before
            .checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some(left)
    }

    /// `key` reconciled: its next failure starts from the first delay again.
    pub fn reset(&self, key: &str) {
        if let Ok(mut per_object) = self.per_object.lock() {
            per_object.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_a_success_starts_over() {
        let backoffs = Backoffs::default();
        let delays: Vec<Duration> = (0..12).map(|_| backoffs.next("a")).collect();
        assert!(delays[0] <= Duration::from_secs(2), "{delays:?}");
        assert!(delays[5] > delays[0], "{delays:?}");
        assert!(delays.iter().all(|d| *d <= CAP), "{delays:?}");
        assert_eq!(delays[11], CAP, "{delays:?}");
        assert!(
            backoffs.next("b") <= Duration::from_secs(2),
            "objects back off on their own"
        );
        assert_eq!(backoffs.failures("a"), 12);
        assert!(
            backoffs.wait_left("a").is_some(),
            "a change waits out its delay"
        );
        backoffs.reset("a");
        assert_eq!(backoffs.failures("a"), 0);
        assert_eq!(backoffs.wait_left("a"), None);
        assert!(backoffs.next("a") <= Duration::from_secs(2));
    }
}
