//! The CAs the service signs with: the platform's issuing CA (operator certificates, the
//! service's own TLS certificate) and each owner's issuing CAs, built from the registry's owner
//! records on first use and kept by id.
//!
//! ```text
//!  platform           root ── platform issuing CA ──▶ operators, service TLS   (never exported)
//!  owner (managed)    owner root ── <owner>/1, <owner>/2 … ──▶ the owner's devices, brokers
//!  owner (own CA)     owner's own root ── … ── <owner>/1 (key here, CSR out) ──▶ …
//!  owner (migrated)   the platform issuing CA issues until the owner's first rotation, then
//!                     stays in its trust, retired, until it expires
//! ```
//!
//! Owner records are written compare-and-set on their version ([`Op::PutOwner`]), so two
//! replicas changing one owner's CAs at once cannot both win: the loser's rotation fails
//! (its new key was made for a record that moved on), its import is checked again. The
//! `changes` lock only keeps one replica's own calls from racing each other.
//!
//! No owner's devices chain to a certificate another owner's trust accepts: each owner has its
//! own root. Rotation makes a new issuing CA that issues from then on; the old one is retired
//! but signs its CRL until its last certificate expires, and exports carry both meanwhile.

mod firmware_signer;

pub(crate) use firmware_signer::FirmwareSigner;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use time::OffsetDateTime;
use tokio::sync::Mutex;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::{AuthorityRecord, AuthorityState, CaMode, OwnerRecord};
use crate::pki::{
    CaKey, CertificateAuthority, ISSUING_LIFETIME, KeyBackend, PLATFORM_OWNER, PkiError,
    SignerError, Validity, is_valid_owner,
};
use crate::store::{Change, Conflict, Guard, Op, Registry, StoreError, commit};

/// The id of the platform's issuing CA.
pub const PLATFORM_ISSUER: &str = "platform";

/// An issuing CA with its id.
#[derive(Clone, Debug)]
pub struct Issuer {
    /// `platform` or `<owner>/<n>`.
    pub id: String,
    /// The CA.
    pub ca: Arc<CertificateAuthority>,
}

/// Runs `work` (a signature with `ca`'s key) where it cannot stall the runtime: on a blocking
/// thread when the key is in a token, where each signature is a round trip and a token that is
/// reconnecting holds the call up to its pool's acquire timeout; in place for a key in memory,
/// whose signature costs less than the hand-off.
///
/// # Errors
/// [`ServiceError::Internal`] if the blocking task panicked.
pub(crate) async fn sign_off_runtime<T: Send + 'static>(
    ca: &Arc<CertificateAuthority>,
    work: impl FnOnce(&CertificateAuthority) -> T + Send + 'static,
) -> Result<T, ServiceError> {
    if ca.key().as_sealed().is_some() {
        return Ok(work(ca));
    }
    let ca = ca.clone();
    tokio::task::spawn_blocking(move || work(&ca))
        .await
        .map_err(|e| ServiceError::Internal(format!("a signing task failed: {e}")))
}

/// [`sign_off_runtime`] for a key that is not a CA's (an owner's firmware-signing key).
///
/// # Errors
/// [`ServiceError::Internal`] if the blocking task panicked.
pub(crate) async fn use_key_off_runtime<T: Send + 'static>(
    key: &Arc<dyn CaKey>,
    work: impl FnOnce(&dyn CaKey) -> T + Send + 'static,
) -> Result<T, ServiceError> {
    if key.as_sealed().is_some() {
        return Ok(work(key.as_ref()));
    }
    let key = key.clone();
    tokio::task::spawn_blocking(move || work(key.as_ref()))
        .await
        .map_err(|e| ServiceError::Internal(format!("a signing task failed: {e}")))
}

/// When a (not pending) CA of a record stops being valid, from its stored certificate.
fn record_not_after(authority: &AuthorityRecord) -> Result<OffsetDateTime, ServiceError> {
    let id = &authority.id;
    let der = pem::parse(&authority.certificate_pem)
        .map_err(|e| ServiceError::Internal(format!("stored certificate of {id}: {e}")))?
        .into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| ServiceError::Internal(format!("stored certificate of {id}: {e}")))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// The platform's and every owner's CAs.
