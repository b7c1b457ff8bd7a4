//! The gRPC handlers and the state they share.
//!
//! ```text
//!  DeviceEnrollment (service/device.rs) ─┐
//!                                        ├──▶ Enrollment: registry, CA, challenge book, device locks,
//!  Operator (service/operator.rs) ───────┘               CRL, metrics, limits
//! ```
//!
//! Every write goes through the registry as one [`Change`] that includes its audit entries, so
//! the audit log and the state never disagree. Writes that concern one device hold that
//! device's lock from the read to the durable commit, so two streams of the same device cannot
//! both issue a credential.

mod auth;
mod challenge;
mod device;
mod operator;
mod rate;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use oxroot_proto::v1;
use rot_core::keys::DeviceId;

use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::metrics::Metrics;
use crate::model::{CredentialRecord, CrlRecord, timestamp};
use crate::pki::{
    CertificateAuthority, OperatorCredentials, OperatorKey, RevokedEntry, Role, Serial, Validity,
};
use crate::policy::PolicySpec;
use crate::store::{Change, Op, Receipt, Registry, StoreError, commit};

pub use auth::Caller;
pub use challenge::{ChallengeBook, ChallengeId, ForeignChallenge};
pub use device::{DeviceService, verify_signature};
pub use operator::{OperatorService, record_operator_certificate};
use rate::FixedWindow;

/// Tunable limits and timings. Defaults are the ones the gRPC contract documents.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// How long a challenge stays valid.
    pub challenge_ttl: Duration,
    /// How long a stream may take to send its first message.
    pub first_message_timeout: Duration,
    /// Longest Onboard / Renew stream.
    pub stream_timeout: Duration,
    /// Challenges one device may ask for per `rate_window`.
    pub challenges_per_window: u32,
    /// Window of the challenge rate limit.
    pub rate_window: Duration,
    /// Concurrent Onboard / Renew streams per client IP address.
    pub max_streams_per_peer: usize,
    /// Concurrent calls and streams (WatchBatch, ImportDevices) per operator.
    pub max_calls_per_operator: usize,
    /// Refusals of unregistered DeviceIds (or IDs that do not match their key) audited per
    /// client address (IPv6: per /64) per `rate_window`. Anyone can invent such IDs; beyond
    /// this budget they are still refused, but not written to the audit log.
    pub audited_unknown_refusals_per_peer: u32,
    /// Validity of each signed CRL; it is re-signed when half of it has passed.
    pub crl_validity: Duration,
    /// Largest device request message.
    pub max_device_message: usize,
    /// Largest operator request message.
    pub max_operator_message: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            challenge_ttl: Duration::from_secs(60),
            first_message_timeout: Duration::from_secs(10),
            stream_timeout: Duration::from_secs(120),
            challenges_per_window: 10,
            rate_window: Duration::from_secs(60),
            max_streams_per_peer: 4096,
            max_calls_per_operator: 64,
            audited_unknown_refusals_per_peer: 600,
            crl_validity: Duration::from_secs(7 * 24 * 3600),
            max_device_message: 16 * 1024,
            max_operator_message: 4 * 1024 * 1024,
        }
    }
}

/// A refusal: a coarse reason for the device, a precise detail for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What the device is told.
    pub reason: v1::RefusalReason,
    /// What operators see.
    pub detail: v1::RefusalDetail,
    /// When the device may retry (rate limit).
    pub retry_after: Option<Duration>,
}

impl Refusal {
    /// A refusal.
    #[must_use]
    pub fn new(reason: v1::RefusalReason, detail: v1::RefusalDetail) -> Self {
        Self {
            reason,
            detail,
            retry_after: None,
        }
    }

    /// A failed proof of any kind: the device learns nothing about which check failed.
    #[must_use]
    pub fn proof(detail: v1::RefusalDetail) -> Self {
        Self::new(v1::RefusalReason::ProofRejected, detail)
    }

