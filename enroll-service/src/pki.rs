//! The service's PKI: roots, issuing CAs, and everything an issuing CA signs (device leaves, the
//! service's TLS certificate, operator certificates, broker certificates, CRLs). ECDSA P-256
//! with SHA-256 throughout; rcgen builds the certificates and every CA signature goes through
//! a [`CaKey`] (a sealed software key or a PKCS#11 token).
//!
//! ```text
//!  root (CA, pathlen 1, 20 y) ── issuing CA (CA, pathlen 0, 10 y) ─┬─ device leaf  (clientAuth, CN = DeviceId)
//!                                                                 ├─ server       (serverAuth, SAN IP/DNS)
//!                                                                 ├─ operator     (clientAuth, O/OU + URN)
//!                                                                 └─ CRL
//! ```
//!
//! The platform has one such pair (operators, the service's TLS); each owner has its own
//! (its devices and brokers), see `service::Authorities`. A CA never sees a device private key:
//! a device certificate is made from the 65-byte DPK the device proved possession of.

mod authority;
mod backend;
mod ca_directory;
mod error;
mod issue;
mod keystore;
mod operator;
mod profile;
mod signer;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU128;
use std::str::FromStr;

use rot_core::FirmwareMeasurement;
use time::OffsetDateTime;

pub use authority::{
    CertificateAuthority, ISSUING_LIFETIME, ROOT_LIFETIME, cert_pem_to_der, certs_pem_to_der,
};
pub use backend::{HsmKey, KeyBackend, KeyReference, Sealing};
pub use error::PkiError;
pub use keystore::{
    DEFAULT_PBKDF2_ITERATIONS, EncryptedKey, MAX_PBKDF2_ITERATIONS, Passphrase, PrivateKeyPkcs8,
};
pub use operator::{
    OPERATOR_URN_PREFIX, OperatorIdentity, PLATFORM_OWNER, Role, is_valid_owner,
    validate_operator_name,
};
pub use signer::{CaKey, SealedKey, SignerError};

/// A DER certificate as PEM (LF line endings).
#[must_use]
pub fn certificate_pem(der: &[u8]) -> String {
    keystore::pem_encode("CERTIFICATE", der)
}

/// Length of an uncompressed SEC1 P-256 public key (`04 ‖ x ‖ y`).
pub const P256_PUBLIC_KEY_LEN: usize = 65;

/// The subject names of a new CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaNames {
    /// `O` of both CA certificates.
    pub organisation: String,
    /// `CN` of the root.
    pub root_common_name: String,
    /// `CN` of the issuing intermediate.
    pub intermediate_common_name: String,
}

impl Default for CaNames {
    fn default() -> Self {
        Self {
            organisation: "oxroot".to_owned(),
            root_common_name: "oxroot Root CA".to_owned(),
            intermediate_common_name: "oxroot Issuing CA 1".to_owned(),
        }
    }
}

/// A certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// First instant the certificate is valid.
    pub not_before: OffsetDateTime,
    /// Last instant the certificate is valid.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// A validity period.
    ///
    /// # Errors
    /// [`PkiError::InvalidValidity`] unless `not_after` is later than `not_before`.
    pub fn new(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Self, PkiError> {
        if not_after <= not_before {
            return Err(PkiError::InvalidValidity {
                not_before,
                not_after,
            });
        }
        Ok(Self {
            not_before,
            not_after,
        })
    }

    /// `lifetime` from `not_before`.
    ///
    /// # Errors
    /// [`PkiError::InvalidValidity`] if `lifetime` is not positive.
    pub fn starting(
        not_before: OffsetDateTime,
        lifetime: time::Duration,
    ) -> Result<Self, PkiError> {
        Self::new(not_before, not_before + lifetime)
    }

    /// The validity of a PEM certificate; `None` for anything that is not one.
    #[must_use]
    pub fn of_certificate_pem(pem: &str) -> Option<Self> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let der = pem::parse(pem).ok()?.into_contents();
        let (_, cert) = X509Certificate::from_der(&der).ok()?;
        let validity = cert.validity();
        Self::new(
            validity.not_before.to_datetime(),
            validity.not_after.to_datetime(),
        )
        .ok()
    }

    fn check(self) -> Result<Self, PkiError> {
        Self::new(self.not_before, self.not_after)
    }
}

