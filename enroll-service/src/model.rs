//! The registry's records: what the service knows about devices, batches and the certificates it
//! issued. Records are plain data (serde) so that any [`crate::store::Registry`] backend can keep
//! them; the rules that move a device from one state to the next live in [`crate::service`].
//!
//! ```text
//!  listed in a batch ─┐                       ┌─▶ REVOKED (final)
//!                     ▼                       │
//!  AWAITING_REGISTRATION ─Register─▶ READY ─Onboard─▶ ONBOARDED ─Transfer─▶ REONBOARD_PENDING
//!  Register (no batch) ─▶ UNASSIGNED ─Import─▶ READY                 ◀─Onboard─┘
//! ```

mod event;
mod firmware;
mod owner;
mod stored_as_text;

pub use event::{DeviceEvent, DeviceEventKind, RefusalDetail};
pub use firmware::{
    FirmwareRecord, FirmwareSignerRecord, RolloutOutcomes, RolloutRecord, RolloutReportRecord,
};
pub use owner::{AuthorityRecord, AuthorityState, CaMode, OwnerRecord};

use std::collections::BTreeMap;

use rot_core::keys::{DeviceId, PublicKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::pki::{RevocationReason, Role, Serial};

/// A device's life-cycle state as operators see it (`oxroot.v1.DeviceState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceState {
    /// Listed in a batch; the EPK has not been registered yet.
    AwaitingRegistration,
    /// Registered, in no batch.
    Unassigned,
    /// Registered and in a batch; not onboarded.
    Ready,
    /// Holds a credential under its batch's policy.
    Onboarded,
    /// Moved since its credential was issued; must onboard again.
    ReonboardPending,
    /// Revoked (final).
    Revoked,
}

/// Metadata a programming station attached to a registration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationMetadata {
    /// Factory site.
    pub site: String,
    /// Line or station.
    pub station: String,
    /// Firmware version at registration.
    pub firmware_version: String,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
}

/// A device's registration: its EPK and where it was registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The enrolment public key.
    #[serde(rename = "epk_hex", with = "stored_as_text::public_key")]
    pub epk: PublicKey,
    /// When it was first registered.
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
    /// The signed `proof_context` bytes, hex.
    pub proof_context_hex: String,
    /// Unsigned metadata from the first registration.
    pub metadata: RegistrationMetadata,
}

/// Why and by whom a device was revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// CRL reason.
    pub reason: RevocationReason,
    /// Operator's comment.
    pub comment: String,
    /// Operator name.
    pub revoked_by: String,
}

/// Everything the registry holds about one DeviceId.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The DeviceId.
    #[serde(with = "stored_as_text::device_id")]
    pub device_id: DeviceId,
    /// Set once the EPK is registered.
    pub registration: Option<Registration>,
    /// Owning tenant; `None` for registered devices nobody has claimed yet.
    pub owner: Option<String>,
    /// Current batch.
    pub batch_id: Option<String>,
    /// Bumped on every transfer, so a credential issued before the move is recognisably stale.
    pub assignment: u64,
    /// Key slot the next onboarding must use (1..=7).
    pub key_slot: u8,
    /// The DPK proved for each slot, so a slot's key can never silently change.
    #[serde(with = "stored_as_text::public_keys_by_slot")]
    pub slot_keys: BTreeMap<u8, PublicKey>,
    /// Slots the service will no longer certify (revoked for key compromise).
    pub retired_slots: Vec<u8>,
    /// Serial of the credential the device should be using.
    pub current_serial: Option<Serial>,
    /// Every serial issued to the device, oldest first.
    pub serials: Vec<Serial>,
    /// Set when revoked (final).
    pub revocation: Option<RevocationRecord>,
    /// When the current credential was first issued.
    #[serde(with = "rfc3339_option")]
    pub onboarded_at: Option<OffsetDateTime>,
    /// Last write caused by the device itself.
    #[serde(with = "rfc3339_option")]
    pub last_seen: Option<OffsetDateTime>,
    /// Refusals so far.
    pub refusals: u64,
    /// Assignment of the current credential; differs from `assignment` after a transfer.
    pub credential_assignment: Option<u64>,
    /// The registry's version of this record, set on every read: 0 for a record not stored
    /// yet. Writing the record back is compare-and-set on it (see
    /// [`crate::store::Op::PutDevice`]). Not part of the record's encoding: the store keeps it.
    #[serde(skip)]
    pub version: u64,
}

