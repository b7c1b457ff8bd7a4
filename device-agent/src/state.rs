//! The agent's state directory: public data only, every write atomic.
//!
//! ```text
//!  <state>/helper-data.bin            fuzzy-extractor helper data (public, integrity-checked)
//!  <state>/identity.json              DeviceId and EPK, written at enrolment (public)
//!  <state>/credential.json            the current credential bundle: chain, endpoint, policy
//!  <state>/credential.previous.json   the one it replaced, kept until its not_after
//!  <state>/reconstruct-failures       consecutive key-reconstruction failures (lockout)
//! ```
//!
//! No private key, seed or readout is ever written here: keys are re-derived from the silicon
//! whenever they are needed. A write goes to a temporary file in the same directory, is
//! fsynced, renamed over the target and the directory fsynced, so a crash leaves either the old
//! file or the new one. Readers only ever open the final names; a temporary file left by a
//! crash is never read, and the next write of that file removes it.

use std::fs;
use std::path::{Path, PathBuf};

use rot_core::helper_data::HelperData;
use rot_core::keys::{DeviceId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::credential::StoredCredential;
use crate::error::AgentError;

/// Helper data file name.
pub const HELPER_DATA: &str = "helper-data.bin";
/// Identity file name.
pub const IDENTITY: &str = "identity.json";
/// Current credential file name.
pub const CREDENTIAL: &str = "credential.json";
/// Previous credential file name.
pub const PREVIOUS_CREDENTIAL: &str = "credential.previous.json";
/// Lockout counter file name.
pub const FAILURES: &str = "reconstruct-failures";

/// Writes `bytes` to `path` atomically and durably (the one writer, [`oxroot_files`]); `mode`
/// is the new file's permission bits (Unix).
///
/// # Errors
/// [`AgentError::Io`] naming the file; the temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AgentError> {
    oxroot_files::write_atomically(path, bytes, mode, oxroot_files::Existing::Replace)
        .map_err(AgentError::io(path))
}

/// The public identity recorded at enrolment, so `status` works without touching the silicon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The DeviceId, 64 lowercase hex.
    pub device_id: String,
    /// The EPK, SEC1 uncompressed, hex.
    pub epk: String,
    /// The helper-data format version.
    pub helper_data_version: u8,
    /// When the chip was enrolled (RFC 3339).
    pub enrolled_at: String,
}

impl Identity {
    /// The identity of an EPK.
    #[must_use]
    pub fn new(epk: &PublicKey, helper_data_version: u8, enrolled_at: String) -> Self {
        Self {
            device_id: DeviceId::from_public_key(epk).to_string(),
            epk: hex::encode(epk.as_bytes()),
            helper_data_version,
            enrolled_at,
        }
    }
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// A state directory at `root` (not created yet).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file in the directory.
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the directory (and its parents) if needed.
    ///
    /// # Errors
    /// [`AgentError::Io`].
    pub fn create(&self) -> Result<(), AgentError> {
        fs::create_dir_all(&self.root).map_err(AgentError::io(&self.root))
    }

    /// The helper data's raw bytes, if a file exists (valid or not: its presence alone makes
    /// `enroll` refuse).
    ///
    /// # Errors
    /// [`AgentError::Io`] if it exists but cannot be read.
    pub fn raw_helper_data(&self) -> Result<Option<Vec<u8>>, AgentError> {
        read_optional(&self.path(HELPER_DATA))
    }

    /// The validated helper data.
    ///
    /// # Errors
    /// [`AgentError::NotEnrolled`] if there is none, [`AgentError::CorruptState`] if it does
    /// not parse (with rot-core's reason: truncated, corrupted, unsupported version).
    pub fn helper_data(&self) -> Result<HelperData, AgentError> {
        let path = self.path(HELPER_DATA);
        let bytes = self
            .raw_helper_data()?
            .ok_or_else(|| AgentError::NotEnrolled {
                state: self.root.clone(),
            })?;
        HelperData::from_bytes(&bytes).map_err(|e| AgentError::CorruptState {
            path,
            problem: e.to_string(),
        })
    }

    /// Stores helper data.
    ///
    /// # Errors
    /// [`AgentError::Io`].
    pub fn save_helper_data(&self, helper_data: &HelperData) -> Result<(), AgentError> {
        write_atomic(&self.path(HELPER_DATA), helper_data.as_bytes(), 0o644)
    }

    /// The recorded identity, if any.
    ///
    /// # Errors
    /// [`AgentError::CorruptState`] if the file does not parse.
    pub fn identity(&self) -> Result<Option<Identity>, AgentError> {
        read_json(&self.path(IDENTITY))
    }

