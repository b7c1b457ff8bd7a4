//! Exact reliability and min-entropy of both constructions.
//!
//! Reliability assumes independent bit errors at a raw rate `ber` against the
//! enrolment reference, the model the Monte Carlo in `puf_report` samples.
//! Min-entropy assumes independent cells; [`v1_min_entropy`] and
//! [`v2_min_entropy`] take one common P(1), [`v2_min_entropy_for_layout`] any
//! per-cell P(1). Nothing here is estimated: every figure is a finite sum of
//! exact terms, evaluated in `f64` in log space so tails down to 1e-300 keep
//! their digits.

use std::vec;
use std::vec::Vec;

use crate::bch;
use crate::debias::{GROUPS as V2_GROUPS, Layout, OBSERVATIONS_PER_GROUP};
use crate::helper_data::{Construction, GROUPS, REPETITION};

use super::v2::TIE_CLASSES;

/// `P[Binomial(n, p) = k]` for `k = 0..=n`, each term computed in log space
/// so probabilities down to 1e-300 are exact.
pub fn binomial_pmf(n: usize, p: f64) -> impl Iterator<Item = f64> {
    let (ln_p, ln_q) = (p.ln(), (1.0 - p).ln());
    // `count · ln` with 0 · ln 0 = 0, so p = 0 and p = 1 need no special case.
    let weighted = |count: usize, ln: f64| if count == 0 { 0.0 } else { count as f64 * ln };
    let mut ln_choose = 0.0; // ln C(n, k), built up as k grows
    (0..=n).map(move |k| {
        if k > 0 {
            ln_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
        }
        (ln_choose + weighted(k, ln_p) + weighted(n - k, ln_q)).exp()
    })
}

/// `P[Binomial(n, p) > t]`, summed from the upper terms (no `1 − cdf` cancellation).
#[must_use]
pub fn binomial_tail(n: usize, p: f64, t: usize) -> f64 {
    binomial_pmf(n, p).skip(t + 1).sum::<f64>().min(1.0)
}

/// Probability that a majority vote over `repetition` cells (odd) is wrong.
#[must_use]
pub fn majority_error(repetition: usize, p: f64) -> f64 {
    binomial_tail(repetition, p, repetition / 2)
}

/// Key failure probability at raw bit error rate `ber`.
#[must_use]
pub fn key_failure_rate(construction: Construction, ber: f64) -> f64 {
    match construction {
        Construction::V1 => concatenated_failure_rate(ber, REPETITION, GROUPS, bch::T),
        Construction::V2 => v2_key_failure_rate(ber),
    }
}

/// Key failure probability of repetition(`repetition`) × `groups` + a
/// bounded-distance outer code correcting `t` errors (construction 1's model).
#[must_use]
pub fn concatenated_failure_rate(ber: f64, repetition: usize, groups: usize, t: usize) -> f64 {
    binomial_tail(groups, majority_error(repetition, ber), t)
}

/// Construction 2's key failure probability at raw bit error rate `ber`.
#[must_use]
pub fn v2_key_failure_rate(ber: f64) -> f64 {
    tie_fill_failure_rate(
        ber,
        OBSERVATIONS_PER_GROUP,
        V2_GROUPS,
        bch::V2.t(),
        usize::from(TIE_CLASSES),
    )
}

