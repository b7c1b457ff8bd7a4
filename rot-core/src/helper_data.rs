//! The public helper data written at enrolment: format, parsing, integrity.
//!
//! Helper data is public but attacker-controlled: it is stored in flash or on
//! disk where anyone may rewrite it. So it is versioned, carries an integrity
//! check that catches accidental corruption with a clear error, carries a key
//! check that catches a failed or manipulated reconstruction, and its hash is
//! the HKDF salt of the master secret, so a modified copy can only ever yield
//! unrelated keys.
//!
//! Layout of version 1 (508 bytes, all offsets fixed):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 2 | magic `"OH"` |
//! | 2 | 1 | format version, `1` |
//! | 3 | 1 | construction id, `1` = repetition(9) × 455 + BCH(455, 257, t = 23) |
//! | 4 | 455 | repetition offsets: byte *g* holds `x[g,j] ⊕ x[g,0]` for *j* = 1..8 in bits 0..7 |
//! | 459 | 25 | BCH helper: the reconstructed word mod g(x), 198 bits, LSB first |
//! | 484 | 16 | key check: SHA-256(`"oxroot/fe-check/v1"` ‖ bytes 0..484 ‖ word)\[..16\] |
//! | 500 | 8 | integrity: SHA-256(bytes 0..500)\[..8\] |

use core::fmt;

use sha2::{Digest, Sha256};

use crate::bch;

/// Size of version-1 helper data.
pub const HELPER_DATA_BYTES: usize = 508;
/// Number of repetition groups (one outer-code bit each).
pub const GROUPS: usize = bch::N;
/// Cells per repetition group.
pub const REPETITION: usize = 9;

const MAGIC: [u8; 2] = *b"OH";
/// The helper-data format version this crate writes.
pub const FORMAT_VERSION: u8 = 1;
/// The construction id this crate writes.
pub const CONSTRUCTION_ID: u8 = 1;

pub(crate) const REPETITION_OFFSET: usize = 4;
pub(crate) const BCH_OFFSET: usize = REPETITION_OFFSET + GROUPS;
pub(crate) const KEY_CHECK_OFFSET: usize = BCH_OFFSET + bch::HELPER_BYTES;
pub(crate) const INTEGRITY_OFFSET: usize = KEY_CHECK_OFFSET + KEY_CHECK_BYTES;
pub(crate) const KEY_CHECK_BYTES: usize = 16;
const INTEGRITY_BYTES: usize = 8;

const _: () = assert!(INTEGRITY_OFFSET + INTEGRITY_BYTES == HELPER_DATA_BYTES);
const _: () = assert!(HELPER_DATA_BYTES <= 512);
const _: () = assert!(GROUPS * REPETITION <= crate::hazmat::CELL_COUNT);

/// Why helper data was refused before any secret was touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelperDataError {
    /// The data is not the expected length (truncated or padded).
    WrongLength {
        /// Bytes given.
        found: usize,
        /// Bytes a version-1 record has.
        expected: usize,
    },
    /// The data does not start with the helper-data magic: not helper data.
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion(u8),
    /// A fuzzy-extractor construction this build does not implement.
    UnsupportedConstruction(u8),
    /// The integrity check does not match: the data is corrupted.
    IntegrityCheckFailed,
}

impl fmt::Display for HelperDataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongLength { found, expected } => write!(
                f,
                "helper data is {found} bytes, expected {expected}: the file is truncated or not helper data"
            ),
            Self::BadMagic => f.write_str("not oxroot helper data (bad magic)"),
            Self::UnsupportedVersion(version) => {
                write!(
                    f,
                    "helper data format version {version} is not supported (this build reads {FORMAT_VERSION})"
                )
            }
            Self::UnsupportedConstruction(id) => {
                write!(
                    f,
                    "helper data construction {id} is not supported (this build implements {CONSTRUCTION_ID})"
                )
            }
            Self::IntegrityCheckFailed => f.write_str(
                "helper data is corrupted (integrity check failed); the chip must be re-enrolled",
            ),
        }
    }
}

