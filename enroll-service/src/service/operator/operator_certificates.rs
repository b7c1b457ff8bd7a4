//! IssueOperatorCertificate, RevokeOperatorCertificate and ListOperatorCertificates: who may
//! call the operator API.
//!
//! Operator certificates are issued for a key the operator holds: a CSR (whose self-signature
//! proves possession) or a bare P-256 public key. The CA never sees an operator's private key.
//! Each issued certificate is recorded in the same commit as its audit entry; revoking one marks
//! the record (which [`super::OperatorService::authenticate`] reads on every call) and lists its
//! serial on the CRL.
//!
//! ```text
//!  Issue ──▶ record {serial, name, owner, role} + audit ──▶ certificate to the admin
//!  Revoke ─▶ record.revocation + CRL entry + audit ──▶ CRL re-signed
//!  any call ─▶ authenticate: TLS chain ─▶ operator URN ─▶ not expired ─▶ on record, not revoked
//! ```

use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use oxroot_proto::v1;
use oxroot_proto::v1::issue_operator_certificate_request::Key;
use rot_core::keys::PublicKey;

use super::paging::Pager;
use super::{ADMINS, MAX_COMMENT, OperatorService, check_text, operator_audit};
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::model::{CrlEntryRecord, OperatorCertificateRecord, RevocationRecord};
use crate::pki::validate_operator_name;
use crate::pki::{
    OperatorCredentials, OperatorKey, P256_PUBLIC_KEY_LEN, PLATFORM_OWNER, RevocationReason, Role,
    Serial, Validity, is_valid_owner,
};
use crate::service::{Caller, PLATFORM_ISSUER, ServiceCore, random_hex};
use crate::store::{Change, Conflict, Guard, Op, Registry, StoreError, commit};
use crate::wire::timestamp;

