//! WhoAmI, ExportArtifacts, GetCrl and IssueOperatorCertificate: the RPCs about the service's
//! own PKI rather than about devices.
//!
//! Operator certificates are issued for a key the operator holds: a CSR (whose self-signature
//! proves possession) or a bare P-256 public key. The CA never sees an operator's private key.

use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use oxroot_proto::v1;
use oxroot_proto::v1::issue_operator_certificate_request::Key;
use rot_core::keys::PublicKey;

use super::policies::check_policy_name;
use super::{
    ADMINS, ANY_ROLE, OPERATORS, OperatorService, check_length, operator_audit, role_to_proto,
};
use crate::error::ServiceError;
use crate::model::timestamp;
use crate::pki::{
    OperatorKey, P256_PUBLIC_KEY_LEN, PLATFORM_OWNER, Role, Serial, Validity, is_valid_owner,
};
use crate::policy;
use crate::service::{Caller, format_serial, random_hex};
use crate::store::Change;

/// Operator certificate validity when the request leaves it unset.
const DEFAULT_OPERATOR_VALIDITY: time::Duration = time::Duration::days(90);
/// Longest operator certificate validity (the CA/Browser Forum's 397 days, a familiar bound).
const MAX_OPERATOR_VALIDITY: time::Duration = time::Duration::days(397);
/// Certificates start a little in the past so clients with a slightly slow clock accept them.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// Operator names are the audit log's actors: 1..=64 characters of `[A-Za-z0-9._@-]`.
fn check_operator_name(name: &str) -> Result<(), ServiceError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "name",
            "an operator name is 1 to 64 characters of [A-Za-z0-9._@-]",
        ))
    }
}

/// The SEC1 point of a P-256 SubjectPublicKeyInfo; other curves and algorithms are refused.
fn p256_point(
    field: &str,
    spki: &SubjectPublicKeyInfo<'_>,
) -> Result<[u8; P256_PUBLIC_KEY_LEN], ServiceError> {
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(ServiceError::invalid(field, "the key must be ECDSA P-256"));
    }
    PublicKey::from_sec1(&spki.subject_public_key.data)
        .map(|k| *k.as_bytes())
        .map_err(|_| ServiceError::invalid(field, "the key is not an uncompressed P-256 point"))
}

/// The public key of a PKCS#10 CSR whose self-signature verifies.
fn csr_public_key(field: &str, der: &[u8]) -> Result<[u8; P256_PUBLIC_KEY_LEN], ServiceError> {
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| ServiceError::invalid(field, format!("is not a PKCS#10 CSR: {e}")))?;
    if !rest.is_empty() {
        return Err(ServiceError::invalid(
            field,
            "has trailing bytes after the CSR",
        ));
    }
    let key = p256_point(field, &csr.certification_request_info.subject_pki)?;
    csr.verify_signature()
        .map_err(|_| ServiceError::invalid(field, "the CSR's self-signature does not verify"))?;
    Ok(key)
}

/// The key an operator certificate certifies, from whichever form the request used.
fn operator_public_key(key: Option<Key>) -> Result<[u8; P256_PUBLIC_KEY_LEN], ServiceError> {
    match key {
        None => Err(ServiceError::invalid(
            "key",
            "one of csr_pem, csr_der or public_key is required",
        )),
        Some(Key::CsrPem(text)) => {
            let block = pem::parse(text.as_bytes())
                .map_err(|e| ServiceError::invalid("csr_pem", format!("is not PEM: {e}")))?;
            if !matches!(
                block.tag(),
                "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
            ) {
                return Err(ServiceError::invalid(
                    "csr_pem",
                    "must be a \"CERTIFICATE REQUEST\" PEM block",
                ));
            }
            csr_public_key("csr_pem", block.contents())
        }
        Some(Key::CsrDer(der)) => csr_public_key("csr_der", &der),
        Some(Key::PublicKey(bytes)) if bytes.len() == P256_PUBLIC_KEY_LEN => {
            PublicKey::from_sec1(&bytes)
                .map(|k| *k.as_bytes())
                .map_err(|_| {
                    ServiceError::invalid("public_key", "is not an uncompressed P-256 point")
                })
        }
        Some(Key::PublicKey(bytes)) => {
            let (rest, spki) = SubjectPublicKeyInfo::from_der(&bytes).map_err(|_| {
                ServiceError::invalid(
                    "public_key",
                    "must be SEC1 uncompressed (65 bytes) or SubjectPublicKeyInfo DER",
                )
            })?;
            if !rest.is_empty() {
                return Err(ServiceError::invalid("public_key", "has trailing bytes"));
            }
            p256_point("public_key", &spki)
        }
    }
}

