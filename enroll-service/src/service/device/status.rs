//! Status: what a device should do next, told only to the device itself.
//!
//! ```text
//!  no proof ──▶ PROOF_REQUIRED + a StatusChallenge           (the same for every DeviceId)
//!  proof ─────▶ challenge: well formed, not expired ─▶ the key on record: the EPK (slot 0), or
//!               the DPK of the credential `serial` names (slot 1..7) ─▶ verify ─▶ spend the
//!               challenge ─▶ the status and a new challenge
//!               (a device key's proof: the credentials its credential superseded are revoked)
//! ```
//!
//! A refused proof gets one answer whatever was wrong with it (an unknown DeviceId, a serial
//! that is not the device's, a bad signature), and always after one signature verification:
//! the answer does not tell a scanner whether a DeviceId is registered, and its time differs
//! only by a record read (microseconds), behind a per-address budget of signed requests.

use rot_core::attestation::{self, StatusContext, StatusSigner};
use rot_core::keys::{DeviceId, KeySlot, PublicKey};
use time::OffsetDateTime;

use oxroot_proto::v1;

use super::registration::verify_signature;
use crate::error::ServiceError;
use crate::model::{CredentialStatus, DeviceState};
use crate::pki::Serial;
use crate::service::{ServiceCore, StatusChallengeProblem, parse_device_id, random_hex, supersede};
use crate::wire::{duration, timestamp};

/// Longest serial a device may name (the contract's 40 lowercase hex characters).
const MAX_SERIAL: usize = 40;

/// Checks a serial field a device sent: empty, or lowercase hex of at most 40 characters.
///
/// # Errors
/// [`ServiceError::InvalidArgument`] naming `field`.
pub(crate) fn check_serial(field: &str, serial: &str) -> Result<(), ServiceError> {
    let well_formed = serial.len() <= MAX_SERIAL
        && serial
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if well_formed {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            "must be lowercase hex, at most 40 characters",
        ))
    }
}

/// Answers a Status request: a challenge without a proof, the device's status with one.
///
/// # Errors
/// INVALID_ARGUMENT for malformed fields, UNAUTHENTICATED for a proof that is not accepted,
/// RESOURCE_EXHAUSTED when `peer` sent too many signed requests, registry failures.
pub(crate) async fn answer(
    core: &ServiceCore,
    peer: Option<std::net::IpAddr>,
    request: &v1::StatusRequest,
) -> Result<v1::StatusResponse, ServiceError> {
    let device_id = parse_device_id("device_id", &request.device_id)?;
    let Some(proof) = &request.proof else {
        // Nothing about the device: only what the caller sent, and a random challenge. The
        // serial is checked as a signed request's is (verify_signed_request).
        check_serial("serial", &request.serial)?;
        return Ok(v1::StatusResponse {
            device_id: device_id.to_string(),
            status: v1::DeviceStatus::ProofRequired as i32,
            challenge: Some(challenge(core, &device_id)?),
            ..v1::StatusResponse::default()
        });
    };
    let signer = verify_signed_request(
        core,
        peer,
        &device_id,
        &request.serial,
        proof,
        attestation::status_message,
    )
    .await?;
    let mut response = device_status(core, &device_id, &request.serial).await?;
    response.challenge = Some(challenge(core, &device_id)?);
    // Signed with the key of the credential it names: the device uses that credential, so the
    // ones a renewal replaced before it are no longer needed.
    if let StatusSigner::DeviceKey(_) = signer
        && let Ok(serial) = request.serial.parse::<Serial>()
    {
        // Best effort: the device asked for its status, which needs no CA; a revocation that
        // fails here (its issuer's key store away) is left to the grace sweep.
        if let Err(e) =
            supersede::successor_proved(core, &device_id, serial, "status", &random_hex(12)?).await
        {
            tracing::warn!(%device_id, error = %e, "superseded credentials not revoked after a status proof");
        }
    }
    Ok(response)
}

