//! The layout is a function of the flags alone, every group reads ten
//! observations of its secret, and complementing a selected tuple changes no
//! flag (the argument behind the uniformity of the group secrets).

use super::*;
use crate::hazmat::READOUT_BYTES;

/// A deterministic, roughly unbiased reference (xorshift).
fn reference(seed: u64) -> Readout {
    let mut state = seed | 1;
    core::array::from_fn(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    })
}

fn enrolled(reference: &Readout) -> ([u8; STREAM_BYTES], Layout, [u8; 40]) {
    let mut word = [0u8; 40];
    let (stream, layout) = Layout::enrol(reference, &mut word).expect("enrols");
    (stream, layout, word)
}

#[test]
fn parsing_the_stream_gives_the_enrolment_layout() {
    for seed in 1..6 {
        let reference = reference(seed);
        let (stream, layout, _) = enrolled(&reference);
        assert_eq!(Layout::parse(&stream).expect("parses"), layout);
        assert!(layout.stream_bits() <= STREAM_BYTES * 8);
    }
}

#[test]
fn every_group_reads_its_secret_ten_times_from_distinct_cells() {
    let reference = reference(7);
    let (_, layout, word) = enrolled(&reference);
    let mut used = [false; CELL_COUNT];
    for group in 0..GROUPS {
        let secret = (word[group / 8] >> (group % 8)) & 1;
        let mut count = 0;
        for (cell_index, invert) in layout.observations(group) {
            assert!(!used[cell_index], "cell {cell_index} used twice");
            used[cell_index] = true;
            assert_eq!(
                cell(&reference, cell_index) ^ invert,
                secret,
                "group {group}"
            );
            count += 1;
        }
        assert_eq!(count, OBSERVATIONS_PER_GROUP);
        // Each group is balanced: as many cells read the secret straight as inverted
        // once the offsets are taken out; that is what makes it unbiased.
        let straight = (0..usize::from(layout.tuples_per_group()[group]))
            .flat_map(|slot| layout.tuple_cells(group, slot))
            .filter(|&(cell_index, _)| cell(&reference, cell_index) == secret)
            .count();
        assert_eq!(straight, OBSERVATIONS_PER_GROUP / 2, "group {group}");
    }
}

#[test]
fn complementing_a_selected_tuple_changes_no_flag_only_its_bit() {
    let original = reference(11);
    let (stream, layout, word) = enrolled(&original);
    for group in [0, 1, 100, GROUPS - 1] {
        for slot in 0..usize::from(layout.tuples_per_group()[group]) {
            let mut complemented = original;
            for (cell_index, _) in layout.tuple_cells(group, slot) {
                complemented[cell_index / 8] ^= 1 << (cell_index % 8);
            }
            let (other_stream, other_layout, other_word) = enrolled(&complemented);
            // The flags, hence the layout up to this group's offsets, are unchanged.
            assert_eq!(
                stream[..layout.offsets_start / 8],
                other_stream[..layout.offsets_start / 8]
            );
            assert_eq!(other_layout.offsets_start, layout.offsets_start);
            let flipped: u32 = word
                .iter()
                .zip(other_word)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            // Slot 0 carries the group secret; other slots only change an offset.
            assert_eq!(flipped, u32::from(slot == 0), "group {group} slot {slot}");
        }
    }
}

#[test]
fn uniform_arrays_cannot_enrol() {
    for byte in [0x00, 0xff] {
        let mut word = [0u8; 40];
        assert_eq!(
            Layout::enrol(&[byte; READOUT_BYTES], &mut word).map(|_| ()),
            Err(LayoutError::TooFewBalancedCells)
        );
    }
}

#[test]
fn all_pairs_differing_needs_only_pass_one() {
    // 0x55: every pair is (1, 0).
    let (stream, layout, word) = enrolled(&[0x55; READOUT_BYTES]);
    assert_eq!(layout.offsets_start, PAIRS);
    assert!(layout.tuples_per_group().iter().all(|&t| t == 5));
    assert!(word[..39].iter().all(|&b| b == 0xff));
    assert_eq!(Layout::parse(&stream).expect("parses"), layout);
}

#[test]
fn trailing_garbage_and_missing_tuples_are_refused() {
    let (mut stream, layout, _) = enrolled(&reference(3));
    let last = STREAM_BYTES * 8 - 1;
    assert!(layout.stream_bits() <= last);
    stream[last / 8] |= 1 << (last % 8);
    assert_eq!(Layout::parse(&stream), Err(LayoutError::NonZeroPadding));
    // No pass-1 pair differs: nothing can be assembled.
    assert_eq!(
        Layout::parse(&[0; STREAM_BYTES]),
        Err(LayoutError::TooFewBalancedCells)
    );
}
