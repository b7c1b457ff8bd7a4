//! The silicon file: one emulated chip, as the agent and QEMU guests carry it.
//!
//! A QEMU guest receives this file through fw_cfg
//! (`-fw_cfg name=opt/oxroot/silicon,file=chip.bin`); on a developer's machine the
//! agent reads it from disk. It holds the chip's manufacturing seed, which *is*
//! the silicon in emulation: anyone holding the file can emulate the chip, just
//! as anyone holding a real chip can read its cells.
//!
//! Version 1 layout (72 bytes):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 4 | magic `"OXSI"` |
//! | 4 | 2 | format version, little-endian, `1` |
//! | 6 | 1 | silicon model, `1` = emulated oxide-tunnelling array, model v1 |
//! | 7 | 1 | reserved, `0` |
//! | 8 | 32 | manufacturing seed |
//! | 40 | 32 | SHA-256 of bytes 0..40 |

use core::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::emulator::ChipSeed;

/// Size of a version-1 silicon file.
pub const SILICON_FILE_BYTES: usize = 72;
const MAGIC: [u8; 4] = *b"OXSI";
const FORMAT_VERSION: u16 = 1;
const MODEL_OXIDE_TUNNELLING_V1: u8 = 1;
const SEED_OFFSET: usize = 8;
const CHECKSUM_OFFSET: usize = 40;

/// Why a silicon file was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SiliconFileError {
    /// The file is shorter or longer than a silicon file.
    WrongLength {
        /// Bytes given.
        found: usize,
        /// Bytes a version-1 file has.
        expected: usize,
    },
    /// The file does not start with `OXSI`: not a silicon file.
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion(u16),
    /// A silicon model this build cannot emulate.
    UnsupportedModel(u8),
    /// The reserved byte is not zero: written by a newer or foreign tool.
    ReservedNotZero(u8),
    /// The checksum does not match: the file is corrupted.
    ChecksumMismatch,
}

impl fmt::Display for SiliconFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongLength { found, expected } => write!(
                f,
                "silicon file is {found} bytes, expected {expected}: truncated or not a silicon file"
            ),
            Self::BadMagic => {
                f.write_str("not an oxroot silicon file (bad magic, expected \"OXSI\")")
            }
            Self::UnsupportedVersion(version) => {
                write!(
                    f,
                    "silicon file format version {version} is not supported (this build reads {FORMAT_VERSION})"
                )
            }
            Self::UnsupportedModel(model) => write!(f, "silicon model {model} is not supported"),
            Self::ReservedNotZero(value) => {
                write!(
                    f,
                    "silicon file reserved byte is {value}, expected 0 (written by a newer tool?)"
                )
            }
            Self::ChecksumMismatch => f.write_str("silicon file is corrupted (checksum mismatch)"),
        }
    }
}

impl core::error::Error for SiliconFileError {}

/// Encodes a chip as a silicon file.
#[must_use]
pub fn encode(chip: &ChipSeed) -> Zeroizing<[u8; SILICON_FILE_BYTES]> {
    let mut file = Zeroizing::new([0u8; SILICON_FILE_BYTES]);
    file[..4].copy_from_slice(&MAGIC);
    file[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    file[6] = MODEL_OXIDE_TUNNELLING_V1;
    file[SEED_OFFSET..CHECKSUM_OFFSET].copy_from_slice(chip.as_bytes());
    let checksum = Sha256::digest(&file[..CHECKSUM_OFFSET]);
    file[CHECKSUM_OFFSET..].copy_from_slice(&checksum);
    file
}

/// Parses a silicon file.
///
/// # Errors
/// A [`SiliconFileError`] naming what is wrong.
pub fn decode(bytes: &[u8]) -> Result<ChipSeed, SiliconFileError> {
    if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] != MAGIC {
        return Err(SiliconFileError::BadMagic);
    }
    if bytes.len() >= 6 {
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != FORMAT_VERSION {
            return Err(SiliconFileError::UnsupportedVersion(version));
        }
    }
    if bytes.len() != SILICON_FILE_BYTES {
        return Err(SiliconFileError::WrongLength {
            found: bytes.len(),
            expected: SILICON_FILE_BYTES,
        });
    }
    if Sha256::digest(&bytes[..CHECKSUM_OFFSET])[..] != bytes[CHECKSUM_OFFSET..] {
        return Err(SiliconFileError::ChecksumMismatch);
    }
    if bytes[6] != MODEL_OXIDE_TUNNELLING_V1 {
        return Err(SiliconFileError::UnsupportedModel(bytes[6]));
    }
    if bytes[7] != 0 {
        return Err(SiliconFileError::ReservedNotZero(bytes[7]));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&bytes[SEED_OFFSET..CHECKSUM_OFFSET]);
    Ok(ChipSeed::from_bytes(*seed))
}
