//! Binary BCH codes over GF(2^9): the outer codes of the fuzzy extractor.
//!
//! # The codes
//!
//! A narrow-sense binary BCH code over GF(2^9) (primitive polynomial
//! x^9 + x^4 + 1, primitive element α = x) of natural length 511 and designed
//! distance 2t + 1 corrects every pattern of up to t bit errors. Its generator
//! polynomial g(x) is the least common multiple of the minimal polynomials of
//! α^1 … α^2t; [`Code::new`] computes it at compile time, so each code used here
//! is one `const`. A code is shortened to length n by fixing the top 511 − n
//! message positions at zero.
//!
//! | code | n | k | t | used by |
//! |---|---|---|---|---|
//! | [`V1`] | 455 | 257 | 23 | helper data version 1 (the free functions [`helper`] and [`correct`]) |
//! | [`V2`] | 315 | 144 | 20 | helper data version 2 ([`crate::extractor::v2`]) |
//!
//! # Why these parameters
//!
//! Version 1: a 9-fold repetition code (majority vote) over 455 groups uses
//! 4,095 of the 4,096 cells; the outer code sees 455 bits, each wrong with
//! probability q = P[Binomial(9, p) ≥ 5] for a raw cell bit-error rate p, and
//! fails only if more than 23 of them are wrong:
//!
//! | raw BER p | q after majority | P[Binomial(455, q) > 23] |
//! |-----------|------------------|--------------------------|
//! | 0.10      | 8.9 × 10⁻⁴       | 2.3 × 10⁻³⁴              |
//! | 0.15      | 5.6 × 10⁻³       | 5.4 × 10⁻¹⁶              |
//! | 0.20      | 2.0 × 10⁻²       | 1.6 × 10⁻⁵               |
//!
//! Version 2 spends the array differently (debiased groups of ten observations,
//! ties decoded as erasures); its parameters are derived in
//! [`crate::extractor::v2`].
//!
//! # Use in the fuzzy extractor (syndrome construction)
//!
//! At enrolment the extractor publishes [`Code::helper`]`(w)` = w(x) mod g(x),
//! the parity-bit remainder of the voted word. At reconstruction it reads a
//! noisy w' = w ⊕ e and calls [`Code::correct`]: the remainder of w' xored with
//! the helper is e(x) mod g(x), from which the syndromes of e alone follow, and
//! w is recovered whenever wt(e) ≤ t. The helper reveals at most its parity
//! bits about w.
//!
//! # Bit order
//!
//! A word holds n bits LSB-first: bit i is `(bytes[i / 8] >> (i % 8)) & 1` and
//! is the coefficient of x^i. The helper is packed the same way (bit i =
//! coefficient of x^i of the remainder). Bits at and above n in the last word
//! byte, and at and above the parity count in the last helper byte, are ignored
//! on input and written as zero on output.
//!
//! # Constant-time argument
//!
//! [`Code::helper`] and [`Code::correct`] handle the secret PUF word, so their
//! control flow and memory-access pattern depend only on the public parameters
//! (n, t, the generator):
//!
//! * Every loop has a fixed trip count (n remainder steps, 2t Berlekamp–Massey
//!   iterations, a Chien search over all n positions); there is no early exit
//!   on a zero syndrome, on the error count or on a decoding failure.
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
//! compiler is not formally prevented from reintroducing branches; the
//! `constant_time` bench measures the result.

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};
use zeroize::Zeroize;

mod field;

use field::{ALPHA, GF_ORDER, Gf, MulTable, gf_mul, gf_mul_by, gf_pow, mask64, mul_table};

/// The largest number of errors a code built here may correct (array bounds).
pub const MAX_T: usize = 24;

/// The longest code: the natural length of BCH codes over GF(2^9).
pub const MAX_N: usize = GF_ORDER;

/// Bytes of the largest packed word.
pub const MAX_WORD_BYTES: usize = MAX_N.div_ceil(8);

const LIMBS: usize = 8;

/// A binary polynomial, bit i of limb i / 64 bit i % 64 = coefficient of x^i.
type Poly = [u64; LIMBS];

