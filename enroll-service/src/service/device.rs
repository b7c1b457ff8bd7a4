//! The device-facing service: Register, Onboard, Renew, Status.
//!
//! ```text
//!  Hello ──▶ checks (registered? in a batch? revoked? rate) ──▶ Challenge{id, nonce, slot, expiry}
//!  Proof ──▶ own challenge? unspent? in time? slot? DPK? ESK sig? DSK sig?
//!        ──▶ device lock: re-check, same credential if nothing changed, else sign a leaf
//!        ──▶ durable commit (credential + device + counts + audit) ──▶ CredentialBundle
//! ```
//!
//! Business outcomes are [`Refusal`]s sent as the final message; each is audited with its
//! precise [`v1::RefusalDetail`] and a reference the device can quote to an operator.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_server::DeviceEnrollment;
use rot_core::attestation::{self, ChallengeContext, ChallengeKind, SignerRole};
use rot_core::keys::{DeviceId, KeySlot, PublicKey};

use super::rate::address_key;
use super::{Enrollment, ForeignChallenge, Refusal, format_serial, parse_device_id, random_hex};
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::{
    BatchRecord, CountsDelta, CredentialRecord, CredentialStatus, CrlEntryRecord, DeviceRecord,
    DeviceState, Registration, RegistrationMetadata, RevocationReasonCode, duration, timestamp,
};
use crate::pki::{LeafRequest, Serial, Validity};
use crate::policy::PolicySpec;
use crate::store::{Change, Op, RegistryEvent, StoreError};

/// Certificates start a little in the past so devices with a slightly slow clock accept them.
const BACKDATE: time::Duration = time::Duration::minutes(5);
/// Limits of the registration metadata (see `RegistrationContext` in common.proto).
const MAX_CONTEXT_STRING: usize = 128;
const MAX_LABELS: usize = 16;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 256;

/// The DeviceEnrollment gRPC service.
#[derive(Clone, Debug)]
pub struct DeviceService {
    core: Arc<Enrollment>,
}

impl DeviceService {
    /// The service over shared state.
    #[must_use]
    pub fn new(core: Arc<Enrollment>) -> Self {
        Self { core }
    }
}

/// A registration whose proof verified.
#[derive(Clone, Debug)]
pub(crate) struct VerifiedRegistration {
    pub(crate) device_id: DeviceId,
    pub(crate) epk: PublicKey,
    pub(crate) proof_context: Vec<u8>,
    pub(crate) metadata: RegistrationMetadata,
}

/// Why a registration does not check out: the field and the problem, or a bad signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RegistrationProblem {
    /// A malformed field.
    Field(String, String),
    /// The proof signature does not verify.
    BadSignature,
}

/// Verifies a registration (DeviceEnrollment.Register or an offline import record).
pub(crate) fn verify_registration(
    epk: &[u8],
    proof_signature: &[u8],
    claimed_device_id: &str,
    context: Option<&v1::RegistrationContext>,
    proof_context: &[u8],
) -> Result<VerifiedRegistration, RegistrationProblem> {
    let field = |f: &str, m: &str| RegistrationProblem::Field(f.to_owned(), m.to_owned());
    let epk = parse_public_key(epk).ok_or_else(|| {
        field(
            "epk",
            "must be a P-256 point, SEC1 uncompressed (65 bytes, 0x04 || X || Y)",
        )
    })?;
    if proof_signature.len() != 64 {
        return Err(field(
            "proof_signature",
            "must be 64 bytes (r || s, IEEE P1363), not DER",
        ));
    }
    let device_id = DeviceId::from_public_key(&epk);
    if !claimed_device_id.is_empty() {
        let claimed = parse_device_id("claimed_device_id", claimed_device_id).map_err(|_| {
            field(
                "claimed_device_id",
                "must be a DeviceId: 64 hexadecimal characters",
            )
        })?;
        if claimed != device_id {
            return Err(field(
                "claimed_device_id",
                &format!("does not equal SHA-256(epk) = {device_id}"),
            ));
        }
    }
    let metadata = validate_metadata(context).map_err(|(f, m)| field(&f, &m))?;
    let message = attestation::registration_message(&epk, proof_context)
        .map_err(|_| field("proof_context", "must be at most 128 bytes"))?;
    if !verify_signature(&epk, message.as_bytes(), proof_signature) {
        return Err(RegistrationProblem::BadSignature);
    }
    Ok(VerifiedRegistration {
        device_id,
        epk,
        proof_context: proof_context.to_vec(),
        metadata,
    })
}

fn validate_metadata(
    context: Option<&v1::RegistrationContext>,
) -> Result<RegistrationMetadata, (String, String)> {
    let Some(context) = context else {
        return Ok(RegistrationMetadata::default());
    };
    for (name, value) in [
        ("context.site", &context.site),
        ("context.station", &context.station),
        ("context.firmware_version", &context.firmware_version),
    ] {
        if value.chars().count() > MAX_CONTEXT_STRING {
            return Err((name.into(), "must be at most 128 characters".into()));
        }
    }
    if context.labels.len() > MAX_LABELS {
        return Err(("context.labels".into(), "at most 16 labels".into()));
    }
    for (key, value) in &context.labels {
        let key_ok = (1..=MAX_LABEL_KEY).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !key_ok {
            return Err((
                "context.labels".into(),
                format!("label key {key:?} must be 1 to 63 characters of [a-z0-9_.-]"),
            ));
        }
        if value.chars().count() > MAX_LABEL_VALUE {
            return Err((
                "context.labels".into(),
                format!("label {key:?}: value must be at most 256 characters"),
            ));
        }
    }
    Ok(RegistrationMetadata {
        site: context.site.clone(),
        station: context.station.clone(),
        firmware_version: context.firmware_version.clone(),
        labels: context.labels.clone().into_iter().collect(),
    })
}

