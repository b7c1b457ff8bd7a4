//! The fuzzy extractor end to end: enrolment, reconstruction, identity, and the
//! refusals of corrupt or manipulated inputs.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]
#![cfg(feature = "emulator")]

use proptest::prelude::*;
use rot_core::entropy::FixedTestSource;
use rot_core::extractor::{
    Construction, EnrolError, EnrolMode, ReconstructError, enrol, enrol_from_reference,
    enrol_from_reference_with, enrol_with, reconstruct, reconstruct_from_readout,
};
use rot_core::hazmat::Readout;
use rot_core::helper_data::{GROUPS, HelperData, HelperDataError};
use rot_core::{DeviceId, KeySlot};
use rot_core::{
    emulator::{ChipSeed, EmulatedChip, OperatingConditions},
    silicon_file,
};
use sha2::{Digest, Sha256};

fn chip(seed: u8) -> ChipSeed {
    ChipSeed::derive_fleet(&[0x42; 32], u32::from(seed))
}

fn power_up(chip: &ChipSeed, noise: u64) -> EmulatedChip {
    let mut noise_seed = [0u8; 32];
    noise_seed[..8].copy_from_slice(&noise.to_le_bytes());
    EmulatedChip::new(chip, OperatingConditions::NOMINAL, noise_seed)
}

fn enrolled(chip: &ChipSeed) -> (HelperData, DeviceId) {
    enrolled_with(chip, Construction::default())
}

fn enrolled_with(chip: &ChipSeed, construction: Construction) -> (HelperData, DeviceId) {
    let enrolment = enrol_with(
        &mut power_up(chip, 0),
        None,
        EnrolMode::FirstEnrolment,
        construction,
    )
    .expect("enrols");
    assert_eq!(enrolment.helper_data.construction(), construction);
    let id = enrolment.seeds.enrolment_key().device_id();
    (enrolment.helper_data, id)
}

const BOTH: [Construction; 2] = [Construction::V1, Construction::V2];

fn flip(readout: &mut Readout, cell: usize) {
    readout[cell / 8] ^= 1 << (cell % 8);
}

/// Group g owns cells g + GROUPS·j, j = 0..9 (documented in `extractor`).
fn group_cell(group: usize, member: usize) -> usize {
    group + GROUPS * member
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn same_chip_gives_same_device_id_across_power_ups(seed in any::<u8>(), noise in 1u64..u64::MAX) {
        let chip = chip(seed);
        let (helper, id) = enrolled(&chip);
        let seeds = reconstruct(&mut power_up(&chip, noise), &helper).expect("reconstructs at nominal");
        prop_assert_eq!(seeds.enrolment_key().device_id(), id);
    }

    #[test]
    fn reconstruction_reproduces_every_enrolment_seed(seed in any::<u8>(), noise in 1u64..u64::MAX) {
        let chip = chip(seed);
        let enrolment = enrol(&mut power_up(&chip, 0), None, EnrolMode::FirstEnrolment).expect("enrols");
        let seeds = reconstruct(&mut power_up(&chip, noise), &enrolment.helper_data).expect("reconstructs");
        prop_assert!(seeds.ct_eq(&enrolment.seeds));
        for slot in 1..=7 {
            let slot = KeySlot::new(slot).expect("valid slot");
            prop_assert_eq!(seeds.device_key(slot).public_key(), enrolment.seeds.device_key(slot).public_key());
        }
    }

    #[test]
    fn different_chips_give_different_device_ids(a in any::<u8>(), b in any::<u8>()) {
        prop_assume!(a != b);
        prop_assert_ne!(enrolled(&chip(a)).1, enrolled(&chip(b)).1);
    }
}

#[test]
fn device_keys_differ_per_slot_and_from_the_enrolment_key() {
    let seeds = enrol_from_reference(&[0x3c; 512]).seeds;
    let epk = seeds.enrolment_key().public_key();
    let mut seen = vec![epk];
    for slot in 1..=7 {
        let dpk = seeds
            .device_key(KeySlot::new(slot).expect("valid"))
            .public_key();
        assert!(!seen.contains(&dpk), "slot {slot} repeats a key");
        seen.push(dpk);
    }
}

