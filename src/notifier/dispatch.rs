//! One channel's due messages about one incident, sent in their own task,
//! in order, stopping at one to be tried again. Each waits for its turn at
//! the channel (`ChannelLimits`: one rate per channel across incidents,
//! the most severe first), is marked as being sent, is sent, and its
//! outcome is written with the next mark or at the end. A slow receiver
//! holds back only its own channel; the reconcile that started the task
//! returns at once, and the task's claim keeps the next reconcile from
//! taking these messages for ones a stopped process left in doubt.

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    runtime::events::{Event, EventType},
};
use tracing::{debug, warn};

use super::{compose, count, deliver, write};
use crate::{
    communication::{in_flight::Claim, outbox, send::Outcome},
    context::Context,
    crd::{CommunicationStatus, Delivery, DeliveryState, Incident, NotificationChannel},
};

/// How often a write is tried again after other writers changed the
/// incident meanwhile.
const WRITE_TRIES: usize = 5;
/// The longest wait a receiver asks for (429, `Retry-After`) that a
/// message sits out marked as being sent; a longer one is a retry.
const SHORT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What one channel's task sends, and where its outcomes go.
pub struct Batch {
    pub ctx: Arc<Context>,
    /// The incident the messages were chosen from (the first base to write on).
    pub incident: Arc<Incident>,
    /// The communication status the messages were chosen from.
    pub recorded: Arc<CommunicationStatus>,
    pub channel: Arc<NotificationChannel>,
    /// Indexes into `recorded.outbox`, oldest first.
    pub indexes: Vec<usize>,
    /// This channel, taken until the outcomes are written.
    pub claim: Claim,
}

/// How one message went, to be written.
struct Settled {
    index: usize,
    /// The mark it was sent under (or the stopped process's, for one not
    /// sent again): it is settled only where the record still has it.
    mark: Option<Time>,
    /// Its record after its attempts.
    record: Delivery,
}

/// A message to mark as being sent, where its record is still as chosen.
struct Mark {
    index: usize,
    at: Timestamp,
}

impl Batch {
    /// Sends the messages, each in its turn, then writes how they went.
    pub async fn run(self) {
        let namespace = self.incident.namespace().unwrap_or_default();
        let channel_key = format!("{namespace}/{}", self.channel.name_any());
        let per_minute = self.channel.spec.per_minute;
        let severity = self.incident.spec.severity;
        let mut base = Incident::clone(&self.incident);
        // Each message is sent knowing how the ones before it in this batch
        // went: a status page's incident opened by the first is updated by
        // the next, not opened again.
        let mut so_far = CommunicationStatus::clone(&self.recorded);
        let mut unwritten: Vec<Settled> = Vec::new();
        for &index in &self.indexes {
            let Some(delivery) = so_far.outbox.get(index).cloned() else {
                continue;
            };
            let (mark, record) = match compose::unconfirmed(self.channel.spec.kind, &delivery) {
                // Known without sending: neither a turn nor a mark.
                Some(outcome) => (
                    delivery.sending_since.clone(),
                    outbox::settle(&delivery, &outcome, crate::k8s::now_whole_seconds()),
                ),
                None => {
                    let turn = self
                        .ctx
                        .channel_limits
                        .turn(&channel_key, per_minute, severity);
                    turn.await;
                    // Marked as being sent before it is: after a crash, a
                    // message whose outcome was never written is known to
                    // be in doubt. Waiting for the turn marks nothing.
                    let at = crate::k8s::now_whole_seconds();
                    let mark = Mark { index, at };
                    if !self.commit(&mut base, &unwritten, Some(&mark)).await {
                        break;
                    }
                    unwritten.clear();
                    let record = self.attempt(&channel_key, &delivery, &so_far).await;
                    (Some(Time(at)), record)
                }
            };
            if let Some(slot) = so_far.outbox.get_mut(index) {
                slot.clone_from(&record);
            }
            // Only a message to be tried again holds back the next.
            let stop = record.state == DeliveryState::Pending;
            unwritten.push(Settled {
                index,
                mark,
                record,
            });
            if stop {
                break;
            }
        }
        if !unwritten.is_empty() {
            self.commit(&mut base, &unwritten, None).await;
        }
        // Free only now: until the outcomes are written, a look at the
        // incident would take these messages for ones left in doubt.
        drop(self.claim);
    }

