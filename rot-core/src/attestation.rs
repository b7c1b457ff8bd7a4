//! The one message format for every signature a device makes.
//!
//! Device and service both build these bytes with this module, so they cannot
//! drift apart. Every message starts with a versioned domain label, then the
//! purpose and the signing key's role, then tagged, length-prefixed fields:
//!
//! ```text
//! u16 len ‖ "oxroot-attestation-v1" ‖ u8 purpose ‖ u8 role ‖ { u8 tag ‖ u16 len ‖ bytes }*
//! u16 len ‖ "oxroot-attestation-v2" ‖ u8 purpose ‖ u8 role ‖ { u8 tag ‖ u16 len ‖ bytes }*
//! ```
//!
//! (all integers big-endian). A signature made for one purpose or role can
//! therefore never be replayed as another, and no field can bleed into the
//! next. Messages are built in a fixed 512-byte buffer: no allocation.
//!
//! | purpose | signed by | fields |
//! |---|---|---|
//! | 1 registration | ESK | EPK, registration context |
//! | 2 onboarding, 3 renewal | ESK and DSK | DeviceId, challenge id, nonce, DPK, key slot |
//! | 4 status | ESK, or the DSK of the held credential | DeviceId, challenge id, nonce, (key slot), serial |
//! | 2 onboarding, 3 renewal, firmware-bound (v2 label) | ESK and alias key | the answer's fields, firmware measurement, alias public key |
//!
//! Two versions, each with its own label, so that neither can be read as the other:
//! - **v1**: registration, the challenge answers of the ESK and the DSK, and status proofs
//!   ([`registration_message`], [`challenge_message`], [`status_message`]).
//! - **v2**: a challenge answer bound to the firmware the device runs
//!   ([`firmware_binding_message`]): the v1 answer's fields, then the firmware measurement and
//!   the firmware-bound alias public key. The ESK signs it ("this chip runs this firmware, and
//!   this is its alias key") and the alias key signs it (possession). A device that measures
//!   nothing sends v1 answers only, which the service keeps accepting for policies that do
//!   not require a measurement.
//!
//! Signatures are ECDSA P-256 with SHA-256 over these bytes, encoded as 64-byte
//! `r ‖ s` (the same as aws-lc-rs's `ECDSA_P256_SHA256_FIXED`).

use core::fmt;

use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

use crate::firmware::FirmwareMeasurement;
use crate::keys::{DeviceId, KeySlot, PublicKey, SignatureBytes};

/// The versioned domain label at the start of every v1 message.
pub const DOMAIN: &[u8] = b"oxroot-attestation-v1";
/// The versioned domain label at the start of every v2 (firmware-bound) message. Same length
/// as [`DOMAIN`], so both start `00 15`.
pub const DOMAIN_V2: &[u8] = b"oxroot-attestation-v2";
/// Capacity of a message buffer.
pub const MAX_MESSAGE_BYTES: usize = 512;
/// Longest caller-supplied context (registration context, challenge id, serial).
pub const MAX_CONTEXT_BYTES: usize = 128;
/// Length of a service nonce.
pub const NONCE_BYTES: usize = 32;

/// What a signature is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Purpose {
    /// Proof of possession of the enrolment key at registration.
    Registration = 1,
    /// Answer to an onboarding challenge.
    Onboarding = 2,
    /// Answer to a renewal challenge.
    Renewal = 3,
    /// A status request answering a status challenge.
    Status = 4,
    /// A device asking which firmware a rollout offers it.
    FirmwareCheck = 5,
    /// A device reporting what came of a firmware update.
    FirmwareReport = 6,
}

/// Which of the device's keys signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SignerRole {
    /// The enrolment key (ESK): "this is the registered chip".
    EnrolmentKey = 1,
    /// The device key (DSK) being certified: "and I hold the key you will certify".
    DeviceKey = 2,
}

