//! ListDevices, GetDevice, RevokeDevice, TransferDevice.
//!
//! Revocations and transfers are read-modify-writes of the device, committed compare-and-set
//! on the version read: one that loses to a concurrent writer (an onboarding, another replica)
//! reads the device again and decides again. They hold the device's lock meanwhile (as Onboard
//! does; an optimisation within one replica), and re-sign the CRL only after releasing it.
//!
//! ```text
//!  TransferDevice, same owner:    assignment+1, batch A ─▶ B; the old certificate stays valid
//!                                 until the device re-onboards (then revoked SUPERSEDED)
//!  TransferDevice, other owner:   live certificates revoked AFFILIATION_CHANGED at once,
//!                                 assignment+1, key slot+1 (7 ─▶ 1), owner X ─▶ Y, batch ─▶ B or none
//! ```

use time::OffsetDateTime;

use oxroot_proto::v1;

use super::convert::Views;
use super::paging::Pager;
use super::{
    ADMINS, ANY_ROLE, MAX_COMMENT, OPERATORS, OperatorService, check_text, operator_audit,
};
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::{
    BatchRecord, CountsDelta, CredentialStatus, CrlEntryRecord, DeviceEvent, DeviceEventKind,
    DeviceRecord, DeviceState, RevocationRecord,
};
use crate::pki::{PLATFORM_OWNER, RevocationReason, Serial, is_valid_owner};
use crate::service::locks::retry_device_changes;
use crate::service::{Caller, parse_device_id, random_hex};
use crate::store::{Change, DeviceFilter, Op, StoreError};
use crate::wire::device_state_filter;
use rot_core::keys::DeviceId;

/// The key slot after `slot`: 1..=7, wrapping (slot 0 is the enrolment key, never certified).
pub(super) fn next_slot(slot: u8) -> u8 {
    if slot >= 7 { 1 } else { slot + 1 }
}

/// The first slot after `slot` (wrapping) that is not retired; `None` when all seven are.
pub(super) fn next_free_slot(slot: u8, retired: &[u8]) -> Option<u8> {
    let mut candidate = slot;
    for _ in 0..7 {
        candidate = next_slot(candidate);
        if !retired.contains(&candidate) {
            return Some(candidate);
        }
    }
    None
}

/// Stages a moved device's batch memberships: out of `old_batch` (in state `before`), into its
/// new batch (in its new state), with counts and events for both batches' watchers.
fn stage_membership(
    change: &mut Change,
    device: &DeviceRecord,
    before: DeviceState,
    old_batch: Option<&str>,
    now: OffsetDateTime,
    correlation: &str,
) {
    let device_id = device.device_id;
    let event = |kind| Some(DeviceEvent::new(device_id, kind, now, correlation));
    if let Some(old) = old_batch {
        change
            .op(Op::RemoveFromBatch {
                batch_id: old.to_owned(),
                device_id,
            })
            .batch_moved(
                old,
                CountsDelta::left(before),
                event(DeviceEventKind::TransferredOut),
            );
    }
    if let Some(new) = &device.batch_id {
        change
            .op(Op::AddToBatch {
                batch_id: new.clone(),
                device_id,
            })
            .batch_moved(
                new,
                CountsDelta::joined(device.state()),
                event(DeviceEventKind::Added),
            );
    }
}

/// Gives a device to another owner. Every key certified for the previous owner is retired, so
/// no later Onboard or Renew can certify it again for the new owner: its key differs from any
/// the old owner's certificates hold.
fn hand_over(device: &mut DeviceRecord, new_owner: &str) -> Result<(), ServiceError> {
    device.owner = Some(new_owner.to_owned());
    for slot in device.slot_keys.keys() {
        if !device.retired_slots.contains(slot) {
            device.retired_slots.push(*slot);
        }
    }
    device.key_slot = next_free_slot(device.key_slot, &device.retired_slots).ok_or_else(|| {
        ServiceError::FailedPrecondition(format!(
            "device {} has no unused key slot left for another owner",
            device.device_id
        ))
    })?;
    Ok(())
}

