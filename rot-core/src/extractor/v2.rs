//! Construction 2: debiased groups of ten observations + BCH(315, 144, t = 20),
//! decoded with the ties as erasures.
//!
//! # Enrolment
//!
//! [`crate::debias`] selects balanced tuples by three von Neumann passes and
//! assembles 315 groups of ten observations; each group's secret is exactly
//! uniform given the flags and offsets. The 315-bit word of group secrets is
//! protected by BCH(315, 144, t = 20): the helper stores its 171-bit syndrome.
//!
//! # Reconstruction (soft decisions)
//!
//! Each group counts how many of its ten observations read 1 (after the
//! offsets). Six or more decide 1, four or fewer decide 0, and five against
//! five is a **tie**: a group that carries no information this time, an
//! erasure. The vote margin is the reliability; ties are the positions the
//! decoder knows nothing about, and they are where most of the uncertainty is
//! (at 20 % BER a group ties with probability 2.6 % and decides wrong with
//! probability 0.64 %).
//!
//! A binary BCH code can decode errors and erasures with its hard decoder:
//! fill the erasures with guesses and decode; a filling that gets at most
//! *e* of the erased bits wrong succeeds whenever the other errors are at
//! most t − *e*. The decoder runs [`FILLS`] = 16 fillings: the ties, in array
//! order, are split into four classes by their rank modulo 4, and each filling
//! sets every tie of class *c* to bit *c* of the filling's number. One of the
//! 16 gets every class's majority right, so the erased bits cost at most
//! Σ_c ⌊f_c / 2⌋ errors instead of about f / 2 for a single guess. Each
//! filling is decoded by the bounded-distance BCH decoder; the candidate whose
//! key check matches is the word (the key check is a 128-bit hash, so a wrong
//! candidate is never taken). This is Forney's generalised-minimum-distance
//! idea with the erasure set fixed by the vote margin, evaluated exactly in
//! [`super::analysis::v2_key_failure_rate`] (15 % → 1.1e-24, 20 % → 1.5e-10,
//! 25 % → 6.9e-3).
//!
//! # Constant time
//!
//! Every reconstruction runs the same 16 full BCH decodes, 16 key checks and one
//! key derivation, whatever the readout. The layout (which cells form which
//! group) comes from public helper data; the votes are sums, the hard bit and
//! the tie are computed arithmetically, the tie rank is a running counter that
//! is only ever compared with masks, and the candidate is chosen with
//! `subtle`'s constant-time select. No branch or memory index depends on a
//! cell value, a vote, a tie or a decoding outcome.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use super::{Enrolment, ReconstructionFailed, derive_seeds, key_check_from};
use crate::bch::V2 as CODE;
use crate::debias::{GROUPS, Layout, LayoutError, OBSERVATIONS_PER_GROUP};
use crate::hazmat::{self, Readout};
use crate::helper_data::HelperData;
use crate::keys::Seeds;

/// The parameters bound into the HKDF salt together with the helper data.
pub const PARAMETERS: &[u8] = b"oxroot-fe-v2/vn3x315x10/bch-315-144-20/tie-fills-16/hkdf-sha256";
const KEY_CHECK_LABEL: &[u8] = b"oxroot/fe-check/v2";

/// Decoder runs per reconstruction: every filling of the four tie classes.
pub const FILLS: u8 = 16;
/// Classes the ties are split into (by rank modulo 4); `FILLS` = 2^`TIE_CLASSES`.
pub const TIE_CLASSES: u8 = 4;
const _: () = assert!(FILLS == 1 << TIE_CLASSES);

const WORD_BYTES: usize = CODE.word_bytes();
type Word = [u8; WORD_BYTES];

const _: () = assert!(CODE.n() == GROUPS && OBSERVATIONS_PER_GROUP == 10);

