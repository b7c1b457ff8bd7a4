//! CheckFirmware and ReportFirmware: a device meets the staged rollouts of its owner
//! ([`crate::firmware::rollout`]).
//!
//! ```text
//!  CheckFirmware (signed, purpose "firmware check") ─▶ the device's owner, policy and batch ─▶
//!      the newest rollout of that policy (and batch) not aborted ─▶ offers it? (standing,
//!      cohort < stage %, no report yet) ─▶ the release: image, manifest, signature, signer chain
//!  ReportFirmware (signed, purpose "firmware report": rollout, outcome, running measurement)
//!      ─▶ one report per device, counted by the store ─▶ a failure that halts the rollout is
//!      recorded once (audited firmware.rollout.halt)
//! ```
//!
//! Both answer to the same signed-request rules as Status (`status.rs`): the same challenge,
//! the same keys, one answer for any proof that does not verify; each is signed over its own
//! attestation purpose, so neither a status proof nor the other request's can stand for it.

use rot_core::FirmwareMeasurement;
use rot_core::attestation::{self, FirmwareRequest};
use rot_core::keys::DeviceId;
use time::OffsetDateTime;

use oxroot_proto::v1;

use super::status::{challenge, verify_signed_request};
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::firmware::rollout::{self, RolloutStanding, RolloutState};
use crate::model::{DeviceRecord, RolloutRecord, RolloutReportRecord};
use crate::service::{ServiceCore, check_rollout_id, parse_device_id, random_hex};
use crate::store::{Change, Conflict, Op, StoreError, commit, owner_rollouts};

/// Most characters of a device's failure reason.
const MAX_REASON_CHARS: usize = 200;
/// How often recording a halt re-reads a rollout an operator changed meanwhile.
const HALT_ATTEMPTS: usize = 4;

fn proof_required() -> ServiceError {
    ServiceError::invalid(
        "proof",
        "is required: sign a StatusChallenge (Status without a proof gives one)",
    )
}

/// Answers CheckFirmware.
///
/// # Errors
/// As a signed Status request; internal when a stored image no longer matches its record.
pub(crate) async fn check(
    core: &ServiceCore,
    peer: Option<std::net::IpAddr>,
    request: &v1::CheckFirmwareRequest,
) -> Result<v1::CheckFirmwareResponse, ServiceError> {
    let device_id = parse_device_id("device_id", &request.device_id)?;
    let proof = request.proof.as_ref().ok_or_else(proof_required)?;
    verify_signed_request(core, peer, &device_id, &request.serial, proof, |s, c| {
        attestation::firmware_request_message(s, c, &FirmwareRequest::Check)
    })
    .await?;
    let offer = match governing_rollout(core, &device_id).await? {
        Some(rollout) if rollout.offers(&device_id) => {
            let reported = core
                .registry
                .rollout_report(&rollout.owner, &rollout.id, &device_id)
                .await?;
            match reported {
                Some(_) => None,
                None => Some(offer_of(core, &rollout).await?),
            }
        }
        _ => None,
    };
    if let Some(offer) = &offer {
        tracing::info!(%device_id, rollout = %offer.rollout_id, version = %offer.version, "firmware offered");
    }
    Ok(v1::CheckFirmwareResponse {
        offer,
        challenge: Some(challenge(core, &device_id)?),
    })
}

/// The rollout that decides what `device_id` is offered: of its owner's rollouts for its
/// policy (and its batch, for a rollout limited to one), the newest not aborted. An older one
/// is never offered beside it: its image would take devices back.
async fn governing_rollout(
    core: &ServiceCore,
    device_id: &DeviceId,
) -> Result<Option<RolloutRecord>, ServiceError> {
    let Some(device) = core.registry.device(device_id).await? else {
        return Ok(None);
    };
    let (Some(owner), Some(batch_id)) = (&device.owner, &device.batch_id) else {
        return Ok(None);
    };
    if device.revocation.is_some() {
        return Ok(None);
    }
    let Some(batch) = core.registry.batch(batch_id).await? else {
        return Ok(None);
    };
    let governing = owner_rollouts(core.registry.as_ref(), owner)
        .await?
        .into_iter()
        .filter(|rollout| {
            rollout.policy_name == batch.policy_name
                && rollout.batch_id.as_ref().is_none_or(|b| b == batch_id)
                && rollout.state != RolloutState::Aborted
        })
        .max_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(governing)
}

