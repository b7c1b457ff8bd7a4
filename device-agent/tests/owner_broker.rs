//! A real Mosquitto broker configured from one owner's export trusts that owner's devices and
//! nobody else's (issue 13): acme's devices connect; globex's devices, even when configured to
//! trust acme's broker, are refused in the TLS handshake (an `unknown_ca` alert, no MQTT
//! session at all), unlike a topic the ACL refuses after the session is up; and operator
//! certificates of either owner, which the platform CA issues, are refused as TLS clients.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]
#![allow(clippy::too_many_lines, reason = "scenario tests read top to bottom")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Agent, Broker, Harness, free_port, policy_and_batch};
use enroll_service::pki::{LeafRequest, OperatorKey, Role, Serial, Validity};
use oxroot_proto::v1;
use oxroot_proto::v1::operator_client::OperatorClient;
use tonic::transport::Channel;

/// Enrols, registers and adds a device to `batch`, then onboards it; returns its agent and
/// DeviceId.
async fn device(
    harness: &Harness,
    operator: &mut OperatorClient<Channel>,
    batch: &str,
    dir: &Path,
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

/// A Mosquitto policy on the test's broker port; `broker_ca_pem` empty means the devices
/// trust their own owner's root for the broker.
fn mosquitto(port: u16, broker_ca_pem: &str) -> v1::policy::Params {
    v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
        host: "127.0.0.1".into(),
        port: u32::from(port),
        broker_ca_pem: broker_ca_pem.into(),
        ..Default::default()
    })
}