#[derive(Debug)]
pub struct Authorities {
    registry: Arc<dyn Registry>,
    platform: Arc<CertificateAuthority>,
    keys: KeyBackend,
    built: RwLock<HashMap<String, Arc<CertificateAuthority>>>,
    /// Owners' firmware-signing keys opened so far, by signer id.
    firmware_keys: RwLock<HashMap<String, Arc<dyn CaKey>>>,
    /// One change of an owner's CAs at a time on this replica (create, rotate, import), so that
    /// its own calls do not conflict; the record's version guards against other replicas.
    changes: Mutex<()>,
}

/// The authority key identifier a certificate names, if any.
fn authority_key_id(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
}

impl Authorities {
    /// The CAs over a registry, with the platform's CA and the backend owners' keys live in.
    #[must_use]
    pub fn new(
        registry: Arc<dyn Registry>,
        platform: Arc<CertificateAuthority>,
        keys: KeyBackend,
    ) -> Self {
        Self {
            registry,
            platform,
            keys,
            built: RwLock::new(HashMap::new()),
            firmware_keys: RwLock::new(HashMap::new()),
            changes: Mutex::new(()),
        }
    }

    /// Whether the key store answers now: the token new keys go to, and the store of the
    /// platform's key (which signs every operator certificate check's CRL). Blocking: call it
    /// off the async threads.
    ///
    /// # Errors
    /// [`SignerError::Unavailable`] while a store is away.
    pub fn probe(&self) -> Result<(), SignerError> {
        self.keys.probe()?;
        self.platform.key().probe()
    }

    /// Where new CA keys go: `sealed` or the token's URI.
    #[must_use]
    pub fn key_store(&self) -> String {
        self.keys.describe()
    }

    /// The platform's issuing CA.
    #[must_use]
    pub fn platform(&self) -> &Arc<CertificateAuthority> {
        &self.platform
    }

    /// The owner's record.
    ///
    /// # Errors
    /// [`ServiceError::FailedPrecondition`] when the owner has no CA yet.
    pub async fn owner(&self, owner: &str) -> Result<OwnerRecord, ServiceError> {
        self.registry.owner(owner).await?.ok_or_else(|| {
            ServiceError::FailedPrecondition(format!(
                "owner {owner} has no certificate authority yet: a platform admin creates it \
                 (enrollctl owner create {owner})"
            ))
        })
    }

    /// The CA that issues the owner's device certificates now.
    ///
    /// # Errors
    /// [`ServiceError::FailedPrecondition`] when the owner has no active CA; registry and key
    /// failures.
    pub async fn issuing(&self, owner: &str) -> Result<Issuer, ServiceError> {
        self.issuing_from(&self.owner(owner).await?)
    }

    /// [`Authorities::issuing`] of an owner record already read.
    ///
    /// # Errors
    /// As [`Authorities::issuing`], without the read.
    pub fn issuing_from(&self, record: &OwnerRecord) -> Result<Issuer, ServiceError> {
        let owner = &record.name;
        match record.active() {
            Some(active) => Ok(Issuer {
                id: active.id.clone(),
                ca: self.build(record, active)?,
            }),
            None if record.ca_mode == CaMode::SharedPlatform => Ok(self.platform_issuer()),
            None => Err(ServiceError::FailedPrecondition(format!(
                "owner {owner}'s issuing CA waits for its certificate (enrollctl owner \
                 import-ca {owner})"
            ))),
        }
    }

    /// Every CA of the owner that can still have valid certificates out: the active one first,
    /// then retired ones not yet expired (for a migrated owner, the platform's last). Their
    /// CRLs are the owner's; exports carry them all.
    ///
    /// # Errors
    /// As [`Authorities::issuing`].
    pub async fn live(&self, owner: &str) -> Result<Vec<Issuer>, ServiceError> {
        let record = self.owner(owner).await?;
        let now = OffsetDateTime::now_utc();
        let mut live = Vec::new();
        for state in [AuthorityState::Active, AuthorityState::Retired] {
            for authority in record.issuing.iter().rev().filter(|a| a.state == state) {
                let ca = self.build(&record, authority)?;
                if ca.not_after() > now {
                    live.push(Issuer {
                        id: authority.id.clone(),
                        ca,
                    });
                }
            }
        }
        if record.ca_mode == CaMode::SharedPlatform && self.platform.not_after() > now {
            live.push(self.platform_issuer());
        }
        Ok(live)
    }

