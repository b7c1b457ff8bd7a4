//! Integration tests for the BCH outer code of the fuzzy extractor.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

use proptest::prelude::*;
use proptest::sample::subsequence;
use rot_core::bch::{HELPER_BYTES, N, PARITY_BITS, T, V2, WORD_BYTES, correct, helper};

/// Clears the unused top bit so a word is a canonical 455-bit value.
fn canonical(mut w: [u8; WORD_BYTES]) -> [u8; WORD_BYTES] {
    w[WORD_BYTES - 1] &= (1u8 << (N % 8)) - 1;
    w
}

fn to_word(v: &[u8]) -> [u8; WORD_BYTES] {
    canonical(v.try_into().expect("57 bytes"))
}

fn flip(word: &mut [u8; WORD_BYTES], positions: &[usize]) {
    for &p in positions {
        word[p / 8] ^= 1 << (p % 8);
    }
}

fn hamming(a: &[u8; WORD_BYTES], b: &[u8; WORD_BYTES]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Enrols `word`, applies the errors and decodes; returns (ok, decoded).
fn roundtrip(word: &[u8; WORD_BYTES], positions: &[usize]) -> (bool, [u8; WORD_BYTES]) {
    let h = helper(word);
    let mut noisy = *word;
    flip(&mut noisy, positions);
    let ok = bool::from(correct(&mut noisy, &h));
    (ok, noisy)
}

/// A small deterministic generator (splitmix64) for the non-proptest sweeps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn word(&mut self) -> [u8; WORD_BYTES] {
        let mut w = [0u8; WORD_BYTES];
        for b in &mut w {
            *b = self.next() as u8;
        }
        canonical(w)
    }

    /// `weight` distinct positions in `0..N`.
    fn positions(&mut self, weight: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..N).collect();
        for i in 0..weight {
            let j = i + (self.next() % (N - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(weight);
        all
    }
}

fn word_strategy() -> impl Strategy<Value = [u8; WORD_BYTES]> {
    prop::collection::vec(any::<u8>(), WORD_BYTES).prop_map(|v| to_word(&v))
}

fn errors_of_weight(lo: usize, hi: usize) -> impl Strategy<Value = Vec<usize>> {
    (lo..=hi).prop_flat_map(|w| subsequence((0..N).collect::<Vec<_>>(), w))
}

#[test]
fn bch_constants_are_consistent() {
    assert_eq!(N, 455);
    assert_eq!(T, 23);
    assert_eq!(PARITY_BITS, 198);
    assert_eq!(rot_core::bch::K, 257);
    assert_eq!(WORD_BYTES, 57);
    assert_eq!(HELPER_BYTES, 25);
}

#[test]
fn bch_every_weight_up_to_t_is_corrected() {
    let mut rng = Rng(0x5eed_0001);
    for weight in 0..=T {
        for _ in 0..20 {
            let word = rng.word();
            let positions = rng.positions(weight);
            let (ok, out) = roundtrip(&word, &positions);
            assert!(ok, "weight {weight} positions {positions:?}");
            assert_eq!(out, word, "weight {weight} positions {positions:?}");
        }
    }
}

#[test]
fn bch_every_single_position_is_corrected() {
    let mut rng = Rng(0x5eed_0002);
    let word = rng.word();
    for p in 0..N {
        let (ok, out) = roundtrip(&word, &[p]);
        assert!(ok, "position {p}");
        assert_eq!(out, word, "position {p}");
    }
}

#[test]
fn bch_bursts_at_the_end_are_corrected() {
    let mut rng = Rng(0x5eed_0003);
    let word = rng.word();
    // The full 15-bit burst 440..=454 and every sub-burst ending at 454.
    for start in 440..N {
        let positions: Vec<usize> = (start..N).collect();
        let (ok, out) = roundtrip(&word, &positions);
        assert!(ok, "burst {start}..{N}");
        assert_eq!(out, word, "burst {start}..{N}");
    }
    // T errors packed at the very end (432..=454).
    let positions: Vec<usize> = (N - T..N).collect();
    let (ok, out) = roundtrip(&word, &positions);
    assert!(ok);
    assert_eq!(out, word);
}

#[test]
fn bch_zero_and_all_ones_words() {
    for word in [[0u8; WORD_BYTES], canonical([0xFF; WORD_BYTES])] {
        let (ok, out) = roundtrip(&word, &[0, 100, 200, 300, 454]);
        assert!(ok);
        assert_eq!(out, word);
    }
}

#[test]
fn bch_unused_word_bit_is_ignored() {
    let mut rng = Rng(0x5eed_0004);
    for weight in [0, 1, 7, T, T + 1, 40] {
        let word = rng.word();
        let positions = rng.positions(weight);
        let mut dirty = word;
        dirty[WORD_BYTES - 1] |= 0x80;
        let h = helper(&word);
        assert_eq!(helper(&dirty), h, "helper must ignore bit 455");
        assert_eq!(h[HELPER_BYTES - 1] >> (PARITY_BITS % 8), 0);

        let mut clean_noisy = word;
        flip(&mut clean_noisy, &positions);
        let mut dirty_noisy = clean_noisy;
        dirty_noisy[WORD_BYTES - 1] |= 0x80;

        let ok_clean = bool::from(correct(&mut clean_noisy, &h));
        let ok_dirty = bool::from(correct(&mut dirty_noisy, &h));
        assert_eq!(ok_clean, ok_dirty, "weight {weight}");
        if ok_dirty {
            // Success writes the unused bit as zero.
            assert_eq!(dirty_noisy, clean_noisy, "weight {weight}");
        } else {
            // Failure leaves the input, garbage bit included, untouched.
            assert_eq!(canonical(dirty_noisy), clean_noisy, "weight {weight}");
            assert_eq!(dirty_noisy[WORD_BYTES - 1] & 0x80, 0x80);
        }
        if weight <= T {
            assert!(ok_dirty);
            assert_eq!(dirty_noisy, word);
        }
    }
}

#[test]
fn bch_wrong_helper_fails_or_stays_in_its_coset() {
    // Decoding against an unrelated helper must never be a silent success
    // that violates the bounded-distance contract.
    let mut rng = Rng(0x5eed_0005);
    for _ in 0..50 {
        let word = rng.word();
        let other = helper(&rng.word());
        let mut w = word;
        let ok = bool::from(correct(&mut w, &other));
        if ok {
            assert_eq!(helper(&w), other);
            assert!(hamming(&w, &word) <= T as u32);
        } else {
            assert_eq!(w, word);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bch_prop_corrects_up_to_t(word in word_strategy(), positions in errors_of_weight(0, T)) {
        let (ok, out) = roundtrip(&word, &positions);
        prop_assert!(ok);
        prop_assert_eq!(out, word);
    }

    #[test]
    fn bch_prop_beyond_t_is_safe(word in word_strategy(), positions in errors_of_weight(T + 1, 70)) {
        let h = helper(&word);
        let mut received = word;
        flip(&mut received, &positions);
        let mut out = received;
        let ok = bool::from(correct(&mut out, &h));
        if ok {
            prop_assert_eq!(helper(&out), h);
            prop_assert!(hamming(&out, &received) <= T as u32);
            prop_assert_eq!(out[WORD_BYTES - 1] >> (N % 8), 0);
        } else {
            prop_assert_eq!(out, received);
        }
    }

    /// Far more than T errors relative to the enrolled word, but within T of
    /// another codeword: bounded-distance decoding legitimately lands on that
    /// neighbour and reports success (the key check downstream catches it).
    #[test]
    fn bch_prop_decodes_to_the_codeword_within_t(
        word in word_strategy(),
        high in word_strategy(),
        positions in errors_of_weight(0, T),
    ) {
        // A random codeword: message bits at PARITY_BITS.., remainder below.
        let mut codeword = high;
        for i in 0..PARITY_BITS {
            codeword[i / 8] &= !(1 << (i % 8));
        }
        let rem = helper(&codeword);
        for (c, r) in codeword.iter_mut().zip(rem) {
            *c ^= r;
        }
        prop_assert_eq!(helper(&codeword), [0u8; HELPER_BYTES]);

        let h = helper(&word);
        let mut neighbour = word;
        for (n, c) in neighbour.iter_mut().zip(codeword) {
            *n ^= c;
        }
        let mut received = neighbour;
        flip(&mut received, &positions);
        let mut out = received;
        prop_assert!(bool::from(correct(&mut out, &h)));
        prop_assert_eq!(out, neighbour);
    }
}

/// Remainders computed by an independent implementation (Python: GF(2^9) by log tables,
/// the generator from cyclotomic cosets, schoolbook polynomial division over GF(2) on big
/// integers), for random words: (n, t, word LSB-first hex, remainder LSB-first hex). The
/// same script reproduced construction 1's generator constant bit for bit.
const INDEPENDENT_REMAINDERS: &[(usize, usize, &str, &str)] = &[
    (
        455,
        23,
        "63bdb303e412ceb9d8946868129a8c9f428ccf05fad1db04f972eea233f60cd21bffb764b8935c71f3308aea51462091e6fd352f2822231b43",
        "274b46b18efad7f4f202d63b62b2444984a0d882e0b403b303",
    ),
    (
        455,
        23,
        "de4108fbaf8175d2842e638e7b67eea700b6ffae1b496713d06b34ec4e1d1ba0dcce1ef218a0faafe7028f4222ff29247b59898d0015a60633",
        "dee07f4efd6e9b2950d2e6cf6f5fc02558a8c14045c9620612",
    ),
    (
        455,
        23,
        "ab75cc6f05521b647773a8e6c9d2ee6a5e464c559f0d21ca8f878f3a306b3957b1ffaa183cde230b359412fb6e9300300f3969d4a16e5b475e",
        "3fd1aa56d4df26a51a8e0e91985e34056b1e696dcaaafea20b",
    ),
    (
        315,
        20,
        "2ef456535345af86fdc761d9b04f78e01c06d29253f7d5301b77fbead08b53a852ae008350826105",
        "66ce9117e3884c4b274b63396690fb5082ac31f0d406",
    ),
    (
        315,
        20,
        "6c249261116462f60f765b17f1132b7bbfd4276e6dcf3b17e7bb70992e3b899014e68502b6210204",
        "1e44fc4dd5ec6511452178357cd6debc6ffe62521300",
    ),
    (
        315,
        20,
        "27291bbff6884b5394a449d782d0cec261f9c1acbe79129aa08f9c862aa2dc9c2ea035ab42e01d06",
        "f381d5a14900330cae8b3d8dc957b3482b0e87119807",
    ),
];

#[test]
fn remainders_match_an_independent_implementation() {
    for &(n, t, word, remainder) in INDEPENDENT_REMAINDERS {
        let code = [rot_core::bch::V1, rot_core::bch::V2]
            .into_iter()
            .find(|c| c.n() == n && c.t() == t)
            .expect("a code of this crate");
        let word = hex::decode(word).expect("hex");
        let mut helper = vec![0u8; code.helper_bytes()];
        code.helper_into(&word, &mut helper);
        assert_eq!(hex::encode(helper), remainder, "BCH({n}, t = {t})");
    }
}

fn v2_word_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), V2.word_bytes()).prop_map(|mut v| {
        let last = v.len() - 1;
        v[last] &= (1u8 << (V2.n() % 8)) - 1;
        v
    })
}

