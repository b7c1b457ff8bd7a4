//! The device speaks what each cloud speaks: TLS 1.2 and TLS 1.3 client authentication with
//! the silicon-derived key against `openssl s_server` (a TLS stack the agent did not write),
//! exactly the versions the credential allows, and a failure that says what it is when the
//! server does not speak them.
//!
//! The first tests drive the agent's own TLS client (its rustls configuration, the silicon
//! signer, rot-core's checks and the failure mapping) over a socket; the last ones run the
//! agent binary with credentials the real service issued.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Agent, Broker, Harness, OpenSslServer, broker_files, free_port, policy_and_batch};
use device_agent::chip::SiliconChip;
use device_agent::credential::Endpoint;
use device_agent::silicon::{Silicon, SiliconSpec};
use device_agent::state::StateDir;
use device_agent::tls_failure;
use device_agent::tls_signer::{self, SiliconSigningKey, TLS12_CIPHER_SUITES};
use oxroot_proto::v1;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm,
};
use rot_core::emulator::{ChipSeed, OperatingConditions};
use rot_core::keys::tls::TlsVersion::{self, Tls12, Tls13};
use rot_core::keys::{KeySlot, PublicKey};
use rustls::pki_types::{CertificateDer, ServerName};

/// A test root, a server certificate for `localhost` and the files s_server reads.
struct Pki {
    root_pem: String,
    root: Issuer<'static, KeyPair>,
}

fn pki(dir: &Path) -> Pki {
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "tls test root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_pem = params.self_signed(&root_key).unwrap().pem();
    let root = Issuer::new(params, root_key);
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &root)
        .unwrap();
    std::fs::write(dir.join("root.pem"), &root_pem).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    Pki { root_pem, root }
}

/// A raw P-256 point as rcgen's public-key input.
struct Point<'a>(&'a [u8]);

impl PublicKeyData for Point<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// The device certificate for `dpk`, CN `cn`, clientAuth, signed by the test root.
fn device_leaf(pki: &Pki, dpk: &PublicKey, cn: &str) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
        .signed_by(&Point(dpk.as_bytes()), &pki.root)
        .unwrap()
        .der()
        .clone()
}

/// An enrolled emulated chip with its state in `dir`.
fn chip(dir: &Path, seed: u8) -> Arc<SiliconChip> {
    std::fs::create_dir_all(dir).unwrap();
    let state = StateDir::new(dir);
    let silicon = Silicon::open(
        &SiliconSpec::Emulated(ChipSeed::from_bytes([seed; 32])),
        OperatingConditions::NOMINAL,
    )
    .unwrap();
    let enrolment = rot_core::extractor::enrol(
        &mut silicon.power_up().unwrap(),
        None,
        rot_core::extractor::EnrolMode::FirstEnrolment,
    )
    .unwrap();
    state.save_helper_data(&enrolment.helper_data).unwrap();
    Arc::new(SiliconChip::open(&state, silicon).unwrap())
}

/// The device side: a chip, its certificate and what it may offer.
struct Device {
    chip: Arc<SiliconChip>,
    leaf: CertificateDer<'static>,
    cn: String,
}

fn device(dir: &Path, pki: &Pki, seed: u8) -> Device {
    let chip = chip(dir, seed);
    let cn = format!("tls-device-{seed:02x}");
    let leaf = device_leaf(pki, &chip.device_public_key(KeySlot::FIRST).unwrap(), &cn);
    Device { chip, leaf, cn }
}

/// The handshake of the agent's client (its configuration, the silicon signer) with the
/// server on `port`, offering `offered`: the version and suite it got, and the key (which
/// knows what it signed); or the error as the agent would report it.
fn handshake(
    device: &Device,
    pki: &Pki,
    port: u16,
    offered: &[TlsVersion],
) -> Result<
    (
        rustls::ProtocolVersion,
        rustls::CipherSuite,
        Arc<SiliconSigningKey>,
    ),
    String,
> {
    let key = Arc::new(
        SiliconSigningKey::new(device.chip.clone(), KeySlot::FIRST, None, offered).unwrap(),
    );
    let config =
        tls_signer::client_config(vec![device.leaf.clone()], &pki.root_pem, key.clone()).unwrap();
    let mut client =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    while client.is_handshaking() {
        if let Err(error) = client.complete_io(&mut socket) {
            let target = format!("127.0.0.1:{port}");
            let said = match tls_failure::find_rustls_error(&error) {
                Some(tls) => tls_failure::classify(tls, &target, offered).to_string(),
                None => format!("not a TLS error: {error}"),
            };
            return Err(said);
        }
    }
    client.send_close_notify();
    let _ = client.complete_io(&mut socket);
    Ok((
        client.protocol_version().unwrap(),
        client.negotiated_cipher_suite().unwrap().suite(),
        key,
    ))
}

