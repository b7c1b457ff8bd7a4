//! MCUboot's signed image format, as MCUboot's bootloader and `imgtool` read it
//! (`boot/bootutil/include/bootutil/image.h`, little-endian):
//!
//! ```text
//!  header, 32 bytes   magic 0x96f3b83d, load address 0, header size 32, protected TLV size,
//!                     payload size, flags 0, version (major u8, minor u8, revision u16,
//!                     build u32), padding
//!  payload
//!  protected TLVs     info (magic 0x6908, total size) ‖ SEC_CNT (0x50): the security counter
//!  TLVs               info (magic 0x6907, total size) ‖ SHA256 (0x10) ‖ KEYHASH (0x01) ‖
//!                     ECDSA signature (0x22, DER)
//! ```
//!
//! Each TLV is `type u8 ‖ 0 ‖ length u16 ‖ value`. The SHA-256 covers the header, the payload
//! and the protected TLVs, which the signature covers too (ECDSA P-256 with SHA-256); the key
//! hash is the SHA-256 of the signing key's SubjectPublicKeyInfo (DER), by which a bootloader
//! picks the key to check with.

use rot_core::FirmwareMeasurement;
use rot_core::firmware::image::{
    HEADER_BYTES, IMAGE_MAGIC, TLV_ECDSA_SIG, TLV_INFO_MAGIC, TLV_KEYHASH, TLV_PROT_INFO_MAGIC,
    TLV_SEC_CNT, TLV_SHA256, key_hash,
};
use rot_core::firmware::manifest::ImageVersion;
use rot_core::keys::PublicKey;

use crate::pki::{CaKey, SignerError};

/// Largest payload signed: a signed image and its gRPC envelope stay under gRPC's default
/// 4 MiB message limit, and far above an MCU's flash slot.
pub const MAX_PAYLOAD_BYTES: usize = 3 * 1024 * 1024;

/// A TLV's header, and a TLV area's info header.
const TLV_HEADER_BYTES: usize = 4;

/// Why an image was not signed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The payload is empty.
    #[error("the firmware payload is empty")]
    EmptyPayload,
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("the firmware payload is {0} bytes; at most {MAX_PAYLOAD_BYTES} are signed")]
    PayloadTooLarge(usize),
    /// The key did not sign.
    #[error(transparent)]
    Signer(#[from] SignerError),
}

/// What to sign.
#[derive(Clone, Copy, Debug)]
pub struct ImageRequest<'a> {
    /// The firmware, as the build produced it (no header).
    pub payload: &'a [u8],
    /// Its version.
    pub version: ImageVersion,
    /// Its security counter.
    pub security_counter: u32,
}

fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(value);
}

