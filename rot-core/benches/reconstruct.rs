//! Device-side cost of using the root of trust: one power-up read, the fuzzy
//! extractor's decode, and the P-256 key derivation, separately and together.
//! Needs no network and no service: `cargo bench -p rot-core --bench reconstruct`
//! (`-- v2` for construction 2 only).
#![allow(clippy::expect_used, reason = "a bench fails loudly")]

use criterion::{Criterion, criterion_group, criterion_main};
use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{
    Construction, EnrolMode, enrol_with, reconstruct, reconstruct_from_readout,
};
use rot_core::hazmat::READOUT_BYTES;
use rot_core::{EntropySource, KeySlot, bch};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let chip = ChipSeed::from_bytes([0x5e; 32]);
    let mut source = EmulatedChip::new(&chip, OperatingConditions::NOMINAL, [1; 32]);
    let enrolment = enrol_with(
        &mut source,
        None,
        EnrolMode::FirstEnrolment,
        Construction::V1,
    )
    .expect("enrols");
    let helper = enrolment.helper_data;
    let helper_v2 = enrol_with(
        &mut source,
        None,
        EnrolMode::FirstEnrolment,
        Construction::V2,
    )
    .expect("enrols")
    .helper_data;
    let mut readout = [0u8; READOUT_BYTES];
    source.read(&mut readout).expect("emulator reads");

    c.bench_function("emulator_readout", |b| {
        b.iter(|| {
            let mut out = [0u8; READOUT_BYTES];
            source.read(&mut out).expect("emulator reads");
            black_box(out)
        });
    });
    // The decoder does fixed work: 0 and 23 errors should cost the same.
    let mut word = [0u8; bch::WORD_BYTES];
    word.iter_mut()
        .enumerate()
        .for_each(|(i, byte)| *byte = (i as u8).wrapping_mul(37));
    word[bch::WORD_BYTES - 1] &= 0x7f;
    let parity = bch::helper(&word);
    c.bench_function("bch_helper_455", |b| {
        b.iter(|| black_box(bch::helper(black_box(&word))));
    });
    for errors in [0, bch::T] {
        let mut noisy = word;
        for position in (0..errors).map(|i| i * 19 + 3) {
            noisy[position / 8] ^= 1 << (position % 8);
        }
        c.bench_function(&format!("bch_correct_455_{errors}_errors"), |b| {
            b.iter(|| {
                let mut received = black_box(noisy);
                black_box(bch::correct(&mut received, &parity))
            });
        });
    }
    // Construction 2's outer code: 16 of these run per reconstruction.
    let code = bch::V2;
    let mut word_v2 = [0u8; 40];
    word_v2.copy_from_slice(&word[..40]);
    word_v2[39] &= 0x07;
    let mut parity_v2 = [0u8; 22];
    code.helper_into(&word_v2, &mut parity_v2);
    for errors in [0, code.t()] {
        let mut noisy = word_v2;
        for position in (0..errors).map(|i| i * 13 + 3) {
            noisy[position / 8] ^= 1 << (position % 8);
        }
        c.bench_function(&format!("bch_correct_315_{errors}_errors"), |b| {
            b.iter(|| {
                let mut received = black_box(noisy);
                black_box(code.correct(&mut received, &parity_v2))
            });
        });
    }
    c.bench_function("decode_readout_to_seeds", |b| {
        b.iter(|| black_box(reconstruct_from_readout(&readout, &helper).expect("reconstructs")));
    });
    c.bench_function("decode_readout_to_seeds_v2", |b| {
        b.iter(|| black_box(reconstruct_from_readout(&readout, &helper_v2).expect("reconstructs")));
    });
    let seeds = reconstruct_from_readout(&readout, &helper).expect("reconstructs");
    c.bench_function("derive_esk_p256", |b| {
        b.iter(|| black_box(seeds.enrolment_key().public_key()));
    });
    let mut certificate_verify = vec![0x20; 64];
    certificate_verify.extend_from_slice(b"TLS 1.3, client CertificateVerify\0");
    certificate_verify.extend_from_slice(&[0xab; 32]);
    c.bench_function("derive_dsk_and_sign", |b| {
        b.iter(|| {
            let key = seeds.device_key(KeySlot::FIRST);
            black_box(
                key.sign_tls13_client_certificate_verify(&certificate_verify)
                    .expect("valid content"),
            )
        });
    });
    c.bench_function("reconstruct_and_derive_esk", |b| {
        b.iter(|| {
            let seeds = reconstruct(&mut source, &helper).expect("reconstructs");
            black_box(seeds.enrolment_key().public_key())
        });
    });
    // The goal: read + decode (soft, 16 BCH runs) + derive ESK within 2 ms.
    c.bench_function("reconstruct_and_derive_esk_v2", |b| {
        b.iter(|| {
            let seeds = reconstruct(&mut source, &helper_v2).expect("reconstructs");
            black_box(seeds.enrolment_key().public_key())
        });
    });
}

criterion_group!(reconstruct_benches, benches);
criterion_main!(reconstruct_benches);
