//! Measures the emulated silicon and both fuzzy-extractor constructions, and
//! prints every figure the README quotes.
//!
//! ```text
//! cargo run --release -p rot-core --example puf_report                 # ~1 minute
//! cargo run --release -p rot-core --example puf_report -- --json       # only the JSON line
//! cargo run --release -p rot-core --example puf_report -- --entropy-chips 50000 --mc-trials 40000
//! ```
//!
//! Options: `--chips N` (unbiased fleet for uniformity, distance and BER;
//! default 200), `--entropy-chips N` (chips per fleet for the NIST SP 800-90B
//! most-common-value estimate; default 5000), `--biased-chips N` (chips per
//! biased fleet for enrolment yield and the gradient bound; default 300),
//! `--mc-trials N` (real reconstructions per Monte Carlo point; default 4000),
//! `--rule-trials N` (decoder-rule checks; default 2000), `--timing-runs N`
//! (default 300), `--json`. The last line is always one JSON object.
//!
//! # How the failure figures are checked
//!
//! The analytic failure rates are exact sums under independent bit errors.
//! Monte Carlo cannot observe 1e-10 directly, so the report checks the model
//! two ways, both with the real decoder:
//!
//! 1. **End to end where failures are observable.** Real readouts with i.i.d.
//!    flips at 25 % and 23 % (construction 2) and 23 % (construction 1), real
//!    reconstructions, failures counted; the analytic rate must fall within
//!    the 99 % confidence interval.
//! 2. **The decoder rule, at the boundary.** The analytic model for
//!    construction 2 rests on one claim: a readout reconstructs exactly when
//!    some filling of the ties leaves at most t = 20 wrong group decisions
//!    (errors + Σ_c min(ones_c, zeros_c) over the four tie classes). The
//!    report builds readouts with chosen numbers of wrong groups and ties
//!    around that boundary, runs the real reconstruction, and counts how often
//!    it agrees with the rule (it must be every time). With the rule exact,
//!    the failure probability at any BER is the exact sum over the binomial
//!    probabilities of those counts: the 20 % figure needs no sampling.
#![allow(clippy::expect_used, reason = "a report fails loudly")]