/// Verifies a signed request of `device_id` (Status, CheckFirmware, ReportFirmware): the
/// status challenge it answers, the key on record for the signer it names, the signature over
/// the message `message_of` builds, and spends the challenge. Returns which key signed.
///
/// # Errors
/// INVALID_ARGUMENT for malformed fields, UNAUTHENTICATED for a proof that is not accepted (one
/// answer whatever was wrong), RESOURCE_EXHAUSTED when `peer` sent too many signed requests,
/// registry failures.
pub(crate) async fn verify_signed_request(
    core: &ServiceCore,
    peer: Option<std::net::IpAddr>,
    device_id: &DeviceId,
    serial: &str,
    proof: &v1::StatusProof,
    message_of: impl FnOnce(
        StatusSigner,
        &StatusContext<'_>,
    ) -> Result<attestation::Message, attestation::ContextTooLong>,
) -> Result<StatusSigner, ServiceError> {
    check_serial("serial", serial)?;
    let signer = proof_signer(proof, serial)?;
    core.limits().admit_status_proof(peer)?;
    let (challenge_id, nonce) = core
        .status_challenges
        .nonce_of(device_id, &proof.challenge_id)
        .map_err(|problem| match problem {
            StatusChallengeProblem::Malformed => {
                ServiceError::invalid("proof.challenge_id", "must be 16 bytes")
            }
            StatusChallengeProblem::Expired => ServiceError::Unauthenticated(
                "the status challenge expired (or another service process made it); ask for a \
                 new one"
                    .into(),
            ),
        })?;
    let key = key_on_record(core, device_id, signer, serial).await?;
    let context = StatusContext {
        device_id,
        challenge_id: &challenge_id,
        nonce: &nonce,
        serial: serial.as_bytes(),
    };
    let message = message_of(signer, &context)
        .map_err(|_| ServiceError::invalid("serial", "must be at most 40 characters"))?;
    // One verification whatever was found, against a key nobody holds when nothing was.
    let verifies = verify_signature(
        key.as_ref().unwrap_or(core.status_challenges.decoy()),
        message.as_bytes(),
        &proof.signature,
    );
    if !(verifies && key.is_some()) {
        return Err(ServiceError::Unauthenticated(
            "the status proof does not verify".into(),
        ));
    }
    if !core.challenges.spend(&challenge_id) {
        return Err(ServiceError::Unauthenticated(
            "the status challenge was already used; ask for a new one".into(),
        ));
    }
    Ok(signer)
}

/// Which key the proof says signed, checked against the request's shape.
fn proof_signer(proof: &v1::StatusProof, serial: &str) -> Result<StatusSigner, ServiceError> {
    if proof.signature.len() != 64 {
        return Err(ServiceError::invalid(
            "proof.signature",
            "must be 64 bytes (r || s)",
        ));
    }
    if proof.key_slot == 0 {
        return Ok(StatusSigner::EnrolmentKey);
    }
    let slot = u8::try_from(proof.key_slot)
        .ok()
        .and_then(KeySlot::new)
        .ok_or_else(|| {
            ServiceError::invalid(
                "proof.key_slot",
                "must be 0 (enrolment key) or a key slot 1..7",
            )
        })?;
    if serial.is_empty() {
        return Err(ServiceError::invalid(
            "serial",
            "is required when a device key signs: it names the credential whose key signs",
        ));
    }
    Ok(StatusSigner::DeviceKey(slot))
}

