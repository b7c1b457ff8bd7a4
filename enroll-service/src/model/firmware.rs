//! Firmware releases as the registry keeps them: each owner's firmware-signing key, the
//! images it signed, and their staged rollouts with the devices' reports. Signers and images
//! are stored as JSON (see [`crate::store::codec::encode_json`]): few and rarely written.
//! Rollouts (versioned, like devices) and reports are postcard, as the other records.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use rot_core::keys::DeviceId;

use crate::firmware::rollout::{self, Control, RolloutStanding, RolloutState, Stages};
use crate::pki::KeyReference;

/// An owner's firmware-signing key: a P-256 key in the key store, certified by the owner's
/// issuing CA for code signing only (never TLS).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareSignerRecord {
    /// The owner.
    pub owner: String,
    /// `<owner>/firmware-<n>`: the key's label in the key store.
    pub id: String,
    /// Its certificate, PEM (EKU codeSigning).
    pub certificate_pem: String,
    /// The certificates above it up to and including the owner's root, PEM, issuer first.
    pub chain_pem: String,
    /// The key.
    pub key: KeyReference,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One signed firmware image of an owner, for one policy's devices. The image itself (the
/// MCUboot file) is stored beside the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareRecord {
    /// The owner whose key signed it.
    pub owner: String,
    /// The image's name: one product's firmware line (`[a-z0-9-_.]`, 1..=63).
    pub name: String,
    /// Its version, `major.minor.revision+build` (canonical: the build is always written).
    pub version: String,
    /// Its security counter (MCUboot's protected `SEC_CNT` TLV): devices refuse to go below
    /// the counter they run.
    pub security_counter: u32,
    /// The policy whose devices may install it.
    pub policy_name: String,
    /// SHA-256 of the signed image file, lowercase hex: what a device running it measures, and
    /// what a policy's `firmware_measurements` lists.
    pub measurement: String,
    /// Bytes of the signed image file.
    pub image_size: u64,
    /// Bytes of the payload that was uploaded.
    pub payload_size: u64,
    /// The manifest (`rot_core::firmware::manifest`), hex.
    pub manifest_hex: String,
    /// The signing key's signature over the manifest, DER, hex.
    pub manifest_signature_hex: String,
    /// The id of the signing key ([`FirmwareSignerRecord::id`]).
    pub signer: String,
    /// When it was signed.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Who had it signed (`<owner>/<operator>`).
    pub created_by: String,
}

/// A staged rollout of one signed image to a policy's devices (or one batch of them): who is
/// offered it follows `firmware::rollout`'s rules. Operator steps rewrite the record
/// (compare-and-set on `version`); device reports never do: they are records of their own,
/// counted by the store ([`RolloutOutcomes`]), so a fleet reporting at once does not contend
/// with itself or with an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The owner.
    pub owner: String,
    /// `ro-` and 16 lowercase hex digits.
    pub id: String,
    /// The policy whose devices are offered the image (the image's policy).
    pub policy_name: String,
    /// Only this batch's devices, if set.
    pub batch_id: Option<String>,
    /// The image ([`FirmwareRecord::name`]).
    pub firmware_name: String,
    /// Its version ([`FirmwareRecord::version`]).
    pub firmware_version: String,
    /// The image's measurement, hex: what a device running it proves.
    pub measurement: String,
    /// Stage percentages, strictly increasing, the last 100.
    pub stages: Vec<u8>,
    /// Index of the current stage.
    pub current_stage: u32,
    /// What an operator set it to.
    pub state: RolloutState,
    /// Failure reports at which the rollout halts.
    pub failure_threshold: u64,
    /// Whether the halt at the current threshold was recorded (audited once).
    pub halt_recorded: bool,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Who created it (`<owner>/<operator>`).
    pub created_by: String,
    /// When an operator last changed it.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The stored version, set by the store on every read; 0 for a rollout not yet stored.
    #[serde(skip)]
    pub version: u64,
    /// The reports counted so far, set by the store on every read.
    #[serde(skip)]
    pub outcomes: RolloutOutcomes,
}

/// What devices reported of a rollout, counted by the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RolloutOutcomes {
    /// Devices that installed the image and run it.
    pub installed: u64,
    /// Devices that refused it or failed to install it.
    pub failed: u64,
}

/// One device's report of a rollout: each device reports once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutReportRecord {
    /// The device.
    pub device_id: String,
    /// Installed and running (true), or refused or failed (false).
    pub installed: bool,
    /// The device's reason when it failed, as it sent it (untrusted text: escape to show).
    pub reason: String,
    /// SHA-256 of the firmware the device runs now, hex.
    pub running_measurement: String,
    /// When the report arrived.
    #[serde(with = "time::serde::rfc3339")]
    pub reported_at: OffsetDateTime,
}

impl RolloutRecord {
    /// The stages, at the current one.
    #[must_use]
    pub fn stages(&self) -> Stages {
        Stages {
            percents: self.stages.clone(),
            current: self.current_stage as usize,
        }
    }

    /// What the rollout does now, its failures counted in.
    #[must_use]
    pub fn standing(&self) -> RolloutStanding {
        rollout::standing(self.state, self.outcomes.failed, self.failure_threshold)
    }

    /// What an operator's update acts on.
    #[must_use]
    pub fn control(&self) -> Control {
        Control {
            state: self.state,
            stages: self.stages(),
            failure_threshold: self.failure_threshold,
        }
    }

    /// Whether `device_id` is offered the image now (ignoring the device's policy and batch,
    /// which the caller matched).
    #[must_use]
    pub fn offers(&self, device_id: &DeviceId) -> bool {
        rollout::offers(self.standing(), &self.stages(), &self.id, device_id)
    }
}
