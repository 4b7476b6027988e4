//! Whether a probe is failing, from its results in order: it starts
//! failing after `failureThreshold` failed checks in a row and is healthy
//! again after `successThreshold` passes in a row, so neither a blip nor
//! one good answer flips it. Pure.

use k8s_openapi::jiff::Timestamp;

/// How one check went.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub passed: bool,
    /// Neither passed nor failed (a query with no data, NaN): it never
    /// counts toward healthy, nor toward failing.
    pub inconclusive: bool,
    /// What was measured (a list's length, a latency in seconds), if anything.
    pub value: Option<f64>,
    /// In words: what was seen, or why it failed.
    pub detail: String,
    pub at: Timestamp,
}

/// A probe's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tracker {
    pub failing: bool,
    /// Failed checks in a row.
    pub failures: i32,
    /// Passed checks in a row.
    pub passes: i32,
    /// When it started failing (the first failed check of the run).
    pub failing_since: Option<Timestamp>,
    /// When its current run of passes began.
    pub passing_since: Option<Timestamp>,
    pub last: Option<Outcome>,
}

/// What a result changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Crossed the failure threshold: the probe is failing now.
    Failed,
    /// Failing, and failed again.
    StillFailing,
    /// Crossed the success threshold: healthy again.
    Recovered,
    /// Nothing a reader need act on.
    None,
}

impl Tracker {
    /// Takes one result, with the probe's thresholds.
    pub fn record(
        &mut self,
        outcome: Outcome,
        failure_threshold: i32,
        success_threshold: i32,
    ) -> Change {
        let at = outcome.at;
        let passed = outcome.passed;
        let inconclusive = outcome.inconclusive;
        self.last = Some(outcome);
        if inconclusive {
            self.passes = 0;
            self.passing_since = None;
            return if self.failing {
                Change::StillFailing
            } else {
                Change::None
            };
        }
        if passed {
            self.failures = 0;
            if self.passes == 0 {
                self.passing_since = Some(at);
            }
            self.passes = self.passes.saturating_add(1);
            if self.failing && self.passes >= success_threshold.max(1) {
                self.failing = false;
                self.failing_since = None;
                return Change::Recovered;
            }
            return Change::None;
        }
        self.passes = 0;
        self.passing_since = None;
        if self.failures == 0 {
            self.failing_since = Some(at);
        }
        self.failures = self.failures.saturating_add(1);
        if self.failing {
            return Change::StillFailing;
        }
        if self.failures >= failure_threshold.max(1) {
            self.failing = true;
            return Change::Failed;
        }
        Change::None
    }

    /// Whether it has passed `successes` checks in a row (a verification
    /// that waits for the service, not only the rollout).
    pub fn healthy(&self, successes: i32) -> bool {
        !self.failing && self.passes >= successes.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(passed: bool, second: i64) -> Outcome {
        Outcome {
            passed,
            inconclusive: false,
            value: None,
            detail: String::new(),
            at: Timestamp::from_second(1_800_000_000 + second).unwrap(),
        }
    }

    #[test]
    fn it_fails_after_the_threshold_and_recovers_after_enough_passes() {
        let mut tracker = Tracker::default();
        let results = [
            false, false, true, // a blip: two failures, then a pass
            false, false, false, // three in a row: failing
            false, true, false, // one pass does not recover it
            true, true, // two in a row do
        ];
        let changes: Vec<Change> = results
            .iter()
            .enumerate()
            .map(|(i, passed)| tracker.record(outcome(*passed, i as i64 * 15), 3, 2))
            .collect();
        use Change::*;
        assert_eq!(
            changes,
            [
                None,
                None,
                None,
                None,
                None,
                Failed,
                StillFailing,
                None,
                StillFailing,
                None,
                Recovered
            ]
        );
        assert!(tracker.healthy(2) && !tracker.healthy(3));
        assert_eq!(tracker.failing_since, Option::None);
    }

    #[test]
    fn an_inconclusive_result_is_never_a_pass_nor_a_failure() {
        let mut tracker = Tracker::default();
        let unknown = |second| Outcome {
            inconclusive: true,
            ..outcome(false, second)
        };
        tracker.record(outcome(true, 0), 3, 2);
        tracker.record(unknown(15), 3, 2);
        tracker.record(outcome(true, 30), 3, 2);
        assert!(
            !tracker.healthy(2),
            "the pass before no-data does not count"
        );
        tracker.record(unknown(45), 3, 2);
        tracker.record(unknown(60), 3, 2);
        tracker.record(unknown(75), 3, 2);
        assert!(!tracker.failing, "no data is not a failure");
    }

    #[test]
    fn failing_since_is_the_first_failure_of_the_run() {
        let mut tracker = Tracker::default();
        tracker.record(outcome(false, 0), 2, 1);
        assert!(!tracker.failing);
        assert_eq!(tracker.record(outcome(false, 15), 2, 1), Change::Failed);
        assert_eq!(tracker.failing_since, Some(outcome(false, 0).at));
    }
}
