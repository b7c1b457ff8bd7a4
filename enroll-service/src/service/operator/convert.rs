//! Registry records to wire messages. A few fields are not stored with the record (the kind of
//! a batch's policy, a device's certificates), so conversion reads the registry; [`Views`]
//! caches the policy kinds so a page of a thousand devices does not read the same policy a
//! thousand times.

use std::collections::HashMap;

use time::OffsetDateTime;

use oxroot_proto::v1;

use crate::error::ServiceError;
use crate::model::{
    BatchRecord, CredentialRecord, CredentialStatus, DeviceRecord, RevocationRecord,
};
use crate::store::{Registry, owner_rollouts};
use crate::wire::timestamp;

/// Converts records of one request, with a cache of policy kinds.
pub(super) struct Views<'a> {
    registry: &'a dyn Registry,
    now: OffsetDateTime,
    kinds: HashMap<(String, String), v1::PolicyKind>,
}

impl<'a> Views<'a> {
    /// Views over `registry` at the current time.
    pub(super) fn new(registry: &'a dyn Registry) -> Self {
        Self {
            registry,
            now: OffsetDateTime::now_utc(),
            kinds: HashMap::new(),
        }
    }

    /// The kind of a policy, UNSPECIFIED if it is gone (policies are never deleted, but a
    /// listing should not fail on one inconsistent record).
    async fn kind(&mut self, owner: &str, name: &str) -> Result<v1::PolicyKind, ServiceError> {
        let key = (owner.to_owned(), name.to_owned());
        if let Some(kind) = self.kinds.get(&key) {
            return Ok(*kind);
        }
        let kind = self
            .registry
            .policy(owner, name)
            .await?
            .map_or(v1::PolicyKind::Unspecified, |p| p.kind());
        self.kinds.insert(key, kind);
        Ok(kind)
    }

    /// A batch with its counts and its policy's kind.
    pub(super) async fn batch(&mut self, batch: &BatchRecord) -> Result<v1::Batch, ServiceError> {
        Ok(v1::Batch {
            batch_id: batch.batch_id.clone(),
            owner: batch.owner.clone(),
            name: batch.name.clone(),
            policy_name: batch.policy_name.clone(),
            policy_kind: self.kind(&batch.owner, &batch.policy_name).await? as i32,
            description: batch.description.clone(),
            created_at: Some(timestamp(batch.created_at)),
            created_by: batch.created_by.clone(),
            counts: Some(v1::BatchCounts::from(&batch.counts)),
        })
    }

    /// One issued certificate. EXPIRED wins over ACTIVE/SUPERSEDED once `not_after` is past;
    /// REVOKED wins over everything since the CRL says so.
    pub(super) async fn credential(
        &mut self,
        credential: &CredentialRecord,
    ) -> Result<v1::CredentialSummary, ServiceError> {
        let state = match credential.status {
            CredentialStatus::Revoked => v1::CredentialState::Revoked,
            _ if self.now > credential.not_after => v1::CredentialState::Expired,
            CredentialStatus::Active => v1::CredentialState::Active,
            CredentialStatus::Superseded => v1::CredentialState::Superseded,
        };
        Ok(v1::CredentialSummary {
            serial: credential.serial.to_string(),
            state: state as i32,
            key_slot: u32::from(credential.key_slot),
            policy_name: credential.policy_name.clone(),
            policy_kind: self
                .kind(&credential.owner, &credential.policy_name)
                .await? as i32,
            subject_cn: credential.subject_cn.clone(),
            issued_at: Some(timestamp(credential.issued_at)),
            not_before: Some(timestamp(credential.not_before)),
            not_after: Some(timestamp(credential.not_after)),
            certificate_pem: credential.certificate_pem.clone(),
            firmware_measurement: credential
                .firmware_measurement()
                .map(|measurement| measurement.to_string())
                .unwrap_or_default(),
        })
    }

