//! Unit tests of the field, the generator computation and the decoder stages.

use super::field::{ALPHA, GF_ORDER, gf_inv, gf_mul, gf_mul_by, gf_pow};
use super::*;
use std::vec;

/// The version-1 generator as it was written out by hand before [`Code::new`]
/// computed it: the const computation must reproduce it bit for bit.
const V1_GENERATOR_AS_PUBLISHED: [u64; 4] = [
    0x67e2_35ee_f2a6_9f1f,
    0xa4e2_71c7_7704_d74a,
    0xe230_2b9a_1242_fe53,
    0x0000_0000_0000_0043,
];

#[test]
fn v1_generator_is_unchanged() {
    assert_eq!(V1.generator[..4], V1_GENERATOR_AS_PUBLISHED);
    assert!(V1.generator[4..].iter().all(|&limb| limb == 0));
    assert_eq!(V1.parity_bits(), 198);
}

/// Log/antilog tables built by repeated multiplication by x with a
/// branchy reduction, independent of `gf_mul`.
fn reference_tables() -> ([u16; GF_ORDER], [usize; 512]) {
    let mut exp = [0u16; GF_ORDER];
    let mut log = [usize::MAX; 512];
    let mut x: u16 = 1;
    for (i, e) in exp.iter_mut().enumerate() {
        *e = x;
        assert_eq!(log[x as usize], usize::MAX, "x^{i} repeats: not primitive");
        log[x as usize] = i;
        x <<= 1;
        if x & 0x200 != 0 {
            x ^= 0x211;
        }
    }
    assert_eq!(x, 1);
    (exp, log)
}

#[test]
fn gf_mul_matches_log_antilog_reference() {
    let (exp, log) = reference_tables();
    for a in 0..512u16 {
        for b in 0..512u16 {
            let want = if a == 0 || b == 0 {
                0
            } else {
                exp[(log[a as usize] + log[b as usize]) % GF_ORDER]
            };
            assert_eq!(gf_mul(a, b), want, "{a} * {b}");
        }
    }
}

#[test]
fn gf_inverse_and_pow() {
    assert_eq!(gf_inv(0), 0);
    for a in 1..512u16 {
        let inv = gf_inv(a);
        assert_eq!(gf_mul(a, inv), 1, "inverse of {a}");
        assert_eq!(gf_pow(a, GF_ORDER as u16), 1);
    }
    let (exp, _) = reference_tables();
    for (j, want) in exp.iter().enumerate() {
        assert_eq!(gf_pow(ALPHA, j as u16), *want);
    }
}

#[test]
fn alpha_has_order_511() {
    let mut x: Gf = 1;
    for i in 1..=GF_ORDER {
        x = gf_mul(x, ALPHA);
        if i < GF_ORDER {
            assert_ne!(x, 1, "alpha^{i} = 1");
        }
    }
    assert_eq!(x, 1);
}

#[test]
fn tables_hold_the_right_powers() {
    for (j, table) in ALPHA_POW.iter().enumerate() {
        let c = gf_pow(ALPHA, j as u16);
        for a in 0..512 {
            assert_eq!(gf_mul_by(a, table), gf_mul(a, c), "a = {a}, j = {j}");
        }
    }
    for (j, table) in CHIEN_STEP.iter().enumerate() {
        let c = gf_inv(gf_pow(ALPHA, j as u16));
        for a in 0..512 {
            assert_eq!(gf_mul_by(a, table), gf_mul(a, c), "a = {a}, j = {j}");
        }
        assert_eq!(gf_mul_by(gf_pow(ALPHA, j as u16), table), 1);
    }
}

fn poly_bit(p: &Poly, i: usize) -> bool {
    (p[i / 64] >> (i % 64)) & 1 == 1
}

fn poly_degree(p: &Poly) -> usize {
    (0..64 * LIMBS)
        .rev()
        .find(|&i| poly_bit(p, i))
        .expect("nonzero")
}

/// Evaluates a binary polynomial at a field element.
fn eval(p: &Poly, x: Gf) -> Gf {
    (0..64 * LIMBS)
        .rev()
        .fold(0, |acc, i| gf_mul(acc, x) ^ Gf::from(poly_bit(p, i)))
}

/// `p · m` over GF(2), where `m` has degree < 16.
fn poly_mul_small(p: &Poly, m: u16) -> Poly {
    let mut out: Poly = [0; LIMBS];
    for s in 0..16 {
        if (m >> s) & 1 == 1 {
            for i in 0..64 * LIMBS - s {
                if poly_bit(p, i) {
                    out[(i + s) / 64] ^= 1 << ((i + s) % 64);
                }
            }
        }
    }
    out
}