/// Parses an uncompressed SEC1 P-256 point.
fn parse_public_key(bytes: &[u8]) -> Option<PublicKey> {
    (bytes.len() == 65)
        .then(|| PublicKey::from_sec1(bytes).ok())
        .flatten()
}

/// ECDSA P-256 / SHA-256 over `message`, 64-byte r || s, with aws-lc-rs (the service's fast
/// path; rot-core signs the same bytes with p256). Every device proof goes through it.
#[must_use]
pub fn verify_signature(public_key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key.as_bytes())
        .verify(message, signature)
        .is_ok()
}

impl Enrollment {
    /// Registers a verified EPK, or returns the existing registration. Adds the device to
    /// `join` (a batch) at the same time when an operator imports an offline registration.
    pub(crate) async fn register(
        &self,
        registration: &VerifiedRegistration,
        actor: &str,
        correlation: &str,
    ) -> Result<(DeviceRecord, bool), ServiceError> {
        let id = registration.device_id.to_string();
        let lock = self.locks.lock(&id).await;
        let now = OffsetDateTime::now_utc();
        let existing = self.registry.device(&id)?;
        if let Some(device) = &existing
            && device.registration.is_some()
        {
            return Ok((device.clone(), false));
        }
        let mut device = existing.unwrap_or_else(|| DeviceRecord::new(id.clone()));
        let before = device.state();
        device.registration = Some(Registration {
            epk_hex: hex::encode(registration.epk.as_bytes()),
            registered_at: now,
            proof_context_hex: hex::encode(&registration.proof_context),
            metadata: registration.metadata.clone(),
        });
        device.last_seen = Some(now);
        let mut change = Change::new();
        if let Some(batch_id) = &device.batch_id {
            change
                .op(Op::AdjustCounts {
                    batch_id: batch_id.clone(),
                    delta: CountsDelta::transition(before, device.state()),
                })
                .event(device_event(
                    batch_id,
                    &id,
                    v1::DeviceEventKind::Registered,
                    now,
                    correlation,
                ))
                .event(RegistryEvent::CountsChanged {
                    batch_id: batch_id.clone(),
                });
        }
        change.op(Op::PutDevice(device.clone())).audit(
            AuditDraft::new(
                now,
                actor,
                device.owner.as_deref().unwrap_or("*"),
                "device.register",
                format!("device:{id}"),
                "ok",
            )
            .correlation(correlation),
        );
        self.commit_locked(change, vec![lock]).await.0?;
        self.metrics.registered();
        Ok((device, true))
    }

    /// Audits a refusal and counts it on the device and its batch. Returns whether it was
    /// audited: refusals of DeviceIds with no record are audited only within their client
    /// address's budget, since anyone can invent such IDs by the million.
    async fn record_refusal(
        &self,
        device_id: &str,
        rpc: &str,
        refusal: &Refusal,
        correlation: &str,
        peer: Option<IpAddr>,
    ) -> Result<bool, ServiceError> {
        let lock = self.locks.lock(device_id).await;
        let now = OffsetDateTime::now_utc();
        let mut change = Change::new();
        // A Hello naming someone else's DeviceId with another EPK proves nothing about that
        // device: it must not add to its refusal counts, its batch's events or its owner's log.
        let device = if refusal.detail == v1::RefusalDetail::DeviceIdMismatch {
            None
        } else {
            self.registry.device(device_id)?
        };
        if device.is_none()
            && let Some(ip) = peer
            && self.unknown_refusals.admit(&address_key(ip)).is_err()
        {
            self.metrics.refused(&refusal.detail_name());
            self.metrics.refusal_unaudited();
            return Ok(false);
        }
        let owner = device
            .as_ref()
            .and_then(|d| d.owner.clone())
            .unwrap_or_else(|| "*".to_owned());
        // Unknown DeviceIds get no record: anyone can invent them, and the registry must not
        // grow with an attacker's imagination.
        if let Some(mut device) = device {
            device.refusals += 1;
            if let Some(batch_id) = &device.batch_id {
                let mut event = device_event(
                    batch_id,
                    device_id,
                    v1::DeviceEventKind::Refused,
                    now,
                    correlation,
                );
                if let RegistryEvent::Device { event, .. } = &mut event {
                    event.refusal_detail = refusal.detail as i32;
                }
                change
                    .op(Op::AdjustCounts {
                        batch_id: batch_id.clone(),
                        delta: CountsDelta::refusal(),
                    })
                    .event(event)
                    .event(RegistryEvent::CountsChanged {
                        batch_id: batch_id.clone(),
                    });
            }
            change.op(Op::PutDevice(device));
        }
        change.audit(
            AuditDraft::new(
                now,
                format!("device:{device_id}"),
                owner,
                "device.refuse",
                format!("device:{device_id}"),
                "refused",
            )
            .detail("rpc", rpc)
            .detail("refusal_detail", refusal.detail_name())
            .detail("refusal_reason", refusal.reason.as_str_name())
            .correlation(correlation),
        );
        self.commit_locked(change, vec![lock]).await.0?;
        self.metrics.refused(&refusal.detail_name());
        Ok(true)
    }
}