/// The role a request grants.
fn granted_role(role: i32) -> Result<Role, ServiceError> {
    match v1::Role::try_from(role) {
        Ok(v1::Role::Admin) => Ok(Role::Admin),
        Ok(v1::Role::Operator) => Ok(Role::Operator),
        Ok(v1::Role::Auditor) => Ok(Role::Auditor),
        _ => Err(ServiceError::invalid(
            "role",
            "must be ROLE_ADMIN, ROLE_OPERATOR or ROLE_AUDITOR",
        )),
    }
}

/// The owner a new operator certificate is bound to.
fn granted_owner(caller: &Caller, requested: &str) -> Result<String, ServiceError> {
    match requested {
        // A platform admin who forgets the owner must not mint a platform operator by default.
        "" if caller.is_platform() => Err(ServiceError::invalid(
            "owner",
            "a platform admin must name the owner (\"*\" for a platform operator)",
        )),
        "" => Ok(caller.owner.clone()),
        _ if !is_valid_owner(requested) => Err(ServiceError::invalid(
            "owner",
            "an owner is 1 to 63 characters of [a-z0-9-], starting with a letter or digit, or \"*\"",
        )),
        _ if caller.is_platform() || requested == caller.owner => Ok(requested.to_owned()),
        PLATFORM_OWNER => Err(ServiceError::PermissionDenied(
            "only a platform admin can issue platform operator certificates".into(),
        )),
        _ => Err(ServiceError::PermissionDenied(format!(
            "the caller issues certificates for owner {:?} only",
            caller.owner
        ))),
    }
}

/// The requested validity of an operator certificate.
fn granted_validity(
    validity: Option<prost_types::Duration>,
) -> Result<time::Duration, ServiceError> {
    let Some(validity) = validity else {
        return Ok(DEFAULT_OPERATOR_VALIDITY);
    };
    let span = time::Duration::new(validity.seconds, validity.nanos);
    if span <= time::Duration::ZERO || span > MAX_OPERATOR_VALIDITY {
        return Err(ServiceError::invalid(
            "validity",
            "must be positive and at most 397 days",
        ));
    }
    Ok(span)
}

impl OperatorService {
    /// WhoAmI for an authenticated caller (all roles).
    pub(crate) fn who_am_i_as(caller: &Caller) -> v1::WhoAmIResponse {
        v1::WhoAmIResponse {
            name: caller.name.clone(),
            owner: caller.owner.clone(),
            role: role_to_proto(caller.role) as i32,
            certificate_serial: caller.serial.clone(),
            not_after: Some(timestamp(caller.not_after)),
        }
    }

    /// ExportArtifacts for an authenticated caller.
    pub(crate) async fn export_artifacts_as(
        &self,
        caller: &Caller,
        request: &v1::ExportArtifactsRequest,
    ) -> Result<v1::ExportArtifactsResponse, ServiceError> {
        caller.require("ExportArtifacts", OPERATORS)?;
        let owner = caller.owner_for("owner", &request.owner)?;
        // A broker certificate is a serverAuth certificate under the root every device pins:
        // a tenant able to mint one for any host could impersonate the service or another
        // tenant's broker. Only the platform issues them.
        if request
            .mosquitto
            .as_ref()
            .is_some_and(|m| !m.broker_csr_pem.is_empty())
            && !caller.is_platform()
        {
            return Err(ServiceError::PermissionDenied(
                "broker certificates (mosquitto.broker_csr_pem) are issued by platform operators only"
                    .into(),
            ));
        }
        check_policy_name("policy_name", &request.policy_name)?;
        check_length("aws_registration_code", &request.aws_registration_code, 64)?;
        check_length(
            "azure_verification_code",
            &request.azure_verification_code,
            64,
        )?;
        let spec = self
            .core
            .registry
            .policy(&owner, &request.policy_name)?
            .ok_or_else(|| ServiceError::NotFound(format!("policy {:?}", request.policy_name)))?;
        let crl = self.core.current_crl().await?;
        let now = OffsetDateTime::now_utc();
        let artifacts = policy::export_artifacts(&spec, &self.core.ca, &crl.pem, request, now)?;
        let files: Vec<&str> = artifacts.iter().map(|a| a.file_name.as_str()).collect();
        let mut change = Change::new();
        change.audit(
            operator_audit(
                caller,
                now,
                &owner,
                "artifacts.export",
                format!("policy:{owner}/{}", spec.name),
                &random_hex(12)?,
            )
            .detail("kind", spec.kind().as_str_name())
            .detail("files", files.join(",")),
        );
        self.commit(change).await?;
        Ok(v1::ExportArtifactsResponse {
            kind: spec.kind() as i32,
            artifacts,
        })
    }

