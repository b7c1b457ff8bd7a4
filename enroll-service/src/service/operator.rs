//! The operator-facing service: policies, batches, imports, device life cycle, exports, the CRL,
//! the audit log and operator certificates (`oxroot.v1.Operator`).
//!
//! ```text
//!  tonic ──▶ Operator trait method: authenticate (TLS client cert) ─▶ time ─▶ `<rpc>_as(caller, …)`
//!                                                                        │
//!            role / owner checks ─▶ registry reads ─▶ one Change (state + audit) ─▶ commit
//!                                                                        │
//!            PERMISSION_DENIED ─▶ `access.denied` audit entry, committed ─▶ Status
//! ```
//!
//! Each RPC has an inner handler `OperatorService::<rpc>_as` that takes an already
//! authenticated [`Caller`]; the trait methods only authenticate, time the call and map errors.
//! Tests drive the inner handlers directly, since a unit test cannot attach a TLS client
//! certificate to a `tonic::Request`.
//!
//! Submodules, one concept each: [`policies`], [`batches`], [`import`] (CreateBatch's and
//! ImportDevices' shared add-to-batch path), [`watch`], [`devices`], [`firmware`], [`rollouts`], [`admin`] (WhoAmI, exports,
//! the CRL), [`operator_certificates`] (issue, revoke, list), [`audit_log`], [`convert`]
//! (records to wire messages) and [`paging`].

mod admin;
mod audit_log;
mod batches;
mod convert;
mod devices;
mod firmware;
mod import;
mod operator_certificates;
mod owners;
mod paging;
mod policies;
mod rollouts;
#[cfg(test)]
mod tests;
mod watch;

use std::sync::Arc;

use time::OffsetDateTime;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use oxroot_proto::v1;
use oxroot_proto::v1::operator_server::Operator;

use super::limits::CallSlot;
use super::{Caller, ServiceCore, random_hex};
use crate::audit::AuditDraft;
use crate::error::ServiceError;
use crate::metrics::RpcTimer;
use crate::pki::Role;
use crate::store::{Change, Receipt, commit};

pub use operator_certificates::{issue_operator_certificate, record_operator_certificate};
pub(crate) use watch::WatchStream;

/// Every role: the read-only RPCs.
const ANY_ROLE: &[Role] = &[Role::Admin, Role::Operator, Role::Auditor];
/// Day-to-day production RPCs.
const OPERATORS: &[Role] = &[Role::Admin, Role::Operator];
/// The audit log RPCs.
const AUDITORS: &[Role] = &[Role::Admin, Role::Auditor];
/// Policies, operator certificates, transfers to another owner.
const ADMINS: &[Role] = &[Role::Admin];
/// Longest comment of a revocation (device or operator) or a transfer.
const MAX_COMMENT: usize = 256;

/// The `oxroot.v1.Operator` gRPC service.
#[derive(Clone, Debug)]
pub struct OperatorService {
    /// State shared with the device service.
    core: Arc<ServiceCore>,
}

impl OperatorService {
    /// The service over shared state.
    #[must_use]
    pub fn new(core: Arc<ServiceCore>) -> Self {
        Self { core }
    }

    /// Starts timing an RPC.
    fn timer(&self, method: &'static str) -> RpcTimer {
        self.core.metrics.clone().time(method)
    }

    /// Commits a change and waits until it is durable.
    async fn commit(&self, change: Change) -> Result<Receipt, ServiceError> {
        Ok(commit(self.core.registry.as_ref(), change).await?)
    }

    /// Passes `result` through, except that a denial is first written to the audit log: the
    /// contract promises that every denial is on record before the caller hears of it. Role and
    /// owner checks anywhere in a handler return [`ServiceError::PermissionDenied`], so this one
    /// place covers them all.
    ///
    /// # Errors
    /// `result`'s error, or the registry's if the denial cannot be recorded.
    pub(crate) async fn audit_denial<T>(
        &self,
        caller: &Caller,
        rpc: &str,
        result: Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let Err(ServiceError::PermissionDenied(reason)) = result else {
            return result;
        };
        tracing::info!(operator = %caller.name, rpc, %reason, "access denied");
        let mut change = Change::new();
        change.audit(
            AuditDraft::new(
                OffsetDateTime::now_utc(),
                caller.actor(),
                &caller.owner,
                "access.denied",
                format!("rpc:{rpc}"),
                "denied",
            )
            .role(caller.role.as_str())
            .correlation(&random_hex(12)?)
            .detail("rpc", rpc)
            .detail("reason", reason.clone()),
        );
        self.commit(change).await?;
        Err(ServiceError::PermissionDenied(reason))
    }

