//! The two decisions of an exchange, pure: is this device eligible for a challenge (at the
//! Hello, and again under its lock before a certificate is signed), and does this proof answer
//! the stream's challenge. The stream driver reads the registry and the challenge book first
//! and hands the facts in; nothing here does I/O, so every refusal is table-tested below.

use std::time::Duration;

use rot_core::attestation::{self, ChallengeContext, ChallengeKind, SignerRole};
use rot_core::keys::{DeviceId, KeySlot, PublicKey};

use oxroot_proto::v1;

use super::refusal::Refusal;
use super::registration::{parse_public_key, verify_signature};
use crate::error::ServiceError;
use crate::model::{BatchRecord, DeviceRecord, OwnerRecord, RefusalDetail};
use crate::policy::PolicySpec;
use crate::service::ForeignChallenge;

/// Onboard or Renew, with the renew target slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exchange {
    Onboard,
    Renew { target_slot: u32 },
}

impl Exchange {
    pub(crate) fn kind(self) -> ChallengeKind {
        match self {
            Self::Onboard => ChallengeKind::Onboarding,
            Self::Renew { .. } => ChallengeKind::Renewal,
        }
    }

    pub(crate) fn rpc(self) -> &'static str {
        match self {
            Self::Onboard => "onboard",
            Self::Renew { .. } => "renew",
        }
    }
}

/// What the registry says about a device, read before deciding.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeviceFacts {
    /// The device's record.
    pub(crate) device: Option<DeviceRecord>,
    /// The device's batch and that batch's policy, if both exist.
    pub(crate) placement: Option<(BatchRecord, PolicySpec)>,
    /// The key slot of the device's current credential, if it has one on record.
    pub(crate) current_slot: Option<u8>,
    /// The batch owner's record (its CAs), read with the rest so that issuing needs no
    /// further read.
    pub(crate) owner: Option<OwnerRecord>,
}

/// Everything the eligibility check established.
#[derive(Clone, Debug)]
pub(crate) struct Eligible {
    pub(crate) device: DeviceRecord,
    pub(crate) batch: BatchRecord,
    pub(crate) policy: PolicySpec,
    pub(crate) slot: KeySlot,
    /// The policy owner's record as read with the device, if it exists.
    pub(crate) owner: Option<OwnerRecord>,
}

/// Whether `device_id` may get a challenge for `exchange` with `epk`, and on which key slot.
/// `admit` counts the challenge against the device's rate limit; it is asked only once the
/// Hello is known to name its own key, so a stranger's Hello spends nothing.
pub(crate) fn check_eligible(
    exchange: Exchange,
    device_id: &DeviceId,
    epk: &PublicKey,
    admit: impl FnOnce() -> Result<(), Duration>,
    facts: DeviceFacts,
) -> Result<Eligible, Refusal> {
    use RefusalDetail as D;
    if DeviceId::from_public_key(epk) != *device_id {
        return Err(D::DeviceIdMismatch.into());
    }
    if let Err(wait) = admit() {
        return Err(Refusal {
            detail: D::RateLimited,
            retry_after: Some(wait),
        });
    }
    let Some(device) = facts.device else {
        return Err(D::Unregistered.into());
    };
    let Some(registration) = &device.registration else {
        return Err(D::Unregistered.into());
    };
    if registration.epk != *epk {
        return Err(D::DeviceIdMismatch.into());
    }
    if device.revocation.is_some() {
        return Err(D::Revoked.into());
    }
    if matches!(exchange, Exchange::Renew { .. }) && device.current_serial.is_none() {
        return Err(D::NotOnboarded.into());
    }
    let Some(batch_id) = &device.batch_id else {
        return Err(D::NotInBatch.into());
    };
    let Some((batch, policy)) = facts.placement.filter(|(b, _)| b.batch_id == *batch_id) else {
        return Err(D::NotInBatch.into());
    };
    // A device moved since its credential was issued renews on the slot the move chose (the
    // next slot after a change of owner), never back onto the old owner's key.
    let moved = device.credential_assignment != Some(device.assignment);
    let slot_number = match exchange {
        Exchange::Onboard => u32::from(device.key_slot),
        Exchange::Renew { target_slot } if moved => {
            if target_slot != 0 && target_slot != u32::from(device.key_slot) {
                return Err(D::KeySlotUnavailable.into());
            }
            u32::from(device.key_slot)
        }
        Exchange::Renew { target_slot: 0 } => {
            u32::from(facts.current_slot.unwrap_or(device.key_slot))
        }
        Exchange::Renew { target_slot } => target_slot,
    };
    let slot = u8::try_from(slot_number).ok().and_then(KeySlot::new);
    let Some(slot) = slot.filter(|s| !device.retired_slots.contains(&s.get())) else {
        return Err(D::KeySlotUnavailable.into());
    };
    Ok(Eligible {
        device,
        batch,
        policy,
        slot,
        owner: facts.owner,
    })
}

