//! Firmware-bound alias keys and the v2 (firmware-bound) attestation message: the invariants
//! as properties, and the message bytes pinned to vectors built independently from the
//! documented format (Python, `struct.pack`), next to a v1 vector showing v1 is unchanged.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

use proptest::prelude::*;
use rot_core::attestation::{
    ChallengeContext, ChallengeKind, FirmwareBinding, FirmwareSigner, SignerRole,
    challenge_message, firmware_binding_message, verify,
};
use rot_core::extractor::enrol_from_reference;
use rot_core::firmware::FirmwareMeasurement;
use rot_core::{DeviceId, KeySlot, PublicKey, Seeds};

fn seeds(fill: u8) -> Seeds {
    enrol_from_reference(&[fill; 512]).seeds
}

fn slot(n: u8) -> KeySlot {
    KeySlot::new(n).expect("1..=7")
}

fn measurement(bytes: [u8; 32]) -> FirmwareMeasurement {
    FirmwareMeasurement::from_digest(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Same seeds, slot and measurement: the same alias key, every time it is derived.
    #[test]
    fn the_same_inputs_give_the_same_alias_key(fill in any::<u8>(), n in 1u8..=7, digest in any::<[u8; 32]>()) {
        let seeds = seeds(fill);
        let m = measurement(digest);
        prop_assert_eq!(
            seeds.alias_key(slot(n), &m).public_key(),
            seeds.alias_key(slot(n), &m).public_key()
        );
        // …and from a second reconstruction of the same silicon.
        prop_assert_eq!(
            seeds.alias_key(slot(n), &m).public_key(),
            self::seeds(fill).alias_key(slot(n), &m).public_key()
        );
    }

    /// Any other measurement (here: one bit flipped anywhere) gives another alias key.
    #[test]
    fn another_measurement_gives_another_alias_key(fill in any::<u8>(), n in 1u8..=7, digest in any::<[u8; 32]>(), bit in 0usize..256) {
        let seeds = seeds(fill);
        let mut other = digest;
        other[bit / 8] ^= 1 << (bit % 8);
        prop_assert_ne!(
            seeds.alias_key(slot(n), &measurement(digest)).public_key(),
            seeds.alias_key(slot(n), &measurement(other)).public_key()
        );
    }

    /// An alias key is none of the chip's other keys: not the ESK, not any slot's DSK, and not
    /// the alias key of another slot for the same firmware.
    #[test]
    fn alias_keys_are_separate_from_every_other_key(fill in any::<u8>(), digest in any::<[u8; 32]>()) {
        let seeds = seeds(fill);
        let m = measurement(digest);
        let epk = seeds.enrolment_key().public_key();
        let mut seen = vec![epk];
        for s in 1..=7 {
            seen.push(seeds.device_key(slot(s)).public_key());
        }
        for s in 1..=7 {
            let alias = seeds.alias_key(slot(s), &m).public_key();
            prop_assert!(!seen.contains(&alias), "slot {s}");
            seen.push(alias);
        }
    }

    /// A v2 signature verifies for exactly its message: another measurement, alias key, signer
    /// role or purpose, and the same bytes read as v1, all fail.
    #[test]
    fn firmware_bound_answers_bind_every_field(fill in any::<u8>(), digest in any::<[u8; 32]>(), nonce in any::<[u8; 32]>()) {
        let seeds = seeds(fill);
        let esk = seeds.enrolment_key();
        let (id, epk) = (esk.device_id(), esk.public_key());
        let dpk = seeds.device_key(slot(2)).public_key();
        let m = measurement(digest);
        let alias = seeds.alias_key(slot(2), &m);
        let apk = alias.public_key();
        let context = ChallengeContext {
            device_id: &id,
            challenge_id: b"c-9",
            nonce: &nonce,
            dpk: &dpk,
            key_slot: slot(2),
        };
        let binding = FirmwareBinding { measurement: &m, alias_public_key: &apk };
        let message = |kind, signer, binding: &FirmwareBinding<'_>| {
            firmware_binding_message(kind, signer, &context, binding).expect("fits")
        };
        let by_esk = esk.sign(&message(ChallengeKind::Renewal, FirmwareSigner::EnrolmentKey, &binding));
        let by_alias = alias.sign(&message(ChallengeKind::Renewal, FirmwareSigner::AliasKey, &binding));
        prop_assert!(verify(&epk, &message(ChallengeKind::Renewal, FirmwareSigner::EnrolmentKey, &binding), &by_esk).is_ok());
        prop_assert!(verify(&apk, &message(ChallengeKind::Renewal, FirmwareSigner::AliasKey, &binding), &by_alias).is_ok());

        let mut flipped = digest;
        flipped[0] ^= 0x80;
        let other_m = measurement(flipped);
        let other_apk = seeds.alias_key(slot(2), &other_m).public_key();
        let variants = [
            ("measurement", message(ChallengeKind::Renewal, FirmwareSigner::EnrolmentKey, &FirmwareBinding { measurement: &other_m, ..binding })),
            ("alias key", message(ChallengeKind::Renewal, FirmwareSigner::EnrolmentKey, &FirmwareBinding { alias_public_key: &other_apk, ..binding })),
            ("role", message(ChallengeKind::Renewal, FirmwareSigner::AliasKey, &binding)),
            ("purpose", message(ChallengeKind::Onboarding, FirmwareSigner::EnrolmentKey, &binding)),
            ("v1", challenge_message(ChallengeKind::Renewal, SignerRole::EnrolmentKey, &context).expect("fits")),
        ];
        for (what, variant) in variants {
            prop_assert!(verify(&epk, &variant, &by_esk).is_err(), "{}", what);
        }
        // The alias key's signature is not the ESK's, and a v1 DSK-role message is not its.
        prop_assert!(verify(&epk, &message(ChallengeKind::Renewal, FirmwareSigner::AliasKey, &binding), &by_alias).is_err());
        let as_dsk = challenge_message(ChallengeKind::Renewal, SignerRole::DeviceKey, &context).expect("fits");
        prop_assert!(verify(&apk, &as_dsk, &by_alias).is_err());
    }
}