    /// The caller of a request: an operator certificate this service issued, still valid, not
    /// revoked. Checked on every call, not once per connection: a connection opened before a
    /// revocation (or before expiry) stays open, its calls do not pass.
    ///
    /// Only certificates on record authenticate: every operator who can call can be listed and
    /// revoked. The CA's other certificates (devices', brokers') carry no operator URN and fail
    /// before the lookup.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`]; [`ServiceError::Unavailable`] if the registry cannot
    /// be read.
    pub(crate) fn authenticate<T>(
        &self,
        request: &Request<T>,
    ) -> impl Future<Output = Result<Caller, ServiceError>> + Send + '_ {
        // Read from the request now: the future must not hold it (a streaming request's body
        // is not `Sync`, so a future holding a reference to it would not be `Send`).
        let caller = Caller::from_request(request);
        async move { self.check_still_valid(caller?).await }
    }

    /// The expiry and revocation half of [`OperatorService::authenticate`].
    async fn check_still_valid(&self, caller: Caller) -> Result<Caller, ServiceError> {
        // rustls checks validity during the handshake; a long-lived connection can outlast it.
        if caller.not_after < OffsetDateTime::now_utc() {
            return Err(ServiceError::Unauthenticated(
                "the operator certificate has expired".into(),
            ));
        }
        match self
            .core
            .registry
            .operator_certificate(caller.serial)
            .await?
        {
            None => Err(ServiceError::Unauthenticated(
                "the operator certificate is not on this service's record".into(),
            )),
            Some(record) if record.revocation.is_some() => {
                tracing::info!(operator = %caller.name, serial = %caller.serial, "revoked operator certificate refused");
                Err(ServiceError::Unauthenticated(
                    "the operator certificate has been revoked".into(),
                ))
            }
            Some(_) => Ok(caller),
        }
    }

    /// Authenticates, runs `handler` for the caller, audits a denial and maps the outcome.
    async fn unary<Req, Resp, F>(
        &self,
        request: Request<Req>,
        rpc: &'static str,
        handler: impl FnOnce(Caller, Req) -> F,
    ) -> Result<Response<Resp>, Status>
    where
        F: Future<Output = Result<Resp, ServiceError>>,
    {
        let (caller, _slot) = self.admit(&request).await?;
        let result = handler(caller.clone(), request.into_inner()).await;
        Ok(Response::new(
            self.audit_denial(&caller, rpc, result).await?,
        ))
    }

    /// Authenticates a call and gives it one of its operator's call slots, which the call holds
    /// until it ends (a stream: until the client closes it).
    fn admit<T>(
        &self,
        request: &Request<T>,
    ) -> impl Future<Output = Result<(Caller, CallSlot), ServiceError>> + Send + '_ {
        let caller = self.authenticate(request);
        async move {
            let caller = caller.await?;
            let slot = self.core.limits.open_operator_call(&caller)?;
            Ok((caller, slot))
        }
    }
}

/// An audit entry for an action of `caller`, outcome "ok".
fn operator_audit(
    caller: &Caller,
    now: OffsetDateTime,
    owner: &str,
    action: &str,
    subject: String,
    correlation: &str,
) -> AuditDraft {
    AuditDraft::new(now, caller.actor(), owner, action, subject, "ok")
        .role(caller.role.as_str())
        .correlation(correlation)
}

/// Refuses a client's text field that is longer than `max` characters or is not one line of
/// visible characters ([`crate::text`]).
fn check_text(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    match crate::text::problem(value, max) {
        Some(problem) => Err(ServiceError::invalid(field, problem)),
        None => Ok(()),
    }
}

#[tonic::async_trait]
impl Operator for OperatorService {
    async fn who_am_i(
        &self,
        request: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let _timer = self.timer("who_am_i");
        self.unary(request, "WhoAmI", |caller, _| async move {
            Ok(Self::who_am_i_as(&caller))
        })
        .await
    }

