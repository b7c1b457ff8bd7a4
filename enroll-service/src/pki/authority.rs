//! A certificate authority: one CA certificate, the certificates above it up to its root, and
//! the key that signs for it ([`CaKey`]). The platform's issuing CA (operators, the service's
//! TLS) is one; each owner's issuing CA is another, and a managed owner's root a third kind.
//! What a CA signs is in [`super::issue`]; the certificates' contents in [`super::profile`];
//! the platform's files on disk in [`super::ca_directory`].
//!
//! ```text
//!  root (self-signed) ─ [intermediates…] ─ this CA ──signs──▶ leaves, CRLs, CA certificates
//! ```

use std::fmt;
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::KeyUsage;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::keystore::pem_encode;
use super::profile::ca_params;
use super::signer::{CaKey, SealedKey, SigningKeyOf};
use super::{CaNames, IssuedCertificate, PkiError, PrivateKeyPkcs8, Validity};

/// A root's lifetime.
pub const ROOT_LIFETIME: Duration = Duration::days(20 * 365);
/// An issuing CA's lifetime.
pub const ISSUING_LIFETIME: Duration = Duration::days(10 * 365);

/// One CA with its key, ready to sign.
pub struct CertificateAuthority {
    /// This CA's certificate, DER and PEM.
    pub(super) der: Vec<u8>,
    pub(super) pem: String,
    /// The certificates between this CA and its root, issuer order (empty when the root signed
    /// it directly, or when this is the root).
    pub(super) intermediates_pem: Vec<String>,
    /// The trust anchor: the root's certificate (this one's, for a root).
    pub(super) root_der: Vec<u8>,
    pub(super) root_pem: String,
    pub(super) ski: Vec<u8>,
    pub(super) not_before: OffsetDateTime,
    pub(super) not_after: OffsetDateTime,
    pub(super) issuer: Issuer<'static, SigningKeyOf>,
    pub(super) key: Arc<dyn CaKey>,
    /// The platform root's key while `init` holds it (to be sealed and taken offline).
    pub(super) root_key: Option<Arc<dyn CaKey>>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("key", &format_args!("{} [REDACTED]", self.key.location()))
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

pub(super) fn parse_cert<'a>(
    what: &'static str,
    der: &'a [u8],
) -> Result<X509Certificate<'a>, PkiError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::parse(what, e))?;
    if !rest.is_empty() {
        return Err(PkiError::parse(
            what,
            "trailing bytes after the certificate",
        ));
    }
    Ok(cert)
}

/// The DER of a single PEM certificate.
///
/// # Errors
/// [`PkiError::Parse`] naming `what`.
pub fn cert_pem_to_der(what: &'static str, pem_text: &str) -> Result<Vec<u8>, PkiError> {
    let block = pem::parse(pem_text).map_err(|e| PkiError::parse(what, e))?;
    if block.tag() != "CERTIFICATE" {
        return Err(PkiError::parse(
            what,
            format!("expected a CERTIFICATE PEM block, found {}", block.tag()),
        ));
    }
    Ok(block.into_contents())
}

/// Every certificate of a PEM text (a chain file), in order.
///
/// # Errors
/// [`PkiError::Parse`] naming `what`, also for a text with no certificate.
pub fn certs_pem_to_der(what: &'static str, pem_text: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| PkiError::parse(what, e))?;
    let ders: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if ders.is_empty() {
        return Err(PkiError::parse(what, "no CERTIFICATE PEM block"));
    }
    Ok(ders)
}

/// The path length a CA certificate allows below it, if constrained.
fn path_len(what: &'static str, cert: &X509Certificate<'_>) -> Result<Option<u32>, PkiError> {
    let constraints = cert
        .basic_constraints()
        .map_err(|e| PkiError::parse(what, e))?
        .filter(|bc| bc.value.ca)
        .ok_or(PkiError::NotCa(what))?;
    Ok(constraints.value.path_len_constraint)
}

fn subject_key_id(what: &'static str, cert: &X509Certificate<'_>) -> Result<Vec<u8>, PkiError> {
    use x509_parser::extensions::ParsedExtension;
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
        .ok_or_else(|| PkiError::parse(what, "no subject key identifier"))
}

/// Checks that `key` holds the private half of `cert`'s public key.
fn check_key_matches(
    what: &'static str,
    cert: &X509Certificate<'_>,
    key: &dyn CaKey,
) -> Result<(), PkiError> {
    if cert.public_key().subject_public_key.data.as_ref() == key.public_key() {
        Ok(())
    } else {
        Err(PkiError::KeyMismatch(what))
    }
}