/// Failure of `groups` repetition groups of `observations` (even) cells each,
/// an outer code correcting `t` errors, and the tie-filling decoder with
/// `classes` tie classes (2^classes decoder runs).
///
/// A group decides wrong with probability w = P[more than half its cells
/// flipped] and ties with probability τ = P[exactly half]. With f ties, the
/// number e of wrong decisions among the other groups is Binomial(groups − f,
/// w / (1 − τ)); the ties of class c (rank ≡ c mod `classes`), f_c of them,
/// hold a uniform secret bit each, so the best filling of that class gets
/// min(B_c, f_c − B_c) wrong with B_c ~ Binomial(f_c, ½). Some filling decodes
/// exactly when e + Σ_c min(B_c, f_c − B_c) ≤ t (bounded-distance decoding
/// is guaranteed within t and can never return the enrolled word beyond it;
/// the 128-bit key check picks the right candidate). The key fails otherwise:
///
/// P = Σ_f P[f] · Σ_m P[erasure cost = m | f] · P[e > t − m | f].
#[must_use]
pub fn tie_fill_failure_rate(
    ber: f64,
    observations: usize,
    groups: usize,
    t: usize,
    classes: usize,
) -> f64 {
    let cells: Vec<f64> = binomial_pmf(observations, ber).collect();
    let half = observations / 2;
    // An odd group cannot tie.
    let tie = if observations.is_multiple_of(2) {
        cells[half]
    } else {
        0.0
    };
    let wrong: f64 = cells[half + 1..].iter().sum();
    let wrong_given_decided = wrong / (1.0 - tie);
    let mut failure = 0.0;
    for (ties, p_ties) in binomial_pmf(groups, tie).enumerate() {
        if p_ties == 0.0 {
            continue;
        }
        let cost = erasure_cost(ties, classes);
        let decided = groups - ties;
        let mut given = 0.0;
        for (m, p_cost) in cost.iter().enumerate() {
            given += p_cost
                * if m > t {
                    1.0
                } else {
                    binomial_tail(decided, wrong_given_decided, t - m)
                };
        }
        failure += p_ties * given;
    }
    failure.min(1.0)
}

/// Distribution of Σ_c min(B_c, f_c − B_c) over `classes` classes that split
/// `ties` ties by rank modulo `classes`.
fn erasure_cost(ties: usize, classes: usize) -> Vec<f64> {
    let mut total = vec![1.0];
    for class in 0..classes {
        let size = (ties + classes - 1 - class) / classes;
        let mut one = vec![0.0; size / 2 + 1];
        for (ones, p) in binomial_pmf(size, 0.5).enumerate() {
            one[ones.min(size - ones)] += p;
        }
        let mut next = vec![0.0; total.len() + one.len() - 1];
        for (i, a) in total.iter().enumerate() {
            for (j, b) in one.iter().enumerate() {
                next[i + j] += a * b;
            }
        }
        total = next;
    }
    total
}

/// Construction 1's conditional min-entropy of the master given the helper
/// data, for independent cells with P(1) = `p_one`: the exact average
/// min-entropy of each repetition(9) group's secret given its eight offsets,
/// summed over the 455 groups, minus the 198 bits the BCH syndrome can reveal
/// (clamped at 0).
///
/// The offsets show the group's cells up to complement: a pattern whose
/// offsets have weight w is (secret 0) weight w or (secret 1) weight 9 − w, so
/// the attacker's best guess is right with Σ_w C(8, w)·max(p^w q^{9−w}, p^{9−w} q^w).
#[must_use]
#[expect(clippy::expect_used, reason = "group sizes are single digits")]
pub fn v1_min_entropy(p_one: f64) -> f64 {
    let q = 1.0 - p_one;
    let guess: f64 = (0..REPETITION)
        .map(|w| {
            let w_i = i32::try_from(w).expect("small");
            let r = i32::try_from(REPETITION).expect("small");
            binomial_coefficient(REPETITION - 1, w)
                * (p_one.powi(w_i) * q.powi(r - w_i)).max(p_one.powi(r - w_i) * q.powi(w_i))
        })
        .sum();
    (GROUPS as f64 * -guess.log2() - bch::PARITY_BITS as f64).max(0.0)
}

/// Construction 2's conditional min-entropy of the master given the helper
/// data, for independent cells with one common P(1) = `p_one`, for a chip that
/// enrols.
///
/// Every tuple is balanced: its two values have the same weight, hence the
/// same probability p^{s/2} q^{s/2}, whatever `p_one` is. Each group secret is
/// therefore exactly uniform given flags and offsets (one bit per group), and
/// the 171-bit syndrome leaves 315 − 171 = 144 bits. This evaluates that sum
/// rather than asserting it.
#[must_use]
pub fn v2_min_entropy(p_one: f64) -> f64 {
    // One pair: the tuple bit is 1 with probability p·q / (p·q + q·p).
    let q = 1.0 - p_one;
    let pair_one = p_one * q / (p_one * q + q * p_one);
    let group = -(pair_one.max(1.0 - pair_one)).log2();
    (V2_GROUPS as f64 * group - bch::V2.parity_bits() as f64).max(0.0)
}