use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rot_core::bch;
use rot_core::debias::{GROUPS as V2_GROUPS, Layout, LayoutError};
use rot_core::emulator::{Bias, CORNERS, ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::analysis::{
    binomial_pmf, key_failure_rate, v1_min_entropy, v2_min_entropy, v2_min_entropy_for_layout,
};
use rot_core::extractor::v2::TIE_CLASSES;
use rot_core::extractor::{
    Construction, ENROLMENT_READS, EnrolError, EnrolMode, enrol_from_reference_with, enrol_with,
    reconstruct, reconstruct_from_readout,
};
use rot_core::hazmat::{
    self, CELL_COUNT, READOUT_BYTES, Readout, fraction_of_ones, fractional_hamming_distance,
};
use serde_json::{Map, Value, json};

/// Every chip in the report comes from this fleet master, so runs are reproducible.
const FLEET_MASTER: [u8; 32] = *b"oxroot puf_report fleet master!!";
const BERS: [f64; 3] = [0.15, 0.20, 0.25];
const BIASES: [f64; 3] = [0.50, 0.55, 0.60];
/// z for a two-sided 99 % interval (also SP 800-90B's MCV bound).
const Z99: f64 = 2.576;

struct Options {
    chips: u32,
    entropy_chips: u32,
    biased_chips: u32,
    mc_trials: u32,
    rule_trials: u32,
    timing_runs: usize,
    json_only: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        chips: 200,
        entropy_chips: 5000,
        biased_chips: 300,
        mc_trials: 4000,
        rule_trials: 2000,
        timing_runs: 300,
        json_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--chips" => options.chips = parse(&value("--chips")?, "--chips")?,
            "--entropy-chips" => {
                options.entropy_chips = parse(&value("--entropy-chips")?, "--entropy-chips")?;
            }
            "--biased-chips" => {
                options.biased_chips = parse(&value("--biased-chips")?, "--biased-chips")?;
            }
            "--mc-trials" => options.mc_trials = parse(&value("--mc-trials")?, "--mc-trials")?,
            "--rule-trials" => {
                options.rule_trials = parse(&value("--rule-trials")?, "--rule-trials")?;
            }
            "--timing-runs" => {
                options.timing_runs = parse(&value("--timing-runs")?, "--timing-runs")?;
            }
            "--json" => options.json_only = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.chips < 2 || options.entropy_chips < 2 || options.biased_chips < 1 {
        return Err("--chips and --entropy-chips must be at least 2".into());
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

/// Enrolment references (per-cell majority of 5 nominal power-ups, as `enrol`
/// does) of chips `first..first + count` of the report's fleet, made with `bias`.
fn references(first: u32, count: u32, bias: Bias) -> Vec<Readout> {
    (first..first + count)
        .map(|index| {
            let chip = ChipSeed::derive_fleet(&FLEET_MASTER, index);
            let mut source = EmulatedChip::with_bias(
                &chip,
                OperatingConditions::NOMINAL,
                noise_seed(index, 0),
                bias,
            );
            hazmat::read_majority(&mut source, ENROLMENT_READS).expect("emulator never fails")
        })
        .collect()
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("puf_report: {message}");
            std::process::exit(2);
        }
    };
    let mut out = Report {
        json: Map::new(),
        quiet: options.json_only,
    };
    out.line(&format!(
        "oxroot PUF report ({} emulated chips of 64 × 64 oxide-tunnelling cells)",
        options.chips
    ));

    // --- The silicon ------------------------------------------------------
    let chips: Vec<ChipSeed> = (0..options.chips)
        .map(|i| ChipSeed::derive_fleet(&FLEET_MASTER, i))
        .collect();
    let unbiased = references(0, options.chips, Bias::NONE);
    let uniformity = unbiased.iter().map(fraction_of_ones).sum::<f64>() / unbiased.len() as f64;
    let inter_chip_hd = mean_pairwise_distance(&unbiased);
    out.line(&format!(
        "  uniformity            {uniformity:.4}   (goal 0.50 ± 0.01)"
    ));
    out.line(&format!(
        "  inter-chip HD         {inter_chip_hd:.4}   (goal 0.50 ± 0.01)"
    ));
    let intra = intra_chip_ber(&chips, &unbiased);
    out.line("  intra-chip BER vs enrolment reference:");
    for (name, ber) in &intra {
        out.line(&format!(
            "    {name:<24} {:.4}",
            ber.as_f64().unwrap_or(f64::NAN)
        ));
    }
    out.set("chips", json!(options.chips));
    out.set("uniformity", json!(uniformity));
    out.set("inter_chip_hd", json!(inter_chip_hd));
    out.set("intra_chip_ber", Value::Object(intra));

    cell_min_entropy(&options, &unbiased, &mut out);

    // --- Conditional min-entropy of the master ------------------------------
    out.line("  min-entropy of the master given the helper data (exact, independent cells):");
    let mut master = Map::new();
    for p in BIASES {
        let (v1, v2) = (v1_min_entropy(p), v2_min_entropy(p));
        out.line(&format!(
            "    P(1) = {p:.2}: construction 1 {v1:>6.1} bits, construction 2 {v2:>6.1} bits (goal ≥ 128)"
        ));
        master.insert(format!("{p:.2}"), json!({"v1": v1, "v2": v2}));
    }
    out.set("master_min_entropy", Value::Object(master));
    biased_fleets(&options, &mut out);

    reliability(&options, &unbiased, &mut out);

    // --- Time ---------------------------------------------------------------
    let mut timing = Map::new();
    for construction in [Construction::V1, Construction::V2] {
        let micros = reconstruct_timing(&chips[0], construction, options.timing_runs);
        out.line(&format!(
            "  read + decode + derive ESK, construction {construction}: {micros:.0} µs median"
        ));
        timing.insert(format!("v{}", construction.number()), json!(micros));
    }
    out.set("reconstruct_us_median", Value::Object(timing));
    println!("{}", Value::Object(out.json));
}

/// Per-cell min-entropy: the plug-in estimate and its small-sample bias, and
/// SP 800-90B's most-common-value estimate over many chips, unbiased and biased.
fn cell_min_entropy(options: &Options, unbiased: &[Readout], out: &mut Report) {
    // --- Per-cell min-entropy ---------------------------------------------
    out.line("  per-cell min-entropy (bits per cell):");
    let plug_in = plug_in_min_entropy(unbiased);
    let plug_in_unbiased = expected_for_unbiased(unbiased.len(), plug_in_estimate);
    out.line(&format!(
        "    plug-in max(p̂, 1−p̂), {} chips: {plug_in:.4}; perfectly unbiased cells score {plug_in_unbiased:.4} at this sample size (the old 0.92 figure was this small-sample bias, not bias of the cells)",
        options.chips
    ));
    let mut entropy = Map::new();
    entropy.insert(
        "plug_in".into(),
        json!({"chips": options.chips, "mean": plug_in, "if_unbiased": plug_in_unbiased}),
    );
    for (name, bias) in [
        ("unbiased", Bias::NONE),
        ("p055", Bias::uniform(0.55).expect("valid")),
    ] {
        let fleet = references(100_000, options.entropy_chips, bias);
        let mcv = mcv_per_cell(&fleet);
        let pooled = mcv_pooled(&fleet);
        let ideal = expected_for_unbiased(fleet.len(), mcv_estimate);
        out.line(&format!(
            "    SP 800-90B MCV per cell, {} chips, {name}: mean {:.4}, min {:.4} (perfectly unbiased cells: {ideal:.4}); pooled over all {} samples: {pooled:.4}",
            fleet.len(),
            mcv.0,
            mcv.1,
            fleet.len() * CELL_COUNT
        ));
        entropy.insert(
            format!("mcv_{name}"),
            json!({"chips": fleet.len(), "per_cell_mean": mcv.0, "per_cell_min": mcv.1,
                   "per_cell_if_unbiased": ideal, "pooled": pooled}),
        );
    }
    out.set("min_entropy_per_cell", Value::Object(entropy));
}

/// Key failure, analytic and by Monte Carlo with the real decoder.
fn reliability(options: &Options, unbiased: &[Readout], out: &mut Report) {
    // --- Reliability -------------------------------------------------------
    out.line("  key failure rate, analytic (i.i.d. bit errors):");
    let mut failure = Map::new();
    for ber in BERS {
        let (v1, v2) = (
            key_failure_rate(Construction::V1, ber),
            key_failure_rate(Construction::V2, ber),
        );
        out.line(&format!(
            "    BER {ber:.2}: construction 1 {v1:.2e}, construction 2 {v2:.2e}"
        ));
        failure.insert(format!("{ber:.2}"), json!({"v1": v1, "v2": v2}));
    }
    out.set("key_failure_rate", Value::Object(failure));
    out.line(&format!(
        "  helper data: construction 1 {} bytes, construction 2 {} bytes",
        Construction::V1.helper_data_bytes(),
        Construction::V2.helper_data_bytes()
    ));

    let mut monte_carlo = Vec::new();
    for (construction, ber) in [
        (Construction::V2, 0.25),
        (Construction::V2, 0.23),
        (Construction::V1, 0.23),
    ] {
        let mc = end_to_end(unbiased, construction, ber, options.mc_trials);
        out.line(&format!(
            "  Monte Carlo, construction {construction} at BER {ber:.2}: {} failures in {} real reconstructions; analytic {:.1} (99 % interval {:.0}–{:.0}): {}",
            mc.failures,
            mc.trials,
            mc.predicted,
            mc.low,
            mc.high,
            if mc.agrees { "agree" } else { "DISAGREE" }
        ));
        monte_carlo.push(json!({
            "construction": construction.number(), "ber": ber, "trials": mc.trials,
            "failures": mc.failures, "predicted": mc.predicted, "interval_99": [mc.low, mc.high],
            "agrees": mc.agrees,
        }));
    }
    out.set("monte_carlo", Value::Array(monte_carlo));
    let rule = decoder_rule_check(&unbiased[0], options.rule_trials);
    out.line(&format!(
        "  decoder rule at the boundary (construction 2): the real decoder agreed with the analytic rule in {}/{} readouts ({} reconstructed, {} failed)",
        rule.agreed, rule.trials, rule.successes, rule.trials - rule.successes
    ));
    out.set(
        "decoder_rule_check",
        json!({"trials": rule.trials, "agreed": rule.agreed, "successes": rule.successes}),
    );
}

/// Text lines (unless `--json`) and the JSON object printed last.
struct Report {
    json: Map<String, Value>,
    quiet: bool,
}

impl Report {
    fn line(&self, text: &str) {
        if !self.quiet {
            println!("{text}");
        }
    }
    fn set(&mut self, key: &str, value: Value) {
        self.json.insert(key.into(), value);
    }
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

fn ones_per_cell(references: &[Readout]) -> Vec<usize> {
    let mut ones = vec![0usize; CELL_COUNT];
    for reference in references {
        for (cell, count) in ones.iter_mut().enumerate() {
            *count += usize::from(hazmat::cell(reference, cell));
        }
    }
    ones
}

/// −log2 max(p̂, 1 − p̂): the plug-in estimate from `ones` of `n`.
fn plug_in_estimate(ones: usize, n: usize) -> f64 {
    let p = ones.max(n - ones) as f64 / n as f64;
    -p.log2()
}

/// NIST SP 800-90B §6.3.1, most common value: p_u = min(1, p̂ + 2.576·√(p̂(1 − p̂)/(n − 1))),
/// min-entropy −log2 p_u.
fn mcv_estimate(ones: usize, n: usize) -> f64 {
    let p = ones.max(n - ones) as f64 / n as f64;
    let upper = (p + Z99 * (p * (1.0 - p) / (n as f64 - 1.0)).sqrt()).min(1.0);
    -upper.log2()
}

/// Mean over cell positions of the plug-in estimate over chips.
fn plug_in_min_entropy(references: &[Readout]) -> f64 {
    let n = references.len();
    ones_per_cell(references)
        .iter()
        .map(|&ones| plug_in_estimate(ones, n))
        .sum::<f64>()
        / CELL_COUNT as f64
}

/// Per-cell MCV over chips: (mean, min) over the 4,096 cell positions.
fn mcv_per_cell(references: &[Readout]) -> (f64, f64) {
    let n = references.len();
    let estimates: Vec<f64> = ones_per_cell(references)
        .iter()
        .map(|&ones| mcv_estimate(ones, n))
        .collect();
    let mean = estimates.iter().sum::<f64>() / estimates.len() as f64;
    (
        mean,
        estimates.iter().copied().fold(f64::INFINITY, f64::min),
    )
}

/// MCV over every cell of every chip as one sequence of bits.
fn mcv_pooled(references: &[Readout]) -> f64 {
    let ones: usize = references
        .iter()
        .map(|r| r.iter().map(|b| b.count_ones() as usize).sum::<usize>())
        .sum();
    mcv_estimate(ones, references.len() * CELL_COUNT)
}

/// What an estimator returns on average for perfectly unbiased cells with `n`
/// chips: Σ_k P[Binomial(n, ½) = k]·estimate(k, n). A measured value near it
/// means no bias is detectable at this sample size.
fn expected_for_unbiased(n: usize, estimate: fn(usize, usize) -> f64) -> f64 {
    binomial_pmf(n, 0.5)
        .enumerate()
        .map(|(ones, probability)| probability * estimate(ones, n))
        .sum()
}

/// Biased fleets: how many chips enrol in construction 2, the helper-data
/// stream they use, and the exact min-entropy of their layouts under a gradient.
fn biased_fleets(options: &Options, out: &mut Report) {
    let gradient = Bias::gradient(0.45, 0.55).expect("valid");
    let mut fleets = Map::new();
    out.line(&format!(
        "  biased fleets ({} chips each), construction 2:",
        options.biased_chips
    ));
    for (name, bias) in [
        ("p050", Bias::NONE),
        ("p055", Bias::uniform(0.55).expect("valid")),
        ("p058", Bias::uniform(0.58).expect("valid")),
        ("p060", Bias::uniform(0.60).expect("valid")),
        ("gradient_045_055", gradient),
    ] {
        let fleet = references(200_000, options.biased_chips, bias);
        let mut enrolled = 0u32;
        let mut too_few = 0usize;
        let mut worst_bound = f64::INFINITY;
        let mut stream_bits = 0;
        let mut ones = 0.0;
        for reference in &fleet {
            ones += fraction_of_ones(reference);
            let enrolment = enrol_from_reference_with(reference, Construction::V2);
            if let Err(EnrolError::TooBiased(LayoutError::TooFewBalancedCells)) = enrolment {
                too_few += 1;
            }
            if let Ok(enrolment) = enrolment {
                enrolled += 1;
                let layout: Layout = enrolment.helper_data.debias_layout().expect("version 2");
                stream_bits = stream_bits.max(layout.stream_bits());
                let bound = v2_min_entropy_for_layout(&layout, |cell| bias.p_one(cell));
                worst_bound = worst_bound.min(bound);
            }
        }
        let yield_share = f64::from(enrolled) / fleet.len() as f64;
        let measured_ones = ones / fleet.len() as f64;
        out.line(&format!(
            "    {name:<18} measured P(1) {measured_ones:.3}: {enrolled}/{} enrol ({:.1} %; {too_few} short of balanced cells, {} helper overflow); exact min-entropy of the worst layout under this bias {worst_bound:.1} bits; helper stream up to {stream_bits} of {} bits",
            fleet.len(),
            100.0 * yield_share,
            fleet.len() - enrolled as usize - too_few,
            rot_core::debias::STREAM_BYTES * 8,
        ));
        fleets.insert(
            name.into(),
            json!({"chips": fleet.len(), "measured_p_one": measured_ones, "enrolled": enrolled,
                   "refused_too_few_balanced": too_few,
                   "min_entropy_worst_layout": if enrolled > 0 { json!(worst_bound) } else { Value::Null },
                   "max_stream_bits": stream_bits}),
        );
    }
    out.set("biased_fleets", Value::Object(fleets));
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
    low: f64,
    high: f64,
    agrees: bool,
}

fn flip_cells(reference: &Readout, ber: f64, rng: &mut ChaCha20Rng) -> Readout {
    let threshold = (ber * f64::from(u32::MAX)) as u32;
    let mut noisy = *reference;
    for cell in 0..CELL_COUNT {
        if rng.next_u32() < threshold {
            noisy[cell / 8] ^= 1 << (cell % 8);
        }
    }
    noisy
}

/// Real reconstructions of enrolled chips from readouts with i.i.d. bit errors
/// at `ber`, the model the analytic rate assumes. Agreement: the analytic
/// expectation lies in the exact 99 % binomial acceptance interval around it.
fn end_to_end(
    references: &[Readout],
    construction: Construction,
    ber: f64,
    trials: u32,
) -> MonteCarlo {
    let mut rng = ChaCha20Rng::from_seed(*b"oxroot puf_report monte carlo!!!");
    let enrolments: Vec<_> = references
        .iter()
        .filter_map(|r| enrol_from_reference_with(r, construction).ok())
        .collect();
    let mut failures = 0;
    for trial in 0..trials {
        let index = trial as usize % enrolments.len();
        let noisy = flip_cells(&references[index], ber, &mut rng);
        if reconstruct_from_readout(&noisy, &enrolments[index].helper_data).is_err() {
            failures += 1;
        }
    }
    let rate = key_failure_rate(construction, ber);
    let predicted = rate * f64::from(trials);
    // The 0.5 % and 99.5 % quantiles of Binomial(trials, rate).
    let mut cumulative = 0.0;
    let (mut low, mut high) = (None, None);
    for (k, p) in binomial_pmf(trials as usize, rate).enumerate() {
        cumulative += p;
        if low.is_none() && cumulative >= 0.005 {
            low = Some(k as f64);
        }
        if high.is_none() && cumulative >= 0.995 {
            high = Some(k as f64);
        }
    }
    let (low, high) = (low.unwrap_or(0.0), high.unwrap_or(f64::from(trials)));
    MonteCarlo {
        trials,
        failures,
        predicted,
        low,
        high,
        agrees: (low..=high).contains(&f64::from(failures)),
    }
}

struct RuleCheck {
    trials: u32,
    agreed: u32,
    successes: u32,
}

/// Builds readouts with a chosen number of wrong group decisions and ties,
/// around the decoder's limit, and checks that the real reconstruction
/// succeeds exactly when the analytic rule says it should.
fn decoder_rule_check(reference: &Readout, trials: u32) -> RuleCheck {
    let enrolment = enrol_from_reference_with(reference, Construction::V2).expect("enrols");
    let layout = enrolment.helper_data.debias_layout().expect("version 2");
    let t = bch::V2.t();
    let secret: Vec<u8> = (0..V2_GROUPS)
        .map(|group| {
            let (cell, invert) = layout.observations(group).next().expect("ten cells");
            hazmat::cell(reference, cell) ^ invert
        })
        .collect();
    let mut rng = ChaCha20Rng::from_seed(*b"oxroot puf_report decoder rule!!");
    let mut check = RuleCheck {
        trials,
        agreed: 0,
        successes: 0,
    };
    for _ in 0..trials {
        // Around the boundary: 0..=24 ties and enough wrong groups to land near t.
        let ties = (rng.next_u32() % 25) as usize;
        let errors = (t + 6).saturating_sub(ties / 2 + (rng.next_u32() % 12) as usize);
        let mut groups: Vec<usize> = (0..V2_GROUPS).collect();
        for i in 0..ties + errors {
            let j = i + (rng.next_u32() as usize % (V2_GROUPS - i));
            groups.swap(i, j);
        }
        let mut noisy = *reference;
        for (rank, &group) in groups.iter().enumerate() {
            // Ties: 5 of 10 flipped; wrong: 6..=10; the rest: 0..=4 (still right).
            let flips = if rank < ties {
                5
            } else if rank < ties + errors {
                6 + (rng.next_u32() % 5) as usize
            } else {
                (rng.next_u32() % 5) as usize
            };
            let cells: Vec<usize> = layout.observations(group).map(|(cell, _)| cell).collect();
            let mut order: Vec<usize> = (0..cells.len()).collect();
            for i in 0..flips {
                let j = i + (rng.next_u32() as usize % (cells.len() - i));
                order.swap(i, j);
                let cell = cells[order[i]];
                noisy[cell / 8] ^= 1 << (cell % 8);
            }
        }
        // The rule: ties in array (group) order, class = rank mod 4; a tie is
        // decided 0, so the best filling of class c gets min(ones, zeros) wrong.
        let mut tie_groups: Vec<usize> = groups[..ties].to_vec();
        tie_groups.sort_unstable();
        let mut class_ones = [0usize; TIE_CLASSES as usize];
        let mut class_size = [0usize; TIE_CLASSES as usize];
        for (rank, &group) in tie_groups.iter().enumerate() {
            let class = rank % usize::from(TIE_CLASSES);
            class_size[class] += 1;
            class_ones[class] += usize::from(secret[group]);
        }
        let cost: usize = (0..usize::from(TIE_CLASSES))
            .map(|c| class_ones[c].min(class_size[c] - class_ones[c]))
            .sum();
        let predicted = errors + cost <= t;
        let actual = reconstruct_from_readout(&noisy, &enrolment.helper_data).is_ok();
        check.agreed += u32::from(predicted == actual);
        check.successes += u32::from(actual);
    }
    check
}

/// Median time of one power-up read + reconstruction + ESK derivation.
fn reconstruct_timing(chip: &ChipSeed, construction: Construction, runs: usize) -> f64 {
    let mut source = EmulatedChip::new(chip, OperatingConditions::NOMINAL, [0x71; 32]);
    let helper = enrol_with(&mut source, None, EnrolMode::FirstEnrolment, construction)
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
