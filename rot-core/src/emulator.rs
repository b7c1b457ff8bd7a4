//! An emulated oxide-tunnelling PUF: 4,096 differential cells expanded from a
//! 32-byte manufacturing seed, read at chosen operating conditions.
//!
//! The emulator stands in for silicon in tests, benchmarks and reports. It is
//! `no_std`, allocation-free and fully deterministic: a [`ChipSeed`] fixes every
//! manufacturing parameter of a chip, and a separate noise seed fixes the thermal
//! noise of its successive power-ups, so any experiment can be replayed bit for bit.
//!
//! # Physical picture
//!
//! Each cell is a differential pair of thin-oxide devices (gate oxide ≈ 20 Å)
//! biased into direct / Fowler–Nordheim tunnelling. Tunnelling current depends
//! exponentially on the oxide thickness, `ln I ≈ ln I₀ − κ·t_ox` with κ of order
//! 1 Å⁻¹, so the Gaussian thickness variation of a few Å from manufacturing
//! becomes a Gaussian *log*-current variation. A sense amplifier compares the two
//! currents of the pair against its reference; the cell reads `1` when the
//! difference of the log currents (plus noise) is positive. A sense-amplifier
//! offset that is fixed per cell is indistinguishable from the thickness
//! mismatch and is folded into it.
//!
//! # Model
//!
//! Per cell `i`, expanded from the chip seed (all standard normal before scaling):
//!
//! * `Δ0_i = (z_B − z_A) / √2`: the nominal log-current difference. `z_A`, `z_B`
//!   are the normalised oxide thicknesses of the two devices; dividing by √2 (and,
//!   implicitly, by `κ·σ_tox`) normalises `Δ0` to **unit standard deviation**,
//!   which is the unit every other constant below is expressed in.
//! * `γ_i = TEMPERATURE_COEFF_SIGMA · z`: temperature-coefficient mismatch, drift
//!   per °C away from 25 °C (barrier height and trap-assisted components of the
//!   two devices do not track exactly).
//! * `ν_i = SUPPLY_COEFF_SIGMA · z`: supply-sensitivity mismatch, drift per unit
//!   of relative supply deviation from nominal (the field across the two oxides
//!   differs slightly, so their exponential field dependences differ).
//! * `a_i = z`: ageing direction (oxide trap generation and stress-induced
//!   leakage current shift one device more than the other).
//!
//! At operating conditions `c = (T, V, y)` (temperature in °C, supply relative to
//! nominal, age in years) the effective offset of cell `i` is
//!
//! ```text
//! μ_i(c) = Δ0_i + γ_i·(T − 25) + ν_i·(V − 1) + a_i·age_scale(y)
//! age_scale(y) = AGEING_SIGMA_2Y · (y / 2)^AGEING_EXPONENT
//! ```
//!
//! and one power-up readout is
//!
//! ```text
//! bit_i = [ μ_i(c) + σ_n(c)·z_i > 0 ],   z_i ~ N(0, 1) fresh per readout and cell
//! σ_n(c) = NOISE_SIGMA_NOMINAL · sqrt(T_K / 298.15 K) · (1 / V)^SUPPLY_NOISE_EXPONENT
//! ```
//!
//! Thermal (Johnson) noise power grows with absolute temperature, hence the square
//! root; a lower supply shrinks the sense margin, which in the normalised unit of
//! `Δ0` is the same as more input-referred noise.
//!
//! [`EmulatedChip::new`] precomputes `μ(c)` for all cells once (`[f32; 4096]`), so
//! a readout costs 4,096 noise draws and compares.
//!
//! ## Error rate, analytically
//!
//! For a cell, noise and drift add a zero-mean Gaussian error of variance
//! `σ_total² = σ_n(c)² + σ_drift(c)²` (with
//! `σ_drift² = (σ_γ·(T − 25))² + (σ_ν·(V − 1))² + age_scale(y)²`) to the unit
//! Gaussian `Δ0`. `Δ0` and `Δ0 + error` are then jointly Gaussian with correlation
//! `ρ = 1 / sqrt(1 + σ_total²)`, and Sheppard's formula gives the probability that
//! their signs differ:
//!
//! ```text
//! BER_vs_truth(c) = arccos(ρ) / π = arctan(σ_total) / π
//! ```
//!
//! ([`OperatingConditions::predicted_bit_error_rate`]). Measured against a real
//! enrolment reference — the per-cell majority of [`crate::extractor::ENROLMENT_READS`] = 5
//! readouts at [`OperatingConditions::NOMINAL`] — the rate is slightly higher (≈ +0.3 percentage
//! points at nominal, less elsewhere) because the reference itself is wrong for a
//! few cells with `|Δ0|` near zero. The calibration below was done on that
//! reference-based definition by numerically integrating over `Δ0`.
//!
//! # Calibration
//!
//! Published figures (see also `REFERENCE.md`, "PUF figures"):
//!
//! * SRAM-PUF intra-chip error ≈ 3–4 % at room temperature and ≤ 12 % over
//!   −20…80 °C — J. Guajardo, S. S. Kumar, G.-J. Schrijen, P. Tuyls, "FPGA
//!   Intrinsic PUFs and Their Use for IP Protection", CHES 2007, LNCS 4727.
//! * 15 % as the worst-case bit error rate a key generator must be designed
//!   for — C. Bösch, J. Guajardo, A.-R. Sadeghi, J. Shokrollahi, P. Tuyls,
//!   "Efficient Helper Data Key Extractor on FPGAs", CHES 2008, LNCS 5154;
//!   M. Hiller, M.-D. Yu, G. Sigl, "Cherry-Picking Reliable PUF Bits With
//!   Differential Sequence Coding", IEEE TIFS 11(9), 2016.
//! * Ageing: +19.3 % bits flipping with respect to the enrolment reference after
//!   two years of continuous operation at nominal conditions — R. Wang,
//!   G. Selimis, R. Maes, S. Goossens, "Long-term Continuous Assessment of SRAM
//!   PUF and Source of Random Numbers", DATE 2020.
//! * Inter-chip fractional Hamming distance ≈ 0.50 and uniformity ≈ 0.50 for a
//!   good PUF.
//!
//! Constants, and how each was chosen (numbers are predicted BER against the
//! 5-readout nominal enrolment reference; the integration test measures them):
//!
//! | constant | value | chosen so that |
//! |---|---|---|
//! | [`NOISE_SIGMA_NOMINAL`] | 0.083 | nominal BER ≈ 3.0 % (Guajardo: 3–4 %); `arctan(0.083)/π` = 2.6 % vs truth plus ≈ 0.35 points of reference error |
//! | [`TEMPERATURE_COEFF_SIGMA`] | 0.0035 /°C | 125 °C alone ≈ 11 %, −40 °C ≈ 7.6 %; −20 °C ≈ 5.7 % and 80 °C ≈ 6.8 %, inside Guajardo's ≤ 12 % over −20…80 °C |
//! | [`SUPPLY_COEFF_SIGMA`] | 1.25 per unit | ±10 % supply alone ≈ 5 %: supply matters less than temperature, as for SRAM PUFs |
//! | [`SUPPLY_NOISE_EXPONENT`] | 1 | sense margin ∝ supply, so input-referred noise ∝ 1/V |
//! | [`AGEING_SIGMA_2Y`] | 0.062 | two years at nominal: BER × 1.19 (Wang et al.: +19.3 %) |
//! | [`AGEING_EXPONENT`] | 0.25 | power law of trap generation / NBTI-like degradation (exponents 1/6…1/2 are reported; 1/4 is the reaction–diffusion value); 10 years at nominal ≈ 4.2 % |
//!
//! Resulting worst corners (all ≤ 15 %, the design point): `worst_hot`
//! (125 °C, 0.9 V, 10 y) ≈ 12.1 %, `worst_hot_high_supply` ≈ 12.0 %,
//! `worst_cold` (−40 °C, 0.9 V, 10 y) ≈ 9.0 %. Δ0 is symmetric, so uniformity
//! and inter-chip distance are 0.50 by construction.
//!
//! # Bias
//!
//! Real arrays are not always balanced: a systematic mismatch (layout,
//! sense-amplifier offset, a process gradient across the die) makes cells
//! prefer one value. [`Bias`] models that as a fixed shift of `Δ0_i`:
//! `Δ0_i = (z_B − z_A)/√2 + b(column)` with `b = Φ⁻¹(P(1))`, so every cell of a
//! column powers up as 1 with probability P(1) across chips. [`Bias::uniform`]
//! gives every cell the same P(1) (per-cell bias); [`Bias::gradient`] varies it
//! linearly from the left column to the right one (regional bias). Cell *i*
//! sits at row `i / 64`, column `i % 64`. The shift is a manufacturing
//! parameter, so a biased chip is as deterministic as any other; with
//! [`Bias::NONE`] (what [`EmulatedChip::new`] uses) no shift is applied and
//! every chip, silicon file and vector is the one it always was.
//!
//! # Determinism and randomness
//!
//! All randomness is `ChaCha20` (`rand_chacha::ChaCha20Rng`), domain-separated by
//! the 64-bit `ChaCha` stream number (the nonce):
//!
//! * cell parameters: key = chip seed, stream `"oxr-cell"` (little-endian ASCII);
//!   per cell, in cell order, the normals `z_A, z_B, γ, ν, a`;
//! * readout noise: key = noise seed, stream `"oxr-nois"`; one normal per cell
//!   per readout in cell order, continuing across readouts;
//! * fleet derivation ([`ChipSeed::derive_fleet`]): key = master seed, stream
//!   `"oxr-flet"`, chip `k` is keystream words `8k … 8k+7`.
//!
//! Gaussian draws use the Box–Muller transform in `f32` with `libm` (so it works
//! without `std`): from one 64-bit output take `u1 = (⌊w₁/2⁸⌋ + 1)·2⁻²⁴ ∈ (0, 1]`
//! and `u2 = ⌊w₂/2⁸⌋·2⁻²⁴ ∈ [0, 1)` (24-bit uniforms from the two 32-bit halves)
//! and return the pair `sqrt(−2 ln u1)·(cos 2πu2, sin 2πu2)`. The 24-bit
//! resolution truncates the tails at |z| ≈ 5.8, which no statistic here can see.
//!
//! # Secrecy
//!
//! In emulation the chip seed *is* the chip's secret: [`ChipSeed`] zeroizes on
//! drop and prints redacted. [`EmulatedChip`] zeroizes its offsets and ground
//! truth on drop. `ChaCha` key schedules held inside `rand_chacha` are not zeroized
//! (the crate offers no hook); this is an emulator, not a key store.

