//! The stream driver of Onboard and Renew: it feeds the device's messages to a small state
//! machine, does the I/O each step asks for (registry reads, the challenge book, the durable
//! commit) and sends what the service says.
//!
//! ```text
//!  AwaitingHello ──Hello──▶ check_eligible ──refused──────────────────────────▶ Refusal
//!                                         └─ok─▶ Challenge sent ─▶ Challenged
//!  Challenged ────Proof──▶ check_proof ──refused──────────────────────────────▶ Refusal
//!                                    └─ok─▶ issue (lock, re-check, commit) ──▶ CredentialBundle
//!  (first message not a Hello, a second Hello, no Hello in time, the stream too long: an error status)
//! ```
//!
//! Business outcomes are refusals sent as the final message; each is audited with its precise
//! detail and a reference the device can quote to an operator.

use std::net::IpAddr;
use std::sync::Arc;

use rot_core::keys::{DeviceId, PublicKey};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use oxroot_proto::v1;

use super::checks::{
    ChallengeStanding, Eligible, Exchange, IssuedChallenge, check_eligible, check_proof,
    check_proof_shape,
};
use super::issue::issue;
use super::read_facts;
use super::refusal::{Refusal, record_refusal};
use super::registration::parse_public_key;
use super::status::check_serial;
use crate::error::ServiceError;
use crate::model::RefusalDetail;
use crate::pki::Serial;
use crate::service::{ServiceCore, parse_device_id, random_hex};
use crate::wire::{duration, timestamp};

/// What the device said, whichever RPC carried it.
pub(super) enum Incoming {
    Hello {
        device_id: String,
        epk: Vec<u8>,
        target_slot: u32,
        /// The serial of the credential the device holds (Renew; empty when it does not say).
        held_serial: String,
    },
    Proof(v1::Proof),
}

/// What the service says, whichever RPC carries it.
pub(super) enum Outgoing {
    Challenge(v1::Challenge),
    Credentials(Box<v1::CredentialBundle>),
    Refusal(v1::Refusal),
}

/// Where an exchange stands between two device messages.
enum State {
    /// Nothing received yet.
    AwaitingHello,
    /// A challenge was sent; the proof must answer it before it expires.
    Challenged(Box<Challenged>),
}

/// What the Hello established, for the proof to be checked against.
struct Challenged {
    exchange: Exchange,
    device_id: DeviceId,
    epk: PublicKey,
    eligible: Eligible,
    challenge: IssuedChallenge,
    /// The credential the device says it holds (RenewHello.serial), if it names one.
    held: Option<Serial>,
}

/// What a step decided.
enum Step {
    /// Wait for the next device message in this state.
    Next(State),
    /// The exchange is over (the final message was sent, or the device left).
    Done,
}

/// One Onboard or Renew stream: its peer, its correlation ID (the refusal reference) and where
/// the service's messages go.
struct Driver<'a> {
    core: Arc<ServiceCore>,
    peer: Option<IpAddr>,
    correlation: String,
    outbound: &'a mpsc::Sender<Result<Outgoing, Status>>,
}

