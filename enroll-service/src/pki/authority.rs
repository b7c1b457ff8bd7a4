//! The certificate authority: root + issuing intermediate, and what they sign.

use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, RevokedCertParams, SanType, SignatureAlgorithm,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::keystore::{pem_encode, write_atomically};
use super::operator::{validate_operator_name, validate_owner};
use super::{
    CaNames, Crl, DEFAULT_PBKDF2_ITERATIONS, EncryptedKey, IssuedCertificate, LeafRequest,
    OperatorCredentials, OperatorIdentity, OperatorKey, P256_PUBLIC_KEY_LEN, Passphrase, PkiError,
    PrivateKeyPkcs8, RevokedEntry, Role, Serial, ServerCredentials, ServerName, Validity,
};

const ROOT_LIFETIME: Duration = Duration::days(20 * 365);
const INTERMEDIATE_LIFETIME: Duration = Duration::days(10 * 365);

const ROOT_CERT_FILE: &str = "root.pem";
const INTERMEDIATE_CERT_FILE: &str = "intermediate.pem";
const ROOT_KEY_FILE: &str = "root.key.enc";
const INTERMEDIATE_KEY_FILE: &str = "intermediate.key.enc";

/// The root and the online issuing intermediate.
///
/// The root key is present after [`CertificateAuthority::initialise`] (so that it can be saved
/// and then taken offline) and absent after [`CertificateAuthority::import_intermediate`] or a
/// [`CertificateAuthority::load`] from a directory without `root.key.enc`. Day-to-day issuing
/// only ever uses the intermediate.
pub struct CertificateAuthority {
    root_der: Vec<u8>,
    root_key: Option<KeyPair>,
    intermediate_der: Vec<u8>,
    intermediate_ski: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    /// PEM of both CA certificates, encoded once: every credential bundle carries them.
    root_pem: String,
    intermediate_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("root_key", &self.root_key.as_ref().map(|_| "[REDACTED]"))
            .field("intermediate_key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// A raw SEC1 P-256 public key, so rcgen can certify a key whose private half it never holds.
struct RawP256PublicKey<'a>(&'a [u8; P256_PUBLIC_KEY_LEN]);

impl PublicKeyData for RawP256PublicKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

fn validated(public_key: &[u8; P256_PUBLIC_KEY_LEN]) -> Result<RawP256PublicKey<'_>, PkiError> {
    // aws-lc checks the point is on the curve; a certificate for an invalid point would only
    // fail later, at the device's first TLS handshake.
    if public_key[0] != 0x04 || ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key).is_err() {
        return Err(PkiError::InvalidPublicKey);
    }
    Ok(RawP256PublicKey(public_key))
}

fn generate_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

fn ca_params(
    organisation: &str,
    common_name: &str,
    validity: Validity,
    path_len: u8,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, organisation);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(Serial::random()?.to_rcgen());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn end_entity_params(
    validity: Validity,
    serial: Serial,
    eku: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, PkiError> {
    let validity = validity.check()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // ExplicitNoCa writes basicConstraints CA:FALSE and a subject key identifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(serial.to_rcgen());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Parameters of a TLS server certificate: CN = the first name, every name in the SAN.
fn server_params(
    names: &[ServerName],
    validity: Validity,
    serial: Serial,
) -> Result<CertificateParams, PkiError> {
    let first = names.first().ok_or(PkiError::NoServerNames)?;
    let mut params = end_entity_params(validity, serial, ExtendedKeyUsagePurpose::ServerAuth)?;
    params.distinguished_name.push(
        DnType::CommonName,
        match first {
            ServerName::Ip(ip) => ip.to_string(),
            ServerName::Dns(dns) => dns.clone(),
        },
    );
    params.subject_alt_names = names
        .iter()
        .map(|name| match name {
            ServerName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            ServerName::Dns(dns) => dns
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| PkiError::InvalidDnsName(dns.clone())),
        })
        .collect::<Result<_, _>>()?;
    Ok(params)
}

/// The P-256 public key of a PKCS#10 CSR whose self-signature verifies.
///
/// The key type is checked before the signature so that a CSR for another curve or algorithm
/// is reported as such, not as a bad signature.
fn csr_public_key(csr_pem: &str) -> Result<[u8; P256_PUBLIC_KEY_LEN], PkiError> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};

    const WHAT: &str = "certificate signing request";
    let block = pem::parse(csr_pem).map_err(|e| PkiError::parse(WHAT, e))?;
    // "NEW CERTIFICATE REQUEST" is what older OpenSSL and Windows tools write.
    if !matches!(
        block.tag(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(PkiError::parse(
            WHAT,
            format!(
                "expected a CERTIFICATE REQUEST PEM block, found {}",
                block.tag()
            ),
        ));
    }
    let (rest, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| PkiError::parse(WHAT, e))?;
    if !rest.is_empty() {
        return Err(PkiError::parse(WHAT, "trailing bytes after the request"));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let is_p256 = spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|curve| curve.as_oid().ok())
            .is_some_and(|curve| curve == OID_EC_P256);
    if !is_p256 {
        return Err(PkiError::InvalidPublicKey);
    }
    csr.verify_signature()
        .map_err(|e| PkiError::parse(WHAT, format!("the self-signature does not verify ({e})")))?;
    // 65 bytes: a compressed point is refused here, as everywhere else in the service;
    // `validated` then checks the point when the certificate is made.
    spki.subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| PkiError::InvalidPublicKey)
}

