//! Debiasing for construction 2: multi-pass von Neumann selection of balanced
//! cell tuples, and their assembly into groups of ten observations.
//!
//! # Why
//!
//! Code-offset helper data over a repetition code reveals each group's cells up
//! to complement. When cells are biased (P(1) = p ≠ ½) the two candidates are
//! not equally likely, so the offsets leak the group's secret bit: with
//! repetition(9) the leak leaves 114 of 257 bits at p = 0.55 and 5 at p = 0.60
//! ([`crate::extractor::analysis::v1_min_entropy`]). The cure (Maes, van der
//! Leest, van der Sluis, Willems, "Secure Key Generation from Biased PUFs",
//! CHES 2015, LNCS 9293) is to build every repetition group from *balanced*
//! tuples only, whose two complements have the same weight and so the same
//! probability whatever p is.
//!
//! # Selection (the published von Neumann passes, each tuple kept whole)
//!
//! 1. **Pass 1.** Cells `2i, 2i + 1` form pair *i* (horizontal neighbours, so a
//!    regional bias affects both alike). The helper stores one flag per pair:
//!    the two cells differ. A differing pair `(b, ¬b)` is a 2-cell tuple with
//!    bit b, observed twice (the second cell inverted).
//! 2. **Pass 2.** Within each 8 × 8-cell tile, equal pairs (`bb`), in array
//!    order, are taken two at a time; one flag each says their values differ.
//!    `(bb, ¬b¬b)` is a 4-cell tuple.
//! 3. **Pass 3.** Within each tile, equal pass-2 candidates (`bbbb`), in order,
//!    two at a time; one flag each. `(bbbb, ¬b¬b¬b¬b)` is an 8-cell tuple.
//!
//! Keeping passes 2 and 3 inside a tile matters under a *regional* bias: a
//! tuple is balanced in probability only if its cells share one P(1), and
//! cells of one tile (at most seven columns and rows apart) nearly do, while
//! pairs from opposite ends of a gradient do not.
//!
//! Every flag is a function of equalities only, and complementing all the
//! cells of one selected tuple changes no flag and no cell weight. For
//! independent cells with a common P(1), a configuration and its image under
//! that complement are equally likely, so **given all the flags, the selected
//! tuples' bits are independent and exactly uniform, for every p**. The
//! helper data that says *where* the balanced tuples are is independent of
//! their values.
//!
//! # Groups
//!
//! [`GROUPS`] groups of exactly [`OBSERVATIONS_PER_GROUP`] observations are
//! assembled deterministically from the flags alone: each 8-tuple with one
//! pair, then 4-tuples two at a time with one pair (a last odd one with three
//! pairs), then five pairs per group, all in array order. Larger tuples go
//! first because each tuple in a group costs one offset bit of helper data. A
//! group's secret is its first tuple's bit; the helper stores every other
//! tuple's bit xored with it (the code-offset of a repetition code over uniform
//! bits, which reveals nothing about the secret). Every group is therefore a
//! repetition code of ten independent observations of one uniform bit,
//! whichever tuples it is made of, which is what the reliability analysis
//! assumes.
//!
//! A chip whose array does not yield [`GROUPS`] × [`OBSERVATIONS_PER_GROUP`]
//! balanced observations (from about P(1) = 0.58; 38 % of chips enrol at
//! 0.60, see `puf_report`) cannot enrol in construction 2: that refusal
//! depends only on counts, which are themselves flags, so it reveals nothing
//! about the secret either.

use core::fmt;

use crate::hazmat::{CELL_COUNT, Readout, cell};

/// Groups, one per bit of the outer BCH code.
pub const GROUPS: usize = crate::bch::V2.n();
/// Observations (cells) per group; even, so a group can tie.
pub const OBSERVATIONS_PER_GROUP: usize = 10;
/// Pairs of horizontally adjacent cells in the array.
pub const PAIRS: usize = CELL_COUNT / 2;
/// Bytes of the debiasing stream in the helper data: flags of the three
/// passes, then the tuple offsets, then zero padding.
pub const STREAM_BYTES: usize = 462;
const STREAM_BITS: usize = STREAM_BYTES * 8;

