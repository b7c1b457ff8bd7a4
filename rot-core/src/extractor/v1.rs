//! Construction 1: repetition(9) × 455 groups + BCH(455, 257, t = 23), hard
//! decisions. Kept byte for byte so devices enrolled with it keep their keys.
//!
//! Group *g* takes cells `g + 455·j`, *j* = 0..8, spread across the array so a
//! local defect or hot spot touches many groups a little rather than one group
//! a lot. The group's secret bit is its first cell `x[g,0]`; the helper data
//! stores the offsets `x[g,j] ⊕ x[g,0]`. At reconstruction each group votes:
//! the majority of `y[g,j] ⊕ offset[g,j]` recovers `x[g,0]` unless 5 or more of
//! its 9 cells flipped; the BCH decoder corrects up to 23 wrong votes.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Enrolment, ReconstructionFailed, derive_seeds, key_check};
use crate::bch;
use crate::hazmat::{self, Readout};
use crate::helper_data::{GROUPS, HelperData, REPETITION};
use crate::keys::Seeds;

/// The parameters bound into the HKDF salt together with the helper data.
pub const PARAMETERS: &[u8] = b"oxroot-fe-v1/rep9x455/bch-455-257-23/hkdf-sha256";
const KEY_CHECK_LABEL: &[u8] = b"oxroot/fe-check/v1";

type Word = [u8; bch::WORD_BYTES];

/// Cell index of member `member` of group `group`.
const fn cell_index(group: usize, member: usize) -> usize {
    group + GROUPS * member
}

pub(super) fn enrol_from_reference(reference: &Readout) -> Enrolment {
    let mut word: Zeroizing<Word> = Zeroizing::new([0; bch::WORD_BYTES]);
    let mut offsets = [0u8; GROUPS];
    for (group, offset) in offsets.iter_mut().enumerate() {
        let first = hazmat::cell(reference, cell_index(group, 0));
        word[group / 8] |= first << (group % 8);
        for member in 1..REPETITION {
            *offset |= (hazmat::cell(reference, cell_index(group, member)) ^ first) << (member - 1);
        }
    }
    let helper_data = HelperData::assemble_v1(&offsets, &bch::helper(&word), |prefix| {
        key_check(KEY_CHECK_LABEL, prefix, &word[..])
    });
    let seeds = derive_seeds(&word[..], &helper_data, PARAMETERS);
    Enrolment { helper_data, seeds }
}

pub(super) fn reconstruct(
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
    let check = key_check(KEY_CHECK_LABEL, helper_data.checked_prefix(), &word[..]);
    let check_matches = check.ct_eq(helper_data.key_check());
    // Derive regardless of the outcome so success and failure cost the same.
    let seeds = derive_seeds(&word[..], helper_data, PARAMETERS);
    if bool::from(decoded & check_matches) {
        Ok(seeds)
    } else {
        Err(ReconstructionFailed)
    }
}