/// The release a rollout offers, checked against its record: a stored image that no longer
/// hashes to the measurement the manifest names is never sent.
async fn offer_of(
    core: &ServiceCore,
    rollout: &RolloutRecord,
) -> Result<v1::FirmwareOffer, ServiceError> {
    let (owner, name, version) = (
        &rollout.owner,
        &rollout.firmware_name,
        &rollout.firmware_version,
    );
    let missing = || ServiceError::Internal(format!("firmware {owner}/{name} {version} is gone"));
    let record = core
        .registry
        .firmware(owner, name, version)
        .await?
        .ok_or_else(missing)?;
    let image = core
        .registry
        .firmware_image(owner, name, version)
        .await?
        .ok_or_else(missing)?;
    if FirmwareMeasurement::of_image(&image).to_string() != record.measurement {
        return Err(ServiceError::Internal(format!(
            "the stored image of firmware {owner}/{name} {version} does not match its record"
        )));
    }
    let signer =
        core.registry.firmware_signer(owner).await?.ok_or_else(|| {
            ServiceError::Internal(format!("owner {owner} has no firmware signer"))
        })?;
    Ok(v1::FirmwareOffer {
        rollout_id: rollout.id.clone(),
        name: record.name,
        version: record.version,
        security_counter: record.security_counter,
        measurement: record.measurement,
        image,
        manifest: hex::decode(&record.manifest_hex).unwrap_or_default(),
        manifest_signature: hex::decode(&record.manifest_signature_hex).unwrap_or_default(),
        signer_chain_pem: format!("{}{}", signer.certificate_pem, signer.chain_pem),
    })
}

