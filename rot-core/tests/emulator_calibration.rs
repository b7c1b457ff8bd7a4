//! Statistical calibration of the emulated PUF against the published figures
//! documented in `rot_core::emulator`.
//!
//! Every chip and every noise stream is seeded deterministically, so these tests
//! are reproducible; the bounds are nevertheless chosen with at least 5 standard
//! errors of margin, so they would also hold for other seeds.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]
#![cfg(feature = "emulator")]

use std::sync::OnceLock;

use rot_core::emulator::{CORNERS, ChipSeed, ConditionsError, EmulatedChip, OperatingConditions};
use rot_core::entropy::{CELL_COUNT, EntropySource, Readout, cell};
use rot_core::extractor::ENROLMENT_READS;
use rot_core::hazmat::{fraction_of_ones, fractional_hamming_distance, read_majority};

/// Chips in the calibration fleet.
const CHIPS: u32 = 48;
/// Readouts per chip per corner.
const READS_PER_CORNER: usize = 2;
const MASTER: [u8; 32] = *b"oxroot emulator calibration fle!";

fn chip_seed(index: u32) -> ChipSeed {
    ChipSeed::derive_fleet(&MASTER, index)
}

/// A noise seed distinct for every (chip, purpose) pair.
fn noise_seed(chip: u32, purpose: u8) -> [u8; 32] {
    let mut seed = [0x5Au8; 32];
    seed[..4].copy_from_slice(&chip.to_le_bytes());
    seed[4] = purpose;
    seed
}

fn read(chip: &mut EmulatedChip) -> Readout {
    let mut out = [0u8; CELL_COUNT / 8];
    chip.read(&mut out).expect("the emulator never fails");
    out
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Standard error of the mean of independent samples.
fn standard_error(xs: &[f64]) -> f64 {
    let m = mean(xs);
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64;
    (var / xs.len() as f64).sqrt()
}

struct CornerStats {
    name: &'static str,
    conditions: OperatingConditions,
    /// Per chip: BER against the enrolment reference.
    ber: Vec<f64>,
    /// Per chip: BER against the emulator's ground truth.
    ber_truth: Vec<f64>,
}

struct Calibration {
    corners: Vec<CornerStats>,
    references: Vec<Readout>,
}

impl Calibration {
    fn corner(&self, name: &str) -> &CornerStats {
        self.corners
            .iter()
            .find(|c| c.name == name)
            .expect("corner exists")
    }
}

fn calibration() -> &'static Calibration {
    static CALIBRATION: OnceLock<Calibration> = OnceLock::new();
    CALIBRATION.get_or_init(|| {
        let mut corners: Vec<CornerStats> = CORNERS
            .iter()
            .map(|&(name, conditions)| CornerStats {
                name,
                conditions,
                ber: Vec::new(),
                ber_truth: Vec::new(),
            })
            .collect();
        let mut references = Vec::new();
        for index in 0..CHIPS {
            let seed = chip_seed(index);
            let mut enrol_chip =
                EmulatedChip::new(&seed, OperatingConditions::NOMINAL, noise_seed(index, 0));
            let reference = read_majority(&mut enrol_chip, ENROLMENT_READS).expect("read");
            let truth = enrol_chip.ground_truth_response();
            for (k, stats) in corners.iter_mut().enumerate() {
                let mut chip =
                    EmulatedChip::new(&seed, stats.conditions, noise_seed(index, 1 + k as u8));
                let (mut vs_ref, mut vs_truth) = (0.0, 0.0);
                for _ in 0..READS_PER_CORNER {
                    let readout = read(&mut chip);
                    vs_ref += fractional_hamming_distance(&readout, &reference);
                    vs_truth += fractional_hamming_distance(&readout, &truth);
                }
                stats.ber.push(vs_ref / READS_PER_CORNER as f64);
                stats.ber_truth.push(vs_truth / READS_PER_CORNER as f64);
            }
            references.push(reference);
        }
        for c in &corners {
            println!(
                "{:24} BER {:.4} (± {:.4})  vs truth {:.4}, predicted {:.4}",
                c.name,
                mean(&c.ber),
                standard_error(&c.ber),
                mean(&c.ber_truth),
                c.conditions.predicted_bit_error_rate()
            );
        }
        Calibration {
            corners,
            references,
        }
    })
}

#[test]
fn nominal_ber_is_three_percent() {
    let nominal = calibration().corner("nominal");
    let ber = mean(&nominal.ber);
    let se = standard_error(&nominal.ber);
    assert!((0.02..=0.04).contains(&ber), "nominal BER {ber}");
    assert!(
        5.0 * se < (ber - 0.02).min(0.04 - ber),
        "margin too small: BER {ber} ± {se}"
    );
}

