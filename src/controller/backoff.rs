//! Per-object retry delays for failed reconciles: exponential with jitter
//! (kube-runtime's backoff), capped, and reset by the next success, so one
//! object that keeps failing neither hammers the API server nor slows the others.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use kube::runtime::{utils::Backoff, watcher::ExponentialBackoff};

/// The first retry of a failed reconcile.
const FIRST: Duration = Duration::from_secs(1);
/// The longest wait between retries.
const CAP: Duration = Duration::from_secs(300);

/// The retry delays of every object that failed since its last success.
#[derive(Default)]
pub struct Backoffs {
    per_object: Mutex<HashMap<String, ExponentialBackoff>>,
}

impl Backoffs {
    /// How long to wait before retrying `key` after one more failure.
    pub fn next(&self, key: &str) -> Duration {
        let Ok(mut per_object) = self.per_object.lock() else {
            return CAP;
        };
        per_object
            .entry(key.to_owned())
            .or_insert_with(|| {
                let builder = backon::ExponentialBuilder::default()
                    .with_min_delay(FIRST)
                    .with_max_delay(CAP)
                    .with_factor(2.0)
                    .with_jitter()
                    .without_max_times();
                ExponentialBackoff::from(builder)
            })
            .next()
            // Jitter is added on top of the exponential delay; the cap holds.
            .map_or(CAP, |delay| delay.min(CAP))
    }

    /// `key` reconciled: its next failure starts from the first delay again.
    pub fn reset(&self, key: &str) {
        if let Ok(mut per_object) = self.per_object.lock()
            && let Some(mut backoff) = per_object.remove(key)
        {
            backoff.reset();
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
        backoffs.reset("a");
        assert!(backoffs.next("a") <= Duration::from_secs(2));
    }
}
