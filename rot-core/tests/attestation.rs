//! Device signatures verify exactly where they should and nowhere else.

use proptest::prelude::*;
use rot_core::attestation::{
    ChallengeContext, ChallengeKind, MAX_CONTEXT_BYTES, SignerRole, challenge_message,
    registration_message, verify,
};
use rot_core::extractor::enrol_from_reference;
use rot_core::{KeySlot, PublicKey, Seeds};

fn seeds(fill: u8) -> Seeds {
    enrol_from_reference(&[fill; 512]).seeds
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// A signature from the device verifies with its public key, and fails for
    /// any other message or key.
    #[test]
    fn registration_proofs_verify_and_bind_the_context(fill in any::<u8>(), context in proptest::collection::vec(any::<u8>(), 0..=MAX_CONTEXT_BYTES)) {
        let seeds = seeds(fill);
        let esk = seeds.enrolment_key();
        let epk = esk.public_key();
        let message = registration_message(&epk, &context).expect("bounded context");
        let signature = esk.sign(&message);
        prop_assert!(verify(&epk, &message, &signature).is_ok());

        // Another context of a valid length: change a byte, or add one to an empty context.
        let mut other_context = context.clone();
        match other_context.first_mut() {
            Some(byte) => *byte ^= 1,
            None => other_context.push(0),
        }
        let other = registration_message(&epk, &other_context).expect("bounded");
        prop_assert!(verify(&epk, &other, &signature).is_err());

        let foreign = seeds.device_key(KeySlot::FIRST).public_key();
        prop_assert!(verify(&foreign, &message, &signature).is_err());
    }
}

#[test]
fn challenge_answers_are_bound_to_purpose_role_and_every_field() {
    let seeds = seeds(0x77);
    let esk = seeds.enrolment_key();
    let dsk = seeds.device_key(KeySlot::new(3).expect("valid"));
    let (id, epk, dpk) = (esk.device_id(), esk.public_key(), dsk.public_key());
    let nonce = [0xab; 32];
    let context = ChallengeContext {
        device_id: &id,
        challenge_id: b"challenge-17",
        nonce: &nonce,
        dpk: &dpk,
        key_slot: dsk.slot(),
    };
    let signed = challenge_message(
        ChallengeKind::Onboarding,
        SignerRole::EnrolmentKey,
        &context,
    )
    .expect("fits");
    let signature = esk.sign(&signed);
    assert!(verify(&epk, &signed, &signature).is_ok());

    // The same signature is worthless for another purpose, role, nonce, key or slot.
    let renewal = challenge_message(ChallengeKind::Renewal, SignerRole::EnrolmentKey, &context)
        .expect("fits");
    let as_device_key =
        challenge_message(ChallengeKind::Onboarding, SignerRole::DeviceKey, &context)
            .expect("fits");
    let other_nonce = [0xac; 32];
    let replayed = ChallengeContext {
        nonce: &other_nonce,
        ..context
    };
    let other_slot = ChallengeContext {
        key_slot: KeySlot::FIRST,
        ..context
    };
    let other_dpk = seeds.device_key(KeySlot::FIRST).public_key();
    let swapped_key = ChallengeContext {
        dpk: &other_dpk,
        ..context
    };
    for (what, variant) in [("renewal", renewal), ("role", as_device_key)] {
        assert!(verify(&epk, &variant, &signature).is_err(), "{what}");
    }
    for (what, variant) in [
        ("nonce", replayed),
        ("slot", other_slot),
        ("dpk", swapped_key),
    ] {
        let message = challenge_message(
            ChallengeKind::Onboarding,
            SignerRole::EnrolmentKey,
            &variant,
        )
        .expect("fits");
        assert!(verify(&epk, &message, &signature).is_err(), "{what}");
    }
}

#[test]
fn oversized_context_is_refused() {
    let seeds = seeds(1);
    let epk = seeds.enrolment_key().public_key();
    assert!(registration_message(&epk, &[0; MAX_CONTEXT_BYTES + 1]).is_err());
}

#[test]
fn malformed_signatures_and_keys_are_refused() {
    let seeds = seeds(2);
    let esk = seeds.enrolment_key();
    let epk = esk.public_key();
    let message = registration_message(&epk, b"").expect("fits");
    let mut signature = esk.sign(&message);
    signature.0 = [0; 64];
    assert!(verify(&epk, &message, &signature).is_err());
    assert!(
        PublicKey::from_sec1(&[0x04; 65]).is_err(),
        "not on the curve"
    );
    assert!(
        PublicKey::from_sec1(&epk.as_bytes()[..64]).is_err(),
        "truncated"
    );
    let mut compressed_tag = *epk.as_bytes();
    compressed_tag[0] = 0x02;
    assert!(
        PublicKey::from_sec1(&compressed_tag).is_err(),
        "only uncompressed keys are identities"
    );
    assert_eq!(PublicKey::from_sec1(epk.as_bytes()), Ok(epk));
}