/// Checks a chain from a CA certificate up to a self-signed root: every certificate a CA
/// whose key may sign certificates, each signed by the next, the root by itself, and no path length exceeded.
fn check_chain(ca_der: &[u8], above: &[Vec<u8>]) -> Result<(), PkiError> {
    const WHAT: &str = "CA certificate chain";
    let mut chain = vec![parse_cert("CA certificate", ca_der)?];
    for der in above {
        chain.push(parse_cert(WHAT, der)?);
    }
    for (depth, cert) in chain.iter().enumerate() {
        // Below the certificate at `depth` the path holds `depth` CA certificates (this CA's
        // included) before the leaf: its path length (RFC 5280 §4.2.1.9) must allow them.
        let limit = path_len(WHAT, cert)?;
        // RFC 5280 §4.2.1.3: a CA's certificate must say its key signs certificates; one that
        // does not would make every leaf it signs fail at the relying party instead of here.
        let usage = cert
            .key_usage()
            .map_err(|e| PkiError::parse(WHAT, e))?
            .map(|usage| *usage.value);
        if !usage.as_ref().is_some_and(KeyUsage::key_cert_sign) {
            return Err(PkiError::NotIssuedByRoot(format!(
                "\"{}\" has no keyUsage keyCertSign: its key may not sign certificates",
                cert.subject()
            )));
        }
        // The CA itself also signs its CRLs, which relying parties refuse without cRLSign.
        if depth == 0 && !usage.as_ref().is_some_and(KeyUsage::crl_sign) {
            return Err(PkiError::NotIssuedByRoot(format!(
                "\"{}\" has no keyUsage cRLSign: its key may not sign the CRLs it must publish",
                cert.subject()
            )));
        }
        if let Some(limit) = limit
            && (depth as u64) > u64::from(limit)
        {
            return Err(PkiError::NotIssuedByRoot(format!(
                "\"{}\" allows {limit} CA certificate(s) below it, the chain puts {depth} there",
                cert.subject()
            )));
        }
        let issuer = chain.get(depth + 1).unwrap_or(cert);
        if cert.issuer() != issuer.subject() {
            return Err(PkiError::NotIssuedByRoot(format!(
                "issuer \"{}\" of \"{}\" is not the next certificate's subject \"{}\"",
                cert.issuer(),
                cert.subject(),
                issuer.subject()
            )));
        }
        cert.verify_signature(Some(issuer.public_key()))
            .map_err(|e| {
                PkiError::NotIssuedByRoot(format!(
                    "the signature on \"{}\" does not verify: {e}",
                    cert.subject()
                ))
            })?;
    }
    Ok(())
}

impl CertificateAuthority {
    /// [`CertificateAuthority::initialise_with`] fresh software keys (the `sealed` backend).
    ///
    /// # Errors
    /// As [`CertificateAuthority::initialise_with`], and [`PkiError::Random`].
    pub fn initialise(names: &CaNames, now: OffsetDateTime) -> Result<Self, PkiError> {
        Self::initialise_with(
            names,
            now,
            Arc::new(SealedKey::generate("root.key.enc")?),
            Arc::new(SealedKey::generate("intermediate.key.enc")?),
        )
    }

    /// Creates the platform's root (self-signed, CA pathlen 1, 20 years) and issuing CA (CA
    /// pathlen 0, 10 years), both valid from `now`, with the given keys.
    ///
    /// # Errors
    /// [`PkiError::Certificate`] if rcgen refuses the parameters (e.g. an unencodable name)
    /// or a key fails to sign.
    pub fn initialise_with(
        names: &CaNames,
        now: OffsetDateTime,
        root_key: Arc<dyn CaKey>,
        issuing_key: Arc<dyn CaKey>,
    ) -> Result<Self, PkiError> {
        let root = Self::new_root(&names.organisation, &names.root_common_name, now, root_key)?;
        let issued = root.issue_ca_certificate(
            &names.organisation,
            &names.intermediate_common_name,
            Validity::starting(now, ISSUING_LIFETIME)?,
            issuing_key.public_key(),
        )?;
        let mut issuing = Self::assemble(&issued.der, &[], &root.der, issuing_key)?;
        issuing.root_key = Some(root.key.clone());
        Ok(issuing)
    }