#[test]
fn every_corner_is_within_the_fifteen_percent_design_point() {
    for c in &calibration().corners {
        let ber = mean(&c.ber);
        let se = standard_error(&c.ber);
        assert!(ber + 5.0 * se <= 0.15, "{}: BER {ber} ± {se}", c.name);
    }
}

#[test]
fn the_worst_corner_is_eleven_to_thirteen_percent() {
    let worst = calibration()
        .corners
        .iter()
        .map(|c| mean(&c.ber))
        .fold(0.0, f64::max);
    assert!((0.11..=0.13).contains(&worst), "worst corner BER {worst}");
}

#[test]
fn stressed_corners_are_worse_than_nominal() {
    let cal = calibration();
    let nominal = cal.corner("nominal");
    for c in cal.corners.iter().filter(|c| c.name != "nominal") {
        // Paired per-chip differences against the same reference.
        let diffs: Vec<f64> = c.ber.iter().zip(&nominal.ber).map(|(s, n)| s - n).collect();
        let d = mean(&diffs);
        let se = standard_error(&diffs);
        assert!(
            d > 5.0 * se,
            "{}: only {d} ± {se} worse than nominal",
            c.name
        );
    }
    let worse = |a: &str, b: &str| mean(&cal.corner(a).ber) > mean(&cal.corner(b).ber);
    assert!(worse("aged_10y", "aged_2y"));
    assert!(worse("worst_hot", "hot"));
    assert!(worse("worst_cold", "cold"));
    assert!(worse("worst_hot", "aged_10y"));
}

#[test]
fn two_years_of_ageing_add_about_nineteen_percent() {
    let cal = calibration();
    let nominal = cal.corner("nominal");
    let aged = cal.corner("aged_2y");
    let diffs: Vec<f64> = aged
        .ber
        .iter()
        .zip(&nominal.ber)
        .map(|(a, n)| a - n)
        .collect();
    let base = mean(&nominal.ber);
    let increase = mean(&diffs) / base;
    let se = standard_error(&diffs) / base;
    println!(
        "ageing after 2 years: +{:.1} % ± {:.1} %",
        100.0 * increase,
        100.0 * se
    );
    assert!(
        (increase - 0.19).abs() <= 0.08,
        "relative increase {increase}"
    );
    assert!(
        5.0 * se <= 0.08,
        "standard error {se} too large for the bound"
    );
}

#[test]
fn measured_error_rates_match_the_analytic_prediction() {
    // Against the ground truth, BER = arctan(σ_total)/π exactly (Sheppard).
    for c in &calibration().corners {
        let measured = mean(&c.ber_truth);
        let se = standard_error(&c.ber_truth);
        let predicted = f64::from(c.conditions.predicted_bit_error_rate());
        assert!(
            (measured - predicted).abs() <= 5.0 * se + 1e-3,
            "{}: measured {measured} ± {se}, predicted {predicted}",
            c.name
        );
    }
}

#[test]
fn uniformity_is_one_half() {
    let per_chip: Vec<f64> = calibration()
        .references
        .iter()
        .map(fraction_of_ones)
        .collect();
    let u = mean(&per_chip);
    let se = standard_error(&per_chip);
    println!("uniformity {u:.4} ± {se:.4}");
    assert!(
        5.0 * se <= 0.01,
        "standard error {se} too large for the bound"
    );
    assert!((u - 0.5).abs() <= 0.01, "uniformity {u}");
}

#[test]
fn inter_chip_distance_is_one_half() {
    let refs = &calibration().references;
    let n = refs.len();
    let mut total = 0.0;
    let mut pairs = 0u32;
    for i in 0..n {
        for j in i + 1..n {
            total += fractional_hamming_distance(&refs[i], &refs[j]);
            pairs += 1;
        }
    }
    let hd = total / f64::from(pairs);
    // Pairs share chips, so take the standard error over independent cells: the
    // mean pairwise distance of cell c is 2·k_c·(n − k_c) / (n·(n − 1)).
    let per_cell: Vec<f64> = (0..CELL_COUNT)
        .map(|c| {
            let k = refs.iter().map(|r| f64::from(cell(r, c))).sum::<f64>();
            let n = n as f64;
            2.0 * k * (n - k) / (n * (n - 1.0))
        })
        .collect();
    let se = standard_error(&per_cell);
    println!("inter-chip HD {hd:.4} ± {se:.4}");
    assert!((mean(&per_cell) - hd).abs() < 1e-9);
    assert!(
        5.0 * se <= 0.01,
        "standard error {se} too large for the bound"
    );
    assert!((hd - 0.5).abs() <= 0.01, "inter-chip HD {hd}");
}