/// An independent construction of g(x): the product of the minimal polynomials
/// built here with a different loop (the coset is walked first, then the
/// polynomial multiplied out), checked against its defining roots.
fn check_generator(code: &Code, expected_cosets: usize) {
    let t = code.t();
    let generator = code.generator;
    // Roots and degree.
    for j in 1..=2 * t {
        assert_eq!(eval(&generator, gf_pow(ALPHA, j as u16)), 0, "g(alpha^{j})");
    }
    assert_eq!(poly_degree(&generator), code.parity_bits());

    let mut seen = [false; GF_ORDER];
    let mut product: Poly = [0; LIMBS];
    product[0] = 1;
    let mut cosets = 0;
    for j in 1..=2 * t {
        if seen[j] {
            continue;
        }
        cosets += 1;
        let mut members = vec![j];
        let mut c = 2 * j % GF_ORDER;
        while c != j {
            members.push(c);
            c = 2 * c % GF_ORDER;
        }
        assert_eq!(members.len(), 9, "every coset here has nine members");
        let mut m = vec![1 as Gf];
        for &member in &members {
            seen[member] = true;
            let root = gf_pow(ALPHA, member as u16);
            let mut next = vec![0 as Gf; m.len() + 1];
            for (k, &coeff) in m.iter().enumerate() {
                next[k + 1] ^= coeff;
                next[k] ^= gf_mul(coeff, root);
            }
            m = next;
        }
        let mut bits = 0u16;
        for (k, coeff) in m.iter().enumerate() {
            assert!(*coeff <= 1, "minimal polynomial coefficient not binary");
            bits |= coeff << k;
        }
        product = poly_mul_small(&product, bits);
    }
    assert_eq!(cosets, expected_cosets);
    assert_eq!(product, generator);
}

#[test]
fn generators_are_lcm_of_minimal_polynomials() {
    // V1: 23 odd exponents 1..45, but alpha^33 shares the coset of alpha^17.
    check_generator(&V1, 22);
    // V2: 20 odd exponents 1..39, the same merge.
    check_generator(&V2, 19);
}

#[test]
fn the_minimum_distance_is_at_least_the_designed_distance_for_every_t() {
    // Every t the arrays allow yields a generator with the right roots.
    for t in 1..=MAX_T {
        let code = Code::new(MAX_N, t);
        for j in 1..=2 * t {
            assert_eq!(eval(&code.generator, gf_pow(ALPHA, j as u16)), 0);
        }
        assert_eq!(code.parity_bits() % 9, 0);
    }
}

#[test]
fn remainder_of_shifted_generator_is_zero() {
    for code in [V1, V2] {
        // x^s g(x) for every shift that fits in n bits is a codeword.
        for s in 0..=(code.n() - 1 - code.parity_bits()) {
            let mut word = vec![0u8; code.word_bytes()];
            for i in 0..=code.parity_bits() {
                if poly_bit(&code.generator, i) {
                    word[(i + s) / 8] |= 1 << ((i + s) % 8);
                }
            }
            let mut helper = vec![0xffu8; code.helper_bytes()];
            code.helper_into(&word, &mut helper);
            assert!(helper.iter().all(|&b| b == 0), "shift {s}");
        }
    }
}

#[test]
fn remainder_of_low_monomials_is_themselves() {
    for i in 0..PARITY_BITS {
        let mut word = [0u8; WORD_BYTES];
        word[i / 8] = 1 << (i % 8);
        let mut want = [0u8; HELPER_BYTES];
        want[i / 8] = 1 << (i % 8);
        assert_eq!(helper(&word), want);
    }
}

#[test]
fn locator_for_known_errors() {
    // Errors at positions 0, 5 and 454: L = 3 and the roots are exactly there.
    let mut e = [0u8; WORD_BYTES];
    for p in [0usize, 5, 454] {
        e[p / 8] |= 1 << (p % 8);
    }
    let s = V1.syndromes(&V1.remainder(&e));
    let (lambda, len) = V1.berlekamp_massey(&s);
    assert_eq!(len, 3);
    assert_eq!(V1.degree(&lambda), 3);
    let mut flips = [0u8; WORD_BYTES];
    assert_eq!(V1.chien_flip(&lambda, &mut flips), 3);
    assert_eq!(flips, e);
}

#[test]
fn unused_helper_bits_are_ignored() {
    let word = [0xA5u8; WORD_BYTES];
    let mut h = helper(&word);
    assert_eq!(h[HELPER_BYTES - 1] >> (PARITY_BITS % 8), 0);
    h[HELPER_BYTES - 1] |= 0xC0;
    let mut noisy = word;
    noisy[3] ^= 0x10;
    assert!(bool::from(correct(&mut noisy, &h)));
    let mut want = word;
    want[WORD_BYTES - 1] &= 0x7F;
    assert_eq!(noisy, want);
}