    /// A device; with `history`, every credential it was issued, newest first (GetDevice).
    pub(super) async fn device(
        &mut self,
        device: &DeviceRecord,
        history: bool,
    ) -> Result<v1::Device, ServiceError> {
        let current = match device.current_serial {
            Some(serial) => self.registry.credential(serial).await?,
            None => None,
        }
        // A revoked certificate is not one the device "should be using" (e.g. after a move to
        // another owner, until it re-onboards).
        .filter(|c| c.status != CredentialStatus::Revoked);
        let current_credential = match &current {
            Some(c) => Some(self.credential(c).await?),
            None => None,
        };
        let firmware_updates = if history {
            self.firmware_updates(device).await?
        } else {
            Vec::new()
        };
        let mut credential_history = Vec::new();
        if history {
            let owner = device.owner.as_deref().unwrap_or_default();
            for &serial in device.serials.iter().rev() {
                if let Some(c) = self.registry.credential(serial).await? {
                    // After a move to another owner the new owner sees only its own
                    // certificates: the old owner's policies and names are not theirs to read.
                    if c.owner == owner {
                        credential_history.push(self.credential(&c).await?);
                    }
                } else {
                    tracing::warn!(
                        device_id = %device.device_id,
                        %serial,
                        "a device lists a serial the registry does not hold"
                    );
                }
            }
        }
        let registration = device.registration.as_ref();
        Ok(v1::Device {
            device_id: device.device_id.to_string(),
            epk: registration
                .map(|r| r.epk.as_bytes().to_vec())
                .unwrap_or_default(),
            owner: device.owner.clone().unwrap_or_default(),
            batch_id: device.batch_id.clone().unwrap_or_default(),
            state: v1::DeviceState::from(device.state()) as i32,
            registration_context: registration.map(|r| v1::RegistrationContext {
                site: r.metadata.site.clone(),
                station: r.metadata.station.clone(),
                firmware_version: r.metadata.firmware_version.clone(),
                labels: r.metadata.labels.clone().into_iter().collect(),
            }),
            registered_at: registration.map(|r| timestamp(r.registered_at)),
            onboarded_at: device.onboarded_at.map(timestamp),
            last_seen: device.last_seen.map(timestamp),
            key_slot: current.as_ref().map_or(0, |c| u32::from(c.key_slot)),
            current_credential,
            credential_history,
            revocation: device.revocation.as_ref().map(revocation),
            refusals: device.refusals,
            firmware_updates,
        })
    }

    /// What the device reported of its current owner's rollouts, oldest first.
    async fn firmware_updates(
        &mut self,
        device: &DeviceRecord,
    ) -> Result<Vec<v1::FirmwareUpdate>, ServiceError> {
        let Some(owner) = device.owner.as_deref() else {
            return Ok(Vec::new());
        };
        let mut updates = Vec::new();
        for rollout in owner_rollouts(self.registry, owner).await? {
            if let Some(report) = self
                .registry
                .rollout_report(owner, &rollout.id, &device.device_id)
                .await?
            {
                updates.push((
                    report.reported_at,
                    v1::FirmwareUpdate {
                        rollout_id: rollout.id,
                        firmware_name: rollout.firmware_name,
                        firmware_version: rollout.firmware_version,
                        installed: report.installed,
                        reason: report.reason,
                        running_measurement: report.running_measurement,
                        reported_at: Some(timestamp(report.reported_at)),
                    },
                ));
            }
        }
        updates.sort_by_key(|(at, _)| *at);
        Ok(updates.into_iter().map(|(_, update)| update).collect())
    }
}

/// A device revocation.
pub(super) fn revocation(record: &RevocationRecord) -> v1::Revocation {
    v1::Revocation {
        revoked_at: Some(timestamp(record.revoked_at)),
        reason: v1::RevocationReason::from(record.reason) as i32,
        comment: record.comment.clone(),
        revoked_by: record.revoked_by.clone(),
    }
}
