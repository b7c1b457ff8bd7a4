//! The primitives rot-core is built on, pinned to published test vectors, with
//! the exact crate configuration rot-core uses (no_std, default features off).
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

use hkdf::Hkdf;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::Sha256;

/// Decodes hex that may be wrapped across lines, so vectors read as printed in the RFCs.
fn h(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    hex::decode(text).expect("test vector is valid hex")
}

struct HkdfCase {
    name: &'static str,
    ikm: &'static str,
    salt: &'static str,
    info: &'static str,
    prk: &'static str,
    okm: &'static str,
}

/// RFC 5869 Appendix A, test cases 1–3 (HKDF-SHA256).
const RFC5869: &[HkdfCase] = &[
    HkdfCase {
        name: "A.1 basic",
        ikm: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        salt: "000102030405060708090a0b0c",
        info: "f0f1f2f3f4f5f6f7f8f9",
        prk: "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        okm: "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    },
    HkdfCase {
        name: "A.2 longer inputs",
        ikm: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
              202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f
              404142434445464748494a4b4c4d4e4f",
        salt: "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f
               808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f
               a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        info: "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf
               d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef
               f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        prk: "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        okm: "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c
              59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71
              cc30c58179ec3e87c14c01d5c1f3434f1d87",
    },
    HkdfCase {
        name: "A.3 zero-length salt and info",
        ikm: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        salt: "",
        info: "",
        prk: "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        okm: "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    },
];

#[test]
fn hkdf_sha256_matches_rfc5869() {
    for case in RFC5869 {
        let salt = h(case.salt);
        let (prk, hkdf) = Hkdf::<Sha256>::extract(Some(&salt), &h(case.ikm));
        assert_eq!(prk.as_slice(), h(case.prk).as_slice(), "{} PRK", case.name);
        let expected = h(case.okm);
        let mut okm = vec![0u8; expected.len()];
        hkdf.expand(&h(case.info), &mut okm).expect("valid length");
        assert_eq!(okm, expected, "{} OKM", case.name);
    }
}

/// RFC 6979 Appendix A.2.5 (ECDSA, 256 bits (prime field)): key pair and the
/// deterministic SHA-256 signatures of "sample" and "test".
#[test]
fn p256_signatures_match_rfc6979_a_2_5() {
    let private = h("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721");
    let key = SigningKey::from_slice(&private).expect("valid scalar");
    let public = key.verifying_key().to_sec1_point(false);
    let mut expected_public = vec![0x04];
    expected_public.extend(h(
        "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6",
    ));
    expected_public.extend(h(
        "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299",
    ));
    assert_eq!(public.as_bytes(), expected_public.as_slice());

    let cases = [
        (
            "sample",
            "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716",
            "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8",
        ),
        (
            "test",
            "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367",
            "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083",
        ),
    ];
    let verifying = VerifyingKey::from_sec1_bytes(&expected_public).expect("valid point");
    for (message, r, s) in cases {
        let signature: Signature = key.sign(message.as_bytes());
        let mut expected = h(r);
        expected.extend(h(s));
        assert_eq!(
            signature.to_bytes().as_slice(),
            expected.as_slice(),
            "signature of {message:?}"
        );
        assert!(verifying.verify(message.as_bytes(), &signature).is_ok());
        let mut tampered = expected.clone();
        tampered[63] ^= 1;
        let tampered = Signature::from_slice(&tampered).expect("still in range");
        assert!(verifying.verify(message.as_bytes(), &tampered).is_err());
    }
}

/// rot-core's device signatures are the same algorithm: a signature made
/// through `DeviceKey` verifies with the plain p256 verifier over the message
/// bytes, so any ECDSA-P256-SHA256 implementation (the service uses aws-lc-rs)
/// accepts it.
#[cfg(feature = "emulator")]
#[test]
fn device_signatures_are_plain_ecdsa_p256_sha256() {
    use rot_core::attestation::{ChallengeContext, ChallengeKind, SignerRole, challenge_message};
    use rot_core::extractor::enrol_from_reference;
    use rot_core::keys::KeySlot;

    let seeds = enrol_from_reference(&[0x5a; 512]).seeds;
    let esk = seeds.enrolment_key();
    let dsk = seeds.device_key(KeySlot::FIRST);
    let (id, dpk) = (esk.device_id(), dsk.public_key());
    let context = ChallengeContext {
        device_id: &id,
        challenge_id: b"c-1",
        nonce: &[9; 32],
        dpk: &dpk,
        key_slot: KeySlot::FIRST,
    };
    let message = challenge_message(ChallengeKind::Onboarding, SignerRole::DeviceKey, &context)
        .expect("short");
    let signature = Signature::from_slice(&dsk.sign(&message).0).expect("64 bytes");
    let verifying = VerifyingKey::from_sec1_bytes(dpk.as_bytes()).expect("valid");
    assert!(verifying.verify(message.as_bytes(), &signature).is_ok());
}