/// `openssl s_server` speaking only `version`, requiring a client certificate that verifies to
/// the test root (`-Verify 1 -CAfile root.pem`).
fn server(dir: &Path, version: &str) -> (OpenSslServer, u16) {
    let port = free_port();
    let args = [
        version,
        "-Verify",
        "1",
        "-CAfile",
        "root.pem",
        "-cert",
        "server.pem",
        "-key",
        "server.key",
    ];
    (OpenSslServer::start(dir, port, &args, &[]), port)
}

/// TLS 1.2 client authentication with the silicon-derived key, whether the credential offers
/// only 1.2 (Azure DPS) or both (AWS IoT), against a TLS 1.2-only OpenSSL server: the
/// ECDHE-ECDSA AES-GCM suite, and OpenSSL verified the device certificate and its ECDSA
/// signature. The same client offering 1.3 gets TLS 1.3 from a TLS 1.3 server.
#[test]
fn both_versions_authenticate_with_the_silicon_key_against_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let device = device(&dir.path().join("chip"), &pki, 0x41);
    for (server_version, offered, expected) in [
        ("-tls1_2", &[Tls12][..], rustls::ProtocolVersion::TLSv1_2),
        (
            "-tls1_2",
            &[Tls12, Tls13][..],
            rustls::ProtocolVersion::TLSv1_2,
        ),
        ("-tls1_3", &[Tls13][..], rustls::ProtocolVersion::TLSv1_3),
        (
            "-tls1_3",
            &[Tls12, Tls13][..],
            rustls::ProtocolVersion::TLSv1_3,
        ),
    ] {
        let (server, port) = server(dir.path(), server_version);
        let (version, suite, key) = handshake(&device, &pki, port, offered)
            .unwrap_or_else(|e| panic!("{server_version} {offered:?}: {e}"));
        assert_eq!(version, expected, "{offered:?}");
        let output = server.wait_for("CIPHER is");
        // OpenSSL's own verdict on the device certificate and on the CertificateVerify.
        assert!(output.contains("Client certificate"), "{output}");
        assert!(
            output.contains(&format!("subject=CN = {}", device.cn)),
            "{output}"
        );
        assert!(
            output.contains(&format!("depth=0 CN = {}\nverify return:1", device.cn)),
            "{output}"
        );
        assert!(!output.contains("verify error"), "{output}");
        if expected == rustls::ProtocolVersion::TLSv1_2 {
            assert!(TLS12_CIPHER_SUITES.contains(&suite), "{suite:?}");
            assert!(output.contains("CIPHER is ECDHE-ECDSA-AES"), "{output}");
            assert!(output.contains("GCM-SHA"), "{output}");
            assert!(output.contains("Peer signature type: ECDSA"), "{output}");
            assert_eq!(key.signed_version(), Some(Tls12));
        } else {
            assert_eq!(key.signed_version(), Some(Tls13));
        }
    }
}

/// The extended master secret is required for TLS 1.2: an OpenSSL server with it switched off
/// (its `Options = -ExtendedMasterSecret`) is refused, and the failure says why.
#[test]
fn tls12_without_the_extended_master_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let device = device(&dir.path().join("chip"), &pki, 0x42);
    let conf = dir.path().join("no-ems.cnf");
    std::fs::write(
        &conf,
        "openssl_conf = oxroot\n[oxroot]\nssl_conf = ssl\n[ssl]\nsystem_default = tls\n\
         [tls]\nOptions = -ExtendedMasterSecret\n",
    )
    .unwrap();
    let port = free_port();
    let args = [
        "-tls1_2",
        "-Verify",
        "1",
        "-CAfile",
        "root.pem",
        "-cert",
        "server.pem",
        "-key",
        "server.key",
    ];
    let _server = OpenSslServer::start(dir.path(), port, &args, &[("OPENSSL_CONF", &conf)]);
    let error = handshake(&device, &pki, port, &[Tls12]).unwrap_err();
    assert!(error.contains("extended master secret"), "{error}");
    assert!(error.contains("RFC 7627"), "{error}");
}

/// A credential that allows only TLS 1.3 against a TLS 1.2-only server, and an Azure DPS
/// credential (TLS 1.2 only) against a TLS 1.3-only server: the failure says the server does
/// not speak the offered version, not that a certificate was rejected.
#[test]
fn a_server_without_the_offered_version_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let device = device(&dir.path().join("chip"), &pki, 0x43);
    let azure = Endpoint::AzureDps {
        global_endpoint: "global.azure-devices-provisioning.net".into(),
        port: 8883,
        id_scope: "0ne00000000".into(),
        registration_id: device.cn.clone(),
        mqtt_client_id: device.cn.clone(),
        mqtt_username: String::new(),
        server_root_ca_pem: String::new(),
    };
    for (server_version, offered, said) in [
        ("-tls1_2", &[Tls13][..], "TLS 1.3 only"),
        ("-tls1_3", azure.default_tls_versions(), "TLS 1.2 only"),
    ] {
        let (_server, port) = server(dir.path(), server_version);
        let error = handshake(&device, &pki, port, offered).unwrap_err();
        assert!(error.starts_with("the broker refused"), "{error}");
        assert!(error.contains("does not speak"), "{error}");
        assert!(error.contains(said), "{error}");
        assert!(error.contains("ProtocolVersion"), "{error}");
        assert!(!error.contains("certificate"), "{error}");
    }
}

