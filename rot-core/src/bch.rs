//! Binary BCH code: the outer code of the fuzzy extractor.
//!
//! # The code
//!
//! A narrow-sense binary BCH code over GF(2^9) (primitive polynomial
//! x^9 + x^4 + 1, primitive element α = x) of natural length 511 and designed
//! distance 2T + 1 = 47, so it corrects every pattern of up to [`T`] = 23 bit
//! errors. Its generator polynomial g(x) is the least common multiple of the
//! minimal polynomials of α^1 … α^46. Those exponents fall into 22 distinct
//! cyclotomic cosets modulo 511 of nine elements each (α^33 shares the coset of
//! α^17: 17·2^5 ≡ 33), so deg g = [`PARITY_BITS`] = 198 and the full code is a
//! [511, 313] code. It is shortened to [`N`] = 455 bits by fixing the top 56
//! message positions at zero, which leaves [`K`] = 257 information bits.
//!
//! # Why these parameters
//!
//! The PUF array has 4,096 cells. The inner code is a 9-fold repetition code
//! (majority vote), and 455 groups of nine use 4,095 of the 4,096 cells, so the
//! outer code sees 455 bits, each wrong with probability
//! q = P[Binomial(9, p) ≥ 5] for a raw cell bit-error rate p. The outer code
//! fails only if more than 23 of the 455 bits are wrong, so the analytic key
//! failure probability is P[Binomial(455, q) > 23]:
//!
//! | raw BER p | q after majority | P[Binomial(455, q) > 23] |
//! |-----------|------------------|--------------------------|
//! | 0.10      | 8.9 × 10⁻⁴       | 2.3 × 10⁻³⁴              |
//! | 0.15      | 5.6 × 10⁻³       | 5.4 × 10⁻¹⁶              |
//! | 0.20      | 2.0 × 10⁻²       | 1.6 × 10⁻⁵               |
//!
//! # Use in the fuzzy extractor (syndrome construction)
//!
//! At enrolment the extractor publishes [`helper`]`(w)` = w(x) mod g(x), the
//! [`PARITY_BITS`]-bit remainder of the majority-voted word. At reconstruction
//! it reads a noisy w' = w ⊕ e and calls [`correct`]: the remainder of w' xored
//! with the helper is e(x) mod g(x), from which the syndromes of e alone follow,
//! and w is recovered whenever wt(e) ≤ [`T`]. The helper reveals at most
//! [`PARITY_BITS`] bits about w, leaving at least the min-entropy of w minus 198
//! bits for the key derivation.
//!
//! # Bit order
//!
//! A word is [`WORD_BYTES`] bytes holding [`N`] bits LSB-first: bit i is
//! `(bytes[i / 8] >> (i % 8)) & 1` and is the coefficient of x^i. The helper is
//! packed the same way ([`HELPER_BYTES`] bytes, bit i = coefficient of x^i of the
//! remainder). Bits beyond [`N`] (the top bit of byte 56) and beyond
//! [`PARITY_BITS`] (the top two bits of helper byte 24) are ignored on input and
//! written as zero on output.
//!
//! # Constant-time argument
//!
//! [`helper`] and [`correct`] handle the secret PUF word, so their control flow
//! and memory-access pattern depend only on the public parameters:
//!
//! * Every loop has a fixed trip count (455 remainder steps, 2T = 46
//!   Berlekamp–Massey iterations, a Chien search over all 455 positions);
//!   there is no early exit on a zero syndrome, on the error count or on a
//!   decoding failure.
//! * GF(2^9) multiplication is a bit-serial carry-less multiply whose
//!   conditional additions and reductions are masks (`0 - bit`), never
//!   branches or table lookups; the Berlekamp–Massey variant is inversionless,
//!   so no field inversion of secret data happens at all. Multiplying a
//!   secret by a public power of α (syndrome evaluation, Chien steps) xors the
//!   nine columns of that constant's 9 × 9 matrix over GF(2), each under a mask
//!   taken from one bit of the secret; all nine are always read. Every table in
//!   this module is indexed by a loop counter or a public exponent, never by
//!   secret data.
//! * Secret-dependent decisions (whether to swap the Berlekamp–Massey
//!   registers, whether a position is a root, whether decoding succeeded) are
//!   [`subtle::Choice`] values applied with `ConditionallySelectable` or
//!   masks. Bit flips are always applied, to a copy, with a mask that may be
//!   zero; the copy replaces the caller's word through a final constant-time
//!   select.
//! * Nothing returned reveals the number or positions of the errors: the only
//!   output is the corrected word and one [`subtle::Choice`].
//!
//! Temporaries holding secret-derived data are zeroised before returning.
//! As with all of `subtle`, this is a best effort at the source level: the
//! compiler is not formally prevented from reintroducing branches.

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};
use zeroize::Zeroize;