    async fn create_policy(
        &self,
        request: Request<v1::CreatePolicyRequest>,
    ) -> Result<Response<v1::CreatePolicyResponse>, Status> {
        let _timer = self.timer("create_policy");
        self.unary(request, "CreatePolicy", |caller, req| async move {
            self.create_policy_as(&caller, req).await
        })
        .await
    }

    async fn get_policy(
        &self,
        request: Request<v1::GetPolicyRequest>,
    ) -> Result<Response<v1::GetPolicyResponse>, Status> {
        let _timer = self.timer("get_policy");
        self.unary(request, "GetPolicy", |caller, req| async move {
            self.get_policy_as(&caller, &req).await
        })
        .await
    }

    async fn sign_firmware(
        &self,
        request: Request<v1::SignFirmwareRequest>,
    ) -> Result<Response<v1::SignFirmwareResponse>, Status> {
        let _timer = self.timer("sign_firmware");
        self.unary(request, "SignFirmware", |caller, req| async move {
            self.sign_firmware_as(&caller, req).await
        })
        .await
    }

    async fn get_firmware(
        &self,
        request: Request<v1::GetFirmwareRequest>,
    ) -> Result<Response<v1::GetFirmwareResponse>, Status> {
        let _timer = self.timer("get_firmware");
        self.unary(request, "GetFirmware", |caller, req| async move {
            self.get_firmware_as(&caller, &req).await
        })
        .await
    }

    async fn list_firmware(
        &self,
        request: Request<v1::ListFirmwareRequest>,
    ) -> Result<Response<v1::ListFirmwareResponse>, Status> {
        let _timer = self.timer("list_firmware");
        self.unary(request, "ListFirmware", |caller, req| async move {
            self.list_firmware_as(&caller, &req).await
        })
        .await
    }

    async fn create_rollout(
        &self,
        request: Request<v1::CreateRolloutRequest>,
    ) -> Result<Response<v1::CreateRolloutResponse>, Status> {
        let _timer = self.timer("create_rollout");
        self.unary(request, "CreateRollout", |caller, req| async move {
            self.create_rollout_as(&caller, &req).await
        })
        .await
    }

    async fn get_rollout(
        &self,
        request: Request<v1::GetRolloutRequest>,
    ) -> Result<Response<v1::GetRolloutResponse>, Status> {
        let _timer = self.timer("get_rollout");
        self.unary(request, "GetRollout", |caller, req| async move {
            self.get_rollout_as(&caller, &req).await
        })
        .await
    }

    async fn list_rollouts(
        &self,
        request: Request<v1::ListRolloutsRequest>,
    ) -> Result<Response<v1::ListRolloutsResponse>, Status> {
        let _timer = self.timer("list_rollouts");
        self.unary(request, "ListRollouts", |caller, req| async move {
            self.list_rollouts_as(&caller, &req).await
        })
        .await
    }

    async fn update_rollout(
        &self,
        request: Request<v1::UpdateRolloutRequest>,
    ) -> Result<Response<v1::UpdateRolloutResponse>, Status> {
        let _timer = self.timer("update_rollout");
        self.unary(request, "UpdateRollout", |caller, req| async move {
            self.update_rollout_as(&caller, &req).await
        })
        .await
    }

    async fn list_policies(
        &self,
        request: Request<v1::ListPoliciesRequest>,
    ) -> Result<Response<v1::ListPoliciesResponse>, Status> {
        let _timer = self.timer("list_policies");
        self.unary(request, "ListPolicies", |caller, req| async move {
            self.list_policies_as(&caller, &req).await
        })
        .await
    }

    async fn create_batch(
        &self,
        request: Request<v1::CreateBatchRequest>,
    ) -> Result<Response<v1::CreateBatchResponse>, Status> {
        let _timer = self.timer("create_batch");
        self.unary(request, "CreateBatch", |caller, req| async move {
            self.create_batch_as(&caller, req).await
        })
        .await
    }