impl DeviceRecord {
    /// A device nobody knows anything about yet.
    #[must_use]
    pub fn new(device_id: DeviceId) -> Self {
        Self {
            device_id,
            registration: None,
            owner: None,
            batch_id: None,
            assignment: 0,
            key_slot: 1,
            slot_keys: BTreeMap::new(),
            retired_slots: Vec::new(),
            current_serial: None,
            serials: Vec::new(),
            revocation: None,
            onboarded_at: None,
            last_seen: None,
            refusals: 0,
            credential_assignment: None,
            version: 0,
        }
    }

    /// The state derived from the record.
    #[must_use]
    pub fn state(&self) -> DeviceState {
        if self.revocation.is_some() {
            DeviceState::Revoked
        } else if self.registration.is_none() {
            DeviceState::AwaitingRegistration
        } else if self.batch_id.is_none() {
            DeviceState::Unassigned
        } else if self.current_serial.is_none() {
            DeviceState::Ready
        } else if self.credential_assignment == Some(self.assignment) {
            DeviceState::Onboarded
        } else {
            DeviceState::ReonboardPending
        }
    }
}

/// Device counts of a batch; the state counts add up to `total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCounts {
    /// Devices in the batch.
    pub total: u64,
    /// AWAITING_REGISTRATION.
    pub awaiting_registration: u64,
    /// READY.
    pub registered: u64,
    /// ONBOARDED.
    pub onboarded: u64,
    /// REONBOARD_PENDING.
    pub reonboard_pending: u64,
    /// REVOKED.
    pub revoked: u64,
    /// Refusal events.
    pub refusals: u64,
}

impl BatchCounts {
    /// Applies a delta. Counts never go below zero: a negative result means the registry lost
    /// track, which is clamped rather than wrapped so one bug cannot poison every later read.
    pub fn apply(&mut self, delta: &CountsDelta) {
        let add = |value: &mut u64, by: i64| *value = value.saturating_add_signed(by);
        add(&mut self.total, delta.total);
        add(&mut self.awaiting_registration, delta.awaiting_registration);
        add(&mut self.registered, delta.registered);
        add(&mut self.onboarded, delta.onboarded);
        add(&mut self.reonboard_pending, delta.reonboard_pending);
        add(&mut self.revoked, delta.revoked);
        add(&mut self.refusals, delta.refusals);
    }

    /// No device is waiting for registration or (re-)onboarding.
    #[must_use]
    pub fn settled(&self) -> bool {
        self.awaiting_registration == 0 && self.registered == 0 && self.reonboard_pending == 0
    }
}

/// A change of a batch's counts, computed from a device's state before and after a change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsDelta {
    /// Change of `total`.
    pub total: i64,
    /// Change of `awaiting_registration`.
    pub awaiting_registration: i64,
    /// Change of `registered`.
    pub registered: i64,
    /// Change of `onboarded`.
    pub onboarded: i64,
    /// Change of `reonboard_pending`.
    pub reonboard_pending: i64,
    /// Change of `revoked`.
    pub revoked: i64,
    /// Change of `refusals`.
    pub refusals: i64,
}

impl std::ops::AddAssign for CountsDelta {
    /// The sum of two deltas, so a chunk of devices adjusts its batch once.
    fn add_assign(&mut self, other: Self) {
        self.total += other.total;
        self.awaiting_registration += other.awaiting_registration;
        self.registered += other.registered;
        self.onboarded += other.onboarded;
        self.reonboard_pending += other.reonboard_pending;
        self.revoked += other.revoked;
        self.refusals += other.refusals;
    }
}