/// A binary, narrow-sense BCH code over GF(2^9), shortened to `n` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    n: usize,
    t: usize,
    parity_bits: usize,
    generator: Poly,
}

/// The version-1 outer code: BCH(455, 257, t = 23).
pub const V1: Code = Code::new(455, 23);

/// The version-2 outer code: BCH(315, 144, t = 20).
pub const V2: Code = Code::new(315, 20);

impl Code {
    /// The code of length `n` correcting `t` errors, with its generator
    /// polynomial computed at compile time when used in a `const`.
    ///
    /// # Panics
    /// If `t` is 0 or above [`MAX_T`], `n` is above [`MAX_N`], or `n` leaves
    /// no information bits.
    #[must_use]
    pub const fn new(n: usize, t: usize) -> Self {
        assert!(t >= 1 && t <= MAX_T, "t out of range");
        assert!(n <= MAX_N, "n above 511");
        let (generator, parity_bits) = generator(t);
        assert!(parity_bits < n, "no information bits left");
        Self {
            n,
            t,
            parity_bits,
            generator,
        }
    }

    /// Code length in bits.
    #[must_use]
    pub const fn n(&self) -> usize {
        self.n
    }

    /// Errors the code is guaranteed to correct.
    #[must_use]
    pub const fn t(&self) -> usize {
        self.t
    }

    /// Degree of the generator: redundancy bits, and bits in a helper value.
    #[must_use]
    pub const fn parity_bits(&self) -> usize {
        self.parity_bits
    }

    /// Information bits, n − parity.
    #[must_use]
    pub const fn k(&self) -> usize {
        self.n - self.parity_bits
    }

    /// Bytes of a packed word.
    #[must_use]
    pub const fn word_bytes(&self) -> usize {
        self.n.div_ceil(8)
    }

    /// Bytes of a packed helper value.
    #[must_use]
    pub const fn helper_bytes(&self) -> usize {
        self.parity_bits.div_ceil(8)
    }

    /// Limbs a remainder occupies (its degree is below `parity_bits`, and one
    /// more bit is needed while reducing).
    const fn limbs(&self) -> usize {
        self.parity_bits / 64 + 1
    }

    /// The helper value for `word`: the remainder `word(x) mod g(x)`, packed
    /// LSB-first into `out` (bits at and above the parity count are zero).
    ///
    /// This is the public helper data the fuzzy extractor stores at enrolment.
    /// Bits of `word` at and above n are ignored. Runs in constant time.
    ///
    /// # Panics
    /// If `word` is not [`Code::word_bytes`] long or `out` not [`Code::helper_bytes`].
    pub fn helper_into(&self, word: &[u8], out: &mut [u8]) {
        assert_eq!(word.len(), self.word_bytes(), "word length");
        assert_eq!(out.len(), self.helper_bytes(), "helper length");
        let mut r = self.remainder(word);
        for (k, byte) in out.iter_mut().enumerate() {
            *byte = (r[k / 8] >> (8 * (k % 8))) as u8;
        }
        r.zeroize();
    }

