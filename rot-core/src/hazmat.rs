//! Raw PUF readouts. **Hazardous material.**
//!
//! Before the fuzzy extractor runs, a readout *is* the device secret: anyone
//! who sees one enrolment readout can compute every key the chip will ever
//! derive. Code outside this crate should only need these items to implement an
//! [`EntropySource`](crate::entropy::EntropySource) backend, or to measure the
//! silicon in a report. Zeroize every buffer that held a readout.

/// Cells in the array: 64 rows × 64 columns.
pub const CELL_COUNT: usize = 64 * 64;
/// Bytes in one packed readout.
pub const READOUT_BYTES: usize = CELL_COUNT / 8;

/// One power-up readout, one bit per cell: cell `i` is bit `i % 8` of byte `i / 8`.
pub type Readout = [u8; READOUT_BYTES];

/// Reads the bit of cell `index` (0 or 1).
#[must_use]
pub fn cell(readout: &Readout, index: usize) -> u8 {
    (readout[index / 8] >> (index % 8)) & 1
}

/// Per-cell majority of several readouts (ties, possible only for an even
/// count, go to 0). Used at enrolment so the reference the helper data is built
/// from carries less noise than any single power-up.
#[must_use]
pub fn majority(readouts: &[Readout]) -> Readout {
    let mut out = [0u8; READOUT_BYTES];
    let threshold = readouts.len() / 2;
    for index in 0..CELL_COUNT {
        let ones: usize = readouts.iter().map(|r| usize::from(cell(r, index))).sum();
        out[index / 8] |= u8::from(ones > threshold) << (index % 8);
    }
    out
}

/// Fractional Hamming distance between two readouts, in `[0, 1]`.
#[must_use]
pub fn fractional_hamming_distance(a: &Readout, b: &Readout) -> f64 {
    let differing: u32 = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
    f64::from(differing) / CELL_COUNT as f64
}
