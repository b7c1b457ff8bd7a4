//! The device side of the enrolment protocol: Register, Onboard, Renew and Status, as one
//! client exchange shared by the device agent, the service's simulated fleet and the load
//! generator.
//!
//! ```text
//!  Register(EPK, sig_ESK(registration msg))                      ─▶  RegisterResponse
//!  Onboard / Renew:  Hello ─▶ ◀─ Challenge(id, nonce, slot) ─▶ Proof(sig_ESK, DPK, sig_DSK
//!                                                                   [, firmware: M, APK,
//!                                                                      sig_ESK v2, sig_alias v2])
//!                    ◀─ CredentialBundle | Refusal
//!  Status:  StatusRequest ─▶ ◀─ PROOF_REQUIRED + StatusChallenge(id, nonce)
//!           StatusRequest + StatusProof(sig_DSK of the held credential, or sig_ESK) ─▶ ◀─ status
//! ```
//!
//! Everything is generic over a [`Chip`]: something with a public identity that can power up
//! its silicon and reconstruct the seeds. Each signature reads the silicon once, derives the
//! key it needs and drops it (zeroized) as soon as the signature is made. The signed bytes come
//! from `rot_core::attestation`, the same code the service verifies with.
//!
//! A chip that measures the firmware it runs ([`Chip::firmware`]) also proves its alias key
//! for that measurement (TCG DICE layering, `rot_core::keys::alias`), and the certificate it
//! gets certifies the alias key.

use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use rot_core::SignatureBytes;
use rot_core::attestation::{
    self, ChallengeContext, ChallengeKind, FirmwareBinding, FirmwareRequest, FirmwareSigner,
    Message, SignerRole, StatusContext, StatusSigner,
};
use rot_core::firmware::FirmwareMeasurement;
use rot_core::keys::{AliasKey, DeviceId, DeviceKey, EnrolmentKey, KeySlot, PublicKey, Seeds};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// A chip as the protocol sees it.
pub trait Chip {
    /// Why the seeds could not be had.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The DeviceId, SHA-256 of the EPK.
    fn device_id(&self) -> &DeviceId;

    /// The enrolment public key.
    fn epk(&self) -> &PublicKey;

    /// One power-up: reads the silicon and reconstructs the seeds. Callers drop them as soon
    /// as they have signed.
    ///
    /// # Errors
    /// The chip's own error (silicon unreadable, reconstruction failed, locked out).
    fn seeds(&self) -> Result<Seeds, Self::Error>;

    /// The keys that sign an answer, derived from freshly reconstructed seeds: the ESK and
    /// the DSK of `slot`. By default rot-core's own (RustCrypto p256); a chip with another
    /// P-256 implementation of the same keys (a secure element, or aws-lc-rs in the service's
    /// simulated fleet) imports them with [`Seeds::enrolment_key_into`] and
    /// [`Seeds::device_key_into`].
    ///
    /// # Errors
    /// The chip's own error.
    fn answer_keys(&self, seeds: &Seeds, slot: KeySlot) -> Result<AnswerKeys, Self::Error> {
        Ok(AnswerKeys::derive(seeds, slot))
    }

    /// The firmware this chip runs, as measured for the answer being made: `None` (the
    /// default) proves no firmware, so the answer is v1 only and the certificate certifies the
    /// DPK.
    ///
    /// # Errors
    /// The chip's own error (the image could not be read).
    fn firmware(&self) -> Result<Option<FirmwareMeasurement>, Self::Error> {
        Ok(None)
    }

    /// The alias key of `slot` for `measurement`, derived from freshly reconstructed seeds. By
    /// default rot-core's; a chip with another P-256 implementation imports it with
    /// [`Seeds::alias_key_into`].
    ///
    /// # Errors
    /// The chip's own error.
    fn alias_key(
        &self,
        seeds: &Seeds,
        slot: KeySlot,
        measurement: &FirmwareMeasurement,
    ) -> Result<AliasAnswerKey, Self::Error> {
        Ok(AliasAnswerKey::derive(seeds, slot, measurement))
    }
}

/// One private key signing attestation messages.
pub trait AttestationSigner {
    /// ECDSA P-256 / SHA-256 over `message`, `r ‖ s`.
    fn sign(&self, message: &Message) -> SignatureBytes;
}

impl AttestationSigner for EnrolmentKey {
    fn sign(&self, message: &Message) -> SignatureBytes {
        EnrolmentKey::sign(self, message)
    }
}

impl AttestationSigner for DeviceKey {
    fn sign(&self, message: &Message) -> SignatureBytes {
        DeviceKey::sign(self, message)
    }
}

impl AttestationSigner for AliasKey {
    fn sign(&self, message: &Message) -> SignatureBytes {
        AliasKey::sign(self, message)
    }
}

