//! Does reconstruction take the same time whatever the readout? A dudect-style
//! test (Reparaz, Balasch, Verbauwhede, "Dude, is my code constant time?",
//! DATE 2017): time `reconstruct_from_readout` on randomly interleaved
//! readouts of different classes and compare the classes' timing
//! distributions with Welch's t-test. |t| above 4.5 is evidence of a timing
//! difference; below it, none was found at this sample size.
//!
//! ```text
//! cargo bench -p rot-core --bench constant_time                       # 1.5e6 measurements, ~30 min
//! cargo bench -p rot-core --bench constant_time -- --measurements 30000 --construction 1
//! ```
//!
//! Classes, all against one enrolled chip (construction 2 by default):
//! - **few**: the enrolment reference with 1 % of cells flipped;
//! - **many**: 20 % of cells flipped (ties, wrong votes, BCH corrections);
//! - **failing**: 35 % flipped: reconstruction fails (every candidate rejected).
//!
//! Each line reports t for few-vs-many and few-vs-failing, over all
//! measurements and over those below the 50th, 90th and 99th percentile (as
//! dudect does, to drop interrupts and scheduling noise), and the largest |t|.
//! The last line is one JSON object with the figures.
#![allow(clippy::expect_used, reason = "a bench fails loudly")]

use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{
    Construction, ENROLMENT_READS, enrol_from_reference_with, reconstruct_from_readout,
};
use rot_core::hazmat::{self, CELL_COUNT, Readout};

const CLASSES: [(&str, f64); 3] = [("few", 0.01), ("many", 0.20), ("failing", 0.35)];
/// Readouts prepared per batch (then measured in random class order).
const BATCH: usize = 3_000;

struct Options {
    measurements: usize,
    construction: Construction,
}

fn options() -> Options {
    let mut options = Options {
        measurements: 1_500_000,
        construction: Construction::V2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--measurements" => {
                options.measurements = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--measurements N");
            }
            "--construction" => {
                options.construction = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--construction 1|2");
            }
            // cargo bench passes --bench; criterion-style filters are ignored.
            _ => {}
        }
    }
    options
}

/// Running sums for one class's timings, restricted to those at or below a cutoff.
#[derive(Clone, Copy, Default)]
struct Moments {
    n: f64,
    sum: f64,
    sum_sq: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.n += 1.0;
        self.sum += x;
        self.sum_sq += x * x;
    }
    fn mean(&self) -> f64 {
        self.sum / self.n
    }
    fn variance(&self) -> f64 {
        (self.sum_sq - self.sum * self.sum / self.n) / (self.n - 1.0)
    }
}

/// Welch's t statistic between two classes.
fn welch(a: &Moments, b: &Moments) -> f64 {
    (a.mean() - b.mean()) / (a.variance() / a.n + b.variance() / b.n).sqrt()
}

fn noisy(reference: &Readout, ber: f64, rng: &mut ChaCha20Rng) -> Readout {
    let threshold = (ber * f64::from(u32::MAX)) as u32;
    let mut out = *reference;
    for cell in 0..CELL_COUNT {
        if rng.next_u32() < threshold {
            out[cell / 8] ^= 1 << (cell % 8);
        }
    }
    out
}

fn main() {
    let options = options();
    let chip = ChipSeed::from_bytes(*b"oxroot constant-time bench chip!");
    let mut source = EmulatedChip::new(&chip, OperatingConditions::NOMINAL, [4; 32]);
    let reference = hazmat::read_majority(&mut source, ENROLMENT_READS).expect("emulator reads");
    let helper = enrol_from_reference_with(&reference, options.construction)
        .expect("enrols")
        .helper_data;
    let mut rng = ChaCha20Rng::from_seed(*b"oxroot dudect class interleaving");

    // Percentile cutoffs from a first batch of all classes, as dudect does.
    let mut warm: Vec<f64> = (0..3 * BATCH / 10)
        .map(|i| {
            let readout = noisy(&reference, CLASSES[i % 3].1, &mut rng);
            let start = Instant::now();
            let failed = std::hint::black_box(reconstruct_from_readout(&readout, &helper)).is_err();
            let elapsed = start.elapsed().as_nanos() as f64;
            std::hint::black_box(failed);
            elapsed
        })
        .collect();
    warm.sort_by(f64::total_cmp);
    let percentile = |q: f64| warm[((warm.len() - 1) as f64 * q) as usize];
    let cutoffs = [
        f64::INFINITY,
        percentile(0.5),
        percentile(0.9),
        percentile(0.99),
    ];

    let mut moments = [[Moments::default(); 4]; 3];
    let mut done = 0;
    let mut failures = [0usize; 3];
    let started = Instant::now();
    while done < options.measurements {
        let batch: Vec<(usize, Readout)> = (0..BATCH.min(options.measurements - done))
            .map(|_| {
                let class = (rng.next_u32() % 3) as usize;
                (class, noisy(&reference, CLASSES[class].1, &mut rng))
            })
            .collect();
        for (class, readout) in &batch {
            // The caller's drop of the seeds (zeroizing them) is part of the work:
            // a failure drops them inside, so time both ways including the drop.
            let start = Instant::now();
            let failed = std::hint::black_box(reconstruct_from_readout(readout, &helper)).is_err();
            let elapsed = start.elapsed().as_nanos() as f64;
            failures[*class] += usize::from(failed);
            for (m, cutoff) in moments[*class].iter_mut().zip(cutoffs) {
                if elapsed <= cutoff {
                    m.add(elapsed);
                }
            }
        }
        done += batch.len();
        if done % (BATCH * 50) == 0 || done == options.measurements {
            report(
                &moments,
                done,
                started.elapsed().as_secs_f64(),
                false,
                &failures,
                options.construction,
            );
        }
    }
    report(
        &moments,
        done,
        started.elapsed().as_secs_f64(),
        true,
        &failures,
        options.construction,
    );
}

fn report(
    moments: &[[Moments; 4]; 3],
    done: usize,
    seconds: f64,
    json: bool,
    failures: &[usize; 3],
    construction: Construction,
) {
    let t_against = |other: usize| -> [f64; 4] {
        core::array::from_fn(|crop| welch(&moments[0][crop], &moments[other][crop]))
    };
    let many = t_against(1);
    let failing = t_against(2);
    let max_abs = many
        .iter()
        .chain(&failing)
        .fold(0.0f64, |acc, t| acc.max(t.abs()));
    let means: Vec<f64> = moments.iter().map(|m| m[0].mean() / 1000.0).collect();
    if json {
        println!(
            "{{\"construction\":{construction},\"measurements\":{done},\"max_abs_t\":{max_abs:.3},\"t_few_vs_many\":{many:?},\"t_few_vs_failing\":{failing:?},\"mean_us\":{means:?},\"failures\":{failures:?},\"seconds\":{seconds:.0}}}"
        );
    } else {
        println!(
            "{done:>9} measurements ({seconds:.0} s): t few/many {:+.2} (crops {:+.2} {:+.2} {:+.2}), few/failing {:+.2} (crops {:+.2} {:+.2} {:+.2}); max |t| {max_abs:.2}; means {:.1}/{:.1}/{:.1} µs; failures {:?}",
            many[0],
            many[1],
            many[2],
            many[3],
            failing[0],
            failing[1],
            failing[2],
            failing[3],
            means[0],
            means[1],
            means[2],
            failures
        );
    }
}