impl Driver<'_> {
    /// Sends a message; `false` when the device has gone.
    async fn send(&self, message: Outgoing) -> bool {
        self.outbound.send(Ok(message)).await.is_ok()
    }

    /// Audits a refusal and sends it as the final message.
    async fn refuse(
        &self,
        exchange: Exchange,
        device_id: &DeviceId,
        refusal: Refusal,
    ) -> Result<Step, ServiceError> {
        tracing::info!(detail = %refusal.detail.as_str(), "refused");
        let audited = record_refusal(
            &self.core,
            device_id,
            exchange.rpc(),
            &refusal,
            &self.correlation,
            self.peer,
        )
        .await?;
        // No reference for a refusal that is not in the audit log: it would lead nowhere.
        let reference = if audited {
            self.correlation.as_str()
        } else {
            ""
        };
        self.send(Outgoing::Refusal(refusal.to_proto(reference)))
            .await;
        Ok(Step::Done)
    }

    /// The Hello: eligibility, then a fresh challenge.
    async fn on_hello(
        &self,
        exchange: Exchange,
        device_id: &str,
        epk: &[u8],
        held_serial: &str,
    ) -> Result<Step, ServiceError> {
        let device_id = parse_device_id("hello.device_id", device_id)?;
        check_serial("hello.serial", held_serial)?;
        // A well-formed serial that no credential can have (a leading zero) names none.
        let held = held_serial.parse::<Serial>().ok();
        let epk = parse_public_key(epk).ok_or_else(|| {
            ServiceError::invalid(
                "hello.epk",
                "must be a P-256 point, SEC1 uncompressed (65 bytes)",
            )
        })?;
        tracing::Span::current().record("device_id", tracing::field::display(&device_id));
        let facts = read_facts(&self.core, &device_id, exchange).await?;
        let admit = || self.core.challenges.admit(&device_id, self.peer);
        let eligible = match check_eligible(exchange, &device_id, &epk, admit, facts) {
            Ok(eligible) => eligible,
            Err(refusal) => return self.refuse(exchange, &device_id, refusal).await,
        };
        let challenge = self.new_challenge(&eligible)?;
        let ttl = self.core.config.challenge_ttl;
        let sent = self
            .send(Outgoing::Challenge(v1::Challenge {
                challenge_id: challenge.id.to_vec(),
                nonce: challenge.nonce.to_vec(),
                expires_at: Some(timestamp(OffsetDateTime::now_utc() + ttl)),
                expires_in: Some(duration(time::Duration::try_from(ttl).unwrap_or_default())),
                key_slot: u32::from(challenge.slot.get()),
            }))
            .await;
        if !sent {
            return Ok(Step::Done);
        }
        Ok(Step::Next(State::Challenged(Box::new(Challenged {
            exchange,
            device_id,
            epk,
            eligible,
            challenge,
            held,
        }))))
    }

    /// A fresh challenge on the eligible slot, recorded as live.
    fn new_challenge(&self, eligible: &Eligible) -> Result<IssuedChallenge, ServiceError> {
        let mut id = [0u8; 16];
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut id)
            .and_then(|()| aws_lc_rs::rand::fill(&mut nonce))
            .map_err(|_| ServiceError::Internal("system RNG failed".into()))?;
        self.core.challenges.issue(id);
        Ok(IssuedChallenge {
            id,
            nonce,
            slot: eligible.slot,
            expires: tokio::time::Instant::now() + self.core.config.challenge_ttl,
        })
    }

    /// The proof: checked against the stream's own challenge, then a credential issued.
    async fn on_proof(&self, state: &Challenged, proof: &v1::Proof) -> Result<Step, ServiceError> {
        let Challenged {
            exchange,
            device_id,
            epk,
            eligible,
            challenge,
            held,
        } = state;
        check_proof_shape(proof)?;
        // The stream's own challenge is spent by the first proof, whatever happens next.
        let book = &self.core.challenges;
        let standing = ChallengeStanding {
            fresh: book.consume(&challenge.id),
            foreign: (proof.challenge_id.as_slice() != challenge.id)
                .then(|| book.classify_foreign(&proof.challenge_id)),
            expired: tokio::time::Instant::now() > challenge.expires,
        };
        let keys = match check_proof(
            *exchange, device_id, epk, eligible, challenge, standing, proof,
        ) {
            Ok(keys) => keys,
            Err(refusal) => return self.refuse(*exchange, device_id, refusal).await,
        };
        let issued = issue(
            &self.core,
            *exchange,
            device_id,
            epk,
            eligible,
            &keys,
            *held,
            &self.correlation,
        )
        .await?;
        match issued {
            Ok(bundle) => {
                tracing::info!(serial = %bundle.serial, key_slot = bundle.key_slot, "credential sent");
                self.send(Outgoing::Credentials(Box::new(bundle))).await;
                Ok(Step::Done)
            }
            Err(refusal) => self.refuse(*exchange, device_id, refusal).await,
        }
    }

    /// The challenge expired with no proof: spent, and refused.
    async fn on_expiry(&self, state: &Challenged) -> Result<Step, ServiceError> {
        self.core.challenges.consume(&state.challenge.id);
        self.refuse(
            state.exchange,
            &state.device_id,
            RefusalDetail::NonceExpired.into(),
        )
        .await
    }
}

/// Runs one Onboard or Renew exchange. Sends the final message itself; returns an error only
/// for protocol violations and failures (which end the stream with a status).
pub(super) async fn run_exchange(
    core: Arc<ServiceCore>,
    exchange: Exchange,
    peer: Option<IpAddr>,
    mut inbound: impl Stream<Item = Result<Incoming, Status>> + Unpin + Send,
    outbound: &mpsc::Sender<Result<Outgoing, Status>>,
) -> Result<(), ServiceError> {
    let first_message_timeout = core.config.first_message_timeout;
    let driver = Driver {
        core,
        peer,
        correlation: random_hex(12)?,
        outbound,
    };
    let mut state = State::AwaitingHello;
    loop {
        let step = match state {
            State::AwaitingHello => {
                let first = tokio::time::timeout(first_message_timeout, inbound.next())
                    .await
                    .map_err(|_| {
                        ServiceError::DeadlineExceeded(
                            "no Hello within the first-message timeout".into(),
                        )
                    })?;
                match first {
                    None => Step::Done,
                    Some(Err(status)) => return Err(ServiceError::from_client_stream(&status)),
                    Some(Ok(Incoming::Hello {
                        device_id,
                        epk,
                        target_slot,
                        held_serial,
                    })) => {
                        let exchange = match exchange {
                            Exchange::Onboard => Exchange::Onboard,
                            Exchange::Renew { .. } => Exchange::Renew { target_slot },
                        };
                        driver
                            .on_hello(exchange, &device_id, &epk, &held_serial)
                            .await?
                    }
                    Some(Ok(Incoming::Proof(_))) => {
                        return Err(ServiceError::Protocol(
                            "the first message must be a hello".into(),
                        ));
                    }
                }
            }
            State::Challenged(challenged) => {
                let next = tokio::time::timeout_at(challenged.challenge.expires, inbound.next());
                match next.await {
                    Err(_) => driver.on_expiry(&challenged).await?,
                    Ok(None) => Step::Done,
                    Ok(Some(Err(status))) => {
                        return Err(ServiceError::from_client_stream(&status));
                    }
                    Ok(Some(Ok(Incoming::Hello { .. }))) => {
                        return Err(ServiceError::Protocol(
                            "expected a proof after the challenge, got another hello".into(),
                        ));
                    }
                    Ok(Some(Ok(Incoming::Proof(proof)))) => {
                        driver.on_proof(&challenged, &proof).await?
                    }
                }
            }
        };
        match step {
            Step::Next(next) => state = next,
            Step::Done => return Ok(()),
        }
    }
}