    /// Corrects a noisy word in place against its enrolment helper.
    ///
    /// Given `word` = w ⊕ e and `helper` = the helper of w, computes the
    /// syndromes of e, finds the error locator by inversionless
    /// Berlekamp–Massey and its roots by a Chien search over all n positions,
    /// and flips the located bits. On success `word` holds the decoded word
    /// (bits at and above n cleared) and the result is `Choice(1)`. Runs in
    /// constant time: the work done does not depend on the word, the helper or
    /// the errors.
    ///
    /// Returns `Choice(0)` and leaves `word` byte-for-byte unchanged when
    /// decoding fails: the locator has length above t, or does not have as
    /// many distinct roots among the n valid positions as its degree, or the
    /// corrected word does not reproduce `helper`. This is guaranteed not to
    /// happen when wt(e) ≤ t. When wt(e) > t the call either fails or succeeds
    /// with a word w'' that satisfies `helper(w'') == helper` and lies within t
    /// bits of the input (bounded-distance decoding), which may differ from w;
    /// the caller's key check must catch that case.
    ///
    /// # Panics
    /// If `word` or `helper` has the wrong length (a programming error, never
    /// a property of the data).
    #[must_use]
    pub fn correct(&self, word: &mut [u8], helper: &[u8]) -> Choice {
        assert_eq!(word.len(), self.word_bytes(), "word length");
        assert_eq!(helper.len(), self.helper_bytes(), "helper length");
        let expected = self.unpack_helper(helper);

        // r ≡ e (mod g), so r(α^j) = e(α^j) for j = 1..=2t.
        let mut r = self.remainder(word);
        for (limb, h) in r.iter_mut().zip(expected) {
            *limb ^= h;
        }
        let mut s = self.syndromes(&r);
        r.zeroize();

        let (mut lambda, len) = self.berlekamp_massey(&s);
        s.zeroize();
        let deg = self.degree(&lambda);

        let mut fixed = [0u8; MAX_WORD_BYTES];
        let fixed = &mut fixed[..word.len()];
        fixed.copy_from_slice(word);
        let roots = self.chien_flip(&lambda, fixed);
        lambda.zeroize();
        self.clear_unused_bits(fixed);

        // Defence in depth: the corrected word must lie in the helper's coset.
        let mut check = self.remainder(fixed);
        let coset_ok = check[..].ct_eq(&expected[..]);
        check.zeroize();

        let t = self.t as u32;
        let ok = !len.ct_gt(&t) & deg.ct_eq(&len) & roots.ct_eq(&deg) & coset_ok;
        for (w, f) in word.iter_mut().zip(fixed.iter()) {
            *w = u8::conditional_select(w, f, ok);
        }
        fixed.zeroize();
        ok
    }

    fn clear_unused_bits(&self, word: &mut [u8]) {
        if !self.n.is_multiple_of(8) {
            word[self.word_bytes() - 1] &= (1u8 << (self.n % 8)) - 1;
        }
    }

    /// `word(x) mod g(x)` over the n valid bits, by a fixed n-step LFSR.
    fn remainder(&self, word: &[u8]) -> Poly {
        let limbs = self.limbs();
        let (top_limb, top_bit) = (self.parity_bits / 64, self.parity_bits % 64);
        let mut r: Poly = [0; LIMBS];
        for i in (0..self.n).rev() {
            // r = r·x + w_i; bit `parity_bits` can now be set and is cancelled by g.
            let mut carry = u64::from((word[i / 8] >> (i % 8)) & 1);
            for limb in &mut r[..limbs] {
                let next = *limb >> 63;
                *limb = (*limb << 1) | carry;
                carry = next;
            }
            // The mask is loop-invariant over the limbs, and LLVM unswitches a loop on
            // a value it knows is 0 or all-ones: a branch on a secret bit, measured
            // by the constant_time bench. `black_box` hides that knowledge.
            let top = core::hint::black_box(mask64(r[top_limb] >> top_bit));
            for (limb, g) in r[..limbs].iter_mut().zip(self.generator) {
                *limb ^= g & top;
            }
        }
        r
    }

    /// Unpacks a helper, ignoring the bits at and above the parity count.
    fn unpack_helper(&self, helper: &[u8]) -> Poly {
        let mut r: Poly = [0; LIMBS];
        for (k, byte) in helper.iter().enumerate() {
            r[k / 8] |= u64::from(*byte) << (8 * (k % 8));
        }
        let (top_limb, top_bit) = (self.parity_bits / 64, self.parity_bits % 64);
        r[top_limb] &= (1u64 << top_bit) - 1;
        for limb in &mut r[top_limb + 1..] {
            *limb = 0;
        }
        r
    }