#[test]
fn same_seeds_give_identical_readouts() {
    let seed = chip_seed(7);
    let conditions = OperatingConditions::new(85.0, 0.95, 3.0).expect("valid");
    let mut a = EmulatedChip::new(&seed, conditions, [1; 32]);
    let mut b = EmulatedChip::new(&ChipSeed::from_bytes(*seed.as_bytes()), conditions, [1; 32]);
    for _ in 0..3 {
        assert_eq!(read(&mut a), read(&mut b));
    }
    assert_eq!(chip_seed(7).as_bytes(), seed.as_bytes());
    assert_ne!(chip_seed(8).as_bytes(), seed.as_bytes());
}

#[test]
fn each_read_is_a_fresh_power_up() {
    let mut chip = EmulatedChip::new(&chip_seed(3), OperatingConditions::NOMINAL, [2; 32]);
    let first = read(&mut chip);
    let second = read(&mut chip);
    let hd = fractional_hamming_distance(&first, &second);
    assert!(hd > 0.0, "successive readouts identical");
    assert!(hd < 0.08, "successive readouts differ in {hd}");
}

#[test]
fn different_noise_seeds_differ_in_a_small_fraction_of_cells() {
    let seed = chip_seed(11);
    let a = read(&mut EmulatedChip::new(
        &seed,
        OperatingConditions::NOMINAL,
        [3; 32],
    ));
    let b = read(&mut EmulatedChip::new(
        &seed,
        OperatingConditions::NOMINAL,
        [4; 32],
    ));
    let hd = fractional_hamming_distance(&a, &b);
    // Two independent readouts disagree with probability ≈ √2·σ_n/π ≈ 3.7 %.
    assert!((0.01..=0.08).contains(&hd), "noise-only distance {hd}");
}

#[test]
fn different_chips_differ_in_about_half_the_cells() {
    let a = read(&mut EmulatedChip::new(
        &chip_seed(20),
        OperatingConditions::NOMINAL,
        [5; 32],
    ));
    let b = read(&mut EmulatedChip::new(
        &chip_seed(21),
        OperatingConditions::NOMINAL,
        [5; 32],
    ));
    let hd = fractional_hamming_distance(&a, &b);
    // One pair: standard deviation 0.5/√4096 ≈ 0.0078; the bound is ≥ 6σ.
    assert!((0.45..=0.55).contains(&hd), "inter-chip distance {hd}");
}

#[test]
fn ground_truth_is_the_nominal_noise_free_response() {
    let seed = chip_seed(30);
    let nominal = EmulatedChip::new(&seed, OperatingConditions::NOMINAL, [6; 32]);
    let hot = EmulatedChip::new(&seed, CORNERS[2].1, [6; 32]);
    // The ground truth is a property of the chip, not of the conditions.
    assert_eq!(nominal.ground_truth_response(), hot.ground_truth_response());
    let u = fraction_of_ones(&nominal.ground_truth_response());
    assert!((0.45..=0.55).contains(&u));
}

#[test]
fn invalid_conditions_are_rejected() {
    let cases = [
        (-40.1, 1.0, 0.0, ConditionsError::Temperature),
        (125.1, 1.0, 0.0, ConditionsError::Temperature),
        (f32::NAN, 1.0, 0.0, ConditionsError::Temperature),
        (25.0, 0.79, 0.0, ConditionsError::Supply),
        (25.0, 1.21, 0.0, ConditionsError::Supply),
        (25.0, f32::NAN, 0.0, ConditionsError::Supply),
        (25.0, 1.0, -0.1, ConditionsError::Age),
        (25.0, 1.0, 20.1, ConditionsError::Age),
        (25.0, 1.0, f32::INFINITY, ConditionsError::Age),
    ];
    for (t, v, y, expected) in cases {
        assert_eq!(
            OperatingConditions::new(t, v, y),
            Err(expected),
            "{t} {v} {y}"
        );
    }
    for (t, v, y) in [(-40.0, 0.8, 0.0), (125.0, 1.2, 20.0), (25.0, 1.0, 0.0)] {
        assert!(OperatingConditions::new(t, v, y).is_ok(), "{t} {v} {y}");
    }
    assert_eq!(
        OperatingConditions::new(25.0, 1.0, 0.0),
        Ok(OperatingConditions::NOMINAL)
    );
    assert!(!ConditionsError::Supply.to_string().is_empty());
}

