//! Simulated devices: emulated chips that register and onboard over real gRPC, for the
//! `demo`, the end-to-end tests and the load generator.
//!
//! Each [`EmulatedDevice`] holds what a real device keeps, its chip (the emulated silicon)
//! and its public helper data, and nothing secret: every answer reads the silicon once,
//! reconstructs the seeds, derives the key it needs, signs and drops them. The exchange
//! itself is the one the device agent runs ([`oxroot_client::device`]), so the service is always tested
//! against the same client code that runs on devices.

use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use indicatif::{ProgressBar, ProgressStyle};
use oxroot_client::device::{self, AnswerKeys, AttestationSigner, Chip, ExchangeError};
use rot_core::SignatureBytes;
use rot_core::attestation::ChallengeKind;
use rot_core::attestation::Message;
use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::entropy::EntropySource;
use rot_core::extractor::{self, EnrolMode};
use rot_core::hazmat::{READOUT_BYTES, Readout};
use rot_core::helper_data::HelperData;
use rot_core::keys::{DeviceId, ImportKey, KeySlot, PublicKey, Seeds};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;

pub use oxroot_client::device::{HeldCredential, Outcome};

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

    /// Powers the chip up once: the silicon is read now, as a chip reads it when it starts,
    /// and every signature of this power-up reconstructs the seeds from that readout.
    ///
    /// The load generator powers its devices up before the measured loop, so the loop holds
    /// what a device does after the challenge (reconstruct, derive, sign) and not the
    /// emulator's simulation of the cell physics, which real silicon does not spend CPU on.
    ///
    /// # Errors
    /// [`FleetError::Silicon`] if the read fails.
    pub fn power_up(&self, signer: DeviceSigner) -> Result<PoweredDevice, FleetError> {
        let mut chip = EmulatedChip::new(&self.chip_seed, self.conditions, fresh_noise()?);
        let mut readout = Zeroizing::new([0u8; READOUT_BYTES]);
        chip.read(&mut readout)
            .map_err(|e| FleetError::Silicon(e.to_string()))?;
        Ok(PoweredDevice {
            helper_data: self.helper_data.clone(),
            device_id: self.device_id,
            epk: self.epk,
            readout,
            signer,
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
        Ok(device::registration_request(self, proof_context, None)?)
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
        Ok(device::answer(self, kind, challenge)?)
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
        Ok(device::onboard(client, self).await?)
    }

    /// Runs a Renew exchange for `target_slot` (0 keeps the current slot), naming no held
    /// credential.
    ///
    /// # Errors
    /// [`FleetError`] for RPC failures and protocol violations.
    pub async fn renew(
        &self,
        client: &mut DeviceEnrollmentClient<Channel>,
        target_slot: u32,
    ) -> Result<Outcome, FleetError> {
        Ok(device::renew(client, self, target_slot, "").await?)
    }

    /// Runs a Renew exchange for `target_slot` from a device that holds and uses the
    /// credential `held_serial` (see [`device::renew`]).
    ///
    /// # Errors
    /// [`FleetError`] for RPC failures and protocol violations.
    pub async fn renew_holding(
        &self,
        client: &mut DeviceEnrollmentClient<Channel>,
        target_slot: u32,
        held_serial: &str,
    ) -> Result<Outcome, FleetError> {
        Ok(device::renew(client, self, target_slot, held_serial).await?)
    }

    /// Asks for the device's status, signed by the device key of `held` (or the enrolment key
    /// when it holds nothing); see [`device::status`].
    ///
    /// # Errors
    /// [`FleetError`] for RPC failures (UNAUTHENTICATED for a proof the service refused) and
    /// protocol violations.
    pub async fn status(
        &self,
        client: &mut DeviceEnrollmentClient<Channel>,
        held: Option<&HeldCredential>,
    ) -> Result<v1::StatusResponse, FleetError> {
        Ok(device::status(client, self, held).await?.response)
    }
}

/// The P-256 implementation a simulated device signs its answers with. Both sign with the
/// keys rot-core derives from the seeds the device has just reconstructed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSigner {
    /// rot-core's own keys (RustCrypto p256), as the device agent signs.
    RotCore,
    /// The same keys imported into aws-lc-rs, which signs several times faster: a load
    /// generator then spends less of the machine on its devices.
    AwsLc,
}

impl DeviceSigner {
    /// `p256` or `aws-lc-rs`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::RotCore => "p256",
            Self::AwsLc => "aws-lc-rs",
        }
    }
}

/// A key rot-core derived, imported into aws-lc-rs.
struct AwsLcKey(EcdsaKeyPair);

impl ImportKey for AwsLcKey {
    type Error = FleetError;