fn device_event(
    batch_id: &str,
    device_id: &str,
    kind: v1::DeviceEventKind,
    at: OffsetDateTime,
    correlation: &str,
) -> RegistryEvent {
    RegistryEvent::Device {
        batch_id: batch_id.to_owned(),
        event: v1::DeviceEvent {
            device_id: device_id.to_owned(),
            kind: kind as i32,
            time: Some(timestamp(at)),
            correlation_id: correlation.to_owned(),
            ..v1::DeviceEvent::default()
        },
    }
}

/// Onboard or Renew, with the renew target slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exchange {
    Onboard,
    Renew { target_slot: u32 },
}

impl Exchange {
    fn kind(self) -> ChallengeKind {
        match self {
            Self::Onboard => ChallengeKind::Onboarding,
            Self::Renew { .. } => ChallengeKind::Renewal,
        }
    }

    fn rpc(self) -> &'static str {
        match self {
            Self::Onboard => "onboard",
            Self::Renew { .. } => "renew",
        }
    }
}

/// What the device said, whichever RPC carried it.
enum Incoming {
    Hello {
        device_id: String,
        epk: Vec<u8>,
        target_slot: u32,
    },
    Proof(v1::Proof),
}

/// What the service says, whichever RPC carries it.
enum Outgoing {
    Challenge(v1::Challenge),
    Credentials(Box<v1::CredentialBundle>),
    Refusal(v1::Refusal),
}

/// Everything the eligibility check established.
struct Eligible {
    device: DeviceRecord,
    batch: BatchRecord,
    policy: PolicySpec,
    slot: KeySlot,
}

/// The refusal, if any, for `device` asking to onboard / renew with `epk`. `known` is a batch
/// and its policy read earlier in the same exchange: a batch's policy never changes and
/// policies are immutable, so they are reused if the device is still in that batch.
fn check_eligible(
    core: &Enrollment,
    exchange: Exchange,
    device: Option<DeviceRecord>,
    epk: &PublicKey,
    known: Option<(&BatchRecord, &PolicySpec)>,
) -> Result<Result<Eligible, Refusal>, ServiceError> {
    use v1::RefusalDetail as D;
    use v1::RefusalReason as R;
    let Some(device) = device else {
        return Ok(Err(Refusal::new(R::UnknownDevice, D::Unregistered)));
    };
    let Some(registration) = &device.registration else {
        return Ok(Err(Refusal::new(R::UnknownDevice, D::Unregistered)));
    };
    if registration.epk_hex != hex::encode(epk.as_bytes()) {
        return Ok(Err(Refusal::new(R::UnknownDevice, D::DeviceIdMismatch)));
    }
    if device.revocation.is_some() {
        return Ok(Err(Refusal::new(R::Revoked, D::Revoked)));
    }
    if matches!(exchange, Exchange::Renew { .. }) && device.current_serial.is_none() {
        return Ok(Err(Refusal::new(R::NotOnboarded, D::NotOnboarded)));
    }
    let Some(batch_id) = &device.batch_id else {
        return Ok(Err(Refusal::new(R::NotProvisioned, D::NotInBatch)));
    };
    let (batch, policy) = match known {
        Some((batch, policy)) if batch.batch_id == *batch_id => (batch.clone(), policy.clone()),
        _ => {
            let Some(batch) = core.registry.batch(batch_id)? else {
                return Ok(Err(Refusal::new(R::NotProvisioned, D::NotInBatch)));
            };
            let Some(policy) = core.registry.policy(&batch.owner, &batch.policy_name)? else {
                return Ok(Err(Refusal::new(R::NotProvisioned, D::NotInBatch)));
            };
            (batch, policy)
        }
    };
    // A device moved since its credential was issued renews on the slot the move chose (the
    // next slot after a change of owner), never back onto the old owner's key.
    let moved = device.credential_assignment != Some(device.assignment);
    let slot_number = match exchange {
        Exchange::Onboard => u32::from(device.key_slot),
        Exchange::Renew { target_slot } if moved => {
            if target_slot != 0 && target_slot != u32::from(device.key_slot) {
                return Ok(Err(Refusal::new(
                    R::KeySlotUnavailable,
                    D::KeySlotUnavailable,
                )));
            }
            u32::from(device.key_slot)
        }
        Exchange::Renew { target_slot: 0 } => {
            let serial = device.current_serial.as_deref().unwrap_or_default();
            core.registry
                .credential(serial)?
                .map_or(u32::from(device.key_slot), |c| u32::from(c.key_slot))
        }
        Exchange::Renew { target_slot } => target_slot,
    };
    let slot = u8::try_from(slot_number).ok().and_then(KeySlot::new);
    let Some(slot) = slot.filter(|s| !device.retired_slots.contains(&s.get())) else {
        return Ok(Err(Refusal::new(
            R::KeySlotUnavailable,
            D::KeySlotUnavailable,
        )));
    };
    Ok(Ok(Eligible {
        device,
        batch,
        policy,
        slot,
    }))
}