fn v2_errors(lo: usize, hi: usize) -> impl Strategy<Value = Vec<usize>> {
    (lo..=hi).prop_flat_map(|w| subsequence((0..V2.n()).collect::<Vec<_>>(), w))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Construction 2's code corrects every pattern of up to t = 20 errors.
    #[test]
    fn v2_prop_corrects_up_to_t(word in v2_word_strategy(), positions in v2_errors(0, V2.t())) {
        let mut helper = vec![0u8; V2.helper_bytes()];
        V2.helper_into(&word, &mut helper);
        let mut noisy = word.clone();
        for &p in &positions {
            noisy[p / 8] ^= 1 << (p % 8);
        }
        prop_assert!(bool::from(V2.correct(&mut noisy, &helper)));
        prop_assert_eq!(noisy, word);
    }

    /// Beyond t it fails leaving the word untouched, or lands within t in the helper's coset.
    #[test]
    fn v2_prop_beyond_t_is_safe(word in v2_word_strategy(), positions in v2_errors(V2.t() + 1, 60)) {
        let mut helper = vec![0u8; V2.helper_bytes()];
        V2.helper_into(&word, &mut helper);
        let mut received = word.clone();
        for &p in &positions {
            received[p / 8] ^= 1 << (p % 8);
        }
        let mut out = received.clone();
        if bool::from(V2.correct(&mut out, &helper)) {
            let mut check = vec![0u8; V2.helper_bytes()];
            V2.helper_into(&out, &mut check);
            prop_assert_eq!(check, helper);
            let distance: u32 = out.iter().zip(&received).map(|(a, b)| (a ^ b).count_ones()).sum();
            prop_assert!(distance <= V2.t() as u32);
        } else {
            prop_assert_eq!(out, received);
        }
    }
}