/// Tiles of 8 × 8 cells (4 pairs wide, 8 rows high) within which passes 2 and
/// 3 pair their candidates.
const TILE_CELLS: usize = 8;
const TILES: usize = CELL_COUNT / (TILE_CELLS * TILE_CELLS);
const PAIRS_PER_TILE: usize = TILE_CELLS * TILE_CELLS / 2;
const ARRAY_COLUMNS: usize = 64;

/// The tile of pair `pair` (cells `2·pair`, `2·pair + 1`; row-major, 64 columns).
const fn tile_of(pair: u16) -> usize {
    let cell = 2 * pair as usize;
    let (row, column) = (cell / ARRAY_COLUMNS, cell % ARRAY_COLUMNS);
    (row / TILE_CELLS) * (ARRAY_COLUMNS / TILE_CELLS) + column / TILE_CELLS
}

/// The most tuples a group holds (five pairs).
const MAX_TUPLES_PER_GROUP: usize = 5;

/// Why a debiasing stream does not describe a usable layout. Every cause is a
/// property of public data (flags and counts), never of secret cell values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// The flags select fewer balanced observations than the groups need.
    TooFewBalancedCells,
    /// Flags and offsets do not fit in the stream.
    StreamOverflow,
    /// Bits after the offsets are not zero: not written by this construction.
    NonZeroPadding,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooFewBalancedCells => {
                "too few balanced cells for construction 2 (the array is too biased)"
            }
            Self::StreamOverflow => "the debiasing data does not fit the helper data",
            Self::NonZeroPadding => "the debiasing data has trailing garbage",
        })
    }
}

impl core::error::Error for LayoutError {}

/// One observation: a cell index (bits 0..12), its tuple's slot in the group
/// (bits 12..15) and whether the cell reads the group secret inverted (bit 15):
/// its polarity in the tuple xored with the tuple's offset.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Observation(u16);

impl Observation {
    const fn new(cell: usize, slot: usize, invert: u8) -> Self {
        Self(cell as u16 | (slot as u16) << 12 | (invert as u16) << 15)
    }
    const fn cell(self) -> usize {
        (self.0 & 0x0fff) as usize
    }
    const fn slot(self) -> usize {
        ((self.0 >> 12) & 0x7) as usize
    }
    const fn invert(self) -> u8 {
        (self.0 >> 15) as u8
    }
    fn flip_invert(&mut self, bit: u8) {
        self.0 ^= u16::from(bit & 1) << 15;
    }
}

/// Where every group's ten observations are, as the flags and offsets say.
/// Public data: it is derived from the helper data alone.
#[derive(Clone, PartialEq, Eq)]
pub struct Layout {
    groups: [[Observation; OBSERVATIONS_PER_GROUP]; GROUPS],
    tuples: [u8; GROUPS],
    /// First stream bit after the flags: where the offsets start.
    offsets_start: usize,
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("flag_bits", &self.offsets_start)
            .field("offset_bits", &self.offset_bits())
            .finish_non_exhaustive()
    }
}

fn stream_bit(stream: &[u8; STREAM_BYTES], index: usize) -> u8 {
    (stream[index / 8] >> (index % 8)) & 1
}

fn set_stream_bit(stream: &mut [u8; STREAM_BYTES], index: usize, bit: u8) {
    stream[index / 8] |= (bit & 1) << (index % 8);
}

/// A selected tuple: up to four pairs, each read straight (0) or inverted (1).
/// A 2-cell tuple is one pair whose second cell is inverted.
#[derive(Clone, Copy, Default)]
struct Tuple {
    pairs: [u16; 4],
    len: u8,
}

