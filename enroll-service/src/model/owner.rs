//! Owners (tenants) and their certificate authorities, as the registry keeps them.
//!
//! ```text
//!  Managed          oxroot made the owner's root and issuing CA; both keys in the key backend
//!  OwnCa            the owner's own root signed an issuing CA whose key oxroot generated
//!                   (the CSR went out, the certificate came back)
//!  SharedPlatform   an owner from before per-owner CAs: it issues from the platform's CA until
//!                   its first rotation gives it its own
//! ```

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::pki::KeyReference;

/// How an owner's CAs came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaMode {
    /// oxroot manages the owner's root and issuing CAs.
    Managed,
    /// The owner's own root certifies issuing CAs whose keys oxroot holds.
    OwnCa,
    /// Migrated from the one-CA layout: the platform's issuing CA serves the owner.
    SharedPlatform,
}

/// Where an issuing CA is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthorityState {
    /// Its key exists and its CSR went out; the certificate has not come back.
    Pending,
    /// It issues the owner's device certificates.
    Active,
    /// A newer one issues; this one still signs its CRL until its last certificate expires.
    Retired,
}

/// One CA of an owner: a managed root or an issuing CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityRecord {
    /// `<owner>/root` or `<owner>/<n>` (n = 1, 2, … in order of creation).
    pub id: String,
    /// Where it is in its life.
    pub state: AuthorityState,
    /// Its certificate, PEM (empty while pending).
    pub certificate_pem: String,
    /// The certificates above it up to and including the root, PEM, issuer order (empty for
    /// a root).
    pub chain_pem: String,
    /// The request the owner's root must sign (bring-your-own CA), PEM.
    pub csr_pem: String,
    /// Its key.
    pub key: KeyReference,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An owner and its CAs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// The owner's name (`[a-z0-9-]`, as in operator certificates).
    pub name: String,
    /// How its CAs came to be.
    pub ca_mode: CaMode,
    /// The managed root (managed owners only).
    pub root: Option<AuthorityRecord>,
    /// Its issuing CAs, oldest first; at most one active.
    pub issuing: Vec<AuthorityRecord>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Who created it (`<owner>/<name>` of a platform operator, or `system:…`).
    pub created_by: String,
    /// The registry's version of this record, set on every read: 0 for a record not stored
    /// yet. Writing the record back is compare-and-set on it (see
    /// [`crate::store::Op::PutOwner`]). Not part of the record's encoding: the store keeps it.
    #[serde(skip)]
    pub version: u64,
}

impl OwnerRecord {
    /// The issuing CA that issues now.
    #[must_use]
    pub fn active(&self) -> Option<&AuthorityRecord> {
        self.issuing
            .iter()
            .rev()
            .find(|ca| ca.state == AuthorityState::Active)
    }

    /// The issuing CA waiting for its certificate, if any.
    #[must_use]
    pub fn pending(&self) -> Option<&AuthorityRecord> {
        self.issuing
            .iter()
            .find(|ca| ca.state == AuthorityState::Pending)
    }

    /// The id the next issuing CA gets.
    #[must_use]
    pub fn next_issuing_id(&self) -> String {
        format!("{}/{}", self.name, self.issuing.len() + 1)
    }
}
