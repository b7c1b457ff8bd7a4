//! The device-facing service: Register, Onboard, Renew, Status, CheckFirmware, ReportFirmware.
//!
//! ```text
//!  Register ─▶ registration: verify the EPK's proof ─▶ record (shared with offline imports)
//!  Onboard / Renew ─▶ exchange (stream driver) ─▶ checks (pure) ─▶ issue (lock, commit) ─▶ bundle
//!  Status ─▶ status: a challenge, or the status for a signed request (which may retire
//!            superseded credentials, see [`crate::service::supersede`])
//!
//! CheckFirmware / ReportFirmware ─▶ firmware: staged rollouts met by the device (signed like
//! Status, over their own purposes)
//! ```
//!
//! Submodules, one concept each: [`registration`], [`checks`] (the pure eligibility and proof
//! decisions), [`issue`], [`exchange`] (the Hello → Challenge → Proof state machine and its
//! stream driver), [`refusal`], [`status`] and [`firmware`].

mod checks;
mod exchange;
mod firmware;
mod issue;
mod refusal;
mod registration;
mod status;

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use rot_core::keys::DeviceId;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_server::DeviceEnrollment;

use super::{ServiceCore, random_hex};
use crate::error::ServiceError;
use crate::model::CredentialRecord;
use crate::wire::timestamp;
use checks::{DeviceFacts, Exchange};
use exchange::{Incoming, Outgoing, run_exchange};

pub use registration::verify_signature;
pub(crate) use registration::{
    RegistrationProblem, VerifiedRegistration, register, verify_registration,
};

/// The DeviceEnrollment gRPC service.
#[derive(Clone, Debug)]
pub struct DeviceService {
    core: Arc<ServiceCore>,
}

impl DeviceService {
    /// The service over shared state.
    #[must_use]
    pub fn new(core: Arc<ServiceCore>) -> Self {
        Self { core }
    }
}

