//! Events of durable changes, as every subscriber of the store receives them.
//!
//! ```text
//!  commit (any writer, any replica) ──▶ events numbered in commit order (seq)
//!        ──▶ the backend's feed on this process (sled: its writer; a database: one tail of the
//!            events table per replica) ──▶ broadcast ──▶ Subscription per watcher
//! ```
//!
//! A [`Subscription`] sees every event published after it was taken, in order, each once, unless
//! it falls behind by more than the backend buffers: then it is told how many it missed
//! ([`SubscriptionError::Missed`]) and goes on with the newest. Watchers that can re-read
//! state (batch counts) re-read it; others end their stream and let the client reconnect.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::model::{CrlRecord, DeviceEvent};

/// Something that happened, published to watchers once durable. Serialisable: a networked
/// store carries events between replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryEvent {
    /// A device of a batch changed state.
    Device {
        /// The batch.
        batch_id: String,
        /// The event.
        event: DeviceEvent,
    },
    /// A batch's counts changed.
    CountsChanged {
        /// The batch.
        batch_id: String,
    },
    /// A CRL was signed and stored (WatchCrls).
    CrlSigned(CrlNotice),
}

/// What WatchCrls announces of a stored CRL (not the CRL itself: clients fetch it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlNotice {
    /// The issuing CA's id.
    pub issuer: String,
    /// CRL number.
    pub number: u64,
    /// thisUpdate.
    #[serde(with = "time::serde::rfc3339")]
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    #[serde(with = "time::serde::rfc3339")]
    pub next_update: OffsetDateTime,
    /// Serials listed.
    pub revoked_count: u64,
}

impl CrlNotice {
    /// The notice of `record`, signed by `issuer`.
    #[must_use]
    pub fn of(issuer: &str, record: &CrlRecord) -> Self {
        Self {
            issuer: issuer.to_owned(),
            number: record.number,
            this_update: record.this_update,
            next_update: record.next_update,
            revoked_count: record.revoked_count,
        }
    }
}

/// An event with its place in the store's event order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Position in commit order: strictly increasing across every writer of the store (within
    /// one process's lifetime for the embedded store, which keeps no events).
    pub seq: u64,
    /// The event.
    pub event: RegistryEvent,
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The subscriber fell this many events behind; they are gone, the next one follows.
    #[error("{0} registry events were missed")]
    Missed(u64),
    /// The store stopped publishing (it failed, or is shutting down).
    #[error("the registry stopped publishing events")]
    Closed,
}

/// Events of durable changes, from the moment it was taken. Backends feed one broadcast per
/// process and hand out its receivers; what feeds it (a writer thread, a database tail) is
/// theirs.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Published>,
    /// The sequence number the next event must have; a higher one means events were lost on
    /// the way (pruned before a replica's tail read them), which is reported first.
    expected: Option<u64>,
    /// The event that revealed a gap, delivered after the gap is reported.
    held: Option<Published>,
}

impl Subscription {
    /// A subscription over a backend's broadcast of published events.
    #[must_use]
    pub fn new(receiver: broadcast::Receiver<Published>) -> Self {
        Self {
            receiver,
            expected: None,
            held: None,
        }
    }

    /// The next event. Cancel-safe: dropping the future loses no event.
    ///
    /// # Errors
    /// [`SubscriptionError::Missed`] after falling behind, [`SubscriptionError::Closed`] when
    /// no more events will come.
    pub async fn recv(&mut self) -> Result<Published, SubscriptionError> {
        let published = match self.held.take() {
            Some(held) => held,
            None => match self.receiver.recv().await {
                Ok(published) => {
                    if let Some(expected) = self.expected
                        && published.seq > expected
                    {
                        let missed = published.seq - expected;
                        self.expected = Some(published.seq);
                        self.held = Some(published);
                        return Err(SubscriptionError::Missed(missed));
                    }
                    published
                }
                Err(RecvError::Lagged(missed)) => {
                    // The next one received sets the expectation again.
                    self.expected = None;
                    return Err(SubscriptionError::Missed(missed));
                }
                Err(RecvError::Closed) => return Err(SubscriptionError::Closed),
            },
        };
        self.expected = Some(published.seq + 1);
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use super::*;

    fn published(seq: u64) -> Published {
        Published {
            seq,
            event: RegistryEvent::CountsChanged {
                batch_id: format!("b{seq}"),
            },
        }
    }

    /// Events pruned before a replica's tail read them leave a gap in the sequence: the
    /// subscriber is told how many it missed, then gets the event after the gap.
    #[tokio::test]
    async fn a_gap_in_the_sequence_is_reported_as_missed_events() {
        let (sender, receiver) = broadcast::channel(16);
        let mut subscription = Subscription::new(receiver);
        for seq in [1, 2, 5, 6] {
            sender.send(published(seq)).unwrap();
        }
        assert_eq!(subscription.recv().await.unwrap().seq, 1);
        assert_eq!(subscription.recv().await.unwrap().seq, 2);
        assert_eq!(subscription.recv().await, Err(SubscriptionError::Missed(2)));
        assert_eq!(subscription.recv().await.unwrap().seq, 5);
        assert_eq!(subscription.recv().await.unwrap().seq, 6);
        drop(sender);
        assert_eq!(subscription.recv().await, Err(SubscriptionError::Closed));
    }
}
