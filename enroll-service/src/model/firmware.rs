//! Firmware releases as the registry keeps them: each owner's firmware-signing key, and the
//! images it signed. Stored as JSON (see [`crate::store::codec::encode_json`]): few, rarely
//! written, and their fields will grow with rollouts.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