/// Code length in bits after shortening (455 repetition-9 groups of PUF cells).
pub const N: usize = 455;

/// Number of bit errors the code is guaranteed to correct (designed distance 2T + 1 = 47).
pub const T: usize = 23;

/// Degree of the generator polynomial: the number of redundancy bits, and the
/// number of bits in a helper value.
pub const PARITY_BITS: usize = 198;

/// Number of information bits: `N - PARITY_BITS` = 257.
pub const K: usize = N - PARITY_BITS;

/// Bytes of a packed [`N`]-bit word (57; the top bit of the last byte is unused).
pub const WORD_BYTES: usize = N.div_ceil(8);

/// Bytes of a packed helper value (25; the top two bits of the last byte are unused).
pub const HELPER_BYTES: usize = PARITY_BITS.div_ceil(8);

const _: () = assert!(WORD_BYTES == 57 && HELPER_BYTES == 25 && K == 257);

// ---------------------------------------------------------------------------
// GF(2^9)
// ---------------------------------------------------------------------------

/// An element of GF(2^9) in polynomial basis; always reduced (< 512).
type Gf = u16;

/// Multiplicative group order of GF(2^9).
const GF_ORDER: usize = 511;

/// x^9 + x^4 + 1.
const GF_POLY: u16 = 0x211;

/// All-ones if the low bit of `bit` is 1, else all-zeros.
const fn mask16(bit: u16) -> u16 {
    0u16.wrapping_sub(bit & 1)
}

/// All-ones if the low bit of `bit` is 1, else all-zeros.
const fn mask64(bit: u64) -> u64 {
    0u64.wrapping_sub(bit & 1)
}

/// Constant-time product in GF(2^9): Horner over the nine bits of `b`, each
/// step a doubling with masked reduction and a masked addition of `a`.
const fn gf_mul(a: Gf, b: Gf) -> Gf {
    let mut r: u16 = 0;
    let mut i = 9;
    while i > 0 {
        i -= 1;
        r = (r << 1) ^ (GF_POLY & mask16(r >> 8));
        r ^= a & mask16(b >> i);
    }
    r
}

/// `a^e` by a fixed 16-step square-and-multiply (constant time in both operands).
const fn gf_pow(a: Gf, e: u16) -> Gf {
    let mut r: Gf = 1;
    let mut i = 16;
    while i > 0 {
        i -= 1;
        r = gf_mul(r, r);
        let m = mask16(e >> i);
        r = (r & !m) | (gf_mul(r, a) & m);
    }
    r
}

/// Multiplicative inverse as `a^510` (maps 0 to 0).
const fn gf_inv(a: Gf) -> Gf {
    gf_pow(a, (GF_ORDER - 1) as u16)
}

/// α, the class of x.
const ALPHA: Gf = 2;

/// Multiplication by a public constant `c` as a GF(2)-linear map: column k is
/// `c · x^k`, so `c · a` is the xor of the columns selected by the bits of `a`.
type MulTable = [Gf; 9];

/// The columns of multiplication by `c`.
const fn mul_table(c: Gf) -> MulTable {
    let mut cols = [0; 9];
    let mut k = 0;
    while k < 9 {
        cols[k] = gf_mul(c, 1 << k);
        k += 1;
    }
    cols
}

/// `a · c` for a secret `a` and a public `c` given by its [`MulTable`]:
/// nine masked xors, no data-dependent branch or index.
fn gf_mul_by(a: Gf, cols: &MulTable) -> Gf {
    let mut r: Gf = 0;
    for (k, col) in cols.iter().enumerate() {
        r ^= col & mask16(a >> k);
    }
    r
}

/// `ALPHA_POW[j]` multiplies by α^j, for `j = 0 ..= 2T` (syndrome evaluation points).
const ALPHA_POW: [MulTable; 2 * T + 1] = {
    let mut t = [[0; 9]; 2 * T + 1];
    let mut j = 0;
    while j < t.len() {
        t[j] = mul_table(gf_pow(ALPHA, j as u16));
        j += 1;
    }
    t
};

