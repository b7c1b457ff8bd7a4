//! Certificate profiles: what each kind of certificate this PKI issues says (CA, device leaf,
//! TLS server, operator, verification), and the checks on what goes into one. No key is held
//! here; [`super::authority`] and [`super::issue`] sign.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SignatureAlgorithm,
};
use x509_parser::prelude::FromDer;

use super::{P256_PUBLIC_KEY_LEN, PkiError, Serial, ServerName, Validity};

/// A raw SEC1 P-256 public key, so rcgen can certify a key whose private half it never holds.
pub(super) struct RawP256PublicKey<'a>(&'a [u8; P256_PUBLIC_KEY_LEN]);

impl PublicKeyData for RawP256PublicKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

pub(super) fn validated(
    public_key: &[u8; P256_PUBLIC_KEY_LEN],
) -> Result<RawP256PublicKey<'_>, PkiError> {
    // aws-lc checks the point is on the curve; a certificate for an invalid point would only
    // fail later, at the device's first TLS handshake.
    if public_key[0] != 0x04 || ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key).is_err() {
        return Err(PkiError::InvalidPublicKey);
    }
    Ok(RawP256PublicKey(public_key))
}

pub(super) fn generate_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

pub(super) fn ca_params(
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

/// An end entity: CA:FALSE, keyUsage digitalSignature, SKI and AKI, and `eku` as its extended
/// key usages (none for a certificate that is only ever inspected).
pub(super) fn end_entity_params(
    validity: Validity,
    serial: Serial,
    eku: &[ExtendedKeyUsagePurpose],
) -> Result<CertificateParams, PkiError> {
    let validity = validity.check()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // ExplicitNoCa writes basicConstraints CA:FALSE and a subject key identifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = eku.to_vec();
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(serial.to_rcgen());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Parameters of a TLS server certificate: CN = the first name, every name in the SAN.
pub(super) fn server_params(
    names: &[ServerName],
    validity: Validity,
    serial: Serial,
) -> Result<CertificateParams, PkiError> {
    let first = names.first().ok_or(PkiError::NoServerNames)?;
    let mut params = end_entity_params(validity, serial, &[ExtendedKeyUsagePurpose::ServerAuth])?;
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
pub(super) fn csr_public_key(csr_pem: &str) -> Result<[u8; P256_PUBLIC_KEY_LEN], PkiError> {
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

pub(super) fn check_common_name(cn: &str) -> Result<(), PkiError> {
    let len = cn.chars().count();
    if (1..=64).contains(&len) {
        Ok(())
    } else {
        Err(PkiError::InvalidCommonName(len))
    }
}