    fn import_p256_scalar(scalar: &[u8; 32]) -> Result<Self, FleetError> {
        // RFC 5915 ECPrivateKey { version 1, privateKey, [0] prime256v1 }; aws-lc computes the
        // public key.
        const PREFIX: [u8; 7] = [0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
        const CURVE: [u8; 12] = [
            0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
        ];
        let mut der = Zeroizing::new([0u8; PREFIX.len() + 32 + CURVE.len()]);
        der[..PREFIX.len()].copy_from_slice(&PREFIX);
        der[PREFIX.len()..PREFIX.len() + 32].copy_from_slice(scalar);
        der[PREFIX.len() + 32..].copy_from_slice(&CURVE);
        EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_slice())
            .map(Self)
            .map_err(|e| FleetError::Silicon(format!("aws-lc-rs refused a derived key: {e}")))
    }
}

impl AttestationSigner for AwsLcKey {
    #[allow(
        clippy::expect_used,
        reason = "as RustCrypto's Signer::sign: an internal failure of a valid key is a bug"
    )]
    fn sign(&self, message: &Message) -> SignatureBytes {
        let signature = self
            .0
            .sign(&SystemRandom::new(), message.as_bytes())
            .expect("aws-lc-rs signs with a valid P-256 key");
        SignatureBytes(
            signature
                .as_ref()
                .try_into()
                .expect("a fixed-size P-256 signature is 64 bytes"),
        )
    }
}

impl AwsLcKey {
    fn public_key(&self) -> Result<PublicKey, FleetError> {
        PublicKey::from_sec1(self.0.public_key().as_ref())
            .map_err(|_| FleetError::Silicon("aws-lc-rs gave a malformed public key".into()))
    }
}

/// An [`EmulatedDevice`] after one power-up: that power-up's readout (zeroized on drop) and
/// the device's public data, without the chip itself. It reconstructs its seeds from the
/// readout each time it signs.
pub struct PoweredDevice {
    helper_data: HelperData,
    device_id: DeviceId,
    epk: PublicKey,
    readout: Zeroizing<Readout>,
    signer: DeviceSigner,
}

impl std::fmt::Debug for PoweredDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoweredDevice")
            .field("device_id", &self.device_id)
            .field("readout", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl Chip for PoweredDevice {
    type Error = FleetError;

    fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    fn epk(&self) -> &PublicKey {
        &self.epk
    }

    fn seeds(&self) -> Result<Seeds, FleetError> {
        extractor::reconstruct_from_readout(&self.readout, &self.helper_data)
            .map_err(|e| FleetError::Silicon(e.to_string()))
    }

    fn answer_keys(&self, seeds: &Seeds, slot: KeySlot) -> Result<AnswerKeys, FleetError> {
        match self.signer {
            DeviceSigner::RotCore => Ok(AnswerKeys::derive(seeds, slot)),
            DeviceSigner::AwsLc => {
                let esk: AwsLcKey = seeds.enrolment_key_into()?;
                if esk.public_key()? != self.epk {
                    return Err(FleetError::Silicon(
                        "the imported enrolment key is not the EPK's".into(),
                    ));
                }
                let dsk: AwsLcKey = seeds.device_key_into(slot)?;
                Ok(AnswerKeys {
                    dpk: dsk.public_key()?,
                    esk: Box::new(esk),
                    dsk: Box::new(dsk),
                })
            }
        }
    }
}

impl PoweredDevice {
    /// The P-256 implementation it signs answers with.
    #[must_use]
    pub fn signer(&self) -> DeviceSigner {
        self.signer
    }

    /// The DeviceId.
    #[must_use]
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// A signed registration request (as [`EmulatedDevice::registration`]).
    ///
    /// # Errors
    /// As [`EmulatedDevice::registration`].
    pub fn registration(&self, proof_context: &[u8]) -> Result<v1::RegisterRequest, FleetError> {
        Ok(device::registration_request(self, proof_context, None)?)
    }

    /// Answers a challenge (as [`EmulatedDevice::answer`]).
    ///
    /// # Errors
    /// As [`EmulatedDevice::answer`].
    pub fn answer(
        &self,
        kind: ChallengeKind,
        challenge: &v1::Challenge,
    ) -> Result<v1::Proof, FleetError> {
        Ok(device::answer(self, kind, challenge)?)
    }

    /// Runs an Onboard exchange.
    ///
    /// # Errors
    /// As [`EmulatedDevice::onboard`].
    pub async fn onboard(
        &self,
        client: &mut DeviceEnrollmentClient<Channel>,
    ) -> Result<Outcome, FleetError> {
        Ok(device::onboard(client, self).await?)
    }
}

/// A progress bar for a fleet run (manufacture, register, onboard), or a hidden one when no
/// terminal is watching.
#[must_use]
pub fn progress_bar(len: u64, label: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:40}] {pos}/{len} {per_sec:>12} {elapsed_precise}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// The `p`th percentile (nearest rank) of latencies sorted ascending; zero for none.
#[must_use]
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