/// `CHIEN_STEP[j]` multiplies by α^{-j}, for `j = 0 ..= T` (Chien search steps).
const CHIEN_STEP: [MulTable; T + 1] = {
    let alpha_inv = gf_inv(ALPHA);
    let mut t = [[0; 9]; T + 1];
    let mut j = 0;
    while j < t.len() {
        t[j] = mul_table(gf_pow(alpha_inv, j as u16));
        j += 1;
    }
    t
};

// ---------------------------------------------------------------------------
// Binary polynomials of degree ≤ PARITY_BITS as bit vectors
// ---------------------------------------------------------------------------

const LIMBS: usize = 4;

/// A binary polynomial, bit i of limb i / 64 bit i % 64 = coefficient of x^i.
type Poly = [u64; LIMBS];

/// The generator polynomial g(x) = lcm(m_1, …, m_46), including its x^198 term.
///
/// Generated offline and checked by the unit test `generator_is_lcm_of_minimal_polynomials`.
const GENERATOR: Poly = [
    0x67e2_35ee_f2a6_9f1f,
    0xa4e2_71c7_7704_d74a,
    0xe230_2b9a_1242_fe53,
    0x0000_0000_0000_0043,
];

const _: () = assert!(PARITY_BITS < 64 * LIMBS && PARITY_BITS / 64 == LIMBS - 1);
const _: () = assert!(GENERATOR[LIMBS - 1] >> (PARITY_BITS % 64) == 1);
const _: () = assert!(GENERATOR[0] & 1 == 1);

/// Reads bit `i` (public index) of a packed word.
fn word_bit(word: &[u8; WORD_BYTES], i: usize) -> u64 {
    u64::from((word[i / 8] >> (i % 8)) & 1)
}

/// `word(x) mod g(x)` over the [`N`] valid bits, by a fixed 455-step LFSR.
fn remainder(word: &[u8; WORD_BYTES]) -> Poly {
    let mut r: Poly = [0; LIMBS];
    for i in (0..N).rev() {
        // r = r·x + w_i; bit PARITY_BITS can now be set and is cancelled by g.
        let mut carry = word_bit(word, i);
        for limb in &mut r {
            let next = *limb >> 63;
            *limb = (*limb << 1) | carry;
            carry = next;
        }
        let top = mask64(r[PARITY_BITS / 64] >> (PARITY_BITS % 64));
        for (limb, g) in r.iter_mut().zip(GENERATOR) {
            *limb ^= g & top;
        }
    }
    r
}

/// Packs a remainder (degree < [`PARITY_BITS`]) LSB-first.
fn pack_helper(r: &Poly) -> [u8; HELPER_BYTES] {
    let mut out = [0u8; HELPER_BYTES];
    for (k, byte) in out.iter_mut().enumerate() {
        *byte = (r[k / 8] >> (8 * (k % 8))) as u8;
    }
    out
}

/// Unpacks a helper, ignoring the bits at and above [`PARITY_BITS`].
fn unpack_helper(helper: &[u8; HELPER_BYTES]) -> Poly {
    let mut r: Poly = [0; LIMBS];
    for (k, byte) in helper.iter().enumerate() {
        r[k / 8] |= u64::from(*byte) << (8 * (k % 8));
    }
    r[LIMBS - 1] &= (1u64 << (PARITY_BITS % 64)) - 1;
    r
}

// ---------------------------------------------------------------------------
// Decoder stages
// ---------------------------------------------------------------------------

/// `S_j = r(α^j)` for `j = 1 ..= 2T` (index 0 is unused and zero). Odd
/// syndromes by Horner evaluation; even ones as `S_{2j} = S_j^2`.
fn syndromes(r: &Poly) -> [Gf; 2 * T + 1] {
    let mut s = [0; 2 * T + 1];
    for j in 1..=2 * T {
        if j % 2 == 1 {
            let x = &ALPHA_POW[j];
            let mut acc: Gf = 0;
            for i in (0..PARITY_BITS).rev() {
                let bit = ((r[i / 64] >> (i % 64)) & 1) as Gf;
                acc = gf_mul_by(acc, x) ^ bit;
            }
            s[j] = acc;
        } else {
            s[j] = gf_mul(s[j / 2], s[j / 2]);
        }
    }
    s
}