/// A certificate serial number: positive, at most 128 bits.
///
/// Uniqueness is the registry's job; this type only guarantees the encoding is a positive
/// INTEGER as RFC 5280 §4.1.2.2 requires (a leading zero byte is added when the top bit is set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(NonZeroU128);

impl Serial {
    /// A serial number.
    ///
    /// # Errors
    /// [`PkiError::ZeroSerial`] for 0.
    pub fn new(value: u128) -> Result<Self, PkiError> {
        NonZeroU128::new(value)
            .map(Self)
            .ok_or(PkiError::ZeroSerial)
    }

    /// A serial from 16 big-endian bytes.
    ///
    /// # Errors
    /// [`PkiError::ZeroSerial`] if all bytes are zero.
    pub fn from_be_bytes(bytes: [u8; 16]) -> Result<Self, PkiError> {
        Self::new(u128::from_be_bytes(bytes))
    }

    /// A random 127-bit serial, for the CA certificates.
    ///
    /// # Errors
    /// [`PkiError::Random`] if the system RNG fails.
    pub fn random() -> Result<Self, PkiError> {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::Random)?;
        // A fixed top bit keeps the encoding at 16 bytes and never zero.
        bytes[0] = (bytes[0] & 0x7f) | 0x40;
        Self::from_be_bytes(bytes)
    }

    /// The value.
    #[must_use]
    pub fn get(self) -> u128 {
        self.0.get()
    }

    /// The minimal unsigned big-endian bytes (no sign byte; the DER encoder adds it).
    #[must_use]
    pub fn to_be_bytes_minimal(self) -> Vec<u8> {
        let bytes = self.get().to_be_bytes();
        let skip = (self.get().leading_zeros() / 8) as usize;
        bytes[skip..].to_vec()
    }

    fn to_rcgen(self) -> rcgen::SerialNumber {
        rcgen::SerialNumber::from_slice(&self.to_be_bytes_minimal())
    }
}

/// Lowercase hex of the magnitude, no padding: how the contract, the registry and the audit
/// log write a serial.
impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.get())
    }
}

impl FromStr for Serial {
    type Err = PkiError;

    /// Parses the [`Display`](fmt::Display) form only: 1 to 32 lowercase hex digits, no
    /// leading zero, not zero (a serial has one spelling, so it is one registry key).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let canonical = (1..=32).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && !(text.len() > 1 && text.starts_with('0'));
        if !canonical {
            return Err(PkiError::InvalidSerial(text.chars().take(40).collect()));
        }
        Self::new(
            u128::from_str_radix(text, 16).map_err(|_| PkiError::InvalidSerial(text.to_owned()))?,
        )
    }
}

impl serde::Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a device certificate is issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRequest {
    /// The key certified, SEC1 uncompressed: the slot's DPK, or the firmware-bound alias key.
    pub public_key: [u8; P256_PUBLIC_KEY_LEN],
    /// Subject CN: the 64-hex DeviceId unless the policy's template says otherwise.
    pub common_name: String,
    /// The policy's certificate lifetime.
    pub validity: Validity,
    /// A serial the registry guarantees is unique.
    pub serial: Serial,
    /// Where relying parties fetch the issuer's CRL (an `http://` URL), if the policy says.
    pub crl_distribution_point: Option<String>,
    /// The firmware the certified alias key is bound to, named in a TCG DICE TcbInfo
    /// extension; `None` for a DPK.
    pub firmware: Option<FirmwareMeasurement>,
}

/// What a device certificate certifies: its key and, for a firmware-bound key, the firmware
/// measurement its TcbInfo extension names. Read from the certificate itself, which is the
/// record of what was certified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertifiedKey {
    /// The subject public key, SEC1 uncompressed.
    pub public_key: Vec<u8>,
    /// The measurement of a TcbInfo extension in the form oxroot writes, if there is one.
    pub firmware: Option<FirmwareMeasurement>,
}

impl CertifiedKey {
    /// The certified key of a PEM certificate; `None` for anything that is not one.
    #[must_use]
    pub fn of_certificate_pem(pem: &str) -> Option<Self> {
        use x509_parser::der_parser::oid::Oid;
        use x509_parser::prelude::{FromDer, X509Certificate};
        let der = pem::parse(pem).ok()?.into_contents();
        let (_, cert) = X509Certificate::from_der(&der).ok()?;
        let tcb_info = Oid::from(rot_core::firmware::TCB_INFO_OID).ok()?;
        let firmware = cert
            .extensions()
            .iter()
            .find(|extension| extension.oid == tcb_info)
            .and_then(|extension| FirmwareMeasurement::from_tcb_info_der(extension.value));
        Some(Self {
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            firmware,
        })
    }
}

