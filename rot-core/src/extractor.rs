//! The fuzzy extractor: noisy 64 × 64 readout in, eight stable 128-bit seeds out.
//!
//! Two constructions share one API; the helper data says which one wrote it
//! ([`Construction`]), so a device keeps reconstructing with whatever it was
//! enrolled with, and [`enrol`] writes the [default](Construction::default),
//! construction 2.
//!
//! | | construction 1 ([`v1`]) | construction 2 ([`v2`]) |
//! |---|---|---|
//! | cells | 4,095: 455 groups × repetition(9) | 3,150 balanced cells (3 von Neumann passes): 315 groups × 10 |
//! | outer code | BCH(455, 257, t = 23) | BCH(315, 144, t = 20) |
//! | decoding | hard majority, 1 BCH decode | ties as erasures, 16 fillings, 16 BCH decodes |
//! | key failure at 15 / 20 / 25 % BER | 5.4e-16 / 1.6e-5 / 0.38 | 1.1e-24 / 1.5e-10 / 6.9e-3 |
//! | min-entropy of the master given the helper data, P(1) = 0.50 / 0.55 / 0.60 | 257 / 114 / 5.5 bits | 144 / 144 / 144 bits (a chip that enrols; at 0.60 about 40 % do) |
//! | helper data | 508 bytes | 512 bytes |
//!
//! (`puf_report` prints every figure, analytic and Monte Carlo; see the README.)
//!
//! Both are code-offset constructions in syndrome form, so enrolment needs no
//! RNG: the helper data stores how each group's cells relate to its secret bit
//! and the outer code's syndrome of the word of group secrets. The master is
//! `HKDF-Extract(salt, word)` with `salt = SHA-256(helper data ‖ parameters)`,
//! so helper data is bound into every key; seeds are HKDF-Expanded from the
//! master ([`crate::keys`]).
//!
//! # Min-entropy
//!
//! The security target is P-256's 128 bits, so the master needs at least 128
//! bits of conditional min-entropy given the helper data. Construction 2 has
//! 144: a 16-bit margin for what the model leaves out (the bound assumes
//! independent cells with one common P(1)). Given the von Neumann flags every
//! group secret is exactly uniform ([`crate::debias`]), the tuple offsets are
//! a repetition syndrome over uniform bits and reveal nothing, so the 315-bit
//! word is uniform and the 171-bit BCH syndrome leaves exactly 144 bits: the
//! same for every P(1). Construction 1 keeps 455 − 198 = 257 bits on unbiased
//! cells, but its repetition offsets leak under bias: the exact group-wise
//! bound ([`analysis::v1_min_entropy`]) falls to 114 bits at P(1) = 0.55 and 5
//! at 0.60. Under a bias that differs from cell to cell (a gradient across the
//! array) [`analysis::v2_min_entropy_for_layout`] computes the exact bound of
//! one enrolled layout. The key check (below) is a 128-bit hash of the word:
//! like the public key it only lets an attacker test guesses, so these bounds
//! measure the guessing work, not information.
//!
//! # Helper-data manipulation
//!
//! An attacker who can rewrite helper data and watch whether reconstruction
//! succeeds gets an oracle (Delvaux, Gu, Schellekens, Verbauwhede, "Helper Data
//! Algorithms for PUF-Based Key Generation: Overview and Analysis", IEEE TCAD
//! 2015; Becker, "Robust Fuzzy Extractors and Helper Data Manipulation Attacks
//! Revisited: Theory versus Practice", IEEE TDSC 2017). The classic attacks
//! flip offset bits (or edit the syndrome) so that the failure rate depends
//! on an unknown cell value, then count failures. Here:
//!
//! - **Detected before any secret is touched** ([`HelperData::from_bytes`]):
//!   wrong length, magic, version or construction; a version-2 stream that
//!   does not parse as a layout; and any accidental corruption (the integrity
//!   tag). The tag is an unkeyed hash: an attacker can recompute it.
//! - **Everything else fails with certainty.** The key check is
//!   SHA-256(label ‖ every field the decoder reads ‖ word), truncated to 128
//!   bits and stored at enrolment; reconstruction succeeds only if the decoded
//!   word reproduces it *together with the helper bytes as they are now*. An
//!   edited offset, flag, syndrome or key-check byte changes the hashed input,
//!   so a match needs a SHA-256 collision: the edit fails with probability
//!   1 − 2⁻¹²⁸ whatever the cells are. A success/failure bit that does not
//!   depend on the cells carries no information about them, and decoding takes
//!   the same time and memory accesses on edited data as on genuine data. Even
//!   a forged record that did match would only feed a different salt into
//!   HKDF and give unrelated keys.
//!
//! What remains is the failure count itself: each failure spends one oracle
//! query that reveals nothing, and the device agent locks out after five
//! (`device-agent/src/lockout.rs`). `tests/helper_data_attacks.rs` runs the
//! published attacks against both constructions.
//!
//! # Other attacks designed against
//! - decoder timing: fixed work per reconstruction, no error counts exposed
//!   (measured by `cargo bench -p rot-core --bench constant_time`);
//! - re-enrolment with fresh helper data: refused unless explicitly forced.