    /// Records the identity.
    ///
    /// # Errors
    /// [`AgentError::Io`].
    pub fn save_identity(&self, identity: &Identity) -> Result<(), AgentError> {
        write_json(&self.path(IDENTITY), identity)
    }

    /// The current credential, if any.
    ///
    /// # Errors
    /// [`AgentError::CorruptState`] if the file does not parse.
    pub fn credential(&self) -> Result<Option<StoredCredential>, AgentError> {
        read_json(&self.path(CREDENTIAL))
    }

    /// The current credential, or [`AgentError::NoCredential`].
    ///
    /// # Errors
    /// As [`StateDir::credential`], and [`AgentError::NoCredential`].
    pub fn require_credential(&self) -> Result<StoredCredential, AgentError> {
        self.credential()?.ok_or_else(|| AgentError::NoCredential {
            state: self.root.clone(),
        })
    }

    /// The credential the current one replaced, if kept.
    ///
    /// # Errors
    /// [`AgentError::CorruptState`] if the file does not parse.
    pub fn previous_credential(&self) -> Result<Option<StoredCredential>, AgentError> {
        read_json(&self.path(PREVIOUS_CREDENTIAL))
    }

    /// Makes `new` the current credential. A different current credential is first kept as the
    /// previous one, so that at every instant one usable credential is on disk: the old one
    /// until the new one's rename, the new one after.
    ///
    /// # Errors
    /// [`AgentError::Io`]; the current credential is unchanged if the write failed.
    pub fn save_credential(&self, new: &StoredCredential) -> Result<(), AgentError> {
        if let Some(current) = self.credential().ok().flatten()
            && current.serial != new.serial
        {
            write_json(&self.path(PREVIOUS_CREDENTIAL), &current)?;
        }
        write_json(&self.path(CREDENTIAL), new)
    }

    /// Removes both credentials (re-enrolment: they certify keys of the old identity).
    ///
    /// # Errors
    /// [`AgentError::Io`].
    pub fn remove_credentials(&self) -> Result<(), AgentError> {
        for name in [CREDENTIAL, PREVIOUS_CREDENTIAL] {
            let path = self.path(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(AgentError::io(path)(e)),
            }
        }
        Ok(())
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, AgentError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::io(path)(e)),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, AgentError> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AgentError::CorruptState {
            path: path.to_owned(),
            problem: format!("does not parse ({e})"),
        })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), AgentError> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| AgentError::CorruptState {
        path: path.to_owned(),
        problem: format!("cannot be encoded ({e})"),
    })?;
    text.push(b'\n');
    write_atomic(path, &text, 0o644)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::credential::tests::sample_credential;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        write_atomic(&path, b"one", 0o644).unwrap();
        write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
    }

    #[test]
    fn a_leftover_temp_file_never_replaces_a_good_credential() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let good = sample_credential("01");
        state.save_credential(&good).unwrap();
        // A crash between writing the temporary file and the rename leaves this behind.
        let leftover = oxroot_files::temporary_name(&dir.path().join(CREDENTIAL), 999, 0);
        fs::write(&leftover, b"{\"half\": ").unwrap();
        assert_eq!(state.credential().unwrap().unwrap(), good);
        // The next write of the credential cleans it up.
        let newer = sample_credential("02");
        state.save_credential(&newer).unwrap();
        assert!(!leftover.exists());
        assert_eq!(state.credential().unwrap().unwrap(), newer);
        assert_eq!(state.previous_credential().unwrap().unwrap(), good);
    }

    #[test]
    fn saving_the_same_serial_again_keeps_the_previous_credential() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.save_credential(&sample_credential("01")).unwrap();
        state.save_credential(&sample_credential("02")).unwrap();
        // A retried renewal returns the same credential: the fallback must stay the old one.
        state.save_credential(&sample_credential("02")).unwrap();
        assert_eq!(
            state.previous_credential().unwrap().unwrap().serial,
            "01".to_owned()
        );
    }

    #[test]
    fn missing_and_corrupt_state_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("nowhere"));
        assert!(matches!(
            state.helper_data(),
            Err(AgentError::NotEnrolled { .. })
        ));
        assert!(matches!(
            state.require_credential(),
            Err(AgentError::NoCredential { .. })
        ));

        let state = StateDir::new(dir.path());
        fs::write(state.path(HELPER_DATA), b"OH\x01\x01short").unwrap();
        let error = state.helper_data().unwrap_err();
        assert!(matches!(error, AgentError::CorruptState { .. }));
        assert!(error.to_string().contains("truncated"), "{error}");

        fs::write(state.path(CREDENTIAL), b"not json").unwrap();
        let error = state.credential().unwrap_err();
        assert!(error.to_string().contains(CREDENTIAL), "{error}");
    }
}