use core::f32::consts::{FRAC_1_SQRT_2, PI};
use core::fmt;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::entropy::{CELL_COUNT, EntropySource, ReadFailed, Readout};

/// Thermal-noise standard deviation at 25 °C and nominal supply, in units of the
/// spread of `Δ0` (which is 1). Gives a nominal BER ≈ 3 % against the enrolment reference.
pub const NOISE_SIGMA_NOMINAL: f32 = 0.083;
/// Standard deviation across cells of the temperature-coefficient mismatch `γ_i`, per °C.
pub const TEMPERATURE_COEFF_SIGMA: f32 = 0.0035;
/// Standard deviation across cells of the supply-sensitivity mismatch `ν_i`, per unit
/// of relative supply deviation (so ±10 % supply drifts a cell by `0.1 · ν_i`).
pub const SUPPLY_COEFF_SIGMA: f32 = 1.25;
/// Exponent of the supply dependence of the input-referred noise: `σ_n ∝ (1/V)^e`.
pub const SUPPLY_NOISE_EXPONENT: f32 = 1.0;
/// Standard deviation across cells of the ageing drift after two years.
pub const AGEING_SIGMA_2Y: f32 = 0.062;
/// Power-law exponent of the ageing drift in years.
pub const AGEING_EXPONENT: f32 = 0.25;
/// Age, in years, at which [`AGEING_SIGMA_2Y`] is specified.
pub const AGEING_REFERENCE_YEARS: f32 = 2.0;
/// Reference (nominal) temperature, °C.
pub const NOMINAL_TEMPERATURE_C: f32 = 25.0;
/// Readouts whose per-cell majority forms the enrolment reference used to define BER.
pub const ENROLMENT_READOUTS: u8 = 5;

