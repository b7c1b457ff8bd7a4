//! Registration: a device's EPK and its proof, from the device (Register) or from an operator's
//! offline import (ImportDevices). Both verify the same way and record the same way.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use rot_core::attestation;
use rot_core::keys::{DeviceId, PublicKey};
use time::OffsetDateTime;

use oxroot_proto::v1;

use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::{
    CountsDelta, DeviceEvent, DeviceEventKind, DeviceRecord, Registration, RegistrationMetadata,
};
use crate::service::locks::retry_device_changes;
use crate::service::{ServiceCore, parse_device_id};
use crate::store::{Change, Op, StoreError};

/// Limits of the registration metadata (see `RegistrationContext` in common.proto).
const MAX_CONTEXT_STRING: usize = 128;
const MAX_LABELS: usize = 16;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 256;

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
        if let Some(problem) = crate::text::problem(value, MAX_CONTEXT_STRING) {
            return Err((name.into(), problem));
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
        if let Some(problem) = crate::text::problem(value, MAX_LABEL_VALUE) {
            return Err((
                "context.labels".into(),
                format!("label {key:?}: value {problem}"),
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
pub(crate) fn parse_public_key(bytes: &[u8]) -> Option<PublicKey> {
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

/// Registers a verified EPK, or returns the existing registration (and `false`).
///
/// # Errors
/// Registry failures.
pub(crate) async fn register(
    core: &ServiceCore,
    registration: &VerifiedRegistration,
    actor: &str,
    correlation: &str,
) -> Result<(DeviceRecord, bool), ServiceError> {
    let _lock = core.device_locks.lock(&registration.device_id).await;
    let (device, newly) =
        retry_device_changes(|| register_once(core, registration, actor, correlation)).await?;
    if newly {
        core.metrics.registered();
    }
    Ok((device, newly))
}

/// One read of the device and, unless it is registered already, one commit.
async fn register_once(
    core: &ServiceCore,
    registration: &VerifiedRegistration,
    actor: &str,
    correlation: &str,
) -> Result<Result<(DeviceRecord, bool), StoreError>, ServiceError> {
    let id = registration.device_id;
    let now = OffsetDateTime::now_utc();
    let existing = core.registry.device(&id).await?;
    if let Some(device) = &existing
        && device.registration.is_some()
    {
        return Ok(Ok((device.clone(), false)));
    }
    let mut device = existing.unwrap_or_else(|| DeviceRecord::new(id));
    let before = device.state();
    device.registration = Some(Registration {
        epk: registration.epk,
        registered_at: now,
        proof_context_hex: hex::encode(&registration.proof_context),
        metadata: registration.metadata.clone(),
    });
    device.last_seen = Some(now);
    let mut change = Change::new();
    if let Some(batch_id) = &device.batch_id {
        let event = DeviceEvent::new(id, DeviceEventKind::Registered, now, correlation);
        change.batch_moved(
            batch_id,
            CountsDelta::transition(before, device.state()),
            Some(event),
        );
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
    Ok(core.registry.commit(change).await.map(|_| (device, true)))
}