    /// The CA of an id: `platform` or an owner's issuing CA.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] for an unknown id.
    pub async fn by_id(&self, id: &str) -> Result<Arc<CertificateAuthority>, ServiceError> {
        if id == PLATFORM_ISSUER {
            return Ok(self.platform.clone());
        }
        let (record, authority) = self.signing_record(id).await?;
        self.build(&record, &authority)
    }

    /// The owner's record and the record of its CA `id`, which must be active or retired (a
    /// pending CA signs nothing).
    async fn signing_record(
        &self,
        id: &str,
    ) -> Result<(OwnerRecord, AuthorityRecord), ServiceError> {
        let owner = id.split('/').next().unwrap_or_default();
        let record = self
            .registry
            .owner(owner)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("CA {id}")))?;
        let authority = record
            .issuing
            .iter()
            .find(|a| a.id == id && a.state != AuthorityState::Pending)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(format!("CA {id}")))?;
        Ok((record, authority))
    }

    /// When the CA `id` (not pending) stops being valid, read from its record's certificate
    /// without opening its key: enough to tell whether it still has a CRL to serve while its
    /// key store is away.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] for a CA that does not exist or is pending; registry
    /// failures; [`ServiceError::Internal`] for a stored certificate that does not parse.
    pub async fn not_after_of(&self, id: &str) -> Result<OffsetDateTime, ServiceError> {
        if id == PLATFORM_ISSUER {
            return Ok(self.platform.not_after());
        }
        let (_, authority) = self.signing_record(id).await?;
        record_not_after(&authority)
    }

    /// The ids of [`Authorities::live`], newest active first, read from the owner's record
    /// without opening any key (a CRL can be served while the key store is away).
    ///
    /// # Errors
    /// As [`Authorities::not_after_of`].
    pub async fn live_ids(&self, owner: &str) -> Result<Vec<String>, ServiceError> {
        let record = self.owner(owner).await?;
        let now = OffsetDateTime::now_utc();
        let mut live = Vec::new();
        for state in [AuthorityState::Active, AuthorityState::Retired] {
            for authority in record.issuing.iter().rev().filter(|a| a.state == state) {
                if record_not_after(authority)? > now {
                    live.push(authority.id.clone());
                }
            }
        }
        if record.ca_mode == CaMode::SharedPlatform && self.platform.not_after() > now {
            live.push(PLATFORM_ISSUER.to_owned());
        }
        Ok(live)
    }

    /// Which of the owner's CAs (or the platform's) issued a certificate, by its authority key
    /// identifier.
    ///
    /// # Errors
    /// [`ServiceError::Internal`] when none did: the registry holds a certificate no known CA
    /// signed.
    pub async fn issuer_of(
        &self,
        owner: &str,
        certificate_pem: &str,
    ) -> Result<Issuer, ServiceError> {
        let der = pem::parse(certificate_pem)
            .map_err(|e| ServiceError::Internal(format!("stored certificate: {e}")))?
            .into_contents();
        let aki = authority_key_id(&der);
        // An owner without CAs of its own (certificates of the platform's) has none live; a
        // key store that is away is an outage, not a certificate nobody issued.
        let mut candidates = match self.live(owner).await {
            Ok(live) => live,
            Err(unavailable @ ServiceError::Unavailable(_)) => return Err(unavailable),
            Err(_) => Vec::new(),
        };
        if let Ok(record) = self.owner(owner).await {
            // Expired ones too: a certificate on record may outlive nothing, but its revocation
            // still has to name the CA that signed it.
            for authority in record
                .issuing
                .iter()
                .filter(|a| a.state == AuthorityState::Retired)
            {
                if !candidates.iter().any(|c| c.id == authority.id) {
                    candidates.push(Issuer {
                        id: authority.id.clone(),
                        ca: self.build(&record, authority)?,
                    });
                }
            }
        }
        candidates.push(self.platform_issuer());
        candidates
            .into_iter()
            .find(|issuer| aki.as_deref() == Some(issuer.ca.key_id()))
            .ok_or_else(|| {
                ServiceError::Internal(format!(
                    "no CA of owner {owner} or of the platform issued a stored certificate"
                ))
            })
    }

    /// Every issuing CA that has or may have a CRL: the platform's and every owner's that is
    /// not pending (retired ones included: they sign their CRL until they expire).
    ///
    /// # Errors
    /// Registry failures.
    pub async fn crl_issuers(&self) -> Result<Vec<String>, ServiceError> {
        let mut ids = vec![PLATFORM_ISSUER.to_owned()];
        let mut after: Option<String> = None;
        loop {
            let page = self.registry.owners(after.as_deref(), 256).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            ids.extend(page.iter().flat_map(signing_ids));
        }
        Ok(ids)
    }

    /// The owner's issuing CAs that have or may have a CRL (see [`Authorities::crl_issuers`]).
    ///
    /// # Errors
    /// As [`Authorities::owner`].
    pub async fn crl_issuers_of(&self, owner: &str) -> Result<Vec<String>, ServiceError> {
        let record = self.owner(owner).await?;
        let mut ids = signing_ids(&record);
        if record.ca_mode == CaMode::SharedPlatform {
            ids.push(PLATFORM_ISSUER.to_owned());
        }
        Ok(ids)
    }

    fn platform_issuer(&self) -> Issuer {
        Issuer {
            id: PLATFORM_ISSUER.to_owned(),
            ca: self.platform.clone(),
        }
    }

    /// The CA of a record, built once (its key opened) and kept.
    fn build(
        &self,
        owner: &OwnerRecord,
        authority: &AuthorityRecord,
    ) -> Result<Arc<CertificateAuthority>, ServiceError> {
        if let Some(ca) = self
            .built
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&authority.id)
        {
            return Ok(ca.clone());
        }
        let key = self.keys.open(&authority.id, &authority.key)?;
        // A root's chain is empty: it is its own. `import` reads that as a chain that repeats
        // the certificate (an empty chain text is no chain at all to it).
        let chain_pem = if authority.chain_pem.trim().is_empty() {
            &authority.certificate_pem
        } else {
            &authority.chain_pem
        };
        let ca = Arc::new(CertificateAuthority::import(
            &authority.certificate_pem,
            chain_pem,
            key,
        )?);
        tracing::debug!(owner = %owner.name, ca = %authority.id, key = %authority.key.location(), "CA opened");
        self.built
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(authority.id.clone(), ca.clone());
        Ok(ca)
    }

    /// Creates an owner with its CAs: managed (a root and an issuing CA, both keys in the
    /// backend, active at once) or its own (an issuing key in the backend and a CSR for the
    /// owner's root to sign; it issues once [`Authorities::import_certificate`] brings the
    /// certificate back).
    ///
    /// # Errors
    /// [`ServiceError::InvalidArgument`] for a bad name or mode; [`ServiceError::AlreadyExists`]
    /// for an owner that has one; key and registry failures.
    pub async fn create_owner(
        &self,
        name: &str,
        mode: CaMode,
        organisation: &str,
        actor: &str,
    ) -> Result<OwnerRecord, ServiceError> {
        if name == PLATFORM_OWNER || !is_valid_owner(name) {
            return Err(ServiceError::invalid(
                "name",
                "an owner is 1 to 63 characters of [a-z0-9-], starting with a letter or digit",
            ));
        }
        let _change = self.changes.lock().await;
        if self.registry.owner(name).await?.is_some() {
            return Err(ServiceError::AlreadyExists(format!("owner {name}")));
        }
        let now = OffsetDateTime::now_utc();
        let organisation = if organisation.is_empty() {
            name
        } else {
            organisation
        };
        let (root, issuing) = match mode {
            CaMode::Managed => {
                let (root, root_record) = self.new_root(name, organisation, now)?;
                let issuing = self.new_issuing(&root, name, organisation, 1, now)?;
                (Some(root_record), issuing)
            }
            CaMode::OwnCa => (None, self.new_pending(name, organisation, 1, now)?),
            CaMode::SharedPlatform => {
                return Err(ServiceError::invalid(
                    "ca_mode",
                    "a new owner's CA is managed or its own; sharing the platform's is only \
                     for owners migrated from the one-CA layout",
                ));
            }
        };
        let record = OwnerRecord {
            name: name.to_owned(),
            ca_mode: mode,
            root,
            issuing: vec![issuing],
            created_at: now,
            // The contract's `<owner>/<name>` (as policies and batches record it), not the
            // audit actor's `operator:` form; `system:…` stays as it is.
            created_by: actor.strip_prefix("operator:").unwrap_or(actor).to_owned(),
            version: 0,
        };
        let mut change = Change::new();
        change
            .guard(Guard::OwnerAbsent(name.to_owned()))
            .op(Op::PutOwner(Box::new(record.clone())))
            .audit(
                AuditDraft::new(
                    now,
                    actor,
                    name,
                    "owner.create",
                    format!("owner:{name}"),
                    "ok",
                )
                .detail("ca_mode", format!("{mode:?}"))
                .detail("issuing_ca", record.issuing[0].id.clone())
                .detail("key", record.issuing[0].key.location()),
            );
        match commit(self.registry.as_ref(), change).await {
            Ok(_) => Ok(record),
            // Another replica created it meanwhile (the keys made here stay unused).
            Err(StoreError::Conflict(Conflict::OwnerExists(_))) => {
                Err(ServiceError::AlreadyExists(format!("owner {name}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The owner, created managed if it has no record yet (the first operator a platform
    /// admin issues for a new owner, the demo's and the test harnesses' owners).
    ///
    /// # Errors
    /// As [`Authorities::create_owner`].
    pub async fn ensure_owner(&self, name: &str, actor: &str) -> Result<OwnerRecord, ServiceError> {
        if let Some(record) = self.registry.owner(name).await? {
            return Ok(record);
        }
        match self.create_owner(name, CaMode::Managed, "", actor).await {
            Err(ServiceError::AlreadyExists(_)) => self.owner(name).await,
            other => other,
        }
    }

    /// Gives every owner from before per-owner CAs (it has policies or operators but no owner
    /// record) a record that keeps issuing from the platform's CA, so that its devices and
    /// brokers keep their trust; its first rotation gives it a root of its own. Returns the
    /// owners adopted. Idempotent: the service runs it at every start.
    ///
    /// # Errors
    /// Registry failures.
    pub async fn adopt_legacy_owners(&self) -> Result<Vec<String>, ServiceError> {
        let mut names = std::collections::BTreeSet::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let page = self
                .registry
                .policies(
                    None,
                    after.as_ref().map(|(o, n)| (o.as_str(), n.as_str())),
                    256,
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.owner.clone(), last.name.clone()));
            names.extend(page.into_iter().map(|policy| policy.owner));
        }
        let mut after = None;
        loop {
            let page = self
                .registry
                .operator_certificates(None, after, 256)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.serial);
            names.extend(page.into_iter().map(|operator| operator.owner));
        }
        let _change = self.changes.lock().await;
        let mut adopted = Vec::new();
        for name in names {
            if name == PLATFORM_OWNER || self.registry.owner(&name).await?.is_some() {
                continue;
            }
            let now = OffsetDateTime::now_utc();
            let record = OwnerRecord {
                name: name.clone(),
                ca_mode: CaMode::SharedPlatform,
                root: None,
                issuing: Vec::new(),
                created_at: now,
                created_by: "system:migration".to_owned(),
                version: 0,
            };
            let mut change = Change::new();
            change
                .guard(Guard::OwnerAbsent(name.clone()))
                .op(Op::PutOwner(Box::new(record)))
                .audit(AuditDraft::new(
                    now,
                    "system:migration",
                    &name,
                    "owner.adopt",
                    format!("owner:{name}"),
                    "ok",
                ));
            match commit(self.registry.as_ref(), change).await {
                Ok(_) => adopted.push(name),
                // Another replica starting at the same time adopted it.
                Err(StoreError::Conflict(Conflict::OwnerExists(_))) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(adopted)
    }

    /// Takes the owner's root's certificate for its pending issuing CA (bring your own CA),
    /// checks it (the key is the one generated here, every certificate a CA, each signed by the
    /// next up to a self-signed root, no path length exceeded) and makes it the active CA; the
    /// previously active one is retired.
    ///
    /// # Errors
    /// [`ServiceError::FailedPrecondition`] when nothing is pending; the checks'
    /// [`ServiceError::InvalidArgument`].
    pub async fn import_certificate(
        &self,
        owner: &str,
        certificate_pem: &str,
        chain_pem: &str,
        actor: &str,
    ) -> Result<OwnerRecord, ServiceError> {
        let _change = self.changes.lock().await;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (record, pending_id) = self.imported(owner, certificate_pem, chain_pem).await?;
            let now = OffsetDateTime::now_utc();
            match self
                .commit_owner(&record, actor, "owner.import_ca", &pending_id, now)
                .await
            {
                Ok(()) => return Ok(record),
                // Changed by another replica meanwhile: check the certificate against the
                // record as it is now (nothing was made for this attempt but the record).
                Err(StoreError::Conflict(Conflict::OwnerChanged { .. })) if attempts < 3 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The owner's record with `certificate_pem` made its active issuing CA, checked, and the
    /// id of the CA that was pending.
    async fn imported(
        &self,
        owner: &str,
        certificate_pem: &str,
        chain_pem: &str,
    ) -> Result<(OwnerRecord, String), ServiceError> {
        let mut record = self.owner(owner).await?;
        let pending = record.pending().cloned().ok_or_else(|| {
            ServiceError::FailedPrecondition(format!(
                "owner {owner} has no issuing CA waiting for a certificate"
            ))
        })?;
        let key = self.keys.open(&pending.id, &pending.key)?;
        let ca = CertificateAuthority::import(certificate_pem, chain_pem, key).map_err(|e| {
            let message = match e {
                // The importer never had the key: what is wrong is the certificate's.
                PkiError::KeyMismatch(_) => format!(
                    "certifies another public key than {}'s, the key of the CSR the service \
                     made for it",
                    pending.id
                ),
                // Subjects from the owner's certificates pass as they are: each client escapes
                // them for where it shows them (enrollctl for a terminal, the console for a page).
                other => other.to_string(),
            };
            ServiceError::invalid("certificate_pem", message)
        })?;
        let now = OffsetDateTime::now_utc();
        // A certificate that is not valid now, or a chain above it that is not, would make
        // every leaf it signs fail at once.
        if ca.not_before() > now + time::Duration::minutes(5) || ca.not_after() <= now {
            return Err(ServiceError::invalid(
                "certificate_pem",
                format!(
                    "is not valid now: valid from {} until {}",
                    ca.not_before(),
                    ca.not_after()
                ),
            ));
        }
        for der in crate::pki::certs_pem_to_der("chain", chain_pem)
            .map_err(|e| ServiceError::invalid("chain_pem", e.to_string()))?
        {
            let (_, cert) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| ServiceError::invalid("chain_pem", e.to_string()))?;
            let validity = cert.validity();
            if !validity.is_valid_at(x509_parser::time::ASN1Time::from(now)) {
                return Err(ServiceError::invalid(
                    "chain_pem",
                    format!(
                        "\"{}\" is not valid now: valid from {} until {}",
                        cert.subject(),
                        validity.not_before,
                        validity.not_after
                    ),
                ));
            }
        }
        for authority in &mut record.issuing {
            if authority.state == AuthorityState::Active {
                authority.state = AuthorityState::Retired;
            }
            if authority.id == pending.id {
                authority.state = AuthorityState::Active;
                authority.certificate_pem = ca.certificate_pem();
                authority.chain_pem = chain_without(certificate_pem, chain_pem)?;
                authority.csr_pem.clear();
            }
        }
        Ok((record, pending.id))
    }

    /// Rotates the owner's issuing CA. Managed: a new issuing CA under the owner's root is
    /// active at once and the old one retired. Own CA: a new key and CSR wait for the owner's
    /// root (the old one issues until the certificate comes back). Shared (migrated): the owner
    /// gets its own managed root and issuing CA, and stops issuing from the platform's.
    ///
    /// # Errors
    /// [`ServiceError::FailedPrecondition`] when a CSR is already pending; key and registry
    /// failures.
    pub async fn rotate(&self, owner: &str, actor: &str) -> Result<OwnerRecord, ServiceError> {
        let _change = self.changes.lock().await;
        let mut record = self.owner(owner).await?;
        if record.pending().is_some() {
            return Err(ServiceError::FailedPrecondition(format!(
                "owner {owner} already has an issuing CA waiting for its certificate"
            )));
        }
        let now = OffsetDateTime::now_utc();
        let number = record.issuing.len() + 1;
        let new = match record.ca_mode {
            CaMode::OwnCa => self.new_pending(owner, owner, number, now)?,
            CaMode::Managed | CaMode::SharedPlatform => {
                let root = if let Some(root) = &record.root {
                    self.build(&record, root)?
                } else {
                    let (root, root_record) = self.new_root(owner, owner, now)?;
                    // A migrated owner keeps its mode: the platform's CA stays in its trust,
                    // retired, until it expires.
                    record.root = Some(root_record);
                    Arc::new(root)
                };
                let new = self.new_issuing(&root, owner, owner, number, now)?;
                for authority in &mut record.issuing {
                    if authority.state == AuthorityState::Active {
                        authority.state = AuthorityState::Retired;
                    }
                }
                new
            }
        };
        let id = new.id.clone();
        record.issuing.push(new);
        match self
            .commit_owner(&record, actor, "owner.rotate_ca", &id, now)
            .await
        {
            Ok(()) => Ok(record),
            // Not retried: the new key was made for the record as it was, and a second
            // rotation is the caller's decision (the key made here stays unused).
            Err(StoreError::Conflict(Conflict::OwnerChanged { .. })) => {
                Err(ServiceError::FailedPrecondition(format!(
                    "owner {owner}'s CAs changed while this rotation was prepared (another \
                     replica rotated or imported); look at the owner and rotate again if still \
                     needed"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Commits an owner record read (and changed) by this call, compare-and-set on its version.
    async fn commit_owner(
        &self,
        record: &OwnerRecord,
        actor: &str,
        action: &str,
        ca: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut change = Change::new();
        change.op(Op::PutOwner(Box::new(record.clone()))).audit(
            AuditDraft::new(
                now,
                actor,
                &record.name,
                action,
                format!("owner:{}", record.name),
                "ok",
            )
            .detail("issuing_ca", ca),
        );
        commit(self.registry.as_ref(), change).await?;
        Ok(())
    }

    /// A new managed root for the owner, and its record.
    fn new_root(
        &self,
        owner: &str,
        organisation: &str,
        now: OffsetDateTime,
    ) -> Result<(CertificateAuthority, AuthorityRecord), PkiError> {
        let id = format!("{owner}/root");
        let (key, reference) = self.keys.generate(&id)?;
        let root = CertificateAuthority::new_root(
            organisation,
            &format!("oxroot {owner} Root CA"),
            now,
            key,
        )?;
        let record = AuthorityRecord {
            id,
            state: AuthorityState::Active,
            certificate_pem: root.certificate_pem(),
            chain_pem: String::new(),
            csr_pem: String::new(),
            key: reference,
            created_at: now,
        };
        Ok((root, record))
    }

    /// A new issuing CA number `number` under a managed root, active.
    fn new_issuing(
        &self,
        root: &CertificateAuthority,
        owner: &str,
        organisation: &str,
        number: usize,
        now: OffsetDateTime,
    ) -> Result<AuthorityRecord, PkiError> {
        let id = format!("{owner}/{number}");
        let (key, reference) = self.keys.generate(&id)?;
        let issued = root.issue_ca_certificate(
            organisation,
            &format!("oxroot {owner} Issuing CA {number}"),
            Validity::starting(now, ISSUING_LIFETIME)?,
            key.public_key(),
        )?;
        Ok(AuthorityRecord {
            id,
            state: AuthorityState::Active,
            certificate_pem: issued.pem,
            chain_pem: root.certificate_pem(),
            csr_pem: String::new(),
            key: reference,
            created_at: now,
        })
    }

    /// A new issuing key number `number` and its CSR, pending the owner's root.
    fn new_pending(
        &self,
        owner: &str,
        organisation: &str,
        number: usize,
        now: OffsetDateTime,
    ) -> Result<AuthorityRecord, PkiError> {
        let id = format!("{owner}/{number}");
        let (key, reference) = self.keys.generate(&id)?;
        let csr_pem = CertificateAuthority::certificate_request(
            organisation,
            &format!("oxroot {owner} Issuing CA {number}"),
            key,
        )?;
        Ok(AuthorityRecord {
            id,
            state: AuthorityState::Pending,
            certificate_pem: String::new(),
            chain_pem: String::new(),
            csr_pem,
            key: reference,
            created_at: now,
        })
    }
}

/// The ids of an owner's issuing CAs that are not pending.
fn signing_ids(record: &OwnerRecord) -> Vec<String> {
    record
        .issuing
        .iter()
        .filter(|a| a.state != AuthorityState::Pending)
        .map(|a| a.id.clone())
        .collect()
}

/// The chain above an imported CA, as the record keeps it: the chain file without the CA's own
/// certificate, if the file repeats it.
fn chain_without(certificate_pem: &str, chain_pem: &str) -> Result<String, ServiceError> {
    let own = crate::pki::cert_pem_to_der("certificate_pem", certificate_pem)
        .map_err(|e| ServiceError::invalid("certificate_pem", e.to_string()))?;
    let chain = crate::pki::certs_pem_to_der("chain_pem", chain_pem)
        .map_err(|e| ServiceError::invalid("chain_pem", e.to_string()))?;
    Ok(chain
        .iter()
        .filter(|der| **der != own)
        .map(|der| crate::pki::certificate_pem(der))
        .collect())
}