impl core::error::Error for HelperDataError {}

/// Validated helper data.
#[derive(Clone, PartialEq, Eq)]
pub struct HelperData {
    bytes: [u8; HELPER_DATA_BYTES],
}

impl fmt::Debug for HelperData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HelperData")
            .field("version", &self.bytes[2])
            .field("construction", &self.bytes[3])
            .finish_non_exhaustive()
    }
}

impl HelperData {
    /// Parses and checks helper data.
    ///
    /// # Errors
    /// A [`HelperDataError`] naming what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HelperDataError> {
        if bytes.len() >= 2 && bytes[..2] != MAGIC {
            return Err(HelperDataError::BadMagic);
        }
        if bytes.len() >= 3 && bytes[2] != FORMAT_VERSION {
            return Err(HelperDataError::UnsupportedVersion(bytes[2]));
        }
        let bytes: [u8; HELPER_DATA_BYTES] =
            bytes.try_into().map_err(|_| HelperDataError::WrongLength {
                found: bytes.len(),
                expected: HELPER_DATA_BYTES,
            })?;
        if bytes[3] != CONSTRUCTION_ID {
            return Err(HelperDataError::UnsupportedConstruction(bytes[3]));
        }
        if bytes[INTEGRITY_OFFSET..] != integrity(&bytes[..INTEGRITY_OFFSET]) {
            return Err(HelperDataError::IntegrityCheckFailed);
        }
        Ok(Self { bytes })
    }

    /// Assembles helper data from its parts, computing the integrity check.
    pub(crate) fn assemble(
        repetition_offsets: &[u8; GROUPS],
        bch_helper: &[u8; bch::HELPER_BYTES],
        key_check: impl FnOnce(&[u8]) -> [u8; KEY_CHECK_BYTES],
    ) -> Self {
        let mut bytes = [0u8; HELPER_DATA_BYTES];
        bytes[..2].copy_from_slice(&MAGIC);
        bytes[2] = FORMAT_VERSION;
        bytes[3] = CONSTRUCTION_ID;
        bytes[REPETITION_OFFSET..BCH_OFFSET].copy_from_slice(repetition_offsets);
        bytes[BCH_OFFSET..KEY_CHECK_OFFSET].copy_from_slice(bch_helper);
        let check = key_check(&bytes[..KEY_CHECK_OFFSET]);
        bytes[KEY_CHECK_OFFSET..INTEGRITY_OFFSET].copy_from_slice(&check);
        let tag = integrity(&bytes[..INTEGRITY_OFFSET]);
        bytes[INTEGRITY_OFFSET..].copy_from_slice(&tag);
        Self { bytes }
    }

    /// The encoded bytes, to store.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; HELPER_DATA_BYTES] {
        &self.bytes
    }

    /// The format version.
    #[must_use]
    pub fn version(&self) -> u8 {
        self.bytes[2]
    }

    pub(crate) fn repetition_offset(&self, group: usize) -> u8 {
        self.bytes[REPETITION_OFFSET + group]
    }

    pub(crate) fn bch_helper(&self) -> &[u8; bch::HELPER_BYTES] {
        self.bytes[BCH_OFFSET..KEY_CHECK_OFFSET]
            .try_into()
            .expect("fixed layout")
    }

    pub(crate) fn key_check(&self) -> &[u8] {
        &self.bytes[KEY_CHECK_OFFSET..INTEGRITY_OFFSET]
    }

    pub(crate) fn checked_prefix(&self) -> &[u8] {
        &self.bytes[..KEY_CHECK_OFFSET]
    }
}

fn integrity(bytes: &[u8]) -> [u8; INTEGRITY_BYTES] {
    let digest = Sha256::digest(bytes);
    digest[..INTEGRITY_BYTES]
        .try_into()
        .expect("SHA-256 is 32 bytes")
}
