//! Bounds at the edge: connections and device streams per client address, calls per
//! operator, and the audit budget for refusals of DeviceIds nobody registered.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::Caller;
use super::config::ServiceConfig;
use super::rate::{FixedWindow, address_key, lock};
use crate::error::ServiceError;

/// Counts of open calls per key (a client address, an operator), each under a limit. A call
/// holds a slot while it runs; dropping the slot frees it, however the call ended.
#[derive(Debug)]
struct Concurrency<K> {
    open: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> Concurrency<K> {
    fn new() -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `key`, or `None` when `limit` calls of `key` are open.
    fn try_take(self: &Arc<Self>, key: K, limit: usize) -> Option<Slot<K>> {
        let mut open = lock(&self.open);
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            limiter: self.clone(),
            key,
        })
    }
}

/// One open call of a key; frees its place when dropped.
#[derive(Debug)]
struct Slot<K: Hash + Eq + Clone> {
    limiter: Arc<Concurrency<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut open = lock(&self.limiter.open);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A device stream's place under its address's limit (none when the address is unknown).
/// Held, never read: dropping it frees the place.
#[derive(Debug)]
pub(crate) struct StreamSlot(
    #[expect(dead_code, reason = "held for its Drop")] Option<Slot<IpAddr>>,
);

/// A connection's place under its address's limit. Held, never read.
#[derive(Debug)]
pub struct ConnectionSlot(#[expect(dead_code, reason = "held for its Drop")] Slot<IpAddr>);

/// An operator call's place under that operator's limit. Held, never read.
#[derive(Debug)]
pub(crate) struct CallSlot(#[expect(dead_code, reason = "held for its Drop")] Slot<String>);

/// The limits, with what is open or spent under each.
#[derive(Debug)]
pub(crate) struct Limits {
    max_streams_per_peer: usize,
    max_calls_per_operator: usize,
    max_connections_per_peer: usize,
    peer_connections: Arc<Concurrency<IpAddr>>,
    peer_streams: Arc<Concurrency<IpAddr>>,
    operator_calls: Arc<Concurrency<String>>,
    unknown_refusals: FixedWindow<IpAddr>,
    status_proofs: FixedWindow<IpAddr>,
}

impl Limits {
    pub(crate) fn new(config: &ServiceConfig) -> Self {
        Self {
            max_streams_per_peer: config.max_streams_per_peer,
            max_calls_per_operator: config.max_calls_per_operator,
            max_connections_per_peer: config.max_connections_per_peer,
            peer_connections: Arc::new(Concurrency::new()),
            peer_streams: Arc::new(Concurrency::new()),
            operator_calls: Arc::new(Concurrency::new()),
            unknown_refusals: FixedWindow::new(
                config.rate_window,
                config.audited_unknown_refusals_per_peer,
            ),
            status_proofs: FixedWindow::new(config.rate_window, config.status_proofs_per_peer),
        }
    }

    /// Takes a connection slot for `peer` (IPv6: its /64), or `None` when it has
    /// `max_connections_per_peer` open, whatever state they are in.
    pub(crate) fn open_connection(&self, peer: IpAddr) -> Option<ConnectionSlot> {
        self.peer_connections
            .try_take(address_key(peer), self.max_connections_per_peer)
            .map(ConnectionSlot)
    }

    /// Takes a stream slot for `peer` (IPv6: its /64, like every other per-address limit),
    /// or refuses when the peer has too many open.
    pub(crate) fn open_stream(&self, peer: Option<IpAddr>) -> Result<StreamSlot, ServiceError> {
        let Some(ip) = peer else {
            return Ok(StreamSlot(None));
        };
        let limit = self.max_streams_per_peer;
        self.peer_streams
            .try_take(address_key(ip), limit)
            .map(|slot| StreamSlot(Some(slot)))
            .ok_or_else(|| {
                ServiceError::ResourceExhausted(format!(
                    "too many concurrent streams from {ip} (limit {limit})"
                ))
            })
    }

    /// Takes a call slot for an operator (by owner and name, whichever certificate it
    /// presents), or refuses when it has too many calls and streams open.
    pub(crate) fn open_operator_call(&self, caller: &Caller) -> Result<CallSlot, ServiceError> {
        let limit = self.max_calls_per_operator;
        self.operator_calls
            .try_take(format!("{}/{}", caller.owner, caller.name), limit)
            .map(CallSlot)
            .ok_or_else(|| {
                ServiceError::ResourceExhausted(format!(
                    "operator {} has {limit} calls and streams open, the limit; retry with \
                     backoff",
                    caller.name
                ))
            })
    }

    /// Whether one more refusal of an unregistered DeviceId from `peer` may be audited: anyone
    /// can invent such IDs by the million, so each client address (IPv6: each /64) gets a
    /// budget per window.
    pub(crate) fn audit_unknown_refusal(&self, peer: IpAddr) -> bool {
        self.unknown_refusals.admit(&address_key(peer)).is_ok()
    }

    /// Takes one signed Status request's verification from `peer`'s budget (IPv6: its /64),
    /// or refuses when the budget of the window is spent.
    pub(crate) fn admit_status_proof(&self, peer: Option<IpAddr>) -> Result<(), ServiceError> {
        let Some(ip) = peer else {
            return Ok(());
        };
        self.status_proofs.admit(&address_key(ip)).map_err(|_| {
            ServiceError::ResourceExhausted(
                "too many signed status requests from this address; retry later".into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn streams_are_limited_per_ipv6_64_and_per_ipv4_address() {
        let limits = Limits::new(&ServiceConfig {
            max_streams_per_peer: 1,
            ..ServiceConfig::default()
        });
        let held = limits
            .open_stream(ip("2001:db8:0:1::1"))
            .map_err(|e| e.to_string());
        assert!(held.is_ok(), "{held:?}");
        // Another address of the same /64 shares its budget.
        let error = limits
            .open_stream(ip("2001:db8:0:1::2"))
            .expect_err("the /64's one stream is taken");
        assert!(
            matches!(error, ServiceError::ResourceExhausted(_)),
            "{error:?}"
        );
        // Another /64 and an IPv4 address have their own.
        assert!(limits.open_stream(ip("2001:db8:0:2::1")).is_ok());
        assert!(limits.open_stream(ip("192.0.2.1")).is_ok());
        drop(held);
        assert!(limits.open_stream(ip("2001:db8:0:1::2")).is_ok());
    }

    #[test]
    fn signed_status_requests_are_budgeted_per_address() {
        let limits = Limits::new(&ServiceConfig {
            status_proofs_per_peer: 2,
            ..ServiceConfig::default()
        });
        for _ in 0..2 {
            assert!(limits.admit_status_proof(ip("2001:db8:0:1::1")).is_ok());
        }
        let error = limits
            .admit_status_proof(ip("2001:db8:0:1::9"))
            .expect_err("the /64's budget is spent");
        assert!(
            matches!(error, ServiceError::ResourceExhausted(_)),
            "{error:?}"
        );
        assert!(limits.admit_status_proof(ip("192.0.2.1")).is_ok());
        // A caller whose address is unknown (an in-process transport) is not limited here.
        assert!(limits.admit_status_proof(None).is_ok());
    }
}
