//! Certificates that a renewal replaced, over gRPC and TLS on loopback: valid while the device
//! may still need them, on the CRL (reason superseded) once it proved its successor, by a Renew
//! naming it or a Status signed with its key, and at the latest when the policy's grace ends.
#![allow(
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed expect is a failed test"
)]

mod common;

use std::time::Duration;

use common::{Harness, bundle, fleet, register};
use enroll_service::fleet::{EmulatedDevice, HeldCredential};
use enroll_service::pki::Role;
use enroll_service::service::ServiceConfig;
use oxroot_proto::v1;
use oxroot_proto::v1::operator_client::OperatorClient;
use rot_core::keys::KeySlot;
use tonic::transport::Channel;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::ReasonCode;

/// Creates a Mosquitto policy (with `grace`, if given) and a batch of `devices` through the
/// Operator API; returns the batch id.
async fn policy_and_batch(
    operator: &mut OperatorClient<Channel>,
    grace: Option<prost_types::Duration>,
    devices: &[&EmulatedDevice],
) -> String {
    operator
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: "broker".into(),
                superseded_grace: grace,
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .expect("policy");
    operator
        .create_batch(v1::CreateBatchRequest {
            name: "line 1".into(),
            policy_name: "broker".into(),
            device_ids: devices.iter().map(|d| d.device_id().to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("batch")
        .into_inner()
        .batch
        .expect("batch")
        .batch_id
}

/// The serials on the owner's CRL, with their reason codes, as GetCrl serves it.
async fn crl(operator: &mut OperatorClient<Channel>) -> Vec<(String, Option<u8>)> {
    let response = operator
        .get_crl(v1::GetCrlRequest {
            format: v1::CrlFormat::Der as i32,
            ..v1::GetCrlRequest::default()
        })
        .await
        .expect("CRL")
        .into_inner();
    let (_, crl) = CertificateRevocationList::from_der(&response.crl).expect("a CRL");
    crl.iter_revoked_certificates()
        .map(|revoked| {
            let reason = revoked.reason_code().map(|(_, ReasonCode(code))| code);
            (format!("{:x}", revoked.user_certificate), reason)
        })
        .collect()
}

fn listed(crl: &[(String, Option<u8>)], serial: &str) -> bool {
    crl.iter().any(|(s, _)| s == serial)
}

/// RFC 5280 CRLReason superseded.
const SUPERSEDED: u8 = 4;

fn held(issued: &v1::CredentialBundle) -> HeldCredential {
    HeldCredential {
        serial: issued.serial.clone(),
        key_slot: KeySlot::new(u8::try_from(issued.key_slot).expect("a slot")).expect("a slot"),
    }
}

#[tokio::test]
async fn a_replaced_certificate_stays_valid_until_a_status_signed_with_its_successor() {
    let harness = Harness::start().await;
    let devices = fleet(1, 0x61);
    let device = &devices[0];
    let mut client = harness.device_client().await;
    register(&mut client, device).await;
    let mut admin = harness.operator("ada", "acme", Role::Admin).await;
    policy_and_batch(&mut admin, None, &[device]).await;

    let first = bundle(&device.onboard(&mut client).await.expect("onboard")).clone();
    // Rotation: slot 2. The first certificate is superseded, and not on the CRL.
    let second = bundle(&device.renew(&mut client, 2).await.expect("renew")).clone();
    assert_eq!(second.key_slot, 2);
    assert!(!listed(&crl(&mut admin).await, &first.serial));

    // The device lost the new certificate and retries the rotation, still holding the first:
    // it gets the second again, and the first stays valid (its proof is not the first's key).
    let retried = device
        .renew_holding(&mut client, 2, &first.serial)
        .await
        .expect("retry");
    assert_eq!(bundle(&retried).serial, second.serial);
    // It asks for its status with the first certificate's key: told to renew (which gets it
    // the current certificate), not that its policy changed, and the first stays valid.
    let status = device
        .status(&mut client, Some(&held(&first)))
        .await
        .expect("status");
    assert_eq!(status.status(), v1::DeviceStatus::RenewalDue);
    assert!(!listed(&crl(&mut admin).await, &first.serial));

    // Once it signs a Status with the second certificate's key, the first goes on the CRL,
    // reason superseded; the second does not.
    let status = device
        .status(&mut client, Some(&held(&second)))
        .await
        .expect("status");
    assert_eq!(status.status(), v1::DeviceStatus::Enrolled);
    assert_eq!(status.serial, second.serial);
    let revoked = crl(&mut admin).await;
    let entry = revoked
        .iter()
        .find(|(serial, _)| *serial == first.serial)
        .expect("the first certificate is on the CRL");
    assert_eq!(entry.1, Some(SUPERSEDED));
    assert!(!listed(&revoked, &second.serial));

    // The owner's audit log says why.
    let entries: Vec<_> = harness
        .registry()
        .audit(1, usize::MAX)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.decode().expect("record"))
        .filter(|r| r.action == "credential.revoke_superseded")
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].owner, "acme");
    assert_eq!(entries[0].details["cause"], "successor_proved");
    assert_eq!(entries[0].details["rpc"], "status");
    assert_eq!(entries[0].details["successor"], second.serial);
    assert_eq!(entries[0].details["serials"], first.serial);
}

