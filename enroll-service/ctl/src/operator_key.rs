//! The key of a new operator profile: made here, written only to the profile (mode 0600), and
//! sent to the service only as a PKCS#10 request that proves its possession.

use std::str::FromStr;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use x509_cert::builder::Builder;
use x509_cert::der::EncodePem;
use x509_cert::name::Name;
use x509_cert::request::RequestBuilder;
use zeroize::Zeroizing;

use crate::error::CtlError;

/// A P-256 operator key. Its `Debug` names no secret (p256's own), and it zeroizes on drop.
#[derive(Debug)]
pub(crate) struct OperatorKey(SigningKey);

impl OperatorKey {
    /// A fresh key from the system's RNG (aws-lc-rs, as the service's TLS uses).
    pub(crate) fn generate() -> Result<Self, CtlError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .map_err(|_| CtlError::KeyGeneration("the system RNG failed".into()))?;
        let secret = p256::SecretKey::from_pkcs8_der(pkcs8.as_ref())
            .map_err(|e| CtlError::KeyGeneration(format!("reading the new key: {e}")))?;
        Ok(Self(SigningKey::from(secret)))
    }

    /// The key as an unencrypted PKCS#8 PEM, for the profile's `operator.key`.
    pub(crate) fn to_pem(&self) -> Result<Zeroizing<String>, CtlError> {
        p256::SecretKey::from(&self.0)
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| CtlError::KeyGeneration(format!("encoding the key: {e}")))
    }

    /// The public key, SEC1 uncompressed: what a certificate for this key carries.
    pub(crate) fn public_key_sec1(&self) -> Vec<u8> {
        self.0
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec()
    }

    /// A PKCS#10 request for the key. The service ignores the subject (it uses the operator
    /// name of the request); it is set anyway so that the CSR reads sensibly if someone
    /// inspects it.
    pub(crate) fn csr_pem(&self, name: &str) -> Result<String, CtlError> {
        let failed =
            |e: &dyn std::fmt::Display| CtlError::KeyGeneration(format!("building the CSR: {e}"));
        let subject =
            Name::from_str(&format!("CN={}", escape_rdn_value(name))).map_err(|e| failed(&e))?;
        RequestBuilder::new(subject)
            .map_err(|e| failed(&e))?
            .build::<_, DerSignature>(&self.0)
            .map_err(|e| failed(&e))?
            .to_pem(LineEnding::LF)
            .map_err(|e| failed(&e))
    }
}

/// An attribute value for an RFC 4514 string: the special characters are backslash-escaped,
/// so a name such as `line 3, shift B` stays one common name.
fn escape_rdn_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for (index, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (index == 0 && matches!(c, '#' | ' '))
            || (index + 1 == value.chars().count() && c == ' ');
        if special {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToSec1Point;
    use x509_parser::prelude::FromDer;

    /// A self-signed certificate for `key` (PEM), for tests that need some certificate.
    pub(crate) fn self_signed_pem(key: &OperatorKey) -> String {
        use x509_cert::builder::{CertificateBuilder, profile::cabf::Root};
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::spki::SubjectPublicKeyInfoOwned;
        use x509_cert::time::Validity;
        let subject = Name::from_str("CN=test root,O=oxroot tests,C=DE").expect("name");
        CertificateBuilder::new(
            Root::new(false, subject).expect("profile"),
            SerialNumber::new(&[1]).expect("serial"),
            Validity::from_now(std::time::Duration::from_secs(3600)).expect("validity"),
            SubjectPublicKeyInfoOwned::from_key(key.0.verifying_key()).expect("spki"),
        )
        .expect("builder")
        .build::<_, DerSignature>(&key.0)
        .expect("signs")
        .to_pem(LineEnding::LF)
        .expect("pem")
    }

    #[test]
    fn the_csr_carries_the_key_and_verifies() {
        let key = OperatorKey::generate().expect("key");
        for name in ["alice", "line 3, shift B", "a+b=c"] {
            let pem = key.csr_pem(name).expect("csr");
            let der = pem::parse(&pem).expect("pem");
            assert_eq!(der.tag(), "CERTIFICATE REQUEST");
            let (_, request) =
                x509_parser::certification_request::X509CertificationRequest::from_der(
                    der.contents(),
                )
                .expect("parses");
            request.verify_signature().expect("self-signature verifies");
            assert_eq!(
                request
                    .certification_request_info
                    .subject_pki
                    .subject_public_key
                    .data
                    .as_ref(),
                key.public_key_sec1()
            );
            let subject = &request.certification_request_info.subject;
            let cn = subject
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok());
            assert_eq!(cn, Some(name));
        }
    }

    #[test]
    fn the_key_round_trips_through_its_pem() {
        let key = OperatorKey::generate().expect("key");
        let pem = key.to_pem().expect("pem");
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{}",
            &pem[..30]
        );
        let again = p256::SecretKey::from_pkcs8_pem(&pem).expect("reads");
        assert_eq!(
            again.public_key().to_sec1_point(false).as_bytes(),
            key.public_key_sec1()
        );
        assert!(!format!("{key:?}").contains(&pem[30..60]));
    }
}
