//! MCUboot images and firmware manifests as the device checks them: images built here from
//! MCUboot's documented layout (not by oxroot's signer) verify under their key and no other,
//! and every kind of damage is refused; a manifest verifies only under its signer's key.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use rot_core::firmware::image::{ImageError, SignedImage, key_hash};
use rot_core::firmware::manifest::{self, ImageVersion, Manifest, ManifestError};
use rot_core::keys::PublicKey;
use sha2::{Digest, Sha256};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32].into()).unwrap()
}

fn public(key: &SigningKey) -> PublicKey {
    PublicKey::from_sec1(key.verifying_key().to_sec1_point(false).as_bytes()).unwrap()
}

fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// An image as MCUboot's `image.h` lays it out, signed by `signer`.
fn image(signer: &SigningKey, payload: &[u8], counter: u32) -> Vec<u8> {
    let mut protected = Vec::new();
    tlv(&mut protected, 0x50, &counter.to_le_bytes());
    let mut image = Vec::new();
    image.extend_from_slice(&0x96f3_b83d_u32.to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes());
    image.extend_from_slice(&32u16.to_le_bytes());
    image.extend_from_slice(&((protected.len() + 4) as u16).to_le_bytes());
    image.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes());
    image.extend_from_slice(&[2, 5, 7, 0, 11, 0, 0, 0]);
    image.extend_from_slice(&0u32.to_le_bytes());
    image.extend_from_slice(payload);
    image.extend_from_slice(&0x6908u16.to_le_bytes());
    image.extend_from_slice(&((protected.len() + 4) as u16).to_le_bytes());
    image.extend_from_slice(&protected);
    let signature: DerSignature = signer.sign(&image);
    let mut tlvs = Vec::new();
    tlv(&mut tlvs, 0x10, &Sha256::digest(&image));
    tlv(&mut tlvs, 0x01, &key_hash(&public(signer)));
    tlv(&mut tlvs, 0x22, signature.as_bytes());
    image.extend_from_slice(&0x6907u16.to_le_bytes());
    image.extend_from_slice(&((tlvs.len() + 4) as u16).to_le_bytes());
    image.extend_from_slice(&tlvs);
    image
}

#[test]
fn an_image_verifies_under_its_key_and_reads_its_version_and_counter() {
    let signer = key(1);
    let bytes = image(&signer, b"firmware payload", 42);
    let parsed = SignedImage::parse(&bytes).unwrap();
    assert_eq!(parsed.payload, b"firmware payload");
    assert_eq!(parsed.security_counter, Some(42));
    assert_eq!(parsed.version, "2.5.7+11".parse::<ImageVersion>().unwrap());
    parsed.verify(&public(&signer)).unwrap();
    // Another key: the image names its own key's hash.
    assert_eq!(parsed.verify(&public(&key(2))), Err(ImageError::WrongKey));
}

#[test]
fn every_byte_of_the_signed_region_is_covered() {
    let signer = key(1);
    let bytes = image(&signer, &[0x33; 64], 1);
    let signed_len = 32 + 64 + 12;
    for at in (0..signed_len).step_by(7) {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        let verdict = SignedImage::parse(&damaged).and_then(|p| p.verify(&public(&signer)));
        assert!(verdict.is_err(), "a change at byte {at} went unnoticed");
    }
}

#[test]
fn a_recomputed_hash_does_not_help_without_the_key() {
    let signer = key(1);
    let mut bytes = image(&signer, &[0x33; 64], 1);
    bytes[40] ^= 0xff;
    // Fix up the SHA-256 TLV (right after the unprotected info header).
    let hash_at = 32 + 64 + 12 + 4 + 4;
    let digest = Sha256::digest(&bytes[..32 + 64 + 12]);
    bytes[hash_at..hash_at + 32].copy_from_slice(&digest);
    let parsed = SignedImage::parse(&bytes).unwrap();
    assert_eq!(
        parsed.verify(&public(&signer)),
        Err(ImageError::BadSignature)
    );
}

#[test]
fn malformed_images_are_refused() {
    let signer = key(1);
    let bytes = image(&signer, b"abc", 1);
    // Cut short anywhere, or with something after the TLVs.
    for len in [0, 4, 31, 32, 34, bytes.len() - 1] {
        assert_eq!(
            SignedImage::parse(&bytes[..len]).err(),
            Some(ImageError::Malformed),
            "{len} bytes"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        SignedImage::parse(&longer).err(),
        Some(ImageError::Malformed)
    );
    // Another magic.
    let mut other = bytes.clone();
    other[0] ^= 1;
    assert_eq!(
        SignedImage::parse(&other).err(),
        Some(ImageError::Malformed)
    );
    // A payload size beyond the file.
    let mut oversized = bytes.clone();
    oversized[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        SignedImage::parse(&oversized).err(),
        Some(ImageError::Malformed)
    );
}

fn sample_manifest() -> Manifest<'static> {
    Manifest {
        owner: "acme",
        policy: "line",
        image_name: "app",
        version: "1.0.0".parse().unwrap(),
        security_counter: 3,
        image_digest: [7; 32],
        image_size: 1234,
    }
}

#[test]
fn a_manifest_verifies_only_under_its_signers_key() {
    let signer = key(3);
    let encoded = sample_manifest().encode().unwrap();
    let signature: DerSignature = signer.sign(encoded.as_bytes());
    let read =
        manifest::verify(encoded.as_bytes(), signature.as_bytes(), &public(&signer)).unwrap();
    assert_eq!(read, sample_manifest());
    assert_eq!(
        manifest::verify(encoded.as_bytes(), signature.as_bytes(), &public(&key(4))),
        Err(ManifestError::BadSignature)
    );
    let mut changed = encoded.as_bytes().to_vec();
    *changed.last_mut().unwrap() ^= 1;
    assert_eq!(
        manifest::verify(&changed, signature.as_bytes(), &public(&signer)),
        Err(ManifestError::BadSignature)
    );
    assert_eq!(
        manifest::verify(encoded.as_bytes(), b"not DER", &public(&signer)),
        Err(ManifestError::BadSignature)
    );
}