    /// Sends `delivery` (marked), and its record after: a receiver that
    /// asks for a short wait (429) gets it, for every incident, and the
    /// message goes again at its next turn rather than after a look at the
    /// incident; a longer wait, or another failure, is left to the retry.
    async fn attempt(
        &self,
        channel_key: &str,
        delivery: &Delivery,
        so_far: &CommunicationStatus,
    ) -> Delivery {
        let per_minute = self.channel.spec.per_minute;
        let mut attempt = delivery.clone();
        loop {
            let at = crate::k8s::now_whole_seconds();
            let outcome = deliver::deliver(
                &self.ctx,
                &self.incident,
                &self.channel,
                &attempt,
                so_far,
                at,
            )
            .await;
            crate::failpoint::reached(crate::failpoint::AFTER_SEND).await;
            let record = outbox::settle(&attempt, &outcome, at);
            let Outcome::Throttled { after, .. } = outcome else {
                return record;
            };
            // The receiver's limit is every incident's.
            self.ctx
                .channel_limits
                .pause(channel_key, per_minute, after);
            if after > SHORT_WAIT || record.state != DeliveryState::Pending {
                return record;
            }
            count(&self.ctx, self.channel.spec.kind.into(), &record);
            debug!(channel = %self.channel.name_any(), key = %delivery.key, ?after,
                   "the receiver asked to wait; sending again at the channel's next turn");
            self.ctx
                .channel_limits
                .turn(channel_key, per_minute, self.incident.spec.severity)
                .await;
            attempt = record;
        }
    }

    /// Writes the outcomes `settled` and the `mark` onto the latest
    /// incident. Outcomes are facts and must not be lost to a race: on a
    /// conflict the latest incident is read and they are written on it,
    /// each only where its message is still marked as it was sent. The
    /// mark is made only where the message is as it was chosen (nobody
    /// settled it meanwhile). Whether the mark was written: only then is
    /// the message sent.
    async fn commit(&self, base: &mut Incident, settled: &[Settled], mark: Option<&Mark>) -> bool {
        let namespace = self.incident.namespace().unwrap_or_default();
        let api = Api::<Incident>::namespaced(self.ctx.client.clone(), &namespace);
        for _ in 0..WRITE_TRIES {
            let Some(mut next) = base.communication().cloned() else {
                return false;
            };
            let mut written = Vec::new();
            for one in settled {
                if let Some(slot) = self.slot(&mut next, one.index)
                    && slot.state == DeliveryState::Pending
                    && slot.sending_since == one.mark
                {
                    slot.clone_from(&one.record);
                    written.push(slot.clone());
                }
            }
            let mut marked = false;
            if let Some(mark) = mark {
                let chosen = self
                    .recorded
                    .outbox
                    .get(mark.index)
                    .map(|d| d.sending_since.clone());
                if let Some(slot) = self.slot(&mut next, mark.index)
                    && slot.state == DeliveryState::Pending
                    && Some(&slot.sending_since) == chosen.as_ref()
                {
                    slot.sending_since = Some(Time(mark.at));
                    marked = true;
                }
            }
            if written.is_empty() && !marked {
                return false;
            }
            match write(&self.ctx, base, &namespace, &next).await {
                Ok(updated) => {
                    *base = updated;
                    self.told(&written).await;
                    return marked;
                }
                Err(error) if error.is_conflict() => {
                    debug!("the incident changed meanwhile; writing the messages' records again");
                    match api.get(&self.incident.name_any()).await {
                        Ok(latest) => *base = latest,
                        Err(error) => {
                            warn!(channel = %self.channel.name_any(), %error,
                                  "reading the incident to write its messages' records");
                            return false;
                        }
                    }
                }
                Err(error) => {
                    warn!(channel = %self.channel.name_any(), %error,
                          "writing messages' records; any sent will be taken as in doubt");
                    return false;
                }
            }
        }
        warn!(channel = %self.channel.name_any(),
              "the incident kept changing; messages sent will be taken as in doubt");
        false
    }

    /// The record in `next` of the message at `index` as chosen, found by
    /// channel and key: other channels' tasks and new records may have
    /// changed the outbox since.
    fn slot<'a>(
        &self,
        next: &'a mut CommunicationStatus,
        index: usize,
    ) -> Option<&'a mut Delivery> {
        let chosen = self.recorded.outbox.get(index)?;
        next.outbox
            .iter_mut()
            .find(|d| d.channel == chosen.channel && d.key == chosen.key)
    }

    /// Counts what was written, and says so where a message may be missing.
    async fn told(&self, settled: &[Delivery]) {
        let kind: &'static str = self.channel.spec.kind.into();
        for slot in settled {
            count(&self.ctx, kind, slot);
            if slot.state == DeliveryState::Unconfirmed {
                let event = Event {
                    type_: EventType::Warning,
                    reason: "MessageUnconfirmed".into(),
                    note: Some(format!(
                        "{} to {} may not have arrived: the operator stopped while sending it, \
                         and the channel cannot recognise a repeat, so it was not sent again",
                        slot.key, slot.channel
                    )),
                    action: "Notify".into(),
                    secondary: None,
                };
                self.ctx.publish(self.incident.as_ref(), event).await;
            }
        }
    }
}