/// Lowest accepted temperature, °C.
pub const MIN_TEMPERATURE_C: f32 = -40.0;
/// Highest accepted temperature, °C.
pub const MAX_TEMPERATURE_C: f32 = 125.0;
/// Lowest accepted relative supply (−20 %).
pub const MIN_SUPPLY: f32 = 0.8;
/// Highest accepted relative supply (+20 %).
pub const MAX_SUPPLY: f32 = 1.2;
/// Highest accepted age, years.
pub const MAX_AGE_YEARS: f32 = 20.0;

const ZERO_CELSIUS_K: f32 = 273.15;
const NOMINAL_TEMPERATURE_K: f32 = NOMINAL_TEMPERATURE_C + ZERO_CELSIUS_K;

const PARAMETER_STREAM: u64 = u64::from_le_bytes(*b"oxr-cell");
const NOISE_STREAM: u64 = u64::from_le_bytes(*b"oxr-nois");
const FLEET_STREAM: u64 = u64::from_le_bytes(*b"oxr-flet");
/// 32-bit `ChaCha` words per derived chip seed.
const WORDS_PER_SEED: u128 = 8;

/// A chip's 32-byte manufacturing seed: in emulation, the chip's secret.
///
/// Zeroized on drop; `Debug` never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChipSeed([u8; 32]);