impl CountsDelta {
    fn slot(&mut self, state: DeviceState) -> Option<&mut i64> {
        match state {
            DeviceState::AwaitingRegistration => Some(&mut self.awaiting_registration),
            DeviceState::Ready => Some(&mut self.registered),
            DeviceState::Onboarded => Some(&mut self.onboarded),
            DeviceState::ReonboardPending => Some(&mut self.reonboard_pending),
            DeviceState::Revoked => Some(&mut self.revoked),
            // A device in a batch is never unassigned.
            DeviceState::Unassigned => None,
        }
    }

    /// The device left state `from` (of the batch) and entered `to` (of the same batch).
    #[must_use]
    pub fn transition(from: DeviceState, to: DeviceState) -> Self {
        let mut delta = Self::default();
        if from != to {
            if let Some(v) = delta.slot(from) {
                *v -= 1;
            }
            if let Some(v) = delta.slot(to) {
                *v += 1;
            }
        }
        delta
    }

    /// The device joined the batch in state `state`.
    #[must_use]
    pub fn joined(state: DeviceState) -> Self {
        let mut delta = Self {
            total: 1,
            ..Self::default()
        };
        if let Some(v) = delta.slot(state) {
            *v += 1;
        }
        delta
    }

    /// The device left the batch from state `state`.
    #[must_use]
    pub fn left(state: DeviceState) -> Self {
        let mut delta = Self {
            total: -1,
            ..Self::default()
        };
        if let Some(v) = delta.slot(state) {
            *v -= 1;
        }
        delta
    }

    /// One refusal event.
    #[must_use]
    pub fn refusal() -> Self {
        Self {
            refusals: 1,
            ..Self::default()
        }
    }
}

/// A batch of devices under one policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Service-assigned identifier.
    pub batch_id: String,
    /// Owning tenant.
    pub owner: String,
    /// Label.
    pub name: String,
    /// Policy of the same owner.
    pub policy_name: String,
    /// Free text.
    pub description: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Creating operator.
    pub created_by: String,
    /// Current counts, maintained by the registry from [`CountsDelta`]s.
    pub counts: BatchCounts,
}

/// State of an issued certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialStatus {
    /// The device's current certificate.
    Active,
    /// Replaced by a newer one; valid until `not_after`.
    Superseded,
    /// On the CRL.
    Revoked,
}

/// One issued device certificate, the proof that it was issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// Serial.
    pub serial: Serial,
    /// The device.
    #[serde(with = "stored_as_text::device_id")]
    pub device_id: DeviceId,
    /// Key slot certified.
    pub key_slot: u8,
    /// The DPK of the slot, which the device proved. The certificate certifies it, or the
    /// firmware-bound alias key of the same slot (see [`CredentialRecord::firmware_measurement`]):
    /// the certificate itself records which.
    #[serde(rename = "dpk_hex", with = "stored_as_text::public_key")]
    pub dpk: PublicKey,
    /// Owner of the policy.
    pub owner: String,
    /// Policy name.
    pub policy_name: String,
    /// Batch the device was in.
    pub batch_id: String,
    /// The device's assignment counter when issued.
    pub assignment: u64,
    /// Subject CN.
    pub subject_cn: String,
    /// Issue time.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Validity start.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// Validity end.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Start of the renew window, if the policy has one.
    #[serde(with = "rfc3339_option")]
    pub renew_after: Option<OffsetDateTime>,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Current status.
    pub status: CredentialStatus,
    /// Set when revoked.
    pub revocation: Option<CrlEntryRecord>,
}

impl CredentialRecord {
    /// The firmware measurement the certificate's TcbInfo extension names: its key is then
    /// the alias key bound to that firmware. `None` when it certifies the DPK.
    #[must_use]
    pub fn firmware_measurement(&self) -> Option<rot_core::FirmwareMeasurement> {
        crate::pki::CertifiedKey::of_certificate_pem(&self.certificate_pem)
            .and_then(|certified| certified.firmware)
    }
}