/// Serials as the audit log lists them: comma-separated.
fn joined(revoked: &[(Serial, String)]) -> String {
    revoked
        .iter()
        .map(|(serial, _)| serial.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// What a revocation came to.
enum Revocation {
    /// Revoked now, with the serials revoked and the CAs whose CRLs list them.
    Done {
        /// The device as committed.
        device: DeviceRecord,
        /// The serials revoked.
        revoked: Vec<(Serial, String)>,
    },
    /// It was revoked before.
    Already(DeviceRecord),
}

/// A committed transfer: the device as committed, the plan, and the serials revoked.
type Moved = (DeviceRecord, Move, Vec<(Serial, String)>);

/// A planned transfer, before it is committed.
struct Move {
    /// The owner after the move.
    target_owner: String,
    /// The batch after the move; `None`: the owner's unassigned pool.
    target_batch: Option<BatchRecord>,
    /// Moves to another owner revoke the live certificates at once.
    across_owners: bool,
}

impl OperatorService {
    /// The device if the caller may see it: another owner's device, or an unclaimed one for a
    /// non-platform caller, is NOT_FOUND.
    async fn visible_device(
        &self,
        caller: &Caller,
        device_id: &DeviceId,
    ) -> Result<DeviceRecord, ServiceError> {
        self.core
            .registry
            .device(device_id)
            .await?
            .filter(|d| caller.can_see(d.owner.as_deref()))
            .ok_or_else(|| ServiceError::NotFound(format!("device {device_id}")))
    }

    /// Stages the revocation of every live (unexpired ACTIVE or SUPERSEDED) certificate of
    /// `device` into `change`, each on the CRL of the CA that issued it; returns the serials
    /// with those CAs' ids.
    async fn revoke_credentials(
        &self,
        device: &DeviceRecord,
        now: OffsetDateTime,
        reason: RevocationReason,
        change: &mut Change,
    ) -> Result<Vec<(Serial, String)>, ServiceError> {
        let mut revoked = Vec::new();
        for &serial in &device.serials {
            let Some(mut credential) = self.core.registry.credential(serial).await? else {
                continue;
            };
            let live = matches!(
                credential.status,
                CredentialStatus::Active | CredentialStatus::Superseded
            ) && now < credential.not_after;
            if !live {
                continue;
            }
            let issuer = self
                .core
                .authorities()
                .issuer_of(&credential.owner, &credential.certificate_pem)
                .await?
                .id;
            let entry = CrlEntryRecord {
                revoked_at: now,
                reason,
            };
            if credential.status == CredentialStatus::Superseded {
                // Revoked now, for this reason: the end of its grace has nothing left to do.
                change.op(Op::CancelScheduledRevocation(serial));
            }
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

    /// Re-signs the CRLs of the CAs that just revoked something (the device locks are
    /// released: the CRL signer serialises on its own lock and must never wait behind one).
    async fn resign_crls(
        &self,
        revoked: &[(Serial, String)],
        actor: &str,
    ) -> Result<(), ServiceError> {
        let mut issuers: Vec<&String> = revoked.iter().map(|(_, issuer)| issuer).collect();
        issuers.sort();
        issuers.dedup();
        for issuer in issuers {
            self.core.crls.resign(issuer, actor).await?;
        }
        Ok(())
    }

    /// ListDevices for an authenticated caller.
    pub(crate) async fn list_devices_as(
        &self,
        caller: &Caller,
        request: &v1::ListDevicesRequest,
    ) -> Result<v1::ListDevicesResponse, ServiceError> {
        caller.require("ListDevices", ANY_ROLE)?;
        let owner = caller.owner_filter("owner", &request.owner)?;
        let state = v1::DeviceState::try_from(request.state)
            .map_err(|_| ServiceError::invalid("state", "is not a DeviceState"))?;
        check_text("batch_id", &request.batch_id, 64)?;
        let filter = DeviceFilter {
            batch_id: (!request.batch_id.is_empty()).then(|| request.batch_id.clone()),
            owner: owner.clone(),
            state: device_state_filter(state),
        };
        let pager = Pager::new(
            "ListDevices",
            &[
                owner.as_deref().unwrap_or_default(),
                &request.batch_id,
                state.as_str_name(),
            ],
            request.page_size,
        );
        let start: Option<DeviceId> = pager.resume(&request.page_token)?;
        let registry = self.core.registry.as_ref();
        let filter = &filter;
        let (devices, next) = pager
            .collect(
                start,
                |after: Option<DeviceId>, n| async move {
                    Ok(registry.devices(filter, after.as_ref(), n).await?)
                },
                |d: &DeviceRecord| d.device_id,
                |_| true,
            )
            .await?;
        let mut views = Views::new(registry);
        let mut listed = Vec::with_capacity(devices.len());
        for device in &devices {
            listed.push(views.device(device, false).await?);
        }
        Ok(v1::ListDevicesResponse {
            devices: listed,
            next_page_token: pager.token(next.as_ref()),
        })
    }

    /// GetDevice for an authenticated caller.
    pub(crate) async fn get_device_as(
        &self,
        caller: &Caller,
        request: &v1::GetDeviceRequest,
    ) -> Result<v1::GetDeviceResponse, ServiceError> {
        caller.require("GetDevice", ANY_ROLE)?;
        let device_id = parse_device_id("device_id", &request.device_id)?;
        let device = self.visible_device(caller, &device_id).await?;
        Ok(v1::GetDeviceResponse {
            device: Some(
                Views::new(self.core.registry.as_ref())
                    .device(&device, true)
                    .await?,
            ),
        })
    }

    /// RevokeDevice for an authenticated caller.
    pub(crate) async fn revoke_device_as(
        &self,
        caller: &Caller,
        request: &v1::RevokeDeviceRequest,
    ) -> Result<v1::RevokeDeviceResponse, ServiceError> {
        caller.require("RevokeDevice", OPERATORS)?;
        let device_id = parse_device_id("device_id", &request.device_id)?;
        check_text("comment", &request.comment, MAX_COMMENT)?;
        let reason = v1::RevocationReason::try_from(request.reason)
            .map_err(|_| ServiceError::invalid("reason", "is not a RevocationReason"))?;
        let reason = RevocationReason::from(reason);
        let correlation = random_hex(12)?;
        let lock = self.core.device_locks.lock(&device_id).await;
        let outcome = retry_device_changes(|| {
            self.revoke_once(caller, request, &device_id, reason, &correlation)
        })
        .await?;
        drop(lock);
        let (device, revoked) = match outcome {
            Revocation::Done { device, revoked } => (device, revoked),
            Revocation::Already(device) => {
                // Idempotent: revocation is final, and a retry must not fail. A retry after a
                // failed re-signing still gets the serials onto the CRLs.
                if let Some(owner) = &device.owner {
                    for issuer in self.core.authorities().live(owner).await? {
                        self.core.crls.current(&issuer.id).await?;
                    }
                }
                return Ok(v1::RevokeDeviceResponse {
                    device: Some(
                        Views::new(self.core.registry.as_ref())
                            .device(&device, false)
                            .await?,
                    ),
                    revoked_serials: Vec::new(),
                });
            }
        };
        tracing::info!(operator = %caller.name, %device_id, serials = revoked.len(), "device revoked");
        self.resign_crls(&revoked, &caller.actor()).await?;
        Ok(v1::RevokeDeviceResponse {
            device: Some(
                Views::new(self.core.registry.as_ref())
                    .device(&device, false)
                    .await?,
            ),
            revoked_serials: revoked
                .iter()
                .map(|(serial, _)| serial.to_string())
                .collect(),
        })
    }

    /// One read of the device and, unless it is revoked already, one commit of its revocation.
    async fn revoke_once(
        &self,
        caller: &Caller,
        request: &v1::RevokeDeviceRequest,
        device_id: &DeviceId,
        reason: RevocationReason,
        correlation: &str,
    ) -> Result<Result<Revocation, StoreError>, ServiceError> {
        let mut device = self.visible_device(caller, device_id).await?;
        if device.revocation.is_some() {
            return Ok(Ok(Revocation::Already(device)));
        }
        let now = OffsetDateTime::now_utc();
        let before = device.state();
        let mut change = Change::new();
        let revoked = self
            .revoke_credentials(&device, now, reason, &mut change)
            .await?;
        device.revocation = Some(RevocationRecord {
            revoked_at: now,
            reason,
            comment: request.comment.clone(),
            revoked_by: caller.qualified_name(),
        });
        if let Some(batch_id) = &device.batch_id {
            let event = DeviceEvent::new(*device_id, DeviceEventKind::Revoked, now, correlation);
            change.batch_moved(
                batch_id,
                CountsDelta::transition(before, device.state()),
                Some(event),
            );
        }
        change.op(Op::PutDevice(device.clone())).audit(
            operator_audit(
                caller,
                now,
                device.owner.as_deref().unwrap_or(PLATFORM_OWNER),
                "device.revoke",
                format!("device:{device_id}"),
                correlation,
            )
            .detail("reason", reason.as_str())
            .detail("serials", joined(&revoked))
            .detail("comment", request.comment.clone()),
        );
        Ok(self
            .core
            .registry
            .commit(change)
            .await
            .map(|_| Revocation::Done { device, revoked }))
    }

    /// Checks a transfer against the contract's rules and resolves its target.
    async fn plan_move(
        &self,
        caller: &Caller,
        device: &DeviceRecord,
        request: &v1::TransferDeviceRequest,
    ) -> Result<Move, ServiceError> {
        let target_owner = match (request.target_owner.as_str(), &device.owner) {
            ("", Some(owner)) => owner.clone(),
            ("", None) => {
                return Err(ServiceError::invalid(
                    "target_owner",
                    "is required for a device no owner has claimed yet",
                ));
            }
            (owner, _) => owner.to_owned(),
        };
        if device.revocation.is_some() {
            return Err(ServiceError::FailedPrecondition(
                "the device is revoked; revocation is final".into(),
            ));
        }
        let across_owners = device.owner.as_ref() != Some(&target_owner);
        if across_owners {
            caller.require("TransferDevice to another owner", ADMINS)?;
            // Checked before the batch is looked up, so that the answer does not tell an
            // owner-scoped admin whether another owner's batch exists.
            if !request.target_batch_id.is_empty() && !caller.is_platform() {
                return Err(ServiceError::PermissionDenied(
                    "naming a batch of another owner needs a platform admin".into(),
                ));
            }
        } else if request.target_batch_id.is_empty() {
            return Err(ServiceError::invalid(
                "target_batch_id",
                "is required for a move within the same owner",
            ));
        }
        let target_batch = if request.target_batch_id.is_empty() {
            None
        } else {
            check_text("target_batch_id", &request.target_batch_id, 64)?;
            let batch = self
                .core
                .registry
                .batch(&request.target_batch_id)
                .await?
                .filter(|b| b.owner == target_owner && caller.can_see(Some(&b.owner)))
                .ok_or_else(|| {
                    ServiceError::NotFound(format!("batch {:?}", request.target_batch_id))
                })?;
            if device.batch_id.as_ref() == Some(&batch.batch_id) {
                return Err(ServiceError::FailedPrecondition(
                    "the device is already in the target batch".into(),
                ));
            }
            Some(batch)
        };
        Ok(Move {
            target_owner,
            target_batch,
            across_owners,
        })
    }

    /// TransferDevice for an authenticated caller.
    pub(crate) async fn transfer_device_as(
        &self,
        caller: &Caller,
        request: &v1::TransferDeviceRequest,
    ) -> Result<v1::TransferDeviceResponse, ServiceError> {
        caller.require("TransferDevice", OPERATORS)?;
        let device_id = parse_device_id("device_id", &request.device_id)?;
        check_text("comment", &request.comment, MAX_COMMENT)?;
        if !request.target_owner.is_empty() {
            if request.target_owner == PLATFORM_OWNER || !is_valid_owner(&request.target_owner) {
                return Err(ServiceError::invalid(
                    "target_owner",
                    "an owner is 1 to 63 characters of [a-z0-9-], starting with a letter or digit",
                ));
            }
            // The device must be able to onboard where it lands: under the owner's CA.
            self.core.authorities().owner(&request.target_owner).await?;
        }
        let correlation = random_hex(12)?;
        let lock = self.core.device_locks.lock(&device_id).await;
        let (device, plan, revoked) =
            retry_device_changes(|| self.transfer_once(caller, request, &device_id, &correlation))
                .await?;
        drop(lock);
        tracing::info!(operator = %caller.name, %device_id, to_owner = %plan.target_owner, "device transferred");
        self.resign_crls(&revoked, &caller.actor()).await?;
        Ok(v1::TransferDeviceResponse {
            device: Some(
                Views::new(self.core.registry.as_ref())
                    .device(&device, false)
                    .await?,
            ),
            revoked_serials: revoked
                .iter()
                .map(|(serial, _)| serial.to_string())
                .collect(),
        })
    }

    /// One read of the device, the plan, and one commit of the move.
    async fn transfer_once(
        &self,
        caller: &Caller,
        request: &v1::TransferDeviceRequest,
        device_id: &DeviceId,
        correlation: &str,
    ) -> Result<Result<Moved, StoreError>, ServiceError> {
        let mut device = self.visible_device(caller, device_id).await?;
        let plan = self.plan_move(caller, &device, request).await?;
        let now = OffsetDateTime::now_utc();
        let mut change = Change::new();
        let revoked = if plan.across_owners {
            self.revoke_credentials(
                &device,
                now,
                RevocationReason::AffiliationChanged,
                &mut change,
            )
            .await?
        } else {
            Vec::new()
        };
        let (before, old_owner, old_batch) = (
            device.state(),
            device.owner.clone(),
            device.batch_id.clone(),
        );
        // A new assignment makes the current credential stale: the device re-onboards.
        device.assignment += 1;
        device.batch_id = plan.target_batch.as_ref().map(|b| b.batch_id.clone());
        if plan.across_owners {
            hand_over(&mut device, &plan.target_owner)?;
        }
        stage_membership(
            &mut change,
            &device,
            before,
            old_batch.as_deref(),
            now,
            correlation,
        );
        change.op(Op::PutDevice(device.clone()));
        // Both owners' auditors see a move between them, each only their own side: the old
        // owner its batch, the certificates it lost and the comment; the new owner where the
        // device landed. Neither reads the other's batch IDs or words.
        let entry = |owner: &str| {
            operator_audit(
                caller,
                now,
                owner,
                "device.transfer",
                format!("device:{device_id}"),
                correlation,
            )
            .detail("to_owner", plan.target_owner.clone())
        };
        let old_side = |draft: AuditDraft| {
            draft
                .detail("from_owner", old_owner.clone().unwrap_or_default())
                .detail("from_batch", old_batch.clone().unwrap_or_default())
                .detail("serials", joined(&revoked))
                .detail("comment", request.comment.clone())
        };
        let new_side = |draft: AuditDraft| {
            draft
                .detail("to_batch", device.batch_id.clone().unwrap_or_default())
                .detail("key_slot", device.key_slot.to_string())
        };
        let old_owner_name = old_owner.as_deref().unwrap_or(PLATFORM_OWNER);
        if plan.across_owners {
            change.audit(old_side(entry(old_owner_name)));
            change.audit(new_side(entry(&plan.target_owner)));
        } else {
            change.audit(new_side(old_side(entry(old_owner_name))));
        }
        Ok(self
            .core
            .registry
            .commit(change)
            .await
            .map(|_| (device, plan, revoked)))
    }
}