#[repr(u8)]
enum Tag {
    EnrolmentPublicKey = 1,
    RegistrationContext = 2,
    DeviceId = 3,
    ChallengeId = 4,
    Nonce = 5,
    DevicePublicKey = 6,
    KeySlot = 7,
    Serial = 8,
    /// v2 only: SHA-256 of the firmware image.
    FirmwareMeasurementSha256 = 9,
    /// v2 only: the firmware-bound alias public key.
    AliasPublicKey = 10,
    /// Firmware requests: the rollout the request concerns.
    RolloutId = 11,
    /// Firmware reports: 1 installed and running, 0 refused or failed.
    Outcome = 12,
}

/// A context field is longer than [`MAX_CONTEXT_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextTooLong;

impl fmt::Display for ContextTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attestation context fields are at most {MAX_CONTEXT_BYTES} bytes"
        )
    }
}

impl core::error::Error for ContextTooLong {}

/// The signature does not verify. Deliberately opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadSignature;

impl fmt::Display for BadSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("signature verification failed")
    }
}

impl core::error::Error for BadSignature {}

/// The bytes a device signs.
#[derive(Clone)]
pub struct Message {
    buffer: [u8; MAX_MESSAGE_BYTES],
    len: usize,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Message {
    fn new(purpose: Purpose, role: SignerRole) -> Self {
        Self::labelled(DOMAIN, purpose, role as u8)
    }

    fn labelled(domain: &[u8], purpose: Purpose, role: u8) -> Self {
        let mut message = Self {
            buffer: [0; MAX_MESSAGE_BYTES],
            len: 0,
        };
        message.append(&(domain.len() as u16).to_be_bytes());
        message.append(domain);
        message.append(&[purpose as u8, role]);
        message
    }

    fn append(&mut self, bytes: &[u8]) {
        // Callers bound every variable field, so the largest message is far below
        // the capacity; overflowing it would be a bug in this module.
        self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn field(mut self, tag: Tag, value: &[u8]) -> Self {
        self.append(&[tag as u8]);
        self.append(&(value.len() as u16).to_be_bytes());
        self.append(value);
        self
    }

    /// The encoded message.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

/// Builds the registration proof message, signed by the ESK.
///
/// `context` binds the proof to where it was made (for example the service's
/// name or the programming station's id); it may be empty.
///
/// # Errors
/// [`ContextTooLong`] if `context` exceeds [`MAX_CONTEXT_BYTES`].
pub fn registration_message(epk: &PublicKey, context: &[u8]) -> Result<Message, ContextTooLong> {
    if context.len() > MAX_CONTEXT_BYTES {
        return Err(ContextTooLong);
    }
    Ok(
        Message::new(Purpose::Registration, SignerRole::EnrolmentKey)
            .field(Tag::EnrolmentPublicKey, epk.as_bytes())
            .field(Tag::RegistrationContext, context),
    )
}

/// What a challenge answer covers: the same fields for the ESK and the DSK
/// signature, so both keys attest to one transcript.
#[derive(Clone, Copy, Debug)]
pub struct ChallengeContext<'a> {
    /// The device answering.
    pub device_id: &'a DeviceId,
    /// The service's identifier for this challenge.
    pub challenge_id: &'a [u8],
    /// The service's fresh nonce.
    pub nonce: &'a [u8; NONCE_BYTES],
    /// The device public key to be certified.
    pub dpk: &'a PublicKey,
    /// The slot the DPK was derived for.
    pub key_slot: KeySlot,
}

/// Which challenge a device answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeKind {
    /// First credential issue.
    Onboarding,
    /// A new certificate, possibly for the next key slot.
    Renewal,
}

/// Builds the message answering an onboarding or renewal challenge.
///
/// # Errors
/// [`ContextTooLong`] if the challenge id exceeds [`MAX_CONTEXT_BYTES`].
pub fn challenge_message(
    kind: ChallengeKind,
    role: SignerRole,
    context: &ChallengeContext<'_>,
) -> Result<Message, ContextTooLong> {
    if context.challenge_id.len() > MAX_CONTEXT_BYTES {
        return Err(ContextTooLong);
    }
    Ok(challenge_fields(
        Message::new(kind.purpose(), role),
        context,
    ))
}

impl ChallengeKind {
    fn purpose(self) -> Purpose {
        match self {
            Self::Onboarding => Purpose::Onboarding,
            Self::Renewal => Purpose::Renewal,
        }
    }
}

/// The fields every challenge answer covers, in order.
fn challenge_fields(message: Message, context: &ChallengeContext<'_>) -> Message {
    message
        .field(Tag::DeviceId, context.device_id.as_bytes())
        .field(Tag::ChallengeId, context.challenge_id)
        .field(Tag::Nonce, context.nonce)
        .field(Tag::DevicePublicKey, context.dpk.as_bytes())
        .field(Tag::KeySlot, &[context.key_slot.get()])
}

/// Which key signs a v2 (firmware-bound) message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FirmwareSigner {
    /// The enrolment key (ESK): "this registered chip runs this firmware, and this is the
    /// alias key it derived for it". Role byte 1, as in v1.
    EnrolmentKey = 1,
    /// The firmware-bound alias key being certified: "and I hold it". Role byte 3, a role no
    /// v1 message has.
    AliasKey = 3,
}

