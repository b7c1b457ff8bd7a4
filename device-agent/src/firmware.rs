//! The firmware a device runs, in an emulated A/B layout: two slots in the state directory and
//! a boot record naming the active one. `update` checks a release against the owner root the
//! device pinned at onboarding and installs it into the other slot; the measurement of the
//! active slot is the firmware the device proves (see [`crate::chip::SiliconChip::running`]).
//!
//! ```text
//!  <state>/firmware/slot-a.bin, slot-b.bin   installed MCUboot images
//!  <state>/firmware/boot.json                the active slot, and the highest security counter
//!                                            ever installed (anti-rollback)
//!
//!  release ─▶ signer chain to the credential's root, EKU codeSigning (webpki, x509-parser)
//!          ─▶ manifest signature (signer key) ─▶ manifest's policy = the credential's
//!          ─▶ image: size and SHA-256 as the manifest says, MCUboot signature (signer key),
//!             version and security counter as the manifest says
//!          ─▶ security counter ≥ the highest installed ─▶ write the inactive slot ─▶ switch
//! ```
//!
//! On a real device the boot ROM or first-stage loader would do the switch and the measuring
//! (MCUboot swaps slots and checks the signature again at boot); here the switch is the boot
//! record, written last and atomically, so a crash leaves the old slot active.

use std::path::PathBuf;

use oxroot_client::release::Release;
use rot_core::FirmwareMeasurement;
use rot_core::firmware::image::SignedImage;
use rot_core::firmware::manifest::{self, ImageVersion, Manifest};
use rot_core::keys::PublicKey;
use rustls_pki_types::UnixTime;
use serde::{Deserialize, Serialize};

use crate::credential::{StoredCredential, certificates};
use crate::error::AgentError;
use crate::state::{StateDir, write_atomic};

/// The firmware directory inside the state directory.
pub const FIRMWARE_DIR: &str = "firmware";
/// The boot record's file name.
pub const BOOT_RECORD: &str = "boot.json";
/// The rollout report an installed update still owes the service.
pub const PENDING_REPORT: &str = "pending-report.json";

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), the OID's DER value.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// One of the two slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Self::A => "slot-a.bin",
            Self::B => "slot-b.bin",
        }
    }
}

/// What is installed in a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The image's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its security counter.
    pub security_counter: u32,
    /// SHA-256 of the image file (lowercase hex): the measurement it runs as.
    pub measurement: String,
}

/// The boot record: which slot runs, and the anti-rollback floor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// The slot that runs; `None` before the first update.
    pub active: Option<Slot>,
    /// What slot A holds.
    pub a: Option<Installed>,
    /// What slot B holds.
    pub b: Option<Installed>,
    /// The highest security counter ever installed: nothing below it is installed again.
    pub security_counter: u32,
}

impl BootRecord {
    /// What `slot` holds.
    #[must_use]
    pub fn slot(&self, slot: Slot) -> Option<&Installed> {
        match slot {
            Slot::A => self.a.as_ref(),
            Slot::B => self.b.as_ref(),
        }
    }

    fn set(&mut self, slot: Slot, installed: Installed) {
        match slot {
            Slot::A => self.a = Some(installed),
            Slot::B => self.b = Some(installed),
        }
    }
}

/// A rollout's image installed and not yet reported: the report waits until the new firmware
/// runs (after the reboot), so that it says what runs, not what was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReport {
    /// The rollout that offered the image.
    pub rollout_id: String,
    /// The measurement of the image installed, lowercase hex.
    pub measurement: String,
}

/// The firmware slots of a state directory.
#[derive(Clone, Debug)]
pub struct Slots {
    dir: PathBuf,
}

impl Slots {
    /// The slots of `state`.
    #[must_use]
    pub fn of(state: &StateDir) -> Self {
        Self {
            dir: state.path(FIRMWARE_DIR),
        }
    }