fn check_common_name(cn: &str) -> Result<(), PkiError> {
    let len = cn.chars().count();
    if (1..=64).contains(&len) {
        Ok(())
    } else {
        Err(PkiError::InvalidCommonName(len))
    }
}

fn parse_cert<'a>(what: &'static str, der: &'a [u8]) -> Result<X509Certificate<'a>, PkiError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::parse(what, e))?;
    if !rest.is_empty() {
        return Err(PkiError::parse(
            what,
            "trailing bytes after the certificate",
        ));
    }
    Ok(cert)
}

fn cert_pem_to_der(what: &'static str, pem_text: &str) -> Result<Vec<u8>, PkiError> {
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

fn key_from_pkcs8(what: &'static str, key: &PrivateKeyPkcs8) -> Result<KeyPair, PkiError> {
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
    fn assemble(
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

    fn finish(&self, der: Vec<u8>) -> IssuedCertificate {
        let pem = pem_encode("CERTIFICATE", &der);
        let chain_pem = format!("{pem}{}{}", self.intermediate_pem, self.root_pem);
        IssuedCertificate {
            der,
            pem,
            chain_pem,
        }
    }

    /// Issues a device certificate for the DPK: CA:FALSE, keyUsage digitalSignature, EKU
    /// clientAuth, SKI and AKI, subject CN as requested.
    ///
    /// # Errors
    /// [`PkiError::InvalidPublicKey`], [`PkiError::InvalidCommonName`],
    /// [`PkiError::InvalidValidity`], or [`PkiError::Certificate`] if signing fails.
    pub fn issue_device_certificate(
        &self,
        request: &LeafRequest,
    ) -> Result<IssuedCertificate, PkiError> {
        let public_key = validated(&request.public_key)?;
        check_common_name(&request.common_name)?;
        let mut params = end_entity_params(
            request.validity,
            request.serial,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        params
            .distinguished_name
            .push(DnType::CommonName, request.common_name.as_str());
        let cert = params.signed_by(&public_key, &self.issuer)?;
        Ok(self.finish(cert.der().to_vec()))
    }

    /// Issues the service's own TLS certificate (EKU serverAuth) for a freshly generated key.
    /// The CN is the first name; all names go in the SAN. [`ServerName::loopback`] gives the
    /// default set.
    ///
    /// # Errors
    /// [`PkiError::NoServerNames`], [`PkiError::InvalidDnsName`],
    /// [`PkiError::InvalidValidity`], or [`PkiError::Certificate`].
    pub fn issue_server_certificate(
        &self,
        names: &[ServerName],
        validity: Validity,
        serial: Serial,
    ) -> Result<ServerCredentials, PkiError> {
        let params = server_params(names, validity, serial)?;
        let key = generate_key()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let certificate = self.finish(cert.der().to_vec());
        let chain_der = vec![certificate.der.clone(), self.intermediate_der.clone()];
        Ok(ServerCredentials {
            certificate,
            chain_der,
            private_key: PrivateKeyPkcs8::new(key.serialize_der()),
        })
    }

    /// Issues a TLS server certificate (EKU serverAuth) for the key in a PKCS#10 CSR, e.g. an
    /// MQTT broker's, so that its private key never leaves the host that made it. The CSR is
    /// proof of possession only: its self-signature must verify and its key must be P-256, but
    /// its subject and requested extensions are ignored. The certificate says what `names` say
    /// (CN = the first, all in the SAN), as [`CertificateAuthority::issue_server_certificate`].
    ///
    /// # Errors
    /// [`PkiError::Parse`] if `csr_pem` is not a PEM `CERTIFICATE REQUEST` or its
    /// self-signature does not verify; [`PkiError::InvalidPublicKey`] if its key is not an
    /// uncompressed P-256 point; [`PkiError::NoServerNames`], [`PkiError::InvalidDnsName`],
    /// [`PkiError::InvalidValidity`], or [`PkiError::Certificate`].
    pub fn issue_server_certificate_for_csr(
        &self,
        csr_pem: &str,
        names: &[ServerName],
        validity: Validity,
        serial: Serial,
    ) -> Result<IssuedCertificate, PkiError> {
        let public_key = csr_public_key(csr_pem)?;
        let params = server_params(names, validity, serial)?;
        let cert = params.signed_by(&validated(&public_key)?, &self.issuer)?;
        Ok(self.finish(cert.der().to_vec()))
    }

    /// Issues a verification certificate: a leaf whose subject CN is a code the cloud handed
    /// out, proving that whoever registers the issuing CA holds its key. AWS IoT's
    /// `RegisterCACertificate` wants the registration code, Azure DPS's proof of possession
    /// the verification code. Its key pair is generated here and dropped unreturned: the
    /// certificate is only ever inspected, never used to authenticate.
    ///
    /// # Errors
    /// [`PkiError::InvalidCommonName`], [`PkiError::InvalidValidity`], [`PkiError::Random`],
    /// or [`PkiError::Certificate`].
    pub fn issue_verification_certificate(
        &self,
        code: &str,
        validity: Validity,
        serial: Serial,
    ) -> Result<IssuedCertificate, PkiError> {
        check_common_name(code)?;
        let mut params = end_entity_params(validity, serial, ExtendedKeyUsagePurpose::ClientAuth)?;
        params.distinguished_name.push(DnType::CommonName, code);
        let throwaway = generate_key()?;
        let cert = params.signed_by(&throwaway, &self.issuer)?;
        Ok(self.finish(cert.der().to_vec()))
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

    /// Issues an operator certificate (EKU clientAuth) for `name` (the subject `CN`) carrying
    /// `owner` and `role` in the subject (`O`, `OU`) and as the SAN URI
    /// `urn:oxroot:operator:<owner>:<role>`; [`OperatorIdentity::from_certificate_der`] reads
    /// them back.
    ///
    /// # Errors
    /// [`PkiError::InvalidOwner`], [`PkiError::InvalidOperatorName`],
    /// [`PkiError::InvalidPublicKey`], [`PkiError::InvalidValidity`], or
    /// [`PkiError::Certificate`].
    pub fn issue_operator_certificate(
        &self,
        key: &OperatorKey,
        name: &str,
        owner: &str,
        role: Role,
        validity: Validity,
        serial: Serial,
    ) -> Result<OperatorCredentials, PkiError> {
        validate_owner(owner)?;
        validate_operator_name(name)?;
        let identity = OperatorIdentity {
            name: name.to_owned(),
            owner: owner.to_owned(),
            role,
        };
        let mut params = end_entity_params(validity, serial, ExtendedKeyUsagePurpose::ClientAuth)?;
        let dn = &mut params.distinguished_name;
        dn.push(DnType::OrganizationName, owner);
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::URI(identity.urn().try_into()?)];

        let (cert, private_key) = match key {
            OperatorKey::PublicKey(public_key) => (
                params.signed_by(&validated(public_key)?, &self.issuer)?,
                None,
            ),
            OperatorKey::Generate => {
                let key = generate_key()?;
                let cert = params.signed_by(&key, &self.issuer)?;
                (cert, Some(PrivateKeyPkcs8::new(key.serialize_der())))
            }
        };
        Ok(OperatorCredentials {
            identity,
            certificate: self.finish(cert.der().to_vec()),
            private_key,
        })
    }

    /// Signs a CRL with the issuing intermediate.
    ///
    /// # Errors
    /// [`PkiError::InvalidCrlPeriod`] unless `next_update` is after `this_update`;
    /// [`PkiError::Certificate`] if signing fails.
    pub fn sign_crl(
        &self,
        revoked: &[RevokedEntry],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
        crl_number: u64,
    ) -> Result<Crl, PkiError> {
        if next_update <= this_update {
            return Err(PkiError::InvalidCrlPeriod {
                this_update,
                next_update,
            });
        }
        let number = crl_number.to_be_bytes();
        let skip = ((crl_number.leading_zeros() / 8) as usize).min(7);
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: rcgen::SerialNumber::from_slice(&number[skip..]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|entry| RevokedCertParams {
                    serial_number: entry.serial.to_rcgen(),
                    revocation_time: entry.revoked_at,
                    reason_code: entry.reason.to_rcgen(),
                    invalidity_date: None,
                })
                .collect(),
            // Must equal the intermediate's SKI, whatever method made it, so verifiers that
            // match the CRL by AKI find the right issuer.
            key_identifier_method: KeyIdMethod::PreSpecified(self.intermediate_ski.clone()),
        };
        let crl = params.signed_by(&self.issuer)?;
        Ok(Crl {
            der: crl.der().to_vec(),
            pem: crl.pem()?,
        })
    }

    /// Writes `root.pem`, `intermediate.pem`, `intermediate.key.enc` and, if the root key is
    /// held, `root.key.enc` into `dir` with [`DEFAULT_PBKDF2_ITERATIONS`].
    ///
    /// # Errors
    /// [`PkiError::Io`] naming the file that failed, [`PkiError::EmptyPassphrase`],
    /// [`PkiError::Random`].
    pub fn save(&self, dir: &Path, passphrase: &Passphrase) -> Result<(), PkiError> {
        let iterations =
            NonZeroU32::new(DEFAULT_PBKDF2_ITERATIONS).ok_or(PkiError::InvalidIterations(0))?;
        self.save_with_iterations(dir, passphrase, iterations)
    }

    /// [`CertificateAuthority::save`] with an explicit PBKDF2 iteration count. Production keys
    /// should use at least [`DEFAULT_PBKDF2_ITERATIONS`]; tests use small counts for speed.
    ///
    /// # Errors
    /// As [`CertificateAuthority::save`], plus [`PkiError::InvalidIterations`].
    pub fn save_with_iterations(
        &self,
        dir: &Path,
        passphrase: &Passphrase,
        iterations: NonZeroU32,
    ) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::io(dir, e))?;
        let seal = |key: &KeyPair| {
            EncryptedKey::seal(
                &PrivateKeyPkcs8::new(key.serialize_der()),
                passphrase,
                iterations,
            )
        };
        // Keys first: a crash then leaves at worst keys without their new certificates,
        // which load refuses loudly (key mismatch) rather than silently.
        write_atomically(
            &dir.join(INTERMEDIATE_KEY_FILE),
            seal(self.issuer.key())?.as_bytes(),
            true,
        )?;
        if let Some(root_key) = &self.root_key {
            write_atomically(&dir.join(ROOT_KEY_FILE), seal(root_key)?.as_bytes(), true)?;
        }
        write_atomically(
            &dir.join(INTERMEDIATE_CERT_FILE),
            self.intermediate_pem().as_bytes(),
            false,
        )?;
        write_atomically(&dir.join(ROOT_CERT_FILE), self.root_pem().as_bytes(), false)
    }

    /// Reads a directory written by [`CertificateAuthority::save`]. `root.key.enc` is
    /// optional: an online service normally runs without it.
    ///
    /// # Errors
    /// [`PkiError::Io`] for a missing or unreadable file, [`PkiError::KeyDecryption`] for a
    /// wrong passphrase or a modified key file, and the validation errors of
    /// [`CertificateAuthority::import_intermediate`].
    pub fn load(dir: &Path, passphrase: &Passphrase) -> Result<Self, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| PkiError::io(path, e))
        };
        let read_text = |name: &'static str| {
            String::from_utf8(read(name)?).map_err(|e| PkiError::parse(name, e))
        };
        let root_der = cert_pem_to_der("root certificate", &read_text(ROOT_CERT_FILE)?)?;
        let intermediate_der = cert_pem_to_der(
            "intermediate certificate",
            &read_text(INTERMEDIATE_CERT_FILE)?,
        )?;
        let intermediate_key = EncryptedKey::from_bytes(read(INTERMEDIATE_KEY_FILE)?)
            .open(passphrase)
            .and_then(|key| key_from_pkcs8("intermediate private key", &key))?;
        let root_key = if dir.join(ROOT_KEY_FILE).exists() {
            Some(
                EncryptedKey::from_bytes(read(ROOT_KEY_FILE)?)
                    .open(passphrase)
                    .and_then(|key| key_from_pkcs8("root private key", &key))?,
            )
        } else {
            None
        };
        Self::assemble(root_der, root_key, intermediate_der, intermediate_key)
    }
}
