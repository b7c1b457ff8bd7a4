//! Simulated devices: emulated chips that register and onboard over real gRPC, for the
//! `demo`, the end-to-end tests and the load generator.
//!
//! Each [`EmulatedDevice`] holds what a real device keeps, its chip (the emulated silicon)
//! and its public helper data, and nothing secret: every answer reads the silicon once,
//! reconstructs the seeds, derives the key it needs, signs and drops them, exactly like the
//! device agent.

use rot_core::attestation::{self, ChallengeContext, ChallengeKind, SignerRole};
use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{self, EnrolMode};
use rot_core::helper_data::HelperData;
use rot_core::keys::{DeviceId, KeySlot, PublicKey, Seeds};
use tonic::transport::Channel;

use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;

/// Why a simulated device could not act.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The emulated silicon could not be enrolled or reconstructed.
    #[error("silicon: {0}")]
    Silicon(String),
    /// The service sent something out of protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The RPC failed.
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
}

/// The end of an Onboard or Renew exchange.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The credential.
    Credentials(Box<v1::CredentialBundle>),
    /// A refusal.
    Refused(v1::Refusal),
}

impl Outcome {
    /// The bundle, if credentials were issued.
    #[must_use]
    pub fn credentials(&self) -> Option<&v1::CredentialBundle> {
        match self {
            Self::Credentials(bundle) => Some(bundle),
            Self::Refused(_) => None,
        }
    }

    /// The refusal reason, if refused.
    #[must_use]
    pub fn refusal_reason(&self) -> Option<v1::RefusalReason> {
        match self {
            Self::Refused(r) => Some(r.reason()),
            Self::Credentials(_) => None,
        }
    }
}

/// One emulated chip with its helper data.
#[derive(Debug)]
pub struct EmulatedDevice {
    chip_seed: ChipSeed,
    conditions: OperatingConditions,
    helper_data: HelperData,
    device_id: DeviceId,
    epk: PublicKey,
}

fn fresh_noise() -> Result<[u8; 32], FleetError> {
    let mut seed = [0u8; 32];
    aws_lc_rs::rand::fill(&mut seed).map_err(|_| FleetError::Silicon("RNG failed".into()))?;
    Ok(seed)
}

impl EmulatedDevice {
    /// Manufactures chip `index` of the fleet `fleet_seed` and enrols it (first power-up).
    ///
    /// # Errors
    /// [`FleetError::Silicon`] if enrolment fails.
    pub fn manufacture(fleet_seed: &[u8; 32], index: u32) -> Result<Self, FleetError> {
        let chip_seed = ChipSeed::derive_fleet(fleet_seed, index);
        let conditions = OperatingConditions::NOMINAL;
        let mut chip = EmulatedChip::new(&chip_seed, conditions, fresh_noise()?);
        let enrolment = extractor::enrol(&mut chip, None, EnrolMode::FirstEnrolment)
            .map_err(|e| FleetError::Silicon(e.to_string()))?;
        let epk = enrolment.seeds.enrolment_key().public_key();
        Ok(Self {
            chip_seed,
            conditions,
            device_id: DeviceId::from_public_key(&epk),
            epk,
            helper_data: enrolment.helper_data,
        })
    }

    /// The DeviceId.
    #[must_use]
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// The enrolment public key.
    #[must_use]
    pub fn epk(&self) -> &PublicKey {
        &self.epk
    }

    /// Power-up: read the silicon and reconstruct the seeds (dropped, zeroized, by the caller
    /// as soon as the signature is made).
    fn seeds(&self) -> Result<Seeds, FleetError> {
        let mut chip = EmulatedChip::new(&self.chip_seed, self.conditions, fresh_noise()?);
        extractor::reconstruct(&mut chip, &self.helper_data)
            .map_err(|e| FleetError::Silicon(e.to_string()))
    }

    /// A signed registration request.
    ///
    /// # Errors
    /// [`FleetError::Silicon`].
    pub fn registration(&self, proof_context: &[u8]) -> Result<v1::RegisterRequest, FleetError> {
        let message = attestation::registration_message(&self.epk, proof_context)
            .map_err(|_| FleetError::Protocol("proof context too long".into()))?;
        let signature = self.seeds()?.enrolment_key().sign(&message);
        Ok(v1::RegisterRequest {
            epk: self.epk.as_bytes().to_vec(),
            proof_signature: signature.0.to_vec(),
            claimed_device_id: self.device_id.to_string(),
            context: None,
            proof_context: proof_context.to_vec(),
        })
    }

