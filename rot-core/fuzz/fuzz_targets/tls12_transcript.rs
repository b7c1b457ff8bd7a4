//! A TLS 1.2 client CertificateVerify transcript is mostly bytes the server chose: checking
//! any bytes must never panic, and whatever passes a check is never an attestation message
//! (those start with 0x00 and the domain label).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rot_core::attestation::DOMAIN;
use rot_core::keys::tls::{TlsVersion, certificate_verify_version};

fuzz_target!(|data: &[u8]| {
    match certificate_verify_version(data) {
        Some(TlsVersion::Tls12) => assert_eq!(data[0], 0x01),
        Some(TlsVersion::Tls13) => assert_eq!(data[0], 0x20),
        None => return,
    }
    assert!(!data[2..].starts_with(DOMAIN));
});
