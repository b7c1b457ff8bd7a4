//! The public helper data written at enrolment: formats, parsing, integrity.
//!
//! Helper data is public but attacker-controlled: it is stored in flash or on
//! disk where anyone may rewrite it. So it is versioned, carries an integrity
//! check that catches accidental corruption with a clear error, carries a key
//! check that catches a failed or manipulated reconstruction, and its hash is
//! the HKDF salt of the master secret, so a modified copy can only ever yield
//! unrelated keys. Which edits are caught where, and why none of them teaches
//! an attacker anything, is set out in [`crate::extractor`] ("Helper-data
//! manipulation").
//!
//! Both versions start with the same four bytes, so one parser reads either
//! and [`HelperData::construction`] says which extractor it belongs to.
//!
//! Version 1 (construction 1, 508 bytes):
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
//!
//! Version 2 (construction 2, 512 bytes):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 2 | magic `"OH"` |
//! | 2 | 1 | format version, `2` |
//! | 3 | 1 | construction id, `2` = von Neumann 3-pass × 315 groups of 10 + BCH(315, 144, t = 20), soft decoding |
//! | 4 | 22 | BCH helper: the group-secret word mod g(x), 171 bits, LSB first |
//! | 26 | 462 | debiasing stream ([`crate::debias`]): pass flags, tuple offsets, zero padding, LSB first |
//! | 488 | 16 | key check: SHA-256(`"oxroot/fe-check/v2"` ‖ bytes 0..488 ‖ word)\[..16\] |
//! | 504 | 8 | integrity: SHA-256(bytes 0..504)\[..8\] |

use core::fmt;
use core::str::FromStr;

use sha2::{Digest, Sha256};

use crate::bch;
use crate::debias::{self, Layout, LayoutError};

/// Size of version-1 helper data.
pub const HELPER_DATA_BYTES: usize = 508;
/// Size of version-2 helper data.
pub const V2_HELPER_DATA_BYTES: usize = 512;
/// The largest helper data any version writes.
pub const MAX_HELPER_DATA_BYTES: usize = 512;
/// Number of version-1 repetition groups (one outer-code bit each).
pub const GROUPS: usize = bch::N;
/// Cells per version-1 repetition group.
pub const REPETITION: usize = 9;

const MAGIC: [u8; 2] = *b"OH";
/// The newest helper-data format version this crate reads and writes.
pub const FORMAT_VERSION: u8 = 2;
/// The construction id version-1 helper data carries.
pub const CONSTRUCTION_ID: u8 = 1;

pub(crate) const KEY_CHECK_BYTES: usize = 16;
const INTEGRITY_BYTES: usize = 8;

// Version 1.
pub(crate) const REPETITION_OFFSET: usize = 4;
pub(crate) const BCH_OFFSET: usize = REPETITION_OFFSET + GROUPS;
pub(crate) const KEY_CHECK_OFFSET: usize = BCH_OFFSET + bch::HELPER_BYTES;
pub(crate) const INTEGRITY_OFFSET: usize = KEY_CHECK_OFFSET + KEY_CHECK_BYTES;

// Version 2.
const V2_BCH_BYTES: usize = bch::V2.helper_bytes();
const V2_BCH_OFFSET: usize = 4;
const V2_STREAM_OFFSET: usize = V2_BCH_OFFSET + V2_BCH_BYTES;
const V2_KEY_CHECK_OFFSET: usize = V2_STREAM_OFFSET + debias::STREAM_BYTES;
const V2_INTEGRITY_OFFSET: usize = V2_KEY_CHECK_OFFSET + KEY_CHECK_BYTES;

const _: () = assert!(INTEGRITY_OFFSET + INTEGRITY_BYTES == HELPER_DATA_BYTES);
const _: () = assert!(V2_INTEGRITY_OFFSET + INTEGRITY_BYTES == V2_HELPER_DATA_BYTES);
const _: () = assert!(V2_HELPER_DATA_BYTES <= 512 && HELPER_DATA_BYTES <= MAX_HELPER_DATA_BYTES);
const _: () = assert!(GROUPS * REPETITION <= crate::hazmat::CELL_COUNT);

/// Which fuzzy-extractor construction helper data belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Construction {
    /// Repetition(9) × 455 + BCH(455, 257, 23), hard decisions (format version 1).
    /// Full strength only on unbiased cells; kept so enrolled devices keep working.
    V1,
    /// Debiased groups of ten + BCH(315, 144, 20), soft decoding (format version 2).
    #[default]
    V2,
}