impl ChipSeed {
    /// Wraps raw seed bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw seed bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Deterministically derives chip number `index` of a fleet from a master seed.
    ///
    /// Chip `k` is the 32 bytes at keystream words `8k … 8k+7` of `ChaCha20` keyed by
    /// `master` on a dedicated stream, so distinct indices give independent chips.
    #[must_use]
    pub fn derive_fleet(master: &[u8; 32], index: u32) -> Self {
        let mut rng = ChaCha20Rng::from_seed(*master);
        rng.set_stream(FLEET_STREAM);
        rng.set_word_pos(u128::from(index) * WORDS_PER_SEED);
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }
}

impl fmt::Debug for ChipSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChipSeed(<redacted>)")
    }
}

/// Operating conditions were outside the emulated range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConditionsError {
    /// Temperature outside −40…125 °C (or not a number).
    Temperature,
    /// Relative supply outside 0.8…1.2 (or not a number).
    Supply,
    /// Age outside 0…20 years (or not a number).
    Age,
}

impl fmt::Display for ConditionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Temperature => "temperature outside -40..=125 degC",
            Self::Supply => "relative supply outside 0.8..=1.2",
            Self::Age => "age outside 0..=20 years",
        })
    }
}

impl core::error::Error for ConditionsError {}

/// Temperature, supply and age at which a chip is read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OperatingConditions {
    temperature_c: f32,
    supply: f32,
    age_years: f32,
}

impl OperatingConditions {
    /// 25 °C, nominal supply, new chip: the enrolment conditions.
    pub const NOMINAL: Self = Self {
        temperature_c: NOMINAL_TEMPERATURE_C,
        supply: 1.0,
        age_years: 0.0,
    };

    /// Validated conditions.
    ///
    /// `supply` is relative to nominal (1.0 = nominal, 0.9 = −10 %).
    ///
    /// # Errors
    /// [`ConditionsError`] naming the first field outside −40…125 °C, 0.8…1.2 or
    /// 0…20 years; NaN is rejected.
    pub const fn new(
        temperature_c: f32,
        supply: f32,
        age_years: f32,
    ) -> Result<Self, ConditionsError> {
        if !(temperature_c >= MIN_TEMPERATURE_C && temperature_c <= MAX_TEMPERATURE_C) {
            return Err(ConditionsError::Temperature);
        }
        if !(supply >= MIN_SUPPLY && supply <= MAX_SUPPLY) {
            return Err(ConditionsError::Supply);
        }
        if !(age_years >= 0.0 && age_years <= MAX_AGE_YEARS) {
            return Err(ConditionsError::Age);
        }
        Ok(Self {
            temperature_c,
            supply,
            age_years,
        })
    }