fn unhex(lines: &[&str]) -> Vec<u8> {
    hex::decode(lines.concat()).expect("vector hex")
}

/// The vector inputs: DeviceId 11…11, challenge id "challenge-17", nonce ab…ab, key slot 3,
/// the DPK and alias key of `src/keys/alias.rs`'s vectors, and the measurement of the image
/// "oxroot firmware vector 1".
struct VectorInputs {
    device_id: DeviceId,
    nonce: [u8; 32],
    dpk: PublicKey,
    apk: PublicKey,
    measurement: FirmwareMeasurement,
}

fn vector_inputs() -> VectorInputs {
    let key = |text: &str| PublicKey::from_sec1(&hex::decode(text).expect("hex")).expect("point");
    VectorInputs {
        device_id: DeviceId::from_bytes([0x11; 32]),
        nonce: [0xab; 32],
        dpk: key(concat!(
            "04def400263b6972732c3fc2ab335c7ad0eaf158bbc1b8a02625567a6bf2fb1846",
            "247fdf5a126dd5697a529200c18c8a86b3436081a16a97e221831ac075f0065e"
        )),
        apk: key(concat!(
            "04b59967e2cad2f46ad65716904cad201b20ba58dd2130ba5b7c12505e99f523be",
            "e4125f0b0fff2d257482e1261942af77a8bb6162de975cd0718929fb1d5d89e0"
        )),
        measurement: FirmwareMeasurement::of_image(b"oxroot firmware vector 1"),
    }
}

/// The renewal answer's fields, shared by the three vectors.
const FIELDS: &[&str] = &[
    "0300201111111111111111111111111111111111111111",
    "11111111111111111111111104000c6368616c6c656e67652d3137050020abababababababababababababababababab",
    "abababababababababababababab06004104def400263b6972732c3fc2ab335c7ad0eaf158bbc1b8a02625567a6bf2fb",
    "1846247fdf5a126dd5697a529200c18c8a86b3436081a16a97e221831ac075f0065e07000103",
];
const FIRMWARE_FIELDS: &[&str] = &[
    "090020648aaf2973e25f6150beecf6981162c0451e71f3076cf53eab139428acf4a5cc",
    "0a004104b59967e2cad2f46ad65716904cad201b20ba58dd2130ba5b7c12505e99f523be",
    "e4125f0b0fff2d257482e1261942af77a8bb6162de975cd0718929fb1d5d89e0",
];

#[test]
fn message_bytes_match_the_vectors_and_v1_is_unchanged() {
    let inputs = vector_inputs();
    let context = ChallengeContext {
        device_id: &inputs.device_id,
        challenge_id: b"challenge-17",
        nonce: &inputs.nonce,
        dpk: &inputs.dpk,
        key_slot: slot(3),
    };
    let binding = FirmwareBinding {
        measurement: &inputs.measurement,
        alias_public_key: &inputs.apk,
    };
    // "oxroot-attestation-v1" / "-v2", purpose 03 (renewal), role 01 (ESK) or 03 (alias key).
    let v1_head = "00156f78726f6f742d6174746573746174696f6e2d76310301";
    let v2_esk_head = "00156f78726f6f742d6174746573746174696f6e2d76320301";
    let v2_alias_head = "00156f78726f6f742d6174746573746174696f6e2d76320303";
    let v1 = challenge_message(ChallengeKind::Renewal, SignerRole::EnrolmentKey, &context)
        .expect("fits");
    let mut expected = vec![v1_head];
    expected.extend(FIELDS);
    assert_eq!(v1.as_bytes(), unhex(&expected).as_slice(), "v1");
    assert_eq!(v1.as_bytes().len(), 182);

    for (head, signer) in [
        (v2_esk_head, FirmwareSigner::EnrolmentKey),
        (v2_alias_head, FirmwareSigner::AliasKey),
    ] {
        let v2 = firmware_binding_message(ChallengeKind::Renewal, signer, &context, &binding)
            .expect("fits");
        let mut expected = vec![head];
        expected.extend(FIELDS);
        expected.extend(FIRMWARE_FIELDS);
        assert_eq!(v2.as_bytes(), unhex(&expected).as_slice(), "{signer:?}");
        assert_eq!(v2.as_bytes().len(), 285);
    }
}