/// What a firmware-bound answer adds to a challenge answer.
#[derive(Clone, Copy, Debug)]
pub struct FirmwareBinding<'a> {
    /// SHA-256 of the firmware image the device runs.
    pub measurement: &'a FirmwareMeasurement,
    /// The alias public key derived from the slot's seed and `measurement`.
    pub alias_public_key: &'a PublicKey,
}

/// Builds the v2 message binding a challenge answer to the firmware the device runs:
///
/// ```text
/// u16 21 ‖ "oxroot-attestation-v2" ‖ purpose ‖ role (1 ESK, 3 alias key)
///   ‖ DeviceId ‖ challenge id ‖ nonce ‖ DPK ‖ key slot        (the v1 answer's fields, tags 3–7)
///   ‖ 09 0020 measurement ‖ 0a 0041 alias public key
/// ```
///
/// # Errors
/// [`ContextTooLong`] if the challenge id exceeds [`MAX_CONTEXT_BYTES`].
pub fn firmware_binding_message(
    kind: ChallengeKind,
    signer: FirmwareSigner,
    context: &ChallengeContext<'_>,
    firmware: &FirmwareBinding<'_>,
) -> Result<Message, ContextTooLong> {
    if context.challenge_id.len() > MAX_CONTEXT_BYTES {
        return Err(ContextTooLong);
    }
    let message = Message::labelled(DOMAIN_V2, kind.purpose(), signer as u8);
    Ok(challenge_fields(message, context)
        .field(
            Tag::FirmwareMeasurementSha256,
            firmware.measurement.as_bytes(),
        )
        .field(Tag::AliasPublicKey, firmware.alias_public_key.as_bytes()))
}

/// What a signed status request covers: which device asks, the service's status challenge it
/// answers, and the credential it says it holds.
#[derive(Clone, Copy, Debug)]
pub struct StatusContext<'a> {
    /// The device asking.
    pub device_id: &'a DeviceId,
    /// The service's identifier for the status challenge.
    pub challenge_id: &'a [u8],
    /// The status challenge's nonce.
    pub nonce: &'a [u8; NONCE_BYTES],
    /// The serial of the credential the device holds, as it sends it (lowercase hex); empty
    /// when it holds none.
    pub serial: &'a [u8],
}

/// Which key signs a status request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusSigner {
    /// The enrolment key: a device that holds no credential yet.
    EnrolmentKey,
    /// The device key of the slot whose credential the device holds (the one named by
    /// [`StatusContext::serial`]).
    DeviceKey(KeySlot),
}