/// The alias key of one firmware-bound answer, dropped as soon as it is signed.
pub struct AliasAnswerKey {
    /// The alias public key (the key the certificate will certify).
    pub public_key: PublicKey,
    /// The alias private key.
    pub key: Box<dyn AttestationSigner>,
}

impl AliasAnswerKey {
    /// rot-core's alias key (RustCrypto p256) for `slot` and `measurement`.
    #[must_use]
    pub fn derive(seeds: &Seeds, slot: KeySlot, measurement: &FirmwareMeasurement) -> Self {
        let key = seeds.alias_key(slot, measurement);
        Self {
            public_key: key.public_key(),
            key: Box::new(key),
        }
    }
}

impl std::fmt::Debug for AliasAnswerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliasAnswerKey")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// The keys of one answer, dropped as soon as it is signed.
pub struct AnswerKeys {
    /// The DPK of the challenge's slot.
    pub dpk: PublicKey,
    /// The enrolment key.
    pub esk: Box<dyn AttestationSigner>,
    /// The device key of the challenge's slot.
    pub dsk: Box<dyn AttestationSigner>,
}

impl AnswerKeys {
    /// rot-core's keys (RustCrypto p256) for `slot`.
    #[must_use]
    pub fn derive(seeds: &Seeds, slot: KeySlot) -> Self {
        let dsk = seeds.device_key(slot);
        Self {
            dpk: dsk.public_key(),
            esk: Box::new(seeds.enrolment_key()),
            dsk: Box::new(dsk),
        }
    }
}

impl std::fmt::Debug for AnswerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerKeys")
            .field("dpk", &self.dpk)
            .finish_non_exhaustive()
    }
}

/// Why an exchange did not end in an [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError<E> {
    /// The chip could not produce its seeds.
    #[error(transparent)]
    Chip(E),
    /// The service sent something out of protocol, or a field is out of range.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The RPC failed.
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
}

/// The end of an Onboard or Renew exchange.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The credential.
    Credentials(Box<v1::CredentialBundle>),
    /// A refusal.
    Refused(v1::Refusal),
}

impl Outcome {
    /// The bundle, if credentials were issued.
    #[must_use]
    pub fn credentials(&self) -> Option<&v1::CredentialBundle> {
        match self {
            Self::Credentials(bundle) => Some(bundle),
            Self::Refused(_) => None,
        }
    }

    /// The refusal reason, if refused.
    #[must_use]
    pub fn refusal_reason(&self) -> Option<v1::RefusalReason> {
        match self {
            Self::Refused(r) => Some(r.reason()),
            Self::Credentials(_) => None,
        }
    }
}

/// A signed registration request: the ESK signs the registration message over the EPK and
/// `proof_context`. `context` is unsigned metadata.
///
/// # Errors
/// [`ExchangeError::Protocol`] if `proof_context` is over 128 bytes; the chip's error.
pub fn registration_request<C: Chip + ?Sized>(
    chip: &C,
    proof_context: &[u8],
    context: Option<v1::RegistrationContext>,
) -> Result<v1::RegisterRequest, ExchangeError<C::Error>> {
    let message = attestation::registration_message(chip.epk(), proof_context).map_err(|_| {
        ExchangeError::Protocol(format!(
            "proof context is {} bytes, at most {} allowed",
            proof_context.len(),
            attestation::MAX_CONTEXT_BYTES
        ))
    })?;
    let signature = chip
        .seeds()
        .map_err(ExchangeError::Chip)?
        .enrolment_key()
        .sign(&message);
    Ok(v1::RegisterRequest {
        epk: chip.epk().as_bytes().to_vec(),
        proof_signature: signature.0.to_vec(),
        claimed_device_id: chip.device_id().to_string(),
        context,
        proof_context: proof_context.to_vec(),
    })
}