    /// Unchecked constructor for the constants below (all in range).
    const fn corner(temperature_c: f32, supply: f32, age_years: f32) -> Self {
        Self {
            temperature_c,
            supply,
            age_years,
        }
    }

    /// Temperature, °C.
    #[must_use]
    pub const fn temperature_c(&self) -> f32 {
        self.temperature_c
    }

    /// Supply relative to nominal.
    #[must_use]
    pub const fn supply(&self) -> f32 {
        self.supply
    }

    /// Age, years.
    #[must_use]
    pub const fn age_years(&self) -> f32 {
        self.age_years
    }

    /// Standard deviation of the readout noise, `σ_n(c)`.
    #[must_use]
    pub fn noise_sigma(&self) -> f32 {
        let kelvin = self.temperature_c + ZERO_CELSIUS_K;
        NOISE_SIGMA_NOMINAL
            * libm::sqrtf(kelvin / NOMINAL_TEMPERATURE_K)
            * libm::powf(1.0 / self.supply, SUPPLY_NOISE_EXPONENT)
    }

    /// The ageing scale `age_scale(y)` multiplying each cell's ageing direction.
    #[must_use]
    pub fn age_scale(&self) -> f32 {
        AGEING_SIGMA_2Y * libm::powf(self.age_years / AGEING_REFERENCE_YEARS, AGEING_EXPONENT)
    }

    /// Standard deviation across cells of the drift `μ_i − Δ0_i`.
    #[must_use]
    pub fn drift_sigma(&self) -> f32 {
        let t = TEMPERATURE_COEFF_SIGMA * (self.temperature_c - NOMINAL_TEMPERATURE_C);
        let v = SUPPLY_COEFF_SIGMA * (self.supply - 1.0);
        let a = self.age_scale();
        libm::sqrtf(t * t + v * v + a * a)
    }

    /// Analytic bit error rate of one readout against the noise-free ground truth
    /// `sign(Δ0)`: `arctan(sqrt(σ_n² + σ_drift²)) / π`.
    ///
    /// The rate against a 5-readout enrolment reference is slightly higher (see the
    /// module documentation).
    #[must_use]
    pub fn predicted_bit_error_rate(&self) -> f32 {
        let n = self.noise_sigma();
        let d = self.drift_sigma();
        libm::atanf(libm::sqrtf(n * n + d * d)) / PI
    }
}

impl Default for OperatingConditions {
    fn default() -> Self {
        Self::NOMINAL
    }
}

/// Named operating corners for reports: temperature extremes, ±10 % supply and ageing.
pub const CORNERS: [(&str, OperatingConditions); 11] = [
    ("nominal", OperatingConditions::NOMINAL),
    ("cold", OperatingConditions::corner(-40.0, 1.0, 0.0)),
    ("hot", OperatingConditions::corner(125.0, 1.0, 0.0)),
    ("low_supply", OperatingConditions::corner(25.0, 0.9, 0.0)),
    ("high_supply", OperatingConditions::corner(25.0, 1.1, 0.0)),
    ("aged_2y", OperatingConditions::corner(25.0, 1.0, 2.0)),
    ("aged_10y", OperatingConditions::corner(25.0, 1.0, 10.0)),
    ("worst_cold", OperatingConditions::corner(-40.0, 0.9, 10.0)),
    ("worst_hot", OperatingConditions::corner(125.0, 0.9, 10.0)),
    (
        "worst_cold_high_supply",
        OperatingConditions::corner(-40.0, 1.1, 10.0),
    ),
    (
        "worst_hot_high_supply",
        OperatingConditions::corner(125.0, 1.1, 10.0),
    ),
];