#[test]
fn corrects_four_flips_in_every_group_and_refuses_one_group_too_many() {
    let reference: Readout = core::array::from_fn(|i| (i as u8).wrapping_mul(151) ^ 0x6d);
    let enrolment = enrol_from_reference(&reference);
    let id = enrolment.seeds.enrolment_key().device_id();

    // 4 of 9 cells flipped in every group: every majority vote still holds.
    let mut noisy = reference;
    for group in 0..GROUPS {
        for member in [0, 3, 5, 8] {
            flip(&mut noisy, group_cell(group, member));
        }
    }
    let seeds = reconstruct_from_readout(&noisy, &enrolment.helper_data).expect("every vote holds");
    assert_eq!(seeds.enrolment_key().device_id(), id);

    // 5 flips (a lost vote) in 23 groups: the BCH decoder corrects them all.
    let mut noisy = reference;
    for group in (0..GROUPS).step_by(19).take(23) {
        for member in 0..5 {
            flip(&mut noisy, group_cell(group, member));
        }
    }
    let seeds =
        reconstruct_from_readout(&noisy, &enrolment.helper_data).expect("t = 23 wrong votes");
    assert_eq!(seeds.enrolment_key().device_id(), id);

    // One more lost vote is beyond the decoder: refused, never a wrong key.
    let mut noisy = reference;
    for group in (0..GROUPS).step_by(19).take(24) {
        for member in 0..5 {
            flip(&mut noisy, group_cell(group, member));
        }
    }
    assert!(reconstruct_from_readout(&noisy, &enrolment.helper_data).is_err());
}

#[test]
fn another_chip_with_this_helper_data_fails_opaquely() {
    let (helper, _) = enrolled(&chip(1));
    let error = reconstruct(&mut power_up(&chip(2), 5), &helper).expect_err("foreign silicon");
    assert_eq!(error.to_string(), "key reconstruction failed");
    assert!(matches!(error, ReconstructError::Failed(_)));
}

#[test]
fn enrolment_is_refused_when_helper_data_exists_unless_forced() {
    let chip = chip(3);
    let (helper, _) = enrolled(&chip);
    let refused = enrol(
        &mut power_up(&chip, 1),
        Some(helper.as_bytes()),
        EnrolMode::FirstEnrolment,
    );
    assert!(matches!(refused, Err(EnrolError::AlreadyEnrolled)));
    // Even corrupt leftovers count: enrolling over them must be a deliberate act.
    let refused = enrol(
        &mut power_up(&chip, 1),
        Some(&[0u8; 3]),
        EnrolMode::FirstEnrolment,
    );
    assert!(matches!(refused, Err(EnrolError::AlreadyEnrolled)));
    assert!(
        enrol(
            &mut power_up(&chip, 1),
            Some(helper.as_bytes()),
            EnrolMode::ForceReEnrolment
        )
        .is_ok()
    );
}

#[test]
fn unreadable_silicon_is_reported_as_such() {
    struct Dead;
    impl rot_core::EntropySource for Dead {
        fn read(&mut self, _: &mut Readout) -> Result<(), rot_core::ReadFailed> {
            Err(rot_core::ReadFailed)
        }
    }
    assert!(matches!(
        enrol(&mut Dead, None, EnrolMode::FirstEnrolment),
        Err(EnrolError::Silicon(_))
    ));
    let helper = enrol_from_reference(&[0; 512]).helper_data;
    assert!(matches!(
        reconstruct(&mut Dead, &helper),
        Err(ReconstructError::Silicon(_))
    ));
}

#[test]
fn helper_data_round_trips_and_fits_512_bytes() {
    for construction in BOTH {
        let helper = enrolled_with(&chip(4), construction).0;
        assert_eq!(helper.as_bytes().len(), construction.helper_data_bytes());
        assert!(helper.as_bytes().len() <= 512);
        assert_eq!(
            HelperData::from_bytes(helper.as_bytes()),
            Ok(helper.clone())
        );
        assert_eq!(helper.version(), construction.number());
        assert_eq!(helper.construction(), construction);
    }
    assert_eq!(Construction::default(), Construction::V2);
}

#[test]
fn either_construction_reconstructs_what_it_enrolled() {
    for construction in BOTH {
        let chip = chip(12);
        let (helper, id) = enrolled_with(&chip, construction);
        let seeds = reconstruct(&mut power_up(&chip, 77), &helper).expect("reconstructs");
        assert_eq!(seeds.enrolment_key().device_id(), id, "{construction}");
    }
    // The two constructions give the same chip two unrelated identities.
    assert_ne!(
        enrolled_with(&chip(12), Construction::V1).1,
        enrolled_with(&chip(12), Construction::V2).1
    );
}