/// Answers a challenge with the ESK and the DSK of the challenge's key slot and, when the chip
/// measures its firmware, with the firmware binding (the ESK and the alias key over the v2
/// message).
///
/// # Errors
/// [`ExchangeError::Protocol`] for a malformed challenge; the chip's error.
pub fn answer<C: Chip + ?Sized>(
    chip: &C,
    kind: ChallengeKind,
    challenge: &v1::Challenge,
) -> Result<v1::Proof, ExchangeError<C::Error>> {
    let slot = u8::try_from(challenge.key_slot)
        .ok()
        .and_then(KeySlot::new)
        .ok_or_else(|| {
            ExchangeError::Protocol(format!(
                "challenge key slot {} outside 1..=7",
                challenge.key_slot
            ))
        })?;
    let nonce: [u8; attestation::NONCE_BYTES] = challenge
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| ExchangeError::Protocol("challenge nonce is not 32 bytes".into()))?;
    let measurement = chip.firmware().map_err(ExchangeError::Chip)?;
    let (keys, alias) = {
        let seeds = chip.seeds().map_err(ExchangeError::Chip)?;
        let keys = chip
            .answer_keys(&seeds, slot)
            .map_err(ExchangeError::Chip)?;
        let alias = measurement
            .as_ref()
            .map(|measurement| chip.alias_key(&seeds, slot, measurement))
            .transpose()
            .map_err(ExchangeError::Chip)?;
        (keys, alias)
    };
    let dpk = keys.dpk;
    let context = ChallengeContext {
        device_id: chip.device_id(),
        challenge_id: &challenge.challenge_id,
        nonce: &nonce,
        dpk: &dpk,
        key_slot: slot,
    };
    let too_long = |_| ExchangeError::Protocol("challenge id over 128 bytes".into());
    let esk_message = attestation::challenge_message(kind, SignerRole::EnrolmentKey, &context)
        .map_err(too_long)?;
    let dsk_message =
        attestation::challenge_message(kind, SignerRole::DeviceKey, &context).map_err(too_long)?;
    let firmware = match (&measurement, &alias) {
        (Some(measurement), Some(alias)) => {
            let binding = FirmwareBinding {
                measurement,
                alias_public_key: &alias.public_key,
            };
            let message = |signer| {
                attestation::firmware_binding_message(kind, signer, &context, &binding)
                    .map_err(too_long)
            };
            Some(v1::FirmwareProof {
                measurement: measurement.as_bytes().to_vec(),
                alias_public_key: alias.public_key.as_bytes().to_vec(),
                esk_signature: keys
                    .esk
                    .sign(&message(FirmwareSigner::EnrolmentKey)?)
                    .0
                    .to_vec(),
                alias_signature: alias
                    .key
                    .sign(&message(FirmwareSigner::AliasKey)?)
                    .0
                    .to_vec(),
            })
        }
        _ => None,
    };
    Ok(v1::Proof {
        challenge_id: challenge.challenge_id.clone(),
        esk_signature: keys.esk.sign(&esk_message).0.to_vec(),
        dpk: dpk.as_bytes().to_vec(),
        dpk_signature: keys.dsk.sign(&dsk_message).0.to_vec(),
        key_slot: u32::from(slot.get()),
        firmware,
    })
}

/// Registers the chip.
///
/// # Errors
/// [`ExchangeError::Rpc`] with the service's status (INVALID_ARGUMENT, UNAUTHENTICATED...);
/// as [`registration_request`].
pub async fn register<C: Chip + ?Sized>(
    client: &mut DeviceEnrollmentClient<Channel>,
    chip: &C,
    proof_context: &[u8],
    context: Option<v1::RegistrationContext>,
) -> Result<v1::RegisterResponse, ExchangeError<C::Error>> {
    let request = registration_request(chip, proof_context, context)?;
    Ok(client.register(request).await?.into_inner())
}

/// Runs an Onboard exchange.
///
/// # Errors
/// [`ExchangeError`] for RPC failures, protocol violations and the chip's failures. A refusal
/// is an [`Outcome`], not an error.
pub async fn onboard<C: Chip + ?Sized>(
    client: &mut DeviceEnrollmentClient<Channel>,
    chip: &C,
) -> Result<Outcome, ExchangeError<C::Error>> {
    use v1::onboard_request::Msg;
    let hello = v1::OnboardRequest {
        msg: Some(Msg::Hello(v1::Hello {
            device_id: chip.device_id().to_string(),
            epk: chip.epk().as_bytes().to_vec(),
        })),
    };
    let (tx, rx) = mpsc::channel(2);
    send(&tx, hello).await?;
    let responses = client.onboard(ReceiverStream::new(rx)).await?.into_inner();
    exchange::<Onboarding, C>(chip, tx, responses).await
}

/// Runs a Renew exchange for `target_slot` (0 keeps the current slot). `held_serial` is the
/// serial of the credential the device holds and uses, or empty: when the renewal's proof is
/// made with that credential's slot, the service revokes the credentials it superseded.
///
/// # Errors
/// As [`onboard`].
pub async fn renew<C: Chip + ?Sized>(
    client: &mut DeviceEnrollmentClient<Channel>,
    chip: &C,
    target_slot: u32,
    held_serial: &str,
) -> Result<Outcome, ExchangeError<C::Error>> {
    use v1::renew_request::Msg;
    let hello = v1::RenewRequest {
        msg: Some(Msg::Hello(v1::RenewHello {
            device_id: chip.device_id().to_string(),
            epk: chip.epk().as_bytes().to_vec(),
            target_key_slot: target_slot,
            serial: held_serial.to_owned(),
        })),
    };
    let (tx, rx) = mpsc::channel(2);
    send(&tx, hello).await?;
    let responses = client.renew(ReceiverStream::new(rx)).await?.into_inner();
    exchange::<Renewal, C>(chip, tx, responses).await
}