#[test]
fn v2_every_weight_up_to_t_and_every_position_is_corrected() {
    let mut rng = Rng(0x5eed_0015);
    for weight in (0..=V2.t()).chain(core::iter::repeat_n(V2.t(), 40)) {
        let mut word = rng.word()[..V2.word_bytes()].to_vec();
        let last = word.len() - 1;
        word[last] &= (1u8 << (V2.n() % 8)) - 1;
        let mut helper = vec![0u8; V2.helper_bytes()];
        V2.helper_into(&word, &mut helper);
        let positions: Vec<usize> = rng
            .positions(weight)
            .into_iter()
            .map(|p| p % V2.n())
            .collect();
        let mut noisy = word.clone();
        let mut flipped = std::collections::BTreeSet::new();
        for &p in &positions {
            if flipped.insert(p) {
                noisy[p / 8] ^= 1 << (p % 8);
            }
        }
        assert!(
            bool::from(V2.correct(&mut noisy, &helper)),
            "weight {weight}"
        );
        assert_eq!(noisy, word);
    }
    // A single error at each of the 315 positions, including the last.
    let word = vec![0x3cu8; V2.word_bytes()];
    let mut helper = vec![0u8; V2.helper_bytes()];
    V2.helper_into(&word, &mut helper);
    for p in 0..V2.n() {
        let mut noisy = word.clone();
        noisy[p / 8] ^= 1 << (p % 8);
        assert!(bool::from(V2.correct(&mut noisy, &helper)), "position {p}");
        let mut want = word.clone();
        let last = want.len() - 1;
        want[last] &= (1u8 << (V2.n() % 8)) - 1;
        assert_eq!(noisy, want);
    }
}
