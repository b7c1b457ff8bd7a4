//! Live and spent challenges, and the per-device challenge rate limit.
//!
//! A challenge is bound to the device it was issued to and to the stream that asked for it.
//! It is consumed by the first proof that names it on its own stream, whatever the outcome.
//! The book remembers spent challenge IDs until well after they would have expired so that a
//! proof replayed on another stream is reported precisely (NONCE_REPLAYED rather than
//! NONCE_FOREIGN). Challenges are not persisted: a stream does not survive a restart, and a
//! proof is only ever accepted for the challenge of its own stream, so a restart cannot revive
//! a nonce.
//!
//! Status challenges (`status.rs` here) are different: stateless, bound to the DeviceId and to
//! this service process by a keyed MAC, never admitted into the book. The book learns of one
//! only when its proof verifies ([`ChallengeBook::spend`]), and keeps its id as spent for as
//! long as any spent id, which is longer than a status challenge is accepted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::net::IpAddr;

use rot_core::keys::DeviceId;

use super::rate::{FixedWindow, address_key, lock};

mod status;

pub use status::{StatusChallenge, StatusChallengeProblem, StatusChallenges};

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

/// The challenge book and the rate limits.
///
/// Two budgets per window: one per (device, client address) and a larger one per device.
/// Anyone who knows a device's EPK can ask for its challenges; with only a per-device budget a
/// stranger spent it from anywhere and the real device was then refused RATE_LIMITED. Now a
/// stranger spends only its own address's share, and the device, from its own address, still
/// gets through. The per-device budget still bounds the work one device can cause: a stranger
/// with more addresses than the per-device budget holds shares (IPv6: /64 prefixes, since one
/// host has billions of addresses) can still exhaust it. That is the trade-off: a device cannot
/// be locked out by one address, and no device can make the service work without bound.
#[derive(Debug)]
pub struct ChallengeBook {
    entries: Mutex<HashMap<ChallengeId, Entry>>,
    per_address: FixedWindow<(DeviceId, Option<IpAddr>)>,
    per_device: FixedWindow<DeviceId>,
    /// How long a spent ID is remembered.
    memory: Duration,
    last_sweep: Mutex<Instant>,
}

impl ChallengeBook {
    /// A book remembering IDs for `memory`, allowing `per_address` challenges per device and
    /// client address, and `per_device` per device, each per `rate_window`.
    #[must_use]
    pub fn new(memory: Duration, rate_window: Duration, per_address: u32, per_device: u32) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            per_address: FixedWindow::new(rate_window, per_address),
            per_device: FixedWindow::new(rate_window, per_device.max(per_address)),
            memory,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Counts a challenge for `device_id` asked from `peer` (IPv6: its /64); `Err(retry_after)`
    /// when either budget is spent.
    ///
    /// # Errors
    /// The time to wait before asking again.
    pub fn admit(&self, device_id: &DeviceId, peer: Option<IpAddr>) -> Result<(), Duration> {
        self.sweep(Instant::now());
        self.per_address
            .admit(&(*device_id, peer.map(address_key)))?;
        self.per_device.admit(device_id)
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

    /// Spends the id of a status challenge whose proof just verified; `false` if it was spent
    /// already (a replay). Status challenges are never issued into the book
    /// ([`StatusChallenges`] keeps no state): it learns of one here, and remembers it as long as
    /// any spent id, which is longer than a status challenge is accepted.
    pub fn spend(&self, id: &ChallengeId) -> bool {
        // Status calls admit nothing into the book, so they sweep it themselves: a device that
        // only ever asks for its status must not grow the spent ids without bound.
        self.sweep(Instant::now());
        self.consume(id)
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
        let book = ChallengeBook::new(MINUTE, MINUTE, 10, 100);
        let id = [7u8; 16];
        book.issue(id);
        assert_eq!(book.classify_foreign(&id), ForeignChallenge::Foreign);
        assert!(book.consume(&id));
        assert!(!book.consume(&id));
        assert_eq!(book.classify_foreign(&id), ForeignChallenge::Spent);
        assert_eq!(book.classify_foreign(&[1u8; 16]), ForeignChallenge::Foreign);
        assert_eq!(book.classify_foreign(&[1u8; 3]), ForeignChallenge::Foreign);
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn device(n: u8) -> DeviceId {
        DeviceId::from_bytes([n; 32])
    }

    /// A known client address, as the stream hands it to the book.
    #[allow(clippy::unnecessary_wraps, reason = "admit takes the stream's Option")]
    fn address(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn rate_limit_counts_per_device_and_address() {
        let book = ChallengeBook::new(MINUTE, MINUTE, 2, 20);
        let (a, here) = (device(1), address("192.0.2.1"));
        assert!(book.admit(&a, here).is_ok());
        assert!(book.admit(&a, here).is_ok());
        let wait = book.admit(&a, here).unwrap_err();
        assert!(wait > Duration::from_secs(50));
        assert!(book.admit(&device(2), here).is_ok());
    }

    #[test]
    fn a_stranger_spending_a_devices_budget_does_not_lock_the_device_out() {
        let book = ChallengeBook::new(MINUTE, MINUTE, 2, 20);
        let victim = device(1);
        let stranger = address("198.51.100.7");
        for _ in 0..2 {
            assert!(book.admit(&victim, stranger).is_ok());
        }
        for _ in 0..50 {
            assert!(book.admit(&victim, stranger).is_err());
        }
        // The device, from its own address, still gets its challenges.
        assert!(book.admit(&victim, address("192.0.2.1")).is_ok());
        assert!(book.admit(&victim, address("192.0.2.1")).is_ok());
    }

    #[test]
    fn the_per_device_budget_bounds_many_addresses_and_ipv6_counts_per_prefix() {
        let book = ChallengeBook::new(MINUTE, MINUTE, 2, 6);
        let victim = device(1);
        let mut admitted = 0;
        for host in 1..=10 {
            for _ in 0..2 {
                admitted += usize::from(
                    book.admit(&victim, address(&format!("203.0.113.{host}")))
                        .is_ok(),
                );
            }
        }
        assert_eq!(admitted, 6);
        // Addresses of one /64 share one share of the budget.
        let book = ChallengeBook::new(MINUTE, MINUTE, 2, 100);
        assert!(book.admit(&victim, address("2001:db8::1")).is_ok());
        assert!(book.admit(&victim, address("2001:db8::2")).is_ok());
        assert!(book.admit(&victim, address("2001:db8::ffff")).is_err());
        assert!(book.admit(&victim, address("2001:db8:0:1::1")).is_ok());
    }
}
