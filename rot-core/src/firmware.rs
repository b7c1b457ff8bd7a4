//! What a device runs: the firmware measurement, and how a certificate names it.
//!
//! TCG DICE's layering idea: a layer's keys are derived from the secret of the layer below and
//! the measurement of the layer above, so that other code gets other keys. Here the secret is
//! a device seed and the measurement is the SHA-256 of the firmware image that runs; the key
//! derived from both is the firmware-bound *alias key* ([`crate::keys::AliasKey`]):
//!
//! ```text
//!  firmware image ──SHA-256──▶ measurement M (32 bytes, public)
//!  seed s ──HKDF-SHA256(salt "oxroot/dice-cdi/v1", info M)──▶ CDI (32 bytes, secret)
//!  CDI ──HKDF-SHA256(salt "oxroot/p256-scalar/v1", info "alias"), FIPS 186-5 A.2.1──▶ alias key
//!  certificate of the alias key ── TcbInfo extension (2.23.133.5.4.1): fwids [{sha256, M}]
//! ```
//!
//! Change one bit of the image and M changes, so the CDI and the alias key change: a
//! certificate of the alias key names exactly the firmware that can use it. The measurement is
//! public; the CDI and the key are derived when they are used and never stored.
//!
//! The TcbInfo encoding follows the TCG DICE Attestation Architecture (`DiceTcbInfo`, only its
//! `fwids` field: one `FWID { hashAlg id-sha256, digest M }`), so that any DICE-aware verifier
//! reads it. It is fixed-size, so it is built here without allocation and shared by the
//! service that writes it and the device that checks it.

pub mod image;
pub mod manifest;

use core::fmt;
use core::str::FromStr;

use sha2::{Digest, Sha256};

/// Length of a measurement: a SHA-256 digest.
pub const MEASUREMENT_BYTES: usize = 32;

/// The firmware measurement: SHA-256 of the image that runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FirmwareMeasurement([u8; MEASUREMENT_BYTES]);

impl FirmwareMeasurement {
    /// Wraps a SHA-256 digest computed elsewhere (by a boot ROM, a loader, or [`Measurer`]).
    #[must_use]
    pub const fn from_digest(digest: [u8; MEASUREMENT_BYTES]) -> Self {
        Self(digest)
    }

    /// Measures a whole image held in memory.
    #[must_use]
    pub fn of_image(image: &[u8]) -> Self {
        let mut measurer = Measurer::new();
        measurer.update(image);
        measurer.finish()
    }

    /// The 32 digest bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; MEASUREMENT_BYTES] {
        &self.0
    }

    /// The value (DER) of the TcbInfo certificate extension naming this measurement:
    /// `DiceTcbInfo { fwids [6] { FWID { hashAlg id-sha256, digest } } }`.
    #[must_use]
    pub fn tcb_info_der(&self) -> [u8; TCB_INFO_DER_BYTES] {
        let mut der = [0u8; TCB_INFO_DER_BYTES];
        der[..TCB_INFO_DER_PREFIX.len()].copy_from_slice(&TCB_INFO_DER_PREFIX);
        der[TCB_INFO_DER_PREFIX.len()..].copy_from_slice(&self.0);
        der
    }

    /// Reads the measurement back from a TcbInfo extension value, if it is exactly the form
    /// [`FirmwareMeasurement::tcb_info_der`] writes (one SHA-256 FWID, no other field).
    #[must_use]
    pub fn from_tcb_info_der(der: &[u8]) -> Option<Self> {
        let digest = der.strip_prefix(TCB_INFO_DER_PREFIX.as_slice())?;
        digest.try_into().ok().map(Self)
    }
}

impl fmt::Display for FirmwareMeasurement {
    /// 64 lowercase hex characters, as `sha256sum` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for FirmwareMeasurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FirmwareMeasurement({self})")
    }
}

/// A string is not a measurement: it must be exactly 64 hex characters (SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidMeasurement;

impl fmt::Display for InvalidMeasurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a firmware measurement is exactly 64 hex characters (SHA-256 of the image)")
    }
}

impl core::error::Error for InvalidMeasurement {}

impl FromStr for FirmwareMeasurement {
    type Err = InvalidMeasurement;

    /// 64 hex characters, either case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.as_bytes();
        if text.len() != 2 * MEASUREMENT_BYTES {
            return Err(InvalidMeasurement);
        }
        let mut bytes = [0u8; MEASUREMENT_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Ok(Self(bytes))
    }
}