    /// A new self-signed root for `key` (CA pathlen 1, 20 years from `now`): a managed owner's
    /// root, or the platform's.
    ///
    /// # Errors
    /// As [`CertificateAuthority::initialise`].
    pub fn new_root(
        organisation: &str,
        common_name: &str,
        now: OffsetDateTime,
        key: Arc<dyn CaKey>,
    ) -> Result<Self, PkiError> {
        let params = ca_params(
            organisation,
            common_name,
            Validity::starting(now, ROOT_LIFETIME)?,
            1,
        )?;
        let signer = SigningKeyOf::new(key.clone());
        let certificate = params
            .self_signed(&signer)
            .map_err(|e| Self::signing_error(&signer, e))?;
        Self::assemble(certificate.der(), &[], certificate.der(), key)
    }

    /// Uses an existing issuing CA whose key is a PKCS#8 PEM (e.g. one signed by an
    /// organisation's own offline root, at `init --import-intermediate`). The root's key is
    /// not needed and not held.
    ///
    /// # Errors
    /// [`PkiError::Parse`] for unreadable PEM or a key that is not PKCS#8 P-256, and the
    /// checks of [`CertificateAuthority::import`].
    pub fn import_intermediate(
        cert_pem: &str,
        key_pkcs8_pem: &str,
        root_pem: &str,
    ) -> Result<Self, PkiError> {
        const WHAT: &str = "intermediate private key";
        let key_pem = pem::parse(key_pkcs8_pem).map_err(|e| PkiError::parse(WHAT, e))?;
        let is_pkcs8 = key_pem.tag() == "PRIVATE KEY";
        // Moved into a zeroizing wrapper before anything can return early.
        let key_der = PrivateKeyPkcs8::new(key_pem.into_contents());
        if !is_pkcs8 {
            return Err(PkiError::parse(
                WHAT,
                "expected a PKCS#8 \"PRIVATE KEY\" PEM block",
            ));
        }
        let key = SealedKey::from_pkcs8(key_der, "intermediate.key.enc")?;
        Self::import(cert_pem, root_pem, Arc::new(key))
    }

    /// Uses an existing CA certificate for `key`: an issuing CA signed by an organisation's own
    /// root (with `above`, its chain up to and including that root, in issuer order). Checks
    /// that every certificate is a CA, that each is signed by the next up to a self-signed
    /// root, that no path length is exceeded and that `key` is this CA's.
    ///
    /// # Errors
    /// [`PkiError::Parse`], [`PkiError::NotCa`], [`PkiError::NotIssuedByRoot`],
    /// [`PkiError::KeyMismatch`].
    pub fn import(
        certificate_pem: &str,
        chain_pem: &str,
        key: Arc<dyn CaKey>,
    ) -> Result<Self, PkiError> {
        let der = cert_pem_to_der("CA certificate", certificate_pem)?;
        let mut above = certs_pem_to_der("CA certificate chain", chain_pem)?;
        // Accept a chain file that repeats the CA certificate itself first.
        if above.first() == Some(&der) {
            above.remove(0);
        }
        // An empty chain: the certificate is its own root (a managed owner's root).
        let root = above.pop().unwrap_or_else(|| der.clone());
        Self::assemble(&der, &above, &root, key)
    }

    /// Validates the pieces against each other and builds the issuer.
    pub(super) fn assemble(
        der: &[u8],
        intermediates: &[Vec<u8>],
        root_der: &[u8],
        key: Arc<dyn CaKey>,
    ) -> Result<Self, PkiError> {
        let is_root = der == root_der;
        let mut above = intermediates.to_vec();
        if !is_root {
            above.push(root_der.to_vec());
        }
        check_chain(der, &above)?;
        let cert = parse_cert("CA certificate", der)?;
        check_key_matches(
            if is_root { "root" } else { "intermediate" },
            &cert,
            key.as_ref(),
        )?;
        let ski = subject_key_id("CA certificate", &cert)?;
        let (not_before, not_after) = (
            cert.validity().not_before.to_datetime(),
            cert.validity().not_after.to_datetime(),
        );
        let issuer =
            Issuer::from_ca_cert_der(&der.to_vec().into(), SigningKeyOf::new(key.clone()))?;
        Ok(Self {
            der: der.to_vec(),
            pem: pem_encode("CERTIFICATE", der),
            intermediates_pem: intermediates
                .iter()
                .map(|d| pem_encode("CERTIFICATE", d))
                .collect(),
            root_der: root_der.to_vec(),
            root_pem: pem_encode("CERTIFICATE", root_der),
            ski,
            not_before,
            not_after,
            issuer,
            key,
            root_key: None,
        })
    }

