//! Raw PUF readouts. **Hazardous material.**
//!
//! Before the fuzzy extractor runs, a readout *is* the device secret: anyone
//! who sees one enrolment readout can compute every key the chip will ever
//! derive. Code outside this crate should only need these items to implement an
//! [`EntropySource`](crate::entropy::EntropySource) backend, or to measure the
//! silicon in a report. Zeroize every buffer that held a readout.

use core::num::NonZeroU8;

use zeroize::Zeroizing;

use crate::entropy::{EntropySource, ReadFailed};

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

/// Per-cell majority of `readouts` power-ups of `source` (ties, possible only
/// for an even count, go to 0). Enrolment uses it so the reference the helper
/// data is built from carries less noise than any single power-up.
///
/// # Errors
/// [`ReadFailed`] if any readout fails.
pub fn read_majority<S: EntropySource + ?Sized>(
    source: &mut S,
    readouts: NonZeroU8,
) -> Result<Readout, ReadFailed> {
    // Zeroizing wrappers also cover the early return when a read fails midway.
    let mut ones = Zeroizing::new([0u8; CELL_COUNT]);
    let mut readout = Zeroizing::new([0u8; READOUT_BYTES]);
    for _ in 0..readouts.get() {
        source.read(&mut readout)?;
        for (index, count) in ones.iter_mut().enumerate() {
            *count += cell(&readout, index);
        }
    }
    let mut reference = [0u8; READOUT_BYTES];
    for (index, &count) in ones.iter().enumerate() {
        reference[index / 8] |=
            u8::from(2 * u16::from(count) > u16::from(readouts.get())) << (index % 8);
    }
    Ok(reference)
}

/// Fractional Hamming distance between two readouts, in `[0, 1]`.
#[must_use]
pub fn fractional_hamming_distance(a: &Readout, b: &Readout) -> f64 {
    let differing: u32 = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
    f64::from(differing) / CELL_COUNT as f64
}

/// Fraction of cells reading 1 (uniformity).
#[must_use]
pub fn fraction_of_ones(readout: &Readout) -> f64 {
    let ones: u32 = readout.iter().map(|byte| byte.count_ones()).sum();
    f64::from(ones) / CELL_COUNT as f64
}

/// Every secret the seeds stand for, as raw bytes: the eight seeds, the enrolment
/// key's scalar and the seven device keys' scalars (32 bytes big-endian each).
///
/// **Tests only** (feature `hazmat-expose`): leak-scanning tests derive these
/// independently and search a device's files and logs for them. Zeroized on drop.
#[cfg(feature = "hazmat-expose")]
#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct ExposedSecrets {
    /// Seeds 0..8 (seed 0 is the enrolment seed).
    pub seeds: [[u8; crate::keys::SEED_BYTES]; crate::keys::SEED_COUNT],
    /// The ESK scalar.
    pub enrolment_scalar: [u8; 32],
    /// The DSK scalars of slots 1..=7, index 0 being slot 1.
    pub device_scalars: [[u8; 32]; crate::keys::SEED_COUNT - 1],
}

#[cfg(feature = "hazmat-expose")]
impl core::fmt::Debug for ExposedSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ExposedSecrets([REDACTED])")
    }
}

/// Exposes the raw seeds and private scalars behind `seeds`.
///
/// **Tests only** (feature `hazmat-expose`): this defeats every protection the
/// key types give. It exists so a leak test can look for the exact bytes.
#[cfg(feature = "hazmat-expose")]
#[must_use]
pub fn expose_secrets(seeds: &crate::keys::Seeds) -> ExposedSecrets {
    seeds.expose()
}

/// The secrets behind one firmware-bound alias key: its CDI and its scalar (32 bytes each).
///
/// **Tests only** (feature `hazmat-expose`), like [`ExposedSecrets`]. Zeroized on drop.
#[cfg(feature = "hazmat-expose")]
#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct ExposedAliasSecrets {
    /// The CDI of the slot's seed and the measurement.
    pub cdi: [u8; crate::keys::alias::CDI_BYTES],
    /// The alias key's scalar.
    pub scalar: [u8; 32],
}

#[cfg(feature = "hazmat-expose")]
impl core::fmt::Debug for ExposedAliasSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ExposedAliasSecrets([REDACTED])")
    }
}

/// Exposes the CDI and the alias scalar of `slot` for the firmware `measurement`.
///
/// **Tests only** (feature `hazmat-expose`), like [`expose_secrets`].
#[cfg(feature = "hazmat-expose")]
#[must_use]
pub fn expose_alias_secrets(
    seeds: &crate::keys::Seeds,
    slot: crate::keys::KeySlot,
    measurement: &crate::firmware::FirmwareMeasurement,
) -> ExposedAliasSecrets {
    seeds.expose_alias(slot, measurement)
}
