//! Live and spent challenges, and the per-device challenge rate limit.
//!
//! A challenge is bound to the device it was issued to and to the stream that asked for it.
//! It is consumed by the first proof that names it on its own stream, whatever the outcome.
//! The book remembers spent challenge IDs until well after they would have expired so that a
//! proof replayed on another stream is reported precisely (NONCE_REPLAYED rather than
//! NONCE_FOREIGN). Challenges are not persisted: a stream does not survive a restart, and a
//! proof is only ever accepted for the challenge of its own stream, so a restart cannot revive
//! a nonce.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::rate::{FixedWindow, lock};

/// A 16-byte challenge identifier.
pub type ChallengeId = [u8; 16];

/// What the book knows about a challenge ID presented in a proof on another stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignChallenge {
    /// It was issued and already consumed: the proof is a replay.
    Spent,
    /// Unknown, or live on another stream / for another device.
    Foreign,
}

#[derive(Debug)]
struct Entry {
    spent: bool,
    forget_at: Instant,
}

/// The challenge book and the rate limiter.
#[derive(Debug)]
pub struct ChallengeBook {
    entries: Mutex<HashMap<ChallengeId, Entry>>,
    rates: FixedWindow<String>,
    /// How long a spent ID is remembered.
    memory: Duration,
    last_sweep: Mutex<Instant>,
}

impl ChallengeBook {
    /// A book remembering IDs for `memory`, allowing `rate_limit` challenges per device per
    /// `rate_window`.
    #[must_use]
    pub fn new(memory: Duration, rate_window: Duration, rate_limit: u32) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            rates: FixedWindow::new(rate_window, rate_limit),
            memory,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Counts a challenge for `device_id`; `Err(retry_after)` when over the limit.
    ///
    /// # Errors
    /// The time to wait before the device may ask again.
    pub fn admit(&self, device_id: &str) -> Result<(), Duration> {
        self.sweep(Instant::now());
        self.rates.admit(&device_id.to_owned())
    }

    /// Records a newly issued challenge as live.
    pub fn issue(&self, id: ChallengeId) {
        lock(&self.entries).insert(
            id,
            Entry {
                spent: false,
                forget_at: Instant::now() + self.memory,
            },
        );
    }

    /// Consumes the stream's own challenge. Returns `false` if it was already spent (which
    /// cannot happen on a well-behaved stream, and is then treated as a replay).
    pub fn consume(&self, id: &ChallengeId) -> bool {
        let mut entries = lock(&self.entries);
        match entries.get_mut(id) {
            Some(entry) if !entry.spent => {
                entry.spent = true;
                true
            }
            Some(_) => false,
            None => {
                // Forgotten already (a very slow stream): remember it as spent now.
                entries.insert(
                    *id,
                    Entry {
                        spent: true,
                        forget_at: Instant::now() + self.memory,
                    },
                );
                true
            }
        }
    }

    /// Classifies a challenge ID that is not the presenting stream's own.
    #[must_use]
    pub fn classify_foreign(&self, id: &[u8]) -> ForeignChallenge {
        let Ok(id) = <ChallengeId>::try_from(id) else {
            return ForeignChallenge::Foreign;
        };
        match lock(&self.entries).get(&id) {
            Some(entry) if entry.spent => ForeignChallenge::Spent,
            _ => ForeignChallenge::Foreign,
        }
    }

    fn sweep(&self, now: Instant) {
        {
            let mut last = lock(&self.last_sweep);
            if now.duration_since(*last) < Duration::from_secs(5) {
                return;
            }
            *last = now;
        }
        lock(&self.entries).retain(|_, e| e.forget_at > now);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_consumed_once() {
        let book = ChallengeBook::new(Duration::from_secs(60), Duration::from_secs(60), 10);
        let id = [7u8; 16];
        book.issue(id);
        assert_eq!(book.classify_foreign(&id), ForeignChallenge::Foreign);
        assert!(book.consume(&id));
        assert!(!book.consume(&id));
        assert_eq!(book.classify_foreign(&id), ForeignChallenge::Spent);
        assert_eq!(book.classify_foreign(&[1u8; 16]), ForeignChallenge::Foreign);
        assert_eq!(book.classify_foreign(&[1u8; 3]), ForeignChallenge::Foreign);
    }

    #[test]
    fn rate_limit_counts_per_device() {
        let book = ChallengeBook::new(Duration::from_secs(60), Duration::from_secs(60), 2);
        assert!(book.admit("a").is_ok());
        assert!(book.admit("a").is_ok());
        let wait = book.admit("a").unwrap_err();
        assert!(wait > Duration::from_secs(50));
        assert!(book.admit("b").is_ok());
    }
}