fn hex_value(digit: u8) -> Result<u8, InvalidMeasurement> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(InvalidMeasurement),
    }
}

/// Measures an image that arrives in pieces (a file read in blocks, flash pages).
#[derive(Clone, Debug, Default)]
pub struct Measurer(Sha256);

impl Measurer {
    /// An empty measurement in progress.
    #[must_use]
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    /// Adds the next bytes of the image.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The measurement of everything added.
    #[must_use]
    pub fn finish(self) -> FirmwareMeasurement {
        FirmwareMeasurement(self.0.finalize().into())
    }
}

/// The TcbInfo extension's OID, tcg-dice-TcbInfo `{2 23 133 5 4 1}` (TCG DICE Attestation
/// Architecture: tcg `{2 23 133}`, tcg-dice `{tcg platformClass(5) 4}`, TcbInfo `{tcg-dice 1}`).
pub const TCB_INFO_OID: &[u64] = &[2, 23, 133, 5, 4, 1];
/// The same OID in dotted form.
pub const TCB_INFO_OID_TEXT: &str = "2.23.133.5.4.1";
/// Length of [`FirmwareMeasurement::tcb_info_der`].
pub const TCB_INFO_DER_BYTES: usize = TCB_INFO_DER_PREFIX.len() + MEASUREMENT_BYTES;

/// Everything before the digest:
///
/// ```text
///  30 31                      DiceTcbInfo SEQUENCE, 49 bytes
///    a6 2f                    fwids [6] IMPLICIT FWIDLIST (SEQUENCE OF), 47 bytes
///      30 2d                  FWID SEQUENCE, 45 bytes
///        06 09 608648016503040201   hashAlg OBJECT IDENTIFIER id-sha256 (2.16.840.1.101.3.4.2.1)
///        04 20                digest OCTET STRING, 32 bytes (the measurement follows)
/// ```
const TCB_INFO_DER_PREFIX: [u8; 19] = [
    0x30, 0x31, 0xa6, 0x2f, 0x30, 0x2d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
    0x01, 0x04, 0x20,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_are_sha256_of_the_image_however_it_is_fed() {
        // FIPS 180-2 / NIST CSRC example: SHA-256("abc").
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            std::format!("{}", FirmwareMeasurement::of_image(b"abc")),
            abc
        );
        let mut measurer = Measurer::new();
        measurer.update(b"a");
        measurer.update(b"");
        measurer.update(b"bc");
        assert_eq!(measurer.finish(), FirmwareMeasurement::of_image(b"abc"));
    }

    #[test]
    fn measurements_round_trip_through_text_in_either_case() {
        let measurement = FirmwareMeasurement::of_image(b"image");
        let text = std::format!("{measurement}");
        assert_eq!(text.parse(), Ok(measurement));
        assert_eq!(text.to_uppercase().parse(), Ok(measurement));
        assert_eq!(
            text[..63].parse::<FirmwareMeasurement>(),
            Err(InvalidMeasurement)
        );
        assert_eq!(
            std::format!("{}g", &text[..63]).parse::<FirmwareMeasurement>(),
            Err(InvalidMeasurement)
        );
    }

    #[test]
    fn the_tcb_info_lengths_are_consistent_and_read_back() {
        let measurement = FirmwareMeasurement::from_digest([0x5a; 32]);
        let der = measurement.tcb_info_der();
        assert_eq!(der.len(), 51);
        // Each length byte covers exactly what follows it.
        assert_eq!(usize::from(der[1]), der.len() - 2);
        assert_eq!(usize::from(der[3]), der.len() - 4);
        assert_eq!(usize::from(der[5]), der.len() - 6);
        assert_eq!(usize::from(der[7]), 9);
        assert_eq!(usize::from(der[18]), 32);
        assert_eq!(&der[19..], measurement.as_bytes());
        assert_eq!(
            FirmwareMeasurement::from_tcb_info_der(&der),
            Some(measurement)
        );
        assert_eq!(FirmwareMeasurement::from_tcb_info_der(&der[..50]), None);
        let mut other_algorithm = der;
        other_algorithm[16] = 0x02; // id-sha384
        assert_eq!(
            FirmwareMeasurement::from_tcb_info_der(&other_algorithm),
            None
        );
    }
}
