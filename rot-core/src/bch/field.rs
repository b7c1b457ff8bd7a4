//! GF(2^9) arithmetic in polynomial basis, constant time in every operand.

/// An element of GF(2^9) in polynomial basis; always reduced (< 512).
pub(super) type Gf = u16;

/// Multiplicative group order of GF(2^9).
pub(super) const GF_ORDER: usize = 511;

/// x^9 + x^4 + 1.
const GF_POLY: u16 = 0x211;

/// α, the class of x.
pub(super) const ALPHA: Gf = 2;

/// All-ones if the low bit of `bit` is 1, else all-zeros.
const fn mask16(bit: u16) -> u16 {
    0u16.wrapping_sub(bit & 1)
}

/// All-ones if the low bit of `bit` is 1, else all-zeros.
pub(super) const fn mask64(bit: u64) -> u64 {
    0u64.wrapping_sub(bit & 1)
}

/// Constant-time product in GF(2^9): Horner over the nine bits of `b`, each
/// step a doubling with masked reduction and a masked addition of `a`.
pub(super) const fn gf_mul(a: Gf, b: Gf) -> Gf {
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
pub(super) const fn gf_pow(a: Gf, e: u16) -> Gf {
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
pub(super) const fn gf_inv(a: Gf) -> Gf {
    gf_pow(a, (GF_ORDER - 1) as u16)
}

/// Multiplication by a public constant `c` as a GF(2)-linear map: column k is
/// `c · x^k`, so `c · a` is the xor of the columns selected by the bits of `a`.
pub(super) type MulTable = [Gf; 9];

/// The columns of multiplication by `c`.
pub(super) const fn mul_table(c: Gf) -> MulTable {
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
pub(super) fn gf_mul_by(a: Gf, cols: &MulTable) -> Gf {
    let mut r: Gf = 0;
    for (k, col) in cols.iter().enumerate() {
        r ^= col & mask16(a >> k);
    }
    r
}