impl Construction {
    /// The construction's number, as the helper data and the agent's
    /// `--construction` option spell it.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The construction with this number.
    #[must_use]
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }

    /// Size of this construction's helper data.
    #[must_use]
    pub const fn helper_data_bytes(self) -> usize {
        match self {
            Self::V1 => HELPER_DATA_BYTES,
            Self::V2 => V2_HELPER_DATA_BYTES,
        }
    }

    /// The format version byte this construction's helper data carries.
    const fn format_version(self) -> u8 {
        self.number()
    }
}

impl fmt::Display for Construction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// A construction name that is neither `1` nor `2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownConstruction;

impl fmt::Display for UnknownConstruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the construction is 1 or 2")
    }
}

impl core::error::Error for UnknownConstruction {}

impl FromStr for Construction {
    type Err = UnknownConstruction;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<u8>()
            .ok()
            .and_then(Self::from_number)
            .ok_or(UnknownConstruction)
    }
}

/// Why helper data was refused before any secret was touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelperDataError {
    /// The data is not the expected length (truncated or padded).
    WrongLength {
        /// Bytes given.
        found: usize,
        /// Bytes a record of this version has.
        expected: usize,
    },
    /// The data does not start with the helper-data magic: not helper data.
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion(u8),
    /// A fuzzy-extractor construction this build does not implement for this version.
    UnsupportedConstruction(u8),
    /// The integrity check does not match: the data is corrupted.
    IntegrityCheckFailed,
    /// Version 2: the debiasing stream does not describe a layout this build writes.
    BadLayout(LayoutError),
}

impl fmt::Display for HelperDataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongLength { found, expected } => write!(
                f,
                "helper data is {found} bytes, expected {expected}: the file is truncated or not helper data"
            ),
            Self::BadMagic => f.write_str("not oxroot helper data (bad magic)"),
            Self::UnsupportedVersion(version) => write!(
                f,
                "helper data format version {version} is not supported (this build reads 1 and 2)"
            ),
            Self::UnsupportedConstruction(id) => write!(
                f,
                "helper data construction {id} is not supported for its format version"
            ),
            Self::IntegrityCheckFailed => f.write_str(
                "helper data is corrupted (integrity check failed); the chip must be re-enrolled",
            ),
            Self::BadLayout(error) => write!(f, "helper data is malformed: {error}"),
        }
    }
}

impl core::error::Error for HelperDataError {}