/// The public key a proof by `signer` must verify under: the registered EPK, or the DPK of the
/// device's credential `serial` names on the slot the proof gives. `None` when there is none.
async fn key_on_record(
    core: &ServiceCore,
    device_id: &DeviceId,
    signer: StatusSigner,
    serial: &str,
) -> Result<Option<PublicKey>, ServiceError> {
    match signer {
        StatusSigner::EnrolmentKey => Ok(core
            .registry
            .device(device_id)
            .await?
            .and_then(|device| device.registration)
            .map(|registration| registration.epk)),
        StatusSigner::DeviceKey(slot) => {
            let Ok(serial) = serial.parse::<Serial>() else {
                return Ok(None);
            };
            // Only a key that still counts: a credential of this device on that slot, not
            // revoked, not expired, of the device's current owner, on a slot not retired (a
            // transfer retires the old owner's slots). A revoked device still hears its state
            // through its enrolment key.
            let device = core.registry.device(device_id).await?;
            let now = OffsetDateTime::now_utc();
            Ok(core
                .registry
                .credential(serial)
                .await?
                .filter(|c| {
                    c.device_id == *device_id
                        && c.key_slot == slot.get()
                        && c.status != CredentialStatus::Revoked
                        && now < c.not_after
                        && device.as_ref().is_some_and(|d| {
                            d.owner.as_deref() == Some(c.owner.as_str())
                                && !d.retired_slots.contains(&slot.get())
                        })
                })
                .map(|c| c.dpk))
        }
    }
}

/// A fresh status challenge for `device_id`, as sent.
pub(crate) fn challenge(
    core: &ServiceCore,
    device_id: &DeviceId,
) -> Result<v1::StatusChallenge, ServiceError> {
    let issued = core
        .status_challenges
        .issue(device_id)
        .map_err(|_| ServiceError::Internal("system RNG failed".into()))?;
    Ok(v1::StatusChallenge {
        challenge_id: issued.id.to_vec(),
        nonce: issued.nonce.to_vec(),
        expires_at: Some(timestamp(OffsetDateTime::now_utc() + issued.expires_in)),
        expires_in: Some(duration(
            time::Duration::try_from(issued.expires_in).unwrap_or_default(),
        )),
    })
}

/// What a device should do next.
///
/// # Errors
/// Registry failures.
pub(crate) async fn device_status(
    core: &ServiceCore,
    device_id: &DeviceId,
    presented_serial: &str,
) -> Result<v1::StatusResponse, ServiceError> {
    use v1::DeviceStatus as S;
    let now = OffsetDateTime::now_utc();
    let mut response = v1::StatusResponse {
        device_id: device_id.to_string(),
        next_check_after: Some(timestamp(now + time::Duration::hours(1))),
        ..v1::StatusResponse::default()
    };
    let Some(device) = core.registry.device(device_id).await? else {
        response.status = S::NotRegistered as i32;
        return Ok(response);
    };
    let batch = match &device.batch_id {
        Some(id) => core.registry.batch(id).await?,
        None => None,
    };
    let policy = match &batch {
        Some(b) => core.registry.policy(&b.owner, &b.policy_name).await?,
        None => None,
    };
    if let Some(policy) = &policy {
        response.policy_kind = policy.kind() as i32;
    }
    let credential = match device.current_serial {
        Some(serial) => core.registry.credential(serial).await?,
        None => None,
    };
    if let Some(c) = &credential {
        response.serial = c.serial.to_string();
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
            // A device on a certificate a renewal replaced (it lost the renewal's answer and
            // fell back to --previous): renewing gets it the current one, which is not a
            // policy change.
            Some(c)
                if !presented_serial.is_empty()
                    && presented_serial != c.serial.to_string()
                    && still_superseded(core, device_id, presented_serial).await? =>
            {
                S::RenewalDue
            }
            Some(c) if !presented_serial.is_empty() && presented_serial != c.serial.to_string() => {
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

#[cfg(test)]
mod tests;

/// Whether `serial` names one of `device_id`'s credentials that a renewal superseded and that
/// is not revoked yet.
async fn still_superseded(
    core: &ServiceCore,
    device_id: &DeviceId,
    serial: &str,
) -> Result<bool, ServiceError> {
    let Ok(serial) = serial.parse::<Serial>() else {
        return Ok(false);
    };
    Ok(core
        .registry
        .credential(serial)
        .await?
        .is_some_and(|c| c.device_id == *device_id && c.status == CredentialStatus::Superseded))
}
