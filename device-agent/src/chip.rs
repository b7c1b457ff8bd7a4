//! The agent's chip: its silicon, its public helper data and the lockout counter. Every key is
//! derived here, on demand, and dropped (zeroized) as soon as it has been used.

use rot_core::extractor;
use rot_core::helper_data::HelperData;
use rot_core::keys::{DeviceId, DeviceKey, KeySlot, PublicKey, Seeds};

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
        })
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
