//! WhoAmI, ExportArtifacts and GetCrl: the RPCs about the service's own PKI rather than about
//! devices. Operator certificates are in [`super::operator_certificates`].

use time::OffsetDateTime;

use oxroot_proto::v1;

use super::policies::check_policy_name;
use super::{ANY_ROLE, OPERATORS, OperatorService, check_text, operator_audit};
use crate::error::ServiceError;
use crate::pki::PLATFORM_OWNER;
use crate::policy;
use crate::service::{Caller, PLATFORM_ISSUER, random_hex};
use crate::store::{Change, CrlNotice, Published, RegistryEvent, SubscriptionError};
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
        // A broker certificate is a serverAuth certificate under the owner's root, which every
        // device of the owner trusts for its broker: it is issued by platform operators only,
        // who vouch for the host it names.
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
            .policy(&owner, &request.policy_name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("policy {:?}", request.policy_name)))?;
        let live = self.core.authorities().live(&owner).await?;
        let (issuing, retired) = live.split_first().ok_or_else(|| {
            ServiceError::FailedPrecondition(format!("owner {owner} has no live issuing CA"))
        })?;
        let mut crl_pem = String::new();
        for issuer in &live {
            crl_pem.push_str(&self.core.crls.current(&issuer.id).await?.pem);
        }
        let trust = policy::OwnerTrust {
            issuing: &issuing.ca,
            retired: retired.iter().map(|issuer| issuer.ca.as_ref()).collect(),
        };
        let now = OffsetDateTime::now_utc();
        let artifacts = policy::export_artifacts(&spec, &trust, &crl_pem, request, now)?;
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

    /// GetCrl for an authenticated caller: the CRL of one issuing CA, or of all the owner's live
    /// ones in PEM (a rotation's overlap has two).
    pub(crate) async fn get_crl_as(
        &self,
        caller: &Caller,
        request: &v1::GetCrlRequest,
    ) -> Result<v1::GetCrlResponse, ServiceError> {
        caller.require("GetCrl", ANY_ROLE)?;
        let format = match v1::CrlFormat::try_from(request.format) {
            Ok(v1::CrlFormat::Der) => v1::CrlFormat::Der,
            Ok(v1::CrlFormat::Pem | v1::CrlFormat::Unspecified) => v1::CrlFormat::Pem,
            Err(_) => return Err(ServiceError::invalid("format", "is not a CrlFormat")),
        };
        let issuers = self.crl_issuers_for(caller, request).await?;
        if format == v1::CrlFormat::Der && issuers.len() > 1 {
            return Err(ServiceError::FailedPrecondition(format!(
                "owner has {} live issuing CAs ({}): a DER CRL is one CA's, name it in issuer_id",
                issuers.len(),
                issuers.join(", ")
            )));
        }
        let mut crls = Vec::with_capacity(issuers.len());
        for issuer in &issuers {
            crls.push(self.core.crls.to_serve(issuer).await?);
        }
        let first = crls
            .first()
            .ok_or_else(|| ServiceError::Internal("no issuing CA to sign a CRL".into()))?;
        let bytes = match format {
            v1::CrlFormat::Der => hex::decode(&first.der_hex)
                .map_err(|_| ServiceError::Internal("stored CRL DER is not hex".into()))?,
            _ => crls
                .iter()
                .map(|crl| crl.pem.as_str())
                .collect::<String>()
                .into_bytes(),
        };
        Ok(v1::GetCrlResponse {
            crl: bytes,
            format: format as i32,
            crl_number: first.number,
            this_update: Some(timestamp(first.this_update)),
            next_update: Some(timestamp(first.next_update)),
            revoked_count: first.revoked_count,
            issuer_ids: issuers,
        })
    }

    /// Which CRLs a GetCrl asks for, of those the caller may see: `owner` "*" (or empty, for a
    /// platform caller) is the platform's; an owner is its live issuing CAs, or the one
    /// `issuer_id` names.
    async fn crl_issuers_for(
        &self,
        caller: &Caller,
        request: &v1::GetCrlRequest,
    ) -> Result<Vec<String>, ServiceError> {
        let platform =
            request.owner == PLATFORM_OWNER || (request.owner.is_empty() && caller.is_platform());
        if platform {
            if !request.issuer_id.is_empty() && request.issuer_id != PLATFORM_ISSUER {
                return Err(ServiceError::invalid(
                    "issuer_id",
                    "the platform has one issuing CA, \"platform\"",
                ));
            }
            return Ok(vec![PLATFORM_ISSUER.to_owned()]);
        }
        let owner = caller.owner_for("owner", &request.owner)?;
        let live = self.core.authorities().live_ids(&owner).await?;
        if request.issuer_id.is_empty() {
            // An owner whose own root has not certified its first issuing CA yet has no CRL:
            // a state to report, not a failure of the service.
            if live.is_empty() {
                return Err(ServiceError::FailedPrecondition(format!(
                    "owner {owner} has no live issuing CA, so no CRL"
                )));
            }
            return Ok(live);
        }
        // Retired CAs past their life have no CRL to serve; anything else of another owner
        // looks absent.
        let known = self.core.authorities().crl_issuers_of(&owner).await?;
        if known.contains(&request.issuer_id) {
            Ok(vec![request.issuer_id.clone()])
        } else {
            Err(ServiceError::NotFound(format!(
                "issuing CA {:?} of owner {owner}",
                request.issuer_id
            )))
        }
    }
}