impl Tuple {
    const fn pair(pair: u16) -> Self {
        Self {
            pairs: [pair, 0, 0, 0],
            len: 1,
        }
    }

    fn of(pairs: &[u16]) -> Self {
        let mut tuple = Self::default();
        tuple.pairs[..pairs.len()].copy_from_slice(pairs);
        tuple.len = pairs.len() as u8;
        tuple
    }

    const fn observations(&self) -> usize {
        2 * self.len as usize
    }

    /// The cells of this tuple with their polarity relative to the tuple bit:
    /// a differing pair is `(b, ¬b)`; a larger tuple's first half of pairs
    /// holds `b` and its second half `¬b`.
    fn cells(&self) -> impl Iterator<Item = (usize, u8)> + '_ {
        let len = usize::from(self.len);
        self.pairs[..len]
            .iter()
            .enumerate()
            .flat_map(move |(index, &pair)| {
                let first = 2 * usize::from(pair);
                if len == 1 {
                    [(first, 0), (first + 1, 1)]
                } else {
                    let inverted = u8::from(index >= len / 2);
                    [(first, inverted), (first + 1, inverted)]
                }
            })
    }
}

/// One candidate of one pass: the flag says whether its two halves differ.
#[derive(Clone, Copy)]
enum Candidate {
    /// Pass 1: the two cells of a pair.
    Cells(u16),
    /// Pass 2: two equal pairs.
    Pairs(u16, u16),
    /// Pass 3: two equal pass-2 candidates (two equal pairs each).
    Quads([u16; 2], [u16; 2]),
}

/// Tuples found by the three passes, by size, as pair indices.
struct Tuples {
    pairs: [u16; PAIRS],
    pair_count: usize,
    quads: [[u16; 2]; PAIRS / 2],
    quad_count: usize,
    octets: [[u16; 4]; PAIRS / 4],
    octet_count: usize,
}

/// Runs the three passes. `flag(bit, candidate)` returns one candidate's flag:
/// at enrolment it is computed from the reference readout and written, at
/// reconstruction read from the stream. Returns the tuples and the number of
/// flag bits.
fn run_passes(mut flag: impl FnMut(usize, Candidate) -> u8) -> (Tuples, usize) {
    let mut tuples = Tuples {
        pairs: [0; PAIRS],
        pair_count: 0,
        quads: [[0; 2]; PAIRS / 2],
        quad_count: 0,
        octets: [[0; 4]; PAIRS / 4],
        octet_count: 0,
    };
    let mut bit = 0;
    // Passes 2 and 3 only pair candidates within one tile: under a regional bias
    // two distant pairs have different P(1), and a 4-tuple of them is no longer
    // balanced in probability (a 0.45..0.55 gradient left 104 bits when the
    // passes paired across the array).
    let mut equal_pairs = [[0u16; PAIRS_PER_TILE]; TILES];
    let mut equal_pair_count = [0usize; TILES];
    for pair in 0..PAIRS as u16 {
        if flag(bit, Candidate::Cells(pair)) == 1 {
            tuples.pairs[tuples.pair_count] = pair;
            tuples.pair_count += 1;
        } else {
            let tile = tile_of(pair);
            equal_pairs[tile][equal_pair_count[tile]] = pair;
            equal_pair_count[tile] += 1;
        }
        bit += 1;
    }
    let mut equal_quads = [[[0u16; 2]; PAIRS_PER_TILE / 2]; TILES];
    let mut equal_quad_count = [0usize; TILES];
    for tile in 0..TILES {
        for candidate in equal_pairs[tile][..equal_pair_count[tile]].chunks_exact(2) {
            let quad = [candidate[0], candidate[1]];
            if flag(bit, Candidate::Pairs(quad[0], quad[1])) == 1 {
                tuples.quads[tuples.quad_count] = quad;
                tuples.quad_count += 1;
            } else {
                equal_quads[tile][equal_quad_count[tile]] = quad;
                equal_quad_count[tile] += 1;
            }
            bit += 1;
        }
    }
    for tile in 0..TILES {
        for candidate in equal_quads[tile][..equal_quad_count[tile]].chunks_exact(2) {
            if flag(bit, Candidate::Quads(candidate[0], candidate[1])) == 1 {
                let [a, b] = candidate[0];
                let [c, d] = candidate[1];
                tuples.octets[tuples.octet_count] = [a, b, c, d];
                tuples.octet_count += 1;
            }
            bit += 1;
        }
    }
    (tuples, bit)
}

