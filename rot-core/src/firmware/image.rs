//! MCUboot signed images, read and checked as MCUboot's bootloader checks them
//! (`boot/bootutil/include/bootutil/image.h`; little-endian):
//!
//! ```text
//!  header, 32 bytes   magic 0x96f3b83d, load address, header size, protected TLV size,
//!                     payload size, flags, version (u8, u8, u16, u32), padding
//!  payload
//!  protected TLVs     info (0x6908, total) ‖ SEC_CNT (0x50, u32) …      (optional)
//!  TLVs               info (0x6907, total) ‖ SHA256 (0x10) ‖ KEYHASH (0x01) ‖ ECDSA_SIG (0x22)
//! ```
//!
//! Each TLV is `type u8 ‖ 0 ‖ length u16 ‖ value`. The SHA-256 and the signature (ECDSA P-256
//! with SHA-256, DER) cover everything before the unprotected TLVs; the key hash is the
//! SHA-256 of the signing key's SubjectPublicKeyInfo. Parsing is strict: every length must
//! fit, the TLV areas must end exactly at the end of the file, and a TLV of a kind that is
//! checked may appear once.

use core::fmt;

use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};

use super::manifest::ImageVersion;
use crate::keys::PublicKey;

/// `IMAGE_MAGIC`.
pub const IMAGE_MAGIC: u32 = 0x96f3_b83d;
/// Size of the header.
pub const HEADER_BYTES: usize = 32;
/// Magic of the (unprotected) TLV area's info header.
pub const TLV_INFO_MAGIC: u16 = 0x6907;
/// Magic of the protected TLV area's info header.
pub const TLV_PROT_INFO_MAGIC: u16 = 0x6908;
/// TLV: SHA-256 of the signing key's SubjectPublicKeyInfo.
pub const TLV_KEYHASH: u8 = 0x01;
/// TLV: SHA-256 of the signed region.
pub const TLV_SHA256: u8 = 0x10;
/// TLV: ECDSA signature (P-256 here), DER.
pub const TLV_ECDSA_SIG: u8 = 0x22;
/// Protected TLV: the security counter, u32.
pub const TLV_SEC_CNT: u8 = 0x50;

/// The DER SubjectPublicKeyInfo of a P-256 key up to its 65-byte point (RFC 5480).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why an image is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Not an MCUboot image: a bad magic, or lengths that do not fit the file.
    Malformed,
    /// The SHA-256 TLV is missing or does not match the image.
    BadHash,
    /// The image names another signing key (its key hash is not this key's).
    WrongKey,
    /// The signature is missing or does not verify under the key.
    BadSignature,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "not a well-formed MCUboot image",
            Self::BadHash => "the image's SHA-256 does not match its contents",
            Self::WrongKey => "the image was signed for another key",
            Self::BadSignature => "the image's signature does not verify",
        })
    }
}

impl core::error::Error for ImageError {}

/// An image's parts, as read (nothing verified yet: see [`SignedImage::verify`]).
#[derive(Clone, Copy, Debug)]
pub struct SignedImage<'a> {
    /// The header's version.
    pub version: ImageVersion,
    /// The protected security counter, if the image has one.
    pub security_counter: Option<u32>,
    /// The payload: what runs.
    pub payload: &'a [u8],
    signed: &'a [u8],
    sha256: Option<&'a [u8]>,
    key_hash: Option<&'a [u8]>,
    signature: Option<&'a [u8]>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The TLVs of one area: `(type, value)` in order, over exactly `area`.
fn tlvs(area: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8]), ImageError>> {
    let mut rest = area;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let kind = *rest.first()?;
            let len = usize::from(u16_at(rest, 2)?);
            let value = rest.get(4..4 + len)?;
            rest = &rest[4 + len..];
            Some((kind, value))
        })();
        if parsed.is_none() {
            rest = &[];
        }
        Some(parsed.ok_or(ImageError::Malformed))
    })
}

