//! Status over gRPC and TLS on loopback: a caller without a device key learns nothing about any
//! device, and a device learns its own status by signing a fresh challenge.
#![allow(
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed expect is a failed test"
)]

mod common;

use common::{Harness, bundle, fleet, register, seed_batch};
use enroll_service::fleet::HeldCredential;
use oxroot_client::device::status_proof;
use oxroot_proto::v1;
use rot_core::attestation::StatusSigner;
use rot_core::keys::KeySlot;

/// What a fleet scanner gets for a DeviceId: a Status request without any proof, as any gRPC
/// client would send it.
async fn scan(
    client: &mut v1::device_enrollment_client::DeviceEnrollmentClient<tonic::transport::Channel>,
    device_id: &str,
    serial: &str,
) -> v1::StatusResponse {
    client
        .status(v1::StatusRequest {
            device_id: device_id.into(),
            serial: serial.into(),
            ..Default::default()
        })
        .await
        .expect("an answer")
        .into_inner()
}

#[tokio::test]
async fn an_unsigned_status_tells_a_fleet_scanner_nothing() {
    let harness = Harness::start().await;
    let devices = fleet(3, 0x71);
    let mut client = harness.device_client().await;
    for device in &devices[..2] {
        register(&mut client, device).await;
    }
    seed_batch(&harness, "acme", "b1", &[&devices[0]]).await;
    let issued = bundle(&devices[0].onboard(&mut client).await.expect("onboard")).clone();

    // An onboarded device (asked with and without its serial), a registered one outside any
    // batch, one nobody registered: the same answer, but for the challenge it carries.
    let targets = [
        (devices[0].device_id().to_string(), issued.serial.clone()),
        (devices[0].device_id().to_string(), String::new()),
        (devices[1].device_id().to_string(), String::new()),
        (devices[2].device_id().to_string(), String::new()),
    ];
    let mut answers = Vec::new();
    for (device_id, serial) in &targets {
        let mut answer = scan(&mut client, device_id, serial).await;
        // Nothing of the device: no state, no serial, slot, policy, dates or hints.
        assert!(answer.serial.is_empty(), "{answer:?}");
        assert_eq!(answer.key_slot, 0, "{answer:?}");
        assert_eq!(answer.policy_kind, 0, "{answer:?}");
        assert!(!answer.onboarding_ready, "{answer:?}");
        assert!(answer.not_after.is_none() && answer.renew_after.is_none());
        assert!(answer.next_check_after.is_none(), "{answer:?}");
        assert_eq!(answer.device_id, *device_id);
        let challenge = answer.challenge.take().expect("a challenge to sign");
        assert_eq!(
            (challenge.challenge_id.len(), challenge.nonce.len()),
            (16, 32)
        );
        answer.device_id.clear();
        answers.push(answer);
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(answers[0].status(), v1::DeviceStatus::ProofRequired);
}

#[tokio::test]
async fn a_device_hears_its_status_only_over_a_fresh_signed_request() {
    let harness = Harness::start().await;
    let devices = fleet(2, 0x72);
    let mut client = harness.device_client().await;
    for device in &devices {
        register(&mut client, device).await;
    }
    seed_batch(&harness, "acme", "b1", &[&devices[0], &devices[1]]).await;

    // Before onboarding the enrolment key signs.
    let ready = devices[0].status(&mut client, None).await.expect("status");
    assert_eq!(ready.status(), v1::DeviceStatus::NotOnboarded);
    assert!(ready.onboarding_ready);

    // After, the device key of the credential it holds.
    let issued = bundle(&devices[0].onboard(&mut client).await.expect("onboard")).clone();
    let held = HeldCredential {
        serial: issued.serial.clone(),
        key_slot: KeySlot::FIRST,
    };
    let status = devices[0]
        .status(&mut client, Some(&held))
        .await
        .expect("status");
    assert_eq!(status.status(), v1::DeviceStatus::Enrolled);
    assert_eq!(
        (status.serial.as_str(), status.key_slot),
        (issued.serial.as_str(), 1)
    );
    assert!(status.next_check_after.is_some());
    assert!(
        status.challenge.is_some(),
        "a challenge for the next request"
    );

    // A signed request by hand: it works once; replayed, it is refused.
    let request = |challenge: &v1::StatusChallenge, device: usize, signer| v1::StatusRequest {
        device_id: devices[0].device_id().to_string(),
        serial: issued.serial.clone(),
        proof: Some(
            status_proof(&devices[device], challenge, signer, &issued.serial).expect("proof"),
        ),
    };
    let challenge = scan(&mut client, &devices[0].device_id().to_string(), "")
        .await
        .challenge
        .expect("a challenge");
    let signed = request(&challenge, 0, StatusSigner::DeviceKey(KeySlot::FIRST));
    let answer = client
        .status(signed.clone())
        .await
        .expect("signed")
        .into_inner();
    assert_eq!(answer.status(), v1::DeviceStatus::Enrolled);
    let replayed = client.status(signed).await.expect_err("a replay");
    assert_eq!(replayed.code(), tonic::Code::Unauthenticated);
    assert!(replayed.message().contains("already used"), "{replayed}");

    // Another chip's key, over a challenge made for this device: refused, saying only that
    // the proof does not verify; the same words as for a DeviceId nobody registered.
    let challenge = scan(&mut client, &devices[0].device_id().to_string(), "")
        .await
        .challenge
        .expect("a challenge");
    let forged = client
        .status(request(
            &challenge,
            1,
            StatusSigner::DeviceKey(KeySlot::FIRST),
        ))
        .await
        .expect_err("another chip's key");
    assert_eq!(forged.code(), tonic::Code::Unauthenticated);
    let unknown_id = "ab".repeat(32);
    let challenge = scan(&mut client, &unknown_id, "")
        .await
        .challenge
        .expect("a challenge");
    let unknown = client
        .status(v1::StatusRequest {
            device_id: unknown_id,
            serial: String::new(),
            proof: Some(
                status_proof(&devices[1], &challenge, StatusSigner::EnrolmentKey, "")
                    .expect("proof"),
            ),
        })
        .await
        .expect_err("an unknown device");
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
    assert_eq!(forged.message(), unknown.message());

    // A device key's proof must name the credential whose key signs.
    let challenge = scan(&mut client, &devices[0].device_id().to_string(), "")
        .await
        .challenge
        .expect("a challenge");
    let mut unnamed = request(&challenge, 0, StatusSigner::DeviceKey(KeySlot::FIRST));
    unnamed.serial.clear();
    let invalid = client.status(unnamed).await.expect_err("no serial");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
}

/// A revoked credential's key proves nothing any more: a Status signed with it is refused like
/// any bad proof, while the device still hears that it is revoked through its enrolment key.
#[tokio::test]
async fn a_revoked_credentials_key_no_longer_signs_a_status() {
    let harness = Harness::start().await;
    let devices = fleet(1, 0x73);
    let mut client = harness.device_client().await;
    register(&mut client, &devices[0]).await;
    seed_batch(&harness, "acme", "b1", &[&devices[0]]).await;
    let issued = bundle(&devices[0].onboard(&mut client).await.expect("onboard")).clone();
    let mut admin = harness
        .operator("admin", "acme", enroll_service::pki::Role::Admin)
        .await;
    admin
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: issued.device_id.clone(),
            reason: v1::RevocationReason::KeyCompromise as i32,
            comment: "lost".into(),
        })
        .await
        .expect("RevokeDevice");

    let device_id = devices[0].device_id().to_string();
    let challenge = scan(&mut client, &device_id, "")
        .await
        .challenge
        .expect("a challenge");
    let by_revoked_key = client
        .status(v1::StatusRequest {
            device_id: device_id.clone(),
            serial: issued.serial.clone(),
            proof: Some(
                status_proof(
                    &devices[0],
                    &challenge,
                    StatusSigner::DeviceKey(KeySlot::FIRST),
                    &issued.serial,
                )
                .expect("proof"),
            ),
        })
        .await
        .expect_err("a revoked credential's key");
    assert_eq!(by_revoked_key.code(), tonic::Code::Unauthenticated);

    let revoked = devices[0].status(&mut client, None).await.expect("status");
    assert_eq!(revoked.status(), v1::DeviceStatus::Revoked);
}