#[test]
fn a_firmware_binding_with_an_oversized_challenge_id_is_refused() {
    let inputs = vector_inputs();
    let long = [0u8; rot_core::attestation::MAX_CONTEXT_BYTES + 1];
    let context = ChallengeContext {
        device_id: &inputs.device_id,
        challenge_id: &long,
        nonce: &inputs.nonce,
        dpk: &inputs.dpk,
        key_slot: slot(3),
    };
    let binding = FirmwareBinding {
        measurement: &inputs.measurement,
        alias_public_key: &inputs.apk,
    };
    assert!(
        firmware_binding_message(
            ChallengeKind::Onboarding,
            FirmwareSigner::EnrolmentKey,
            &context,
            &binding
        )
        .is_err()
    );
}

/// The alias key signs TLS client CertificateVerify inputs under the same checks as a DSK, and
/// never an attestation message in their place.
#[test]
fn alias_keys_sign_tls_certificate_verify_only_as_dsks_do() {
    let seeds = seeds(9);
    let alias = seeds.alias_key(slot(1), &measurement([3; 32]));
    let mut content = vec![0x20; 64];
    content.extend_from_slice(b"TLS 1.3, client CertificateVerify\0");
    content.extend_from_slice(&[0x5c; 32]);
    assert!(alias.sign_tls13_client_certificate_verify(&content).is_ok());
    let attestation = firmware_binding_message(
        ChallengeKind::Onboarding,
        FirmwareSigner::AliasKey,
        &ChallengeContext {
            device_id: &seeds.enrolment_key().device_id(),
            challenge_id: b"c",
            nonce: &[0; 32],
            dpk: &seeds.device_key(slot(1)).public_key(),
            key_slot: slot(1),
        },
        &FirmwareBinding {
            measurement: alias.measurement(),
            alias_public_key: &alias.public_key(),
        },
    )
    .expect("fits");
    assert!(
        alias
            .sign_tls13_client_certificate_verify(attestation.as_bytes())
            .is_err()
    );
    assert!(
        alias
            .sign_tls12_client_certificate_verify(attestation.as_bytes())
            .is_err()
    );
}

#[test]
fn firmware_requests_are_their_own_messages_and_bind_every_field() {
    use rot_core::attestation::{
        FirmwareRequest, StatusContext, StatusSigner, firmware_request_message, status_message,
    };
    let device_id = DeviceId::from_bytes([0x22; 32]);
    let context = StatusContext {
        device_id: &device_id,
        challenge_id: b"status-challenge",
        nonce: &[0xcd; 32],
        serial: b"0a1b",
    };
    let signer = StatusSigner::DeviceKey(slot(2));
    let running = FirmwareMeasurement::from_digest([0x77; 32]);
    let report = |rollout_id: &'static [u8], installed| FirmwareRequest::Report {
        rollout_id,
        installed,
        running: &running,
    };
    let status = status_message(signer, &context).expect("fits");
    let check = firmware_request_message(signer, &context, &FirmwareRequest::Check).expect("fits");
    let installed =
        firmware_request_message(signer, &context, &report(b"r-1", true)).expect("fits");
    // Byte for byte: the status fields under purpose 6, then tags 11, 12 and 9.
    let mut expected = status.as_bytes().to_vec();
    expected[2 + 21] = 6;
    expected.extend_from_slice(&[11, 0, 3]);
    expected.extend_from_slice(b"r-1");
    expected.extend_from_slice(&[12, 0, 1, 1]);
    expected.extend_from_slice(&[9, 0, 32]);
    expected.extend_from_slice(&[0x77; 32]);
    assert_eq!(installed.as_bytes(), expected.as_slice());
    // A check is a status request's fields under purpose 5: neither stands for the other.
    let mut as_check = status.as_bytes().to_vec();
    as_check[2 + 21] = 5;
    assert_eq!(check.as_bytes(), as_check.as_slice());
    assert_ne!(check.as_bytes(), status.as_bytes());
    // Every report field is bound.
    for other in [
        firmware_request_message(signer, &context, &report(b"r-1", false)),
        firmware_request_message(signer, &context, &report(b"r-2", true)),
        firmware_request_message(
            signer,
            &context,
            &FirmwareRequest::Report {
                rollout_id: b"r-1",
                installed: true,
                running: &FirmwareMeasurement::from_digest([0x78; 32]),
            },
        ),
    ] {
        assert_ne!(other.expect("fits").as_bytes(), installed.as_bytes());
    }
    let long = [0u8; 129];
    assert!(
        firmware_request_message(
            signer,
            &context,
            &FirmwareRequest::Report {
                rollout_id: &long,
                installed: true,
                running: &running,
            },
        )
        .is_err()
    );
}