#[test]
fn corners_are_valid_and_include_the_required_ones() {
    for (name, c) in CORNERS {
        assert_eq!(
            OperatingConditions::new(c.temperature_c(), c.supply(), c.age_years()),
            Ok(c),
            "{name}"
        );
    }
    for name in [
        "nominal",
        "cold",
        "hot",
        "aged_10y",
        "worst_cold",
        "worst_hot",
    ] {
        assert!(CORNERS.iter().any(|(n, _)| *n == name), "{name} missing");
    }
}

#[test]
fn debug_output_does_not_reveal_the_seed() {
    let bytes: [u8; 32] = core::array::from_fn(|i| 0xC0 ^ i as u8);
    let seed = ChipSeed::from_bytes(bytes);
    let debug = format!("{seed:?}");
    assert!(debug.contains("redacted"), "{debug}");
    assert!(!debug.contains(&format!("{bytes:?}")));
    assert!(!debug.to_lowercase().contains(&hex::encode(bytes)));
    assert!(!debug.contains("192"), "{debug}"); // 0xC0, the first byte, in decimal
    let chip = EmulatedChip::new(&seed, OperatingConditions::NOMINAL, [0; 32]);
    let chip_debug = format!("{chip:?}");
    assert!(!chip_debug.contains("offsets") && !chip_debug.contains(&hex::encode(bytes)));
}

/// Fraction of chips whose cell reads 1 in its noise-free response, per column.
fn ones_by_column(bias: rot_core::emulator::Bias, chips: u32) -> [f64; 64] {
    let mut ones = [0u32; 64];
    for index in 0..chips {
        let chip = EmulatedChip::with_bias(
            &chip_seed(1000 + index),
            OperatingConditions::NOMINAL,
            noise_seed(index, 99),
            bias,
        );
        let truth = chip.ground_truth_response();
        for cell_index in 0..CELL_COUNT {
            ones[cell_index % 64] += u32::from(cell(&truth, cell_index));
        }
    }
    ones.map(|count| f64::from(count) / f64::from(chips * 64))
}

#[test]
fn a_uniform_bias_sets_every_cells_probability_of_one() {
    use rot_core::emulator::Bias;
    // 32 chips × 4,096 cells: standard error 0.0019; 5 standard errors of margin.
    let by_column = ones_by_column(Bias::uniform(0.6).expect("valid"), 32);
    let mean = by_column.iter().sum::<f64>() / 64.0;
    assert!((mean - 0.6).abs() < 0.01, "P(1) {mean}");
    assert!((Bias::uniform(0.6).expect("valid").p_one(17) - 0.6).abs() < 1e-12);
    assert!(Bias::uniform(1.0).is_err() && Bias::gradient(0.5, f64::NAN).is_err());
}

#[test]
fn a_gradient_runs_from_the_left_column_to_the_right() {
    use rot_core::emulator::Bias;
    let bias = Bias::gradient(0.4, 0.6).expect("valid");
    let by_column = ones_by_column(bias, 32);
    // 8 columns × 64 rows × 32 chips per side: standard error 0.008.
    let left = by_column[..8].iter().sum::<f64>() / 8.0;
    let right = by_column[56..].iter().sum::<f64>() / 8.0;
    let (want_left, want_right) = (
        (0..8).map(|c| bias.p_one(c)).sum::<f64>() / 8.0,
        (56..64).map(|c| bias.p_one(c)).sum::<f64>() / 8.0,
    );
    assert!(
        (left - want_left).abs() < 0.04,
        "left {left} vs {want_left}"
    );
    assert!(
        (right - want_right).abs() < 0.04,
        "right {right} vs {want_right}"
    );
}

#[test]
fn no_bias_is_the_unbiased_chip_bit_for_bit() {
    use rot_core::emulator::Bias;
    let seed = chip_seed(5);
    let mut plain = EmulatedChip::new(&seed, OperatingConditions::NOMINAL, noise_seed(5, 1));
    let mut none = EmulatedChip::with_bias(
        &seed,
        OperatingConditions::NOMINAL,
        noise_seed(5, 1),
        Bias::NONE,
    );
    assert_eq!(plain.ground_truth_response(), none.ground_truth_response());
    assert_eq!(read(&mut plain), read(&mut none));
    let biased = EmulatedChip::with_bias(
        &seed,
        OperatingConditions::NOMINAL,
        noise_seed(5, 1),
        Bias::uniform(0.55).expect("valid"),
    );
    assert_ne!(
        plain.ground_truth_response(),
        biased.ground_truth_response()
    );
}
