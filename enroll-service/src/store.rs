//! The registry: devices, policies, batches, issued certificates, the CRL and the audit log,
//! behind the [`Registry`] trait so a server-grade backend (PostgreSQL, shared by stateless
//! replicas) can replace the embedded one ([`SledRegistry`]).
//!
//! Writes are [`Change`]s: a list of [`Guard`]s and [`Op`]s applied atomically, audit entries
//! included. [`Registry::submit`] resolves only once the change is *durable*; the service sends a
//! credential only after that. The sled backend batches concurrent changes into one
//! write + fsync (group commit), which is what keeps throughput up when every onboarding must be
//! durable.
//!
//! Reads see committed changes; they are plain synchronous calls because the embedded backend
//! answers them from memory.

pub mod codec;
mod sled_backend;

use std::fmt;

use rot_core::keys::DeviceId;
use tokio::sync::{broadcast, oneshot};

use crate::audit::{AuditDraft, StoredAuditEntry};
use crate::model::{
    BatchRecord, CountsDelta, CredentialRecord, CrlEntryRecord, CrlRecord, DeviceEvent,
    DeviceRecord, OperatorCertificateRecord, OwnerRecord,
};
use crate::pki::Serial;
use crate::policy::PolicySpec;

pub use sled_backend::SledRegistry;

/// A precondition of a [`Change`]; if one fails the whole change is refused with
/// [`StoreError::Conflict`] and nothing of it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guard {
    /// No policy of that owner and name exists.
    PolicyAbsent {
        /// Owner.
        owner: String,
        /// Name.
        name: String,
    },
    /// No batch with that ID exists.
    BatchAbsent(String),
    /// No owner of that name exists.
    OwnerAbsent(String),
    /// No credential with that serial was ever stored: a serial is never issued twice.
    SerialAbsent(Serial),
    /// The owner has not used this CreateBatch idempotency key.
    RequestIdAbsent {
        /// Owner.
        owner: String,
        /// Client-chosen key.
        request_id: String,
    },
}

/// One write of a [`Change`].
#[derive(Clone, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "ops live briefly in one change; boxing devices buys nothing"
)]
pub enum Op {
    /// Insert or replace a device.
    PutDevice(DeviceRecord),
    /// Insert a policy (guard with [`Guard::PolicyAbsent`]; policies are immutable).
    PutPolicy(Box<PolicySpec>),
    /// Insert or replace a batch's descriptive fields. The counts of an existing batch are
    /// kept: they change only through [`Op::AdjustCounts`].
    PutBatch(BatchRecord),
    /// Make a device a member of a batch (the membership index used for listing).
    AddToBatch {
        /// Batch.
        batch_id: String,
        /// Device.
        device_id: DeviceId,
    },
    /// Remove a device from a batch's membership index.
    RemoveFromBatch {
        /// Batch.
        batch_id: String,
        /// Device.
        device_id: DeviceId,
    },
    /// Insert or replace an issued certificate record.
    PutCredential(Box<CredentialRecord>),
    /// Insert or replace an operator certificate record.
    PutOperatorCertificate(Box<OperatorCertificateRecord>),
    /// Put a serial on the revocation list of the CA that issued it.
    Revoke {
        /// The issuing CA's id (`platform`, `<owner>/<n>`).
        issuer: String,
        /// Serial.
        serial: Serial,
        /// CRL entry.
        entry: CrlEntryRecord,
    },
    /// Insert or replace an owner and its CAs (guard a new one with [`Guard::OwnerAbsent`]).
    PutOwner(Box<OwnerRecord>),
    /// Add to a batch's counts (applied in commit order, so concurrent changes compose).
    AdjustCounts {
        /// Batch.
        batch_id: String,
        /// Delta.
        delta: CountsDelta,
    },
    /// Schedule the revocation of a credential a renewal superseded: due when its grace ends
    /// (replaces an earlier schedule of the same serial).
    ScheduleRevocation {
        /// The superseded credential.
        serial: Serial,
        /// When it is revoked unless the device proves its successor first.
        due: time::OffsetDateTime,
    },
    /// Drop a credential's scheduled revocation (it was revoked, or needs none any more).
    /// Nothing happens if none is scheduled.
    CancelScheduledRevocation(Serial),
    /// Store the latest signed CRL of an issuing CA.
    PutCrl {
        /// The issuing CA's id.
        issuer: String,
        /// The CRL.
        record: CrlRecord,
    },
    /// Remember a CreateBatch idempotency key.
    PutRequestId {
        /// Owner.
        owner: String,
        /// Key.
        request_id: String,
        /// Batch created for it.
        batch_id: String,
    },
    /// Append an audit entry (sequence number and hash chain assigned at commit).
    Audit(AuditDraft),
}

/// Something that happened, published to watchers once durable.
#[derive(Clone, Debug)]
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
}

/// An atomic, durable unit of writes.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// Preconditions.
    pub guards: Vec<Guard>,
    /// Writes, applied in order.
    pub ops: Vec<Op>,
    /// Published after the change is durable.
    pub events: Vec<RegistryEvent>,
}

