//! Superseded credentials: valid while the device may still need them, revoked once it does not.
//!
//! ```text
//!  Renew / Onboard replaces credential A by B ─▶ A SUPERSEDED, revocation scheduled at now + grace
//!  the device proves it uses B:
//!    Renew naming B (RenewHello.serial) with B's slot ─┐
//!    Status signed by B's device key ──────────────────┴─▶ A (and anything older) revoked at once
//!  nobody proves anything ─▶ sweep: A revoked when its grace ends
//! ```
//!
//! A renewal never revokes the credential it replaces: the device may not have stored the new
//! one (a lost response) and still connects with the old one (`device-agent connect
//! --previous`). Only the device can show it has moved on, by using the successor's key and
//! naming the successor's serial; or the policy's `superseded_grace` ends. Either way the
//! credential goes on the CRL of the CA that issued it, reason superseded, and the audit log of
//! its owner says why. Revocation and the end of the schedule are one durable change, so the
//! sweep can run any number of times, on any number of processes: a credential that is no
//! longer superseded (revoked by an operator, or already by a proof) only has its schedule
//! dropped. CRLs are re-signed by the CRL refresher and by GetCrl, which sign whenever a
//! revoked serial is not on the current CRL yet.

use std::sync::Arc;

use rot_core::keys::DeviceId;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::{CredentialRecord, CredentialStatus, CrlEntryRecord, DeviceRecord};
use crate::pki::{PLATFORM_OWNER, RevocationReason, Serial};
use crate::service::ServiceCore;
use crate::service::locks::retry_device_changes;
use crate::store::{Change, Op};

/// Most scheduled revocations one pass of the sweep reads at a time.
const SWEEP_PAGE: usize = 256;

/// Why superseded credentials are revoked now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause<'a> {
    /// The device proved it uses this later credential, in this RPC.
    SuccessorProved { successor: Serial, rpc: &'a str },
    /// The policy's grace ended.
    GraceEnded,
}

/// What proving `successor` retires: every credential of `device` issued before it that a
/// renewal superseded and nothing revoked yet. Nothing if `successor` is not the device's.
///
/// # Errors
/// Registry failures.
pub(crate) async fn predecessors(
    core: &ServiceCore,
    device: &DeviceRecord,
    successor: Serial,
) -> Result<Vec<CredentialRecord>, ServiceError> {
    let Some(position) = device.serials.iter().position(|s| *s == successor) else {
        return Ok(Vec::new());
    };
    let mut superseded = Vec::new();
    for &serial in &device.serials[..position] {
        if let Some(credential) = core.registry.credential(serial).await?
            && credential.status == CredentialStatus::Superseded
        {
            superseded.push(credential);
        }
    }
    Ok(superseded)
}

/// Stages the end of superseded `credentials`: each unexpired one revoked (reason superseded)
/// on the CRL of the CA that issued it, and every one's schedule dropped. Returns the revoked
/// serials with their CAs' ids.
///
/// # Errors
/// The CA that issued a credential cannot be found.
pub(crate) async fn stage_revocations(
    core: &ServiceCore,
    credentials: Vec<CredentialRecord>,
    now: OffsetDateTime,
    change: &mut Change,
) -> Result<Vec<(Serial, String)>, ServiceError> {
    let mut revoked = Vec::new();
    for mut credential in credentials {
        let serial = credential.serial;
        change.op(Op::CancelScheduledRevocation(serial));
        // An expired certificate is refused by every verifier already: no CRL entry needed.
        if credential.status != CredentialStatus::Superseded || now >= credential.not_after {
            continue;
        }
        let issuer = core
            .authorities()
            .issuer_of(&credential.owner, &credential.certificate_pem)
            .await?
            .id;
        let entry = CrlEntryRecord {
            revoked_at: now,
            reason: RevocationReason::Superseded,
        };
        credential.status = CredentialStatus::Revoked;
        credential.revocation = Some(entry);
        change
            .op(Op::Revoke {
                issuer: issuer.clone(),
                serial,
                entry,
            })
            .op(Op::PutCredential(Box::new(credential)));
        revoked.push((serial, issuer));
    }
    Ok(revoked)
}

/// The audit action of these revocations.
const ACTION: &str = "credential.revoke_superseded";

