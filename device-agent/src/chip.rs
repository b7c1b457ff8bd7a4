//! The agent's chip: its silicon, its public helper data and the lockout counter. Every key is
//! derived here, on demand, and dropped (zeroized) as soon as it has been used.

use std::io::Read;
use std::path::{Path, PathBuf};

use rot_core::extractor;
use rot_core::firmware::{FirmwareMeasurement, Measurer};
use rot_core::helper_data::HelperData;
use rot_core::keys::{
    AliasKey, DeviceId, DeviceKey, KeySlot, NotCertificateVerify, PublicKey, Seeds, SignatureBytes,
};

use crate::error::AgentError;
use crate::lockout::{self, Lockout};
use crate::silicon::Silicon;
use crate::state::StateDir;
use oxroot_client::device;

/// An enrolled chip.
#[derive(Debug)]
pub struct SiliconChip {
    silicon: Silicon,
    helper_data: HelperData,
    lockout: Lockout,
    device_id: DeviceId,
    epk: PublicKey,
    /// The firmware image this device runs, measured at each use; `None`: it proves none.
    firmware: Option<PathBuf>,
}

impl SiliconChip {
    /// Opens the chip of a state directory: loads the helper data and reconstructs once to
    /// learn (and check) the identity.
    ///
    /// # Errors
    /// [`AgentError::NotEnrolled`] / [`AgentError::CorruptState`] for the helper data, the
    /// reconstruction's errors, and [`AgentError::CorruptState`] if the recorded identity is
    /// not this chip's.
    pub fn open(state: &StateDir, silicon: Silicon) -> Result<Self, AgentError> {
        let helper_data = state.helper_data()?;
        let lockout = Lockout::new(state);
        let epk = reconstruct(&silicon, &helper_data, &lockout)?
            .enrolment_key()
            .public_key();
        let device_id = DeviceId::from_public_key(&epk);
        if let Some(identity) = state.identity()?
            && identity.device_id != device_id.to_string()
        {
            // Reconstruction only succeeds with the enrolled cells, so this is a tampered
            // identity file rather than the wrong chip; say so rather than use either.
            return Err(AgentError::CorruptState {
                path: state.path(crate::state::IDENTITY),
                problem: format!(
                    "records DeviceId {}, but the silicon reconstructs {device_id}",
                    identity.device_id
                ),
            });
        }
        Ok(Self {
            silicon,
            helper_data,
            lockout,
            device_id,
            epk,
            firmware: None,
        })
    }

    /// The chip running the firmware image at `image`: onboarding and renewal prove its
    /// measurement, and the certificate then certifies the alias key bound to it. The image is
    /// measured afresh at every use, so a changed image gives another key at once.
    #[must_use]
    pub fn running(mut self, image: Option<PathBuf>) -> Self {
        self.firmware = image;
        self
    }

    /// Measures the firmware image (SHA-256), if this chip runs one.
    ///
    /// # Errors
    /// [`AgentError::File`] if the image cannot be read.
    pub fn measure_firmware(&self) -> Result<Option<FirmwareMeasurement>, AgentError> {
        self.firmware.as_deref().map(measure_image).transpose()
    }

    /// Derives the key a credential certifies, hands it to `use_key` and drops it: the DSK of
    /// `slot`, or, for a credential bound to firmware `bound_to`, the alias key of `slot` for
    /// the firmware measured now.
    ///
    /// # Errors
    /// [`AgentError::Credential`] if the firmware that runs is not `bound_to` (the credential
    /// is for other firmware: renew); the image's and the reconstruction's errors.
    pub fn with_credential_key<T>(
        &self,
        slot: KeySlot,
        bound_to: Option<&FirmwareMeasurement>,
        use_key: impl FnOnce(&CredentialKey) -> T,
    ) -> Result<T, AgentError> {
        let key = match bound_to {
            None => CredentialKey::Device(device::Chip::seeds(self)?.device_key(slot)),
            Some(bound_to) => {
                let running = self.measure_firmware()?;
                if running.as_ref() != Some(bound_to) {
                    let running = running
                        .map_or_else(|| "no measured firmware".to_owned(), |m| m.to_string());
                    return Err(AgentError::Credential(format!(
                        "the credential is bound to firmware {bound_to}, but this device runs \
                         {running}: renew to get a credential for the firmware that runs"
                    )));
                }
                CredentialKey::Alias(device::Chip::seeds(self)?.alias_key(slot, bound_to))
            }
        };
        Ok(use_key(&key))
    }

