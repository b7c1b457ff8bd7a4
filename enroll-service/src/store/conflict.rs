//! Registry failures, and the typed [`Conflict`] that says which guard refused a change.

use rot_core::keys::DeviceId;

use crate::pki::Serial;

/// The guard that refused a change. Nothing of the change was applied.
///
/// Who may retry what: a conflict for which [`Conflict::is_concurrent_change`] holds means a
/// concurrent writer got there first; reading again and deciding again can succeed. The others
/// are answers about the request itself (the name is taken, the batch is gone): retrying the
/// same change fails the same way, so a caller either resolves them (reads the winner's
/// record) or reports them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// [`Guard::PolicyAbsent`](super::Guard): the policy exists.
    #[error("policy {owner}/{name} exists")]
    PolicyExists {
        /// Owner.
        owner: String,
        /// Name.
        name: String,
    },
    /// [`Guard::BatchAbsent`](super::Guard): a batch with that ID exists.
    #[error("batch {0} exists")]
    BatchExists(String),
    /// [`Op::AdjustCounts`](super::Op) of a batch that does not exist.
    #[error("batch {0} does not exist")]
    BatchAbsent(String),
    /// [`Guard::OwnerAbsent`](super::Guard): the owner exists.
    #[error("owner {0} exists")]
    OwnerExists(String),
    /// [`Guard::SerialAbsent`](super::Guard): a credential with that serial was stored before.
    #[error("serial {0} was already issued")]
    SerialTaken(Serial),
    /// [`Guard::RequestIdAbsent`](super::Guard): the owner used that idempotency key before.
    #[error("request id {request_id} was already used")]
    RequestIdUsed {
        /// Owner.
        owner: String,
        /// Key.
        request_id: String,
    },
    /// [`Guard::FirmwareSignerAbsent`](super::Guard): the owner has a firmware-signing key.
    #[error("owner {0} has a firmware-signing key")]
    FirmwareSignerExists(String),
    /// [`Guard::FirmwareAbsent`](super::Guard): that version was signed before.
    #[error("firmware {owner}/{name} {version} exists")]
    FirmwareExists {
        /// Owner.
        owner: String,
        /// Image name.
        name: String,
        /// Version.
        version: String,
    },
    /// [`Guard::OperatorUnrevoked`](super::Guard): the operator certificate is revoked, or not
    /// on record.
    #[error("operator certificate {0} is revoked or not on record")]
    OperatorRevoked(Serial),
    /// [`Op::PutDevice`](super::Op) of a record read at another version than the stored one.
    #[error(
        "device {device_id} changed since it was read (read at version {expected}, stored version {found})"
    )]
    DeviceChanged {
        /// The device.
        device_id: DeviceId,
        /// The version the writer read (0: none).
        expected: u64,
        /// The version stored now (0: none).
        found: u64,
    },
    /// [`Op::PutOwner`](super::Op) of a record read at another version than the stored one.
    #[error(
        "owner {name} changed since it was read (read at version {expected}, stored version {found})"
    )]
    OwnerChanged {
        /// The owner.
        name: String,
        /// The version the writer read (0: none).
        expected: u64,
        /// The version stored now (0: none).
        found: u64,
    },
    /// [`Op::PutRollout`](super::Op) of a record read at another version than the stored one.
    #[error(
        "rollout {owner}/{id} changed since it was read (read at version {expected}, stored version {found})"
    )]
    RolloutChanged {
        /// The owner.
        owner: String,
        /// The rollout.
        id: String,
        /// The version the writer read (0: none).
        expected: u64,
        /// The version stored now (0: none).
        found: u64,
    },
    /// [`Op::ReportRollout`](super::Op) of a rollout that does not exist.
    #[error("rollout {owner}/{id} does not exist")]
    RolloutAbsent {
        /// The owner.
        owner: String,
        /// The rollout.
        id: String,
    },
    /// [`Op::ReportRollout`](super::Op) by a device that reported the rollout before.
    #[error("device {device_id} already reported rollout {id}")]
    RolloutReported {
        /// The rollout.
        id: String,
        /// The device.
        device_id: String,
    },
    /// [`Op::PutCrl`](super::Op) whose number is not above the stored CRL's.
    #[error("CRL number {number} of {issuer} is not above the stored CRL's {stored}")]
    CrlNumberTaken {
        /// The issuing CA.
        issuer: String,
        /// The refused CRL's number.
        number: u64,
        /// The stored CRL's number.
        stored: u64,
    },
}

impl Conflict {
    /// Whether the conflict is a concurrent writer's doing (a record's version moved, another
    /// CRL was stored first), so that reading again and deciding again can succeed. What
    /// "again" means is the caller's: re-check, and sign again only if the re-check still
    /// calls for a new signature.
    #[must_use]
    pub fn is_concurrent_change(&self) -> bool {
        matches!(
            self,
            Self::DeviceChanged { .. }
                | Self::OwnerChanged { .. }
                | Self::RolloutChanged { .. }
                | Self::CrlNumberTaken { .. }
        )
    }
}

/// Registry failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A guard refused the change; nothing of it was written.
    #[error("conflict: {0}")]
    Conflict(#[from] Conflict),
    /// The change cannot be recorded as given (an audit entry with no canonical form);
    /// nothing of it was written.
    #[error("unrecordable change: {0}")]
    Unrecordable(String),
    /// The store cannot be read or written (I/O error, stopped after a failed fsync, the
    /// database unreachable).
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

impl StoreError {
    /// The conflict, if this is one.
    #[must_use]
    pub fn conflict(&self) -> Option<&Conflict> {
        match self {
            Self::Conflict(conflict) => Some(conflict),
            _ => None,
        }
    }

    /// Whether this is a [`Conflict::DeviceChanged`]: the device must be read again.
    #[must_use]
    pub fn is_device_changed(&self) -> bool {
        matches!(self, Self::Conflict(Conflict::DeviceChanged { .. }))
    }
}