/// P(1) outside 0.01..=0.99 (or not a number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BiasError;

impl fmt::Display for BiasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P(1) must be within 0.01..=0.99")
    }
}

impl core::error::Error for BiasError {}

/// How likely cells are to power up as 1 across chips: per cell, by column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bias {
    p_one_left: f64,
    p_one_right: f64,
}

/// Array columns (and rows).
const COLUMNS: usize = 64;

impl Bias {
    /// Unbiased: P(1) = ½ everywhere, and no shift is applied at all.
    pub const NONE: Self = Self {
        p_one_left: 0.5,
        p_one_right: 0.5,
    };

    /// Every cell has the same P(1).
    ///
    /// # Errors
    /// [`BiasError`] outside 0.01..=0.99.
    pub fn uniform(p_one: f64) -> Result<Self, BiasError> {
        Self::gradient(p_one, p_one)
    }

    /// P(1) varies linearly across the array, from `left` in column 0 to
    /// `right` in column 63: a regional bias.
    ///
    /// # Errors
    /// [`BiasError`] when either end is outside 0.01..=0.99.
    pub fn gradient(left: f64, right: f64) -> Result<Self, BiasError> {
        let valid = |p: f64| (0.01..=0.99).contains(&p);
        if valid(left) && valid(right) {
            Ok(Self {
                p_one_left: left,
                p_one_right: right,
            })
        } else {
            Err(BiasError)
        }
    }

    /// P(1) of cell `cell` (row-major, 64 columns).
    #[must_use]
    pub fn p_one(&self, cell: usize) -> f64 {
        let column = (cell % COLUMNS) as f64 / (COLUMNS - 1) as f64;
        self.p_one_left + (self.p_one_right - self.p_one_left) * column
    }

    /// The shift of `Δ0` that gives each column its P(1): Φ⁻¹(P(1)).
    fn column_shifts(&self) -> [f32; COLUMNS] {
        core::array::from_fn(|column| probit(self.p_one(column)) as f32)
    }
}

impl Default for Bias {
    fn default() -> Self {
        Self::NONE
    }
}

/// Φ⁻¹(p) by bisection on Φ(x) = erfc(−x/√2)/2: deterministic, `no_std`, and
/// exact to `f64` resolution for the 0.01..=0.99 range [`Bias`] accepts.
fn probit(p: f64) -> f64 {
    let (mut low, mut high) = (-8.0f64, 8.0f64);
    for _ in 0..64 {
        let middle = 0.5 * (low + high);
        if 0.5 * libm::erfc(-middle * core::f64::consts::FRAC_1_SQRT_2) < p {
            low = middle;
        } else {
            high = middle;
        }
    }
    0.5 * (low + high)
}

/// Two independent standard normals from one 64-bit `ChaCha` output (Box–Muller).
fn gaussian_pair(rng: &mut ChaCha20Rng) -> (f32, f32) {
    const SCALE: f32 = 1.0 / 16_777_216.0; // 2^-24
    let w = rng.next_u64();
    // (0, 1]: never 0, so the logarithm is finite.
    let u1 = (((w & 0xFFFF_FFFF) >> 8) + 1) as f32 * SCALE;
    // [0, 1)
    let u2 = ((w >> 40) as f32) * SCALE;
    let r = libm::sqrtf(-2.0 * libm::logf(u1));
    let (s, c) = libm::sincosf(2.0 * PI * u2);
    (r * c, r * s)
}

/// A stream of standard normals that uses both halves of each Box–Muller pair.
struct Normals {
    rng: ChaCha20Rng,
    spare: Option<f32>,
}

impl Normals {
    fn next(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            z
        } else {
            let (z0, z1) = gaussian_pair(&mut self.rng);
            self.spare = Some(z1);
            z0
        }
    }
}

/// An emulated chip at fixed operating conditions; each [`EntropySource::read`]
/// is one fresh power-up.
pub struct EmulatedChip {
    /// `μ_i(c)` for every cell.
    offsets: [f32; CELL_COUNT],
    /// `sign(Δ0_i)` packed like a readout.
    ground_truth: Readout,
    conditions: OperatingConditions,
    noise_sigma: f32,
    noise: ChaCha20Rng,
}

