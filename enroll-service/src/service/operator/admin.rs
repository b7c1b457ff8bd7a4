//! WhoAmI, ExportArtifacts and GetCrl: the RPCs about the service's own PKI rather than about
//! devices. Operator certificates are in [`super::operator_certificates`].

use time::OffsetDateTime;

use oxroot_proto::v1;

use super::policies::check_policy_name;
use super::{ANY_ROLE, OPERATORS, OperatorService, check_text, operator_audit};
use crate::error::ServiceError;
use crate::policy;
use crate::service::{Caller, random_hex};
use crate::store::Change;
use crate::wire::timestamp;

impl OperatorService {
    /// WhoAmI for an authenticated caller (all roles).
    pub(crate) fn who_am_i_as(caller: &Caller) -> v1::WhoAmIResponse {
        v1::WhoAmIResponse {
            name: caller.name.clone(),
            owner: caller.owner.clone(),
            role: v1::Role::from(caller.role) as i32,
            certificate_serial: caller.serial.to_string(),
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
        check_text("aws_registration_code", &request.aws_registration_code, 64)?;
        check_text(
            "azure_verification_code",
            &request.azure_verification_code,
            64,
        )?;
        let spec = self
            .core
            .registry
            .policy(&owner, &request.policy_name)?
            .ok_or_else(|| ServiceError::NotFound(format!("policy {:?}", request.policy_name)))?;
        let crl = self.core.crls.current().await?;
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
        let crl = self.core.crls.current().await?;
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
}