#[tokio::test]
async fn a_renewal_naming_the_new_certificate_revokes_the_one_it_replaced() {
    let harness = Harness::start().await;
    let devices = fleet(1, 0x62);
    let device = &devices[0];
    let mut client = harness.device_client().await;
    register(&mut client, device).await;
    let mut admin = harness.operator("ada", "acme", Role::Admin).await;
    policy_and_batch(&mut admin, None, &[device]).await;

    let first = bundle(&device.onboard(&mut client).await.expect("onboard")).clone();
    let second = bundle(
        &device
            .renew_holding(&mut client, 2, &first.serial)
            .await
            .expect("rotate"),
    )
    .clone();
    assert!(!listed(&crl(&mut admin).await, &first.serial));
    // A renewal that keeps the slot, from a device that says it holds the second certificate
    // and proves the second's key: nothing new is issued (not due), the first is revoked.
    let again = device
        .renew_holding(&mut client, 0, &second.serial)
        .await
        .expect("renew");
    assert_eq!(bundle(&again).serial, second.serial);
    let revoked = crl(&mut admin).await;
    assert!(listed(&revoked, &first.serial));
    assert!(!listed(&revoked, &second.serial));
    // The operator sees the first as revoked, reason superseded, and the second as current.
    let device_view = admin
        .get_device(v1::GetDeviceRequest {
            device_id: device.device_id().to_string(),
        })
        .await
        .expect("device")
        .into_inner()
        .device
        .expect("device");
    let state_of = |serial: &str| {
        device_view
            .credential_history
            .iter()
            .find(|c| c.serial == serial)
            .expect("in the history")
            .state()
    };
    assert_eq!(state_of(&first.serial), v1::CredentialState::Revoked);
    assert_eq!(state_of(&second.serial), v1::CredentialState::Active);
    // A malformed held serial is a malformed request.
    let malformed = device.renew_holding(&mut client, 0, "XYZ").await;
    assert!(
        matches!(&malformed, Err(enroll_service::fleet::FleetError::Rpc(s)) if s.code() == tonic::Code::InvalidArgument),
        "{malformed:?}"
    );
}

#[tokio::test]
async fn a_replaced_certificate_is_revoked_when_the_policys_grace_ends() {
    let harness = Harness::start_with(ServiceConfig {
        superseded_sweep_interval: Duration::from_millis(200),
        ..ServiceConfig::default()
    })
    .await;
    let devices = fleet(1, 0x63);
    let device = &devices[0];
    let mut client = harness.device_client().await;
    register(&mut client, device).await;
    let mut admin = harness.operator("ada", "acme", Role::Admin).await;

    // The grace is more than zero and at most 30 days; unset, it is 7 days.
    for (seconds, what) in [(0, "zero"), (30 * 86_400 + 1, "over 30 days")] {
        let refused = admin
            .create_policy(v1::CreatePolicyRequest {
                policy: Some(v1::Policy {
                    name: "too-long".into(),
                    superseded_grace: Some(prost_types::Duration { seconds, nanos: 0 }),
                    params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                        host: "127.0.0.1".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
            })
            .await
            .expect_err(what);
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{what}");
        assert!(refused.message().contains("superseded_grace"), "{refused}");
    }
    policy_and_batch(
        &mut admin,
        Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        }),
        &[device],
    )
    .await;
    let policy = admin
        .get_policy(v1::GetPolicyRequest {
            name: "broker".into(),
            ..Default::default()
        })
        .await
        .expect("policy")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(policy.superseded_grace.expect("grace").seconds, 2);

    let first = bundle(&device.onboard(&mut client).await.expect("onboard")).clone();
    let second = bundle(&device.renew(&mut client, 2).await.expect("rotate")).clone();
    // Valid within the grace...
    assert!(!listed(&crl(&mut admin).await, &first.serial));
    // ...and on the CRL once the sweep saw it end, with nothing from the device.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let revoked = crl(&mut admin).await;
        if listed(&revoked, &first.serial) {
            assert!(!listed(&revoked, &second.serial));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the superseded certificate outlived its grace"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let entries: Vec<_> = harness
        .registry()
        .audit(1, usize::MAX)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.decode().expect("record"))
        .filter(|r| r.action == "credential.revoke_superseded")
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].actor, "system");
    assert_eq!(entries[0].details["cause"], "grace_ended");
    // The device still works with its current certificate.
    let status = device
        .status(&mut client, Some(&held(&second)))
        .await
        .expect("status");
    assert_eq!(status.status(), v1::DeviceStatus::Enrolled);
}