/// An operator certificate this service issued: what `RevokeOperatorCertificate` needs to
/// know whose it is, and what authentication checks on every operator call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCertificateRecord {
    /// Serial.
    pub serial: Serial,
    /// Operator name (subject CN).
    pub name: String,
    /// Owner, or `*`.
    pub owner: String,
    /// Role granted.
    pub role: Role,
    /// Issue time.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Validity end.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The issuing operator's name (`init` for the first admin).
    pub issued_by: String,
    /// Set when revoked.
    pub revocation: Option<RevocationRecord>,
}

/// A revoked serial as the CRL lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlEntryRecord {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
}

/// The latest signed CRL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlRecord {
    /// CRL number.
    pub number: u64,
    /// thisUpdate.
    #[serde(with = "time::serde::rfc3339")]
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    #[serde(with = "time::serde::rfc3339")]
    pub next_update: OffsetDateTime,
    /// DER bytes, hex.
    pub der_hex: String,
    /// PEM.
    pub pem: String,
    /// Serials listed.
    pub revoked_count: u64,
}

/// `Option<OffsetDateTime>` as an optional RFC 3339 string. time's own `rfc3339::option`
/// reads its `Some` through `deserialize_any`, which only self-describing formats (JSON) offer;
/// this reads the same JSON and also the registry's binary encoding.
mod rfc3339_option {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    #[allow(
        clippy::ref_option,
        reason = "serde's `with` hands the field over by reference"
    )]
    pub(super) fn serialize<S: Serializer>(
        value: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::option::serialize(value, serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| OffsetDateTime::parse(&text, &Rfc3339).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
pub(crate) mod tests {
    use super::*;

    const ALL: [DeviceState; 6] = [
        DeviceState::AwaitingRegistration,
        DeviceState::Unassigned,
        DeviceState::Ready,
        DeviceState::Onboarded,
        DeviceState::ReonboardPending,
        DeviceState::Revoked,
    ];

    fn state_count(counts: &BatchCounts) -> u64 {
        counts.awaiting_registration
            + counts.registered
            + counts.onboarded
            + counts.reonboard_pending
            + counts.revoked
    }

    #[test]
    fn transitions_keep_counts_adding_up() {
        for from in ALL.into_iter().filter(|s| *s != DeviceState::Unassigned) {
            for to in ALL.into_iter().filter(|s| *s != DeviceState::Unassigned) {
                let mut counts = BatchCounts::default();
                counts.apply(&CountsDelta::joined(from));
                counts.apply(&CountsDelta::transition(from, to));
                assert_eq!(counts.total, 1);
                assert_eq!(state_count(&counts), 1, "{from:?} -> {to:?}");
                counts.apply(&CountsDelta::left(to));
                assert_eq!(counts, BatchCounts::default());
            }
        }
    }

    /// The P-256 base point (SEC 2 §2.4.2): a valid public key with a published value.
    pub(crate) fn base_point() -> PublicKey {
        const G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
                         4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
        PublicKey::from_sec1(&hex::decode(G).unwrap()).unwrap()
    }

    #[test]
    fn state_follows_the_record() {
        let mut device = DeviceRecord::new(DeviceId::from_bytes([0xab; 32]));
        assert_eq!(device.state(), DeviceState::AwaitingRegistration);
        device.registration = Some(Registration {
            epk: base_point(),
            registered_at: OffsetDateTime::UNIX_EPOCH,
            proof_context_hex: String::new(),
            metadata: RegistrationMetadata::default(),
        });
        assert_eq!(device.state(), DeviceState::Unassigned);
        device.batch_id = Some("b".into());
        assert_eq!(device.state(), DeviceState::Ready);
        device.current_serial = Some(Serial::new(1).unwrap());
        device.credential_assignment = Some(0);
        assert_eq!(device.state(), DeviceState::Onboarded);
        device.assignment = 1;
        assert_eq!(device.state(), DeviceState::ReonboardPending);
        device.revocation = Some(RevocationRecord {
            revoked_at: OffsetDateTime::UNIX_EPOCH,
            reason: RevocationReason::KeyCompromise,
            comment: String::new(),
            revoked_by: "x".into(),
        });
        assert_eq!(device.state(), DeviceState::Revoked);
    }
}
