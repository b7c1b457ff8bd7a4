//! Fixed-window rate limits: at most `limit` events per key in each `window`, counted from the
//! key's first event in the window. Used per device (challenges) and per client address (audited
//! refusals of DeviceIds nobody registered).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often stale windows are dropped, so that keys seen once do not accumulate.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Event counts per key in fixed windows.
#[derive(Debug)]
pub(crate) struct FixedWindow<K> {
    counts: Mutex<HashMap<K, (Instant, u32)>>,
    window: Duration,
    limit: u32,
    last_sweep: Mutex<Instant>,
}

impl<K: Hash + Eq + Clone> FixedWindow<K> {
    /// At most `limit` events per key per `window`.
    #[must_use]
    pub(crate) fn new(window: Duration, limit: u32) -> Self {
        Self {
            counts: Mutex::new(HashMap::new()),
            window,
            limit,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Counts an event of `key`.
    ///
    /// # Errors
    /// When `key` has used its window's budget: how long until its window ends.
    pub(crate) fn admit(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        self.sweep(now);
        let mut counts = lock(&self.counts);
        let (start, count) = counts.entry(key.clone()).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        if *count >= self.limit {
            return Err(self.window.saturating_sub(now.duration_since(*start)));
        }
        *count += 1;
        Ok(())
    }

    fn sweep(&self, now: Instant) {
        {
            let mut last = lock(&self.last_sweep);
            if now.duration_since(*last) < SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        let window = self.window;
        lock(&self.counts).retain(|_, (start, _)| now.duration_since(*start) < window);
    }
}

/// The key under which a client address is limited: the address itself for IPv4 (and
/// IPv4-mapped IPv6), its /64 for IPv6, since one host usually holds a whole /64 and could
/// rotate through it.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// A poisoned lock only means another handler panicked mid-update of a map of plain values;
/// the map stays usable.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_budget() {
        let limit = FixedWindow::new(Duration::from_secs(60), 2);
        assert!(limit.admit(&"a").is_ok());
        assert!(limit.admit(&"a").is_ok());
        let wait = limit.admit(&"a").unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert!(limit.admit(&"b").is_ok());
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_ipv4_is_ipv4() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2::"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[test]
    fn a_new_window_starts_a_new_budget() {
        let limit = FixedWindow::new(Duration::from_millis(30), 1);
        assert!(limit.admit(&1).is_ok());
        assert!(limit.admit(&1).is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(limit.admit(&1).is_ok());
    }
}