/// The challenge a stream issued.
struct IssuedChallenge {
    id: [u8; 16],
    nonce: [u8; 32],
    slot: KeySlot,
    expires: tokio::time::Instant,
}

/// Checks a proof against the stream's challenge; returns the proved DPK.
fn check_proof(
    core: &Enrollment,
    exchange: Exchange,
    device_id: &DeviceId,
    epk: &PublicKey,
    eligible: &Eligible,
    challenge: &IssuedChallenge,
    proof: &v1::Proof,
) -> Result<Result<PublicKey, Refusal>, ServiceError> {
    use v1::RefusalDetail as D;
    if proof.esk_signature.len() != 64 {
        return Err(ServiceError::invalid(
            "proof.esk_signature",
            "must be 64 bytes (r || s)",
        ));
    }
    if proof.dpk_signature.len() != 64 {
        return Err(ServiceError::invalid(
            "proof.dpk_signature",
            "must be 64 bytes (r || s)",
        ));
    }
    // The stream's own challenge is spent by the first proof, whatever happens next.
    let fresh = core.challenges.consume(&challenge.id);
    if proof.challenge_id.as_slice() != challenge.id {
        let detail = match core.challenges.classify_foreign(&proof.challenge_id) {
            ForeignChallenge::Spent => D::NonceReplayed,
            ForeignChallenge::Foreign => D::NonceForeign,
        };
        return Ok(Err(Refusal::proof(detail)));
    }
    if !fresh {
        return Ok(Err(Refusal::proof(D::NonceReplayed)));
    }
    if tokio::time::Instant::now() > challenge.expires {
        return Ok(Err(Refusal::new(
            v1::RefusalReason::ChallengeExpired,
            D::NonceExpired,
        )));
    }
    if proof.key_slot != u32::from(challenge.slot.get()) {
        return Ok(Err(Refusal::proof(D::SlotMismatch)));
    }
    let Some(dpk) = parse_public_key(&proof.dpk) else {
        return Ok(Err(Refusal::proof(D::DpkMismatch)));
    };
    // The enrolment key proves identity only; it is never certified.
    if dpk == *epk {
        return Ok(Err(Refusal::proof(D::DpkMismatch)));
    }
    if let Some(known) = eligible.device.slot_keys.get(&challenge.slot.get())
        && *known != hex::encode(dpk.as_bytes())
    {
        return Ok(Err(Refusal::proof(D::DpkMismatch)));
    }
    let context = ChallengeContext {
        device_id,
        challenge_id: &challenge.id,
        nonce: &challenge.nonce,
        dpk: &dpk,
        key_slot: challenge.slot,
    };
    let kind = exchange.kind();
    let esk_message = attestation::challenge_message(kind, SignerRole::EnrolmentKey, &context)
        .map_err(|_| ServiceError::Internal("challenge id too long".into()))?;
    if !verify_signature(epk, esk_message.as_bytes(), &proof.esk_signature) {
        return Ok(Err(Refusal::proof(D::BadEskSignature)));
    }
    let dsk_message = attestation::challenge_message(kind, SignerRole::DeviceKey, &context)
        .map_err(|_| ServiceError::Internal("challenge id too long".into()))?;
    if !verify_signature(&dpk, dsk_message.as_bytes(), &proof.dpk_signature) {
        return Ok(Err(Refusal::proof(D::BadDskSignature)));
    }
    Ok(Ok(dpk))
}

/// What happens to the credential being replaced.
fn retire(previous: &mut CredentialRecord, device: &DeviceRecord, now: OffsetDateTime) -> bool {
    if previous.assignment == device.assignment {
        previous.status = CredentialStatus::Superseded;
        false
    } else {
        // Moved within the owner: the old certificate stayed valid until now, the device
        // has re-onboarded under the new batch, so the old one goes on the CRL.
        previous.status = CredentialStatus::Revoked;
        previous.revocation = Some(CrlEntryRecord {
            revoked_at: now,
            reason: RevocationReasonCode::Superseded,
        });
        true
    }
}