    /// Text for device logs; never names the precise cause of a failed proof.
    #[must_use]
    pub fn device_message(&self) -> &'static str {
        match self.reason {
            v1::RefusalReason::UnknownDevice => "unknown device: register first",
            v1::RefusalReason::NotProvisioned => "the device is not in a batch yet",
            v1::RefusalReason::Revoked => "the device is revoked",
            v1::RefusalReason::ProofRejected => "the proof was rejected; start a new stream",
            v1::RefusalReason::ChallengeExpired => "the challenge expired; start a new stream",
            v1::RefusalReason::RateLimited => "too many attempts; retry later",
            v1::RefusalReason::KeySlotUnavailable => "the requested key slot cannot be used",
            v1::RefusalReason::NotOnboarded => "the device was never onboarded; use Onboard",
            v1::RefusalReason::Unspecified => "refused",
        }
    }

    /// Lower-case name of the detail for audit records and metrics labels.
    #[must_use]
    pub fn detail_name(&self) -> String {
        self.detail
            .as_str_name()
            .trim_start_matches("REFUSAL_DETAIL_")
            .to_ascii_lowercase()
    }

    /// The wire message.
    #[must_use]
    pub fn to_proto(&self, reference: &str) -> v1::Refusal {
        v1::Refusal {
            reason: self.reason as i32,
            message: self.device_message().to_owned(),
            retry_after: self.retry_after.map(|d| prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
            reference: reference.to_owned(),
        }
    }
}

/// A held device lock. Owned (not borrowed from the lock table) so that it can outlive the
/// handler that took it: see [`Enrollment::commit_locked`].
pub(crate) type DeviceGuard = OwnedMutexGuard<()>;

/// Per-device locks, striped: a fixed set of mutexes indexed by a hash of the DeviceId, so
/// memory does not grow with the fleet.
#[derive(Debug)]
struct DeviceLocks {
    stripes: Vec<Arc<AsyncMutex<()>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl DeviceLocks {
    fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes)
                .map(|_| Arc::new(AsyncMutex::new(())))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The stripe guarding `device_id`: the one place that maps devices to stripes, so single
    /// and multi-device lockers always agree.
    fn stripe(&self, device_id: &str) -> usize {
        (self.hasher.hash_one(device_id) % self.stripes.len() as u64) as usize
    }

    async fn lock(&self, device_id: &str) -> DeviceGuard {
        self.stripes[self.stripe(device_id)]
            .clone()
            .lock_owned()
            .await
    }

    /// Locks several devices for one commit (an import chunk). Each stripe is taken once and in
    /// ascending order: two devices sharing a stripe cannot deadlock their own holder, and two
    /// multi-device holders cannot deadlock each other. The caller must hold no device lock.
    async fn lock_many<'a>(
        &self,
        device_ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<DeviceGuard> {
        let stripes: std::collections::BTreeSet<usize> =
            device_ids.into_iter().map(|id| self.stripe(id)).collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for index in stripes {
            guards.push(self.stripes[index].clone().lock_owned().await);
        }
        guards
    }
}

/// Counts of open calls per key (a client address, an operator), each under a limit. A call
/// holds a slot while it runs; dropping the slot frees it, however the call ended.
#[derive(Debug)]
struct Concurrency<K> {
    open: Mutex<HashMap<K, usize>>,
}

