//! One rate limit per channel for the whole operator: fifty incidents in a
//! bad hour share a Slack webhook's one message a second, not fifty times
//! it. Each channel has its own limiter (its own `perMinute`, messages
//! spaced evenly) and a queue: the most severe waiting message goes first,
//! then the one that has waited longest. A receiver that answers "slow
//! down" (429, `Retry-After`) pauses its channel for every incident.
//!
//! A message waits here before it is marked as being sent: a process that
//! stops while messages wait leaves none of them in doubt.

use std::{
    collections::{BTreeSet, HashMap},
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use tokio::{sync::Notify, time::Instant};

use crate::crd::Severity;

/// The limiters and queues of every channel messages were sent to.
#[derive(Default)]
pub struct ChannelLimits {
    /// By channel (`namespace/name`) and its rate: a changed `perMinute`
    /// starts a limiter of its own.
    gates: Mutex<HashMap<(String, NonZeroU32), Arc<Gate>>>,
}

/// Where a message waiting for its channel stands in line: by severity,
/// then by arrival.
type Ticket = (Severity, u64);

struct Gate {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    line: Mutex<Line>,
    /// Rung whenever the line or the pause changes.
    moved: Notify,
}

#[derive(Default)]
struct Line {
    waiting: BTreeSet<Ticket>,
    next: u64,
    /// The receiver asked for nothing before this.
    paused_until: Option<Instant>,
}

/// What the message at the front of the line is to do now.
enum Next {
    Go,
    /// Not at the front: wait for the line to move.
    Queue,
    /// At the front, held until then (the rate or a pause).
    Until(Instant),
}

impl ChannelLimits {
    /// Waits until a message about an incident of `severity` may go to
    /// `channel` (`namespace/name`, at most `per_minute` a minute). Leaving
    /// the wait (the future dropped) gives up its place in line.
    pub async fn turn(&self, channel: &str, per_minute: i32, severity: Severity) {
        let gate = self.gate(channel, per_minute);
        let ticket = gate.join(severity);
        let place = Place {
            gate: &gate,
            ticket,
        };
        loop {
            // Listening before looking: a move between the look and the
            // wait is not missed.
            let moved = gate.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            match gate.next(ticket) {
                Next::Go => break,
                Next::Queue => moved.await,
                Next::Until(at) => {
                    tokio::select! {
                        () = moved => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
        }
        drop(place);
    }

    /// The receiver of `channel` asked to be sent nothing for `wait`: every
    /// incident's messages to it wait.
    pub fn pause(&self, channel: &str, per_minute: i32, wait: Duration) {
        let gate = self.gate(channel, per_minute);
        let until = Instant::now() + wait;
        {
            let mut line = gate.line.lock().unwrap_or_else(PoisonError::into_inner);
            if line.paused_until.is_none_or(|paused| paused < until) {
                line.paused_until = Some(until);
            }
        }
        gate.moved.notify_waiters();
    }

    fn gate(&self, channel: &str, per_minute: i32) -> Arc<Gate> {
        let rate = u32::try_from(per_minute)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            gates
                .entry((channel.to_owned(), rate))
                .or_insert_with(|| Arc::new(Gate::new(rate))),
        )
    }
}

impl Gate {
    fn new(per_minute: NonZeroU32) -> Self {
        // Spaced evenly, no burst: never more than `per_minute` in any
        // minute, and a receiver limiting per second (Slack: one a second
        // per webhook) is not flooded at the start of each minute.
        let period = Duration::from_secs(60) / per_minute.get();
        let quota =
            Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
        let clock = DefaultClock::default();
        Gate {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            line: Mutex::default(),
            moved: Notify::new(),
        }
    }

    fn join(&self, severity: Severity) -> Ticket {
        let mut line = self.line.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = (severity, line.next);
        line.next = line.next.wrapping_add(1);
        line.waiting.insert(ticket);
        ticket
    }

    fn next(&self, ticket: Ticket) -> Next {
        let line = self.line.lock().unwrap_or_else(PoisonError::into_inner);
        if line.waiting.first() != Some(&ticket) {
            return Next::Queue;
        }
        if let Some(paused) = line.paused_until.filter(|paused| *paused > Instant::now()) {
            return Next::Until(paused);
        }
        match self.limiter.check() {
            Ok(()) => Next::Go,
            Err(not_until) => {
                Next::Until(Instant::now() + not_until.wait_time_from(self.clock.now()))
            }
        }
    }
}

/// A place in a channel's line, given up when dropped (gone through, or the
/// wait abandoned), so the next in line moves up.
struct Place<'a> {
    gate: &'a Gate,
    ticket: Ticket,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.gate
            .line
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .waiting
            .remove(&self.ticket);
        self.gate.moved.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    //! On the real clock (the limiter keeps its own, which a paused tokio
    //! clock does not move), at rates that keep them short.
    use super::*;

    /// Waiters that joined in order `severities`, the order they went in.
    async fn order_of(severities: &[Severity], per_minute: i32) -> Vec<(usize, Severity)> {
        let limits = Arc::new(ChannelLimits::default());
        // The first takes the only slot now; the rest queue behind it.
        limits.turn("ns/slack", per_minute, Severity::P3).await;
        let went = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (index, severity) in severities.iter().copied().enumerate() {
            let (limits, went) = (Arc::clone(&limits), Arc::clone(&went));
            tasks.push(tokio::spawn(async move {
                limits.turn("ns/slack", per_minute, severity).await;
                went.lock().unwrap().push((index, severity));
            }));
            // Each joins the line before the next is spawned.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(went).unwrap().into_inner().unwrap()
    }

    #[tokio::test]
    async fn the_most_severe_waiting_goes_first_then_the_longest_waiting() {
        use Severity::{P0, P1, P3};
        // One every 200 ms: all five join while the first slot is taken.
        let order = order_of(&[P3, P1, P3, P0, P0], 300).await;
        assert_eq!(order, [(3, P0), (4, P0), (1, P1), (0, P3), (2, P3)]);
    }

    #[tokio::test]
    async fn messages_to_one_channel_are_spaced_by_its_rate() {
        let limits = ChannelLimits::default();
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..4 {
            limits.turn("ns/slack", 600, Severity::P0).await;
            at.push((Instant::now() - start).as_millis());
        }
        // One every 100 ms, whichever incident each is about.
        for (n, millis) in at.iter().enumerate() {
            let expected = u128::try_from(n).unwrap() * 100;
            assert!(
                *millis + 5 >= expected && *millis < expected + 60,
                "message {n} went at {millis} ms, not about {expected} ms: {at:?}"
            );
        }
    }

    #[tokio::test]
    async fn channels_do_not_wait_for_each_other() {
        let limits = ChannelLimits::default();
        limits.turn("ns/slack", 1, Severity::P0).await;
        let start = Instant::now();
        limits.turn("ns/pager", 1, Severity::P3).await;
        limits.turn("other/slack", 1, Severity::P3).await;
        assert!(Instant::now() - start < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_pause_holds_every_incidents_messages_to_that_channel() {
        let limits = ChannelLimits::default();
        let start = Instant::now();
        limits.pause("ns/slack", 600, Duration::from_millis(300));
        limits.turn("ns/slack", 600, Severity::P0).await;
        assert!(Instant::now() - start >= Duration::from_millis(300));
        let other = Instant::now();
        limits.turn("ns/pager", 600, Severity::P0).await;
        assert!(Instant::now() - other < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_wait_given_up_leaves_the_line() {
        let limits = ChannelLimits::default();
        limits.turn("ns/slack", 120, Severity::P3).await;
        // A P0 waits for the next slot, 500 ms away, and gives up.
        let given_up = tokio::time::timeout(
            Duration::from_millis(50),
            limits.turn("ns/slack", 120, Severity::P0),
        )
        .await;
        assert!(given_up.is_err());
        // The P3 behind it is not held by a place nobody holds.
        tokio::time::timeout(
            Duration::from_secs(2),
            limits.turn("ns/slack", 120, Severity::P3),
        )
        .await
        .unwrap_or_else(|_| panic!("held behind an abandoned place"));
    }
}
