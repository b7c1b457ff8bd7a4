//! The certificate authority: the root and the online issuing intermediate, how they come to be
//! (created, imported, loaded) and checked against each other. What they sign is in
//! [`super::issue`]; the certificates' contents in [`super::profile`]; the files on disk in
//! [`super::ca_directory`].

use std::fmt;

use rcgen::{Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::keystore::pem_encode;
use super::profile::{ca_params, generate_key};
use super::{CaNames, PkiError, PrivateKeyPkcs8, Validity};

const ROOT_LIFETIME: Duration = Duration::days(20 * 365);
const INTERMEDIATE_LIFETIME: Duration = Duration::days(10 * 365);

/// The root and the online issuing intermediate.
///
/// The root key is present after [`CertificateAuthority::initialise`] (so that it can be saved
/// and then taken offline) and absent after [`CertificateAuthority::import_intermediate`] or a
/// [`CertificateAuthority::load`] from a directory without `root.key.enc`. Day-to-day issuing
/// only ever uses the intermediate.
pub struct CertificateAuthority {
    pub(super) root_der: Vec<u8>,
    pub(super) root_key: Option<KeyPair>,
    pub(super) intermediate_der: Vec<u8>,
    pub(super) intermediate_ski: Vec<u8>,
    pub(super) issuer: Issuer<'static, KeyPair>,
    /// PEM of both CA certificates, encoded once: every credential bundle carries them.
    pub(super) root_pem: String,
    pub(super) intermediate_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("root_key", &self.root_key.as_ref().map(|_| "[REDACTED]"))
            .field("intermediate_key", &"[REDACTED]")
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

pub(super) fn cert_pem_to_der(what: &'static str, pem_text: &str) -> Result<Vec<u8>, PkiError> {
    let block = pem::parse(pem_text).map_err(|e| PkiError::parse(what, e))?;
    if block.tag() != "CERTIFICATE" {
        return Err(PkiError::parse(
            what,
            format!("expected a CERTIFICATE PEM block, found {}", block.tag()),
        ));
    }
    Ok(block.into_contents())
}

fn require_ca(what: &'static str, cert: &X509Certificate<'_>) -> Result<(), PkiError> {
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| PkiError::parse(what, e))?
        .is_some_and(|bc| bc.value.ca);
    if is_ca {
        Ok(())
    } else {
        Err(PkiError::NotCa(what))
    }
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

/// Checks that `key` is the private half of `cert`'s public key.
fn check_key_matches(
    what: &'static str,
    cert: &X509Certificate<'_>,
    key: &KeyPair,
) -> Result<(), PkiError> {
    if cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw() {
        Ok(())
    } else {
        Err(PkiError::KeyMismatch(what))
    }
}

pub(super) fn key_from_pkcs8(
    what: &'static str,
    key: &PrivateKeyPkcs8,
) -> Result<KeyPair, PkiError> {
    KeyPair::from_pkcs8_der_and_sign_algo(&key.der().to_vec().into(), &PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::parse(what, e))
}

impl CertificateAuthority {
    /// Creates a new root (self-signed, CA pathlen 1, 20 years) and issuing intermediate
    /// (CA pathlen 0, 10 years), both valid from `now`.
    ///
    /// # Errors
    /// [`PkiError::Certificate`] if rcgen refuses the parameters (e.g. an unencodable name),
    /// [`PkiError::Random`] if the RNG fails.
    pub fn initialise(names: &CaNames, now: OffsetDateTime) -> Result<Self, PkiError> {
        let root_key = generate_key()?;
        let root_params = ca_params(
            &names.organisation,
            &names.root_common_name,
            Validity::starting(now, ROOT_LIFETIME)?,
            1,
        )?;
        let root_cert = root_params.self_signed(&root_key)?;
        let root_issuer = Issuer::new(root_params, root_key);

        let intermediate_key = generate_key()?;
        let intermediate_params = ca_params(
            &names.organisation,
            &names.intermediate_common_name,
            Validity::starting(now, INTERMEDIATE_LIFETIME)?,
            0,
        )?;
        let intermediate_cert = intermediate_params.signed_by(&intermediate_key, &root_issuer)?;

        let root_key = key_from_pkcs8(
            "root private key",
            &PrivateKeyPkcs8::new(root_issuer.key().serialize_der()),
        )?;
        Self::assemble(
            root_cert.der().to_vec(),
            Some(root_key),
            intermediate_cert.der().to_vec(),
            intermediate_key,
        )
    }

    /// Uses an existing intermediate (e.g. one signed by an organisation's own offline root).
    /// The root's private key is not needed and not held.
    ///
    /// # Errors
    /// [`PkiError::Parse`] for unreadable PEM; [`PkiError::NotCa`] if either certificate is not
    /// a CA; [`PkiError::NotIssuedByRoot`] if the intermediate's issuer or signature does not
    /// match the root; [`PkiError::KeyMismatch`] if the key is not the intermediate's.
    pub fn import_intermediate(
        cert_pem: &str,
        key_pkcs8_pem: &str,
        root_pem: &str,
    ) -> Result<Self, PkiError> {
        let key_pem = pem::parse(key_pkcs8_pem)
            .map_err(|e| PkiError::parse("intermediate private key", e))?;
        let is_pkcs8 = key_pem.tag() == "PRIVATE KEY";
        // Moved into a zeroizing wrapper before anything can return early.
        let key_der = PrivateKeyPkcs8::new(key_pem.into_contents());
        if !is_pkcs8 {
            return Err(PkiError::parse(
                "intermediate private key",
                "expected a PKCS#8 \"PRIVATE KEY\" PEM block",
            ));
        }
        let key = key_from_pkcs8("intermediate private key", &key_der)?;
        Self::assemble(
            cert_pem_to_der("root certificate", root_pem)?,
            None,
            cert_pem_to_der("intermediate certificate", cert_pem)?,
            key,
        )
    }

    /// Validates the pieces against each other and builds the issuer.
    pub(super) fn assemble(
        root_der: Vec<u8>,
        root_key: Option<KeyPair>,
        intermediate_der: Vec<u8>,
        intermediate_key: KeyPair,
    ) -> Result<Self, PkiError> {
        let root = parse_cert("root certificate", &root_der)?;
        let intermediate = parse_cert("intermediate certificate", &intermediate_der)?;
        require_ca("root certificate", &root)?;
        require_ca("intermediate certificate", &intermediate)?;
        if intermediate.issuer() != root.subject() {
            return Err(PkiError::NotIssuedByRoot(format!(
                "issuer \"{}\" is not the root's subject \"{}\"",
                intermediate.issuer(),
                root.subject()
            )));
        }
        intermediate
            .verify_signature(Some(root.public_key()))
            .map_err(|e| PkiError::NotIssuedByRoot(format!("signature check failed: {e}")))?;
        check_key_matches("intermediate", &intermediate, &intermediate_key)?;
        if let Some(root_key) = &root_key {
            check_key_matches("root", &root, root_key)?;
        }
        let intermediate_ski = subject_key_id("intermediate certificate", &intermediate)?;
        let issuer = Issuer::from_ca_cert_der(&intermediate_der.clone().into(), intermediate_key)?;
        Ok(Self {
            root_pem: pem_encode("CERTIFICATE", &root_der),
            intermediate_pem: pem_encode("CERTIFICATE", &intermediate_der),
            root_der,
            root_key,
            intermediate_der,
            intermediate_ski,
            issuer,
        })
    }

    /// The root certificate, DER. Devices pin this.
    #[must_use]
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The root certificate, PEM.
    #[must_use]
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The issuing intermediate, DER.
    #[must_use]
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// The issuing intermediate, PEM.
    #[must_use]
    pub fn intermediate_pem(&self) -> String {
        self.intermediate_pem.clone()
    }

    /// Whether the root private key is held (it is after `initialise`, until saved and dropped).
    #[must_use]
    pub fn has_root_key(&self) -> bool {
        self.root_key.is_some()
    }

    /// The issuing intermediate's last valid instant. Nothing it signs may outlive it.
    ///
    /// # Errors
    /// [`PkiError::Parse`] only if the stored intermediate no longer parses, which
    /// construction rules out.
    pub fn intermediate_not_after(&self) -> Result<OffsetDateTime, PkiError> {
        const WHAT: &str = "intermediate certificate";
        Ok(parse_cert(WHAT, &self.intermediate_der)?
            .validity()
            .not_after
            .to_datetime())
    }
}
