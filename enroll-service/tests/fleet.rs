//! A whole fleet through both APIs over TLS on loopback: 120 emulated devices across AWS IoT,
//! Azure DPS and Mosquitto policies; revocation checked with `openssl verify -crl_check`;
//! operator authentication and authorisation.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{Harness, bundle, fleet, refusal};
use enroll_service::fleet::EmulatedDevice;
use enroll_service::pki::Role;
use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

const PER_POLICY: usize = 40;

fn webpki_client_auth(root_pem: &str, intermediate_pem: &str, leaf_pem: &str) {
    let der = |p: &str| CertificateDer::from(pem::parse(p).unwrap().into_contents());
    let root = der(root_pem);
    let anchors = [webpki::anchor_from_trusted_cert(&root).unwrap()];
    let intermediates = [der(intermediate_pem)];
    let leaf = der(leaf_pem);
    EndEntityCert::try_from(&leaf)
        .unwrap()
        .verify_for_usage(
            &[webpki::aws_lc_rs::ECDSA_P256_SHA256],
            &anchors,
            &intermediates,
            UnixTime::now(),
            KeyUsage::client_auth(),
            None,
            None,
        )
        .unwrap();
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed (apt-get install -y openssl)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn policy(name: &str, params: v1::policy::Params) -> v1::CreatePolicyRequest {
    v1::CreatePolicyRequest {
        policy: Some(v1::Policy {
            name: name.into(),
            params: Some(params),
            ..Default::default()
        }),
    }
}

async fn onboard_all(
    harness: &Harness,
    devices: &Arc<Vec<EmulatedDevice>>,
) -> Vec<v1::CredentialBundle> {
    let channel = harness.channel().await;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..devices.len() {
        let (devices, channel) = (devices.clone(), channel.clone());
        tasks.spawn(async move {
            let mut client = DeviceEnrollmentClient::new(channel);
            (index, devices[index].onboard(&mut client).await.unwrap())
        });
    }
    let mut bundles = vec![None; devices.len()];
    while let Some(joined) = tasks.join_next().await {
        let (index, outcome) = joined.unwrap();
        bundles[index] = Some(bundle(&outcome).clone());
    }
    bundles.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_onboards_across_aws_azure_and_mosquitto_policies() {
    let harness = Harness::start().await;
    let devices = Arc::new(fleet((3 * PER_POLICY) as u32, 20));
    let mut client = harness.device_client().await;
    for device in devices.iter() {
        client
            .register(device.registration(b"line-1").unwrap())
            .await
            .unwrap();
    }
    let mut admin = harness.operator("alice", "acme", Role::Admin).await;
    // A stand-in for Amazon Root CA 1: the policy carries whatever PEM the operator trusts.
    let aws_root = harness.server.root_pem.clone();
    let policies = [
        policy(
            "aws",
            v1::policy::Params::AwsIot(v1::AwsIotPolicyParams {
                endpoint_host: "abc123-ats.iot.eu-west-1.amazonaws.com".into(),
                server_root_ca_pem: aws_root.clone(),
                ..Default::default()
            }),
        ),
        policy(
            "azure",
            v1::policy::Params::AzureDps(v1::AzureDpsPolicyParams {
                id_scope: "0ne00000000".into(),
                ..Default::default()
            }),
        ),
        policy(
            "broker",
            v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                host: "127.0.0.1".into(),
                ..Default::default()
            }),
        ),
    ];
    for (index, request) in policies.into_iter().enumerate() {
        let name = request.policy.as_ref().unwrap().name.clone();
        admin.create_policy(request).await.unwrap();
        let ids = devices[index * PER_POLICY..(index + 1) * PER_POLICY]
            .iter()
            .map(|d| d.device_id().to_string())
            .collect();
        let created = admin
            .create_batch(v1::CreateBatchRequest {
                name: format!("{name} batch"),
                policy_name: name,
                device_ids: ids,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.report.unwrap().accepted, PER_POLICY as u64);
    }

    let bundles = onboard_all(&harness, &devices).await;
    let mut serials = std::collections::HashSet::new();
    for (index, issued) in bundles.iter().enumerate() {
        let id = devices[index].device_id().to_string();
        assert!(serials.insert(issued.serial.clone()));
        webpki_client_auth(
            &issued.root_pem,
            &issued.intermediate_pems[0],
            &issued.certificate_pem,
        );
        match (index / PER_POLICY, issued.endpoint.as_ref().unwrap()) {
            (0, v1::credential_bundle::Endpoint::AwsIot(aws)) => {
                assert_eq!(aws.client_id, id);
                assert_eq!(aws.port, 8883);
                assert_eq!(aws.server_root_ca_pem, aws_root);
            }
            (1, v1::credential_bundle::Endpoint::AzureDps(azure)) => {
                assert_eq!(azure.registration_id, id);
                assert_eq!(
                    azure.mqtt_username,
                    format!("0ne00000000/registrations/{id}/api-version=2019-03-31")
                );
            }
            (2, v1::credential_bundle::Endpoint::Mosquitto(broker)) => {
                assert_eq!(broker.topic_prefix, format!("devices/{id}/"));
                assert_eq!(broker.client_id, id);
            }
            (group, endpoint) => panic!("device {index} (group {group}) got {endpoint:?}"),
        }
    }

    // One leaf per policy through OpenSSL as well.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("root.pem"), &bundles[0].root_pem).unwrap();
    fs::write(
        dir.path().join("intermediate.pem"),
        &bundles[0].intermediate_pems[0],
    )
    .unwrap();
    for index in [0, PER_POLICY, 2 * PER_POLICY] {
        fs::write(dir.path().join("leaf.pem"), &bundles[index].certificate_pem).unwrap();
        let (ok, out) = openssl(
            dir.path(),
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "intermediate.pem",
                "-purpose",
                "sslclient",
                "leaf.pem",
            ],
        );
        assert!(ok, "{out}");
    }

    let batches = admin
        .list_batches(v1::ListBatchesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .batches;
    assert_eq!(batches.len(), 3);
    for batch in batches {
        let counts = batch.counts.unwrap();
        assert_eq!(counts.onboarded, PER_POLICY as u64, "{}", batch.name);
        assert!(counts.settled());
    }
}

/// `settled()` on the wire counts, for readability above.
trait Settled {
    fn settled(&self) -> bool;
}
impl Settled for v1::BatchCounts {
    fn settled(&self) -> bool {
        self.awaiting_registration == 0 && self.registered == 0 && self.reonboard_pending == 0
    }
}

#[tokio::test]
async fn a_revoked_device_is_refused_and_its_certificate_fails_crl_checks() {
    let harness = Harness::start().await;
    let devices = Arc::new(fleet(2, 21));
    let mut client = harness.device_client().await;
    for device in devices.iter() {
        client
            .register(device.registration(b"").unwrap())
            .await
            .unwrap();
    }
    let mut admin = harness.operator("alice", "acme", Role::Admin).await;
    admin
        .create_policy(policy(
            "broker",
            v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                host: "127.0.0.1".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    admin
        .create_batch(v1::CreateBatchRequest {
            name: "b".into(),
            policy_name: "broker".into(),
            device_ids: devices.iter().map(|d| d.device_id().to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let bundles = onboard_all(&harness, &devices).await;

    let revoked_id = devices[0].device_id().to_string();
    let response = admin
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: revoked_id.clone(),
            reason: v1::RevocationReason::KeyCompromise as i32,
            comment: "lost in transit".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.revoked_serials, vec![bundles[0].serial.clone()]);

    // The device is told it is revoked and cannot onboard or renew again.
    let outcome = devices[0].onboard(&mut client).await.unwrap();
    assert_eq!(refusal(&outcome).reason(), v1::RefusalReason::Revoked);
    let outcome = devices[0].renew(&mut client, 0).await.unwrap();
    assert_eq!(refusal(&outcome).reason(), v1::RefusalReason::Revoked);
    let status = devices[0].status(&mut client, None).await.unwrap();
    assert_eq!(status.status(), v1::DeviceStatus::Revoked);

    // OpenSSL with the service's CRL: the revoked leaf fails, the other passes.
    let crl = admin
        .get_crl(v1::GetCrlRequest {
            format: v1::CrlFormat::Pem as i32,
            ..v1::GetCrlRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(crl.revoked_count, 1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("root.pem"), &bundles[0].root_pem).unwrap();
    fs::write(d.join("intermediate.pem"), &bundles[0].intermediate_pems[0]).unwrap();
    fs::write(
        d.join("chain.pem"),
        format!("{}{}", bundles[0].intermediate_pems[0], bundles[0].root_pem),
    )
    .unwrap();
    fs::write(d.join("crl.pem"), &crl.crl).unwrap();
    let (ok, out) = openssl(
        d,
        &["crl", "-in", "crl.pem", "-CAfile", "chain.pem", "-noout"],
    );
    assert!(ok && out.contains("verify OK"), "CRL signature: {out}");
    for (index, expect_ok) in [(0, false), (1, true)] {
        fs::write(d.join("leaf.pem"), &bundles[index].certificate_pem).unwrap();
        let (ok, out) = openssl(
            d,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "intermediate.pem",
                "-CRLfile",
                "crl.pem",
                "leaf.pem",
            ],
        );
        assert_eq!(ok, expect_ok, "device {index}: {out}");
        if !expect_ok {
            assert!(out.contains("certificate revoked"), "{out}");
        }
    }
    // Revoking again changes nothing.
    let again = admin
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: devices[0].device_id().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.revoked_serials.is_empty());
}

#[tokio::test]
async fn the_operator_api_authenticates_and_authorises_every_call() {
    let harness = Harness::start().await;
    let devices = fleet(1, 22);
    let mut admin = harness.operator("alice", "acme", Role::Admin).await;
    admin
        .create_policy(policy(
            "broker",
            v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                host: "127.0.0.1".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    let batch = admin
        .create_batch(v1::CreateBatchRequest {
            name: "b".into(),
            policy_name: "broker".into(),
            device_ids: vec![devices[0].device_id().to_string()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .batch
        .unwrap();

    // No client certificate at all.
    let mut anonymous =
        oxroot_proto::v1::operator_client::OperatorClient::new(harness.channel().await);
    let status = anonymous.who_am_i(v1::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // A role that does not allow the call; the denial is audited.
    let mut auditor = harness.operator("audrey", "acme", Role::Auditor).await;
    let status = auditor
        .create_batch(v1::CreateBatchRequest {
            name: "x".into(),
            policy_name: "broker".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let mut operator = harness.operator("oscar", "acme", Role::Operator).await;
    let status = operator
        .create_policy(policy(
            "p2",
            v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                host: "h".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let denials = auditor
        .query_audit(v1::QueryAuditRequest {
            action: "access.denied".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(denials.len(), 2, "{denials:?}");

    // Another owner sees nothing of acme's.
    let mut rival = harness.operator("mallory", "rival", Role::Admin).await;
    let status = rival
        .get_batch(v1::GetBatchRequest {
            batch_id: batch.batch_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = rival
        .get_device(v1::GetDeviceRequest {
            device_id: devices[0].device_id().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = rival
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: devices[0].device_id().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        rival
            .list_batches(v1::ListBatchesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .batches
            .is_empty()
    );
    assert!(
        rival
            .list_devices(v1::ListDevicesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .devices
            .is_empty()
    );
    let status = rival
        .list_batches(v1::ListBatchesRequest {
            owner: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // Tenants may not mint broker (serverAuth) certificates under the root devices pin.
    let status = admin
        .export_artifacts(v1::ExportArtifactsRequest {
            policy_name: "broker".into(),
            mosquitto: Some(v1::MosquittoExportOptions {
                broker_csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // The audit chain verifies.
    let verified = auditor
        .verify_audit(v1::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    assert!(verified.entries_checked >= 4);
}

#[tokio::test]
async fn a_device_moved_to_another_owner_re_onboards_on_the_next_key_slot() {
    let harness = Harness::start().await;
    let devices = fleet(2, 23);
    let mut client = harness.device_client().await;
    for device in &devices {
        client
            .register(device.registration(b"").unwrap())
            .await
            .unwrap();
    }
    let mut platform = harness.operator("root-admin", "*", Role::Admin).await;
    let mut batches = Vec::new();
    for owner in ["maker", "buyer"] {
        platform
            .create_policy(v1::CreatePolicyRequest {
                policy: Some(v1::Policy {
                    name: "broker".into(),
                    owner: owner.into(),
                    params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                        host: "127.0.0.1".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        let ids = if owner == "maker" {
            devices.iter().map(|d| d.device_id().to_string()).collect()
        } else {
            Vec::new()
        };
        let batch = platform
            .create_batch(v1::CreateBatchRequest {
                owner: owner.into(),
                name: owner.into(),
                policy_name: "broker".into(),
                device_ids: ids,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .batch
            .unwrap();
        batches.push(batch.batch_id);
    }
    let mut first = Vec::new();
    for device in &devices {
        let outcome = device.onboard(&mut client).await.unwrap();
        first.push(bundle(&outcome).clone());
        assert_eq!(first.last().unwrap().key_slot, 1);
    }

    for device in &devices {
        let moved = platform
            .transfer_device(v1::TransferDeviceRequest {
                device_id: device.device_id().to_string(),
                target_owner: "buyer".into(),
                target_batch_id: batches[1].clone(),
                comment: "sold".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(moved.revoked_serials.len(), 1);
    }
    // Signed with the key of the old owner's credential, which the service still knows as the
    // device's (a revoked certificate's key is still the chip's).
    let held = enroll_service::fleet::HeldCredential {
        serial: first[0].serial.clone(),
        key_slot: rot_core::keys::KeySlot::FIRST,
    };
    let status = devices[0].status(&mut client, Some(&held)).await.unwrap();
    assert_eq!(status.status(), v1::DeviceStatus::PolicyChanged);

    // Before re-issue, a moved device cannot renew back onto the old owner's key.
    let back = devices[1].renew(&mut client, 1).await.unwrap();
    assert_eq!(
        refusal(&back).reason(),
        v1::RefusalReason::KeySlotUnavailable
    );
    // One device re-onboards, the other renews: both land on slot 2, under the new owner.
    let onboarded = devices[0].onboard(&mut client).await.unwrap();
    let renewed = devices[1].renew(&mut client, 0).await.unwrap();
    for (index, outcome) in [(0, &onboarded), (1, &renewed)] {
        let issued = bundle(outcome);
        assert_eq!(issued.key_slot, 2, "device {index}");
        assert_ne!(issued.serial, first[index].serial);
        let dpk = devices[index]
            .device_public_key(rot_core::keys::KeySlot::new(2).unwrap())
            .unwrap();
        let der = pem::parse(&issued.certificate_pem).unwrap().into_contents();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            dpk.as_bytes()
        );
    }
    // The old owner's key stays retired even after the device re-issued under the new owner.
    let back = devices[0].renew(&mut client, 1).await.unwrap();
    assert_eq!(
        refusal(&back).reason(),
        v1::RefusalReason::KeySlotUnavailable
    );
}
