//! Simulated devices: emulated chips that register and onboard over real gRPC, for the
//! `demo`, the end-to-end tests and the load generator.
//!
//! Each [`EmulatedDevice`] holds what a real device keeps, its chip (the emulated silicon)
//! and its public helper data, and nothing secret: every answer reads the silicon once,
//! reconstructs the seeds, derives the key it needs, signs and drops them. The exchange
//! itself is the device agent's ([`device_agent::protocol`]), so the service is always tested
//! against the same client code that runs on devices.

use device_agent::protocol::{self, Chip, ExchangeError};
use rot_core::attestation::ChallengeKind;
use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{self, EnrolMode};
use rot_core::helper_data::HelperData;
use rot_core::keys::{DeviceId, KeySlot, PublicKey, Seeds};
use tonic::transport::Channel;

use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;

pub use device_agent::protocol::Outcome;

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

impl From<ExchangeError<FleetError>> for FleetError {
    fn from(error: ExchangeError<FleetError>) -> Self {
        match error {
            ExchangeError::Chip(error) => error,
            ExchangeError::Protocol(text) => Self::Protocol(text),
            ExchangeError::Rpc(status) => Self::Rpc(status),
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

impl Chip for EmulatedDevice {
    type Error = FleetError;

    fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    fn epk(&self) -> &PublicKey {
        &self.epk
    }

    /// Power-up: read the silicon and reconstruct the seeds (dropped, zeroized, by the caller
    /// as soon as the signature is made).
    fn seeds(&self) -> Result<Seeds, FleetError> {
        let mut chip = EmulatedChip::new(&self.chip_seed, self.conditions, fresh_noise()?);
        extractor::reconstruct(&mut chip, &self.helper_data)
            .map_err(|e| FleetError::Silicon(e.to_string()))
    }
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

    /// A signed registration request.
    ///
    /// # Errors
    /// [`FleetError::Silicon`]; [`FleetError::Protocol`] for a proof context over 128 bytes.
    pub fn registration(&self, proof_context: &[u8]) -> Result<v1::RegisterRequest, FleetError> {
        Ok(protocol::registration_request(self, proof_context, None)?)
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
        Ok(protocol::answer(self, kind, challenge)?)
    }

    /// The DPK of a slot (public; for checking certificates).
    ///
    /// # Errors
    /// [`FleetError::Silicon`].
    pub fn device_public_key(&self, slot: KeySlot) -> Result<PublicKey, FleetError> {
        Ok(Chip::seeds(self)?.device_key(slot).public_key())
    }

    /// Runs an Onboard exchange.
    ///
    /// # Errors
    /// [`FleetError`] for RPC failures and protocol violations.
    pub async fn onboard(
        &self,
        client: &mut DeviceEnrollmentClient<Channel>,
    ) -> Result<Outcome, FleetError> {
        Ok(protocol::onboard(client, self).await?)
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
        Ok(protocol::renew(client, self, target_slot).await?)
    }
}
