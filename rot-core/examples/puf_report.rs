//! Measures the emulated silicon and the fuzzy extractor, and prints the figures.
//!
//! ```text
//! cargo run --release -p rot-core --example puf_report -- --chips 200 --json
//! ```
//!
//! Options: `--chips N` (default 200), `--mc-trials N` (default 4000),
//! `--mc-ber P` (default 0.23), `--timing-runs N` (default 300), `--json` (print
//! only the JSON object). The last line is always one JSON object.

use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rot_core::emulator::{CORNERS, ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{
    ENROLMENT_READS, EnrolMode,
    analysis::{binomial_pmf, key_failure_rate},
    enrol, enrol_from_reference, reconstruct, reconstruct_from_readout,
};
use rot_core::hazmat::{
    self, CELL_COUNT, READOUT_BYTES, Readout, fraction_of_ones, fractional_hamming_distance,
};
use rot_core::helper_data::HELPER_DATA_BYTES;
use serde_json::{Map, Value, json};

/// Every chip in the report comes from this fleet master, so runs are reproducible.
const FLEET_MASTER: [u8; 32] = *b"oxroot puf_report fleet master!!";

struct Options {
    chips: u32,
    mc_trials: u32,
    mc_ber: f64,
    timing_runs: usize,
    json_only: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        chips: 200,
        mc_trials: 4000,
        mc_ber: 0.23,
        timing_runs: 300,
        json_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--chips" => options.chips = parse(&value("--chips")?, "--chips")?,
            "--mc-trials" => options.mc_trials = parse(&value("--mc-trials")?, "--mc-trials")?,
            "--mc-ber" => options.mc_ber = parse(&value("--mc-ber")?, "--mc-ber")?,
            "--timing-runs" => {
                options.timing_runs = parse(&value("--timing-runs")?, "--timing-runs")?;
            }
            "--json" => options.json_only = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.chips < 2 {
        return Err("--chips must be at least 2 (inter-chip distance needs pairs)".into());
    }
    if !(0.0..0.5).contains(&options.mc_ber) {
        return Err("--mc-ber must be in [0, 0.5)".into());
    }
    Ok(options)
}

fn parse<T: std::str::FromStr>(text: &str, name: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{name}: cannot parse {text:?}"))
}

fn noise_seed(chip: u32, purpose: u32) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&chip.to_le_bytes());
    seed[4..8].copy_from_slice(&purpose.to_le_bytes());
    seed
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("puf_report: {message}");
            std::process::exit(2);
        }
    };
    let chips: Vec<ChipSeed> = (0..options.chips)
        .map(|i| ChipSeed::derive_fleet(&FLEET_MASTER, i))
        .collect();

    // Enrolment references: per-cell majority of 5 nominal power-ups, as `enrol` does.
    let references: Vec<Readout> = chips
        .iter()
        .zip(0..)
        .map(|(chip, index)| {
            let mut source =
                EmulatedChip::new(chip, OperatingConditions::NOMINAL, noise_seed(index, 0));
            hazmat::read_majority(&mut source, ENROLMENT_READS).expect("emulator never fails")
        })
        .collect();

    let uniformity = references.iter().map(fraction_of_ones).sum::<f64>() / references.len() as f64;
    let inter_chip_hd = mean_pairwise_distance(&references);
    let min_entropy_per_cell = min_entropy_per_cell(&references);
    let min_entropy_if_unbiased = unbiased_estimator_expectation(references.len());
    let intra = intra_chip_ber(&chips, &references);
    let key_failure: Map<String, Value> = [0.10, 0.15, 0.18, 0.20]
        .iter()
        .map(|&ber| {
            (
                format!("{ber:.2}"),
                json!(key_failure_rate(rot_core::extractor::Construction::V1, ber)),
            )
        })
        .collect();
    let mc = monte_carlo(&references, options.mc_ber, options.mc_trials);
    let reconstruct_us_median = reconstruct_timing(&chips[0], options.timing_runs);

    if !options.json_only {
        println!(
            "oxroot PUF report: {} emulated chips (64 × 64 oxide-tunnelling cells)",
            options.chips
        );
        println!("  uniformity            {uniformity:.4}   (goal 0.50 ± 0.01)");
        println!("  inter-chip HD         {inter_chip_hd:.4}   (goal 0.50 ± 0.01)");
        println!(
            "  min-entropy per cell  {min_entropy_per_cell:.4} bits (plug-in over {} chips; unbiased cells would score {min_entropy_if_unbiased:.4})",
            options.chips
        );
        println!("  intra-chip BER vs enrolment reference:");
        for (name, ber) in &intra {
            println!("    {name:<14} {:.4}", ber.as_f64().unwrap_or(f64::NAN));
        }
        println!("  helper data           {HELPER_DATA_BYTES} bytes");
        println!("  key failure rate (analytic, i.i.d. bit errors):");
        for (ber, rate) in &key_failure {
            println!(
                "    BER {ber}       {:.2e}",
                rate.as_f64().unwrap_or(f64::NAN)
            );
        }
        println!(
            "  Monte Carlo at BER {:.2}: {} failures in {} reconstructions, {:.1} predicted (z = {:.2})",
            options.mc_ber, mc.failures, mc.trials, mc.predicted, mc.z
        );
        println!("  read + decode + derive ESK: {reconstruct_us_median:.0} µs median");
    }
    let report = json!({
        "chips": options.chips,
        "uniformity": uniformity,
        "inter_chip_hd": inter_chip_hd,
        "intra_chip_ber": intra,
        "min_entropy_per_cell": min_entropy_per_cell,
        "min_entropy_per_cell_if_unbiased": min_entropy_if_unbiased,
        "helper_data_bytes": HELPER_DATA_BYTES,
        "key_failure_rate": key_failure,
        "mc": {
            "ber": options.mc_ber,
            "trials": mc.trials,
            "failures": mc.failures,
            "predicted": mc.predicted,
            "predicted_rate": mc.predicted_rate,
            "z": mc.z,
        },
        "reconstruct_us_median": reconstruct_us_median,
    });
    println!("{report}");
}