use core::fmt;
use core::num::NonZeroU8;

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::debias::LayoutError;
use crate::entropy::{EntropySource, ReadFailed};
use crate::hazmat::{self, Readout};
pub use crate::helper_data::Construction;
use crate::helper_data::{HelperData, KEY_CHECK_BYTES};
use crate::keys::Seeds;

#[cfg(feature = "std")]
pub mod analysis;
pub mod v1;
pub mod v2;

/// Readouts combined, cell by cell, into the enrolment reference.
pub const ENROLMENT_READS: NonZeroU8 = NonZeroU8::new(5).expect("5 is not zero");
/// Construction 1's parameters, bound into its HKDF salt (see [`v1::PARAMETERS`]).
pub const PARAMETERS: &[u8] = v1::PARAMETERS;

/// Whether enrolment may replace helper data that already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrolMode {
    /// First power-up: refuse if helper data already exists.
    FirstEnrolment,
    /// Replace existing helper data. The chip's identity changes, and an
    /// attacker who can force re-enrolment gets a second view of the same cells.
    ForceReEnrolment,
}

/// Why enrolment did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnrolError {
    /// Helper data already exists for this chip; enrol once.
    AlreadyEnrolled,
    /// The silicon could not be read.
    Silicon(ReadFailed),
    /// Construction 2 found too few balanced cells: the array is too biased
    /// (from about P(1) = 0.58 on). The refusal depends only on counts, never on
    /// the secret.
    TooBiased(LayoutError),
}

impl fmt::Display for EnrolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyEnrolled => f.write_str(
                "this chip already has helper data; enrolling again changes its identity and is refused unless forced",
            ),
            Self::Silicon(error) => write!(f, "enrolment failed: {error}"),
            Self::TooBiased(error) => write!(f, "enrolment failed: {error}"),
        }
    }
}

impl core::error::Error for EnrolError {}

/// Key reconstruction failed. Deliberately opaque: it does not say whether the
/// noise was too high, the helper data was manipulated, or the silicon differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconstructionFailed;

impl fmt::Display for ReconstructionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("key reconstruction failed")
    }
}

impl core::error::Error for ReconstructionFailed {}

/// Why [`reconstruct`] produced no seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconstructError {
    /// The silicon could not be read.
    Silicon(ReadFailed),
    /// The readout did not reconstruct the enrolled secret.
    Failed(ReconstructionFailed),
}

impl fmt::Display for ReconstructError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Silicon(error) => error.fmt(f),
            Self::Failed(error) => error.fmt(f),
        }
    }
}

impl core::error::Error for ReconstructError {}

/// The result of enrolment: public helper data to store, and the seeds.
#[derive(Debug)]
pub struct Enrolment {
    /// Store this; it is public.
    pub helper_data: HelperData,
    /// The chip's seeds, the same [`reconstruct`] will return later.
    pub seeds: Seeds,
}

/// First power-up with the default construction (2): reads the silicon
/// [`ENROLMENT_READS`] times, builds helper data from the per-cell majority,
/// and derives the seeds.
///
/// `existing` is whatever helper data the caller already has stored for this
/// chip, valid or not: its presence alone refuses a [`EnrolMode::FirstEnrolment`].
///
/// # Errors
/// [`EnrolError::AlreadyEnrolled`], [`EnrolError::Silicon`] or
/// [`EnrolError::TooBiased`].
pub fn enrol<S: EntropySource + ?Sized>(
    source: &mut S,
    existing: Option<&[u8]>,
    mode: EnrolMode,
) -> Result<Enrolment, EnrolError> {
    enrol_with(source, existing, mode, Construction::default())
}