/// The credential a device holds: what its signed status request names, and whose key signs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldCredential {
    /// The credential's serial, as the service issued it (lowercase hex).
    pub serial: String,
    /// The key slot it certifies.
    pub key_slot: KeySlot,
}

/// What the service said to a status request, and which key signed the request that got it.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusAnswer {
    /// The service's answer.
    pub response: v1::StatusResponse,
    /// The key that signed; `None` when the service answered without asking for a proof (a
    /// service from before signed Status).
    pub signed_by: Option<StatusSigner>,
}

/// Signs a status request answering `challenge` with `signer`'s key, naming `serial`.
///
/// # Errors
/// [`ExchangeError::Protocol`] for a malformed challenge; the chip's error.
pub fn status_proof<C: Chip + ?Sized>(
    chip: &C,
    challenge: &v1::StatusChallenge,
    signer: StatusSigner,
    serial: &str,
) -> Result<v1::StatusProof, ExchangeError<C::Error>> {
    signed_request_proof(chip, challenge, signer, serial, attestation::status_message)
}

/// Signs the message `message_of` builds from a status challenge (a status request, a firmware
/// check or report) with `signer`'s key, naming `serial`.
fn signed_request_proof<C: Chip + ?Sized>(
    chip: &C,
    challenge: &v1::StatusChallenge,
    signer: StatusSigner,
    serial: &str,
    message_of: impl FnOnce(
        StatusSigner,
        &StatusContext<'_>,
    ) -> Result<attestation::Message, attestation::ContextTooLong>,
) -> Result<v1::StatusProof, ExchangeError<C::Error>> {
    let nonce: [u8; attestation::NONCE_BYTES] =
        challenge.nonce.as_slice().try_into().map_err(|_| {
            ExchangeError::Protocol("status challenge nonce is not 32 bytes".into())
        })?;
    let context = StatusContext {
        device_id: chip.device_id(),
        challenge_id: &challenge.challenge_id,
        nonce: &nonce,
        serial: serial.as_bytes(),
    };
    let message = message_of(signer, &context).map_err(|_| {
        ExchangeError::Protocol("status challenge id, serial or rollout id over 128 bytes".into())
    })?;
    let (slot, key_slot) = match signer {
        // The enrolment key signs; the slot only picks which device key is derived beside it.
        StatusSigner::EnrolmentKey => (KeySlot::FIRST, 0),
        StatusSigner::DeviceKey(slot) => (slot, u32::from(slot.get())),
    };
    let keys = {
        let seeds = chip.seeds().map_err(ExchangeError::Chip)?;
        chip.answer_keys(&seeds, slot)
            .map_err(ExchangeError::Chip)?
    };
    let signature = match signer {
        StatusSigner::EnrolmentKey => keys.esk.sign(&message),
        StatusSigner::DeviceKey(_) => keys.dsk.sign(&message),
    };
    Ok(v1::StatusProof {
        challenge_id: challenge.challenge_id.clone(),
        key_slot,
        signature: signature.0.to_vec(),
    })
}

/// Who signs a device's requests after onboarding: the held credential's device key, naming
/// its serial, or the enrolment key when it holds none.
fn request_signer(held: Option<&HeldCredential>) -> (StatusSigner, &str) {
    match held {
        Some(held) => (StatusSigner::DeviceKey(held.key_slot), held.serial.as_str()),
        None => (StatusSigner::EnrolmentKey, ""),
    }
}

/// Whether a refusal of a device key's proof is worth one more try with the enrolment key.
fn retry_with_enrolment_key<E>(
    outcome: &Result<impl Sized, ExchangeError<E>>,
    signer: StatusSigner,
) -> bool {
    matches!(outcome, Err(ExchangeError::Rpc(status))
        if status.code() == tonic::Code::Unauthenticated && signer != StatusSigner::EnrolmentKey)
}

/// A fresh status challenge (an unsigned Status call).
async fn fresh_challenge<C: Chip + ?Sized>(
    client: &mut DeviceEnrollmentClient<Channel>,
    chip: &C,
) -> Result<v1::StatusChallenge, ExchangeError<C::Error>> {
    let request = v1::StatusRequest {
        device_id: chip.device_id().to_string(),
        ..v1::StatusRequest::default()
    };
    client
        .status(request)
        .await?
        .into_inner()
        .challenge
        .ok_or_else(|| ExchangeError::Protocol("the service sent no status challenge".into()))
}