impl EmulatedChip {
    /// Manufactures the chip `seed` and places it at `conditions`; `noise_seed`
    /// seeds the thermal noise of its successive readouts. Unbiased.
    #[must_use]
    pub fn new(seed: &ChipSeed, conditions: OperatingConditions, noise_seed: [u8; 32]) -> Self {
        Self::with_bias(seed, conditions, noise_seed, Bias::NONE)
    }

    /// [`EmulatedChip::new`] for an array manufactured with `bias`.
    #[must_use]
    pub fn with_bias(
        seed: &ChipSeed,
        conditions: OperatingConditions,
        noise_seed: [u8; 32],
        bias: Bias,
    ) -> Self {
        // Unbiased chips skip the shift altogether, so they stay bit-identical to
        // the chips made before bias existed.
        let shifts = (bias != Bias::NONE).then(|| bias.column_shifts());
        let mut parameters = ChaCha20Rng::from_seed(*seed.as_bytes());
        parameters.set_stream(PARAMETER_STREAM);
        let mut normals = Normals {
            rng: parameters,
            spare: None,
        };

        let dt = conditions.temperature_c - NOMINAL_TEMPERATURE_C;
        let dv = conditions.supply - 1.0;
        let age = conditions.age_scale();

        let mut offsets = [0.0f32; CELL_COUNT];
        let mut ground_truth = [0u8; CELL_COUNT / 8];
        for (i, offset) in offsets.iter_mut().enumerate() {
            let z_a = normals.next();
            let z_b = normals.next();
            let mut delta0 = (z_b - z_a) * FRAC_1_SQRT_2;
            if let Some(shifts) = &shifts {
                delta0 += shifts[i % COLUMNS];
            }
            let gamma = TEMPERATURE_COEFF_SIGMA * normals.next();
            let nu = SUPPLY_COEFF_SIGMA * normals.next();
            let ageing = normals.next();
            *offset = delta0 + gamma * dt + nu * dv + ageing * age;
            ground_truth[i / 8] |= u8::from(delta0 > 0.0) << (i % 8);
        }

        let mut noise = ChaCha20Rng::from_seed(noise_seed);
        noise.set_stream(NOISE_STREAM);
        Self {
            offsets,
            ground_truth,
            conditions,
            noise_sigma: conditions.noise_sigma(),
            noise,
        }
    }

    /// The conditions the chip is being read at.
    #[must_use]
    pub const fn conditions(&self) -> OperatingConditions {
        self.conditions
    }

    /// **Emulator-only ground truth**: `sign(Δ0_i)` for every cell, the response
    /// the chip would give with no noise, no drift and no ageing.
    ///
    /// Real silicon has no such readout; use it only to check the emulator and
    /// to measure error rates against the truth in tests and reports.
    #[must_use]
    pub fn ground_truth_response(&self) -> Readout {
        self.ground_truth
    }
}

impl EntropySource for EmulatedChip {
    fn read(&mut self, out: &mut Readout) -> Result<(), ReadFailed> {
        let sigma = self.noise_sigma;
        for (byte, cells) in out.iter_mut().zip(self.offsets.chunks_exact(8)) {
            let mut value = 0u8;
            for (k, pair) in cells.chunks_exact(2).enumerate() {
                let (z0, z1) = gaussian_pair(&mut self.noise);
                value |= u8::from(pair[0] + sigma * z0 > 0.0) << (2 * k);
                value |= u8::from(pair[1] + sigma * z1 > 0.0) << (2 * k + 1);
            }
            *byte = value;
        }
        Ok(())
    }
}

impl Drop for EmulatedChip {
    fn drop(&mut self) {
        self.offsets.zeroize();
        self.ground_truth.zeroize();
    }
}

impl fmt::Debug for EmulatedChip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatedChip")
            .field("conditions", &self.conditions)
            .field("noise_sigma", &self.noise_sigma)
            .finish_non_exhaustive()
    }
}
