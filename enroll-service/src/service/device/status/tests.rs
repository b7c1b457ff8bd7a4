//! Status without a network: what an unsigned request learns (nothing), what a signed one
//! learns (its own status), and every way a proof is refused.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

use std::time::Duration;

use rot_core::attestation::{StatusContext, StatusSigner, status_message};
use rot_core::keys::{DeviceId, KeySlot, Seeds};

use super::answer;
use crate::error::ServiceError;
use crate::model::RevocationRecord;
use crate::pki::RevocationReason;
use crate::service::ServiceConfig;
use crate::service::testing::{Fixture, chip, id_of};
use crate::store::{Change, Op, commit};
use oxroot_proto::v1;

fn unsigned(device_id: &DeviceId, serial: &str) -> v1::StatusRequest {
    v1::StatusRequest {
        device_id: device_id.to_string(),
        serial: serial.into(),
        proof: None,
    }
}

/// The challenge of an unsigned answer.
async fn challenge(f: &Fixture, device_id: &DeviceId) -> v1::StatusChallenge {
    answer(&f.core, None, &unsigned(device_id, ""))
        .await
        .expect("an unsigned answer")
        .challenge
        .expect("a challenge")
}

/// A request for `device_id` naming `serial`, signed over `challenge` by `seeds`' key of
/// `signer`.
fn signed(
    seeds: &Seeds,
    device_id: &DeviceId,
    serial: &str,
    signer: StatusSigner,
    challenge: &v1::StatusChallenge,
) -> v1::StatusRequest {
    let nonce: [u8; 32] = challenge.nonce.as_slice().try_into().expect("32 bytes");
    let message = status_message(
        signer,
        &StatusContext {
            device_id,
            challenge_id: &challenge.challenge_id,
            nonce: &nonce,
            serial: serial.as_bytes(),
        },
    )
    .expect("fits");
    let (signature, key_slot) = match signer {
        StatusSigner::EnrolmentKey => (seeds.enrolment_key().sign(&message), 0),
        StatusSigner::DeviceKey(slot) => {
            (seeds.device_key(slot).sign(&message), u32::from(slot.get()))
        }
    };
    v1::StatusRequest {
        device_id: device_id.to_string(),
        serial: serial.into(),
        proof: Some(v1::StatusProof {
            challenge_id: challenge.challenge_id.clone(),
            key_slot,
            signature: signature.0.to_vec(),
        }),
    }
}

fn slot(n: u8) -> KeySlot {
    KeySlot::new(n).expect("a key slot")
}