/// Asks which firmware a rollout offers the device (CheckFirmware), signed as a status request
/// is (see [`status`]) but over the firmware check message. `None`: nothing to install now.
///
/// # Errors
/// [`ExchangeError::Rpc`] with the service's status; as [`status_proof`].
pub async fn check_firmware<C: Chip + ?Sized>(
    client: &mut DeviceEnrollmentClient<Channel>,
    chip: &C,
    held: Option<&HeldCredential>,
) -> Result<Option<v1::FirmwareOffer>, ExchangeError<C::Error>> {
    let (signer, serial) = request_signer(held);
    let outcome = check_firmware_as(client, chip, signer, serial).await;
    if retry_with_enrolment_key(&outcome, signer) {
        return check_firmware_as(client, chip, StatusSigner::EnrolmentKey, serial).await;
    }
    outcome
}

async fn check_firmware_as<C: Chip + ?Sized>(
    client: &mut DeviceEnrollmentClient<Channel>,
    chip: &C,
    signer: StatusSigner,
    serial: &str,
) -> Result<Option<v1::FirmwareOffer>, ExchangeError<C::Error>> {
    let challenge = fresh_challenge(client, chip).await?;
    let proof = signed_request_proof(chip, &challenge, signer, serial, |s, c| {
        attestation::firmware_request_message(s, c, &FirmwareRequest::Check)
    })?;
    let request = v1::CheckFirmwareRequest {
        device_id: chip.device_id().to_string(),
        serial: serial.to_owned(),
        proof: Some(proof),
    };
    Ok(client.check_firmware(request).await?.into_inner().offer)
}

/// What a device reports of a rollout's offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareReport {
    /// The rollout ([`v1::FirmwareOffer::rollout_id`]).
    pub rollout_id: String,
    /// Installed and running (true), or refused or failed (false).
    pub installed: bool,
    /// The firmware that runs now.
    pub running: FirmwareMeasurement,
    /// Why it failed (empty when installed).
    pub reason: String,
}

/// Reports what came of a rollout's offer (ReportFirmware), signed over the firmware report
/// message (which covers the rollout, the outcome and the running measurement).
///
/// # Errors
/// [`ExchangeError::Rpc`] with the service's status; as [`status_proof`].
pub async fn report_firmware<C: Chip + ?Sized>(
    client: &mut DeviceEnrollmentClient<Channel>,
    chip: &C,
    held: Option<&HeldCredential>,
    report: &FirmwareReport,
) -> Result<(), ExchangeError<C::Error>> {
    let (signer, serial) = request_signer(held);
    let outcome = report_firmware_as(client, chip, signer, serial, report).await;
    if retry_with_enrolment_key(&outcome, signer) {
        return report_firmware_as(client, chip, StatusSigner::EnrolmentKey, serial, report).await;
    }
    outcome
}

async fn report_firmware_as<C: Chip + ?Sized>(
    client: &mut DeviceEnrollmentClient<Channel>,
    chip: &C,
    signer: StatusSigner,
    serial: &str,
    report: &FirmwareReport,
) -> Result<(), ExchangeError<C::Error>> {
    let challenge = fresh_challenge(client, chip).await?;
    let request = FirmwareRequest::Report {
        rollout_id: report.rollout_id.as_bytes(),
        installed: report.installed,
        running: &report.running,
    };
    let proof = signed_request_proof(chip, &challenge, signer, serial, |s, c| {
        attestation::firmware_request_message(s, c, &request)
    })?;
    let request = v1::ReportFirmwareRequest {
        device_id: chip.device_id().to_string(),
        serial: serial.to_owned(),
        proof: Some(proof),
        rollout_id: report.rollout_id.clone(),
        installed: report.installed,
        running_measurement: report.running.as_bytes().to_vec(),
        reason: report.reason.clone(),
    };
    client.report_firmware(request).await?;
    Ok(())
}

/// Asks the service what the device should do next: a call for a challenge, then the request
/// signed over it. A device that holds a credential signs with that credential's device key
/// and names its serial (which also tells the service the device has moved to it); one that
/// holds none signs with its enrolment key. If the service does not accept the device key's
/// proof (UNAUTHENTICATED: it does not know that credential as this device's), the enrolment
/// key signs a new challenge once.
///
/// # Errors
/// [`ExchangeError::Rpc`] with the service's status; as [`status_proof`].
pub async fn status<C: Chip + ?Sized>(
    client: &mut DeviceEnrollmentClient<Channel>,
    chip: &C,
    held: Option<&HeldCredential>,
) -> Result<StatusAnswer, ExchangeError<C::Error>> {
    let (signer, serial) = request_signer(held);
    let outcome = signed_status(client, chip, signer, serial).await;
    if retry_with_enrolment_key(&outcome, signer) {
        return signed_status(client, chip, StatusSigner::EnrolmentKey, serial).await;
    }
    outcome
}