/// The audit entry of revocations staged by [`stage_revocations`], in `owner`'s log.
pub(crate) fn audit(
    device_id: &DeviceId,
    owner: &str,
    revoked: &[(Serial, String)],
    cause: Cause<'_>,
    now: OffsetDateTime,
    correlation: &str,
) -> AuditDraft {
    let serials = revoked
        .iter()
        .map(|(serial, _)| serial.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut issuers: Vec<&str> = revoked.iter().map(|(_, issuer)| issuer.as_str()).collect();
    issuers.sort_unstable();
    issuers.dedup();
    let subject = format!("device:{device_id}");
    let draft = match cause {
        Cause::SuccessorProved { successor, rpc } => {
            AuditDraft::new(now, subject.clone(), owner, ACTION, subject, "ok")
                .detail("cause", "successor_proved")
                .detail("successor", successor.to_string())
                .detail("rpc", rpc)
        }
        Cause::GraceEnded => AuditDraft::new(now, "system", owner, ACTION, subject, "ok")
            .detail("cause", "grace_ended"),
    };
    draft
        .detail("reason", RevocationReason::Superseded.as_str())
        .detail("serials", serials)
        .detail("issuers", issuers.join(","))
        .correlation(correlation)
}

/// The device proved it uses `successor` (a Status signed with its device key): revokes the
/// credentials that proof retires ([`predecessors`]), under the device's lock. Returns their
/// serials; most calls find none and write nothing.
///
/// # Errors
/// Registry failures.
pub(crate) async fn successor_proved(
    core: &ServiceCore,
    device_id: &DeviceId,
    successor: Serial,
    rpc: &str,
    correlation: &str,
) -> Result<Vec<Serial>, ServiceError> {
    // Read without the lock first: a device that has nothing superseded costs no lock.
    let Some(device) = core.registry.device(device_id).await? else {
        return Ok(Vec::new());
    };
    if predecessors(core, &device, successor).await?.is_empty() {
        return Ok(Vec::new());
    }
    let _lock = core.device_locks.lock(device_id).await;
    let revoked = retry_device_changes(|| async {
        let Some(device) = core.registry.device(device_id).await? else {
            return Ok(Ok(Vec::new()));
        };
        let superseded = predecessors(core, &device, successor).await?;
        let owner = owner_of(&device, &superseded);
        let now = OffsetDateTime::now_utc();
        let mut change = Change::new();
        // Written back unchanged: its version guards the credentials rewritten here.
        change.op(Op::PutDevice(device.clone()));
        let revoked = stage_revocations(core, superseded, now, &mut change).await?;
        if !revoked.is_empty() {
            let cause = Cause::SuccessorProved { successor, rpc };
            change.audit(audit(device_id, &owner, &revoked, cause, now, correlation));
        }
        Ok(core.registry.commit(change).await.map(|_| revoked))
    })
    .await?;
    if !revoked.is_empty() {
        tracing::info!(%device_id, %successor, revoked = revoked.len(), "superseded credentials revoked: the device proved its successor");
    }
    Ok(revoked.into_iter().map(|(serial, _)| serial).collect())
}

/// Whose audit log revocations of a device's credentials go to: the device's owner, else the
/// credentials' (a device always has an owner once it holds one).
fn owner_of(device: &DeviceRecord, credentials: &[CredentialRecord]) -> String {
    device
        .owner
        .clone()
        .or_else(|| credentials.first().map(|c| c.owner.clone()))
        .unwrap_or_else(|| PLATFORM_OWNER.to_owned())
}

/// Revokes every superseded credential whose grace ended at or before `now`, and drops the
/// schedules of those that need no revocation any more. Idempotent. Returns the revoked serials.
/// One credential that cannot be revoked now (its issuer's key store away, a record that does
/// not read) is logged and left scheduled for the next sweep; it does not hold up the others.
///
/// # Errors
/// Registry failures reading the schedule (what was committed before stays committed).
pub async fn sweep(core: &ServiceCore, now: OffsetDateTime) -> Result<Vec<Serial>, ServiceError> {
    let mut revoked_all = Vec::new();
    let mut failed = std::collections::HashSet::new();
    loop {
        // Handled entries leave the schedule; failed ones stay at its front, so read past them.
        let limit = SWEEP_PAGE + failed.len();
        let due = core.registry.scheduled_revocations(now, limit).await?;
        let page = due.len();
        let mut progressed = false;
        for (serial, _) in due {
            if failed.contains(&serial) {
                continue;
            }
            progressed = true;
            match end_grace(core, serial, now).await {
                Ok(revoked) => revoked_all.extend(revoked),
                Err(e) => {
                    tracing::warn!(%serial, error = %e, "a superseded credential was not revoked; the next sweep retries");
                    failed.insert(serial);
                }
            }
        }
        if page < limit || !progressed {
            return Ok(revoked_all);
        }
    }
}

/// One credential whose grace ended: revoked if it is still superseded, its schedule dropped.
async fn end_grace(
    core: &ServiceCore,
    serial: Serial,
    now: OffsetDateTime,
) -> Result<Option<Serial>, ServiceError> {
    let Some(credential) = core.registry.credential(serial).await? else {
        let mut change = Change::new();
        change.op(Op::CancelScheduledRevocation(serial));
        crate::store::commit(core.registry.as_ref(), change).await?;
        return Ok(None);
    };
    let device_id = credential.device_id;
    let _lock = core.device_locks.lock(&device_id).await;
    let correlation = crate::service::random_hex(12)?;
    let revoked = retry_device_changes(|| async {
        // Read again for every attempt: a proof may have revoked it meanwhile.
        let credential = core
            .registry
            .credential(serial)
            .await?
            .unwrap_or_else(|| credential.clone());
        let owner = credential.owner.clone();
        let mut change = Change::new();
        // The device is written back unchanged: its version guards the credential rewritten.
        if let Some(device) = core.registry.device(&device_id).await? {
            change.op(Op::PutDevice(device));
        }
        let revoked = stage_revocations(core, vec![credential], now, &mut change).await?;
        if !revoked.is_empty() {
            change.audit(audit(
                &device_id,
                &owner,
                &revoked,
                Cause::GraceEnded,
                now,
                &correlation,
            ));
        }
        Ok(core.registry.commit(change).await.map(|_| revoked))
    })
    .await?;
    Ok(revoked.first().map(|(serial, _)| *serial))
}

/// Runs [`sweep`] every `superseded_sweep_interval` of the service's configuration, for as long
/// as the returned task is not aborted. A failed pass is logged and the next one retries.
#[must_use]
pub fn spawn_sweeper(core: Arc<ServiceCore>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(core.config().superseded_sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep(&core, OffsetDateTime::now_utc()).await {
                Ok(revoked) if !revoked.is_empty() => {
                    tracing::info!(
                        revoked = revoked.len(),
                        "superseded credentials revoked: their grace ended"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not sweep superseded credentials"),
            }
        }
    })
}

#[cfg(test)]
mod tests;
