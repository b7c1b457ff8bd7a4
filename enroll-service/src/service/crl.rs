//! CRLs, one per issuing CA: re-signed when a revocation is not on one yet or half its validity
//! has passed, and stored with the issuer's next CRL number.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Mutex, broadcast};

use super::authorities::{Authorities, sign_off_runtime};
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::CrlRecord;
use crate::pki::RevokedEntry;
use crate::store::{Change, Op, Registry, commit};

/// Signs and keeps every issuing CA's CRL.
#[derive(Debug)]
pub struct CrlSigner {
    registry: Arc<dyn Registry>,
    authorities: Arc<Authorities>,
    validity: Duration,
    /// Serialises re-signing: two concurrent signers would both take the same next number.
    signing: Mutex<()>,
    /// Every CRL signed, as it is stored (WatchCrls).
    published: broadcast::Sender<PublishedCrl>,
}

/// A CRL just signed and stored.
#[derive(Clone, Debug)]
pub struct PublishedCrl {
    /// The CA that signed it.
    pub issuer: String,
    /// The stored CRL.
    pub record: CrlRecord,
}

impl CrlSigner {
    pub(crate) fn new(
        registry: Arc<dyn Registry>,
        authorities: Arc<Authorities>,
        validity: Duration,
    ) -> Self {
        Self {
            registry,
            authorities,
            validity,
            signing: Mutex::new(()),
            published: broadcast::channel(256).0,
        }
    }

    /// How long a CRL is valid; it is re-signed when half of it has passed.
    #[must_use]
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// Every CRL signed from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<PublishedCrl> {
        self.published.subscribe()
    }

    /// Re-signs the CRL of `issuer` (a CA id) from every serial it revoked and stores it with
    /// its next CRL number. Callers hold no device lock.
    ///
    /// # Errors
    /// Registry or CA failures ([`ServiceError::Unavailable`] when its key store is).
    pub async fn resign(&self, issuer: &str, actor: &str) -> Result<CrlRecord, ServiceError> {
        let _signing = self.signing.lock().await;
        self.sign_locked(issuer, actor).await
    }

    /// [`CrlSigner::resign`]'s work, for a caller that holds `signing`.
    async fn sign_locked(&self, issuer: &str, actor: &str) -> Result<CrlRecord, ServiceError> {
        let ca = self.authorities.by_id(issuer)?;
        let now = OffsetDateTime::now_utc();
        let entries: Vec<RevokedEntry> = self
            .registry
            .revoked(issuer)?
            .into_iter()
            .map(|(serial, entry)| RevokedEntry {
                serial,
                revoked_at: entry.revoked_at,
                reason: entry.reason,
            })
            .collect();
        let number = self.registry.crl(issuer)?.map_or(1, |c| c.number + 1);
        // A retired CA's last CRL may not promise more than the CA itself lives.
        let next_update = (now + self.validity).min(ca.not_after());
        let crl = {
            let entries = entries.clone();
            sign_off_runtime(&ca, move |ca| {
                ca.sign_crl(&entries, now, next_update, number)
            })
            .await??
        };
        let record = CrlRecord {
            number,
            this_update: now,
            next_update,
            der_hex: hex::encode(&crl.der),
            pem: crl.pem,
            revoked_count: entries.len() as u64,
        };
        let mut change = Change::new();
        change
            .op(Op::PutCrl {
                issuer: issuer.to_owned(),
                record: record.clone(),
            })
            .audit(
                AuditDraft::new(now, actor, owner_of(issuer), "crl.sign", "crl", "ok")
                    .detail("issuer", issuer)
                    .detail("crl_number", number.to_string())
                    .detail("revoked_count", entries.len().to_string()),
            );
        commit(self.registry.as_ref(), change).await?;
        // Nobody listening is fine: watchers come and go.
        let _ = self.published.send(PublishedCrl {
            issuer: issuer.to_owned(),
            record: record.clone(),
        });
        Ok(record)
    }

    /// The current CRL of `issuer`. A new one is signed when there is none, when a revocation
    /// is not on it yet (a revocation commit and its re-signing are two steps: a failure or a
    /// cancelled call between them must not leave a revoked serial off the CRL), or when half
    /// its validity has passed (a CRL past nextUpdate makes Mosquitto reject every client).
    ///
    /// # Errors
    /// As [`CrlSigner::resign`].
    pub async fn current(&self, issuer: &str) -> Result<CrlRecord, ServiceError> {
        if let Some(crl) = self.fresh(issuer)? {
            return Ok(crl);
        }
        let _signing = self.signing.lock().await;
        // Callers that found it stale together (a burst of CRL fetches) sign it once: the
        // first signs, the others find its CRL fresh here.
        if let Some(crl) = self.fresh(issuer)? {
            return Ok(crl);
        }
        self.sign_locked(issuer, "system").await
    }

    /// [`CrlSigner::current`] for relying parties (the CRL endpoint, GetCrl): while the CA's
    /// key store is away, the stored CRL as long as it is before its nextUpdate. It may lack a
    /// revocation made since, but it is a valid CRL, which beats none.
    ///
    /// # Errors
    /// As [`CrlSigner::current`], when there is no such stored CRL.
    pub async fn to_serve(&self, issuer: &str) -> Result<CrlRecord, ServiceError> {
        match self.current(issuer).await {
            Err(ServiceError::Unavailable(why)) => match self.registry.crl(issuer)? {
                Some(stored) if OffsetDateTime::now_utc() < stored.next_update => {
                    tracing::warn!(%issuer, %why, "serving the stored CRL: its CA's key store is away");
                    Ok(stored)
                }
                _ => Err(ServiceError::Unavailable(why)),
            },
            other => other,
        }
    }

    /// The stored CRL of `issuer` if it lists every revocation and is in the first half of
    /// its validity.
    fn fresh(&self, issuer: &str) -> Result<Option<CrlRecord>, ServiceError> {
        let now = OffsetDateTime::now_utc();
        let Some(crl) = self.registry.crl(issuer)? else {
            return Ok(None);
        };
        let half = (crl.next_update - crl.this_update) / 2;
        let complete = crl.revoked_count == self.registry.revoked_count(issuer)?;
        Ok((complete && now < crl.this_update + half).then_some(crl))
    }
}

impl CrlSigner {
    /// Brings every issuing CA's CRL up to date (see [`CrlSigner::current`]). One CA's failure
    /// (its key store away) does not hold up the others'.
    ///
    /// # Errors
    /// The registry's, when the CAs cannot be listed; each CA's failures are returned with its
    /// id.
    pub async fn refresh_all(&self) -> Result<Vec<(String, ServiceError)>, ServiceError> {
        let mut failures = Vec::new();
        let now = OffsetDateTime::now_utc();
        for issuer in self.authorities.crl_issuers()? {
            // An expired CA's certificates have all expired too: its last CRL is final.
            let expired = self
                .authorities
                .not_after_of(&issuer)
                .is_ok_and(|not_after| not_after <= now);
            if expired {
                continue;
            }
            if let Err(e) = self.current(&issuer).await {
                failures.push((issuer, e));
            }
        }
        Ok(failures)
    }
}

/// The owner whose audit log a CRL of `issuer` belongs to (`*` for the platform's).
fn owner_of(issuer: &str) -> &str {
    issuer.split_once('/').map_or("*", |(owner, _)| owner)
}