async fn signed_status<C: Chip + ?Sized>(
    client: &mut DeviceEnrollmentClient<Channel>,
    chip: &C,
    signer: StatusSigner,
    serial: &str,
) -> Result<StatusAnswer, ExchangeError<C::Error>> {
    let mut request = v1::StatusRequest {
        device_id: chip.device_id().to_string(),
        serial: serial.to_owned(),
        proof: None,
    };
    let first = client.status(request.clone()).await?.into_inner();
    let Some(challenge) = first.challenge.as_ref() else {
        return Ok(StatusAnswer {
            response: first,
            signed_by: None,
        });
    };
    request.proof = Some(status_proof(chip, challenge, signer, serial)?);
    Ok(StatusAnswer {
        response: client.status(request).await?.into_inner(),
        signed_by: Some(signer),
    })
}

/// What the server sent, whichever stream it came on.
enum Step {
    Challenge(v1::Challenge),
    Credentials(Box<v1::CredentialBundle>),
    Refusal(v1::Refusal),
}

/// The two streams differ only in their envelope types and the attestation purpose.
trait Flow {
    type Request;
    type Response;
    const KIND: ChallengeKind;
    fn proof(proof: v1::Proof) -> Self::Request;
    fn step(response: Self::Response) -> Option<Step>;
}

struct Onboarding;

impl Flow for Onboarding {
    type Request = v1::OnboardRequest;
    type Response = v1::OnboardResponse;
    const KIND: ChallengeKind = ChallengeKind::Onboarding;

    fn proof(proof: v1::Proof) -> Self::Request {
        v1::OnboardRequest {
            msg: Some(v1::onboard_request::Msg::Proof(proof)),
        }
    }

    fn step(response: Self::Response) -> Option<Step> {
        use v1::onboard_response::Msg;
        Some(match response.msg? {
            Msg::Challenge(c) => Step::Challenge(c),
            Msg::Credentials(c) => Step::Credentials(Box::new(c)),
            Msg::Refusal(r) => Step::Refusal(r),
        })
    }
}

struct Renewal;

impl Flow for Renewal {
    type Request = v1::RenewRequest;
    type Response = v1::RenewResponse;
    const KIND: ChallengeKind = ChallengeKind::Renewal;

    fn proof(proof: v1::Proof) -> Self::Request {
        v1::RenewRequest {
            msg: Some(v1::renew_request::Msg::Proof(proof)),
        }
    }

    fn step(response: Self::Response) -> Option<Step> {
        use v1::renew_response::Msg;
        Some(match response.msg? {
            Msg::Challenge(c) => Step::Challenge(c),
            Msg::Credentials(c) => Step::Credentials(Box::new(c)),
            Msg::Refusal(r) => Step::Refusal(r),
        })
    }
}

async fn send<T, E>(tx: &mpsc::Sender<T>, message: T) -> Result<(), ExchangeError<E>> {
    tx.send(message)
        .await
        .map_err(|_| ExchangeError::Protocol("request stream closed".into()))
}

/// After the Hello: read the challenge, prove, read the result.
async fn exchange<F: Flow, C: Chip + ?Sized>(
    chip: &C,
    tx: mpsc::Sender<F::Request>,
    mut responses: tonic::Streaming<F::Response>,
) -> Result<Outcome, ExchangeError<C::Error>> {
    let challenge = match responses.message().await?.and_then(F::step) {
        Some(Step::Challenge(challenge)) => challenge,
        Some(Step::Refusal(refusal)) => {
            drop(tx);
            return Ok(finish(responses, Outcome::Refused(refusal)).await);
        }
        Some(Step::Credentials(_)) => {
            return Err(ExchangeError::Protocol(
                "credentials before any challenge".into(),
            ));
        }
        None => {
            return Err(ExchangeError::Protocol(
                "the stream ended without a challenge".into(),
            ));
        }
    };
    let proof = answer(chip, F::KIND, &challenge)?;
    send(&tx, F::proof(proof)).await?;
    // Nothing follows the proof: the request stream ends here (see `finish`).
    drop(tx);
    let outcome = match responses.message().await?.and_then(F::step) {
        Some(Step::Credentials(bundle)) => Outcome::Credentials(bundle),
        Some(Step::Refusal(refusal)) => Outcome::Refused(refusal),
        Some(Step::Challenge(_)) => {
            return Err(ExchangeError::Protocol("a second challenge".into()));
        }
        None => {
            return Err(ExchangeError::Protocol(
                "the stream ended without credentials or a refusal".into(),
            ));
        }
    };
    Ok(finish(responses, outcome).await)
}

