//! What a commit carries: [`Guard`]s, [`Op`]s and events, applied all or nothing.

use rot_core::keys::DeviceId;

use super::events::RegistryEvent;
use crate::audit::AuditDraft;
use crate::model::{
    BatchRecord, CountsDelta, CredentialRecord, CrlEntryRecord, CrlRecord, DeviceEvent,
    DeviceRecord, FirmwareRecord, FirmwareSignerRecord, OperatorCertificateRecord, OwnerRecord,
    RolloutRecord, RolloutReportRecord,
};
use crate::pki::Serial;
use crate::policy::PolicySpec;

/// A precondition of a [`Change`]; if one fails the whole change is refused with the
/// [`Conflict`](super::Conflict) it names, and nothing of it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guard {
    /// No policy of that owner and name exists ([`Conflict::PolicyExists`](super::Conflict)).
    PolicyAbsent {
        /// Owner.
        owner: String,
        /// Name.
        name: String,
    },
    /// No batch with that ID exists ([`Conflict::BatchExists`](super::Conflict)).
    BatchAbsent(String),
    /// No owner of that name exists ([`Conflict::OwnerExists`](super::Conflict)).
    OwnerAbsent(String),
    /// No credential with that serial was ever stored: a serial is never issued twice
    /// ([`Conflict::SerialTaken`](super::Conflict)).
    SerialAbsent(Serial),
    /// The owner has not used this CreateBatch idempotency key
    /// ([`Conflict::RequestIdUsed`](super::Conflict)).
    RequestIdAbsent {
        /// Owner.
        owner: String,
        /// Client-chosen key.
        request_id: String,
    },
    /// The operator certificate is on record and not revoked: a revocation happens once
    /// ([`Conflict::OperatorRevoked`](super::Conflict)).
    OperatorUnrevoked(Serial),
    /// The owner has no firmware-signing key yet
    /// ([`Conflict::FirmwareSignerExists`](super::Conflict)).
    FirmwareSignerAbsent(String),
    /// No firmware of that owner, name and version was signed before: a version is signed
    /// once ([`Conflict::FirmwareExists`](super::Conflict)).
    FirmwareAbsent {
        /// Owner.
        owner: String,
        /// Image name.
        name: String,
        /// Version (canonical text).
        version: String,
    },
}

/// One write of a [`Change`].
#[derive(Clone, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "ops live briefly in one change; boxing devices buys nothing"
)]
pub enum Op {
    /// Insert or replace a device, *compare-and-set on its version*: written only if the
    /// stored record's version is still `record.version` (0: there is no record yet), and
    /// stored as the next version. Otherwise the change is refused with
    /// [`Conflict::DeviceChanged`](super::Conflict): someone wrote the device since it was
    /// read, and the writer must read it again. Every device write is a read-modify-write, so
    /// every one is guarded; put a device at most once per change.
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
    /// Insert or replace an issued certificate record. A new serial is guarded by
    /// [`Guard::SerialAbsent`]; an existing credential is rewritten (superseded, revoked) only
    /// in the same change as its device's [`Op::PutDevice`], whose version guards both.
    PutCredential(Box<CredentialRecord>),
    /// Insert or replace an operator certificate record (a revocation guards with
    /// [`Guard::OperatorUnrevoked`]).
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
    /// Insert or replace an owner and its CAs, compare-and-set on `record.version` as
    /// [`Op::PutDevice`] ([`Conflict::OwnerChanged`](super::Conflict)); guard a new one with
    /// [`Guard::OwnerAbsent`] as well, for the conflict that says so.
    PutOwner(Box<OwnerRecord>),
    /// Add to a batch's counts, applied by the store in commit order so that concurrent changes
    /// compose. Refused with [`Conflict::BatchAbsent`](super::Conflict) if the batch does not
    /// exist.
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
    /// Store the latest signed CRL of an issuing CA. Its number must be above the stored CRL's
    /// (CRL numbers strictly increase per issuer, RFC 5280 §5.2.3), else the change is refused
    /// with [`Conflict::CrlNumberTaken`](super::Conflict): another signer got there first.
    PutCrl {
        /// The issuing CA's id.
        issuer: String,
        /// The CRL.
        record: CrlRecord,
    },
    /// Remember a CreateBatch idempotency key (guard with [`Guard::RequestIdAbsent`]).
    PutRequestId {
        /// Owner.
        owner: String,
        /// Key.
        request_id: String,
        /// Batch created for it.
        batch_id: String,
    },
    /// Insert an owner's firmware-signing key (guard with [`Guard::FirmwareSignerAbsent`]).
    PutFirmwareSigner(Box<FirmwareSignerRecord>),
    /// Insert a signed firmware image and its record (guard with [`Guard::FirmwareAbsent`];
    /// firmware is immutable).
    PutFirmware {
        /// The record.
        record: Box<FirmwareRecord>,
        /// The signed image file.
        image: Vec<u8>,
    },
    /// Insert or replace a rollout, compare-and-set on `record.version` as [`Op::PutDevice`]
    /// ([`Conflict::RolloutChanged`](super::Conflict); 0: a new rollout, refused the same way
    /// if its id is taken). Its outcomes are the store's and are kept.
    PutRollout(Box<RolloutRecord>),
    /// Record one device's report of a rollout and count it in the rollout's outcomes, in
    /// commit order so that concurrent reports compose. Refused with
    /// [`Conflict::RolloutReported`](super::Conflict) if the device reported this rollout
    /// before (each device counts once), [`Conflict::RolloutAbsent`](super::Conflict) if there
    /// is no such rollout.
    ReportRollout {
        /// Owner.
        owner: String,
        /// Rollout.
        rollout_id: String,
        /// The report.
        report: Box<RolloutReportRecord>,
    },
    /// Append an audit entry; the store gives it its sequence number and chains its hash to
    /// the entry before it, inside the commit.
    Audit(AuditDraft),
}

/// An atomic, durable unit of writes.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// Preconditions.
    pub guards: Vec<Guard>,
    /// Writes, applied in order.
    pub ops: Vec<Op>,
    /// Published to every subscriber after the change is durable.
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
