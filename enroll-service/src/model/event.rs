//! What happened to a device, as the registry publishes it once durable, and why a device was
//! refused. The service converts both to the wire ([`crate::wire`]).

use rot_core::keys::DeviceId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::pki::Serial;

/// Why an Onboard or Renew was refused, precisely: what operators see in the audit log and in
/// WatchBatch. The device hears only the coarse reason each detail maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalDetail {
    /// The DeviceId has no registration.
    Unregistered,
    /// The EPK does not hash to the DeviceId, or is not the registered one.
    DeviceIdMismatch,
    /// The device is in no batch, or its batch or policy is gone.
    NotInBatch,
    /// The device is revoked.
    Revoked,
    /// The proof answered a challenge that was already spent.
    NonceReplayed,
    /// The proof came after its challenge expired.
    NonceExpired,
    /// The proof answered a challenge this stream was never given.
    NonceForeign,
    /// The enrolment key's signature does not verify.
    BadEskSignature,
    /// The device key's signature does not verify.
    BadDskSignature,
    /// The DPK is not a valid key, is the EPK, or differs from the one proved for its slot.
    DpkMismatch,
    /// The proof names another key slot than the challenge.
    SlotMismatch,
    /// Too many challenges for this device.
    RateLimited,
    /// The requested key slot cannot be used.
    KeySlotUnavailable,
    /// Renew for a device that was never onboarded.
    NotOnboarded,
    /// The policy lists firmware measurements and the proof proves no firmware.
    FirmwareNotMeasured,
    /// The proof's firmware measurement (signed by the ESK) is not one the policy lists.
    FirmwareNotAccepted,
    /// The ESK's signature over the firmware binding does not verify.
    BadFirmwareSignature,
    /// The alias public key is not a valid point, equals the EPK or the DPK, or its signature
    /// does not verify.
    BadAliasKey,
}

impl RefusalDetail {
    /// Every detail, for tables and tests.
    pub const ALL: [Self; 18] = [
        Self::Unregistered,
        Self::DeviceIdMismatch,
        Self::NotInBatch,
        Self::Revoked,
        Self::NonceReplayed,
        Self::NonceExpired,
        Self::NonceForeign,
        Self::BadEskSignature,
        Self::BadDskSignature,
        Self::DpkMismatch,
        Self::SlotMismatch,
        Self::RateLimited,
        Self::KeySlotUnavailable,
        Self::NotOnboarded,
        Self::FirmwareNotMeasured,
        Self::FirmwareNotAccepted,
        Self::BadFirmwareSignature,
        Self::BadAliasKey,
    ];

    /// The lower-case name in audit records and metric labels (`nonce_replayed`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unregistered => "unregistered",
            Self::DeviceIdMismatch => "device_id_mismatch",
            Self::NotInBatch => "not_in_batch",
            Self::Revoked => "revoked",
            Self::NonceReplayed => "nonce_replayed",
            Self::NonceExpired => "nonce_expired",
            Self::NonceForeign => "nonce_foreign",
            Self::BadEskSignature => "bad_esk_signature",
            Self::BadDskSignature => "bad_dsk_signature",
            Self::DpkMismatch => "dpk_mismatch",
            Self::SlotMismatch => "slot_mismatch",
            Self::RateLimited => "rate_limited",
            Self::KeySlotUnavailable => "key_slot_unavailable",
            Self::NotOnboarded => "not_onboarded",
            Self::FirmwareNotMeasured => "firmware_not_measured",
            Self::FirmwareNotAccepted => "firmware_not_accepted",
            Self::BadFirmwareSignature => "bad_firmware_signature",
            Self::BadAliasKey => "bad_alias_key",
        }
    }
}

/// What happened to a device of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceEventKind {
    /// Added to the batch (CreateBatch, ImportDevices, TransferDevice).
    Added,
    /// The device registered its EPK.
    Registered,
    /// Onboard issued this credential.
    Onboarded {
        /// The certificate's serial.
        serial: Serial,
        /// The key slot it certifies.
        key_slot: u8,
    },
    /// Renew issued this credential.
    Renewed {
        /// The certificate's serial.
        serial: Serial,
        /// The key slot it certifies.
        key_slot: u8,
    },
    /// An Onboard or Renew was refused.
    Refused(RefusalDetail),
    /// The device was revoked.
    Revoked,
    /// The device was moved out of the batch.
    TransferredOut,
}

/// A device event of a batch, published to watchers once the change is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEvent {
    /// The device.
    #[serde(with = "super::stored_as_text::device_id")]
    pub device_id: DeviceId,
    /// What happened.
    pub kind: DeviceEventKind,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The audit entries' correlation ID.
    pub correlation: String,
}

impl DeviceEvent {
    /// An event of `device_id` now in the audit entries' `correlation`.
    #[must_use]
    pub fn new(
        device_id: DeviceId,
        kind: DeviceEventKind,
        at: OffsetDateTime,
        correlation: &str,
    ) -> Self {
        Self {
            device_id,
            kind,
            at,
            correlation: correlation.to_owned(),
        }
    }
}