    async fn import_devices(
        &self,
        request: Request<Streaming<v1::ImportDevicesRequest>>,
    ) -> Result<Response<v1::ImportDevicesResponse>, Status> {
        let _timer = self.timer("import_devices");
        self.unary(request, "ImportDevices", |caller, stream| async move {
            self.import_devices_as(&caller, stream).await
        })
        .await
    }

    async fn get_batch(
        &self,
        request: Request<v1::GetBatchRequest>,
    ) -> Result<Response<v1::GetBatchResponse>, Status> {
        let _timer = self.timer("get_batch");
        self.unary(request, "GetBatch", |caller, req| async move {
            self.get_batch_as(&caller, &req).await
        })
        .await
    }

    async fn list_batches(
        &self,
        request: Request<v1::ListBatchesRequest>,
    ) -> Result<Response<v1::ListBatchesResponse>, Status> {
        let _timer = self.timer("list_batches");
        self.unary(request, "ListBatches", |caller, req| async move {
            self.list_batches_as(&caller, &req).await
        })
        .await
    }

    type WatchBatchStream = WatchStream;

    async fn watch_batch(
        &self,
        request: Request<v1::WatchBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        // Times the set-up only: the stream itself runs until the client cancels it.
        let _timer = self.timer("watch_batch");
        let (caller, slot) = self.admit(&request).await?;
        let result =
            self.watch_batch_as(&caller, request.get_ref())
                .await
                .map(|stream| -> WatchStream {
                    // The slot goes with the stream: it is freed when the client lets go.
                    Box::pin(stream.map(move |message| {
                        let _held = &slot;
                        message
                    }))
                });
        Ok(Response::new(
            self.audit_denial(&caller, "WatchBatch", result).await?,
        ))
    }

    async fn list_devices(
        &self,
        request: Request<v1::ListDevicesRequest>,
    ) -> Result<Response<v1::ListDevicesResponse>, Status> {
        let _timer = self.timer("list_devices");
        self.unary(request, "ListDevices", |caller, req| async move {
            self.list_devices_as(&caller, &req).await
        })
        .await
    }

    async fn get_device(
        &self,
        request: Request<v1::GetDeviceRequest>,
    ) -> Result<Response<v1::GetDeviceResponse>, Status> {
        let _timer = self.timer("get_device");
        self.unary(request, "GetDevice", |caller, req| async move {
            self.get_device_as(&caller, &req).await
        })
        .await
    }

    async fn revoke_device(
        &self,
        request: Request<v1::RevokeDeviceRequest>,
    ) -> Result<Response<v1::RevokeDeviceResponse>, Status> {
        let _timer = self.timer("revoke_device");
        self.unary(request, "RevokeDevice", |caller, req| async move {
            self.revoke_device_as(&caller, &req).await
        })
        .await
    }

    async fn transfer_device(
        &self,
        request: Request<v1::TransferDeviceRequest>,
    ) -> Result<Response<v1::TransferDeviceResponse>, Status> {
        let _timer = self.timer("transfer_device");
        self.unary(request, "TransferDevice", |caller, req| async move {
            self.transfer_device_as(&caller, &req).await
        })
        .await
    }

    async fn export_artifacts(
        &self,
        request: Request<v1::ExportArtifactsRequest>,
    ) -> Result<Response<v1::ExportArtifactsResponse>, Status> {
        let _timer = self.timer("export_artifacts");
        self.unary(request, "ExportArtifacts", |caller, req| async move {
            self.export_artifacts_as(&caller, &req).await
        })
        .await
    }

    async fn get_crl(
        &self,
        request: Request<v1::GetCrlRequest>,
    ) -> Result<Response<v1::GetCrlResponse>, Status> {
        let _timer = self.timer("get_crl");
        self.unary(request, "GetCrl", |caller, req| async move {
            self.get_crl_as(&caller, &req).await
        })
        .await
    }

    type WatchCrlsStream = admin::CrlWatchStream;

    async fn watch_crls(
        &self,
        request: Request<v1::WatchCrlsRequest>,
    ) -> Result<Response<Self::WatchCrlsStream>, Status> {
        // Times the set-up only: the stream runs until the client cancels it.
        let _timer = self.timer("watch_crls");
        let (caller, slot) = self.admit(&request).await?;
        let result = self.watch_crls_as(&caller, request.get_ref()).await.map(
            |stream| -> admin::CrlWatchStream {
                // The slot goes with the stream: it is freed when the client lets go.
                Box::pin(stream.map(move |message| {
                    let _held = &slot;
                    message
                }))
            },
        );
        Ok(Response::new(
            self.audit_denial(&caller, "WatchCrls", result).await?,
        ))
    }