/// `openssl s_client -state` to the broker at TLS 1.2 (the version in which the server checks
/// the client's certificate before it finishes the handshake) with a client certificate chain
/// and key; anchored at `ca_file` for the broker's certificate. Returns (success, everything it
/// said, handshake states included).
fn s_client(dir: &Path, port: u16, ca_file: &str, chain: &str, key: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-tls1_2",
            "-CAfile",
            ca_file,
            "-verify_return_error",
            "-cert",
            chain,
            "-key",
            key,
            "-state",
        ])
        .current_dir(dir)
        // At end of input s_client closes the connection: one handshake, then out.
        .stdin(Stdio::null())
        .output()
        .expect("the openssl CLI is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What `s_client -state` prints once it has the server's Finished: the handshake is done.
const HANDSHAKE_DONE: &str = "SSL_connect:SSLv3/TLS read finished";

/// An operator certificate chain and key for (name, owner), as the service issues them.
async fn operator_files(
    harness: &Harness,
    dir: &Path,
    name: &str,
    owner: &str,
) -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let issued = enroll_service::service::issue_operator_certificate(
        &harness.core,
        &OperatorKey::Generate,
        (name, owner, Role::Admin),
        Validity::starting(now - time::Duration::minutes(1), time::Duration::hours(1))
            .expect("validity"),
        "system:test",
    )
    .await
    .expect("an operator certificate");
    let chain = format!("{name}-operator.pem");
    let key = format!("{name}-operator.key");
    std::fs::write(
        dir.join(&chain),
        format!(
            "{}{}",
            issued.certificate.pem,
            harness.core.ca().certificate_pem()
        ),
    )
    .expect("write");
    std::fs::write(
        dir.join(&key),
        issued
            .private_key
            .expect("a generated key")
            .to_pem()
            .as_bytes(),
    )
    .expect("write");
    (chain, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_broker_accepts_its_devices_and_refuses_everyone_else_at_tls() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let broker_dir = dir.join("broker");
    std::fs::create_dir(&broker_dir).expect("mkdir");
    let port = free_port();
    let mut platform = harness.operator("*").await;
    let mut acme = harness.operator("acme").await;
    let mut globex = harness.operator("globex").await;
    let acme_root = platform
        .get_owner(v1::GetOwnerRequest {
            name: "acme".into(),
        })
        .await
        .expect("GetOwner")
        .into_inner()
        .owner
        .expect("an owner")
        .root_pem;
    std::fs::write(dir.join("acme-root.pem"), &acme_root).expect("write");

    let acme_batch = policy_and_batch(&mut acme, "broker", mosquitto(port, "")).await;
    // globex devices sent to acme's broker, trusting its certificate: what is left to refuse
    // them is the broker's check of their certificates.
    let globex_batch = policy_and_batch(&mut globex, "broker", mosquitto(port, &acme_root)).await;
    // And one with its owner's own trust, which does not extend to acme's broker.
    let globex_own_batch = policy_and_batch(&mut globex, "own-trust", mosquitto(port, "")).await;
    let (alice, alice_id) = device(&harness, &mut acme, &acme_batch, dir, 0x41).await;
    let (bob, bob_id) = device(&harness, &mut acme, &acme_batch, dir, 0x42).await;
    let (gina, gina_id) = device(&harness, &mut globex, &globex_batch, dir, 0x43).await;
    let (gus, gus_id) = device(&harness, &mut globex, &globex_own_batch, dir, 0x44).await;
    let mut broker = Broker::start(&mut platform, "acme", "broker", &broker_dir, port).await;
    // The broker's cafile is acme's trust: acme's issuing CA and root, nothing of globex's.
    let cafile = std::fs::read_to_string(broker_dir.join("ca.pem")).expect("ca.pem");
    assert!(cafile.contains(acme_root.trim()), "{cafile}");
    assert_eq!(cafile.matches("BEGIN CERTIFICATE").count(), 2, "{cafile}");

    // acme's devices connect and publish.
    for (agent, id) in [(&alice, &alice_id), (&bob, &bob_id)] {
        let connected = agent.json(&["connect"], None).await;
        assert_eq!(connected["client_id"], id.as_str());
        assert!(connected["bytes_read_back"].as_u64().expect("bytes") > 0);
    }
    // A refusal after the session is up, for contrast: the ACL refuses another device's
    // topic with an MQTT reason code, over a TLS session the broker accepted.
    let foreign = format!("/devices/{bob_id}/agent/hello");
    let refused = alice.run(&["connect", "--topic", &foreign]).await;
    let message = refused.fails(3);
    assert!(message.contains("NotAuthorized"), "{message}");
    assert!(!message.contains("TLS alert"), "{message}");

    // globex's device trusts the broker and is refused by it in the handshake: an alert
    // saying the broker does not know its CA, and no MQTT reason code.
    let refused = gina.run(&["connect", "--timeout", "10"]).await;
    let message = refused.fails(3);
    assert!(message.contains("the broker refused"), "{message}");
    assert!(message.contains("(TLS alert UnknownCA)"), "{message}");
    assert!(!message.contains("NotAuthorized"), "{message}");
    // globex's device with its own owner's trust refuses acme's broker itself.
    let refused = gus.run(&["connect", "--timeout", "10"]).await;
    let message = refused.fails(4);
    assert!(message.contains("is not trusted"), "{message}");

    // Operator certificates of either owner are the platform CA's: refused as TLS clients.
    // The control: a certificate from acme's issuing CA, for a key made here, is accepted by
    // the same s_client invocation, so what the refusals differ in is the issuer alone.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let now = time::OffsetDateTime::now_utc();
    let control = harness
        .core
        .authorities()
        .issuing("acme")
        .await
        .expect("acme's issuing CA")
        .ca
        .issue_device_certificate(&LeafRequest {
            public_key: key.public_key_raw().try_into().expect("a P-256 point"),
            common_name: "control".into(),
            validity: Validity::starting(
                now - time::Duration::minutes(1),
                time::Duration::hours(1),
            )
            .expect("validity"),
            serial: Serial::random().expect("serial"),
            crl_distribution_point: None,
            firmware: None,
        })
        .expect("a leaf");
    std::fs::write(dir.join("control.pem"), control.chain_pem).expect("write");
    std::fs::write(dir.join("control.key"), key.serialize_pem()).expect("write");
    let (ok, out) = s_client(dir, port, "acme-root.pem", "control.pem", "control.key");
    assert!(ok, "the control handshake: {out}");
    assert!(out.contains(HANDSHAKE_DONE), "{out}");
    assert!(!out.contains(":fatal:"), "{out}");
    for (name, owner) in [("alice", "acme"), ("gus", "globex")] {
        let (chain, key) = operator_files(&harness, dir, name, owner).await;
        let (ok, out) = s_client(dir, port, "acme-root.pem", &chain, &key);
        assert!(!ok, "{owner}'s operator certificate was accepted: {out}");
        // The broker answered the client's certificate with a fatal alert instead of its
        // Finished: the handshake never completed.
        assert!(
            out.contains("SSL3 alert read:fatal:unknown CA")
                && out.contains("SSL_connect:error in error")
                && !out.contains(HANDSHAKE_DONE),
            "{owner}'s operator: {out}"
        );
    }

    // The broker never opened an MQTT session for a refused client.
    let log = broker.log();
    assert!(log.contains(&format!("u'{alice_id}'")), "{log}");
    assert!(log.contains(&format!("u'{bob_id}'")), "{log}");
    assert!(!log.contains(&gina_id) && !log.contains(&gus_id), "{log}");
    assert!(!log.contains("u'control'"), "{log}");
    assert!(log.contains("certificate verify failed"), "{log}");
}