/// Signs `request` with `key`: the whole MCUboot image file.
///
/// # Errors
/// [`ImageError`].
pub fn sign(request: &ImageRequest<'_>, key: &dyn CaKey) -> Result<Vec<u8>, ImageError> {
    let payload = request.payload;
    if payload.is_empty() {
        return Err(ImageError::EmptyPayload);
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(ImageError::PayloadTooLarge(payload.len()));
    }
    // Protected TLVs: the security counter, inside the signed region.
    let mut protected = Vec::with_capacity(12);
    tlv(
        &mut protected,
        TLV_SEC_CNT,
        &request.security_counter.to_le_bytes(),
    );
    let protected_size = TLV_HEADER_BYTES + protected.len();

    let mut image = Vec::with_capacity(HEADER_BYTES + payload.len() + protected_size + 128);
    image.extend_from_slice(&IMAGE_MAGIC.to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes()); // load address
    image.extend_from_slice(&(HEADER_BYTES as u16).to_le_bytes());
    image.extend_from_slice(&(protected_size as u16).to_le_bytes());
    image.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes()); // flags
    image.extend_from_slice(&request.version.to_bytes());
    image.extend_from_slice(&0u32.to_le_bytes()); // padding
    debug_assert_eq!(image.len(), HEADER_BYTES);
    image.extend_from_slice(payload);
    image.extend_from_slice(&TLV_PROT_INFO_MAGIC.to_le_bytes());
    image.extend_from_slice(&(protected_size as u16).to_le_bytes());
    image.extend_from_slice(&protected);

    // Everything so far is hashed and signed.
    // The image hash MCUboot checks: SHA-256 of the signed region.
    let digest = *FirmwareMeasurement::of_image(&image).as_bytes();
    let signature = key.sign(&image)?;
    let mut tlvs = Vec::with_capacity(3 * TLV_HEADER_BYTES + 64 + signature.len());
    tlv(&mut tlvs, TLV_SHA256, &digest);
    let public_key = PublicKey::from_sec1(key.public_key())
        .map_err(|_| SignerError::Failed("the signing key is not a P-256 key".into()))?;
    tlv(&mut tlvs, TLV_KEYHASH, &key_hash(&public_key));
    tlv(&mut tlvs, TLV_ECDSA_SIG, &signature);
    image.extend_from_slice(&TLV_INFO_MAGIC.to_le_bytes());
    image.extend_from_slice(&((TLV_HEADER_BYTES + tlvs.len()) as u16).to_le_bytes());
    image.extend_from_slice(&tlvs);
    Ok(image)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::pki::SealedKey;

    fn version() -> ImageVersion {
        "1.2.3+4".parse().unwrap()
    }

    #[test]
    fn the_layout_is_mcuboots() {
        let key = SealedKey::generate("test").unwrap();
        let payload = [0x5au8; 100];
        let image = sign(
            &ImageRequest {
                payload: &payload,
                version: version(),
                security_counter: 9,
            },
            &key,
        )
        .unwrap();
        assert_eq!(image[..4], IMAGE_MAGIC.to_le_bytes());
        assert_eq!(u16::from_le_bytes([image[8], image[9]]), 32);
        assert_eq!(u16::from_le_bytes([image[10], image[11]]), 12);
        assert_eq!(u32::from_le_bytes(image[12..16].try_into().unwrap()), 100);
        assert_eq!(image[20..28], version().to_bytes());
        assert_eq!(image[32..132], payload);
        // Protected TLVs: info, then SEC_CNT = 9.
        assert_eq!(image[132..136], [0x08, 0x69, 12, 0]);
        assert_eq!(image[136..144], [0x50, 0, 4, 0, 9, 0, 0, 0]);
        // TLVs: info, SHA-256 of everything before, key hash, signature.
        assert_eq!(image[144..146], [0x07, 0x69]);
        let total = usize::from(u16::from_le_bytes([image[146], image[147]]));
        assert_eq!(144 + total, image.len());
        assert_eq!(image[148..152], [0x10, 0, 32, 0]);
        assert_eq!(
            image[152..184],
            *FirmwareMeasurement::of_image(&image[..144]).as_bytes()
        );
        assert_eq!(image[184..188], [0x01, 0, 32, 0]);
        let public_key = PublicKey::from_sec1(key.public_key()).unwrap();
        assert_eq!(image[188..220], key_hash(&public_key));
        assert_eq!(image[220], 0x22);
    }

    #[test]
    fn the_device_side_reader_verifies_what_this_signs() {
        use rot_core::firmware::image::SignedImage;
        use rot_core::keys::PublicKey;
        let key = SealedKey::generate("test").unwrap();
        let image = sign(
            &ImageRequest {
                payload: b"payload",
                version: version(),
                security_counter: 3,
            },
            &key,
        )
        .unwrap();
        let parsed = SignedImage::parse(&image).unwrap();
        assert_eq!(parsed.payload, b"payload");
        assert_eq!(parsed.security_counter, Some(3));
        assert_eq!(parsed.version, version());
        parsed
            .verify(&PublicKey::from_sec1(key.public_key()).unwrap())
            .unwrap();
    }

    #[test]
    fn empty_and_oversized_payloads_are_refused() {
        let key = SealedKey::generate("test").unwrap();
        let request = |payload| ImageRequest {
            payload,
            version: version(),
            security_counter: 0,
        };
        assert!(matches!(
            sign(&request(&[]), &key),
            Err(ImageError::EmptyPayload)
        ));
        let big = vec![0u8; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            sign(&request(&big), &key),
            Err(ImageError::PayloadTooLarge(_))
        ));
    }
}