/// Construction 2's exact conditional min-entropy for one enrolled layout when
/// cell *i* has its own P(1) = `p_one(i)` (a regional gradient, say).
///
/// Given the flags, tuple *j*'s bit is 1 with probability
/// r_j = L1 / (L0 + L1), L_b = Π over its cells of P(cell = b ⊕ polarity),
/// independently of the other tuples. The offsets reveal each tuple's bit
/// relative to the group secret, so the best guess of a group with tuples
/// 0..m is right with Σ over the 2^(m−1) offset patterns o of
/// max_s Π_j P(b_j = s ⊕ o_j); the group keeps −log2 of that, and the syndrome
/// costs its 171 bits.
#[must_use]
#[expect(
    clippy::expect_used,
    reason = "a layout's tuples hold at least one cell each"
)]
pub fn v2_min_entropy_for_layout(layout: &Layout, p_one: impl Fn(usize) -> f64) -> f64 {
    let mut total = 0.0;
    for group in 0..V2_GROUPS {
        let tuples = usize::from(layout.tuples_per_group()[group]);
        let mut one = [0.5f64; 5];
        for (slot, r) in one.iter_mut().enumerate().take(tuples) {
            // Polarity relative to the tuple's own first cell.
            let mut cells = layout.tuple_cells(group, slot);
            let (first_cell, first_invert) = cells.next().expect("tuples are not empty");
            let (mut l0, mut l1) = (1.0 - p_one(first_cell), p_one(first_cell));
            for (cell, invert) in cells {
                let p = p_one(cell);
                if invert == first_invert {
                    l0 *= 1.0 - p;
                    l1 *= p;
                } else {
                    l0 *= p;
                    l1 *= 1.0 - p;
                }
            }
            *r = l1 / (l0 + l1);
        }
        let mut guess = 0.0;
        for offsets in 0..1usize << (tuples - 1) {
            let mut both = [1.0f64, 1.0];
            for (secret, likelihood) in both.iter_mut().enumerate() {
                for (slot, r) in one.iter().enumerate().take(tuples) {
                    let offset = if slot == 0 {
                        0
                    } else {
                        (offsets >> (slot - 1)) & 1
                    };
                    let bit = secret ^ offset;
                    *likelihood *= if bit == 1 { *r } else { 1.0 - r };
                }
            }
            guess += both[0].max(both[1]);
        }
        total += -guess.log2();
    }
    (total - bch::V2.parity_bits() as f64).max(0.0)
}

fn binomial_coefficient(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_figures_match_the_published_ones() {
        // The and the README's figures, checked independently.
        assert!((key_failure_rate(Construction::V1, 0.15) / 5.4e-16 - 1.0).abs() < 0.02);
        assert!((key_failure_rate(Construction::V1, 0.20) / 1.6e-5 - 1.0).abs() < 0.05);
        assert!((v1_min_entropy(0.5) - 257.0).abs() < 1e-9);
        assert!((v1_min_entropy(0.55) - 114.0).abs() < 1.0);
        assert!((v1_min_entropy(0.60) - 5.0).abs() < 1.0);
    }

    #[test]
    fn v2_is_144_bits_for_every_common_bias() {
        for p in [0.3, 0.45, 0.5, 0.55, 0.6, 0.7] {
            assert!((v2_min_entropy(p) - 144.0).abs() < 1e-9, "{p}");
        }
    }

    #[test]
    fn one_tie_class_is_the_plain_erasure_bound_and_more_classes_help() {
        let one = tie_fill_failure_rate(0.2, 10, 315, 20, 1);
        let four = tie_fill_failure_rate(0.2, 10, 315, 20, 4);
        assert!(four < one, "{four} {one}");
        // No ties possible with odd groups: the hard-decision binomial tail.
        let odd = tie_fill_failure_rate(0.2, 9, 455, 23, 4);
        assert!((odd / key_failure_rate(Construction::V1, 0.2) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn erasure_costs_are_distributions() {
        for ties in 0..30 {
            for classes in 1..=4 {
                let cost = erasure_cost(ties, classes);
                assert!((cost.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                // At most half of each class can be wrong.
                assert!(cost.len() <= ties / 2 + classes);
            }
        }
    }
}