    /// GetCrl for an authenticated caller.
    pub(crate) async fn get_crl_as(
        &self,
        caller: &Caller,
        request: &v1::GetCrlRequest,
    ) -> Result<v1::GetCrlResponse, ServiceError> {
        caller.require("GetCrl", ANY_ROLE)?;
        let format = v1::CrlFormat::try_from(request.format)
            .map_err(|_| ServiceError::invalid("format", "is not a CrlFormat"))?;
        let crl = self.core.current_crl().await?;
        let (bytes, format) = match format {
            v1::CrlFormat::Der => (
                hex::decode(&crl.der_hex)
                    .map_err(|_| ServiceError::Internal("stored CRL DER is not hex".into()))?,
                v1::CrlFormat::Der,
            ),
            v1::CrlFormat::Pem | v1::CrlFormat::Unspecified => {
                (crl.pem.into_bytes(), v1::CrlFormat::Pem)
            }
        };
        Ok(v1::GetCrlResponse {
            crl: bytes,
            format: format as i32,
            crl_number: crl.number,
            this_update: Some(timestamp(crl.this_update)),
            next_update: Some(timestamp(crl.next_update)),
            revoked_count: crl.revoked_count,
        })
    }

    /// IssueOperatorCertificate for an authenticated caller.
    pub(crate) async fn issue_operator_certificate_as(
        &self,
        caller: &Caller,
        request: v1::IssueOperatorCertificateRequest,
    ) -> Result<v1::IssueOperatorCertificateResponse, ServiceError> {
        caller.require("IssueOperatorCertificate", ADMINS)?;
        let owner = granted_owner(caller, &request.owner)?;
        check_operator_name(&request.name)?;
        let role = granted_role(request.role)?;
        let validity = granted_validity(request.validity)?;
        let public_key = operator_public_key(request.key)?;
        let now = OffsetDateTime::now_utc();
        if validity > self.ca_remaining(now)? {
            return Err(ServiceError::invalid(
                "validity",
                "must end before the issuing CA expires",
            ));
        }
        let serial = Serial::random()?;
        let issued = self.core.ca.issue_operator_certificate(
            &OperatorKey::PublicKey(public_key),
            &request.name,
            &owner,
            role,
            Validity::new(now - BACKDATE, now + validity)?,
            serial,
        )?;
        let serial = format_serial(serial);
        // Read back what was signed (rcgen keeps whole seconds), which also checks that the
        // certificate names the identity requested.
        let granted = Caller::from_certificate_der(&issued.certificate.der)
            .map_err(|e| ServiceError::Internal(format!("issued operator certificate: {e}")))?;
        if (granted.name.as_str(), granted.owner.as_str(), granted.role)
            != (request.name.as_str(), owner.as_str(), role)
        {
            return Err(ServiceError::Internal(
                "the issued operator certificate does not read back as requested".into(),
            ));
        }
        let not_after = granted.not_after;
        let mut change = Change::new();
        change.audit(
            operator_audit(
                caller,
                now,
                &owner,
                "operator.issue",
                format!("operator:{}", request.name),
                &random_hex(12)?,
            )
            .detail("serial", serial.clone())
            .detail("role", role.as_str())
            .detail("owner", owner.clone())
            .detail("not_after", not_after.unix_timestamp().to_string()),
        );
        // On record before the certificate leaves the service.
        self.commit(change).await?;
        tracing::info!(issuer = %caller.name, name = %request.name, %owner, %role, "operator certificate issued");
        Ok(v1::IssueOperatorCertificateResponse {
            certificate_pem: issued.certificate.pem,
            intermediate_pems: vec![self.core.ca.intermediate_pem()],
            root_pem: self.core.ca.root_pem(),
            serial,
            not_after: Some(timestamp(not_after)),
            name: request.name,
            role: role_to_proto(role) as i32,
            owner,
        })
    }
}