/// Validated helper data of either version.
#[derive(Clone, PartialEq, Eq)]
pub struct HelperData {
    bytes: [u8; MAX_HELPER_DATA_BYTES],
    construction: Construction,
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
    /// Parses and checks helper data of either version.
    ///
    /// # Errors
    /// A [`HelperDataError`] naming what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HelperDataError> {
        if bytes.len() >= 2 && bytes[..2] != MAGIC {
            return Err(HelperDataError::BadMagic);
        }
        let construction = match bytes.get(2) {
            Some(&version) => Construction::from_number(version)
                .ok_or(HelperDataError::UnsupportedVersion(version))?,
            // Too short to say: report against the newest format.
            None => Construction::default(),
        };
        let expected = construction.helper_data_bytes();
        if bytes.len() != expected {
            return Err(HelperDataError::WrongLength {
                found: bytes.len(),
                expected,
            });
        }
        if bytes[3] != construction.number() {
            return Err(HelperDataError::UnsupportedConstruction(bytes[3]));
        }
        let integrity_offset = expected - INTEGRITY_BYTES;
        if bytes[integrity_offset..] != integrity(&bytes[..integrity_offset]) {
            return Err(HelperDataError::IntegrityCheckFailed);
        }
        let mut stored = [0u8; MAX_HELPER_DATA_BYTES];
        stored[..expected].copy_from_slice(bytes);
        let helper = Self {
            bytes: stored,
            construction,
        };
        if construction == Construction::V2 {
            Layout::parse(helper.debias_stream()).map_err(HelperDataError::BadLayout)?;
        }
        Ok(helper)
    }

    /// Assembles version-1 helper data from its parts, computing the checks.
    pub(crate) fn assemble_v1(
        repetition_offsets: &[u8; GROUPS],
        bch_helper: &[u8; bch::HELPER_BYTES],
        key_check: impl FnOnce(&[u8]) -> [u8; KEY_CHECK_BYTES],
    ) -> Self {
        let mut bytes = [0u8; MAX_HELPER_DATA_BYTES];
        bytes[REPETITION_OFFSET..BCH_OFFSET].copy_from_slice(repetition_offsets);
        bytes[BCH_OFFSET..KEY_CHECK_OFFSET].copy_from_slice(bch_helper);
        Self::seal(bytes, Construction::V1, key_check)
    }

    /// Assembles version-2 helper data from its parts, computing the checks.
    pub(crate) fn assemble_v2(
        bch_helper: &[u8; V2_BCH_BYTES],
        debias_stream: &[u8; debias::STREAM_BYTES],
        key_check: impl FnOnce(&[u8]) -> [u8; KEY_CHECK_BYTES],
    ) -> Self {
        let mut bytes = [0u8; MAX_HELPER_DATA_BYTES];
        bytes[V2_BCH_OFFSET..V2_STREAM_OFFSET].copy_from_slice(bch_helper);
        bytes[V2_STREAM_OFFSET..V2_KEY_CHECK_OFFSET].copy_from_slice(debias_stream);
        Self::seal(bytes, Construction::V2, key_check)
    }

    /// Writes the header, then the key check over everything before it, then
    /// the integrity tag over everything before that.
    fn seal(
        mut bytes: [u8; MAX_HELPER_DATA_BYTES],
        construction: Construction,
        key_check: impl FnOnce(&[u8]) -> [u8; KEY_CHECK_BYTES],
    ) -> Self {
        bytes[..2].copy_from_slice(&MAGIC);
        bytes[2] = construction.format_version();
        bytes[3] = construction.number();
        let len = construction.helper_data_bytes();
        let key_check_offset = len - INTEGRITY_BYTES - KEY_CHECK_BYTES;
        let check = key_check(&bytes[..key_check_offset]);
        bytes[key_check_offset..len - INTEGRITY_BYTES].copy_from_slice(&check);
        let tag = integrity(&bytes[..len - INTEGRITY_BYTES]);
        bytes[len - INTEGRITY_BYTES..len].copy_from_slice(&tag);
        Self {
            bytes,
            construction,
        }
    }

    /// The encoded bytes, to store.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.construction.helper_data_bytes()]
    }

    /// The format version (1 or 2).
    #[must_use]
    pub fn version(&self) -> u8 {
        self.bytes[2]
    }

    /// The construction this helper data was written by.
    #[must_use]
    pub fn construction(&self) -> Construction {
        self.construction
    }

    /// Version 2: where each group's cells are, as the (public) flags and
    /// offsets say. `None` for version 1, whose layout is fixed.
    #[must_use]
    pub fn debias_layout(&self) -> Option<Layout> {
        match self.construction {
            Construction::V1 => None,
            Construction::V2 => Layout::parse(self.debias_stream()).ok(),
        }
    }

    pub(crate) fn repetition_offset(&self, group: usize) -> u8 {
        self.bytes[REPETITION_OFFSET + group]
    }

    #[expect(
        clippy::expect_used,
        reason = "the slice bounds are the constants of the fixed layout"
    )]
    pub(crate) fn bch_helper(&self) -> &[u8; bch::HELPER_BYTES] {
        self.bytes[BCH_OFFSET..KEY_CHECK_OFFSET]
            .try_into()
            .expect("fixed layout")
    }

    #[expect(
        clippy::expect_used,
        reason = "the slice bounds are the constants of the fixed layout"
    )]
    pub(crate) fn v2_bch_helper(&self) -> &[u8; V2_BCH_BYTES] {
        self.bytes[V2_BCH_OFFSET..V2_STREAM_OFFSET]
            .try_into()
            .expect("fixed layout")
    }

    /// The version-2 debiasing stream (flags and offsets).
    #[expect(
        clippy::expect_used,
        reason = "the slice bounds are the constants of the fixed layout"
    )]
    pub(crate) fn debias_stream(&self) -> &[u8; debias::STREAM_BYTES] {
        self.bytes[V2_STREAM_OFFSET..V2_KEY_CHECK_OFFSET]
            .try_into()
            .expect("fixed layout")
    }

    fn key_check_offset(&self) -> usize {
        self.construction.helper_data_bytes() - INTEGRITY_BYTES - KEY_CHECK_BYTES
    }

    pub(crate) fn key_check(&self) -> &[u8] {
        &self.bytes[self.key_check_offset()..self.key_check_offset() + KEY_CHECK_BYTES]
    }

    /// Everything the key check covers: all fields the decoder reads.
    pub(crate) fn checked_prefix(&self) -> &[u8] {
        &self.bytes[..self.key_check_offset()]
    }
}

#[expect(
    clippy::expect_used,
    reason = "a SHA-256 digest is longer than the tag"
)]
fn integrity(bytes: &[u8]) -> [u8; INTEGRITY_BYTES] {
    let digest = Sha256::digest(bytes);
    digest[..INTEGRITY_BYTES]
        .try_into()
        .expect("SHA-256 is 32 bytes")
}
