//! The CRL: re-signed when a revocation is not on it yet or half its validity has passed, and
//! stored with the next CRL number.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::CrlRecord;
use crate::pki::{CertificateAuthority, RevokedEntry};
use crate::store::{Change, Op, Registry, commit};

/// Signs and keeps the CRL.
#[derive(Debug)]
pub struct CrlSigner {
    registry: Arc<dyn Registry>,
    ca: Arc<CertificateAuthority>,
    validity: Duration,
    /// Serialises re-signing: two concurrent signers would both take the same next number.
    signing: Mutex<()>,
}

impl CrlSigner {
    pub(crate) fn new(
        registry: Arc<dyn Registry>,
        ca: Arc<CertificateAuthority>,
        validity: Duration,
    ) -> Self {
        Self {
            registry,
            ca,
            validity,
            signing: Mutex::new(()),
        }
    }

    /// Re-signs the CRL from every revoked serial and stores it with the next CRL number.
    /// Callers hold no device lock.
    ///
    /// # Errors
    /// Registry or CA failures.
    pub async fn resign(&self, actor: &str) -> Result<CrlRecord, ServiceError> {
        let _signing = self.signing.lock().await;
        let now = OffsetDateTime::now_utc();
        let entries: Vec<RevokedEntry> = self
            .registry
            .revoked()?
            .into_iter()
            .map(|(serial, entry)| RevokedEntry {
                serial,
                revoked_at: entry.revoked_at,
                reason: entry.reason,
            })
            .collect();
        let number = self.registry.crl()?.map_or(1, |c| c.number + 1);
        let next_update = now + self.validity;
        let crl = self.ca.sign_crl(&entries, now, next_update, number)?;
        let record = CrlRecord {
            number,
            this_update: now,
            next_update,
            der_hex: hex::encode(&crl.der),
            pem: crl.pem,
            revoked_count: entries.len() as u64,
        };
        let mut change = Change::new();
        change.op(Op::PutCrl(record.clone())).audit(
            AuditDraft::new(now, actor, "*", "crl.sign", "crl", "ok")
                .detail("crl_number", number.to_string())
                .detail("revoked_count", entries.len().to_string()),
        );
        commit(self.registry.as_ref(), change).await?;
        Ok(record)
    }

    /// The current CRL. A new one is signed when there is none, when a revocation is not on
    /// it yet (a revocation commit and its re-signing are two steps: a failure or a cancelled
    /// call between them must not leave a revoked serial off the CRL), or when half its
    /// validity has passed (a CRL past nextUpdate makes Mosquitto reject every client).
    ///
    /// # Errors
    /// Registry or CA failures.
    pub async fn current(&self) -> Result<CrlRecord, ServiceError> {
        let now = OffsetDateTime::now_utc();
        if let Some(crl) = self.registry.crl()? {
            let half = (crl.next_update - crl.this_update) / 2;
            let complete = crl.revoked_count == self.registry.revoked_count()?;
            if complete && now < crl.this_update + half {
                return Ok(crl);
            }
        }
        self.resign("system").await
    }
}