/// One TLV area at `at`: its info header must carry `magic`; returns (area, end).
fn area(bytes: &[u8], at: usize, magic: u16) -> Result<(&[u8], usize), ImageError> {
    if u16_at(bytes, at) != Some(magic) {
        return Err(ImageError::Malformed);
    }
    let total = usize::from(u16_at(bytes, at + 2).ok_or(ImageError::Malformed)?);
    let end = at.checked_add(total).ok_or(ImageError::Malformed)?;
    let area = bytes.get(at + 4..end).ok_or(ImageError::Malformed)?;
    Ok((area, end))
}

/// Sets `slot` to `value` unless it was set before (a checked TLV appears once).
fn once<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) -> Result<(), ImageError> {
    if slot.replace(value).is_some() {
        return Err(ImageError::Malformed);
    }
    Ok(())
}

impl<'a> SignedImage<'a> {
    /// Reads an image file.
    ///
    /// # Errors
    /// [`ImageError::Malformed`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        let malformed = ImageError::Malformed;
        if u32_at(bytes, 0) != Some(IMAGE_MAGIC) {
            return Err(malformed);
        }
        let header_size = usize::from(u16_at(bytes, 8).ok_or(malformed)?);
        let protected_size = usize::from(u16_at(bytes, 10).ok_or(malformed)?);
        let payload_size = u32_at(bytes, 12).ok_or(malformed)? as usize;
        let version: [u8; 8] = bytes
            .get(20..28)
            .and_then(|v| v.try_into().ok())
            .ok_or(malformed)?;
        if header_size < HEADER_BYTES {
            return Err(malformed);
        }
        let payload_end = header_size.checked_add(payload_size).ok_or(malformed)?;
        let payload = bytes.get(header_size..payload_end).ok_or(malformed)?;
        let mut at = payload_end;
        let mut security_counter = None;
        if protected_size > 0 {
            let (protected, end) = area(bytes, at, TLV_PROT_INFO_MAGIC)?;
            if end - at != protected_size {
                return Err(malformed);
            }
            let mut counter = None;
            for tlv in tlvs(protected) {
                let (kind, value) = tlv?;
                if kind == TLV_SEC_CNT {
                    once(&mut counter, value)?;
                }
            }
            security_counter = match counter {
                Some(value) => Some(u32::from_le_bytes(value.try_into().map_err(|_| malformed)?)),
                None => None,
            };
            at = end;
        }
        let signed = &bytes[..at];
        let (unprotected, end) = area(bytes, at, TLV_INFO_MAGIC)?;
        if end != bytes.len() {
            return Err(malformed);
        }
        let (mut sha256, mut key_hash, mut signature) = (None, None, None);
        for tlv in tlvs(unprotected) {
            match tlv? {
                (TLV_SHA256, value) => once(&mut sha256, value)?,
                (TLV_KEYHASH, value) => once(&mut key_hash, value)?,
                (TLV_ECDSA_SIG, value) => once(&mut signature, value)?,
                _ => {}
            }
        }
        Ok(Self {
            version: ImageVersion::from_bytes(version),
            security_counter,
            payload,
            signed,
            sha256,
            key_hash,
            signature,
        })
    }

    /// Checks the image as MCUboot does: its SHA-256, that it names `key` (if it names one),
    /// and its ECDSA P-256 signature under `key`.
    ///
    /// # Errors
    /// [`ImageError`] for the first check that fails.
    pub fn verify(&self, key: &PublicKey) -> Result<(), ImageError> {
        let digest = Sha256::digest(self.signed);
        if self.sha256 != Some(digest.as_slice()) {
            return Err(ImageError::BadHash);
        }
        if let Some(named) = self.key_hash
            && named != key_hash(key).as_slice()
        {
            return Err(ImageError::WrongKey);
        }
        let signature = self
            .signature
            .and_then(|der| Signature::from_der(der).ok())
            .ok_or(ImageError::BadSignature)?;
        key.verifying_key()
            .verify(self.signed, &signature)
            .map_err(|_| ImageError::BadSignature)
    }
}

/// MCUboot's key hash of a P-256 key: SHA-256 of its SubjectPublicKeyInfo (DER).
#[must_use]
pub fn key_hash(key: &PublicKey) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(P256_SPKI_PREFIX);
    hash.update(key.as_bytes());
    hash.finalize().into()
}
