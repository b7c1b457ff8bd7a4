//! The gRPC handlers and the state they share.
//!
//! ```text
//!  DeviceEnrollment (service/device.rs) ─┐                ┌─ registry, CA       (the data)
//!                                        ├─▶ ServiceCore ─┼─ ChallengeBook       (nonces, rate)
//!  Operator (service/operator.rs) ───────┘                ├─ DeviceLocks         (per device, an optimisation)
//!                                                         ├─ CrlSigner           (the CRL)
//!                                                         ├─ StatusChallenges    (Status nonces)
//!                                                         ├─ Limits              (edge bounds)
//!                                                         └─ Metrics
//! ```
//!
//! Each part is its own type with its own rules; [`ServiceCore`] only holds them together.
//! [`supersede`] retires the credentials renewals replaced: when the device proves their
//! successor, or by a sweep the server runs when their grace ends.
//! Every write goes through the registry as one [`Change`](crate::store::Change) that includes
//! its audit entries, so the audit log and the state never disagree. A write that concerns a
//! device is compare-and-set on the version of the device record it read, so two streams of
//! the same device (on one replica or on two) cannot both issue a credential: the loser reads
//! again. Within a replica the device's lock, held from the read to the durable commit, spares
//! the loser that work (see `locks.rs`).

mod auth;
mod authorities;
mod challenge;
mod config;
mod crl;
mod device;
mod limits;
mod locks;
mod operator;
mod rate;
pub mod supersede;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use rot_core::keys::DeviceId;

use crate::error::ServiceError;
use crate::metrics::Metrics;
use crate::pki::{CertificateAuthority, KeyBackend, Passphrase};
use crate::store::Registry;

pub use auth::Caller;
pub use authorities::{Authorities, Issuer, PLATFORM_ISSUER};
pub use challenge::{
    ChallengeBook, ChallengeId, ForeignChallenge, StatusChallenge, StatusChallengeProblem,
    StatusChallenges,
};
pub use config::ServiceConfig;
pub use crl::CrlSigner;
pub use device::{DeviceService, verify_signature};
pub use operator::{OperatorService, issue_operator_certificate, record_operator_certificate};

pub use limits::ConnectionSlot;
use limits::Limits;
use locks::DeviceLocks;

/// The parts every handler shares.
#[derive(Debug)]
pub struct ServiceCore {
    registry: Arc<dyn Registry>,
    authorities: Arc<Authorities>,
    config: ServiceConfig,
    challenges: ChallengeBook,
    status_challenges: StatusChallenges,
    device_locks: DeviceLocks,
    crls: CrlSigner,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl ServiceCore {
    /// The parts over a registry and the platform's CA, with owners' CA keys sealed under a
    /// passphrase that lives only as long as this process: for the demo and in-process tests,
    /// whose registries do not outlive them either. A real service uses
    /// [`ServiceCore::with_keys`].
    ///
    /// # Panics
    /// If the system RNG fails.
    #[must_use]
    pub fn new(
        registry: Arc<dyn Registry>,
        ca: Arc<CertificateAuthority>,
        config: ServiceConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        #[expect(
            clippy::expect_used,
            reason = "an in-process service cannot start without an RNG"
        )]
        let passphrase = Passphrase::new(random_hex(32).expect("system RNG"))
            .expect("a random passphrase is not empty");
        // The passphrase is random and never written: its work factor buys nothing.
        let keys = KeyBackend::sealed(passphrase, std::num::NonZeroU32::MIN);
        Self::with_keys(registry, ca, keys, config, metrics)
    }

    /// The parts over a registry, the platform's CA and the backend owners' CA keys live in.
    #[must_use]
    pub fn with_keys(
        registry: Arc<dyn Registry>,
        ca: Arc<CertificateAuthority>,
        keys: KeyBackend,
        config: ServiceConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        // Spent ids are remembered longer than any challenge is accepted (a status challenge's
        // expiry is rounded up to the next second).
        let challenges = ChallengeBook::new(
            (config.challenge_ttl * 3)
                .max(config.challenge_ttl + std::time::Duration::from_secs(2)),
            config.rate_window,
            config.challenges_per_window,
            config.challenges_per_device_window,
        );
        let authorities = Arc::new(Authorities::new(registry.clone(), ca, keys));
        Arc::new(Self {
            crls: CrlSigner::new(registry.clone(), authorities.clone(), config.crl_validity),
            limits: Limits::new(&config),
            registry,
            authorities,
            challenges,
            status_challenges: StatusChallenges::new(config.challenge_ttl),
            device_locks: DeviceLocks::new(4096),
            config,
            metrics,
        })
    }

    /// The registry.
    #[must_use]
    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_ref()
    }

    /// The platform's issuing CA (operator certificates, the service's TLS).
    #[must_use]
    pub fn ca(&self) -> &CertificateAuthority {
        self.authorities.platform()
    }

    /// The platform's and every owner's CAs.
    #[must_use]
    pub fn authorities(&self) -> &Arc<Authorities> {
        &self.authorities
    }

    /// The limits at the edge.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The CRL.
    #[must_use]
    pub fn crls(&self) -> &CrlSigner {
        &self.crls
    }

    /// The limits and timings.
    #[must_use]
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A shared handle on the metrics (for the `/metrics` endpoint).
    #[must_use]
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

/// Parses a DeviceId field: 64 hex characters in either case.
///
/// # Errors
/// [`ServiceError::InvalidArgument`] naming `field`.
pub fn parse_device_id(field: &str, text: &str) -> Result<DeviceId, ServiceError> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ServiceError::invalid(
            field,
            "must be a DeviceId: 64 hexadecimal characters",
        ));
    }
    text.to_ascii_lowercase()
        .parse()
        .map_err(|_| ServiceError::invalid(field, "must be a DeviceId: 64 hexadecimal characters"))
}

/// Checks a rollout id field: `ro-` and 16 lowercase hex digits.
///
/// # Errors
/// [`ServiceError::InvalidArgument`] naming `field`.
pub(crate) fn check_rollout_id(field: &str, id: &str) -> Result<(), ServiceError> {
    if crate::firmware::rollout::is_rollout_id(id) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            "must be \"ro-\" and 16 lowercase hex digits",
        ))
    }
}

/// A fresh random identifier (hex), for correlation IDs and batch IDs.
///
/// # Errors
/// [`ServiceError::Internal`] if the system RNG fails.
pub fn random_hex(bytes: usize) -> Result<String, ServiceError> {
    let mut buffer = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buffer)
        .map_err(|_| ServiceError::Internal("system RNG failed".into()))?;
    Ok(hex::encode(buffer))
}