    /// The public key a credential of `slot` bound to `bound_to` must certify (see
    /// [`SiliconChip::with_credential_key`]).
    ///
    /// # Errors
    /// As [`SiliconChip::with_credential_key`].
    pub fn credential_public_key(
        &self,
        slot: KeySlot,
        bound_to: Option<&FirmwareMeasurement>,
    ) -> Result<PublicKey, AgentError> {
        self.with_credential_key(slot, bound_to, CredentialKey::public_key)
    }

    /// The silicon source.
    #[must_use]
    pub fn silicon(&self) -> &Silicon {
        &self.silicon
    }

    /// The helper data's format version.
    #[must_use]
    pub fn helper_data_version(&self) -> u8 {
        self.helper_data.version()
    }

    /// Derives the DSK of `slot`, hands it to `use_key` and drops it.
    ///
    /// # Errors
    /// The reconstruction's errors.
    pub fn with_device_key<T>(
        &self,
        slot: KeySlot,
        use_key: impl FnOnce(&DeviceKey) -> T,
    ) -> Result<T, AgentError> {
        let seeds = device::Chip::seeds(self)?;
        let key = seeds.device_key(slot);
        drop(seeds);
        Ok(use_key(&key))
    }

    /// The DPK of `slot` (public).
    ///
    /// # Errors
    /// The reconstruction's errors.
    pub fn device_public_key(&self, slot: KeySlot) -> Result<PublicKey, AgentError> {
        self.with_device_key(slot, DeviceKey::public_key)
    }
}

/// Reads and measures a firmware image in blocks.
fn measure_image(path: &Path) -> Result<FirmwareMeasurement, AgentError> {
    let unreadable = |e: std::io::Error| AgentError::File {
        path: path.to_owned(),
        problem: format!("cannot read the firmware image to measure it: {e}"),
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mut measurer = Measurer::new();
    let mut block = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut block).map_err(unreadable)? {
            0 => return Ok(measurer.finish()),
            read => measurer.update(&block[..read]),
        }
    }
}

/// The private key of a credential, for one use: the slot's DSK, or the alias key bound to the
/// firmware that runs. Both print redacted.
#[derive(Debug)]
pub enum CredentialKey {
    /// The slot's device key.
    Device(DeviceKey),
    /// The slot's alias key for the running firmware.
    Alias(AliasKey),
}

impl CredentialKey {
    /// The public key the certificate must certify.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::Device(key) => key.public_key(),
            Self::Alias(key) => key.public_key(),
        }
    }

    /// Signs a TLS 1.3 client `CertificateVerify` content, and nothing else.
    ///
    /// # Errors
    /// [`NotCertificateVerify`] for any other input.
    pub fn sign_tls13_client_certificate_verify(
        &self,
        content: &[u8],
    ) -> Result<SignatureBytes, NotCertificateVerify> {
        match self {
            Self::Device(key) => key.sign_tls13_client_certificate_verify(content),
            Self::Alias(key) => key.sign_tls13_client_certificate_verify(content),
        }
    }

    /// Signs a TLS 1.2 client handshake transcript, and nothing else.
    ///
    /// # Errors
    /// [`NotCertificateVerify`] for any other input.
    pub fn sign_tls12_client_certificate_verify(
        &self,
        transcript: &[u8],
    ) -> Result<SignatureBytes, NotCertificateVerify> {
        match self {
            Self::Device(key) => key.sign_tls12_client_certificate_verify(transcript),
            Self::Alias(key) => key.sign_tls12_client_certificate_verify(transcript),
        }
    }
}

impl device::Chip for SiliconChip {
    type Error = AgentError;

    fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    fn epk(&self) -> &PublicKey {
        &self.epk
    }

    fn seeds(&self) -> Result<Seeds, AgentError> {
        reconstruct(&self.silicon, &self.helper_data, &self.lockout)
    }

    fn firmware(&self) -> Result<Option<FirmwareMeasurement>, AgentError> {
        self.measure_firmware()
    }
}

/// One power-up and reconstruction, counted by the lockout.
pub(crate) fn reconstruct(
    silicon: &Silicon,
    helper_data: &HelperData,
    lockout: &Lockout,
) -> Result<Seeds, AgentError> {
    lockout.attempt(|| {
        let mut cells = silicon.power_up()?;
        extractor::reconstruct(&mut cells, helper_data)
            .map_err(|e| lockout::from_reconstruct(e, silicon.name()))
    })
}
