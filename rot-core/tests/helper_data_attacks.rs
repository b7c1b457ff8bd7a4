//! The published helper-data manipulation attacks, run against both constructions.
//!
//! The attacker rewrites helper data (recomputing the unkeyed integrity tag) and watches
//! whether reconstruction succeeds, many times, under the device's own noise:
//!
//! - **Offset-bit flipping** (Delvaux et al., IEEE TCAD 2015; Becker, IEEE TDSC 2017): toggle
//!   the offset that ties one cell (v1) or one tuple (v2) to its group, so the group's vote
//!   moves by the cell's unknown contribution, and infer the cell from the failure rate.
//! - **Syndrome edits**: add the syndrome of a chosen error pattern, so the decoder "corrects"
//!   towards a related word and the failure rate shows how close the readout is to the limit.
//! - **Key-check and whole-record substitution.**
//!
//! Each attack's statistic is the failure count over repeated noisy reconstructions. The tests
//! show it is the same (every attempt fails) whatever the secret, while the genuine helper data
//! reconstructs every time under the same noise: the failures come from the edit alone and say
//! nothing about the cells. (The device agent's lockout then ends the queries after five:
//! `device-agent/tests/helper_data_lockout.rs`.)
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]
#![cfg(feature = "emulator")]

use rot_core::bch;
use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{Construction, ENROLMENT_READS, enrol_from_reference_with};
use rot_core::extractor::{ReconstructionFailed, reconstruct_from_readout};
use rot_core::hazmat::{self, CELL_COUNT, Readout};
use rot_core::helper_data::{GROUPS, HelperData};
use sha2::{Digest, Sha256};

/// Noisy reconstructions per attacked record: enough that a real failure-rate signal of the
/// kind the attacks exploit (tens of percent) would show.
const TRIALS: usize = 12;
/// The device's own noise during the attack: well inside what both constructions correct.
const BER: f64 = 0.06;

struct Victim {
    reference: Readout,
    helper: HelperData,
}

fn victim(construction: Construction) -> Victim {
    let chip = ChipSeed::from_bytes(*b"oxroot helper-data attack victim");
    let mut source = EmulatedChip::new(&chip, OperatingConditions::NOMINAL, [1; 32]);
    let reference = hazmat::read_majority(&mut source, ENROLMENT_READS).expect("reads");
    let helper = enrol_from_reference_with(&reference, construction)
        .expect("enrols")
        .helper_data;
    Victim { reference, helper }
}