/// [`enrol`] with a chosen construction.
///
/// # Errors
/// As [`enrol`]; [`EnrolError::TooBiased`] only for construction 2.
pub fn enrol_with<S: EntropySource + ?Sized>(
    source: &mut S,
    existing: Option<&[u8]>,
    mode: EnrolMode,
    construction: Construction,
) -> Result<Enrolment, EnrolError> {
    if existing.is_some() && mode == EnrolMode::FirstEnrolment {
        return Err(EnrolError::AlreadyEnrolled);
    }
    let reference = Zeroizing::new(
        hazmat::read_majority(source, ENROLMENT_READS).map_err(EnrolError::Silicon)?,
    );
    enrol_from_reference_with(&reference, construction)
}

/// Builds construction-1 helper data and seeds from an enrolment reference readout.
///
/// **Hazmat**: for reports and tests that control the reference directly.
#[must_use]
pub fn enrol_from_reference(reference: &Readout) -> Enrolment {
    v1::enrol_from_reference(reference)
}

/// Builds helper data and seeds of the given construction from an enrolment
/// reference readout.
///
/// **Hazmat**: for reports and tests that control the reference directly.
///
/// # Errors
/// [`EnrolError::TooBiased`] (construction 2 only).
pub fn enrol_from_reference_with(
    reference: &Readout,
    construction: Construction,
) -> Result<Enrolment, EnrolError> {
    match construction {
        Construction::V1 => Ok(v1::enrol_from_reference(reference)),
        Construction::V2 => v2::enrol_from_reference(reference).map_err(EnrolError::TooBiased),
    }
}

/// Reads the silicon once and reconstructs the seeds, with the construction
/// the helper data names.
///
/// # Errors
/// [`ReconstructError::Silicon`] if the read fails; otherwise the opaque
/// [`ReconstructError::Failed`].
pub fn reconstruct<S: EntropySource + ?Sized>(
    source: &mut S,
    helper_data: &HelperData,
) -> Result<Seeds, ReconstructError> {
    let mut readout = Zeroizing::new([0u8; hazmat::READOUT_BYTES]);
    source
        .read(&mut readout)
        .map_err(ReconstructError::Silicon)?;
    reconstruct_from_readout(&readout, helper_data).map_err(ReconstructError::Failed)
}

/// Reconstructs the seeds from a given readout.
///
/// **Hazmat**: for Monte Carlo reports that inject their own noise.
///
/// # Errors
/// The opaque [`ReconstructionFailed`].
pub fn reconstruct_from_readout(
    readout: &Readout,
    helper_data: &HelperData,
) -> Result<Seeds, ReconstructionFailed> {
    // The construction is public (it is in the helper data), so this branch leaks nothing.
    match helper_data.construction() {
        Construction::V1 => v1::reconstruct(readout, helper_data),
        Construction::V2 => v2::reconstruct(readout, helper_data),
    }
}

/// `SHA-256(label ‖ prefix ‖ word)[..16]`.
fn key_check(label: &[u8], prefix: &[u8], word: &[u8]) -> [u8; KEY_CHECK_BYTES] {
    let mut digest = Sha256::new_with_prefix(label);
    digest.update(prefix);
    key_check_from(digest, word)
}

/// Finishes a key check whose label and prefix are already hashed.
#[expect(
    clippy::expect_used,
    reason = "a SHA-256 digest is longer than the key check"
)]
fn key_check_from(mut digest: Sha256, word: &[u8]) -> [u8; KEY_CHECK_BYTES] {
    digest.update(word);
    let mut full = digest.finalize();
    let check = full[..KEY_CHECK_BYTES]
        .try_into()
        .expect("SHA-256 is 32 bytes");
    full.zeroize();
    check
}

fn derive_seeds(word: &[u8], helper_data: &HelperData, parameters: &[u8]) -> Seeds {
    let mut salt = Sha256::new_with_prefix(helper_data.as_bytes());
    salt.update(parameters);
    let salt = salt.finalize();
    Seeds::expand(&Hkdf::<Sha256>::new(Some(&salt), word))
}