    /// A CA certificate (pathlen 0: it signs only end entities) for `public_key`, signed by
    /// this CA: an owner's issuing CA under its managed root.
    ///
    /// # Errors
    /// [`PkiError::InvalidPublicKey`], [`PkiError::InvalidValidity`], the key's failure.
    pub fn issue_ca_certificate(
        &self,
        organisation: &str,
        common_name: &str,
        validity: Validity,
        public_key: &[u8; super::P256_PUBLIC_KEY_LEN],
    ) -> Result<IssuedCertificate, PkiError> {
        let validity = self.clamp(validity)?;
        let params = ca_params(organisation, common_name, validity, 0)?;
        let subject = super::profile::validated(public_key)?;
        let certificate = params
            .signed_by(&subject, &self.issuer)
            .map_err(|e| self.sign_error(e))?;
        Ok(self.finish(certificate.der().to_vec()))
    }

    /// A PKCS#10 request for `key`, signed by it: how an owner's own root is asked to certify
    /// an issuing CA whose key was generated here (bring your own CA).
    ///
    /// # Errors
    /// rcgen's refusal or the key's failure.
    pub fn certificate_request(
        organisation: &str,
        common_name: &str,
        key: Arc<dyn CaKey>,
    ) -> Result<String, PkiError> {
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, organisation);
        subject.push(DnType::CommonName, common_name);
        params.distinguished_name = subject;
        let signer = SigningKeyOf::new(key);
        params
            .serialize_request(&signer)
            .and_then(|request| request.pem())
            .map_err(|e| Self::signing_error(&signer, e))
    }

    /// A validity within this CA's own: a certificate this CA signs never starts before it nor
    /// outlives it.
    pub(super) fn clamp(&self, validity: Validity) -> Result<Validity, PkiError> {
        Validity::new(
            validity.not_before.max(self.not_before),
            validity.not_after.min(self.not_after),
        )
    }

    /// rcgen's error for a failed signature, with the key store's own account of it.
    pub(super) fn sign_error(&self, error: rcgen::Error) -> PkiError {
        Self::signing_error(self.issuer.key(), error)
    }

    fn signing_error(signer: &SigningKeyOf, error: rcgen::Error) -> PkiError {
        match error {
            rcgen::Error::RemoteKeyError => PkiError::Signer(signer.classify()),
            other => PkiError::Certificate(other),
        }
    }

    /// This CA's subject key identifier: what the certificates it signs name as their
    /// authority key identifier.
    #[must_use]
    pub fn key_id(&self) -> &[u8] {
        &self.ski
    }

    /// This CA's certificate, DER.
    #[must_use]
    pub fn certificate_der(&self) -> &[u8] {
        &self.der
    }

    /// This CA's certificate, PEM.
    #[must_use]
    pub fn certificate_pem(&self) -> String {
        self.pem.clone()
    }

    /// This CA's certificate and those above it up to (not including) the root, PEM, in issuer
    /// order: what a device or a TLS server sends after its own certificate.
    #[must_use]
    pub fn chain_pems(&self) -> Vec<String> {
        std::iter::once(self.pem.clone())
            .chain(self.intermediates_pem.iter().cloned())
            .collect()
    }

    /// The root certificate, DER: the trust anchor.
    #[must_use]
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The root certificate, PEM.
    #[must_use]
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// Whether the root's key is held (the platform's, after `initialise`, until saved).
    #[must_use]
    pub fn has_root_key(&self) -> bool {
        self.root_key.is_some()
    }

    /// The root's key, if held.
    #[must_use]
    pub fn root_key(&self) -> Option<&Arc<dyn CaKey>> {
        self.root_key.as_ref()
    }

    /// This CA's subject, as OpenSSL prints it.
    #[must_use]
    pub fn subject(&self) -> String {
        parse_cert("CA certificate", &self.der)
            .map_or_else(|_| String::new(), |cert| cert.subject().to_string())
    }

    /// The key that signs for this CA.
    #[must_use]
    pub fn key(&self) -> &Arc<dyn CaKey> {
        &self.key
    }

    /// This CA's first valid instant.
    #[must_use]
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// This CA's last valid instant. Nothing it signs may outlive it.
    #[must_use]
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}