/// Inversionless Berlekamp–Massey (Sarwate–Shanbhag iBM) over all 2T
/// syndromes, with no early exit. Returns the error-locator polynomial Λ
/// (coefficients of x^0..x^T, scaled by a nonzero constant) and the final
/// LFSR length L.
///
/// Λ and the auxiliary polynomial B are kept to T + 1 coefficients. When the
/// final L ≤ T, every coefficient that truncation could drop is provably zero,
/// so Λ is exact; when L > T the decoder rejects regardless.
fn berlekamp_massey(s: &[Gf; 2 * T + 1]) -> ([Gf; T + 1], u32) {
    let mut lambda = [0 as Gf; T + 1];
    let mut b = [0 as Gf; T + 1];
    lambda[0] = 1;
    b[0] = 1;
    let mut gamma: Gf = 1;
    let mut len: u32 = 0;

    for r in 0..2 * T {
        // δ = Σ_i Λ_i S_{r+1-i}, over the indices that exist (public bound).
        let mut delta: Gf = 0;
        for (i, l) in lambda.iter().enumerate().take(r + 1) {
            delta ^= gf_mul(*l, s[r + 1 - i]);
        }

        // Swap when δ ≠ 0 and 2L ≤ r.
        let swap = !delta.ct_eq(&0) & !(2 * len).ct_gt(&(r as u32));

        // Λ' = γΛ − δ·x·B, and B' = Λ (swap) or x·B (no swap).
        let mut next = [0 as Gf; T + 1];
        for (i, n) in next.iter_mut().enumerate() {
            let xb = if i == 0 { 0 } else { b[i - 1] };
            *n = gf_mul(gamma, lambda[i]) ^ gf_mul(delta, xb);
        }
        for i in (0..=T).rev() {
            let xb = if i == 0 { 0 } else { b[i - 1] };
            b[i] = Gf::conditional_select(&xb, &lambda[i], swap);
        }
        lambda = next;
        next.zeroize();

        gamma = Gf::conditional_select(&gamma, &delta, swap);
        let swapped_len = (r as u32 + 1).wrapping_sub(len);
        len = u32::conditional_select(&len, &swapped_len, swap);
        delta.zeroize();
    }
    b.zeroize();
    gamma.zeroize();
    (lambda, len)
}

/// Degree of Λ (highest nonzero coefficient), computed without branching.
fn degree(lambda: &[Gf; T + 1]) -> u32 {
    let mut deg: u32 = 0;
    for (j, c) in lambda.iter().enumerate() {
        deg = u32::conditional_select(&deg, &(j as u32), !c.ct_eq(&0));
    }
    deg
}

/// Chien search over every valid position: flips bit i of `out` wherever
/// Λ(α^{-i}) = 0, for all i in 0..N, and returns the number of roots found.
fn chien_flip(lambda: &[Gf; T + 1], out: &mut [u8; WORD_BYTES]) -> u32 {
    let mut terms = *lambda; // terms[j] = Λ_j · α^{-ij} at step i
    let mut roots: u32 = 0;
    for i in 0..N {
        let sum = terms.iter().fold(0, |acc, t| acc ^ t);
        let is_root = sum.ct_eq(&0).unwrap_u8();
        out[i / 8] ^= is_root << (i % 8);
        roots += u32::from(is_root);
        for (t, step) in terms.iter_mut().zip(&CHIEN_STEP).skip(1) {
            *t = gf_mul_by(*t, step);
        }
    }
    terms.zeroize();
    roots
}

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// The helper value for `word`: the remainder `word(x) mod g(x)`, packed
/// LSB-first into [`HELPER_BYTES`] bytes (the top two bits are zero).
///
/// This is the public helper data the fuzzy extractor stores at enrolment.
/// The unused top bit of `word[56]` is ignored. Runs in constant time.
#[must_use]
pub fn helper(word: &[u8; WORD_BYTES]) -> [u8; HELPER_BYTES] {
    let mut r = remainder(word);
    let out = pack_helper(&r);
    r.zeroize();
    out
}