    /// `S_j = r(α^j)` for `j = 1 ..= 2t` (index 0 is unused and zero). Odd
    /// syndromes by Horner evaluation; even ones as `S_{2j} = S_j^2`.
    fn syndromes(&self, r: &Poly) -> [Gf; 2 * MAX_T + 1] {
        let mut s = [0; 2 * MAX_T + 1];
        for j in 1..=2 * self.t {
            if j % 2 == 1 {
                let x = &ALPHA_POW[j];
                let mut acc: Gf = 0;
                for i in (0..self.parity_bits).rev() {
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

    /// Inversionless Berlekamp–Massey (Sarwate–Shanbhag iBM) over all 2t
    /// syndromes, with no early exit. Returns the error-locator polynomial Λ
    /// (coefficients of x^0..x^t, scaled by a nonzero constant) and the final
    /// LFSR length L.
    ///
    /// Λ and the auxiliary polynomial B are kept to t + 1 coefficients. When the
    /// final L ≤ t, every coefficient that truncation could drop is provably zero,
    /// so Λ is exact; when L > t the decoder rejects regardless.
    fn berlekamp_massey(&self, s: &[Gf; 2 * MAX_T + 1]) -> ([Gf; MAX_T + 1], u32) {
        let t = self.t;
        let mut lambda = [0 as Gf; MAX_T + 1];
        let mut b = [0 as Gf; MAX_T + 1];
        lambda[0] = 1;
        b[0] = 1;
        let mut gamma: Gf = 1;
        let mut len: u32 = 0;

        for r in 0..2 * t {
            // δ = Σ_i Λ_i S_{r+1-i}, over the indices that exist (public bound).
            let mut delta: Gf = 0;
            for (i, l) in lambda[..=t].iter().enumerate().take(r + 1) {
                delta ^= gf_mul(*l, s[r + 1 - i]);
            }

            // Swap when δ ≠ 0 and 2L ≤ r.
            let swap = !delta.ct_eq(&0) & !(2 * len).ct_gt(&(r as u32));

            // Λ' = γΛ − δ·x·B, and B' = Λ (swap) or x·B (no swap).
            let mut next = [0 as Gf; MAX_T + 1];
            for (i, n) in next[..=t].iter_mut().enumerate() {
                let xb = if i == 0 { 0 } else { b[i - 1] };
                *n = gf_mul(gamma, lambda[i]) ^ gf_mul(delta, xb);
            }
            for i in (0..=t).rev() {
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
    fn degree(&self, lambda: &[Gf; MAX_T + 1]) -> u32 {
        let mut deg: u32 = 0;
        for (j, c) in lambda[..=self.t].iter().enumerate() {
            deg = u32::conditional_select(&deg, &(j as u32), !c.ct_eq(&0));
        }
        deg
    }

    /// Chien search over every valid position: flips bit i of `out` wherever
    /// Λ(α^{-i}) = 0, for all i in 0..n, and returns the number of roots found.
    fn chien_flip(&self, lambda: &[Gf; MAX_T + 1], out: &mut [u8]) -> u32 {
        let t = self.t;
        let mut terms = *lambda; // terms[j] = Λ_j · α^{-ij} at step i
        let mut roots: u32 = 0;
        for i in 0..self.n {
            let sum = terms[..=t].iter().fold(0, |acc, term| acc ^ term);
            let is_root = sum.ct_eq(&0).unwrap_u8();
            out[i / 8] ^= is_root << (i % 8);
            roots += u32::from(is_root);
            for (term, step) in terms[..=t].iter_mut().zip(&CHIEN_STEP).skip(1) {
                *term = gf_mul_by(*term, step);
            }
        }
        terms.zeroize();
        roots
    }
}

/// `ALPHA_POW[j]` multiplies by α^j, for `j = 0 ..= 2·MAX_T` (syndrome evaluation points).
const ALPHA_POW: [MulTable; 2 * MAX_T + 1] = {
    let mut table = [[0; 9]; 2 * MAX_T + 1];
    let mut j = 0;
    while j < table.len() {
        table[j] = mul_table(gf_pow(ALPHA, j as u16));
        j += 1;
    }
    table
};

/// `CHIEN_STEP[j]` multiplies by α^{-j}, for `j = 0 ..= MAX_T` (Chien search steps).
const CHIEN_STEP: [MulTable; MAX_T + 1] = {
    let alpha_inv = field::gf_inv(ALPHA);
    let mut table = [[0; 9]; MAX_T + 1];
    let mut j = 0;
    while j < table.len() {
        table[j] = mul_table(gf_pow(alpha_inv, j as u16));
        j += 1;
    }
    table
};

/// g(x) = lcm(m_1, …, m_2t) and its degree: the product of the minimal
/// polynomials of one representative α^j of each distinct cyclotomic coset
/// {j, 2j, 4j, …} (mod 511) met for j = 1..=2t.
const fn generator(t: usize) -> (Poly, usize) {
    let mut seen = [false; GF_ORDER];
    let mut g: Poly = [0; LIMBS];
    g[0] = 1;
    let mut degree = 0;
    let mut j = 1;
    while j <= 2 * t {
        if !seen[j] {
            // m_j(x) = Π over the coset of (x + α^c), built one factor at a time.
            let mut m = [0 as Gf; 10];
            m[0] = 1;
            let mut c = j;
            loop {
                seen[c] = true;
                let root = gf_pow(ALPHA, c as u16);
                let mut k = m.len();
                while k > 0 {
                    k -= 1;
                    let shifted = if k == 0 { 0 } else { m[k - 1] };
                    m[k] = shifted ^ gf_mul(m[k], root);
                }
                degree += 1;
                c = 2 * c % GF_ORDER;
                if c == j {
                    break;
                }
            }
            // A minimal polynomial has binary coefficients: multiply g by it.
            let mut product: Poly = [0; LIMBS];
            let mut k = 0;
            while k < m.len() {
                assert!(m[k] <= 1, "minimal polynomial coefficient not binary");
                if m[k] == 1 {
                    product = xor(product, shl(g, k));
                }
                k += 1;
            }
            g = product;
        }
        j += 1;
    }
    (g, degree)
}

const fn shl(p: Poly, s: usize) -> Poly {
    let mut out: Poly = [0; LIMBS];
    let mut i = 0;
    while i < LIMBS {
        out[i] = p[i] << s;
        if s > 0 && i > 0 {
            out[i] |= p[i - 1] >> (64 - s);
        }
        i += 1;
    }
    out
}

const fn xor(a: Poly, b: Poly) -> Poly {
    let mut out = a;
    let mut i = 0;
    while i < LIMBS {
        out[i] ^= b[i];
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------
// Version 1: the fixed-size API construction 1 was written against
// ---------------------------------------------------------------------------

/// Version-1 code length in bits after shortening (455 repetition-9 groups of PUF cells).
pub const N: usize = V1.n();

/// Errors the version-1 code is guaranteed to correct (designed distance 2T + 1 = 47).
pub const T: usize = V1.t();

/// Degree of the version-1 generator polynomial: redundancy bits, and bits in a helper value.
pub const PARITY_BITS: usize = V1.parity_bits();

/// Version-1 information bits: `N - PARITY_BITS` = 257.
pub const K: usize = V1.k();

/// Bytes of a packed version-1 word (57; the top bit of the last byte is unused).
pub const WORD_BYTES: usize = V1.word_bytes();

/// Bytes of a packed version-1 helper value (25; the top two bits of the last byte are unused).
pub const HELPER_BYTES: usize = V1.helper_bytes();

const _: () = assert!(WORD_BYTES == 57 && HELPER_BYTES == 25 && K == 257 && PARITY_BITS == 198);
const _: () = assert!(V2.k() == 144 && V2.parity_bits() == 171);

/// The version-1 helper value for `word` (see [`Code::helper_into`]).
#[must_use]
pub fn helper(word: &[u8; WORD_BYTES]) -> [u8; HELPER_BYTES] {
    let mut out = [0u8; HELPER_BYTES];
    V1.helper_into(word, &mut out);
    out
}

/// Corrects a noisy version-1 word in place (see [`Code::correct`]).
#[must_use]
pub fn correct(word: &mut [u8; WORD_BYTES], helper: &[u8; HELPER_BYTES]) -> Choice {
    V1.correct(word, helper)
}

#[cfg(test)]
mod tests;