/// A certificate with its chain, ready to hand out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate, PEM.
    pub pem: String,
    /// PEM of the certificate, the intermediate and the root, in that order.
    pub chain_pem: String,
}

/// A name for the service's TLS certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerName {
    /// An IP address SAN.
    Ip(IpAddr),
    /// A DNS name SAN.
    Dns(String),
}

impl ServerName {
    /// `127.0.0.1`, `::1` and `localhost`: the names a loopback deployment answers to.
    #[must_use]
    pub fn loopback() -> Vec<Self> {
        vec![
            Self::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Self::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Self::Dns("localhost".to_owned()),
        ]
    }
}

/// The service's TLS identity.
#[derive(Clone, Debug)]
pub struct ServerCredentials {
    /// The server certificate and its chain.
    pub certificate: IssuedCertificate,
    /// DER of the server certificate, then the intermediate (what a TLS server sends).
    pub chain_der: Vec<Vec<u8>>,
    /// The server's freshly generated private key.
    pub private_key: PrivateKeyPkcs8,
}

/// The key an operator certificate is issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorKey {
    /// The operator's own public key (SEC1 uncompressed P-256); the CA never sees the private key.
    PublicKey([u8; P256_PUBLIC_KEY_LEN]),
    /// Generate a key pair and return the private key with the certificate.
    Generate,
}

/// An operator certificate and, for [`OperatorKey::Generate`], its private key.
#[derive(Clone, Debug)]
pub struct OperatorCredentials {
    /// Who the certificate says the operator is.
    pub identity: OperatorIdentity,
    /// The certificate and its chain.
    pub certificate: IssuedCertificate,
    /// The generated private key, if the CA generated one.
    pub private_key: Option<PrivateKeyPkcs8>,
}

/// Why a certificate was revoked (RFC 5280 §5.3.1, the codes that apply to this PKI): the one
/// domain type for the concept. Records store it (by these variant names), the CRL encodes it,
/// and the wire enum `oxroot.v1.RevocationReason` converts to and from it at the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RevocationReason {
    /// No reason given; encoded by omitting the reason code, as RFC 5280 recommends.
    Unspecified,
    /// The device key is known or suspected to be compromised.
    KeyCompromise,
    /// The device moved to another owner.
    AffiliationChanged,
    /// Replaced by a renewed certificate.
    Superseded,
    /// The device was decommissioned.
    CessationOfOperation,
    /// The operator's or device's privileges were withdrawn.
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// The reason's name in audit records and command lines (`key-compromise`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key-compromise",
            Self::AffiliationChanged => "affiliation-changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation-of-operation",
            Self::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    fn to_rcgen(self) -> Option<rcgen::RevocationReason> {
        use rcgen::RevocationReason as R;
        match self {
            Self::Unspecified => None,
            Self::KeyCompromise => Some(R::KeyCompromise),
            Self::AffiliationChanged => Some(R::AffiliationChanged),
            Self::Superseded => Some(R::Superseded),
            Self::CessationOfOperation => Some(R::CessationOfOperation),
            Self::PrivilegeWithdrawn => Some(R::PrivilegeWithdrawn),
        }
    }
}

/// One revoked certificate in a CRL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The revoked certificate's serial.
    pub serial: Serial,
    /// When the revocation was processed.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
}

/// A signed certificate revocation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crl {
    /// DER encoding.
    pub der: Vec<u8>,
    /// PEM encoding (`X509 CRL`).
    pub pem: String,
}

/// Loads the CA passphrase from the environment variable's value if set, else from the
/// contents of the passphrase file. The caller does the I/O; this decides precedence.
///
/// # Errors
/// [`PkiError::EmptyPassphrase`] if neither is given or the chosen one is empty.
pub fn passphrase_from(
    env_value: Option<String>,
    file_contents: Option<String>,
) -> Result<Passphrase, PkiError> {
    match (env_value, file_contents) {
        (Some(value), _) => Passphrase::new(value),
        (None, Some(contents)) => Passphrase::from_file_contents(contents),
        (None, None) => Err(PkiError::EmptyPassphrase),
    }
}