/// The stream WatchCrls returns.
pub(crate) type CrlWatchStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<v1::WatchCrlsResponse, tonic::Status>> + Send>,
>;

fn crl_notice(notice: &CrlNotice) -> v1::WatchCrlsResponse {
    v1::WatchCrlsResponse {
        issuer_id: notice.issuer.clone(),
        crl_number: notice.number,
        this_update: Some(timestamp(notice.this_update)),
        next_update: Some(timestamp(notice.next_update)),
        revoked_count: notice.revoked_count,
    }
}

impl OperatorService {
    /// WatchCrls for an authenticated caller: the current CRL of every issuer the request
    /// covers, then each one signed after.
    pub(crate) async fn watch_crls_as(
        &self,
        caller: &Caller,
        request: &v1::WatchCrlsRequest,
    ) -> Result<CrlWatchStream, ServiceError> {
        caller.require("WatchCrls", ANY_ROLE)?;
        let scope = v1::GetCrlRequest {
            owner: request.owner.clone(),
            ..v1::GetCrlRequest::default()
        };
        let issuers = self.crl_issuers_for(caller, &scope).await?;
        // Subscribe first: a CRL signed between the snapshot and the subscription would
        // otherwise never be announced.
        let mut published = self.core.registry.subscribe();
        let (outbox, inbox) = tokio::sync::mpsc::channel(64);
        for issuer in &issuers {
            let crl = self.core.crls.current(issuer).await?;
            let _ = outbox.try_send(Ok(crl_notice(&CrlNotice::of(issuer, &crl))));
        }
        let core = self.core.clone();
        let owner = if request.owner == PLATFORM_OWNER
            || (request.owner.is_empty() && caller.is_platform())
        {
            None
        } else {
            Some(caller.owner_for("owner", &request.owner)?)
        };
        tokio::spawn(async move {
            loop {
                let crl = tokio::select! {
                    () = outbox.closed() => return,
                    crl = published.recv() => crl,
                };
                let notice = match crl {
                    Ok(Published {
                        event: RegistryEvent::CrlSigned(crl),
                        ..
                    }) => {
                        // The owner's issuers now (a rotation adds one while the stream runs).
                        let watched = match &owner {
                            None => crl.issuer == PLATFORM_ISSUER,
                            Some(owner) => core
                                .authorities()
                                .crl_issuers_of(owner)
                                .await
                                .is_ok_and(|ids| ids.contains(&crl.issuer)),
                        };
                        if !watched {
                            continue;
                        }
                        Ok(crl_notice(&crl))
                    }
                    Ok(_) => continue,
                    // Missed notices: the client cannot know which, so it must re-read all.
                    Err(SubscriptionError::Missed(_)) => Err(tonic::Status::data_loss(
                        "CRL notices were missed: reconnect and re-read",
                    )),
                    Err(SubscriptionError::Closed) => return,
                };
                let end = notice.is_err();
                if outbox.send(notice).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(inbox)))
    }
}