/// Operator certificate validity when the request leaves it unset.
const DEFAULT_OPERATOR_VALIDITY: time::Duration = time::Duration::days(90);
/// Longest operator certificate validity (the CA/Browser Forum's 397 days, a familiar bound).
const MAX_OPERATOR_VALIDITY: time::Duration = time::Duration::days(397);
/// Certificates start a little in the past so clients with a slightly slow clock accept them.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// Operator names are the audit log's actors: the CA's one rule (1..=64 characters of
/// `[A-Za-z0-9._@-]`, and not 64 hex digits, which is a DeviceId's shape).
fn check_operator_name(name: &str) -> Result<(), ServiceError> {
    validate_operator_name(name).map_err(|_| {
        ServiceError::invalid(
            "name",
            "an operator name is 1 to 64 characters of [A-Za-z0-9._@-], and not 64 hex \
             digits (the shape of a DeviceId)",
        )
    })
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
        if owner != PLATFORM_OWNER {
            // A platform admin's first operator for a new owner creates the owner's CA.
            if caller.is_platform() {
                self.core
                    .authorities()
                    .ensure_owner(&owner, &caller.actor())
                    .await?;
            } else {
                self.core.authorities().owner(&owner).await?;
            }
        }
        if validity > Self::ca_remaining(self.core.ca(), now)? {
            return Err(ServiceError::invalid(
                "validity",
                "must end before the issuing CA expires",
            ));
        }
        let serial = Serial::random()?;
        let issued = self.core.ca().issue_operator_certificate(
            &OperatorKey::PublicKey(public_key),
            &request.name,
            &owner,
            role,
            Validity::new(now - BACKDATE, now + validity)?,
            serial,
        )?;
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
        change.op(Op::PutOperatorCertificate(Box::new(record_of(
            granted,
            now,
            &caller.qualified_name(),
        ))));
        change.audit(
            operator_audit(
                caller,
                now,
                &owner,
                "operator.issue",
                format!("operator:{owner}/{}", request.name),
                &random_hex(12)?,
            )
            .detail("serial", serial.to_string())
            .detail("role", role.as_str())
            .detail("owner", owner.clone())
            .detail("not_after", not_after.unix_timestamp().to_string()),
        );
        // On record before the certificate leaves the service.
        self.commit(change).await?;
        tracing::info!(issuer = %caller.name, name = %request.name, %owner, %role, "operator certificate issued");
        Ok(v1::IssueOperatorCertificateResponse {
            certificate_pem: issued.certificate.pem,
            intermediate_pems: self.core.ca().chain_pems(),
            root_pem: self.core.ca().root_pem(),
            serial: serial.to_string(),
            not_after: Some(timestamp(not_after)),
            name: request.name,
            role: v1::Role::from(role) as i32,
            owner,
        })
    }

    /// RevokeOperatorCertificate for an authenticated caller.
    pub(crate) async fn revoke_operator_certificate_as(
        &self,
        caller: &Caller,
        request: &v1::RevokeOperatorCertificateRequest,
    ) -> Result<v1::RevokeOperatorCertificateResponse, ServiceError> {
        caller.require("RevokeOperatorCertificate", ADMINS)?;
        let serial = parse_operator_serial(&request.serial)?;
        check_text("comment", &request.comment, MAX_COMMENT)?;
        let reason = v1::RevocationReason::try_from(request.reason)
            .map_err(|_| ServiceError::invalid("reason", "is not a RevocationReason"))?;
        let reason = RevocationReason::from(reason);
        if serial == caller.serial {
            return Err(ServiceError::FailedPrecondition(
                "this is the caller's own certificate; another admin must revoke it".into(),
            ));
        }
        let mut record = self
            .core
            .registry
            .operator_certificate(serial)
            .await?
            .filter(|r| caller.can_see(Some(&r.owner)))
            .ok_or_else(|| ServiceError::NotFound(format!("operator certificate {serial}")))?;
        if record.revocation.is_some() {
            // Idempotent; a retry after a failed re-signing still gets the serial on the CRL.
            self.core.crls.current(PLATFORM_ISSUER).await?;
            return Ok(v1::RevokeOperatorCertificateResponse {
                certificate: Some(operator_certificate_to_proto(&record)),
            });
        }
        let now = OffsetDateTime::now_utc();
        record.revocation = Some(RevocationRecord {
            revoked_at: now,
            reason,
            comment: request.comment.clone(),
            revoked_by: caller.qualified_name(),
        });
        let mut change = Change::new();
        // Two concurrent calls for the same serial (on any replica) must not both write a
        // record: the second would overwrite the first's time and reason.
        change
            .guard(Guard::OperatorUnrevoked(serial))
            .op(Op::PutOperatorCertificate(Box::new(record.clone())))
            .op(Op::Revoke {
                issuer: PLATFORM_ISSUER.to_owned(),
                serial,
                entry: CrlEntryRecord {
                    revoked_at: now,
                    reason,
                },
            })
            .audit(
                operator_audit(
                    caller,
                    now,
                    &record.owner,
                    "operator.revoke",
                    format!("operator:{}/{}", record.owner, record.name),
                    &random_hex(12)?,
                )
                .detail("serial", serial.to_string())
                .detail("reason", reason.as_str())
                .detail("comment", request.comment.clone()),
            );
        match self.core.registry.commit(change).await {
            Ok(_) => {}
            // Another call revoked it first: answer as for a certificate already revoked.
            Err(StoreError::Conflict(Conflict::OperatorRevoked(_))) => {
                let stored = self
                    .core
                    .registry
                    .operator_certificate(serial)
                    .await?
                    .unwrap_or(record);
                self.core.crls.current(PLATFORM_ISSUER).await?;
                return Ok(v1::RevokeOperatorCertificateResponse {
                    certificate: Some(operator_certificate_to_proto(&stored)),
                });
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(revoker = %caller.name, name = %record.name, %serial, "operator certificate revoked");
        self.core
            .crls
            .resign(PLATFORM_ISSUER, &caller.actor())
            .await?;
        Ok(v1::RevokeOperatorCertificateResponse {
            certificate: Some(operator_certificate_to_proto(&record)),
        })
    }

    /// ListOperatorCertificates for an authenticated caller.
    pub(crate) async fn list_operator_certificates_as(
        &self,
        caller: &Caller,
        request: &v1::ListOperatorCertificatesRequest,
    ) -> Result<v1::ListOperatorCertificatesResponse, ServiceError> {
        caller.require("ListOperatorCertificates", ADMINS)?;
        let owner = if request.owner == PLATFORM_OWNER && caller.is_platform() {
            // The platform's own operators, a filter only a platform admin may use.
            Some(PLATFORM_OWNER.to_owned())
        } else {
            caller.owner_filter("owner", &request.owner)?
        };
        let pager = Pager::new(
            "ListOperatorCertificates",
            &[owner.as_deref().unwrap_or_default()],
            request.page_size,
        );
        let start: Option<Serial> = pager.resume(&request.page_token)?;
        let registry = self.core.registry.as_ref();
        let (records, next) = pager
            .collect(
                start,
                |after: Option<Serial>, n| {
                    let owner = owner.as_deref();
                    async move { Ok(registry.operator_certificates(owner, after, n).await?) }
                },
                |r: &OperatorCertificateRecord| r.serial,
                |_| true,
            )
            .await?;
        Ok(v1::ListOperatorCertificatesResponse {
            certificates: records.iter().map(operator_certificate_to_proto).collect(),
            next_page_token: pager.token(next.as_ref()),
        })
    }
}

/// A serial as the contract writes it (hex, either case), in the stored form (lowercase, no
/// leading zeros).
fn parse_operator_serial(text: &str) -> Result<Serial, ServiceError> {
    let invalid = || ServiceError::invalid("serial", "is not a certificate serial (hex)");
    if text.is_empty() || text.len() > 40 {
        return Err(invalid());
    }
    let value = u128::from_str_radix(text, 16).map_err(|_| invalid())?;
    Serial::new(value).map_err(|_| invalid())
}

/// The wire form of an operator certificate record.
pub(super) fn operator_certificate_to_proto(
    record: &OperatorCertificateRecord,
) -> v1::OperatorCertificate {
    v1::OperatorCertificate {
        serial: record.serial.to_string(),
        name: record.name.clone(),
        owner: record.owner.clone(),
        role: v1::Role::from(record.role) as i32,
        issued_at: Some(timestamp(record.issued_at)),
        not_after: Some(timestamp(record.not_after)),
        issued_by: record.issued_by.clone(),
        revocation: record.revocation.as_ref().map(super::convert::revocation),
    }
}

/// The record of an issued operator certificate, from what authentication reads back from it.
fn record_of(
    granted: Caller,
    issued_at: OffsetDateTime,
    issued_by: &str,
) -> OperatorCertificateRecord {
    OperatorCertificateRecord {
        serial: granted.serial,
        name: granted.name,
        owner: granted.owner,
        role: granted.role,
        issued_at,
        not_after: granted.not_after,
        issued_by: issued_by.to_owned(),
        revocation: None,
    }
}

/// Records an operator certificate issued outside IssueOperatorCertificate (the first admin at
/// `init`, the demo's admin, test harnesses), with the same audit entry, so that it
/// authenticates and can be listed and revoked. Only recorded certificates authenticate.
///
/// # Errors
/// [`ServiceError::Internal`] if `certificate_der` is not an operator certificate; the
/// registry's error if the record cannot be committed.
pub async fn record_operator_certificate(
    registry: &dyn Registry,
    certificate_der: &[u8],
    issued_by: &str,
) -> Result<OperatorCertificateRecord, ServiceError> {
    let granted = Caller::from_certificate_der(certificate_der)
        .map_err(|e| ServiceError::Internal(format!("not an operator certificate: {e}")))?;
    let now = OffsetDateTime::now_utc();
    let record = record_of(granted, now, issued_by);
    let mut change = Change::new();
    change
        .op(Op::PutOperatorCertificate(Box::new(record.clone())))
        .audit(
            AuditDraft::new(
                now,
                issued_by,
                &record.owner,
                "operator.issue",
                format!("operator:{}/{}", record.owner, record.name),
                "ok",
            )
            .correlation(&random_hex(12)?)
            .detail("serial", record.serial.to_string())
            .detail("role", record.role.as_str())
            .detail("owner", record.owner.clone())
            .detail("not_after", record.not_after.unix_timestamp().to_string()),
        );
    commit(registry, change).await?;
    Ok(record)
}

/// Issues an operator certificate outside the operator API (the demo's admin, test harnesses)
/// and records it as IssueOperatorCertificate does; `issued_by` is the audit actor.
///
/// # Errors
/// The CA's refusal (invalid name, owner, key or validity) or the registry's.
pub async fn issue_operator_certificate(
    core: &ServiceCore,
    key: &OperatorKey,
    identity: (&str, &str, Role),
    validity: Validity,
    issued_by: &str,
) -> Result<OperatorCredentials, ServiceError> {
    let (name, owner, role) = identity;
    if owner != PLATFORM_OWNER {
        core.authorities().ensure_owner(owner, issued_by).await?;
    }
    let issued = core.ca().issue_operator_certificate(
        key,
        name,
        owner,
        role,
        validity,
        Serial::random()?,
    )?;
    record_operator_certificate(core.registry.as_ref(), &issued.certificate.der, issued_by).await?;
    Ok(issued)
}