/// Answers ReportFirmware.
///
/// # Errors
/// As a signed Status request; NOT_FOUND for a rollout the device was not offered;
/// ALREADY_EXISTS for a second report.
pub(crate) async fn report(
    core: &ServiceCore,
    peer: Option<std::net::IpAddr>,
    request: &v1::ReportFirmwareRequest,
) -> Result<v1::ReportFirmwareResponse, ServiceError> {
    let device_id = parse_device_id("device_id", &request.device_id)?;
    let proof = request.proof.as_ref().ok_or_else(proof_required)?;
    check_rollout_id("rollout_id", &request.rollout_id)?;
    let running = <[u8; 32]>::try_from(request.running_measurement.as_slice())
        .map(FirmwareMeasurement::from_digest)
        .map_err(|_| ServiceError::invalid("running_measurement", "must be 32 bytes (SHA-256)"))?;
    if let Some(problem) = crate::text::problem(&request.reason, MAX_REASON_CHARS) {
        return Err(ServiceError::invalid("reason", problem));
    }
    let report_request = FirmwareRequest::Report {
        rollout_id: request.rollout_id.as_bytes(),
        installed: request.installed,
        running: &running,
    };
    verify_signed_request(core, peer, &device_id, &request.serial, proof, |s, c| {
        attestation::firmware_request_message(s, c, &report_request)
    })
    .await?;
    let not_offered = || {
        ServiceError::NotFound(format!(
            "rollout {} offered to device {device_id}",
            request.rollout_id
        ))
    };
    let device = core
        .registry
        .device(&device_id)
        .await?
        .ok_or_else(not_offered)?;
    let owner = device.owner.clone().ok_or_else(not_offered)?;
    let policy = match &device.batch_id {
        Some(batch_id) => core.registry.batch(batch_id).await?.map(|b| b.policy_name),
        None => None,
    };
    let rollout = core
        .registry
        .rollout(&owner, &request.rollout_id)
        .await?
        .filter(|r| policy.as_deref() == Some(r.policy_name.as_str()) && was_offered(r, &device))
        .ok_or_else(not_offered)?;
    let now = OffsetDateTime::now_utc();
    let report = RolloutReportRecord {
        device_id: device_id.to_string(),
        installed: request.installed,
        reason: request.reason.clone(),
        running_measurement: running.to_string(),
        reported_at: now,
    };
    let subject = format!("device:{device_id}");
    let mut change = Change::new();
    change
        .op(Op::ReportRollout {
            owner: owner.clone(),
            rollout_id: rollout.id.clone(),
            report: Box::new(report),
        })
        .audit(
            AuditDraft::new(
                now,
                subject.clone(),
                owner.clone(),
                "firmware.report",
                subject,
                if request.installed { "ok" } else { "failed" },
            )
            .detail("rollout", rollout.id.clone())
            .detail(
                "firmware",
                format!("{} {}", rollout.firmware_name, rollout.firmware_version),
            )
            .detail("running_measurement", running.to_string())
            .detail("reason", request.reason.clone())
            .correlation(&random_hex(12)?),
        );
    match commit(core.registry.as_ref(), change).await {
        Ok(_) => {}
        Err(StoreError::Conflict(Conflict::RolloutReported { .. })) => {
            return Err(ServiceError::AlreadyExists(format!(
                "device {device_id} reported rollout {} before; a device reports a rollout once",
                rollout.id
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(%device_id, rollout = %rollout.id, installed = request.installed, "firmware report");
    if !request.installed {
        // Best effort: the report is recorded; the halt is visible in the rollout's standing
        // at once, its audit entry follows here (or at the next failure).
        if let Err(e) = record_halt(core, &owner, &rollout.id).await {
            tracing::warn!(rollout = %rollout.id, error = %e, "rollout halt not recorded");
        }
    }
    Ok(v1::ReportFirmwareResponse {
        challenge: Some(challenge(core, &device_id)?),
    })
}

/// Whether `rollout`, read under `device`'s owner, was ever offered to it (its batch is of the
/// rollout's policy): its batch, and a cohort inside the current stage (stages only grow, so
/// inside the current one means offered at some point).
fn was_offered(rollout: &RolloutRecord, device: &DeviceRecord) -> bool {
    rollout
        .batch_id
        .as_ref()
        .is_none_or(|b| device.batch_id.as_ref() == Some(b))
        && rollout::cohort(&rollout.id, &device.device_id) < rollout.stages().percent()
}

/// Records, once per threshold, that failures halted a rollout: the record says so and the
/// audit log has a `firmware.rollout.halt` entry naming the counts.
async fn record_halt(core: &ServiceCore, owner: &str, id: &str) -> Result<(), ServiceError> {
    for _ in 0..HALT_ATTEMPTS {
        let Some(rollout) = core.registry.rollout(owner, id).await? else {
            return Ok(());
        };
        if rollout.standing() != RolloutStanding::Halted || rollout.halt_recorded {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        let mut change = Change::new();
        change
            .op(Op::PutRollout(Box::new(RolloutRecord {
                halt_recorded: true,
                ..rollout.clone()
            })))
            .audit(
                AuditDraft::new(
                    now,
                    "system",
                    owner,
                    "firmware.rollout.halt",
                    format!("rollout:{owner}/{id}"),
                    "ok",
                )
                .detail("failed", rollout.outcomes.failed.to_string())
                .detail("installed", rollout.outcomes.installed.to_string())
                .detail("failure_threshold", rollout.failure_threshold.to_string())
                .correlation(&random_hex(12)?),
            );
        match commit(core.registry.as_ref(), change).await {
            Ok(_) => {
                tracing::warn!(%owner, rollout = %id, failed = rollout.outcomes.failed, "rollout halted by failures");
                return Ok(());
            }
            Err(StoreError::Conflict(Conflict::RolloutChanged { .. })) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
