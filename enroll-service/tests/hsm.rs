//! CA keys in a PKCS#11 token (SoftHSM2), with the service as a real child process: `init`
//! makes the platform CA's keys in the token, owners' CAs are made there too, devices of two
//! owners onboard and each verifies only against its own owner's trust, the keys show in
//! `pkcs11-tool` as sensitive and never extractable while no file holds key material, a
//! SIGKILL and a restart keep working with the same token, and a token that goes away in the
//! middle of a batch turns health NOT_SERVING until it is back (the console's CA page says so),
//! with nothing issued twice.
//!
//! Each test makes a throwaway token under its own `SOFTHSM2_CONF`, which only the child
//! processes (the service, `pkcs11-tool`) read: this process never loads SoftHSM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{Service, bin, channel, start_with_env};
use enroll_service::fleet::{EmulatedDevice, Outcome};
use enroll_service::store::{Registry, SledRegistry};
use enrollctl::args::ConnectionArgs;
use enrollctl::console::{ConsoleOptions, RunningConsole};
use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use oxroot_proto::v1::operator_client::OperatorClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "user-pin-8642";
const SO_PIN: &str = "so-pin-97531";
const LABEL: &str = "oxroot";

/// A SoftHSM2 configuration with one fresh token, in a temporary directory.
struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
        let hsm = Self { dir };
        let out = hsm
            .command("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                LABEL,
                "--so-pin",
                SO_PIN,
            ])
            .args(["--pin", PIN])
            .output()
            .expect("softhsm2-util (Debian package softhsm2)");
        assert!(out.status.success(), "{out:?}");
        hsm
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![("SOFTHSM2_CONF", self.conf().into_os_string())]
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SOFTHSM2_CONF", self.conf());
        command
    }

    /// The token's URI as the config records it: module and PIN source, never the PIN.
    fn uri(&self) -> String {
        format!(
            "pkcs11:token={LABEL}?module-path={MODULE}&pin-source=file:{}",
            self.dir.path().join("pin").display()
        )
    }

    /// SoftHSM keeps the token in `tokens/<uuid>/`.
    fn token_dir(&self) -> PathBuf {
        std::fs::read_dir(self.dir.path().join("tokens"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.is_dir())
            .expect("the token's directory")
    }

    /// `pkcs11-tool --list-objects --type privkey`, logged in.
    fn private_keys(&self) -> String {
        let out = self
            .command("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                LABEL,
                "--login",
                "--pin",
                PIN,
            ])
            .args(["--list-objects", "--type", "privkey"])
            .output()
            .expect("pkcs11-tool (Debian package opensc)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }
}

/// `enroll-service init --ca-backend pkcs11`, with no CA passphrase anywhere.
fn init_in_token(hsm: &SoftHsm, state: &Path) -> String {
    let out = hsm
        .command(bin())
        .args(["init", "--state-dir"])
        .arg(state)
        .args(["--ca-backend", "pkcs11", "--pkcs11-token", &hsm.uri()])
        .env_remove("OXROOT_CA_PASSPHRASE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn serve(hsm: &SoftHsm, state: &Path) -> Service {
    let env = hsm.env();
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    start_with_env(state, &env)
}

/// Registers `devices`, and makes `owner` with a Mosquitto policy and a batch of them.
async fn owner_with_batch(
    operator: &mut OperatorClient<Channel>,
    client: &mut DeviceEnrollmentClient<Channel>,
    owner: &str,
    devices: &[EmulatedDevice],
) -> String {
    let created = operator
        .create_owner(v1::CreateOwnerRequest {
            name: owner.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .owner
        .unwrap();
    assert!(
        created
            .issuing_cas
            .iter()
            .all(|ca| ca.key_location.starts_with("pkcs11:token=oxroot;")),
        "{created:?}"
    );
    operator
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
    for device in devices {
        client
            .register(device.registration(b"hsm").unwrap())
            .await
            .unwrap();
    }
    operator
        .create_batch(v1::CreateBatchRequest {
            owner: owner.into(),
            name: format!("{owner} line 1"),
            policy_name: "broker".into(),
            device_ids: devices.iter().map(|d| d.device_id().to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .batch
        .unwrap()
        .batch_id
}

/// The owner's exported trust (the Mosquitto `ca.pem`).
async fn exported_trust(operator: &mut OperatorClient<Channel>, owner: &str) -> Vec<u8> {
    operator
        .export_artifacts(v1::ExportArtifactsRequest {
            owner: owner.into(),
            policy_name: "broker".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .artifacts
        .into_iter()
        .find(|a| a.file_name == "ca.pem")
        .expect("ca.pem")
        .content
}

fn onboarded(outcome: Outcome) -> v1::CredentialBundle {
    match outcome {
        Outcome::Credentials(bundle) => *bundle,
        Outcome::Refused(refusal) => panic!("refused: {refusal:?}"),
    }
}

/// `openssl verify -x509_strict` of a leaf against a trust file.
fn openssl_verifies(dir: &Path, trust: &[u8], leaf_pem: &str) -> (bool, String) {
    std::fs::write(dir.join("trust.pem"), trust).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf_pem).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["verify", "-x509_strict", "-CAfile", "trust.pem", "leaf.pem"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_keys_in_softhsm_two_owners_and_a_sigkill() {
    let hsm = SoftHsm::new();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let printed = init_in_token(&hsm, &state);
    assert!(printed.contains("in the PKCS#11 token"), "{printed}");

    // The state directory names the keys; it holds none, and no PIN.
    let ca_dir = state.join("ca");
    assert!(ca_dir.join("intermediate.key.uri").exists());
    assert!(ca_dir.join("root.key.uri").exists());
    let config = std::fs::read_to_string(state.join("config.toml")).unwrap();
    assert!(config.contains("backend = \"pkcs11\""), "{config}");
    assert!(config.contains("pin-source=file:"), "{config}");

    let service = serve(&hsm, &state);
    let mut operator = OperatorClient::new(channel(&service.url, &state, true).await);
    let device_channel = channel(&service.url, &state, false).await;
    let mut client = DeviceEnrollmentClient::new(device_channel.clone());
    let acme: Vec<EmulatedDevice> = (0..3)
        .map(|i| EmulatedDevice::manufacture(&[1; 32], i).unwrap())
        .collect();
    let globex: Vec<EmulatedDevice> = (0..3)
        .map(|i| EmulatedDevice::manufacture(&[2; 32], i).unwrap())
        .collect();
    owner_with_batch(&mut operator, &mut client, "acme", &acme).await;
    owner_with_batch(&mut operator, &mut client, "globex", &globex).await;
    let mut leaves: Vec<(&str, String)> = Vec::new();
    for (owner, devices) in [("acme", &acme), ("globex", &globex)] {
        for device in devices {
            let bundle = onboarded(device.onboard(&mut client).await.unwrap());
            leaves.push((owner, bundle.certificate_pem));
        }
    }

    // Each leaf verifies against its own owner's exported trust, and never the other's.
    let trust: HashMap<&str, Vec<u8>> = HashMap::from([
        ("acme", exported_trust(&mut operator, "acme").await),
        ("globex", exported_trust(&mut operator, "globex").await),
    ]);
    let scratch = tempfile::tempdir().unwrap();
    for (owner, leaf) in &leaves {
        let (ok, out) = openssl_verifies(scratch.path(), &trust[owner], leaf);
        assert!(ok, "{owner}'s leaf against its own trust: {out}");
        let other = if *owner == "acme" { "globex" } else { "acme" };
        let (ok, out) = openssl_verifies(scratch.path(), &trust[other], leaf);
        assert!(
            !ok,
            "{owner}'s leaf verified against {other}'s trust: {out}"
        );
        assert!(
            out.contains("unable to get local issuer certificate"),
            "{out}"
        );
    }

    // acme's firmware-signing key is made in the token on its first signature.
    let first_release = sign_firmware(&mut operator, "1.0.0").await;

    // Every CA key, and the firmware-signing key, is in the token: sensitive, never
    // extractable, made there.
    let listed = hsm.private_keys();
    for label in [
        "oxroot:platform/root",
        "oxroot:platform/issuing",
        "oxroot:acme/root",
        "oxroot:acme/1",
        "oxroot:globex/root",
        "oxroot:globex/1",
        "oxroot:acme/firmware-1",
    ] {
        let object = listed
            .split("Private Key Object")
            // Labels end in a random suffix (`oxroot:acme/1#3fa2c1d0`).
            .find(|object| object.contains(&format!("label:      {label}#")))
            .unwrap_or_else(|| panic!("no key {label} in:\n{listed}"));
        for attribute in [
            "sensitive",
            "always sensitive",
            "never extractable",
            "local",
        ] {
            assert!(
                object.contains(attribute),
                "{label} not {attribute}:\n{object}"
            );
        }
    }
    assert_eq!(listed.matches("Private Key Object").count(), 7, "{listed}");

    // SIGKILL, and a restart on the same token: old operators and devices keep working.
    let child = service.child.clone();
    child.lock().unwrap().kill().unwrap();
    let status = child.lock().unwrap().wait().unwrap();
    assert!(!status.success());
    drop(service);

    // No file of the state directory (registry included) holds key material.
    for file in files_under(&state) {
        if file.ends_with("admin/operator.key") {
            continue; // the first admin's own key: an operator credential, not a CA key
        }
        let bytes = std::fs::read(&file).unwrap();
        for needle in [&b"PRIVATE KEY"[..], b"OXKEY1", PIN.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds {:?}",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    let shown = hsm
        .command(bin())
        .args(["ca", "show", "--state-dir"])
        .arg(&state)
        .env_remove("OXROOT_CA_PASSPHRASE")
        .output()
        .unwrap();
    let shown_text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown:?}");
    assert!(
        shown_text.contains("key store:         answers"),
        "{shown_text}"
    );
    assert!(
        shown_text.contains("its key:         pkcs11:token=oxroot;"),
        "{shown_text}"
    );

    let service = serve(&hsm, &state);
    let mut operator = OperatorClient::new(channel(&service.url, &state, true).await);
    let mut client = DeviceEnrollmentClient::new(channel(&service.url, &state, false).await);
    let renewed = onboarded(acme[0].renew(&mut client, 0).await.unwrap());
    let (ok, out) = openssl_verifies(scratch.path(), &trust["acme"], &renewed.certificate_pem);
    assert!(ok, "renewed after the restart: {out}");
    let late = EmulatedDevice::manufacture(&[2; 32], 9).unwrap();
    client
        .register(late.registration(b"hsm").unwrap())
        .await
        .unwrap();
    operator
        .create_batch(v1::CreateBatchRequest {
            owner: "globex".into(),
            name: "after the restart".into(),
            policy_name: "broker".into(),
            device_ids: vec![late.device_id().to_string()],
            ..Default::default()
        })
        .await
        .unwrap();
    let bundle = onboarded(late.onboard(&mut client).await.unwrap());
    let (ok, out) = openssl_verifies(scratch.path(), &trust["globex"], &bundle.certificate_pem);
    assert!(ok, "onboarded after the restart: {out}");
    // The firmware-signing key is found again in the token after the restart.
    let second_release = sign_firmware(&mut operator, "1.0.1").await;
    assert_eq!(
        second_release.signer_certificate_pem,
        first_release.signer_certificate_pem
    );
    assert_eq!(hsm.private_keys().matches("Private Key Object").count(), 7);
    // The CRL is signed in the token too.
    let crl = operator
        .get_crl(v1::GetCrlRequest {
            owner: "globex".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(crl.crl.starts_with(b"-----BEGIN X509 CRL-----"));
}

/// SignFirmware of a small image for acme's policy `broker`, as a platform admin.
async fn sign_firmware(operator: &mut OperatorClient<Channel>, version: &str) -> v1::Firmware {
    operator
        .sign_firmware(v1::SignFirmwareRequest {
            owner: "acme".into(),
            name: "app".into(),
            version: version.into(),
            policy_name: "broker".into(),
            payload: vec![0x42; 4096],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .firmware
        .unwrap()
}

/// GetCrl of acme, PEM.
async fn get_crl(operator: &mut OperatorClient<Channel>) -> v1::GetCrlResponse {
    operator
        .get_crl(v1::GetCrlRequest {
            format: v1::CrlFormat::Pem as i32,
            owner: "acme".into(),
            issuer_id: String::new(),
        })
        .await
        .expect("GetCrl")
        .into_inner()
}

async fn health(channel: Channel) -> ServingStatus {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "oxroot.v1.DeviceEnrollment".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

async fn wait_for_health(channel: &Channel, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = health(channel.clone()).await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "health still {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET `path` of a console over plain HTTP/1.1 (`Connection: close`): its headers and body.
async fn console_get(console: &RunningConsole, path: &str, cookie: &str) -> (String, String) {
    let address = console.address();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    (headers.to_owned(), body.to_owned())
}

/// The console of the state directory's first admin (a platform admin), logged in: the
/// console and its session cookie (`name=value`).
async fn admin_console(url: &str, state: &Path) -> (RunningConsole, String) {
    let connection = ConnectionArgs {
        service: Some(url.to_owned()),
        profile: Some(state.join("admin")),
        ..ConnectionArgs::default()
    };
    let console = enrollctl::console::start(&connection, ConsoleOptions::default())
        .await
        .unwrap();
    let login = console.login_url().to_owned();
    let path = login.split_once(&console.address().to_string()).unwrap().1;
    let (headers, _) = console_get(&console, path, "").await;
    let cookie = headers
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .and_then(|cookie| cookie.split(';').next())
        .unwrap()
        .to_owned();
    (console, cookie)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_going_away_mid_batch_pauses_issuing_and_nothing_is_issued_twice() {
    const DEVICES: u32 = 24;
    let hsm = SoftHsm::new();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    init_in_token(&hsm, &state);
    let service = serve(&hsm, &state);
    let mut operator = OperatorClient::new(channel(&service.url, &state, true).await);
    let device_channel = channel(&service.url, &state, false).await;
    let mut client = DeviceEnrollmentClient::new(device_channel.clone());
    let devices: Vec<EmulatedDevice> = (0..DEVICES)
        .map(|i| EmulatedDevice::manufacture(&[3; 32], i).unwrap())
        .collect();
    let batch_id = owner_with_batch(&mut operator, &mut client, "acme", &devices).await;
    assert_eq!(health(device_channel.clone()).await, ServingStatus::Serving);

    // A third of the batch onboards, then the token's files go away.
    let mut received: HashMap<usize, String> = HashMap::new();
    for (index, device) in devices.iter().enumerate().take(8) {
        let bundle = onboarded(device.onboard(&mut client).await.unwrap());
        received.insert(index, bundle.serial);
    }
    let crl_before = get_crl(&mut operator).await;
    let token_dir = hsm.token_dir();
    let away = hsm.dir.path().join("away");
    std::fs::rename(&token_dir, &away).unwrap();
    wait_for_health(&device_channel, ServingStatus::NotServing).await;
    let refused = devices[8]
        .onboard(&mut client)
        .await
        .expect_err("no certificate can be signed while the token is away");
    assert!(
        refused.to_string().contains("Unavailable") || refused.to_string().contains("unavailable"),
        "{refused}"
    );
    let status = operator
        .rotate_owner_ca(v1::RotateOwnerCaRequest {
            owner: "acme".into(),
        })
        .await
        .expect_err("no key can be made while the token is away");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    // A revocation while the token is away is recorded, but no CRL can be signed for it;
    // relying parties still get the owner's stored CRL, valid until its nextUpdate.
    let revoked = operator
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: devices[0].device_id().to_string(),
            reason: v1::RevocationReason::KeyCompromise as i32,
            comment: "lost".into(),
        })
        .await;
    assert!(
        revoked
            .as_ref()
            .err()
            .is_some_and(|status| status.code() == tonic::Code::Unavailable),
        "{revoked:?}"
    );
    let stored = get_crl(&mut operator).await;
    assert_eq!(stored.crl_number, crl_before.crl_number, "{stored:?}");
    assert_eq!(stored.revoked_count, 0, "{stored:?}");
    // The console's CA page says so, above the owner's CAs whose keys are in the token.
    let (console, cookie) = admin_console(&service.url, &state).await;
    let (_, page) = console_get(&console, "/ca?owner=acme", &cookie).await;
    assert!(page.contains("data-status=\"not-serving\""), "{page}");
    assert!(
        page.contains("in a PKCS#11 token: <code class=\"wrap\">pkcs11:"),
        "{page}"
    );

    // The token comes back: health recovers by itself and the batch resumes.
    std::fs::rename(&away, &token_dir).unwrap();
    wait_for_health(&device_channel, ServingStatus::Serving).await;
    let (_, page) = console_get(&console, "/ca?owner=acme", &cookie).await;
    assert!(page.contains("data-status=\"serving\""), "{page}");
    assert!(
        page.contains("yes: its key verifies the CRL's signature"),
        "{page}"
    );
    console.stop().await;
    // The revocation made while it was away reaches the CRL now.
    let after = get_crl(&mut operator).await;
    assert!(after.crl_number > crl_before.crl_number, "{after:?}");
    assert_eq!(after.revoked_count, 1, "{after:?}");
    for (index, device) in devices.iter().enumerate().skip(1) {
        let bundle = onboarded(device.onboard(&mut client).await.unwrap());
        if let Some(before) = received.get(&index) {
            assert_eq!(
                &bundle.serial, before,
                "device {index} got a second certificate"
            );
        }
        received.insert(index, bundle.serial);
    }
    let batch = operator
        .get_batch(v1::GetBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .batch
        .unwrap();
    let counts = batch.counts.unwrap();
    // Device 0 was revoked while the token was away; the others are onboarded.
    assert_eq!(
        (counts.onboarded, counts.revoked),
        (u64::from(DEVICES) - 1, 1),
        "{counts:?}"
    );
    drop(service);

    // Nothing issued twice: one certificate per device, as many as devices in the store.
    let registry = SledRegistry::open(&state.join("registry")).unwrap();
    let serials: HashSet<&String> = received.values().collect();
    assert_eq!(serials.len(), devices.len());
    for device in &devices {
        let record = registry.device(device.device_id()).await.unwrap().unwrap();
        assert_eq!(record.serials.len(), 1, "{:?}", record.serials);
    }
    assert_eq!(
        registry.credential_count().await.unwrap(),
        u64::from(DEVICES)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_state_directory_moves_new_keys_to_a_token() {
    let hsm = SoftHsm::new();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    common::process::init(&state);
    let switched = hsm
        .command(bin())
        .args(["ca", "use-pkcs11", "--state-dir"])
        .arg(&state)
        .args(["--token", &hsm.uri()])
        .output()
        .unwrap();
    assert!(switched.status.success(), "{switched:?}");
    // A URI that names a key, not the token, is refused before the config changes.
    let refused = hsm
        .command(bin())
        .args(["ca", "use-pkcs11", "--state-dir"])
        .arg(&state)
        .args(["--token", &hsm.uri().replacen('?', ";object=x?", 1)])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("names a key"),
        "{refused:?}"
    );

    // The platform CA keeps its sealed keys (the passphrase still opens them); the new owner's
    // CA keys are made in the token.
    let service = serve(&hsm, &state);
    let mut operator = OperatorClient::new(channel(&service.url, &state, true).await);
    let owner = operator
        .create_owner(v1::CreateOwnerRequest {
            name: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .owner
        .unwrap();
    assert!(
        owner.issuing_cas[0]
            .key_location
            .starts_with("pkcs11:token=oxroot;"),
        "{owner:?}"
    );
    assert!(state.join("ca/intermediate.key.enc").exists());
    drop(service);
    let listed = hsm.private_keys();
    assert!(listed.contains("oxroot:acme/1"), "{listed}");
    assert!(!listed.contains("oxroot:platform"), "{listed}");
}