/// Builds the message of a signed status request. The device key's message also carries its
/// slot, so a signature names the key that made it.
///
/// # Errors
/// [`ContextTooLong`] if the challenge id or the serial exceeds [`MAX_CONTEXT_BYTES`].
pub fn status_message(
    signer: StatusSigner,
    context: &StatusContext<'_>,
) -> Result<Message, ContextTooLong> {
    signed_request(Purpose::Status, signer, context)
}

/// The fields every signed request after onboarding covers, under `purpose`.
fn signed_request(
    purpose: Purpose,
    signer: StatusSigner,
    context: &StatusContext<'_>,
) -> Result<Message, ContextTooLong> {
    if context.challenge_id.len() > MAX_CONTEXT_BYTES || context.serial.len() > MAX_CONTEXT_BYTES {
        return Err(ContextTooLong);
    }
    let role = match signer {
        StatusSigner::EnrolmentKey => SignerRole::EnrolmentKey,
        StatusSigner::DeviceKey(_) => SignerRole::DeviceKey,
    };
    let message = Message::new(purpose, role)
        .field(Tag::DeviceId, context.device_id.as_bytes())
        .field(Tag::ChallengeId, context.challenge_id)
        .field(Tag::Nonce, context.nonce);
    let message = match signer {
        StatusSigner::EnrolmentKey => message,
        StatusSigner::DeviceKey(slot) => message.field(Tag::KeySlot, &[slot.get()]),
    };
    Ok(message.field(Tag::Serial, context.serial))
}

/// What a signed firmware request asks, beyond a status request's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareRequest<'a> {
    /// Which firmware a rollout offers this device.
    Check,
    /// What came of installing a rollout's firmware.
    Report {
        /// The rollout.
        rollout_id: &'a [u8],
        /// Installed and running (true), or refused or failed (false).
        installed: bool,
        /// The measurement of the firmware the device runs now.
        running: &'a FirmwareMeasurement,
    },
}

/// Builds the message of a signed firmware request: the status request's fields (device,
/// challenge, nonce, key slot, serial) under the purpose of the request, then for a report the
/// rollout, the outcome and the firmware that runs. A status proof cannot stand for a firmware
/// request, nor a check for a report: each purpose is its own message.
///
/// # Errors
/// [`ContextTooLong`] if the challenge id, the serial or the rollout id exceeds
/// [`MAX_CONTEXT_BYTES`].
pub fn firmware_request_message(
    signer: StatusSigner,
    context: &StatusContext<'_>,
    request: &FirmwareRequest<'_>,
) -> Result<Message, ContextTooLong> {
    let purpose = match request {
        FirmwareRequest::Check => Purpose::FirmwareCheck,
        FirmwareRequest::Report { rollout_id, .. } => {
            if rollout_id.len() > MAX_CONTEXT_BYTES {
                return Err(ContextTooLong);
            }
            Purpose::FirmwareReport
        }
    };
    let message = signed_request(purpose, signer, context)?;
    Ok(match request {
        FirmwareRequest::Check => message,
        FirmwareRequest::Report {
            rollout_id,
            installed,
            running,
        } => message
            .field(Tag::RolloutId, rollout_id)
            .field(Tag::Outcome, &[u8::from(*installed)])
            .field(Tag::FirmwareMeasurementSha256, running.as_bytes()),
    })
}

/// Verifies a device signature over `message` with `public_key`.
///
/// The service may verify the same bytes with another implementation
/// (aws-lc-rs); both accept any valid ECDSA signature.
///
/// # Errors
/// [`BadSignature`], opaque, for any failure.
pub fn verify(
    public_key: &PublicKey,
    message: &Message,
    signature: &SignatureBytes,
) -> Result<(), BadSignature> {
    let signature = Signature::from_slice(&signature.0).map_err(|_| BadSignature)?;
    public_key
        .verifying_key()
        .verify(message.as_bytes(), &signature)
        .map_err(|_| BadSignature)
}