    /// The boot record (the default before the first update).
    ///
    /// # Errors
    /// [`AgentError::CorruptState`] for a record that does not parse; I/O errors.
    pub fn boot_record(&self) -> Result<BootRecord, AgentError> {
        let path = self.dir.join(BOOT_RECORD);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AgentError::CorruptState {
                path,
                problem: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BootRecord::default()),
            Err(e) => Err(AgentError::io(path)(e)),
        }
    }

    /// The report an installed update still owes, if any.
    ///
    /// # Errors
    /// [`AgentError::CorruptState`] for a file that does not parse; I/O errors.
    pub fn pending_report(&self) -> Result<Option<PendingReport>, AgentError> {
        let path = self.dir.join(PENDING_REPORT);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| AgentError::CorruptState {
                        path,
                        problem: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::io(path)(e)),
        }
    }

    /// Remembers that `pending` is owed (written before the service hears anything).
    ///
    /// # Errors
    /// I/O errors.
    pub fn owe_report(&self, pending: &PendingReport) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec_pretty(pending)
            .map_err(|e| AgentError::Protocol(format!("pending report: {e}")))?;
        write_atomic(&self.dir.join(PENDING_REPORT), &bytes, 0o644)
    }

    /// Forgets the owed report: the service has it.
    ///
    /// # Errors
    /// I/O errors other than its absence.
    pub fn report_sent(&self) -> Result<(), AgentError> {
        let path = self.dir.join(PENDING_REPORT);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::io(path)(e)),
            _ => Ok(()),
        }
    }

    /// The image file of the slot that runs, if an update has installed one.
    ///
    /// # Errors
    /// As [`Slots::boot_record`].
    pub fn active_image(&self) -> Result<Option<PathBuf>, AgentError> {
        Ok(self
            .boot_record()?
            .active
            .map(|slot| self.dir.join(slot.file_name())))
    }

    /// Checks `release` against `credential` (its pinned owner root and its policy) and the
    /// anti-rollback floor, installs it into the inactive slot and makes that slot active.
    ///
    /// # Errors
    /// [`AgentError::FirmwareRefused`] saying which check failed; I/O errors.
    pub fn install(
        &self,
        release: &Release,
        credential: &StoredCredential,
    ) -> Result<Update, AgentError> {
        let checked = check_release(release, credential)?;
        let mut record = self.boot_record()?;
        let refused = |why: String| Err(AgentError::FirmwareRefused(why));
        if checked.security_counter < record.security_counter {
            return refused(format!(
                "{} {} has security counter {}, below the {} this device has installed: a \
                 rollback",
                checked.name, checked.version, checked.security_counter, record.security_counter
            ));
        }
        let installed = Installed {
            name: checked.name.clone(),
            version: checked.version.to_string(),
            security_counter: checked.security_counter,
            measurement: checked.measurement.to_string(),
        };
        if let Some(active) = record.active
            && record.slot(active) == Some(&installed)
        {
            return Ok(Update {
                slot: active,
                installed,
                changed: false,
            });
        }
        let slot = record.active.map_or(Slot::A, Slot::other);
        std::fs::create_dir_all(&self.dir).map_err(AgentError::io(&self.dir))?;
        write_atomic(&self.dir.join(slot.file_name()), &release.image, 0o644)?;
        record.set(slot, installed.clone());
        record.active = Some(slot);
        record.security_counter = record.security_counter.max(checked.security_counter);
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| AgentError::Protocol(format!("boot record: {e}")))?;
        // Written last: until it is, the old slot stays the one that runs.
        write_atomic(&self.dir.join(BOOT_RECORD), &bytes, 0o644)?;
        Ok(Update {
            slot,
            installed,
            changed: true,
        })
    }
}

/// What an update did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The slot that runs now.
    pub slot: Slot,
    /// What it holds.
    pub installed: Installed,
    /// False when the release was already the running one.
    pub changed: bool,
}

/// A release that passed every check.
#[derive(Debug)]
struct CheckedRelease {
    name: String,
    version: ImageVersion,
    security_counter: u32,
    measurement: FirmwareMeasurement,
}

/// Every check of a release before it is installed (see the module text).
fn check_release(
    release: &Release,
    credential: &StoredCredential,
) -> Result<CheckedRelease, AgentError> {
    let refused = |why: String| AgentError::FirmwareRefused(why);
    let signer_key = verify_signer(&release.signer_pem, &credential.root_pem)?;
    let manifest: Manifest<'_> =
        manifest::verify(&release.manifest, &release.manifest_signature, &signer_key)
            .map_err(|e| refused(format!("the manifest: {e}")))?;
    if manifest.policy != credential.policy_name {
        return Err(refused(format!(
            "the release is for policy {:?}; this device is under {:?}",
            manifest.policy, credential.policy_name
        )));
    }
    let measurement = FirmwareMeasurement::of_image(&release.image);
    if release.image.len() != manifest.image_size as usize
        || measurement.as_bytes() != &manifest.image_digest
    {
        return Err(refused(
            "the image is not the one the manifest names (its size or SHA-256 differ)".into(),
        ));
    }
    let image =
        SignedImage::parse(&release.image).map_err(|e| refused(format!("the image: {e}")))?;
    image
        .verify(&signer_key)
        .map_err(|e| refused(format!("the image: {e}")))?;
    if image.version != manifest.version
        || image.security_counter != Some(manifest.security_counter)
    {
        return Err(refused(
            "the image's version or security counter is not the manifest's".into(),
        ));
    }
    Ok(CheckedRelease {
        name: manifest.image_name.to_owned(),
        version: manifest.version,
        security_counter: manifest.security_counter,
        measurement,
    })
}

/// Verifies the signing certificate up to `root_pem` (the owner's root this device pinned at
/// onboarding) for code signing, and returns its key.
fn verify_signer(signer_pem: &str, root_pem: &str) -> Result<PublicKey, AgentError> {
    let refused = |why: String| AgentError::FirmwareRefused(why);
    let chain =
        certificates(signer_pem, "the release's signer.pem").map_err(|e| refused(e.to_string()))?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(refused("signer.pem holds no certificate".into()));
    };
    let roots = certificates(root_pem, "the credential's root")?;
    let anchors = roots
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(root).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AgentError::Credential(format!("the root does not parse: {e}")))?;
    // The purpose is checked along the path "if present" (the CAs above carry none); the
    // leaf must name code signing itself, which is checked below.
    webpki::EndEntityCert::try_from(leaf)
        .and_then(|cert| {
            cert.verify_for_usage(
                &[webpki::aws_lc_rs::ECDSA_P256_SHA256],
                &anchors,
                intermediates,
                UnixTime::now(),
                webpki::KeyUsage::required_if_present(CODE_SIGNING),
                None,
                None,
            )
            .map(|_| ())
        })
        .map_err(|e| {
            refused(format!(
                "the signing certificate does not chain to this device's owner root: {e:?}"
            ))
        })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| refused(format!("the signing certificate does not parse: {e}")))?;
    let code_signing = parsed
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|eku| eku.value.code_signing);
    if !code_signing {
        return Err(refused(
            "the signing certificate is not for code signing".into(),
        ));
    }
    PublicKey::from_sec1(parsed.public_key().subject_public_key.data.as_ref())
        .map_err(|_| refused("the signing key is not a P-256 key".into()))
}