impl Enrollment {
    /// Issues (or returns the unchanged) credential for a verified proof, under the device
    /// lock, and makes it durable before returning it.
    #[allow(
        clippy::too_many_lines,
        reason = "one linear transaction: read, decide, sign, commit"
    )]
    async fn issue(
        &self,
        exchange: Exchange,
        device_id: &DeviceId,
        epk: &PublicKey,
        earlier: &Eligible,
        dpk: &PublicKey,
        correlation: &str,
    ) -> Result<Result<v1::CredentialBundle, Refusal>, ServiceError> {
        let id = device_id.to_string();
        let slot = earlier.slot;
        let mut held = vec![self.locks.lock(&id).await];
        // The world may have changed while the device was signing: check again (the device
        // record; its batch and policy, if it is still in the same batch, cannot change).
        let eligible = match check_eligible(
            self,
            exchange,
            self.registry.device(&id)?,
            epk,
            Some((&earlier.batch, &earlier.policy)),
        )? {
            Ok(e) => e,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if eligible.slot != slot {
            return Ok(Err(Refusal::proof(v1::RefusalDetail::SlotMismatch)));
        }
        let now = OffsetDateTime::now_utc();
        let dpk_hex = hex::encode(dpk.as_bytes());
        // Checked at proof time against the Hello-time record; again under the lock, so two
        // concurrent streams cannot certify two different keys for one slot.
        if eligible
            .device
            .slot_keys
            .get(&slot.get())
            .is_some_and(|known| *known != dpk_hex)
        {
            return Ok(Err(Refusal::proof(v1::RefusalDetail::DpkMismatch)));
        }
        let current = match &eligible.device.current_serial {
            Some(serial) => self.registry.credential(serial)?,
            None => None,
        };
        if let Some(current) = &current {
            let unchanged = current.status == CredentialStatus::Active
                && current.assignment == eligible.device.assignment
                && current.key_slot == slot.get()
                && current.dpk_hex == dpk_hex
                && current.owner == eligible.policy.owner
                && current.policy_name == eligible.policy.name
                && current.batch_id == eligible.batch.batch_id
                && now < current.not_after;
            let due = current.renew_after.is_some_and(|r| now >= r);
            let keep = match exchange {
                Exchange::Onboard => unchanged,
                Exchange::Renew { .. } => unchanged && !due,
            };
            if keep {
                return self.bundle(current, &eligible.policy).map(Ok);
            }
        }

        let Eligible {
            mut device,
            batch,
            policy,
            ..
        } = eligible;
        let before = device.state();
        let subject_cn = policy.subject_cn(device_id)?;
        let mut attempts = 0;
        let (credential, revoked_previous) = loop {
            attempts += 1;
            let serial = Serial::random()?;
            let serial_hex = format_serial(serial);
            let validity = Validity::new(now - BACKDATE, now + policy.certificate_lifetime)?;
            let leaf = self.ca.issue_device_certificate(&LeafRequest {
                public_key: *dpk.as_bytes(),
                common_name: subject_cn.clone(),
                validity,
                serial,
            })?;
            let renew_after = (policy.renew_window > time::Duration::ZERO)
                .then(|| validity.not_after - policy.renew_window);
            let credential = CredentialRecord {
                serial: serial_hex.clone(),
                device_id: id.clone(),
                key_slot: slot.get(),
                dpk_hex: dpk_hex.clone(),
                owner: policy.owner.clone(),
                policy_name: policy.name.clone(),
                batch_id: batch.batch_id.clone(),
                assignment: device.assignment,
                subject_cn: subject_cn.clone(),
                issued_at: now,
                not_before: validity.not_before,
                not_after: validity.not_after,
                renew_after,
                certificate_pem: leaf.pem,
                status: CredentialStatus::Active,
                revocation: None,
            };
            let mut updated = device.clone();
            updated.key_slot = slot.get();
            updated.slot_keys.insert(slot.get(), dpk_hex.clone());
            updated.current_serial = Some(serial_hex.clone());
            updated.serials.push(serial_hex.clone());
            updated.credential_assignment = Some(device.assignment);
            updated.onboarded_at = Some(now);
            updated.last_seen = Some(now);

            let mut change = Change::new();
            change
                .guard(crate::store::Guard::SerialAbsent(serial_hex.clone()))
                .op(Op::PutCredential(Box::new(credential.clone())));
            let mut revoked_previous = false;
            if let Some(mut previous) = current.clone()
                && previous.status == CredentialStatus::Active
            {
                if retire(&mut previous, &device, now) {
                    revoked_previous = true;
                    if let Some(entry) = previous.revocation {
                        change.op(Op::Revoke {
                            serial: previous.serial.clone(),
                            entry,
                        });
                    }
                }
                change.op(Op::PutCredential(Box::new(previous)));
            }
            let event_kind = match exchange {
                Exchange::Onboard => v1::DeviceEventKind::Onboarded,
                Exchange::Renew { .. } => v1::DeviceEventKind::Renewed,
            };
            let mut event = device_event(&batch.batch_id, &id, event_kind, now, correlation);
            if let RegistryEvent::Device { event, .. } = &mut event {
                event.serial.clone_from(&serial_hex);
                event.key_slot = u32::from(slot.get());
            }
            change
                .op(Op::AdjustCounts {
                    batch_id: batch.batch_id.clone(),
                    delta: CountsDelta::transition(before, updated.state()),
                })
                .op(Op::PutDevice(updated.clone()))
                .event(event)
                .event(RegistryEvent::CountsChanged {
                    batch_id: batch.batch_id.clone(),
                })
                .audit(
                    AuditDraft::new(
                        now,
                        format!("device:{id}"),
                        policy.owner.clone(),
                        format!("device.{}", exchange.rpc()),
                        format!("device:{id}"),
                        "ok",
                    )
                    .detail("serial", serial_hex.clone())
                    .detail("key_slot", slot.get().to_string())
                    .detail("policy", format!("{}/{}", policy.owner, policy.name))
                    .detail("batch", batch.batch_id.clone())
                    .correlation(correlation),
                );
            let (outcome, guards) = self.commit_locked(change, held).await;
            held = guards;
            match outcome {
                Ok(_) => {
                    device = updated;
                    break (credential, revoked_previous);
                }
                // A random 127-bit serial collided with one already issued: draw another.
                Err(StoreError::Conflict(_)) if attempts < 3 => {}
                Err(e) => return Err(e.into()),
            }
        };
        debug_assert_eq!(
            device.current_serial.as_deref(),
            Some(credential.serial.as_str())
        );
        drop(held);
        match exchange {
            Exchange::Onboard => self.metrics.onboarded(),
            Exchange::Renew { .. } => self.metrics.renewed(),
        }
        if revoked_previous {
            // Not on the device's response path: the CRL refresher (and any GetCrl) re-signs
            // as soon as it sees a revoked serial that the CRL does not list yet.
            tracing::debug!(serial = %credential.serial, "previous certificate superseded and revoked");
        }
        self.bundle(&credential, &policy).map(Ok)
    }

    /// Runs one Onboard or Renew exchange. Sends the final message itself; returns an error
    /// only for protocol violations and failures (which end the stream with a status).
    #[allow(
        clippy::too_many_lines,
        reason = "the protocol reads top to bottom, one step per block"
    )]
    async fn run_exchange(
        self: Arc<Self>,
        exchange_kind: Exchange,
        peer: Option<IpAddr>,
        mut inbound: impl Stream<Item = Result<Incoming, Status>> + Unpin + Send,
        outbound: &mpsc::Sender<Result<Outgoing, Status>>,
    ) -> Result<(), ServiceError> {
        use tokio_stream::StreamExt;
        let first = tokio::time::timeout(self.config.first_message_timeout, inbound.next())
            .await
            .map_err(|_| {
                ServiceError::DeadlineExceeded("no Hello within the first-message timeout".into())
            })?;
        let (device_id, epk, target_slot) = match first {
            None => return Ok(()),
            Some(Err(status)) => return Err(ServiceError::from_client_stream(&status)),
            Some(Ok(Incoming::Hello {
                device_id,
                epk,
                target_slot,
            })) => (device_id, epk, target_slot),
            Some(Ok(Incoming::Proof(_))) => {
                return Err(ServiceError::Protocol(
                    "the first message must be a hello".into(),
                ));
            }
        };
        let exchange = match exchange_kind {
            Exchange::Onboard => Exchange::Onboard,
            Exchange::Renew { .. } => Exchange::Renew { target_slot },
        };
        let device_id = parse_device_id("hello.device_id", &device_id)?;
        let epk = parse_public_key(&epk).ok_or_else(|| {
            ServiceError::invalid(
                "hello.epk",
                "must be a P-256 point, SEC1 uncompressed (65 bytes)",
            )
        })?;
        let id = device_id.to_string();
        tracing::Span::current().record("device_id", tracing::field::display(&id));
        let correlation = random_hex(12)?;
        let refuse = |refusal: Refusal| {
            let core = self.clone();
            let id = id.clone();
            let correlation = correlation.clone();
            async move {
                tracing::info!(detail = %refusal.detail_name(), "refused");
                let audited = core
                    .record_refusal(&id, exchange.rpc(), &refusal, &correlation, peer)
                    .await?;
                // No reference for a refusal that is not in the audit log: it would lead nowhere.
                let reference = if audited { correlation.as_str() } else { "" };
                let _ = outbound
                    .send(Ok(Outgoing::Refusal(refusal.to_proto(reference))))
                    .await;
                Ok::<(), ServiceError>(())
            }
        };

        if DeviceId::from_public_key(&epk) != device_id {
            return refuse(Refusal::new(
                v1::RefusalReason::UnknownDevice,
                v1::RefusalDetail::DeviceIdMismatch,
            ))
            .await;
        }
        if let Err(wait) = self.challenges.admit(&id) {
            let mut refusal = Refusal::new(
                v1::RefusalReason::RateLimited,
                v1::RefusalDetail::RateLimited,
            );
            refusal.retry_after = Some(wait);
            return refuse(refusal).await;
        }
        let eligible =
            match check_eligible(&self, exchange, self.registry.device(&id)?, &epk, None)? {
                Ok(e) => e,
                Err(refusal) => return refuse(refusal).await,
            };

        let mut challenge_id = [0u8; 16];
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut challenge_id)
            .and_then(|()| aws_lc_rs::rand::fill(&mut nonce))
            .map_err(|_| ServiceError::Internal("system RNG failed".into()))?;
        let ttl = self.config.challenge_ttl;
        let challenge = IssuedChallenge {
            id: challenge_id,
            nonce,
            slot: eligible.slot,
            expires: tokio::time::Instant::now() + ttl,
        };
        self.challenges.issue(challenge_id);
        let expires_at = OffsetDateTime::now_utc() + ttl;
        if outbound
            .send(Ok(Outgoing::Challenge(v1::Challenge {
                challenge_id: challenge_id.to_vec(),
                nonce: nonce.to_vec(),
                expires_at: Some(timestamp(expires_at)),
                expires_in: Some(duration(time::Duration::try_from(ttl).unwrap_or_default())),
                key_slot: u32::from(eligible.slot.get()),
            })))
            .await
            .is_err()
        {
            return Ok(());
        }

        let proof = match tokio::time::timeout_at(challenge.expires, inbound.next()).await {
            Err(_) => {
                self.challenges.consume(&challenge.id);
                return refuse(Refusal::new(
                    v1::RefusalReason::ChallengeExpired,
                    v1::RefusalDetail::NonceExpired,
                ))
                .await;
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(status))) => return Err(ServiceError::from_client_stream(&status)),
            Ok(Some(Ok(Incoming::Hello { .. }))) => {
                return Err(ServiceError::Protocol(
                    "expected a proof after the challenge, got another hello".into(),
                ));
            }
            Ok(Some(Ok(Incoming::Proof(proof)))) => proof,
        };
        let dpk = match check_proof(
            &self, exchange, &device_id, &epk, &eligible, &challenge, &proof,
        )? {
            Ok(dpk) => dpk,
            Err(refusal) => return refuse(refusal).await,
        };
        match self
            .issue(exchange, &device_id, &epk, &eligible, &dpk, &correlation)
            .await?
        {
            Ok(bundle) => {
                tracing::info!(serial = %bundle.serial, key_slot = bundle.key_slot, "credential sent");
                let _ = outbound
                    .send(Ok(Outgoing::Credentials(Box::new(bundle))))
                    .await;
                Ok(())
            }
            Err(refusal) => refuse(refusal).await,
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Peer IP address of a request, for the per-peer stream limit.
fn peer_ip<T>(request: &Request<T>) -> Option<IpAddr> {
    request.remote_addr().map(|a| a.ip())
}

impl DeviceService {
    /// Starts an exchange task and returns its outbound stream mapped by `wrap`.
    fn start<In, Out>(
        &self,
        request: Request<Streaming<In>>,
        exchange: Exchange,
        unwrap: fn(In) -> Result<Incoming, ServiceError>,
        wrap: fn(Outgoing) -> Out,
    ) -> Result<Response<ResponseStream<Out>>, Status>
    where
        In: Send + 'static,
        Out: Send + 'static,
    {
        let peer = peer_ip(&request);
        let slot = self.core.open_stream(peer)?;
        let timer = self.core.metrics.clone().time(exchange.rpc());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<Outgoing, Status>>(4);
        let core = self.core.clone();
        let stream_timeout = core.config.stream_timeout;
        let span = tracing::info_span!(
            "exchange",
            rpc = exchange.rpc(),
            device_id = tracing::field::Empty
        );
        let task = async move {
            use tokio_stream::StreamExt;
            let inbound = inbound.map(move |item| match item {
                Ok(message) => unwrap(message).map_err(|e| Status::from(&e)),
                Err(status) => Err(status),
            });
            let outcome = tokio::time::timeout(
                stream_timeout,
                core.run_exchange(exchange, peer, Box::pin(inbound), &tx),
            )
            .await
            .unwrap_or_else(|_| {
                Err(ServiceError::DeadlineExceeded(
                    "the stream exceeded its maximum duration".into(),
                ))
            });
            if let Err(e) = outcome {
                tracing::info!(error = %e, rpc = exchange.rpc(), "stream ended with an error");
                let _ = tx.send(Err(Status::from(&e))).await;
            }
            drop(slot);
            drop(timer);
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
        let stream = ReceiverStream::new(rx);
        let stream = tokio_stream::StreamExt::map(stream, move |item| item.map(wrap));
        Ok(Response::new(Box::pin(stream)))
    }
}

fn onboard_in(message: v1::OnboardRequest) -> Result<Incoming, ServiceError> {
    match message.msg {
        Some(v1::onboard_request::Msg::Hello(hello)) => Ok(Incoming::Hello {
            device_id: hello.device_id,
            epk: hello.epk,
            target_slot: 0,
        }),
        Some(v1::onboard_request::Msg::Proof(proof)) => Ok(Incoming::Proof(proof)),
        None => Err(ServiceError::Protocol(
            "an OnboardRequest must set hello or proof".into(),
        )),
    }
}

fn onboard_out(message: Outgoing) -> v1::OnboardResponse {
    use v1::onboard_response::Msg;
    v1::OnboardResponse {
        msg: Some(match message {
            Outgoing::Challenge(c) => Msg::Challenge(c),
            Outgoing::Credentials(c) => Msg::Credentials(*c),
            Outgoing::Refusal(r) => Msg::Refusal(r),
        }),
    }
}

fn renew_in(message: v1::RenewRequest) -> Result<Incoming, ServiceError> {
    match message.msg {
        Some(v1::renew_request::Msg::Hello(hello)) => Ok(Incoming::Hello {
            device_id: hello.device_id,
            epk: hello.epk,
            target_slot: hello.target_key_slot,
        }),
        Some(v1::renew_request::Msg::Proof(proof)) => Ok(Incoming::Proof(proof)),
        None => Err(ServiceError::Protocol(
            "a RenewRequest must set hello or proof".into(),
        )),
    }
}

fn renew_out(message: Outgoing) -> v1::RenewResponse {
    use v1::renew_response::Msg;
    v1::RenewResponse {
        msg: Some(match message {
            Outgoing::Challenge(c) => Msg::Challenge(c),
            Outgoing::Credentials(c) => Msg::Credentials(*c),
            Outgoing::Refusal(r) => Msg::Refusal(r),
        }),
    }
}

#[tonic::async_trait]
impl DeviceEnrollment for DeviceService {
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let _timer = self.core.metrics.clone().time("register");
        let request = request.into_inner();
        let verified = verify_registration(
            &request.epk,
            &request.proof_signature,
            &request.claimed_device_id,
            request.context.as_ref(),
            &request.proof_context,
        )
        .map_err(|problem| match problem {
            RegistrationProblem::Field(field, message) => ServiceError::invalid(field, message),
            RegistrationProblem::BadSignature => {
                ServiceError::Unauthenticated("proof_signature does not verify under epk".into())
            }
        })?;
        let actor = format!("device:{}", verified.device_id);
        let correlation = random_hex(12)?;
        let (device, newly) = self.core.register(&verified, &actor, &correlation).await?;
        tracing::info!(device_id = %verified.device_id, newly, "register");
        Ok(Response::new(v1::RegisterResponse {
            device_id: device.device_id,
            newly_registered: newly,
            registered_at: device.registration.map(|r| timestamp(r.registered_at)),
        }))
    }

    type OnboardStream = ResponseStream<v1::OnboardResponse>;

    async fn onboard(
        &self,
        request: Request<Streaming<v1::OnboardRequest>>,
    ) -> Result<Response<Self::OnboardStream>, Status> {
        self.start(request, Exchange::Onboard, onboard_in, onboard_out)
    }

    type RenewStream = ResponseStream<v1::RenewResponse>;

    async fn renew(
        &self,
        request: Request<Streaming<v1::RenewRequest>>,
    ) -> Result<Response<Self::RenewStream>, Status> {
        self.start(
            request,
            Exchange::Renew { target_slot: 0 },
            renew_in,
            renew_out,
        )
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let _timer = self.core.metrics.clone().time("status");
        let request = request.into_inner();
        let device_id = parse_device_id("device_id", &request.device_id)?.to_string();
        if !request.serial.is_empty()
            && (request.serial.len() > 40
                || !request
                    .serial
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(ServiceError::invalid(
                "serial",
                "must be lowercase hex, at most 40 characters",
            )
            .into());
        }
        Ok(Response::new(
            self.core.device_status(&device_id, &request.serial)?,
        ))
    }
}

impl Enrollment {
    /// What a device should do next.
    ///
    /// # Errors
    /// Registry failures.
    pub fn device_status(
        &self,
        device_id: &str,
        presented_serial: &str,
    ) -> Result<v1::StatusResponse, ServiceError> {
        use v1::DeviceStatus as S;
        let now = OffsetDateTime::now_utc();
        let mut response = v1::StatusResponse {
            device_id: device_id.to_owned(),
            next_check_after: Some(timestamp(now + time::Duration::hours(1))),
            ..v1::StatusResponse::default()
        };
        let Some(device) = self.registry.device(device_id)? else {
            response.status = S::NotRegistered as i32;
            return Ok(response);
        };
        let batch = match &device.batch_id {
            Some(id) => self.registry.batch(id)?,
            None => None,
        };
        let policy = match &batch {
            Some(b) => self.registry.policy(&b.owner, &b.policy_name)?,
            None => None,
        };
        if let Some(policy) = &policy {
            response.policy_kind = policy.kind() as i32;
        }
        let credential = match &device.current_serial {
            Some(serial) => self.registry.credential(serial)?,
            None => None,
        };
        if let Some(c) = &credential {
            response.serial.clone_from(&c.serial);
            response.key_slot = u32::from(c.key_slot);
            response.not_after = Some(timestamp(c.not_after));
            response.renew_after = c.renew_after.map(timestamp);
            if let Some(renew_after) = c.renew_after
                && renew_after > now
            {
                response.next_check_after =
                    Some(timestamp(renew_after.min(now + time::Duration::hours(24))));
            }
        }
        let status = match device.state() {
            DeviceState::Revoked => S::Revoked,
            DeviceState::AwaitingRegistration => S::NotRegistered,
            DeviceState::Unassigned | DeviceState::Ready => {
                response.onboarding_ready = policy.is_some();
                S::NotOnboarded
            }
            DeviceState::ReonboardPending => S::PolicyChanged,
            DeviceState::Onboarded => match &credential {
                Some(c) if !presented_serial.is_empty() && presented_serial != c.serial => {
                    S::PolicyChanged
                }
                Some(c)
                    if policy
                        .as_ref()
                        .is_some_and(|p| p.name != c.policy_name || p.owner != c.owner) =>
                {
                    S::PolicyChanged
                }
                Some(c) if now >= c.not_after || c.renew_after.is_some_and(|r| now >= r) => {
                    S::RenewalDue
                }
                Some(_) => S::Enrolled,
                None => S::NotOnboarded,
            },
        };
        response.status = status as i32;
        Ok(response)
    }
}