/// How long the end of a response stream is awaited once its last message is in.
const STREAM_END_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the response stream to its end (the status trailers) before letting go of it.
///
/// Both sides close their half of the stream: the request half after the proof (or the
/// refusal), the response half here. A stream dropped while the other side's last frame is
/// still in flight is reset, and that frame then arrives on a stream HTTP/2 has forgotten:
/// h2 counts each one against the connection and closes it after 1,024
/// (`too_many_internal_resets`), which a programming station relaying thousands of devices
/// over one connection reaches within minutes. The outcome stands whatever the trailers say:
/// the credential is durable once it was sent.
async fn finish<T>(mut responses: tonic::Streaming<T>, outcome: Outcome) -> Outcome {
    let _ = tokio::time::timeout(STREAM_END_WAIT, responses.trailers()).await;
    outcome
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
    use rot_core::extractor::{EnrolMode, enrol, reconstruct};
    use rot_core::helper_data::HelperData;

    struct TestChip {
        seed: ChipSeed,
        helper_data: HelperData,
        device_id: DeviceId,
        epk: PublicKey,
        firmware: Option<FirmwareMeasurement>,
    }

    impl TestChip {
        fn new() -> Self {
            let seed = ChipSeed::from_bytes([3; 32]);
            let mut chip = EmulatedChip::new(&seed, OperatingConditions::NOMINAL, [1; 32]);
            let enrolment = enrol(&mut chip, None, EnrolMode::FirstEnrolment).unwrap();
            let epk = enrolment.seeds.enrolment_key().public_key();
            Self {
                seed,
                helper_data: enrolment.helper_data,
                device_id: DeviceId::from_public_key(&epk),
                epk,
                firmware: None,
            }
        }
    }

    impl Chip for TestChip {
        type Error = rot_core::extractor::ReconstructError;
        fn device_id(&self) -> &DeviceId {
            &self.device_id
        }
        fn epk(&self) -> &PublicKey {
            &self.epk
        }
        fn seeds(&self) -> Result<Seeds, Self::Error> {
            let mut chip = EmulatedChip::new(&self.seed, OperatingConditions::NOMINAL, [2; 32]);
            reconstruct(&mut chip, &self.helper_data)
        }
        fn firmware(&self) -> Result<Option<FirmwareMeasurement>, Self::Error> {
            Ok(self.firmware)
        }
    }

    #[test]
    fn registration_proof_verifies_under_the_epk() {
        let chip = TestChip::new();
        let request = registration_request(&chip, b"station-9", None).unwrap();
        assert_eq!(request.claimed_device_id, chip.device_id().to_string());
        let message = attestation::registration_message(chip.epk(), b"station-9").unwrap();
        let signature =
            rot_core::SignatureBytes(request.proof_signature.as_slice().try_into().unwrap());
        attestation::verify(chip.epk(), &message, &signature).unwrap();
        assert!(matches!(
            registration_request(&chip, &[0; 129], None),
            Err(ExchangeError::Protocol(_))
        ));
    }

    #[test]
    fn the_answer_binds_both_keys_to_the_challenge() {
        let chip = TestChip::new();
        let challenge = v1::Challenge {
            challenge_id: vec![9; 16],
            nonce: vec![5; 32],
            key_slot: 3,
            ..Default::default()
        };
        let proof = answer(&chip, ChallengeKind::Renewal, &challenge).unwrap();
        assert_eq!(proof.key_slot, 3);
        let dpk = PublicKey::from_sec1(&proof.dpk).unwrap();
        let context = ChallengeContext {
            device_id: chip.device_id(),
            challenge_id: &challenge.challenge_id,
            nonce: &[5; 32],
            dpk: &dpk,
            key_slot: KeySlot::new(3).unwrap(),
        };
        let esk = attestation::challenge_message(
            ChallengeKind::Renewal,
            SignerRole::EnrolmentKey,
            &context,
        )
        .unwrap();
        let dsk =
            attestation::challenge_message(ChallengeKind::Renewal, SignerRole::DeviceKey, &context)
                .unwrap();
        let sig = |bytes: &[u8]| rot_core::SignatureBytes(bytes.try_into().unwrap());
        attestation::verify(chip.epk(), &esk, &sig(&proof.esk_signature)).unwrap();
        attestation::verify(&dpk, &dsk, &sig(&proof.dpk_signature)).unwrap();
        // The roles cannot be swapped.
        assert!(attestation::verify(&dpk, &esk, &sig(&proof.dpk_signature)).is_err());
        // A chip that measures nothing proves no firmware.
        assert!(proof.firmware.is_none());
    }

    #[test]
    fn a_measuring_chip_binds_its_alias_key_to_the_firmware() {
        let measurement = FirmwareMeasurement::of_image(b"firmware 1.0");
        let chip = TestChip {
            firmware: Some(measurement),
            ..TestChip::new()
        };
        let challenge = v1::Challenge {
            challenge_id: vec![9; 16],
            nonce: vec![5; 32],
            key_slot: 2,
            ..Default::default()
        };
        let proof = answer(&chip, ChallengeKind::Onboarding, &challenge).unwrap();
        let firmware = proof.firmware.clone().unwrap();
        assert_eq!(firmware.measurement, measurement.as_bytes());
        let apk = PublicKey::from_sec1(&firmware.alias_public_key).unwrap();
        let seeds = chip.seeds().unwrap();
        assert_eq!(
            apk,
            seeds
                .alias_key(KeySlot::new(2).unwrap(), &measurement)
                .public_key()
        );
        let dpk = PublicKey::from_sec1(&proof.dpk).unwrap();
        assert_eq!(dpk, seeds.device_key(KeySlot::new(2).unwrap()).public_key());
        let context = ChallengeContext {
            device_id: chip.device_id(),
            challenge_id: &challenge.challenge_id,
            nonce: &[5; 32],
            dpk: &dpk,
            key_slot: KeySlot::new(2).unwrap(),
        };
        let binding = FirmwareBinding {
            measurement: &measurement,
            alias_public_key: &apk,
        };
        let message = |signer| {
            attestation::firmware_binding_message(
                ChallengeKind::Onboarding,
                signer,
                &context,
                &binding,
            )
            .unwrap()
        };
        let sig = |bytes: &[u8]| rot_core::SignatureBytes(bytes.try_into().unwrap());
        attestation::verify(
            chip.epk(),
            &message(FirmwareSigner::EnrolmentKey),
            &sig(&firmware.esk_signature),
        )
        .unwrap();
        attestation::verify(
            &apk,
            &message(FirmwareSigner::AliasKey),
            &sig(&firmware.alias_signature),
        )
        .unwrap();
        // The v1 signatures are there as before, for services that do not read the binding.
        let v1 = attestation::challenge_message(
            ChallengeKind::Onboarding,
            SignerRole::EnrolmentKey,
            &context,
        )
        .unwrap();
        attestation::verify(chip.epk(), &v1, &sig(&proof.esk_signature)).unwrap();
    }

    #[test]
    fn a_status_proof_verifies_under_the_key_that_signed_it_only() {
        let chip = TestChip::new();
        let challenge = v1::StatusChallenge {
            challenge_id: vec![4; 16],
            nonce: vec![6; 32],
            ..Default::default()
        };
        let slot = KeySlot::new(2).unwrap();
        let sig = |bytes: &[u8]| rot_core::SignatureBytes(bytes.try_into().unwrap());
        let message = |signer, serial: &'static [u8]| {
            let context = StatusContext {
                device_id: chip.device_id(),
                challenge_id: &challenge.challenge_id,
                nonce: &[6; 32],
                serial,
            };
            attestation::status_message(signer, &context).unwrap()
        };

        let by_dsk = status_proof(&chip, &challenge, StatusSigner::DeviceKey(slot), "abc").unwrap();
        assert_eq!(
            (by_dsk.key_slot, &by_dsk.challenge_id),
            (2, &challenge.challenge_id)
        );
        let dpk = chip.seeds().unwrap().device_key(slot).public_key();
        let signed = message(StatusSigner::DeviceKey(slot), b"abc");
        attestation::verify(&dpk, &signed, &sig(&by_dsk.signature)).unwrap();
        assert!(attestation::verify(chip.epk(), &signed, &sig(&by_dsk.signature)).is_err());

        let by_esk = status_proof(&chip, &challenge, StatusSigner::EnrolmentKey, "").unwrap();
        assert_eq!(by_esk.key_slot, 0);
        let signed = message(StatusSigner::EnrolmentKey, b"");
        attestation::verify(chip.epk(), &signed, &sig(&by_esk.signature)).unwrap();

        let short = v1::StatusChallenge {
            nonce: vec![6; 31],
            ..challenge.clone()
        };
        assert!(matches!(
            status_proof(&chip, &short, StatusSigner::EnrolmentKey, ""),
            Err(ExchangeError::Protocol(_))
        ));
    }

    #[test]
    fn malformed_challenges_are_protocol_errors() {
        let chip = TestChip::new();
        for challenge in [
            v1::Challenge {
                nonce: vec![0; 32],
                key_slot: 0,
                ..Default::default()
            },
            v1::Challenge {
                nonce: vec![0; 32],
                key_slot: 8,
                ..Default::default()
            },
            v1::Challenge {
                nonce: vec![0; 31],
                key_slot: 1,
                ..Default::default()
            },
            v1::Challenge {
                challenge_id: vec![0; 129],
                nonce: vec![0; 32],
                key_slot: 1,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                answer(&chip, ChallengeKind::Onboarding, &challenge),
                Err(ExchangeError::Protocol(_))
            ));
        }
    }
}
