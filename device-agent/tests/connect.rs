//! `device-agent connect` with the credential the service issued: MQTT over mutual TLS against
//! a real Mosquitto broker running the service's rendered configuration (own topic works,
//! another device's topic is refused by the ACL, a revoked device is refused after the CRL
//! reload), and the local-only checks for AWS IoT and Azure DPS.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use common::{Agent, Broker, Harness, free_port, policy_and_batch, revoke};
use oxroot_proto::v1;

/// Enrols, registers and adds a device to `batch`; returns its agent and DeviceId.
async fn device(
    harness: &Harness,
    operator: &mut oxroot_proto::v1::operator_client::OperatorClient<tonic::transport::Channel>,
    batch: &str,
    dir: &std::path::Path,
    seed: u8,
) -> (Agent, String) {
    let agent = Agent::new(
        &dir.join(format!("state-{seed}")),
        &format!("emulated:{}", hex::encode([seed; 32])),
    );
    let id = agent.join_batch(harness, operator, batch).await;
    agent.run_with_service(&["onboard"], harness).await.ok();
    (agent, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_mutual_tls_with_a_silicon_derived_key() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let broker_dir = work.path().join("broker");
    std::fs::create_dir(&broker_dir).unwrap();
    let port = free_port();
    let mut operator = harness.operator("acme").await;
    let batch = policy_and_batch(
        &mut operator,
        "broker",
        v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
            host: "127.0.0.1".into(),
            port: u32::from(port),
            ..Default::default()
        }),
    )
    .await;
    let (alice, alice_id) = device(&harness, &mut operator, &batch, work.path(), 0x21).await;
    let (bob, bob_id) = device(&harness, &mut operator, &batch, work.path(), 0x22).await;
    // Broker certificates come from a platform operator, who names the owner.
    let mut platform = harness.operator("*").await;
    let mut broker = Broker::start(&mut platform, "acme", "broker", &broker_dir, port).await;

    // Publish to its own topic and read it back.
    let connected = alice.json(&["connect"], None).await;
    assert_eq!(
        connected["topic"],
        format!("devices/{alice_id}/agent/hello")
    );
    assert_eq!(connected["client_id"], alice_id.as_str());
    assert!(connected["bytes_read_back"].as_u64().unwrap() > 0);
    assert_eq!(connected["key_slot"], 1);
    // The policy's default offers both versions; Mosquitto picks TLS 1.3.
    assert_eq!(connected["tls_versions"], "TLS 1.2, TLS 1.3");
    assert_eq!(connected["protocol"], "MQTT 5 over TLS 1.3");

    // Another device's topic: the ACL refuses it.
    let foreign = format!("/devices/{bob_id}/agent/hello");
    let refused = alice.run(&["connect", "--topic", &foreign]).await;
    let message = refused.fails(3);
    assert!(message.contains("NotAuthorized"), "{message}");

    // After a rotation the new slot's key connects, and the replaced certificate still works
    // until the device proves the new one (the fallback a failed rotation relies on; see
    // a_replaced_certificate_works_until_the_device_proves_its_successor).
    alice
        .run_with_service(&["renew", "--rotate"], &harness)
        .await
        .ok();
    let rotated = alice.json(&["connect"], None).await;
    assert_eq!(rotated["key_slot"], 2);
    let previous = alice.json(&["connect", "--previous"], None).await;
    assert_eq!(previous["key_slot"], 1);

    // Revoke alice, publish the new CRL to the broker and make it re-read it.
    revoke(&mut operator, &alice_id).await;
    let crl = operator
        .get_crl(v1::GetCrlRequest {
            format: v1::CrlFormat::Pem.into(),
            ..v1::GetCrlRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .crl;
    broker.reload_crl(&crl);
    // SIGHUP is handled asynchronously: poll (bounded) until the broker has the new CRL.
    let mut last = None;
    for _ in 0..50 {
        let run = alice.run(&["connect", "--timeout", "5"]).await;
        if run.code != 0 {
            last = Some(run);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let run = last.expect("the broker kept accepting a revoked certificate");
    let message = run.fails(3);
    assert!(message.contains("the broker refused"), "{message}");
    assert!(message.contains("CertificateRevoked"), "{message}");
    // The CRL refuses only the revoked device.
    bob.json(&["connect"], None).await;

    let log = broker.log();
    assert!(log.contains(&format!("u'{alice_id}'")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_and_azure_credentials_are_checked_locally_and_not_connected() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let mut operator = harness.operator("acme").await;
    let aws_batch = policy_and_batch(
        &mut operator,
        "aws",
        v1::policy::Params::AwsIot(v1::AwsIotPolicyParams {
            endpoint_host: "abc123-ats.iot.eu-west-1.amazonaws.com".into(),
            // A stand-in for Amazon Root CA 1: any PEM the operator trusts.
            server_root_ca_pem: harness.server.root_pem.clone(),
            ..Default::default()
        }),
    )
    .await;
    let azure_batch = policy_and_batch(
        &mut operator,
        "azure",
        v1::policy::Params::AzureDps(v1::AzureDpsPolicyParams {
            id_scope: "0ne00000000".into(),
            ..Default::default()
        }),
    )
    .await;
    let (aws, aws_id) = device(&harness, &mut operator, &aws_batch, work.path(), 0x31).await;
    let (azure, azure_id) = device(&harness, &mut operator, &azure_batch, work.path(), 0x32).await;

    let run = aws.run(&["--json", "connect"]).await;
    let checked: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(checked["live_connection"], "not attempted");
    assert_eq!(checked["cloud"], "AWS IoT Core");
    assert_eq!(
        checked["endpoint"],
        "mqtts://abc123-ats.iot.eu-west-1.amazonaws.com:8883"
    );
    assert_eq!(checked["mqtt_client_id"], aws_id.as_str());
    assert_eq!(checked["certificate_cn"], aws_id.as_str());
    assert_eq!(checked["tls_versions"], "TLS 1.2, TLS 1.3");
    assert!(
        run.stderr.contains("live connection not attempted"),
        "{run:#?}"
    );

    let checked = azure.json(&["connect"], None).await;
    assert_eq!(checked["live_connection"], "not attempted");
    // DPS documents TLS 1.2 only.
    assert_eq!(checked["tls_versions"], "TLS 1.2");
    assert_eq!(checked["registration_id"], azure_id.as_str());
    assert_eq!(
        checked["mqtt_username"],
        format!("0ne00000000/registrations/{azure_id}/api-version=2019-03-31")
    );

    // A credential whose certificate does not match the silicon is caught locally: give the
    // AWS device the Azure device's credential file.
    std::fs::copy(
        azure.state.join("credential.json"),
        aws.state.join("credential.json"),
    )
    .unwrap();
    let mismatch = aws.run(&["connect"]).await;
    let message = mismatch.fails(3);
    assert!(message.contains("credential check failed"), "{message}");
}

/// The owner's current CRL, PEM, as GetCrl serves it.
async fn current_crl(
    operator: &mut oxroot_proto::v1::operator_client::OperatorClient<tonic::transport::Channel>,
) -> Vec<u8> {
    operator
        .get_crl(v1::GetCrlRequest {
            format: v1::CrlFormat::Pem.into(),
            ..v1::GetCrlRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .crl
}

/// Publishes the current CRL to the broker, then waits (bounded: SIGHUP is handled
/// asynchronously) until `connect --previous` is refused as revoked.
async fn previous_refused_after_reload(
    agent: &Agent,
    broker: &Broker,
    operator: &mut oxroot_proto::v1::operator_client::OperatorClient<tonic::transport::Channel>,
) -> String {
    broker.reload_crl(&current_crl(operator).await);
    for _ in 0..50 {
        let run = agent
            .run(&["connect", "--previous", "--timeout", "5"])
            .await;
        if run.code != 0 {
            return run.fails(3).to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the broker kept accepting the superseded certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_works_until_the_device_proves_its_successor() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let broker_dir = work.path().join("broker");
    std::fs::create_dir(&broker_dir).unwrap();
    let port = free_port();
    let mut operator = harness.operator("acme").await;
    let batch = policy_and_batch(
        &mut operator,
        "broker",
        v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
            host: "127.0.0.1".into(),
            port: u32::from(port),
            ..Default::default()
        }),
    )
    .await;
    let (carol, _) = device(&harness, &mut operator, &batch, work.path(), 0x23).await;
    let mut platform = harness.operator("*").await;
    let broker = Broker::start(&mut platform, "acme", "broker", &broker_dir, port).await;

    // Rotate to slot 2: both certificates connect, and the broker's fresh CRL (re-read on
    // SIGHUP) still lists neither.
    let first = carol.json(&["status"], None).await["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = carol.json(&["renew", "--rotate"], Some(&harness)).await;
    assert_eq!(rotated["previous_serial"], first.as_str());
    broker.reload_crl(&current_crl(&mut operator).await);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(carol.json(&["connect"], None).await["key_slot"], 2);
    assert_eq!(
        carol.json(&["connect", "--previous"], None).await["key_slot"],
        1
    );

    // `status` signs with the slot-2 key and names the new serial: that is the proof. From
    // then on the slot-1 certificate is on the CRL (reason superseded), and the broker refuses
    // it once it has the new CRL; the current one still connects.
    let status = carol.json(&["status"], Some(&harness)).await;
    assert_eq!(status["service_status"], "ENROLLED");
    assert_eq!(status["signed_with"], "device key, slot 2");
    let message = previous_refused_after_reload(&carol, &broker, &mut operator).await;
    assert!(message.contains("CertificateRevoked"), "{message}");
    assert_eq!(carol.json(&["connect"], None).await["key_slot"], 2);

    // Rotate again (slot 3): the slot-2 certificate is the fallback now, and it connects.
    // A renewal that keeps the slot names the slot-3 certificate and proves its key: the
    // slot-2 one goes on the CRL too.
    let rotated = carol.json(&["renew", "--rotate"], Some(&harness)).await;
    assert_eq!(rotated["key_slot"], 3);
    assert_eq!(
        carol.json(&["connect", "--previous"], None).await["key_slot"],
        2
    );
    let unchanged = carol.run_with_service(&["renew"], &harness).await;
    assert!(
        unchanged.ok().starts_with("credential unchanged"),
        "{unchanged:#?}"
    );
    let message = previous_refused_after_reload(&carol, &broker, &mut operator).await;
    assert!(message.contains("CertificateRevoked"), "{message}");
    assert_eq!(carol.json(&["connect"], None).await["key_slot"], 3);
}
