//! CRLs, one per issuing CA: re-signed when a revocation is not on one yet or half its validity
//! has passed, and stored with the issuer's next CRL number.
//!
//! ```text
//!  resign(issuer): read stored number n ─▶ read revoked serials ─▶ sign CRL n+1 ─▶ commit PutCrl
//!     ├─ Ok ─────────────────────────────────────────────────────▶ the CRL (WatchCrls hears of it)
//!     └─ CrlNumberTaken (another signer, maybe on another replica, stored n+1 first)
//!          ├─ the stored CRL lists every revocation and is fresh ─▶ that CRL: nothing to sign
//!          └─ otherwise ──────────────────────────────────────────▶ read again, sign n+2 …
//! ```
//!
//! The registry orders CRL numbers ([`Op::PutCrl`] refuses a number that is not above the
//! stored one), so several signers (replicas) need no lock between them; within one process a
//! mutex still lets a burst of callers that found the CRL stale sign it once. The
//! number is read before the revoked serials: a CRL stored with a higher number was signed from
//! a list read later, and revocations only grow, so a newer CRL never lists fewer serials.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::authorities::{Authorities, sign_off_runtime};
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::CrlRecord;
use crate::pki::RevokedEntry;
use crate::store::{Change, Conflict, CrlNotice, Op, Registry, RegistryEvent, StoreError};

/// Most CRLs one call signs while other signers keep storing theirs first.
const MAX_ATTEMPTS: u32 = 5;

/// Signs and keeps every issuing CA's CRL.
#[derive(Debug)]
pub struct CrlSigner {
    registry: Arc<dyn Registry>,
    authorities: Arc<Authorities>,
    validity: Duration,
    /// Lets this process's callers that found a CRL stale together sign it once. Correctness
    /// across replicas rests on the registry's CRL numbers, not on this.
    signing: Mutex<()>,
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
        }
    }

    /// How long a CRL is valid; it is re-signed when half of it has passed.
    #[must_use]
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// Re-signs the CRL of `issuer` (a CA id) from every serial it revoked and stores it with
    /// its next CRL number; if another signer stores a CRL first, that one is returned when it
    /// is complete and fresh, else the CRL is signed again. Every CRL stored is announced as a
    /// [`RegistryEvent::CrlSigned`]. Callers hold no device lock.
    ///
    /// # Errors
    /// Registry or CA failures ([`ServiceError::Unavailable`] when its key store is, or when
    /// other signers kept winning).
    pub async fn resign(&self, issuer: &str, actor: &str) -> Result<CrlRecord, ServiceError> {
        let _signing = self.signing.lock().await;
        self.sign_locked(issuer, actor).await
    }

    /// [`CrlSigner::resign`]'s work, for a caller that holds `signing`.
    async fn sign_locked(&self, issuer: &str, actor: &str) -> Result<CrlRecord, ServiceError> {
        let ca = self.authorities.by_id(issuer).await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let now = OffsetDateTime::now_utc();
            // The number first, then the serials: see the module documentation.
            let number = self.registry.crl(issuer).await?.map_or(1, |c| c.number + 1);
            let entries: Vec<RevokedEntry> = self
                .registry
                .revoked(issuer)
                .await?
                .into_iter()
                .map(|(serial, entry)| RevokedEntry {
                    serial,
                    revoked_at: entry.revoked_at,
                    reason: entry.reason,
                })
                .collect();
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
                .event(RegistryEvent::CrlSigned(CrlNotice::of(issuer, &record)))
                .audit(
                    AuditDraft::new(now, actor, owner_of(issuer), "crl.sign", "crl", "ok")
                        .detail("issuer", issuer)
                        .detail("crl_number", number.to_string())
                        .detail("revoked_count", entries.len().to_string()),
                );
            match self.registry.commit(change).await {
                Ok(_) => return Ok(record),
                Err(StoreError::Conflict(Conflict::CrlNumberTaken { .. }))
                    if attempts < MAX_ATTEMPTS =>
                {
                    // Another signer stored a CRL since the number was read: if it lists
                    // every revocation and is fresh, it is the CRL asked for.
                    if let Some(stored) = self.fresh(issuer).await? {
                        return Ok(stored);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The current CRL of `issuer`. A new one is signed when there is none, when a revocation
    /// is not on it yet (a revocation commit and its re-signing are two steps: a failure or a
    /// cancelled call between them must not leave a revoked serial off the CRL), or when half
    /// its validity has passed (a CRL past nextUpdate makes Mosquitto reject every client).
    ///
    /// # Errors
    /// As [`CrlSigner::resign`].
    pub async fn current(&self, issuer: &str) -> Result<CrlRecord, ServiceError> {
        if let Some(crl) = self.fresh(issuer).await? {
            return Ok(crl);
        }
        let _signing = self.signing.lock().await;
        // Callers that found it stale together (a burst of CRL fetches) sign it once: the
        // first signs, the others find its CRL fresh here.
        if let Some(crl) = self.fresh(issuer).await? {
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
            Err(ServiceError::Unavailable(why)) => match self.registry.crl(issuer).await? {
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
    async fn fresh(&self, issuer: &str) -> Result<Option<CrlRecord>, ServiceError> {
        let now = OffsetDateTime::now_utc();
        let Some(crl) = self.registry.crl(issuer).await? else {
            return Ok(None);
        };
        let half = (crl.next_update - crl.this_update) / 2;
        let complete = crl.revoked_count == self.registry.revoked_count(issuer).await?;
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
        for issuer in self.authorities.crl_issuers().await? {
            // An expired CA's certificates have all expired too: its last CRL is final.
            let expired = self
                .authorities
                .not_after_of(&issuer)
                .await
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
