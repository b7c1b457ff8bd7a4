//! Each owner's firmware-signing key: made on first use in the configured key store (sealed or
//! PKCS#11, like the owner's CA keys), certified by the owner's issuing CA for code signing
//! only, opened once per replica and kept.
//!
//! Two replicas making an owner's first key at once: the registry's guard admits one record;
//! the other replica's key stays unused and it signs with the winner's.

use std::sync::{Arc, PoisonError};

use time::OffsetDateTime;

use super::{Authorities, sign_off_runtime};
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::FirmwareSignerRecord;
use crate::pki::{CaKey, Serial, Validity};
use crate::store::{Change, Conflict, Guard, Op, StoreError, commit};

/// How long a firmware-signing certificate is valid (within its issuing CA's validity).
const FIRMWARE_SIGNER_LIFETIME: time::Duration = time::Duration::days(5 * 365);

/// An owner's firmware-signing key, open, with its record (certificate and chain).
#[derive(Clone, Debug)]
pub struct FirmwareSigner {
    /// The record.
    pub record: FirmwareSignerRecord,
    /// The key.
    pub key: Arc<dyn CaKey>,
}

impl Authorities {
    /// The owner's firmware-signing key, made (and audited, as `actor`'s doing) if the owner
    /// has none yet.
    ///
    /// # Errors
    /// [`ServiceError::FailedPrecondition`] when the owner has no active issuing CA; key store
    /// and registry failures.
    pub async fn firmware_signer(
        &self,
        owner: &str,
        actor: &str,
    ) -> Result<FirmwareSigner, ServiceError> {
        if let Some(record) = self.registry.firmware_signer(owner).await? {
            return self.open_firmware_signer(record);
        }
        let _change = self.changes.lock().await;
        if let Some(record) = self.registry.firmware_signer(owner).await? {
            return self.open_firmware_signer(record);
        }
        let issuer = self.issuing(owner).await?;
        let now = OffsetDateTime::now_utc();
        let id = format!("{owner}/firmware-1");
        let (key, reference) = self.keys.generate(&id)?;
        let public_key = *key.public_key();
        let validity = Validity::starting(now, FIRMWARE_SIGNER_LIFETIME)?;
        let serial = Serial::random()?;
        let common_name = format!("oxroot {owner} firmware signing");
        let certificate = sign_off_runtime(&issuer.ca, move |ca| {
            ca.issue_code_signing_certificate(&public_key, &common_name, validity, serial)
        })
        .await??;
        let chain_pem = issuer
            .ca
            .chain_pems()
            .into_iter()
            .chain([issuer.ca.root_pem()])
            .collect::<String>();
        let record = FirmwareSignerRecord {
            owner: owner.to_owned(),
            id: id.clone(),
            certificate_pem: certificate.pem,
            chain_pem,
            key: reference,
            created_at: now,
        };
        let mut change = Change::new();
        change
            .guard(Guard::FirmwareSignerAbsent(owner.to_owned()))
            .op(Op::PutFirmwareSigner(Box::new(record.clone())))
            .audit(
                AuditDraft::new(
                    now,
                    actor,
                    owner,
                    "firmware.signer.create",
                    format!("firmware-signer:{id}"),
                    "ok",
                )
                .detail("issued_by", issuer.id.clone())
                .detail("serial", serial.to_string())
                .detail("key", record.key.location()),
            );
        match commit(self.registry.as_ref(), change).await {
            Ok(_) => {}
            // Another replica made the owner's key first: use that one.
            Err(StoreError::Conflict(Conflict::FirmwareSignerExists(_))) => {
                let winner = self.registry.firmware_signer(owner).await?.ok_or_else(|| {
                    ServiceError::Internal("a firmware signer vanished after a conflict".into())
                })?;
                return self.open_firmware_signer(winner);
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(%owner, signer = %id, key = %record.key.location(), "firmware-signing key created");
        self.firmware_keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, key.clone());
        Ok(FirmwareSigner { record, key })
    }

    /// The key of a stored signer record, opened once and kept.
    fn open_firmware_signer(
        &self,
        record: FirmwareSignerRecord,
    ) -> Result<FirmwareSigner, ServiceError> {
        if let Some(key) = self
            .firmware_keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&record.id)
        {
            return Ok(FirmwareSigner {
                key: key.clone(),
                record,
            });
        }
        let key = self.keys.open(&record.id, &record.key)?;
        self.firmware_keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(record.id.clone(), key.clone());
        Ok(FirmwareSigner { record, key })
    }
}