/// Enrols, registers and onboards a device into `batch`; returns its agent and DeviceId.
async fn onboarded(
    harness: &Harness,
    operator: &mut v1::operator_client::OperatorClient<tonic::transport::Channel>,
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

fn mosquitto_policy(port: u16, versions: &[v1::TlsVersion]) -> v1::policy::Params {
    v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
        host: "127.0.0.1".into(),
        port: u32::from(port),
        tls_versions: versions.iter().map(|&v| v.into()).collect(),
        ..Default::default()
    })
}

/// The agent binary with credentials the service issued: a policy's TLS versions reach the
/// device, which offers exactly those, and says so when a broker does not speak them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_offers_its_policy_versions_and_says_when_a_broker_refuses_them() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let mut operator = harness.operator("acme").await;
    let mut platform = harness.operator("*").await;
    let (port13, port12, mosquitto_port) = (free_port(), free_port(), free_port());
    let only13 = policy_and_batch(
        &mut operator,
        "only13",
        mosquitto_policy(port13, &[v1::TlsVersion::TlsVersion13]),
    )
    .await;
    let only12 = policy_and_batch(
        &mut operator,
        "only12",
        mosquitto_policy(port12, &[v1::TlsVersion::TlsVersion12]),
    )
    .await;
    let broker12 = policy_and_batch(
        &mut operator,
        "broker12",
        mosquitto_policy(mosquitto_port, &[v1::TlsVersion::TlsVersion12]),
    )
    .await;
    let (device13, _) = onboarded(&harness, &mut operator, &only13, work.path(), 0x51).await;
    let (device12, _) = onboarded(&harness, &mut operator, &only12, work.path(), 0x52).await;
    let (mqtt12, mqtt12_id) =
        onboarded(&harness, &mut operator, &broker12, work.path(), 0x53).await;

    // The bundle's versions are stored with the credential and shown.
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(device12.state.join("credential.json")).unwrap())
            .unwrap();
    assert_eq!(
        stored["tls_versions"],
        serde_json::json!(["1.2"]),
        "{stored}"
    );

    // Servers that do not speak what the credential offers, with the broker files the
    // service rendered for each policy (so the certificates are the real ones).
    let servers = work.path().join("servers");
    std::fs::create_dir(&servers).unwrap();
    broker_files(&mut platform, "acme", "only13", &servers).await;
    let openssl_args = |version| {
        [
            version,
            "-Verify",
            "1",
            "-CAfile",
            "ca.pem",
            "-cert",
            "broker-certificate.pem",
            "-cert_chain",
            "broker-certificate.pem",
            "-key",
            "broker.key",
        ]
    };
    let _tls12_server = OpenSslServer::start(&servers, port13, &openssl_args("-tls1_2"), &[]);
    let _tls13_server = OpenSslServer::start(&servers, port12, &openssl_args("-tls1_3"), &[]);

    let refused = device13.run(&["connect", "--timeout", "10"]).await;
    let message = refused.fails(3);
    assert!(message.contains("the broker refused"), "{message}");
    assert!(message.contains("TLS 1.3 only"), "{message}");
    assert!(message.contains("ProtocolVersion"), "{message}");
    assert!(!message.contains("revoked"), "{message}");
    let refused = device12.run(&["connect", "--timeout", "10"]).await;
    let message = refused.fails(3);
    assert!(message.contains("TLS 1.2 only"), "{message}");
    assert!(message.contains("ProtocolVersion"), "{message}");

    // The TLS 1.2 device against a real Mosquitto rendered for its policy: a full MQTT round
    // trip over TLS 1.2, the client key derived from the silicon.
    let broker_dir = work.path().join("broker");
    std::fs::create_dir(&broker_dir).unwrap();
    let _broker = Broker::start(
        &mut platform,
        "acme",
        "broker12",
        &broker_dir,
        mosquitto_port,
    )
    .await;
    let connected = mqtt12.json(&["connect"], None).await;
    assert_eq!(connected["protocol"], "MQTT 5 over TLS 1.2", "{connected}");
    assert_eq!(connected["tls_versions"], "TLS 1.2");
    assert_eq!(
        connected["topic"],
        format!("devices/{mqtt12_id}/agent/hello")
    );
}