#[test]
fn construction_two_corrects_ties_and_errors_up_to_its_limit() {
    // A reference whose pairs all differ: group g is five pairs (2·(5g + i), +1).
    let reference: Readout = [0x55; 512];
    let enrolment = enrol_from_reference_with(&reference, Construction::V2).expect("enrols");
    let id = enrolment.seeds.enrolment_key().device_id();
    let pair_cells =
        |group: usize| (0..5).flat_map(move |i| [2 * (5 * group + i), 2 * (5 * group + i) + 1]);
    // Four wrong cells in every group: every vote still decides right.
    let mut noisy = reference;
    for group in 0..315 {
        for cell in pair_cells(group).take(4) {
            flip(&mut noisy, cell);
        }
    }
    let seeds = reconstruct_from_readout(&noisy, &enrolment.helper_data).expect("votes hold");
    assert_eq!(seeds.enrolment_key().device_id(), id);
    // 20 groups decided wrong (6 of 10 flipped) plus 8 ties: the fillings cover the ties.
    let mut noisy = reference;
    for group in (0..315).step_by(11).take(20) {
        for cell in pair_cells(group).take(6) {
            flip(&mut noisy, cell);
        }
    }
    for group in (5..315).step_by(37).take(8) {
        for cell in pair_cells(group).take(5) {
            flip(&mut noisy, cell);
        }
    }
    let seeds = reconstruct_from_readout(&noisy, &enrolment.helper_data).expect("within reach");
    assert_eq!(seeds.enrolment_key().device_id(), id);
    // 21 wrong decisions and no ties: one more than t, refused.
    let mut noisy = reference;
    for group in (0..315).step_by(11).take(21) {
        for cell in pair_cells(group).take(6) {
            flip(&mut noisy, cell);
        }
    }
    assert!(reconstruct_from_readout(&noisy, &enrolment.helper_data).is_err());
}