/// The message of an UNAUTHENTICATED answer; panics on anything else.
fn unauthenticated(result: Result<v1::StatusResponse, ServiceError>) -> String {
    match result {
        Err(ServiceError::Unauthenticated(message)) => message,
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

fn is_invalid(result: &Result<v1::StatusResponse, ServiceError>, field: &str) -> bool {
    matches!(result, Err(ServiceError::InvalidArgument { field: f, .. }) if f == field)
}

#[tokio::test]
async fn an_unsigned_status_says_the_same_about_every_device_id() {
    let f = Fixture::new(ServiceConfig::default()).await;
    let registered = f.register(chip(0)).await;
    let onboarded = f.register(chip(1)).await;
    let serial = f.issue(chip(1), 1).await;
    let revoked = f.register(chip(2)).await;
    f.issue(chip(2), 1).await;
    let mut device = f.device(&revoked).await;
    device.revocation = Some(RevocationRecord {
        revoked_at: time::OffsetDateTime::now_utc(),
        reason: RevocationReason::KeyCompromise,
        comment: String::new(),
        revoked_by: "test".into(),
    });
    let mut change = Change::new();
    change.op(Op::PutDevice(device));
    commit(f.core.registry(), change).await.expect("commit");
    let unknown = DeviceId::from_bytes([0x5a; 32]);

    for (what, device_id, serial) in [
        ("unknown", unknown, String::new()),
        ("registered", registered, String::new()),
        ("onboarded", onboarded, serial.to_string()),
        ("onboarded, no serial", onboarded, String::new()),
        ("revoked", revoked, String::new()),
    ] {
        let mut response = answer(&f.core, None, &unsigned(&device_id, &serial))
            .await
            .expect(what);
        // The challenge is random and bound to the DeviceId asked about: the only thing that
        // differs, and it tells nothing.
        let challenge = response.challenge.take().expect("a challenge");
        assert_eq!(challenge.challenge_id.len(), 16, "{what}");
        assert_eq!(challenge.nonce.len(), 32, "{what}");
        assert!(challenge.expires_at.is_some() && challenge.expires_in.is_some());
        assert_eq!(
            response,
            v1::StatusResponse {
                device_id: device_id.to_string(),
                status: v1::DeviceStatus::ProofRequired as i32,
                ..v1::StatusResponse::default()
            },
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_signed_status_tells_the_device_its_own_status() {
    let f = Fixture::new(ServiceConfig::default()).await;
    let seeds = chip(0);
    let id = f.register(seeds).await;

    // Before onboarding the enrolment key signs.
    let c = challenge(&f, &id).await;
    let before = answer(
        &f.core,
        None,
        &signed(seeds, &id, "", StatusSigner::EnrolmentKey, &c),
    )
    .await
    .expect("signed by the ESK");
    assert_eq!(before.status(), v1::DeviceStatus::NotOnboarded);
    assert!(before.onboarding_ready);
    let next = before
        .challenge
        .expect("a new challenge for the next request");
    assert_ne!(next.challenge_id, c.challenge_id);

    // After, the device key of the credential it holds, naming it.
    let serial = f.issue(seeds, 1).await.to_string();
    let by_dsk = answer(
        &f.core,
        None,
        &signed(seeds, &id, &serial, StatusSigner::DeviceKey(slot(1)), &next),
    )
    .await
    .expect("signed by the DSK");
    assert_eq!(by_dsk.status(), v1::DeviceStatus::Enrolled);
    assert_eq!(
        (by_dsk.serial.as_str(), by_dsk.key_slot),
        (serial.as_str(), 1)
    );
    assert!(by_dsk.not_after.is_some() && by_dsk.next_check_after.is_some());
    assert_eq!(by_dsk.policy_kind(), v1::PolicyKind::Mosquitto);
    // The enrolment key still works for a device that holds a credential.
    let c = challenge(&f, &id).await;
    let by_esk = answer(
        &f.core,
        None,
        &signed(seeds, &id, &serial, StatusSigner::EnrolmentKey, &c),
    )
    .await
    .expect("signed by the ESK");
    assert_eq!(by_esk.status(), v1::DeviceStatus::Enrolled);
}

#[tokio::test]
async fn a_proof_is_refused_alike_whatever_is_wrong_with_it() {
    let f = Fixture::new(ServiceConfig::default()).await;
    let (seeds, other) = (chip(0), chip(1));
    let id = f.register(seeds).await;
    let serial = f.issue(seeds, 1).await.to_string();
    let other_id = f.register(other).await;
    let other_serial = f.issue(other, 1).await.to_string();
    let dsk = StatusSigner::DeviceKey(slot(1));

    let c = challenge(&f, &id).await;
    let good = signed(seeds, &id, &serial, dsk, &c);
    assert!(answer(&f.core, None, &good).await.is_ok());
    // Replayed: the challenge is single use.
    let replayed = unauthenticated(answer(&f.core, None, &good).await);
    assert!(replayed.contains("already used"), "{replayed}");

    // Every way a proof can fail to verify gets the same answer: a stranger's key, another
    // device's credential, a slot that is not the credential's, a bad signature, a DeviceId
    // nobody registered (with a key of its own), and the enrolment key of another chip.
    let stranger = DeviceId::from_bytes([0x5b; 32]);
    let mut cases = Vec::new();
    let c = challenge(&f, &id).await;
    cases.push(("another chip's key", signed(other, &id, &serial, dsk, &c)));
    let c = challenge(&f, &id).await;
    cases.push((
        "another device's credential",
        signed(other, &id, &other_serial, dsk, &c),
    ));
    let c = challenge(&f, &id).await;
    cases.push((
        "the wrong slot",
        signed(seeds, &id, &serial, StatusSigner::DeviceKey(slot(2)), &c),
    ));
    let c = challenge(&f, &id).await;
    let mut tampered = signed(seeds, &id, &serial, dsk, &c);
    tampered.proof.as_mut().expect("proof").signature[7] ^= 1;
    cases.push(("a bad signature", tampered));
    let c = challenge(&f, &stranger).await;
    cases.push((
        "an unregistered DeviceId",
        signed(seeds, &stranger, "", StatusSigner::EnrolmentKey, &c),
    ));
    let c = challenge(&f, &id).await;
    cases.push((
        "another chip's enrolment key",
        signed(other, &id, "", StatusSigner::EnrolmentKey, &c),
    ));
    let c = challenge(&f, &other_id).await;
    cases.push((
        "a challenge made for another DeviceId",
        signed(seeds, &id, &serial, dsk, &c),
    ));
    let mut messages = Vec::new();
    for (what, request) in cases {
        messages.push((what, unauthenticated(answer(&f.core, None, &request).await)));
    }
    for (what, message) in &messages {
        assert_eq!(message, "the status proof does not verify", "{what}");
    }

    // Malformed proofs are malformed requests.
    let c = challenge(&f, &id).await;
    let mut no_serial = signed(seeds, &id, "", dsk, &c);
    assert!(is_invalid(
        &answer(&f.core, None, &no_serial).await,
        "serial"
    ));
    no_serial.proof.as_mut().expect("proof").key_slot = 8;
    assert!(is_invalid(
        &answer(&f.core, None, &no_serial).await,
        "proof.key_slot"
    ));
    let mut short = signed(seeds, &id, &serial, dsk, &c);
    short.proof.as_mut().expect("proof").signature.pop();
    assert!(is_invalid(
        &answer(&f.core, None, &short).await,
        "proof.signature"
    ));
    let mut odd_id = signed(seeds, &id, &serial, dsk, &c);
    odd_id.proof.as_mut().expect("proof").challenge_id.push(0);
    assert!(is_invalid(
        &answer(&f.core, None, &odd_id).await,
        "proof.challenge_id"
    ));
    // The challenge was never spent by those: it still answers.
    assert!(
        answer(&f.core, None, &signed(seeds, &id, &serial, dsk, &c))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_expired_challenge_is_refused() {
    let f = Fixture::new(ServiceConfig {
        challenge_ttl: Duration::from_millis(100),
        ..ServiceConfig::default()
    })
    .await;
    let seeds = chip(0);
    let id = f.register(seeds).await;
    assert_eq!(id, id_of(seeds));
    let c = challenge(&f, &id).await;
    // Expiry is counted in whole seconds, rounded up.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let late = unauthenticated(
        answer(
            &f.core,
            None,
            &signed(seeds, &id, "", StatusSigner::EnrolmentKey, &c),
        )
        .await,
    );
    assert!(late.contains("expired"), "{late}");
}