impl<K: std::hash::Hash + Eq + Clone> Concurrency<K> {
    fn new() -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for `key`, or `None` when `limit` calls of `key` are open.
    fn try_take(self: &Arc<Self>, key: K, limit: usize) -> Option<Slot<K>> {
        let mut open = self.counts();
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
struct Slot<K: std::hash::Hash + Eq + Clone> {
    limiter: Arc<Concurrency<K>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut open = self.limiter.counts();
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

/// An operator call's place under that operator's limit. Held, never read.
#[derive(Debug)]
pub(crate) struct CallSlot(#[expect(dead_code, reason = "held for its Drop")] Slot<String>);

/// The state every handler shares.
#[derive(Debug)]
pub struct Enrollment {
    registry: Arc<dyn Registry>,
    ca: Arc<CertificateAuthority>,
    config: ServiceConfig,
    challenges: ChallengeBook,
    locks: DeviceLocks,
    crl_lock: AsyncMutex<()>,
    peer_streams: Arc<Concurrency<IpAddr>>,
    operator_calls: Arc<Concurrency<String>>,
    unknown_refusals: FixedWindow<IpAddr>,
    metrics: Arc<Metrics>,
}

impl Enrollment {
    /// Shared state over a registry and a CA.
    #[must_use]
    pub fn new(
        registry: Arc<dyn Registry>,
        ca: Arc<CertificateAuthority>,
        config: ServiceConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let challenges = ChallengeBook::new(
            config.challenge_ttl * 3,
            config.rate_window,
            config.challenges_per_window,
        );
        let unknown_refusals =
            FixedWindow::new(config.rate_window, config.audited_unknown_refusals_per_peer);
        Arc::new(Self {
            registry,
            ca,
            config,
            challenges,
            locks: DeviceLocks::new(4096),
            crl_lock: AsyncMutex::new(()),
            peer_streams: Arc::new(Concurrency::new()),
            operator_calls: Arc::new(Concurrency::new()),
            unknown_refusals,
            metrics,
        })
    }

    /// Issues an operator certificate outside the operator API (the demo's admin, test
    /// harnesses) and records it as IssueOperatorCertificate does; `issued_by` is the audit
    /// actor.
    ///
    /// # Errors
    /// The CA's refusal (invalid name, owner, key or validity) or the registry's.
    pub async fn issue_operator_certificate(
        &self,
        key: &OperatorKey,
        identity: (&str, &str, Role),
        validity: Validity,
        issued_by: &str,
    ) -> Result<OperatorCredentials, ServiceError> {
        let (name, owner, role) = identity;
        let issued = self.ca.issue_operator_certificate(
            key,
            name,
            owner,
            role,
            validity,
            Serial::random()?,
        )?;
        record_operator_certificate(self.registry.as_ref(), &issued.certificate.der, issued_by)
            .await?;
        Ok(issued)
    }

    /// The registry.
    #[must_use]
    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_ref()
    }

    /// The CA.
    #[must_use]
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The limits.
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

    /// Commits `change` and holds `guards` until it is durable, *even if the caller is
    /// cancelled* (a client reset or deadline drops the handler's future): the wait runs in its
    /// own task. Releasing a device lock while its change is queued but not applied would let
    /// another handler read the old record and overwrite the change. The guards come back to
    /// the caller (for a retry under the same locks) unless it was cancelled.
    pub(crate) async fn commit_locked(
        &self,
        change: Change,
        guards: Vec<DeviceGuard>,
    ) -> (Result<Receipt, StoreError>, Vec<DeviceGuard>) {
        let pending = self.registry.submit(change);
        let waiter = tokio::spawn(async move {
            let outcome = pending.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the registry writer stopped".into(),
                ))
            });
            (outcome, guards)
        });
        waiter.await.unwrap_or_else(|e| {
            (
                Err(StoreError::Unavailable(format!("commit task failed: {e}"))),
                Vec::new(),
            )
        })
    }

    /// Takes a stream slot for `peer`, or refuses when the peer has too many open.
    pub(crate) fn open_stream(&self, peer: Option<IpAddr>) -> Result<StreamSlot, ServiceError> {
        let Some(ip) = peer else {
            return Ok(StreamSlot(None));
        };
        let limit = self.config.max_streams_per_peer;
        self.peer_streams
            .try_take(ip, limit)
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
        let limit = self.config.max_calls_per_operator;
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

    /// The credential bundle for an issued certificate.
    ///
    /// # Errors
    /// [`ServiceError::Internal`] if the stored record is inconsistent.
    pub fn bundle(
        &self,
        credential: &CredentialRecord,
        policy: &PolicySpec,
    ) -> Result<v1::CredentialBundle, ServiceError> {
        let device_id: DeviceId = credential
            .device_id
            .parse()
            .map_err(|_| ServiceError::Internal("stored DeviceId is malformed".into()))?;
        Ok(v1::CredentialBundle {
            device_id: credential.device_id.clone(),
            serial: credential.serial.clone(),
            certificate_pem: credential.certificate_pem.clone(),
            intermediate_pems: vec![self.ca.intermediate_pem()],
            root_pem: self.ca.root_pem(),
            policy_kind: policy.kind() as i32,
            policy_name: policy.name.clone(),
            not_before: Some(timestamp(credential.not_before)),
            not_after: Some(timestamp(credential.not_after)),
            renew_after: credential.renew_after.map(timestamp),
            key_slot: u32::from(credential.key_slot),
            endpoint: Some(policy.endpoint(
                &device_id,
                &credential.subject_cn,
                &self.ca.root_pem(),
            )),
        })
    }

    /// Re-signs the CRL from every revoked serial and stores it with the next CRL number.
    /// Callers hold no device lock; concurrent re-signs are serialised.
    ///
    /// # Errors
    /// Registry or CA failures.
    pub async fn resign_crl(&self, actor: &str) -> Result<CrlRecord, ServiceError> {
        let _guard = self.crl_lock.lock().await;
        let now = OffsetDateTime::now_utc();
        let revoked = self.registry.revoked()?;
        let entries = revoked
            .iter()
            .map(|(serial, entry)| {
                Ok(RevokedEntry {
                    serial: parse_serial(serial)?,
                    revoked_at: entry.revoked_at,
                    reason: entry.reason.to_pki(),
                })
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        let number = self.registry.crl()?.map_or(1, |c| c.number + 1);
        let next_update = now + self.config.crl_validity;
        let crl = self.ca.sign_crl(&entries, now, next_update, number)?;
        let record = CrlRecord {
            number,
            this_update: now,
            next_update,
            der_hex: hex::encode(&crl.der),
            pem: crl.pem,
            revoked_count: entries.len() as u64,
        };
        let mut change = Change::new();
        change.op(Op::PutCrl(record.clone())).audit(
            AuditDraft::new(now, actor, "*", "crl.sign", "crl", "ok")
                .detail("crl_number", number.to_string())
                .detail("revoked_count", entries.len().to_string()),
        );
        commit(self.registry.as_ref(), change).await?;
        Ok(record)
    }

    /// The current CRL. A new one is signed when there is none, when a revocation is not on
    /// it yet (a revocation commit and its re-signing are two steps: a failure or a cancelled
    /// call between them must not leave a revoked serial off the CRL), or when half its
    /// validity has passed (a CRL past nextUpdate makes Mosquitto reject every client).
    ///
    /// # Errors
    /// Registry or CA failures.
    pub async fn current_crl(&self) -> Result<CrlRecord, ServiceError> {
        let now = OffsetDateTime::now_utc();
        if let Some(crl) = self.registry.crl()? {
            let half = (crl.next_update - crl.this_update) / 2;
            let complete = crl.revoked_count == self.registry.revoked_count()?;
            if complete && now < crl.this_update + half {
                return Ok(crl);
            }
        }
        self.resign_crl("system").await
    }
}

/// Parses a serial as stored (lowercase hex).
fn parse_serial(serial: &str) -> Result<Serial, ServiceError> {
    let value = u128::from_str_radix(serial, 16)
        .map_err(|_| ServiceError::Internal(format!("stored serial {serial:?} is malformed")))?;
    Serial::new(value).map_err(|_| ServiceError::Internal("stored serial is zero".into()))
}

/// Formats a serial the way the contract says: lowercase hex of the magnitude, no padding.
#[must_use]
pub fn format_serial(serial: Serial) -> String {
    format!("{:x}", serial.get())
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
