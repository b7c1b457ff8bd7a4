//! Operator identities: who (owner/tenant) may do what (role), carried in operator certificates.
//!
//! The owner and role are written twice: in the subject (`O = owner`, `OU = role`) for humans
//! and stock tools, and as the SAN URI `urn:oxroot:operator:<owner>:<role>` for the service.
//! The parser requires both and requires them to agree, so a certificate cannot say one thing
//! to an operator reading it and another to the authorisation check. The subject `CN` is the
//! operator's name, the actor recorded in the audit log.
//!
//! The owner `*` is reserved for platform operators, who act for every owner.

use std::fmt;
use std::str::FromStr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::PkiError;

/// The URI prefix of an operator identity in the subject alternative name.
pub const OPERATOR_URN_PREFIX: &str = "urn:oxroot:operator:";

/// What an operator may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including policies and operator certificates.
    Admin,
    /// Day-to-day work: batches, devices, exports.
    Operator,
    /// Read-only access, including the audit log.
    Auditor,
}

impl Role {
    /// The role's name as written in certificates.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "operator" => Ok(Self::Operator),
            "auditor" => Ok(Self::Auditor),
            other => Err(PkiError::NotOperatorCertificate(format!(
                "unknown role {other:?} (expected admin, operator or auditor)"
            ))),
        }
    }
}

/// The reserved owner of platform operators.
pub const PLATFORM_OWNER: &str = "*";

/// Who an operator certificate names, and the owner and role it grants.
///
/// Parsing does not verify the certificate: the TLS layer must already have checked that it
/// chains to the service's root.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OperatorIdentity {
    /// The operator's name (subject CN), the actor in the audit log.
    pub name: String,
    /// The owner (tenant) whose batches and devices the operator may see.
    pub owner: String,
    /// What the operator may do there.
    pub role: Role,
}

impl OperatorIdentity {
    /// The SAN URI for this identity.
    #[must_use]
    pub fn urn(&self) -> String {
        format!("{OPERATOR_URN_PREFIX}{}:{}", self.owner, self.role)
    }

    /// Reads the identity back from a DER certificate issued by
    /// [`super::CertificateAuthority::issue_operator_certificate`].
    ///
    /// # Errors
    /// [`PkiError::Parse`] if the DER is not a certificate;
    /// [`PkiError::NotOperatorCertificate`] if the URN, `O` or `OU` is missing, duplicated,
    /// malformed, or disagrees with the others.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, PkiError> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| PkiError::parse("operator certificate", e))?;
        if !rest.is_empty() {
            return Err(PkiError::parse("operator certificate", "trailing bytes"));
        }
        let not_operator = |why: &str| PkiError::NotOperatorCertificate(why.to_owned());

        let san = cert
            .subject_alternative_name()
            .map_err(|e| PkiError::parse("operator certificate SAN", e))?
            .ok_or_else(|| not_operator("no subject alternative name"))?;
        let mut urns = san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(OPERATOR_URN_PREFIX) => Some(*uri),
                _ => None,
            });
        let urn = urns
            .next()
            .ok_or_else(|| not_operator("no urn:oxroot:operator: URI in the SAN"))?;
        if urns.next().is_some() {
            return Err(not_operator("more than one operator URI in the SAN"));
        }
        let (owner, role) = urn[OPERATOR_URN_PREFIX.len()..]
            .split_once(':')
            .ok_or_else(|| not_operator("operator URI is not <owner>:<role>"))?;
        validate_owner(owner)?;
        let name = single(
            cert.subject()
                .iter_common_name()
                .filter_map(|a| a.as_str().ok())
                .collect(),
            "CN",
        )?;
        validate_operator_name(name)?;
        let identity = Self {
            name: name.to_owned(),
            owner: owner.to_owned(),
            role: role.parse()?,
        };

        let subject = cert.subject();
        let o = single(
            subject
                .iter_organization()
                .filter_map(|a| a.as_str().ok())
                .collect(),
            "O",
        )?;
        let ou = single(
            subject
                .iter_organizational_unit()
                .filter_map(|a| a.as_str().ok())
                .collect(),
            "OU",
        )?;
        if o != identity.owner || ou != identity.role.as_str() {
            return Err(not_operator("subject O/OU disagree with the operator URI"));
        }
        Ok(identity)
    }
}

/// The one value of a subject attribute that must occur exactly once.
fn single<'a>(mut values: Vec<&'a str>, what: &str) -> Result<&'a str, PkiError> {
    if values.len() == 1 {
        Ok(values.remove(0))
    } else {
        Err(PkiError::NotOperatorCertificate(format!(
            "subject must have exactly one {what}"
        )))
    }
}

/// Owners end up inside a `:`-separated URN, audit records and registry keys, so they are
/// restricted to the alphabet the gRPC contract documents rather than escaped: `*` (platform)
/// or 1..=63 characters of `[a-z0-9-]` starting with a letter or digit.
pub(crate) fn validate_owner(owner: &str) -> Result<(), PkiError> {
    if is_valid_owner(owner) {
        Ok(())
    } else {
        Err(PkiError::InvalidOwner(owner.to_owned()))
    }
}

/// Whether `owner` is `*` or a well-formed tenant name (see `validate_owner`).
#[must_use]
pub fn is_valid_owner(owner: &str) -> bool {
    owner == PLATFORM_OWNER
        || ((1..=63).contains(&owner.len())
            && owner.as_bytes()[0].is_ascii_alphanumeric()
            && owner
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
}

/// Operator names are the audit log's actors: 1..=64 characters of `[A-Za-z0-9._@-]`.
///
/// A name of 64 hex digits is refused: device certificates from the same CA carry the DeviceId
/// as CN, and brokers (Mosquitto `use_identity_as_username`) and Azure DPS (registration ID)
/// identify clients by CN, so an operator certificate named like a DeviceId could act as that
/// device.
/// Checks an operator name: 1..=64 characters of `[A-Za-z0-9._@-]`, not DeviceId-shaped.
///
/// # Errors
/// [`PkiError::InvalidOperatorName`].
pub fn validate_operator_name(name: &str) -> Result<(), PkiError> {
    let device_shaped = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = (1..=64).contains(&name.len())
        && !device_shaped
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidOperatorName(name.to_owned()))
    }
}
