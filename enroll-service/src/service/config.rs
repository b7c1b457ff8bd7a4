//! The service's limits and timings (`[limits]` in `config.toml`).

use std::time::Duration;

/// Tunable limits and timings. Defaults are the ones the gRPC contract documents.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// How long a challenge stays valid.
    pub challenge_ttl: Duration,
    /// How long a stream may take to send its first message.
    pub first_message_timeout: Duration,
    /// Longest Onboard / Renew stream.
    pub stream_timeout: Duration,
    /// Challenges one device may ask for from one client address (IPv6: one /64) per
    /// `rate_window`.
    pub challenges_per_window: u32,
    /// Challenges one device may ask for per `rate_window`, from all addresses together.
    pub challenges_per_device_window: u32,
    /// Window of the challenge rate limit.
    pub rate_window: Duration,
    /// Concurrent Onboard / Renew streams per client IP address (IPv6: per /64).
    pub max_streams_per_peer: usize,
    /// Concurrent calls and streams (WatchBatch, ImportDevices) per operator.
    pub max_calls_per_operator: usize,
    /// Refusals of unregistered DeviceIds (or IDs that do not match their key) audited per
    /// client address (IPv6: per /64) per `rate_window`. Anyone can invent such IDs; beyond
    /// this budget they are still refused, but not written to the audit log.
    pub audited_unknown_refusals_per_peer: u32,
    /// Signed Status requests verified per client address (IPv6: per /64) per `rate_window`:
    /// each costs an ECDSA verification, and Status needs no stream.
    pub status_proofs_per_peer: u32,
    /// Validity of each signed CRL; it is re-signed when half of it has passed.
    pub crl_validity: Duration,
    /// Largest device request message.
    pub max_device_message: usize,
    /// Largest operator request message.
    pub max_operator_message: usize,
    /// Open connections per client address (IPv6: per /64), whatever state they are in.
    pub max_connections_per_peer: usize,
    /// Longest TLS handshake; a connection that has not finished it by then is closed.
    pub tls_handshake_timeout: Duration,
    /// Longest wait for the HTTP/2 preface after the handshake.
    pub http2_preface_timeout: Duration,
    /// The CRL endpoint's longest wait for a request's headers; a connection (one request)
    /// lives at most three times this.
    pub crl_request_timeout: Duration,
    /// TCP keepalive: idle time before the first probe (a vanished peer is noticed).
    pub tcp_keepalive: Duration,
    /// HTTP/2 PING interval on an idle connection, and how long the answer may take.
    pub http2_keepalive: (Duration, Duration),
    /// How often superseded credentials whose grace ended are looked for and revoked: also
    /// the longest such a credential outlives its grace.
    pub superseded_sweep_interval: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            challenge_ttl: Duration::from_secs(60),
            first_message_timeout: Duration::from_secs(10),
            stream_timeout: Duration::from_secs(120),
            challenges_per_window: 10,
            challenges_per_device_window: 100,
            rate_window: Duration::from_secs(60),
            max_streams_per_peer: 4096,
            max_calls_per_operator: 64,
            audited_unknown_refusals_per_peer: 600,
            status_proofs_per_peer: 6000,
            crl_validity: Duration::from_secs(7 * 24 * 3600),
            max_device_message: 16 * 1024,
            max_operator_message: 4 * 1024 * 1024,
            max_connections_per_peer: 1024,
            tls_handshake_timeout: Duration::from_secs(10),
            http2_preface_timeout: Duration::from_secs(10),
            crl_request_timeout: Duration::from_secs(10),
            tcp_keepalive: Duration::from_secs(60),
            http2_keepalive: (Duration::from_secs(30), Duration::from_secs(20)),
            superseded_sweep_interval: Duration::from_secs(60),
        }
    }
}
