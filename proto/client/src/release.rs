//! A firmware release as files in a directory: what `enrollctl firmware get --release DIR`
//! writes and `device-agent update --release DIR` reads (a station's disk, a USB stick).
//!
//! ```text
//!  image.bin      the signed MCUboot image (Operator GetFirmware, include_image)
//!  manifest.bin   Firmware.manifest
//!  manifest.sig   Firmware.manifest_signature (DER)
//!  signer.pem     Firmware.signer_certificate_pem, then Firmware.signer_chain_pem
//! ```
//!
//! Nothing here is trusted: the device checks the signer's chain against the owner root it
//! pinned at onboarding, and every signature, before it installs anything.

use std::io;
use std::path::{Path, PathBuf};

use oxroot_proto::v1;

/// The signed image file.
pub const IMAGE: &str = "image.bin";
/// The manifest.
pub const MANIFEST: &str = "manifest.bin";
/// The manifest's signature, DER.
pub const MANIFEST_SIGNATURE: &str = "manifest.sig";
/// The signing key's certificate and the chain above it, PEM.
pub const SIGNER: &str = "signer.pem";

/// A release's four parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The signed MCUboot image.
    pub image: Vec<u8>,
    /// The manifest.
    pub manifest: Vec<u8>,
    /// Its signature, DER.
    pub manifest_signature: Vec<u8>,
    /// The signing certificate, then its chain, PEM.
    pub signer_pem: String,
}

/// A release file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ReleaseFileError {
    /// The file.
    pub path: PathBuf,
    /// The system's error.
    pub source: io::Error,
}

impl Release {
    /// The release of a GetFirmware answer and its image.
    #[must_use]
    pub fn of(firmware: &v1::Firmware, image: Vec<u8>) -> Self {
        Self {
            image,
            manifest: firmware.manifest.clone(),
            manifest_signature: firmware.manifest_signature.clone(),
            signer_pem: format!(
                "{}{}",
                firmware.signer_certificate_pem, firmware.signer_chain_pem
            ),
        }
    }

    /// The release a rollout offers (DeviceEnrollment.CheckFirmware).
    #[must_use]
    pub fn of_offer(offer: &v1::FirmwareOffer) -> Self {
        Self {
            image: offer.image.clone(),
            manifest: offer.manifest.clone(),
            manifest_signature: offer.manifest_signature.clone(),
            signer_pem: offer.signer_chain_pem.clone(),
        }
    }

    /// Each file's name and content, for a writer.
    #[must_use]
    pub fn files(&self) -> [(&'static str, &[u8]); 4] {
        [
            (IMAGE, &self.image),
            (MANIFEST, &self.manifest),
            (MANIFEST_SIGNATURE, &self.manifest_signature),
            (SIGNER, self.signer_pem.as_bytes()),
        ]
    }

    /// Reads a release directory.
    ///
    /// # Errors
    /// [`ReleaseFileError`] naming the file that cannot be read (or is not UTF-8, for the PEM).
    pub fn read(dir: &Path) -> Result<Self, ReleaseFileError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ReleaseFileError { path, source })
        };
        let signer = read(SIGNER)?;
        let signer_pem = String::from_utf8(signer).map_err(|_| ReleaseFileError {
            path: dir.join(SIGNER),
            source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
        })?;
        Ok(Self {
            image: read(IMAGE)?,
            manifest: read(MANIFEST)?,
            manifest_signature: read(MANIFEST_SIGNATURE)?,
            signer_pem,
        })
    }
}