pub(super) fn enrol_from_reference(reference: &Readout) -> Result<Enrolment, LayoutError> {
    let mut word: Zeroizing<Word> = Zeroizing::new([0; WORD_BYTES]);
    let (stream, _) = Layout::enrol(reference, &mut word[..])?;
    let mut syndrome = [0u8; CODE.helper_bytes()];
    CODE.helper_into(&word[..], &mut syndrome);
    let helper_data = HelperData::assemble_v2(&syndrome, &stream, |prefix| {
        key_check_from(key_check_prefix(prefix), &word[..])
    });
    let seeds = derive_seeds(&word[..], &helper_data, PARAMETERS);
    Ok(Enrolment { helper_data, seeds })
}

fn key_check_prefix(prefix: &[u8]) -> Sha256 {
    let mut digest = Sha256::new_with_prefix(KEY_CHECK_LABEL);
    digest.update(prefix);
    digest
}

/// The votes of one readout: hard decisions, the tie mask, and each tie's
/// class (its rank among the ties, modulo [`TIE_CLASSES`]).
struct Votes {
    hard: Zeroizing<Word>,
    ties: Zeroizing<Word>,
    class: Zeroizing<[u8; GROUPS]>,
}

fn vote(readout: &Readout, layout: &Layout) -> Votes {
    let mut votes = Votes {
        hard: Zeroizing::new([0; WORD_BYTES]),
        ties: Zeroizing::new([0; WORD_BYTES]),
        class: Zeroizing::new([0; GROUPS]),
    };
    let mut rank: u8 = 0;
    for group in 0..GROUPS {
        let mut ones: u8 = 0;
        for (cell, invert) in layout.observations(group) {
            ones += hazmat::cell(readout, cell) ^ invert;
        }
        // ones ∈ 0..=10: (ones + 10) has bit 4 set iff ones ≥ 6; a tie is exactly 5.
        let bit = ((ones + 10) >> 4) & 1;
        let tie = ones.ct_eq(&5).unwrap_u8();
        votes.hard[group / 8] |= bit << (group % 8);
        votes.ties[group / 8] |= tie << (group % 8);
        votes.class[group] = rank & (TIE_CLASSES - 1);
        rank = rank.wrapping_add(tie);
    }
    votes
}

/// The hard decisions with every tie of class c set to bit c of `fill`.
fn filled(votes: &Votes, fill: u8, out: &mut Word) {
    *out = *votes.hard;
    for group in 0..GROUPS {
        let class = votes.class[group];
        let mut bit = 0u8;
        for c in 0..TIE_CLASSES {
            bit |= (fill >> c) & 1 & class.ct_eq(&c).unwrap_u8();
        }
        // A tie's hard decision is 0, so xoring sets it to the filling's bit.
        let tie = (votes.ties[group / 8] >> (group % 8)) & 1;
        out[group / 8] ^= (tie & bit) << (group % 8);
    }
}

pub(super) fn reconstruct(
    readout: &Readout,
    helper_data: &HelperData,
) -> Result<Seeds, ReconstructionFailed> {
    // Public: the helper data was validated when it was parsed.
    let layout = Layout::parse(helper_data.debias_stream()).map_err(|_| ReconstructionFailed)?;
    let votes = vote(readout, &layout);
    let prefix = key_check_prefix(helper_data.checked_prefix());

    let mut chosen: Zeroizing<Word> = Zeroizing::new([0; WORD_BYTES]);
    let mut candidate: Zeroizing<Word> = Zeroizing::new([0; WORD_BYTES]);
    let mut found = Choice::from(0);
    for fill in 0..FILLS {
        filled(&votes, fill, &mut candidate);
        let decoded = CODE.correct(&mut candidate[..], helper_data.v2_bch_helper());
        let check = key_check_from(prefix.clone(), &candidate[..]);
        let matches = decoded & check.ct_eq(helper_data.key_check());
        let take = matches & !found;
        for (c, w) in chosen.iter_mut().zip(candidate.iter()) {
            *c = u8::conditional_select(c, w, take);
        }
        found |= matches;
    }
    // Derive regardless of the outcome so success and failure cost the same.
    let seeds = derive_seeds(&chosen[..], helper_data, PARAMETERS);
    if bool::from(found) {
        Ok(seeds)
    } else {
        Err(ReconstructionFailed)
    }
}