/// The DSK signs only attestation messages and TLS 1.3 client CertificateVerify
/// content: never arbitrary bytes, and never bytes that could pass for an
/// attestation message.
#[test]
fn device_key_signs_only_tls13_certificate_verify_content() {
    use p256::ecdsa::signature::Verifier;
    let seeds = seeds(3);
    let dsk = seeds.device_key(KeySlot::FIRST);
    let mut content = vec![0x20; 64];
    content.extend_from_slice(b"TLS 1.3, client CertificateVerify\0");
    content.extend_from_slice(&[0x5c; 32]);
    let signature = dsk
        .sign_tls13_client_certificate_verify(&content)
        .expect("valid content");
    let verifying =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(dsk.public_key().as_bytes()).expect("valid");
    let signature = p256::ecdsa::Signature::from_slice(&signature.0).expect("64 bytes");
    assert!(verifying.verify(&content, &signature).is_ok());

    let epk = seeds.enrolment_key().public_key();
    let attestation = registration_message(&epk, b"").expect("fits");
    let mut server_context = vec![0x20; 64];
    server_context.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
    server_context.extend_from_slice(&[0x5c; 32]);
    for refused in [
        attestation.as_bytes(),
        b"arbitrary".as_slice(),
        &server_context,
        &content[..98],
    ] {
        assert!(dsk.sign_tls13_client_certificate_verify(refused).is_err());
    }
}

#[test]
fn status_requests_are_bound_to_signer_challenge_and_serial() {
    use rot_core::attestation::{StatusContext, StatusSigner, status_message};
    let seeds = seeds(0x42);
    let esk = seeds.enrolment_key();
    let slot = KeySlot::new(2).expect("valid");
    let dsk = seeds.device_key(slot);
    let (id, epk, dpk) = (esk.device_id(), esk.public_key(), dsk.public_key());
    let nonce = [0x5c; 32];
    let context = StatusContext {
        device_id: &id,
        challenge_id: b"status-1",
        nonce: &nonce,
        serial: b"0badc0de",
    };
    let by_device_key = status_message(StatusSigner::DeviceKey(slot), &context).expect("fits");
    let signature = dsk.sign(&by_device_key);
    assert!(verify(&dpk, &by_device_key, &signature).is_ok());

    // Not for another slot, the enrolment key's form, another serial, nonce or challenge.
    let other_slot =
        status_message(StatusSigner::DeviceKey(KeySlot::FIRST), &context).expect("fits");
    let as_enrolment_key = status_message(StatusSigner::EnrolmentKey, &context).expect("fits");
    let other_nonce = [0x5d; 32];
    let variants = [
        StatusContext {
            serial: b"0badc0df",
            ..context
        },
        StatusContext {
            serial: b"",
            ..context
        },
        StatusContext {
            nonce: &other_nonce,
            ..context
        },
        StatusContext {
            challenge_id: b"status-2",
            ..context
        },
    ];
    assert!(verify(&dpk, &other_slot, &signature).is_err());
    assert!(verify(&dpk, &as_enrolment_key, &signature).is_err());
    for variant in &variants {
        let message = status_message(StatusSigner::DeviceKey(slot), variant).expect("fits");
        assert!(verify(&dpk, &message, &signature).is_err(), "{variant:?}");
    }

    // A status signature is no answer to a renewal challenge over the same fields, and the
    // ESK's status signature verifies only under the EPK.
    let renewal = challenge_message(
        ChallengeKind::Renewal,
        SignerRole::DeviceKey,
        &ChallengeContext {
            device_id: &id,
            challenge_id: b"status-1",
            nonce: &nonce,
            dpk: &dpk,
            key_slot: slot,
        },
    )
    .expect("fits");
    assert!(verify(&dpk, &renewal, &signature).is_err());
    let esk_signature = esk.sign(&as_enrolment_key);
    assert!(verify(&epk, &as_enrolment_key, &esk_signature).is_ok());
    assert!(verify(&dpk, &as_enrolment_key, &esk_signature).is_err());

    // Every message starts with the domain label; oversized fields are refused.
    assert_eq!(
        &by_device_key.as_bytes()[..23],
        b"\x00\x15oxroot-attestation-v1"
    );
    assert_eq!(by_device_key.as_bytes()[23..25], [4, 2]);
    let long = [0u8; MAX_CONTEXT_BYTES + 1];
    assert!(
        status_message(
            StatusSigner::EnrolmentKey,
            &StatusContext {
                serial: &long,
                ..context
            }
        )
        .is_err()
    );
    assert!(
        status_message(
            StatusSigner::EnrolmentKey,
            &StatusContext {
                challenge_id: &long,
                ..context
            }
        )
        .is_err()
    );
}