/// Corrects a noisy word in place against its enrolment helper.
///
/// Given `word` = w ⊕ e and `helper` = [`helper`]`(w)`, computes the syndromes
/// of e, finds the error locator by inversionless Berlekamp–Massey and its
/// roots by a Chien search over all [`N`] positions, and flips the located
/// bits. On success `word` holds the decoded word (with its unused top bit
/// cleared) and the result is `Choice(1)`. Runs in constant time: the work
/// done does not depend on the word, the helper or the errors.
///
/// # Errors
///
/// Returns `Choice(0)` and leaves `word` byte-for-byte unchanged when
/// decoding fails: the locator has length above [`T`], or does not have as
/// many distinct roots among the [`N`] valid positions as its degree, or the
/// corrected word does not reproduce `helper`. This is guaranteed not to
/// happen when wt(e) ≤ [`T`]. When wt(e) > [`T`] the call either fails or
/// succeeds with a word w'' that satisfies `helper(w'') == helper` and lies
/// within [`T`] bits of the input (bounded-distance decoding), which may
/// differ from w; the caller's key check must catch that case.
///
/// Bits of `helper` at and above [`PARITY_BITS`] are ignored.
#[must_use]
pub fn correct(word: &mut [u8; WORD_BYTES], helper: &[u8; HELPER_BYTES]) -> Choice {
    let expected = unpack_helper(helper);

    // r ≡ e (mod g), so r(α^j) = e(α^j) for j = 1..=2T.
    let mut r = remainder(word);
    for (limb, h) in r.iter_mut().zip(expected) {
        *limb ^= h;
    }
    let mut s = syndromes(&r);
    r.zeroize();

    let (mut lambda, len) = berlekamp_massey(&s);
    s.zeroize();
    let deg = degree(&lambda);

    let mut fixed = *word;
    let roots = chien_flip(&lambda, &mut fixed);
    lambda.zeroize();
    fixed[WORD_BYTES - 1] &= (1u8 << (N % 8)) - 1;

    // Defence in depth: the corrected word must lie in the helper's coset.
    let mut check = remainder(&fixed);
    let coset_ok = check[..].ct_eq(&expected[..]);
    check.zeroize();

    let ok = !len.ct_gt(&(T as u32)) & deg.ct_eq(&len) & roots.ct_eq(&deg) & coset_ok;
    for (w, f) in word.iter_mut().zip(fixed.iter()) {
        *w = u8::conditional_select(w, f, ok);
    }
    fixed.zeroize();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn generator_is_lcm_of_minimal_polynomials() {
        // Roots and degree.
        for j in 1..=2 * T {
            assert_eq!(eval(&GENERATOR, gf_pow(ALPHA, j as u16)), 0, "g(alpha^{j})");
        }
        assert_ne!(eval(&GENERATOR, gf_pow(ALPHA, 2 * T as u16 + 1)), 0);
        assert_eq!(poly_degree(&GENERATOR), PARITY_BITS);

        // Product of the distinct minimal polynomials of alpha^1..alpha^2T.
        let mut seen = [false; GF_ORDER];
        let mut product: Poly = [1, 0, 0, 0];
        let mut cosets = 0;
        for j in 1..=2 * T {
            if seen[j] {
                continue;
            }
            cosets += 1;
            // m_j(x) = prod over the cyclotomic coset of (x + alpha^c).
            let mut m = [0 as Gf; 10];
            m[0] = 1;
            let mut c = j;
            let mut size = 0;
            loop {
                seen[c] = true;
                size += 1;
                let root = gf_pow(ALPHA, c as u16);
                for k in (0..m.len()).rev() {
                    let shifted = if k == 0 { 0 } else { m[k - 1] };
                    m[k] = shifted ^ gf_mul(m[k], root);
                }
                c = 2 * c % GF_ORDER;
                if c == j {
                    break;
                }
            }
            assert_eq!(size, 9);
            let mut bits = 0u16;
            for (k, coeff) in m.iter().enumerate() {
                assert!(*coeff <= 1, "minimal polynomial coefficient not binary");
                bits |= coeff << k;
            }
            product = poly_mul_small(&product, bits);
        }
        assert_eq!(cosets, 22);
        assert_eq!(product, GENERATOR);
    }

    #[test]
    fn remainder_of_shifted_generator_is_zero() {
        // x^s g(x) for every shift that fits in N bits is a codeword.
        for s in 0..=(N - 1 - PARITY_BITS) {
            let mut word = [0u8; WORD_BYTES];
            for i in 0..=PARITY_BITS {
                if poly_bit(&GENERATOR, i) {
                    word[(i + s) / 8] |= 1 << ((i + s) % 8);
                }
            }
            assert_eq!(helper(&word), [0u8; HELPER_BYTES], "shift {s}");
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
        let s = syndromes(&remainder(&e));
        let (lambda, len) = berlekamp_massey(&s);
        assert_eq!(len, 3);
        assert_eq!(degree(&lambda), 3);
        let mut flips = [0u8; WORD_BYTES];
        assert_eq!(chien_flip(&lambda, &mut flips), 3);
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
}