/// The challenge a stream issued.
#[derive(Clone, Debug)]
pub(crate) struct IssuedChallenge {
    pub(crate) id: [u8; 16],
    pub(crate) nonce: [u8; 32],
    pub(crate) slot: KeySlot,
    pub(crate) expires: tokio::time::Instant,
}

/// What the challenge book said when the proof arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChallengeStanding {
    /// The stream's own challenge was live until this proof spent it.
    pub(crate) fresh: bool,
    /// The proof names another challenge: what the book knows of it.
    pub(crate) foreign: Option<ForeignChallenge>,
    /// The proof came after the challenge's expiry.
    pub(crate) expired: bool,
}

/// Refuses a proof whose signatures are not 64 bytes: a malformed request, not a failed proof.
pub(crate) fn check_proof_shape(proof: &v1::Proof) -> Result<(), ServiceError> {
    for (field, signature) in [
        ("proof.esk_signature", &proof.esk_signature),
        ("proof.dpk_signature", &proof.dpk_signature),
    ] {
        if signature.len() != 64 {
            return Err(ServiceError::invalid(field, "must be 64 bytes (r || s)"));
        }
    }
    Ok(())
}

/// Checks a proof against the stream's challenge; returns the proved DPK.
pub(crate) fn check_proof(
    exchange: Exchange,
    device_id: &DeviceId,
    epk: &PublicKey,
    eligible: &Eligible,
    challenge: &IssuedChallenge,
    standing: ChallengeStanding,
    proof: &v1::Proof,
) -> Result<PublicKey, Refusal> {
    use RefusalDetail as D;
    if let Some(foreign) = standing.foreign {
        return Err(match foreign {
            ForeignChallenge::Spent => D::NonceReplayed,
            ForeignChallenge::Foreign => D::NonceForeign,
        }
        .into());
    }
    if !standing.fresh {
        return Err(D::NonceReplayed.into());
    }
    if standing.expired {
        return Err(D::NonceExpired.into());
    }
    if proof.key_slot != u32::from(challenge.slot.get()) {
        return Err(D::SlotMismatch.into());
    }
    let Some(dpk) = parse_public_key(&proof.dpk) else {
        return Err(D::DpkMismatch.into());
    };
    // The enrolment key proves identity only; it is never certified.
    if dpk == *epk {
        return Err(D::DpkMismatch.into());
    }
    if eligible
        .device
        .slot_keys
        .get(&challenge.slot.get())
        .is_some_and(|known| *known != dpk)
    {
        return Err(D::DpkMismatch.into());
    }
    let context = ChallengeContext {
        device_id,
        challenge_id: &challenge.id,
        nonce: &challenge.nonce,
        dpk: &dpk,
        key_slot: challenge.slot,
    };
    let kind = exchange.kind();
    // A 16-byte challenge id always fits the message format; a failure to build it can only
    // mean the proof cannot be checked, which is a failed proof.
    let verified = |role, key: &PublicKey, signature: &[u8]| {
        attestation::challenge_message(kind, role, &context)
            .is_ok_and(|message| verify_signature(key, message.as_bytes(), signature))
    };
    if !verified(SignerRole::EnrolmentKey, epk, &proof.esk_signature) {
        return Err(D::BadEskSignature.into());
    }
    if !verified(SignerRole::DeviceKey, &dpk, &proof.dpk_signature) {
        return Err(D::BadDskSignature.into());
    }
    Ok(dpk)
}

#[cfg(test)]
mod tests;