#[test]
fn corrupt_helper_data_gets_a_clear_error() {
    for construction in BOTH {
        let bytes = enrolled_with(&chip(5), construction).0.as_bytes().to_vec();
        let len = bytes.len();
        for cut in [0, 1, 2, 3, 100, len - 1] {
            let error = HelperData::from_bytes(&bytes[..cut]).expect_err("truncated");
            if cut >= 3 {
                assert_eq!(
                    error,
                    HelperDataError::WrongLength {
                        found: cut,
                        expected: len
                    }
                );
                assert!(error.to_string().contains("truncated"), "{error}");
            }
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(matches!(
            HelperData::from_bytes(&padded),
            Err(HelperDataError::WrongLength { .. })
        ));

        let mut wrong_magic = bytes.clone();
        wrong_magic[0] = b'X';
        assert_eq!(
            HelperData::from_bytes(&wrong_magic),
            Err(HelperDataError::BadMagic)
        );
        let mut future = bytes.clone();
        future[2] = 3;
        assert_eq!(
            HelperData::from_bytes(&future),
            Err(HelperDataError::UnsupportedVersion(3))
        );
        let mut other = bytes.clone();
        other[3] = 9;
        assert_eq!(
            HelperData::from_bytes(&other),
            Err(HelperDataError::UnsupportedConstruction(9))
        );

        // Any single-bit flip past the header is caught by the integrity check.
        for position in (4..len).step_by(7) {
            let mut corrupt = bytes.clone();
            corrupt[position] ^= 0x10;
            let error = HelperData::from_bytes(&corrupt).expect_err("corrupted");
            assert_eq!(
                error,
                HelperDataError::IntegrityCheckFailed,
                "flip at {position}"
            );
            assert!(error.to_string().contains("corrupted"));
        }
    }
}

/// Recomputes the integrity tag as an attacker would (it is an unkeyed hash).
fn with_integrity(mut forged: Vec<u8>) -> Vec<u8> {
    let len = forged.len();
    let tag = Sha256::digest(&forged[..len - 8]);
    forged[len - 8..].copy_from_slice(&tag[..8]);
    forged
}

/// An attacker rewrites helper data and fixes up the integrity check: the
/// result must be a refusal or an opaque failure, never a silently different key.
#[test]
fn manipulated_helper_data_with_valid_integrity_fails_opaquely() {
    let chip = chip(6);
    for construction in BOTH {
        let (helper, _) = enrolled_with(&chip, construction);
        let len = helper.as_bytes().len();
        for position in [
            4,
            20,
            25,
            26,
            200,
            300,
            458,
            459,
            470,
            483,
            484,
            487,
            488,
            len - 9,
        ] {
            let mut forged = helper.as_bytes().to_vec();
            forged[position] ^= 0x01;
            match HelperData::from_bytes(&with_integrity(forged)) {
                // A version-2 stream that no longer parses is refused up front.
                Err(HelperDataError::BadLayout(_)) => assert_eq!(construction, Construction::V2),
                Err(other) => panic!("{other:?}"),
                Ok(forged) => {
                    let result = reconstruct(&mut power_up(&chip, 9), &forged);
                    assert!(
                        matches!(result, Err(ReconstructError::Failed(_))),
                        "construction {construction}: forgery at {position} accepted"
                    );
                }
            }
        }
    }
}

#[test]
fn secrets_print_redacted() {
    let seeds = enrol_from_reference(&[0x11; 512]).seeds;
    let esk = seeds.enrolment_key();
    let dsk = seeds.device_key(KeySlot::FIRST);
    let region = [0x3c; 512];
    let source = rot_core::entropy::MemoryRegionSource::new(&region);
    assert!(!format!("{source:?}").contains("60"), "raw readout printed");
    for text in [
        format!("{seeds:?}"),
        format!("{esk:?}"),
        format!("{dsk:?}"),
        format!("{:?}", chip(7)),
    ] {
        assert!(text.to_lowercase().contains("redacted"), "{text}");
    }
    assert!(!format!("{:?}", chip(7)).contains(&format!("{:?}", chip(7).as_bytes())));
}

#[test]
fn fixed_test_source_is_deterministic() {
    let mut source = FixedTestSource {
        readout: [0xa5; 512],
    };
    let first = enrol(&mut source, None, EnrolMode::FirstEnrolment).expect("enrols");
    let again = reconstruct(&mut source, &first.helper_data).expect("noise-free");
    assert!(again.ct_eq(&first.seeds));
}

#[test]
fn silicon_files_round_trip() {
    let chip = chip(8);
    let file = silicon_file::encode(&chip);
    let decoded = silicon_file::decode(file.as_ref()).expect("valid file");
    assert_eq!(decoded.as_bytes(), chip.as_bytes());
}

#[test]
fn corrupt_silicon_files_get_clear_errors() {
    use silicon_file::SiliconFileError;
    let file = *silicon_file::encode(&chip(9));
    for cut in [0, 5, 8, 40, 71] {
        let error = silicon_file::decode(&file[..cut]).expect_err("truncated");
        assert_eq!(
            error,
            SiliconFileError::WrongLength {
                found: cut,
                expected: 72
            }
        );
        assert!(error.to_string().contains("truncated"));
    }
    let mut wrong = file;
    wrong[1] = b'!';
    assert_eq!(
        silicon_file::decode(&wrong).expect_err("magic"),
        SiliconFileError::BadMagic
    );
    let mut version = file;
    version[4] = 7;
    assert_eq!(
        silicon_file::decode(&version).expect_err("version"),
        SiliconFileError::UnsupportedVersion(7)
    );
    for position in 6..72 {
        let mut corrupt = file;
        corrupt[position] ^= 0x80;
        let error = silicon_file::decode(&corrupt).expect_err("corrupt");
        assert_eq!(
            error,
            SiliconFileError::ChecksumMismatch,
            "flip at {position}"
        );
        assert!(error.to_string().contains("corrupted"));
    }
    assert_eq!(
        silicon_file::decode(b"not a chip").expect_err("text"),
        SiliconFileError::BadMagic
    );

    // Well-formed files (checksum recomputed) with a field this build does not know.
    let with_checksum = |mut bytes: [u8; 72]| {
        let checksum = Sha256::digest(&bytes[..40]);
        bytes[40..].copy_from_slice(&checksum);
        bytes
    };
    let mut model = file;
    model[6] = 2;
    let error = silicon_file::decode(&with_checksum(model)).expect_err("unknown model");
    assert_eq!(error, SiliconFileError::UnsupportedModel(2));
    let mut reserved = file;
    reserved[7] = 1;
    let error = silicon_file::decode(&with_checksum(reserved)).expect_err("reserved byte");
    assert_eq!(error, SiliconFileError::ReservedNotZero(1));
}
