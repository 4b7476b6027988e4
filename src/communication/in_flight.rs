//! The channels this process is sending to right now, per incident. A
//! message marked as being sent (`sendingSince`) whose channel is not here
//! was begun by a process that stopped, or by an earlier leader: it is in
//! doubt. A channel here is in flight: its messages are left to the task
//! sending them, and its later ones wait, so it hears them in order. No
//! other channel waits for it.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, PoisonError},
};

/// (incident uid, channel name) pairs with a send under way.
#[derive(Debug, Default)]
pub struct InFlight {
    channels: Mutex<BTreeSet<(String, String)>>,
}

impl InFlight {
    /// Whether this process is sending to `channel` about incident `uid`.
    pub fn busy(&self, uid: &str, channel: &str) -> bool {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(uid.to_owned(), channel.to_owned()))
    }

    /// Takes `channel` of incident `uid` for one send; `None` if it is
    /// taken. Released when the claim is dropped, whatever happens.
    pub fn claim(self: &Arc<Self>, uid: &str, channel: &str) -> Option<Claim> {
        let key = (uid.to_owned(), channel.to_owned());
        let fresh = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        fresh.then(|| Claim {
            in_flight: Arc::clone(self),
            key,
        })
    }
}

/// One channel of one incident, taken while its messages are sent.
#[derive(Debug)]
pub struct Claim {
    in_flight: Arc<InFlight>,
    key: (String, String),
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.in_flight
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_taken_once_and_free_again_when_its_claim_goes() {
        let in_flight = Arc::new(InFlight::default());
        let claim = in_flight.claim("u-1", "slack").unwrap();
        assert!(in_flight.busy("u-1", "slack"));
        assert!(in_flight.claim("u-1", "slack").is_none(), "taken");
        assert!(!in_flight.busy("u-1", "pager"), "other channels are free");
        assert!(!in_flight.busy("u-2", "slack"), "so are other incidents'");
        drop(claim);
        assert!(!in_flight.busy("u-1", "slack"));
        assert!(in_flight.claim("u-1", "slack").is_some());
    }
}