/// Reads what the eligibility check needs about a device: its record, its batch and policy,
/// its owner's record (for the issuing CA), and for a renewal its current credential's slot.
async fn read_facts(
    core: &ServiceCore,
    device_id: &DeviceId,
    exchange: Exchange,
) -> Result<DeviceFacts, ServiceError> {
    let registry = core.registry.as_ref();
    // The device, its batch, policy and owner in one read (one round trip on a database).
    let Some(placed) = registry.placement(device_id).await? else {
        return Ok(DeviceFacts::default());
    };
    let device = placed.device;
    let placement = placed.batch.zip(placed.policy);
    let current_slot = match (exchange, device.current_serial) {
        (Exchange::Renew { .. }, Some(serial)) => registry
            .credential(serial)
            .await?
            .map(|c: CredentialRecord| c.key_slot),
        _ => None,
    };
    Ok(DeviceFacts {
        device: Some(device),
        placement,
        current_slot,
        owner: placed.owner,
    })
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Peer IP address of a request, for the per-peer stream limit.
fn peer_ip<T>(request: &Request<T>) -> Option<IpAddr> {
    request.remote_addr().map(|a| a.ip())
}

impl DeviceService {
    /// Starts an exchange task and returns its outbound stream mapped by `wrap`.
    fn start<In, Out>(
        &self,
        request: Request<Streaming<In>>,
        exchange: Exchange,
        unwrap: fn(In) -> Result<Incoming, ServiceError>,
        wrap: fn(Outgoing) -> Out,
    ) -> Result<Response<ResponseStream<Out>>, Status>
    where
        In: Send + 'static,
        Out: Send + 'static,
    {
        let peer = peer_ip(&request);
        let slot = self.core.limits.open_stream(peer)?;
        let timer = self.core.metrics.clone().time(exchange.rpc());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<Outgoing, Status>>(4);
        let core = self.core.clone();
        let stream_timeout = core.config.stream_timeout;
        let span = tracing::info_span!(
            "exchange",
            rpc = exchange.rpc(),
            device_id = tracing::field::Empty
        );
        let task = async move {
            use tokio_stream::StreamExt;
            let inbound = inbound.map(move |item| match item {
                Ok(message) => unwrap(message).map_err(|e| Status::from(&e)),
                Err(status) => Err(status),
            });
            let outcome = tokio::time::timeout(
                stream_timeout,
                run_exchange(core, exchange, peer, Box::pin(inbound), &tx),
            )
            .await
            .unwrap_or_else(|_| {
                Err(ServiceError::DeadlineExceeded(
                    "the stream exceeded its maximum duration".into(),
                ))
            });
            if let Err(e) = outcome {
                tracing::info!(error = %e, rpc = exchange.rpc(), "stream ended with an error");
                let _ = tx.send(Err(Status::from(&e))).await;
            }
            drop(slot);
            drop(timer);
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
        let stream = ReceiverStream::new(rx);
        let stream = tokio_stream::StreamExt::map(stream, move |item| item.map(wrap));
        Ok(Response::new(Box::pin(stream)))
    }
}

fn onboard_in(message: v1::OnboardRequest) -> Result<Incoming, ServiceError> {
    match message.msg {
        Some(v1::onboard_request::Msg::Hello(hello)) => Ok(Incoming::Hello {
            device_id: hello.device_id,
            epk: hello.epk,
            target_slot: 0,
            held_serial: String::new(),
        }),
        Some(v1::onboard_request::Msg::Proof(proof)) => Ok(Incoming::Proof(proof)),
        None => Err(ServiceError::Protocol(
            "an OnboardRequest must set hello or proof".into(),
        )),
    }
}

fn onboard_out(message: Outgoing) -> v1::OnboardResponse {
    use v1::onboard_response::Msg;
    v1::OnboardResponse {
        msg: Some(match message {
            Outgoing::Challenge(c) => Msg::Challenge(c),
            Outgoing::Credentials(c) => Msg::Credentials(*c),
            Outgoing::Refusal(r) => Msg::Refusal(r),
        }),
    }
}

fn renew_in(message: v1::RenewRequest) -> Result<Incoming, ServiceError> {
    match message.msg {
        Some(v1::renew_request::Msg::Hello(hello)) => Ok(Incoming::Hello {
            device_id: hello.device_id,
            epk: hello.epk,
            target_slot: hello.target_key_slot,
            held_serial: hello.serial,
        }),
        Some(v1::renew_request::Msg::Proof(proof)) => Ok(Incoming::Proof(proof)),
        None => Err(ServiceError::Protocol(
            "a RenewRequest must set hello or proof".into(),
        )),
    }
}

fn renew_out(message: Outgoing) -> v1::RenewResponse {
    use v1::renew_response::Msg;
    v1::RenewResponse {
        msg: Some(match message {
            Outgoing::Challenge(c) => Msg::Challenge(c),
            Outgoing::Credentials(c) => Msg::Credentials(*c),
            Outgoing::Refusal(r) => Msg::Refusal(r),
        }),
    }
}

#[tonic::async_trait]
impl DeviceEnrollment for DeviceService {
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let _timer = self.core.metrics.clone().time("register");
        let request = request.into_inner();
        let verified = verify_registration(
            &request.epk,
            &request.proof_signature,
            &request.claimed_device_id,
            request.context.as_ref(),
            &request.proof_context,
        )
        .map_err(|problem| match problem {
            RegistrationProblem::Field(field, message) => ServiceError::invalid(field, message),
            RegistrationProblem::BadSignature => {
                ServiceError::Unauthenticated("proof_signature does not verify under epk".into())
            }
        })?;
        let actor = format!("device:{}", verified.device_id);
        let correlation = random_hex(12)?;
        let (device, newly) = register(&self.core, &verified, &actor, &correlation).await?;
        tracing::info!(device_id = %verified.device_id, newly, "register");
        Ok(Response::new(v1::RegisterResponse {
            device_id: device.device_id.to_string(),
            newly_registered: newly,
            registered_at: device.registration.map(|r| timestamp(r.registered_at)),
        }))
    }

    type OnboardStream = ResponseStream<v1::OnboardResponse>;

    async fn onboard(
        &self,
        request: Request<Streaming<v1::OnboardRequest>>,
    ) -> Result<Response<Self::OnboardStream>, Status> {
        self.start(request, Exchange::Onboard, onboard_in, onboard_out)
    }

    type RenewStream = ResponseStream<v1::RenewResponse>;

    async fn renew(
        &self,
        request: Request<Streaming<v1::RenewRequest>>,
    ) -> Result<Response<Self::RenewStream>, Status> {
        self.start(
            request,
            Exchange::Renew { target_slot: 0 },
            renew_in,
            renew_out,
        )
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let _timer = self.core.metrics.clone().time("status");
        let peer = request.remote_addr().map(|addr| addr.ip());
        let answer = status::answer(&self.core, peer, &request.into_inner()).await;
        if let Err(e) = &answer {
            tracing::info!(error = %e, "status refused");
        }
        Ok(Response::new(answer?))
    }

    async fn check_firmware(
        &self,
        request: Request<v1::CheckFirmwareRequest>,
    ) -> Result<Response<v1::CheckFirmwareResponse>, Status> {
        let _timer = self.core.metrics.clone().time("check_firmware");
        let peer = request.remote_addr().map(|addr| addr.ip());
        let answer = firmware::check(&self.core, peer, &request.into_inner()).await;
        if let Err(e) = &answer {
            tracing::info!(error = %e, "firmware check refused");
        }
        Ok(Response::new(answer?))
    }

    async fn report_firmware(
        &self,
        request: Request<v1::ReportFirmwareRequest>,
    ) -> Result<Response<v1::ReportFirmwareResponse>, Status> {
        let _timer = self.core.metrics.clone().time("report_firmware");
        let peer = request.remote_addr().map(|addr| addr.ip());
        let answer = firmware::report(&self.core, peer, &request.into_inner()).await;
        if let Err(e) = &answer {
            tracing::info!(error = %e, "firmware report refused");
        }
        Ok(Response::new(answer?))
    }
}