    /// Answers a challenge with the ESK and the DSK of the challenge's slot.
    ///
    /// # Errors
    /// [`FleetError::Protocol`] for a malformed challenge, [`FleetError::Silicon`].
    pub fn answer(
        &self,
        kind: ChallengeKind,
        challenge: &v1::Challenge,
    ) -> Result<v1::Proof, FleetError> {
        let slot = u8::try_from(challenge.key_slot)
            .ok()
            .and_then(KeySlot::new)
            .ok_or_else(|| FleetError::Protocol("challenge key slot outside 1..=7".into()))?;
        let nonce: [u8; 32] = challenge
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| FleetError::Protocol("nonce is not 32 bytes".into()))?;
        let seeds = self.seeds()?;
        let device_key = seeds.device_key(slot);
        let dpk = device_key.public_key();
        let context = ChallengeContext {
            device_id: &self.device_id,
            challenge_id: &challenge.challenge_id,
            nonce: &nonce,
            dpk: &dpk,
            key_slot: slot,
        };
        let esk_message = attestation::challenge_message(kind, SignerRole::EnrolmentKey, &context)
            .map_err(|_| FleetError::Protocol("challenge id too long".into()))?;
        let dsk_message = attestation::challenge_message(kind, SignerRole::DeviceKey, &context)
            .map_err(|_| FleetError::Protocol("challenge id too long".into()))?;
        Ok(v1::Proof {
            challenge_id: challenge.challenge_id.clone(),
            esk_signature: seeds.enrolment_key().sign(&esk_message).0.to_vec(),
            dpk: dpk.as_bytes().to_vec(),
            dpk_signature: device_key.sign(&dsk_message).0.to_vec(),
            key_slot: u32::from(slot.get()),
        })
    }

    /// The DPK of a slot (public; for checking certificates).
    ///
    /// # Errors
    /// [`FleetError::Silicon`].
    pub fn device_public_key(&self, slot: KeySlot) -> Result<PublicKey, FleetError> {
        Ok(self.seeds()?.device_key(slot).public_key())
    }

    /// Runs an Onboard exchange.
    ///
    /// # Errors
    /// [`FleetError`] for RPC failures and protocol violations.
    pub async fn onboard(
        &self,
        client: &mut DeviceEnrollmentClient<Channel>,
    ) -> Result<Outcome, FleetError> {
        use v1::onboard_request::Msg as In;
        use v1::onboard_response::Msg as Out;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(v1::OnboardRequest {
            msg: Some(In::Hello(v1::Hello {
                device_id: self.device_id.to_string(),
                epk: self.epk.as_bytes().to_vec(),
            })),
        })
        .await
        .map_err(|_| FleetError::Protocol("request stream closed".into()))?;
        let mut responses = client
            .onboard(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let challenge = match responses.message().await? {
            Some(v1::OnboardResponse {
                msg: Some(Out::Challenge(c)),
            }) => c,
            Some(v1::OnboardResponse {
                msg: Some(Out::Refusal(r)),
            }) => return Ok(Outcome::Refused(r)),
            other => {
                return Err(FleetError::Protocol(format!(
                    "expected a challenge, got {other:?}"
                )));
            }
        };
        let proof = self.answer(ChallengeKind::Onboarding, &challenge)?;
        tx.send(v1::OnboardRequest {
            msg: Some(In::Proof(proof)),
        })
        .await
        .map_err(|_| FleetError::Protocol("request stream closed".into()))?;
        let outcome = match responses.message().await? {
            Some(v1::OnboardResponse {
                msg: Some(Out::Credentials(c)),
            }) => Outcome::Credentials(Box::new(c)),
            Some(v1::OnboardResponse {
                msg: Some(Out::Refusal(r)),
            }) => Outcome::Refused(r),
            other => {
                return Err(FleetError::Protocol(format!(
                    "expected credentials or a refusal, got {other:?}"
                )));
            }
        };
        drop(tx);
        Ok(outcome)
    }

    /// Runs a Renew exchange for `target_slot` (0 keeps the current slot).
    ///
    /// # Errors
    /// [`FleetError`] for RPC failures and protocol violations.
    pub async fn renew(
        &self,
        client: &mut DeviceEnrollmentClient<Channel>,
        target_slot: u32,
    ) -> Result<Outcome, FleetError> {
        use v1::renew_request::Msg as In;
        use v1::renew_response::Msg as Out;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(v1::RenewRequest {
            msg: Some(In::Hello(v1::RenewHello {
                device_id: self.device_id.to_string(),
                epk: self.epk.as_bytes().to_vec(),
                target_key_slot: target_slot,
            })),
        })
        .await
        .map_err(|_| FleetError::Protocol("request stream closed".into()))?;
        let mut responses = client
            .renew(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let challenge = match responses.message().await? {
            Some(v1::RenewResponse {
                msg: Some(Out::Challenge(c)),
            }) => c,
            Some(v1::RenewResponse {
                msg: Some(Out::Refusal(r)),
            }) => return Ok(Outcome::Refused(r)),
            other => {
                return Err(FleetError::Protocol(format!(
                    "expected a challenge, got {other:?}"
                )));
            }
        };
        let proof = self.answer(ChallengeKind::Renewal, &challenge)?;
        tx.send(v1::RenewRequest {
            msg: Some(In::Proof(proof)),
        })
        .await
        .map_err(|_| FleetError::Protocol("request stream closed".into()))?;
        let outcome = match responses.message().await? {
            Some(v1::RenewResponse {
                msg: Some(Out::Credentials(c)),
            }) => Outcome::Credentials(Box::new(c)),
            Some(v1::RenewResponse {
                msg: Some(Out::Refusal(r)),
            }) => Outcome::Refused(r),
            other => {
                return Err(FleetError::Protocol(format!(
                    "expected credentials or a refusal, got {other:?}"
                )));
            }
        };
        drop(tx);
        Ok(outcome)
    }
}
