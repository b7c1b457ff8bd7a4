//! The silicon interface: one power-up readout of the 64 × 64 cell array.
//!
//! Shaped like rustls's `SecureRandom`: one narrow method and a unit error, so a
//! hardware backend (an emulator, a chip file, a memory-mapped cell array) is a
//! few lines and the extractor never learns where the bits came from.

use core::fmt;

pub use crate::hazmat::{CELL_COUNT, READOUT_BYTES, Readout, cell};

/// The silicon could not be read (absent, not powered, or returned a short read).
///
/// Deliberately carries no detail: a readout failure on a real chip says nothing
/// useful to a caller that a detail could not also leak to an attacker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadFailed;

impl fmt::Display for ReadFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the silicon could not be read")
    }
}

impl core::error::Error for ReadFailed {}

/// A source of PUF readouts: each call is one power-up of the cell array.
pub trait EntropySource {
    /// Fills `out` with one fresh power-up readout.
    ///
    /// # Errors
    /// [`ReadFailed`] when the silicon cannot be read.
    fn read(&mut self, out: &mut Readout) -> Result<(), ReadFailed>;
}

impl<S: EntropySource + ?Sized> EntropySource for &mut S {
    fn read(&mut self, out: &mut Readout) -> Result<(), ReadFailed> {
        (**self).read(out)
    }
}

/// A memory-mapped cell array, such as start-up SRAM on an MCU, handed in as a slice.
///
/// On an MCU the firmware takes the region from its linker script before anything
/// writes to it, for example
/// `unsafe { &*(0x2000_F000 as *const [u8; READOUT_BYTES]) }`, and gives the slice here;
/// that `unsafe` belongs to the firmware, which alone knows the memory map. The
/// region must be read before RAM initialisation clears it and must be
/// re-powered between readouts. This backend cannot be exercised on real silicon
/// in this repository: tests run it over ordinary buffers.
pub struct MemoryRegionSource<'a> {
    region: &'a Readout,
}

// The region is a raw readout, the device secret before extraction: never print it.
impl core::fmt::Debug for MemoryRegionSource<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryRegionSource").finish_non_exhaustive()
    }
}

impl<'a> MemoryRegionSource<'a> {
    /// Wraps a power-up memory region.
    #[must_use]
    pub fn new(region: &'a Readout) -> Self {
        Self { region }
    }
}

impl EntropySource for MemoryRegionSource<'_> {
    fn read(&mut self, out: &mut Readout) -> Result<(), ReadFailed> {
        out.copy_from_slice(self.region);
        Ok(())
    }
}

/// A deterministic source that returns the same readout every time.
///
/// **For tests only**: it has no noise and no secrecy, and exists so that
/// extractor tests can control every bit they feed in.
#[derive(Clone, Debug)]
pub struct FixedTestSource {
    /// The readout returned on every call.
    pub readout: Readout,
}

impl EntropySource for FixedTestSource {
    fn read(&mut self, out: &mut Readout) -> Result<(), ReadFailed> {
        *out = self.readout;
        Ok(())
    }
}