/// Whether a candidate's two halves differ in the reference (enrolment only).
fn differ(reference: &Readout, candidate: Candidate) -> u8 {
    let first = |pair: u16| cell(reference, 2 * usize::from(pair));
    match candidate {
        Candidate::Cells(pair) => first(pair) ^ cell(reference, 2 * usize::from(pair) + 1),
        Candidate::Pairs(a, b) => first(a) ^ first(b),
        Candidate::Quads(a, b) => first(a[0]) ^ first(b[0]),
    }
}

impl Layout {
    /// Enrolment: computes the flags from the enrolment reference, assembles
    /// the groups, and writes flags and offsets into a fresh stream. Returns
    /// the stream, the layout and the group secrets (one bit per group, packed
    /// LSB-first, the word the outer code protects).
    ///
    /// # Errors
    /// [`LayoutError::TooFewBalancedCells`] or [`LayoutError::StreamOverflow`]:
    /// the chip cannot enrol in construction 2.
    pub(crate) fn enrol(
        reference: &Readout,
        word: &mut [u8],
    ) -> Result<([u8; STREAM_BYTES], Self), LayoutError> {
        let mut stream = [0u8; STREAM_BYTES];
        let (tuples, flag_bits) = run_passes(|bit, candidate| {
            let flag = differ(reference, candidate);
            if bit < STREAM_BITS {
                set_stream_bit(&mut stream, bit, flag);
            }
            flag
        });
        if flag_bits > STREAM_BITS {
            return Err(LayoutError::StreamOverflow);
        }
        let mut layout = Self::assemble(&tuples, flag_bits)?;
        if layout.offsets_start + layout.offset_bits() > STREAM_BITS {
            return Err(LayoutError::StreamOverflow);
        }
        // Secrets and offsets: each tuple's bit is its first (straight) cell.
        let mut bit = layout.offsets_start;
        for (group, observations) in layout.groups.iter_mut().enumerate() {
            let secret = cell(reference, observations[0].cell());
            word[group / 8] |= secret << (group % 8);
            for slot in 1..usize::from(layout.tuples[group]) {
                #[expect(
                    clippy::expect_used,
                    reason = "assemble gives every slot below the group's tuple count its observations"
                )]
                let first = observations
                    .iter()
                    .find(|o| o.slot() == slot)
                    .expect("every slot has observations");
                let offset = cell(reference, first.cell()) ^ secret;
                set_stream_bit(&mut stream, bit, offset);
                bit += 1;
                for observation in observations.iter_mut().filter(|o| o.slot() == slot) {
                    observation.flip_invert(offset);
                }
            }
        }
        Ok((stream, layout))
    }

    /// Reconstruction: the layout a stored stream describes.
    ///
    /// # Errors
    /// A [`LayoutError`] when the stream is not one this construction writes.
    pub fn parse(stream: &[u8; STREAM_BYTES]) -> Result<Self, LayoutError> {
        let mut overflow = false;
        let (tuples, flag_bits) = run_passes(|bit, _| {
            if bit < STREAM_BITS {
                stream_bit(stream, bit)
            } else {
                overflow = true;
                0
            }
        });
        if overflow {
            return Err(LayoutError::StreamOverflow);
        }
        let mut layout = Self::assemble(&tuples, flag_bits)?;
        let end = layout.offsets_start + layout.offset_bits();
        if end > STREAM_BITS {
            return Err(LayoutError::StreamOverflow);
        }
        if (end..STREAM_BITS).any(|bit| stream_bit(stream, bit) == 1) {
            return Err(LayoutError::NonZeroPadding);
        }
        let mut bit = layout.offsets_start;
        for (group, observations) in layout.groups.iter_mut().enumerate() {
            for slot in 1..usize::from(layout.tuples[group]) {
                let offset = stream_bit(stream, bit);
                bit += 1;
                for observation in observations.iter_mut().filter(|o| o.slot() == slot) {
                    observation.flip_invert(offset);
                }
            }
        }
        Ok(layout)
    }

    /// Assembles the groups from the tuples (flags only, no offsets yet).
    fn assemble(tuples: &Tuples, flag_bits: usize) -> Result<Self, LayoutError> {
        let mut layout = Self {
            groups: [[Observation::default(); OBSERVATIONS_PER_GROUP]; GROUPS],
            tuples: [0; GROUPS],
            offsets_start: flag_bits,
        };
        let mut pairs = tuples.pairs[..tuples.pair_count]
            .iter()
            .map(|&pair| Tuple::pair(pair));
        let mut large = tuples.octets[..tuples.octet_count]
            .iter()
            .map(|octet| Tuple::of(octet))
            .chain(
                tuples.quads[..tuples.quad_count]
                    .iter()
                    .map(|quad| Tuple::of(quad)),
            )
            .peekable();
        for group in 0..GROUPS {
            let mut members = [Tuple::default(); MAX_TUPLES_PER_GROUP];
            let mut count = 0;
            let mut filled = 0;
            // Large tuples first while they fit with room for at least one pair.
            while let Some(tuple) = large.peek() {
                if filled + tuple.observations() > OBSERVATIONS_PER_GROUP - 2 {
                    break;
                }
                members[count] = *tuple;
                count += 1;
                filled += tuple.observations();
                large.next();
            }
            while filled < OBSERVATIONS_PER_GROUP {
                let pair = pairs.next().ok_or(LayoutError::TooFewBalancedCells)?;
                members[count] = pair;
                count += 1;
                filled += 2;
            }
            let mut index = 0;
            for (slot, tuple) in members[..count].iter().enumerate() {
                for (cell, inverted) in tuple.cells() {
                    layout.groups[group][index] = Observation::new(cell, slot, inverted);
                    index += 1;
                }
            }
            layout.tuples[group] = count as u8;
        }
        Ok(layout)
    }

    /// Helper bits taken by the tuple offsets.
    #[must_use]
    pub fn offset_bits(&self) -> usize {
        self.tuples.iter().map(|&t| usize::from(t) - 1).sum()
    }

    /// Helper bits taken by flags and offsets together.
    #[must_use]
    pub fn stream_bits(&self) -> usize {
        self.offsets_start + self.offset_bits()
    }

    /// For each observation of `group`: its cell and whether it reads the
    /// group secret inverted. The same for every readout (public).
    pub fn observations(&self, group: usize) -> impl Iterator<Item = (usize, u8)> + '_ {
        self.groups[group].iter().map(|o| (o.cell(), o.invert()))
    }

    /// For each group, the number of tuples it is made of (1 to 5).
    #[must_use]
    pub fn tuples_per_group(&self) -> &[u8; GROUPS] {
        &self.tuples
    }

    /// For each group, the cells of each of its tuples with their polarity
    /// relative to the group secret: what an exact min-entropy computation under
    /// per-cell bias needs.
    pub fn tuple_cells(&self, group: usize, slot: usize) -> impl Iterator<Item = (usize, u8)> + '_ {
        self.groups[group]
            .iter()
            .filter(move |o| o.slot() == slot)
            .map(|o| (o.cell(), o.invert()))
    }
}

#[cfg(test)]
mod tests;
