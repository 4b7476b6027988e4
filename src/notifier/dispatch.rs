//! One channel's due messages, sent in their own task: in order, stopping
//! at one to be tried again, and their outcomes written onto the latest
//! incident as soon as this channel is done. A slow receiver holds back
//! only its own channel; the reconcile that started the task returns at
//! once, and the task's claim keeps the next reconcile from taking these
//! messages for ones a stopped process left in doubt.

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    runtime::events::{Event, EventType},
};
use tracing::{debug, warn};

use super::{count, deliver, write};
use crate::{
    communication::{in_flight::Claim, outbox, send::Outcome},
    context::Context,
    crd::{CommunicationStatus, DeliveryState, Incident, NotificationChannel},
};

/// How often the outcomes are written again after other writers changed
/// the incident meanwhile.
const SETTLE_TRIES: usize = 5;

/// What one channel's task sends, and where its outcomes go.
pub struct Batch {
    pub ctx: Arc<Context>,
    pub incident: Arc<Incident>,
    /// The incident as the marks made it (the first base to write on).
    pub marked: Incident,
    /// The communication status the messages were chosen from.
    pub recorded: Arc<CommunicationStatus>,
    pub channel: Arc<NotificationChannel>,
    /// Indexes into `recorded.outbox`, oldest first.
    pub indexes: Vec<usize>,
    /// When they were marked as being sent.
    pub now: Timestamp,
    /// This channel, taken until the outcomes are written.
    pub claim: Claim,
}

impl Batch {
    /// Sends the messages, then writes how each went.
    pub async fn run(self) {
        let mut outcomes = Vec::new();
        // Each message is sent knowing how the ones before it in this batch
        // went: a status page's incident opened by the first is updated by
        // the next, not opened again.
        let mut so_far = CommunicationStatus::clone(&self.recorded);
        for &index in &self.indexes {
            let Some(delivery) = so_far.outbox.get(index).cloned() else {
                continue;
            };
            let outcome = deliver::deliver(
                &self.ctx,
                &self.incident,
                &self.channel,
                &delivery,
                &so_far,
                self.now,
            )
            .await;
            if let Some(slot) = so_far.outbox.get_mut(index) {
                *slot = outbox::settle(&delivery, &outcome, self.now);
            }
            // Only a message to be tried again holds back the next.
            let retry = matches!(outcome, Outcome::Retry { .. });
            outcomes.push((index, outcome));
            if retry {
                break;
            }
        }
        crate::failpoint::reached(crate::failpoint::AFTER_SEND).await;
        self.settle(&outcomes).await;
        // Free only now: until the outcomes are written, a look at the
        // incident would take these messages for ones left in doubt.
        drop(self.claim);
    }

    /// Writes the outcomes. They are facts and must not be lost to a race:
    /// on a conflict the latest incident is read and they are written on
    /// it, each only where its message is still marked as this task left
    /// it (nobody else settled it).
    async fn settle(&self, outcomes: &[(usize, Outcome)]) {
        let namespace = self.incident.namespace().unwrap_or_default();
        let api = Api::<Incident>::namespaced(self.ctx.client.clone(), &namespace);
        let mark = Some(Time(self.now));
        let mut base = self.marked.clone();
        for _ in 0..SETTLE_TRIES {
            let Some(mut next) = base.communication().cloned() else {
                return;
            };
            let mut settled = Vec::new();
            for &index in &self.indexes {
                let Some(before) = self.recorded.outbox.get(index) else {
                    continue;
                };
                // Found by channel and key: other channels' tasks and new
                // records may have changed the outbox since.
                let Some(slot) = next
                    .outbox
                    .iter_mut()
                    .find(|d| d.channel == before.channel && d.key == before.key)
                else {
                    continue;
                };
                if slot.state != DeliveryState::Pending || slot.sending_since != mark {
                    continue;
                }
                match outcomes.iter().find(|(attempted, _)| *attempted == index) {
                    Some((_, outcome)) => {
                        *slot = outbox::settle(slot, outcome, self.now);
                        settled.push(slot.clone());
                    }
                    // Held back behind a retry: never attempted, so not in doubt.
                    None => slot.sending_since.clone_from(&before.sending_since),
                }
            }
            match write(&self.ctx, &base, &namespace, &next).await {
                Ok(_) => {
                    self.told(&settled).await;
                    return;
                }
                Err(error) if error.is_conflict() => {
                    debug!(
                        "the incident changed while messages were sent; writing their outcomes again"
                    );
                    match api.get(&self.incident.name_any()).await {
                        Ok(latest) => base = latest,
                        Err(error) => {
                            warn!(channel = %self.channel.name_any(), %error,
                                  "reading the incident to write the outcomes of messages sent");
                            return;
                        }
                    }
                }
                Err(error) => {
                    warn!(channel = %self.channel.name_any(), %error,
                          "writing the outcomes of messages sent; they will be taken as in doubt");
                    return;
                }
            }
        }
        warn!(channel = %self.channel.name_any(),
              "the incident kept changing; the outcomes of messages sent will be taken as in doubt");
    }

    /// Counts what was written, and says so where a message may be missing.
    async fn told(&self, settled: &[crate::crd::Delivery]) {
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
