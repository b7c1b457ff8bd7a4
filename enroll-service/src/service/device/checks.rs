//! The two decisions of an exchange, pure: is this device eligible for a challenge (at the
//! Hello, and again under its lock before a certificate is signed), and does this proof answer
//! the stream's challenge. The stream driver reads the registry and the challenge book first
//! and hands the facts in; nothing here does I/O, so every refusal is table-tested below.

use std::time::Duration;

use rot_core::FirmwareMeasurement;
use rot_core::attestation::{
    self, ChallengeContext, ChallengeKind, FirmwareBinding, FirmwareSigner, SignerRole,
};
use rot_core::firmware::MEASUREMENT_BYTES;
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
            retry_after: Some(wait),
            ..D::RateLimited.into()
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

/// Refuses a proof whose signatures are not 64 bytes, or whose firmware fields have the wrong
/// lengths: a malformed request, not a failed proof.
pub(crate) fn check_proof_shape(proof: &v1::Proof) -> Result<(), ServiceError> {
    let mut signatures = vec![
        ("proof.esk_signature", &proof.esk_signature),
        ("proof.dpk_signature", &proof.dpk_signature),
    ];
    if let Some(firmware) = &proof.firmware {
        if firmware.measurement.len() != MEASUREMENT_BYTES {
            return Err(ServiceError::invalid(
                "proof.firmware.measurement",
                "must be 32 bytes (SHA-256 of the firmware image)",
            ));
        }
        if firmware.alias_public_key.len() != 65 {
            return Err(ServiceError::invalid(
                "proof.firmware.alias_public_key",
                "must be 65 bytes (P-256, SEC1 uncompressed)",
            ));
        }
        signatures.push(("proof.firmware.esk_signature", &firmware.esk_signature));
        signatures.push(("proof.firmware.alias_signature", &firmware.alias_signature));
    }
    for (field, signature) in signatures {
        if signature.len() != 64 {
            return Err(ServiceError::invalid(field, "must be 64 bytes (r || s)"));
        }
    }
    Ok(())
}

/// The firmware a device proved it runs, and the alias key bound to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FirmwareBound {
    /// SHA-256 of the image, signed by the ESK.
    pub(crate) measurement: FirmwareMeasurement,
    /// The alias key derived from the slot's seed and `measurement`, proved by its signature.
    pub(crate) alias_key: PublicKey,
}

/// The keys a verified proof established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProvedKeys {
    /// The DPK of the challenge's slot, proved by the DSK's signature. Recorded as the slot's
    /// key, and the key of the device's Status proofs, whichever key is certified.
    pub(crate) dpk: PublicKey,
    /// The firmware binding, when the device proved one: its alias key is then certified.
    pub(crate) firmware: Option<FirmwareBound>,
}

impl ProvedKeys {
    /// The key the certificate certifies: the alias key when firmware was proved, else the DPK.
    pub(crate) fn certified_key(&self) -> &PublicKey {
        self.firmware
            .as_ref()
            .map_or(&self.dpk, |firmware| &firmware.alias_key)
    }

    /// The firmware measurement the certificate names, if any.
    pub(crate) fn measurement(&self) -> Option<FirmwareMeasurement> {
        self.firmware.map(|firmware| firmware.measurement)
    }
}

/// Checks a proof against the stream's challenge and the firmware the policy accepts;
/// returns the keys it proved.
pub(crate) fn check_proof(
    exchange: Exchange,
    device_id: &DeviceId,
    epk: &PublicKey,
    eligible: &Eligible,
    challenge: &IssuedChallenge,
    standing: ChallengeStanding,
    proof: &v1::Proof,
) -> Result<ProvedKeys, Refusal> {
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
    let firmware = match &proof.firmware {
        Some(firmware) => Some(check_firmware(kind, epk, &context, firmware)?),
        None => None,
    };
    // The policy's firmware list is checked once the ESK has vouched for the measurement, so
    // that the audit entry naming it names what the chip itself claimed.
    let policy = &eligible.policy;
    match &firmware {
        None if policy.requires_firmware() => return Err(D::FirmwareNotMeasured.into()),
        Some(bound) if !policy.accepts_firmware(&bound.measurement) => {
            return Err(Refusal::firmware(D::FirmwareNotAccepted, bound.measurement));
        }
        _ => {}
    }
    Ok(ProvedKeys { dpk, firmware })
}

/// Checks a proof's firmware binding (its fields already well formed, see
/// [`check_proof_shape`]): the ESK vouches for the measurement and the alias key, and the
/// alias key proves possession, over the v2 message of the same challenge.
fn check_firmware(
    kind: ChallengeKind,
    epk: &PublicKey,
    context: &ChallengeContext<'_>,
    firmware: &v1::FirmwareProof,
) -> Result<FirmwareBound, Refusal> {
    use RefusalDetail as D;
    let digest: [u8; MEASUREMENT_BYTES] = firmware
        .measurement
        .as_slice()
        .try_into()
        .map_err(|_| Refusal::from(D::BadFirmwareSignature))?;
    let measurement = FirmwareMeasurement::from_digest(digest);
    let Some(alias_key) = parse_public_key(&firmware.alias_public_key) else {
        return Err(D::BadAliasKey.into());
    };
    // The alias key is its own key: never the identity key, never the slot's DPK.
    if alias_key == *epk || alias_key == *context.dpk {
        return Err(D::BadAliasKey.into());
    }
    let binding = FirmwareBinding {
        measurement: &measurement,
        alias_public_key: &alias_key,
    };
    let verified = |signer, key: &PublicKey, signature: &[u8]| {
        attestation::firmware_binding_message(kind, signer, context, &binding)
            .is_ok_and(|message| verify_signature(key, message.as_bytes(), signature))
    };
    if !verified(FirmwareSigner::EnrolmentKey, epk, &firmware.esk_signature) {
        return Err(D::BadFirmwareSignature.into());
    }
    if !verified(
        FirmwareSigner::AliasKey,
        &alias_key,
        &firmware.alias_signature,
    ) {
        return Err(D::BadAliasKey.into());
    }
    Ok(FirmwareBound {
        measurement,
        alias_key,
    })
}

#[cfg(test)]
mod tests;
