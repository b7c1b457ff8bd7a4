//! The fuzzy extractor: noisy 64 × 64 readout in, eight stable 128-bit seeds out.
//!
//! # Construction (helper data version 1)
//!
//! Code-offset with a concatenated code, in the syndrome form (no random codeword
//! is needed, so enrolment needs no RNG):
//!
//! 1. **Inner: repetition(9), 455 groups, 4,095 of the 4,096 cells.** Group *g*
//!    takes cells `g + 455·j`, *j* = 0..8, spread across the array so a local
//!    defect or hot spot touches many groups a little rather than one group a
//!    lot. The group's secret bit is its first cell `x[g,0]`; the helper data
//!    stores the offsets `x[g,j] ⊕ x[g,0]`. At reconstruction each group votes:
//!    the majority of `y[g,j] ⊕ offset[g,j]` recovers `x[g,0]` unless 5 or more
//!    of its 9 cells flipped.
//! 2. **Outer: binary BCH(455, 257, t = 23)** over GF(2^9) ([`crate::bch`]). The
//!    helper data stores the 455-bit word's remainder modulo the generator
//!    (198 bits); the decoder corrects up to 23 wrong group votes.
//! 3. **Extraction.** `master = HKDF-Extract(salt, word)` with
//!    `salt = SHA-256(helper data ‖ parameters)`, so helper data is bound into
//!    every key; seeds are HKDF-Expanded from the master ([`crate::keys`]).
//!
//! A reconstruction fails, with one opaque error, when the decoder cannot
//! correct the word or when the key check stored at enrolment does not match,
//! which also catches decoder miscorrections and manipulated helper data.
//! Decoding always runs to the end: no early exit depends on the noise.
//!
//! # Reliability
//!
//! With raw bit error rate *p* per cell, a group votes wrong with probability
//! `q = P[Binomial(9, p) ≥ 5]` and the key fails with probability
//! `P[Binomial(455, q) > 23]` (bounded-distance decoding, exact binomial; see
//! [`analysis`]). At *p* = 0.15 this is 5e-16, at *p* = 0.20 it is 1.6e-5:
//! better than the 463 × repetition(7) + BCH(463, 256, 25) reference design
//! (2e-10 and 8e-3) because it spends the 854 cells that design leaves idle.
//!
//! # Min-entropy
//!
//! The secret is the 455-bit word of first cells. The repetition offsets reveal
//! each group only up to complement, and the BCH helper reveals at most 198
//! bits, so with unbiased, independent cells at least 455 − 198 = 257 bits of
//! min-entropy remain for the 256-bit master. That full-strength bound has one
//! bit of margin: it needs ≥ (256 + 198) / 455 ≈ 0.998 bits per first cell
//! (bias within ~0.1 %). The keys' security target (P-256, 128-bit) needs
//! ≥ 128 bits, i.e. ≥ (128 + 198) / 455 ≈ 0.72 bits per first cell, but that
//! simple count ignores the extra leakage of the repetition offsets when cells
//! are biased (a group whose nine offsets are all equal is then more likely
//! all-ones or all-zeros), which this crate does not bound. `puf_report`
//! measures per-cell bias over many chips and the emulator's cells are
//! unbiased by construction; silicon with measurable bias should add a
//! debiasing step (von Neumann pairing or index-based masking, Maes et al.,
//! CHES 2015) as helper-data version 2 before relying on these figures.
//!
//! # Attacks designed against
//! - helper-data manipulation: bound into the salt, integrity- and key-checked;
//!   the caller should lock out after repeated failures (each failure is an
//!   oracle query);
//! - decoder timing: fixed work per reconstruction, no error counts exposed;
//! - re-enrolment with fresh helper data: refused unless explicitly forced.

use core::fmt;
use core::num::NonZeroU8;

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::bch;
use crate::entropy::{EntropySource, ReadFailed};
use crate::hazmat::{self, Readout};
use crate::helper_data::{GROUPS, HelperData, KEY_CHECK_BYTES, REPETITION};
use crate::keys::Seeds;

/// Readouts combined, cell by cell, into the enrolment reference.
pub const ENROLMENT_READS: NonZeroU8 = NonZeroU8::new(5).expect("5 is not zero");
/// The parameters bound into the HKDF salt together with the helper data.
pub const PARAMETERS: &[u8] = b"oxroot-fe-v1/rep9x455/bch-455-257-23/hkdf-sha256";
const KEY_CHECK_LABEL: &[u8] = b"oxroot/fe-check/v1";

type Word = [u8; bch::WORD_BYTES];

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
}

impl fmt::Display for EnrolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyEnrolled => f.write_str(
                "this chip already has helper data; enrolling again changes its identity and is refused unless forced",
            ),
            Self::Silicon(error) => write!(f, "enrolment failed: {error}"),
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

/// First power-up: reads the silicon [`ENROLMENT_READS`] times, builds helper
/// data from the per-cell majority, and derives the seeds.
///
/// `existing` is whatever helper data the caller already has stored for this
/// chip, valid or not: its presence alone refuses a [`EnrolMode::FirstEnrolment`].
///
/// # Errors
/// [`EnrolError::AlreadyEnrolled`] or [`EnrolError::Silicon`].
pub fn enrol<S: EntropySource + ?Sized>(
    source: &mut S,
    existing: Option<&[u8]>,
    mode: EnrolMode,
) -> Result<Enrolment, EnrolError> {
    if existing.is_some() && mode == EnrolMode::FirstEnrolment {
        return Err(EnrolError::AlreadyEnrolled);
    }
    let reference = Zeroizing::new(
        hazmat::read_majority(source, ENROLMENT_READS).map_err(EnrolError::Silicon)?,
    );
    Ok(enrol_from_reference(&reference))
}

