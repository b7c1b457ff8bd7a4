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

async fn fresh_challenge(
    client: &mut v1::device_enrollment_client::DeviceEnrollmentClient<tonic::transport::Channel>,
    device_id: &str,
) -> v1::StatusChallenge {
    scan(client, device_id, "")
        .await
        .challenge
        .expect("a challenge")
}

/// CheckFirmware and ReportFirmware take only fresh proofs over their own messages: no proof,
/// a status proof, a replay, a report whose outcome was changed after signing are refused; a
/// report names a rollout the device was offered, once; the reason is one line of text.
#[tokio::test]
async fn firmware_requests_need_their_own_fresh_signatures() {
    use oxroot_client::device::{FirmwareReport, check_firmware, report_firmware};
    use rot_core::FirmwareMeasurement;
    use rot_core::attestation::{self, FirmwareRequest, StatusContext};

    let harness = Harness::start().await;
    let devices = fleet(1, 0x73);
    let device = &devices[0];
    let mut client = harness.device_client().await;
    register(&mut client, device).await;
    seed_batch(&harness, "acme", "b1", &[device]).await;
    let issued = bundle(&device.onboard(&mut client).await.expect("onboard")).clone();
    let held = HeldCredential {
        serial: issued.serial.clone(),
        key_slot: KeySlot::FIRST,
    };
    let mut acme = harness
        .operator("alice", "acme", enroll_service::pki::Role::Admin)
        .await;
    let image = acme
        .sign_firmware(v1::SignFirmwareRequest {
            name: "app".into(),
            version: "2.0.0".into(),
            security_counter: 2,
            policy_name: "b1-policy".into(),
            payload: vec![0x5a; 5000],
            ..Default::default()
        })
        .await
        .expect("signed")
        .into_inner()
        .firmware
        .expect("firmware");
    let rollout = acme
        .create_rollout(v1::CreateRolloutRequest {
            firmware_name: "app".into(),
            firmware_version: "2.0.0".into(),
            stages: vec![100],
            failure_threshold: 1,
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner()
        .rollout
        .expect("rollout");

    // The offer: the image the record names, its manifest and chain.
    let offer = check_firmware(&mut client, device, Some(&held))
        .await
        .expect("checked")
        .expect("an offer at 100 %");
    assert_eq!(offer.rollout_id, rollout.id);
    assert_eq!(
        FirmwareMeasurement::of_image(&offer.image).to_string(),
        image.measurement
    );
    assert_eq!(offer.manifest, image.manifest);
    assert!(offer.signer_chain_pem.contains("BEGIN CERTIFICATE"));

    let device_id = device.device_id().to_string();
    let sign = |challenge: &v1::StatusChallenge, request: &FirmwareRequest<'_>| {
        let nonce: [u8; 32] = challenge.nonce.as_slice().try_into().expect("32 bytes");
        let context = StatusContext {
            device_id: device.device_id(),
            challenge_id: &challenge.challenge_id,
            nonce: &nonce,
            serial: issued.serial.as_bytes(),
        };
        let message = attestation::firmware_request_message(
            StatusSigner::DeviceKey(KeySlot::FIRST),
            &context,
            request,
        )
        .expect("a message");
        let seeds = oxroot_client::device::Chip::seeds(device).expect("seeds");
        let keys =
            oxroot_client::device::Chip::answer_keys(device, &seeds, KeySlot::FIRST).expect("keys");
        v1::StatusProof {
            challenge_id: challenge.challenge_id.clone(),
            key_slot: 1,
            signature: keys.dsk.sign(&message).0.to_vec(),
        }
    };
    let check = |proof| v1::CheckFirmwareRequest {
        device_id: device_id.clone(),
        serial: issued.serial.clone(),
        proof,
    };

    // No proof; a status proof; a check proof twice.
    let missing = client
        .check_firmware(check(None))
        .await
        .expect_err("no proof");
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    let c = fresh_challenge(&mut client, &device_id).await;
    let status_signed = status_proof(
        device,
        &c,
        StatusSigner::DeviceKey(KeySlot::FIRST),
        &issued.serial,
    )
    .expect("proof");
    let wrong_purpose = client
        .check_firmware(check(Some(status_signed)))
        .await
        .expect_err("a status proof");
    assert_eq!(wrong_purpose.code(), tonic::Code::Unauthenticated);
    let c = fresh_challenge(&mut client, &device_id).await;
    let proof = sign(&c, &FirmwareRequest::Check);
    client
        .check_firmware(check(Some(proof.clone())))
        .await
        .expect("a fresh check");
    let replay = client
        .check_firmware(check(Some(proof)))
        .await
        .expect_err("a replay");
    assert_eq!(replay.code(), tonic::Code::Unauthenticated);

    // A report whose outcome was changed after signing does not verify.
    let running = FirmwareMeasurement::from_digest([7; 32]);
    let report =
        |proof, installed: bool, rollout_id: &str, reason: &str| v1::ReportFirmwareRequest {
            device_id: device_id.clone(),
            serial: issued.serial.clone(),
            proof: Some(proof),
            rollout_id: rollout_id.into(),
            installed,
            running_measurement: running.as_bytes().to_vec(),
            reason: reason.into(),
        };
    let c = fresh_challenge(&mut client, &device_id).await;
    let signed_failure = sign(
        &c,
        &FirmwareRequest::Report {
            rollout_id: rollout.id.as_bytes(),
            installed: false,
            running: &running,
        },
    );
    let flipped = client
        .report_firmware(report(signed_failure, true, &rollout.id, ""))
        .await
        .expect_err("a changed outcome");
    assert_eq!(flipped.code(), tonic::Code::Unauthenticated);
    // A control sequence in the reason, a rollout never offered.
    let c = fresh_challenge(&mut client, &device_id).await;
    let escape = client
        .report_firmware(report(
            sign(&c, &FirmwareRequest::Check),
            false,
            &rollout.id,
            "\u{1b}[31mred",
        ))
        .await
        .expect_err("a control character");
    assert_eq!(escape.code(), tonic::Code::InvalidArgument);
    let unknown = "ro-0123456789abcdef";
    let c = fresh_challenge(&mut client, &device_id).await;
    let signed_unknown = sign(
        &c,
        &FirmwareRequest::Report {
            rollout_id: unknown.as_bytes(),
            installed: false,
            running: &running,
        },
    );
    let not_offered = client
        .report_firmware(report(signed_unknown, false, unknown, "no such rollout"))
        .await
        .expect_err("an unknown rollout");
    assert_eq!(not_offered.code(), tonic::Code::NotFound);

    // The real report counts once and halts the rollout (threshold 1): no more offers.
    let failure = FirmwareReport {
        rollout_id: rollout.id.clone(),
        installed: false,
        running,
        reason: "flash write failed".into(),
    };
    report_firmware(&mut client, device, Some(&held), &failure)
        .await
        .expect("reported");
    let twice = report_firmware(&mut client, device, Some(&held), &failure)
        .await
        .expect_err("a second report");
    assert!(
        matches!(&twice, oxroot_client::device::ExchangeError::Rpc(s) if s.code() == tonic::Code::AlreadyExists),
        "{twice:?}"
    );
    let seen = acme
        .get_rollout(v1::GetRolloutRequest {
            rollout_id: rollout.id.clone(),
            ..Default::default()
        })
        .await
        .expect("rollout")
        .into_inner()
        .rollout
        .expect("rollout");
    assert_eq!((seen.installed, seen.failed), (0, 1));
    assert_eq!(seen.standing(), v1::RolloutStanding::Halted);
    assert!(
        check_firmware(&mut client, device, Some(&held))
            .await
            .expect("checked")
            .is_none()
    );
}