    async fn query_audit(
        &self,
        request: Request<v1::QueryAuditRequest>,
    ) -> Result<Response<v1::QueryAuditResponse>, Status> {
        let _timer = self.timer("query_audit");
        self.unary(request, "QueryAudit", |caller, req| async move {
            self.query_audit_as(&caller, &req).await
        })
        .await
    }

    async fn verify_audit(
        &self,
        request: Request<v1::VerifyAuditRequest>,
    ) -> Result<Response<v1::VerifyAuditResponse>, Status> {
        let _timer = self.timer("verify_audit");
        self.unary(request, "VerifyAudit", |caller, req| async move {
            self.verify_audit_as(&caller, &req).await
        })
        .await
    }

    async fn issue_operator_certificate(
        &self,
        request: Request<v1::IssueOperatorCertificateRequest>,
    ) -> Result<Response<v1::IssueOperatorCertificateResponse>, Status> {
        let _timer = self.timer("issue_operator_certificate");
        self.unary(
            request,
            "IssueOperatorCertificate",
            |caller, req| async move { self.issue_operator_certificate_as(&caller, req).await },
        )
        .await
    }

    async fn revoke_operator_certificate(
        &self,
        request: Request<v1::RevokeOperatorCertificateRequest>,
    ) -> Result<Response<v1::RevokeOperatorCertificateResponse>, Status> {
        let _timer = self.timer("revoke_operator_certificate");
        self.unary(
            request,
            "RevokeOperatorCertificate",
            |caller, req| async move { self.revoke_operator_certificate_as(&caller, &req).await },
        )
        .await
    }

    async fn list_operator_certificates(
        &self,
        request: Request<v1::ListOperatorCertificatesRequest>,
    ) -> Result<Response<v1::ListOperatorCertificatesResponse>, Status> {
        let _timer = self.timer("list_operator_certificates");
        self.unary(
            request,
            "ListOperatorCertificates",
            |caller, req| async move { self.list_operator_certificates_as(&caller, &req).await },
        )
        .await
    }

    async fn create_owner(
        &self,
        request: Request<v1::CreateOwnerRequest>,
    ) -> Result<Response<v1::CreateOwnerResponse>, Status> {
        let _timer = self.timer("create_owner");
        self.unary(request, "CreateOwner", |caller, req| async move {
            self.create_owner_as(&caller, &req).await
        })
        .await
    }

    async fn get_owner(
        &self,
        request: Request<v1::GetOwnerRequest>,
    ) -> Result<Response<v1::GetOwnerResponse>, Status> {
        let _timer = self.timer("get_owner");
        self.unary(request, "GetOwner", |caller, req| async move {
            self.get_owner_as(&caller, &req).await
        })
        .await
    }

    async fn list_owners(
        &self,
        request: Request<v1::ListOwnersRequest>,
    ) -> Result<Response<v1::ListOwnersResponse>, Status> {
        let _timer = self.timer("list_owners");
        self.unary(request, "ListOwners", |caller, req| async move {
            self.list_owners_as(&caller, &req).await
        })
        .await
    }

    async fn import_owner_ca(
        &self,
        request: Request<v1::ImportOwnerCaRequest>,
    ) -> Result<Response<v1::ImportOwnerCaResponse>, Status> {
        let _timer = self.timer("import_owner_ca");
        self.unary(request, "ImportOwnerCa", |caller, req| async move {
            self.import_owner_ca_as(&caller, &req).await
        })
        .await
    }

    async fn rotate_owner_ca(
        &self,
        request: Request<v1::RotateOwnerCaRequest>,
    ) -> Result<Response<v1::RotateOwnerCaResponse>, Status> {
        let _timer = self.timer("rotate_owner_ca");
        self.unary(request, "RotateOwnerCa", |caller, req| async move {
            self.rotate_owner_ca_as(&caller, &req).await
        })
        .await
    }
}