impl Change {
    /// An empty change.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a write.
    pub fn op(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Adds a precondition.
    pub fn guard(&mut self, guard: Guard) -> &mut Self {
        self.guards.push(guard);
        self
    }

    /// Adds an audit entry.
    pub fn audit(&mut self, draft: AuditDraft) -> &mut Self {
        self.ops.push(Op::Audit(draft));
        self
    }

    /// Adds an event to publish.
    pub fn event(&mut self, event: RegistryEvent) -> &mut Self {
        self.events.push(event);
        self
    }

    /// A device of `batch_id` moved its batch's counts by `delta`, and watchers hear of it: the
    /// device's event (if any) and that the counts changed. Every change of a batch member's
    /// state says all three together, so a watcher's counts never lag its events.
    pub fn batch_moved(
        &mut self,
        batch_id: &str,
        delta: CountsDelta,
        event: Option<DeviceEvent>,
    ) -> &mut Self {
        self.op(Op::AdjustCounts {
            batch_id: batch_id.to_owned(),
            delta,
        });
        if let Some(event) = event {
            self.event(RegistryEvent::Device {
                batch_id: batch_id.to_owned(),
                event,
            });
        }
        self.event(RegistryEvent::CountsChanged {
            batch_id: batch_id.to_owned(),
        })
    }
}

/// What a durable commit assigned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Sequence numbers of the change's audit entries.
    pub audit_seqs: Vec<u64>,
}

/// Registry failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A [`Guard`] failed; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The change cannot be recorded as given (an audit entry with no canonical form);
    /// nothing of it was written.
    #[error("unrecordable change: {0}")]
    Unrecordable(String),
    /// The store cannot be read or written (I/O error, or stopped after a failed fsync).
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("registry record {key} is corrupt: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Decoder message.
        reason: String,
    },
}

/// Filters of [`Registry::devices`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Only members of this batch.
    pub batch_id: Option<String>,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only devices in this state.
    pub state: Option<crate::model::DeviceState>,
}

/// The registry.
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// Queues a change; the receiver resolves once it is durable (or refused).
    fn submit(&self, change: Change) -> oneshot::Receiver<Result<Receipt, StoreError>>;

    /// Events of durable changes.
    fn subscribe(&self) -> broadcast::Receiver<RegistryEvent>;

    /// A device.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    fn device(&self, device_id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError>;

    /// Devices ordered by DeviceId, after `after`, at most `limit` of them matching `filter`.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn devices(
        &self,
        filter: &DeviceFilter,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError>;

    /// A policy.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn policy(&self, owner: &str, name: &str) -> Result<Option<PolicySpec>, StoreError>;

    /// Policies ordered by (owner, name), after `after`, at most `limit`, of `owner` if given.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn policies(
        &self,
        owner: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<PolicySpec>, StoreError>;

    /// A batch.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError>;

    /// Batches newest first, strictly older than `before` (a batch ID), at most `limit`, of
    /// `owner` if given.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn batches(
        &self,
        owner: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BatchRecord>, StoreError>;

    /// The batch a CreateBatch idempotency key created.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn request_id(&self, owner: &str, request_id: &str) -> Result<Option<String>, StoreError>;

    /// An issued certificate.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn credential(&self, serial: Serial) -> Result<Option<CredentialRecord>, StoreError>;

    /// An operator certificate this service issued.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn operator_certificate(
        &self,
        serial: Serial,
    ) -> Result<Option<OperatorCertificateRecord>, StoreError>;

    /// Operator certificates ordered by serial, after `after`, at most `limit`, of `owner` if
    /// given.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn operator_certificates(
        &self,
        owner: Option<&str>,
        after: Option<Serial>,
        limit: usize,
    ) -> Result<Vec<OperatorCertificateRecord>, StoreError>;

    /// Number of certificates ever stored.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn credential_count(&self) -> Result<u64, StoreError>;

    /// Every serial an issuing CA revoked, with its CRL entry.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn revoked(&self, issuer: &str) -> Result<Vec<(Serial, CrlEntryRecord)>, StoreError>;

    /// Number of serials an issuing CA revoked (what its complete CRL lists).
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn revoked_count(&self, issuer: &str) -> Result<u64, StoreError>;

    /// The latest signed CRL of an issuing CA.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn crl(&self, issuer: &str) -> Result<Option<CrlRecord>, StoreError>;

    /// Scheduled revocations due at or before `due_by`, at most `limit` of them, in no
    /// particular order (see [`Op::ScheduleRevocation`]).
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn scheduled_revocations(
        &self,
        due_by: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<(Serial, time::OffsetDateTime)>, StoreError>;

    /// When a credential's scheduled revocation is due, if one is scheduled.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn scheduled_revocation(
        &self,
        serial: Serial,
    ) -> Result<Option<time::OffsetDateTime>, StoreError>;

    /// An owner and its CAs.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn owner(&self, name: &str) -> Result<Option<OwnerRecord>, StoreError>;

    /// Owners ordered by name, after `after`, at most `limit`.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn owners(&self, after: Option<&str>, limit: usize) -> Result<Vec<OwnerRecord>, StoreError>;

    /// Audit entries with `seq >= start`, ascending, at most `limit`.
    ///
    /// # Errors
    /// As [`Registry::device`].
    fn audit(&self, start: u64, limit: usize) -> Result<Vec<(u64, StoredAuditEntry)>, StoreError>;

    /// Sequence number of the newest audit entry (0 if none).
    fn audit_head(&self) -> u64;

    /// True once a write failed to become durable: from then on the registry refuses reads and
    /// writes until the service restarts (what was applied but not synced must not be served).
    fn failed(&self) -> bool;
}

/// Submits a change and waits until it is durable.
///
/// # Errors
/// The registry's refusal, or [`StoreError::Unavailable`] if it stopped.
pub async fn commit(registry: &dyn Registry, change: Change) -> Result<Receipt, StoreError> {
    registry
        .submit(change)
        .await
        .map_err(|_| StoreError::Unavailable("the registry writer stopped".to_owned()))?
}