/// Builds helper data and seeds from an enrolment reference readout.
///
/// **Hazmat**: for reports and tests that control the reference directly.
#[must_use]
pub fn enrol_from_reference(reference: &Readout) -> Enrolment {
    let mut word: Zeroizing<Word> = Zeroizing::new([0; bch::WORD_BYTES]);
    let mut offsets = [0u8; GROUPS];
    for (group, offset) in offsets.iter_mut().enumerate() {
        let first = hazmat::cell(reference, cell_index(group, 0));
        word[group / 8] |= first << (group % 8);
        for member in 1..REPETITION {
            *offset |= (hazmat::cell(reference, cell_index(group, member)) ^ first) << (member - 1);
        }
    }
    let helper_data = HelperData::assemble(&offsets, &bch::helper(&word), |prefix| {
        key_check(prefix, &word)
    });
    let seeds = derive_seeds(&word, &helper_data);
    Enrolment { helper_data, seeds }
}

/// Reads the silicon once and reconstructs the seeds.
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
    let mut word: Zeroizing<Word> = Zeroizing::new([0; bch::WORD_BYTES]);
    for group in 0..GROUPS {
        let offsets = helper_data.repetition_offset(group);
        // Each member votes for x[g,0] = y[g,j] ⊕ offset[g,j]; the first member has offset 0.
        let mut votes = u32::from(hazmat::cell(readout, cell_index(group, 0)));
        for member in 1..REPETITION {
            let offset = (offsets >> (member - 1)) & 1;
            votes += u32::from(hazmat::cell(readout, cell_index(group, member)) ^ offset);
        }
        // votes ≥ 5 of 9, computed without a branch: (votes + 3) has bit 3 set iff votes ≥ 5.
        let bit = (((votes + 3) >> 3) & 1) as u8;
        word[group / 8] |= bit << (group % 8);
    }
    let decoded = bch::correct(&mut word, helper_data.bch_helper());
    let check = key_check(helper_data.checked_prefix(), &word);
    let check_matches = check.ct_eq(helper_data.key_check());
    // Derive regardless of the outcome so success and failure cost the same.
    let seeds = derive_seeds(&word, helper_data);
    if bool::from(decoded & check_matches) {
        Ok(seeds)
    } else {
        Err(ReconstructionFailed)
    }
}

/// Cell index of member `member` of group `group`.
const fn cell_index(group: usize, member: usize) -> usize {
    group + GROUPS * member
}

fn key_check(prefix: &[u8], word: &Word) -> [u8; KEY_CHECK_BYTES] {
    let mut digest = Sha256::new_with_prefix(KEY_CHECK_LABEL);
    digest.update(prefix);
    digest.update(word);
    let mut full = digest.finalize();
    let check = full[..KEY_CHECK_BYTES]
        .try_into()
        .expect("SHA-256 is 32 bytes");
    full.zeroize();
    check
}

fn derive_seeds(word: &Word, helper_data: &HelperData) -> Seeds {
    let mut salt = Sha256::new_with_prefix(helper_data.as_bytes());
    salt.update(PARAMETERS);
    let salt = salt.finalize();
    Seeds::expand(&Hkdf::<Sha256>::new(Some(&salt), word))
}

/// Analytic reliability of the construction under independent bit errors.
#[cfg(feature = "std")]
pub mod analysis {
    use super::{GROUPS, REPETITION};
    use crate::bch;

    /// `P[Binomial(n, p) = k]` for `k = 0..=n`, each term computed in log space
    /// so probabilities down to 1e-300 are exact.
    pub fn binomial_pmf(n: usize, p: f64) -> impl Iterator<Item = f64> {
        let (ln_p, ln_q) = (p.ln(), (1.0 - p).ln());
        // `count · ln` with 0 · ln 0 = 0, so p = 0 and p = 1 need no special case.
        let weighted = |count: usize, ln: f64| if count == 0 { 0.0 } else { count as f64 * ln };
        let mut ln_choose = 0.0; // ln C(n, k), built up as k grows
        (0..=n).map(move |k| {
            if k > 0 {
                ln_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
            }
            (ln_choose + weighted(k, ln_p) + weighted(n - k, ln_q)).exp()
        })
    }

    /// `P[Binomial(n, p) > t]`.
    #[must_use]
    pub fn binomial_tail(n: usize, p: f64, t: usize) -> f64 {
        binomial_pmf(n, p).skip(t + 1).sum::<f64>().min(1.0)
    }

    /// Probability that a majority vote over `repetition` cells (odd) is wrong.
    #[must_use]
    pub fn majority_error(repetition: usize, p: f64) -> f64 {
        binomial_tail(repetition, p, repetition / 2)
    }

    /// Key failure probability at raw bit error rate `ber` for this build's construction.
    #[must_use]
    pub fn key_failure_rate(ber: f64) -> f64 {
        concatenated_failure_rate(ber, REPETITION, GROUPS, bch::T)
    }

    /// Key failure probability of repetition(`repetition`) × `groups` + a
    /// bounded-distance outer code correcting `t` errors.
    #[must_use]
    pub fn concatenated_failure_rate(ber: f64, repetition: usize, groups: usize, t: usize) -> f64 {
        binomial_tail(groups, majority_error(repetition, ber), t)
    }
}