fn mean_pairwise_distance(references: &[Readout]) -> f64 {
    let (mut total, mut pairs) = (0.0, 0u64);
    for (i, a) in references.iter().enumerate() {
        for b in &references[i + 1..] {
            total += fractional_hamming_distance(a, b);
            pairs += 1;
        }
    }
    total / pairs as f64
}

/// Mean over cell positions of −log2(max(p, 1 − p)), p = share of chips whose
/// cell is 1. A plug-in estimator: with few chips, sampling noise alone pulls
/// it below 1 (about 0.94 at 200 chips for perfectly unbiased cells).
fn min_entropy_per_cell(references: &[Readout]) -> f64 {
    let chips = references.len() as f64;
    (0..CELL_COUNT)
        .map(|cell| {
            let ones = references
                .iter()
                .filter(|r| hazmat::cell(r, cell) == 1)
                .count() as f64;
            let p = ones / chips;
            -p.max(1.0 - p).log2()
        })
        .sum::<f64>()
        / CELL_COUNT as f64
}

/// What [`min_entropy_per_cell`] returns on average for perfectly unbiased
/// cells at this chip count: E[−log2 max(p̂, 1 − p̂)], p̂ ~ Binomial(chips, ½) / chips.
/// A measured value near this one means no bias is detectable.
fn unbiased_estimator_expectation(chips: usize) -> f64 {
    binomial_pmf(chips, 0.5)
        .enumerate()
        .map(|(ones, probability)| {
            let p = ones as f64 / chips as f64;
            probability * -p.max(1.0 - p).log2()
        })
        .sum()
}

fn intra_chip_ber(chips: &[ChipSeed], references: &[Readout]) -> Map<String, Value> {
    CORNERS
        .iter()
        .zip(1..)
        .map(|((name, conditions), purpose)| {
            let mean = chips
                .iter()
                .zip(references)
                .zip(0..)
                .map(|((chip, reference), index)| {
                    let mut source =
                        EmulatedChip::new(chip, *conditions, noise_seed(index, purpose));
                    let mut readout = [0u8; READOUT_BYTES];
                    rot_core::EntropySource::read(&mut source, &mut readout)
                        .expect("emulator never fails");
                    fractional_hamming_distance(&readout, reference)
                })
                .sum::<f64>()
                / chips.len() as f64;
            ((*name).to_string(), json!(mean))
        })
        .collect()
}

struct MonteCarlo {
    trials: u32,
    failures: u32,
    predicted: f64,
    predicted_rate: f64,
    z: f64,
}

/// Real reconstructions of enrolled chips from readouts with i.i.d. bit errors
/// at `ber`, the model the analytic rate assumes, so the two must agree.
fn monte_carlo(references: &[Readout], ber: f64, trials: u32) -> MonteCarlo {
    let mut rng = ChaCha20Rng::from_seed(*b"oxroot puf_report monte carlo!!!");
    let threshold = (ber * f64::from(u32::MAX)) as u32;
    let enrolments: Vec<_> = references.iter().map(enrol_from_reference).collect();
    let mut failures = 0;
    for trial in 0..trials {
        let index = trial as usize % references.len();
        let mut noisy = references[index];
        for cell in 0..CELL_COUNT {
            if rng.next_u32() < threshold {
                noisy[cell / 8] ^= 1 << (cell % 8);
            }
        }
        if reconstruct_from_readout(&noisy, &enrolments[index].helper_data).is_err() {
            failures += 1;
        }
    }
    let predicted_rate = key_failure_rate(rot_core::extractor::Construction::V1, ber);
    let predicted = predicted_rate * f64::from(trials);
    let sd = (predicted * (1.0 - predicted_rate))
        .sqrt()
        .max(f64::MIN_POSITIVE);
    MonteCarlo {
        trials,
        failures,
        predicted,
        predicted_rate,
        z: (f64::from(failures) - predicted) / sd,
    }
}

/// Median time of one power-up read + reconstruction + ESK derivation.
fn reconstruct_timing(chip: &ChipSeed, runs: usize) -> f64 {
    let mut source = EmulatedChip::new(chip, OperatingConditions::NOMINAL, [0x71; 32]);
    let helper = enrol(&mut source, None, EnrolMode::FirstEnrolment)
        .expect("enrols")
        .helper_data;
    let mut samples: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            let seeds = reconstruct(&mut source, &helper).expect("nominal reconstruction");
            let key = seeds.enrolment_key();
            std::hint::black_box(key.public_key());
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