/// xorshift64*: deterministic noise for the attack trials.
fn noisy(reference: &Readout, trial: usize) -> Readout {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ (trial as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let threshold = (BER * u64::MAX as f64) as u64;
    let mut out = *reference;
    for cell in 0..CELL_COUNT {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        if state.wrapping_mul(0x2545_f491_4f6c_dd1d) < threshold {
            out[cell / 8] ^= 1 << (cell % 8);
        }
    }
    out
}

/// How many of `TRIALS` noisy reconstructions fail with this helper data.
fn failures(victim: &Victim, helper: &HelperData) -> usize {
    (0..TRIALS)
        .filter(|&trial| {
            matches!(
                reconstruct_from_readout(&noisy(&victim.reference, trial), helper),
                Err(ReconstructionFailed)
            )
        })
        .count()
}

/// Recomputes the integrity tag as an attacker would; `None` when the edited record is
/// refused before reconstruction (a version-2 stream that no longer parses).
fn forge(bytes: &[u8], edit: impl FnOnce(&mut [u8])) -> Option<HelperData> {
    let mut forged = bytes.to_vec();
    edit(&mut forged);
    let len = forged.len();
    let tag = Sha256::digest(&forged[..len - 8]);
    forged[len - 8..].copy_from_slice(&tag[..8]);
    HelperData::from_bytes(&forged).ok()
}

#[test]
fn under_the_attack_noise_the_genuine_helper_data_always_reconstructs() {
    for construction in [Construction::V1, Construction::V2] {
        let victim = victim(construction);
        assert_eq!(failures(&victim, &victim.helper), 0, "{construction}");
    }
}

/// Construction 1: offset byte g, bit j−1, ties cell g + 455·j to cell g. Flipping it moves the
/// group's vote by the cell's relation to the group, which is what the attack reads from the
/// failure rate. Targets are split by that relation in the *readout the device will see*
/// (group margins differ); both halves must give the same count.
#[test]
fn offset_flipping_learns_nothing_construction_1() {
    let victim = victim(Construction::V1);
    let bytes = victim.helper.as_bytes().to_vec();
    let mut counts = Vec::new();
    for group in (0..GROUPS).step_by(41) {
        for member in [1usize, 4, 8] {
            let helper = forge(&bytes, |b| b[4 + group] ^= 1 << (member - 1)).expect("parses");
            let relation = hazmat::cell(&victim.reference, group + GROUPS * member)
                ^ hazmat::cell(&victim.reference, group);
            counts.push((relation, failures(&victim, &helper)));
        }
    }
    // Every forged record fails every time: the statistic is constant, so it carries no
    // information about `relation` (or anything else).
    assert!(counts.iter().all(|&(_, f)| f == TRIALS), "{counts:?}");
    assert!(counts.iter().any(|&(r, _)| r == 0) && counts.iter().any(|&(r, _)| r == 1));
}

/// Construction 2: the tuple offsets follow the flags in the debiasing stream; flipping one
/// re-reads one tuple of a group inverted. Flag edits change the layout instead.
#[test]
fn offset_and_flag_flipping_learns_nothing_construction_2() {
    let victim = victim(Construction::V2);
    let bytes = victim.helper.as_bytes().to_vec();
    let layout = victim.helper.debias_layout().expect("version 2");
    // Stream bit k is helper bit 8·26 + k; offsets start after the flags.
    let stream_bit = |k: usize| (26 + k / 8, (k % 8) as u8);
    let flags = layout.stream_bits() - layout.offset_bits();
    let mut tried = 0;
    for k in
        (0..layout.stream_bits())
            .step_by(97)
            .chain([flags, flags + 1, layout.stream_bits() - 1])
    {
        let (byte, bit) = stream_bit(k);
        let Some(helper) = forge(&bytes, |b| b[byte] ^= 1 << bit) else {
            // Refused before reconstruction: not even a query.
            continue;
        };
        assert_eq!(failures(&victim, &helper), TRIALS, "stream bit {k}");
        tried += 1;
    }
    assert!(tried > 20, "only {tried} edits parsed");
}

/// Syndrome edits: add the syndrome of a chosen error pattern of weight w (1, t/2, t). Without a
/// binding the decoder would output the enrolled word shifted by that pattern, and the failure
/// rate would measure the readout's distance to the decoding limit.
#[test]
fn syndrome_edits_learn_nothing() {
    for construction in [Construction::V1, Construction::V2] {
        let victim = victim(construction);
        let bytes = victim.helper.as_bytes().to_vec();
        let (code, offset) = match construction {
            Construction::V1 => (bch::V1, 4 + GROUPS),
            Construction::V2 => (bch::V2, 4),
        };
        for weight in [1, code.t() / 2, code.t()] {
            let mut pattern = vec![0u8; code.word_bytes()];
            for i in 0..weight {
                let position = (i * 37 + 11) % code.n();
                pattern[position / 8] |= 1 << (position % 8);
            }
            let mut shift = vec![0u8; code.helper_bytes()];
            code.helper_into(&pattern, &mut shift);
            let helper = forge(&bytes, |b| {
                for (stored, s) in b[offset..offset + shift.len()].iter_mut().zip(&shift) {
                    *stored ^= s;
                }
            })
            .expect("parses");
            assert_eq!(
                failures(&victim, &helper),
                TRIALS,
                "construction {construction}, weight {weight}"
            );
        }
    }
}

/// The key check itself, or a whole record from another chip: always a failure.
#[test]
fn key_check_and_record_substitution_fail() {
    for construction in [Construction::V1, Construction::V2] {
        let victim = victim(construction);
        let bytes = victim.helper.as_bytes().to_vec();
        let key_check = bytes.len() - 8 - 16;
        for byte in [key_check, key_check + 7, key_check + 15] {
            let helper = forge(&bytes, |b| b[byte] ^= 0x80).expect("parses");
            assert_eq!(failures(&victim, &helper), TRIALS);
        }
        let other = ChipSeed::from_bytes(*b"the attacker's own chip,enrolled");
        let mut source = EmulatedChip::new(&other, OperatingConditions::NOMINAL, [2; 32]);
        let reference = hazmat::read_majority(&mut source, ENROLMENT_READS).expect("reads");
        let foreign = enrol_from_reference_with(&reference, construction)
            .expect("enrols")
            .helper_data;
        assert_eq!(failures(&victim, &foreign), TRIALS);
    }
}
