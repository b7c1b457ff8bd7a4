//! Shared harness: the real enrolment service in-process on 127.0.0.1:0, an Operator client,
//! the agent binary run as a child process, and a real Mosquitto broker.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    reason = "test support; a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use enroll_service::metrics::Metrics;
use enroll_service::pki::{CaNames, CertificateAuthority, OperatorKey, Role, Validity};
use enroll_service::server::RunningServer;
use enroll_service::service::{ServiceConfig, ServiceCore};
use enroll_service::store::SledRegistry;
use oxroot_proto::v1;
use oxroot_proto::v1::operator_client::OperatorClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The service, its registry and CA, in a temporary directory.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub core: Arc<ServiceCore>,
    pub server: RunningServer,
    /// The root, written to `dir/root.pem` for the agent's `--ca`.
    pub root_file: PathBuf,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(ServiceConfig::default()).await
    }

    /// A harness whose service runs with `config` (a short CRL validity, say).
    pub async fn start_with(config: ServiceConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = SledRegistry::open(&dir.path().join("registry")).unwrap();
        let ca = CertificateAuthority::initialise(
            &CaNames::default(),
            time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
        )
        .unwrap();
        let core = ServiceCore::new(registry, Arc::new(ca), config, Arc::new(Metrics::new()));
        let server = RunningServer::start(core.clone()).await.unwrap();
        let root_file = dir.path().join("root.pem");
        std::fs::write(&root_file, &server.root_pem).unwrap();
        Self {
            dir,
            core,
            server,
            root_file,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `--service URL --ca root.pem` with fast retries.
    pub fn service_args(&self) -> Vec<String> {
        vec![
            "--service".into(),
            self.url(),
            "--ca".into(),
            self.root_file.display().to_string(),
            "--retries".into(),
            "2".into(),
            "--backoff-ms".into(),
            "20".into(),
        ]
    }

    /// Writes an enrollctl profile (root.pem, operator.pem, operator.key) for a fresh admin of
    /// `owner` into `dir`.
    pub async fn write_profile(&self, dir: &Path, owner: &str) {
        let now = time::OffsetDateTime::now_utc();
        let issued = enroll_service::service::issue_operator_certificate(
            &self.core,
            &OperatorKey::Generate,
            ("profile-admin", owner, Role::Admin),
            Validity::starting(now - time::Duration::minutes(1), time::Duration::hours(1)).unwrap(),
            "system:test-harness",
        )
        .await
        .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("root.pem"), &self.server.root_pem).unwrap();
        std::fs::write(
            dir.join("operator.pem"),
            format!(
                "{}{}",
                issued.certificate.pem,
                self.core.ca().certificate_pem()
            ),
        )
        .unwrap();
        let key = dir.join("operator.key");
        std::fs::write(&key, issued.private_key.unwrap().to_pem().as_bytes()).unwrap();
        std::fs::set_permissions(
            &key,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .unwrap();
    }

    /// An Operator client for a fresh admin of `owner`.
    pub async fn operator(&self, owner: &str) -> OperatorClient<Channel> {
        let now = time::OffsetDateTime::now_utc();
        let issued = enroll_service::service::issue_operator_certificate(
            &self.core,
            &OperatorKey::Generate,
            ("admin", owner, Role::Admin),
            Validity::starting(now - time::Duration::minutes(1), time::Duration::hours(1)).unwrap(),
            "system:test-harness",
        )
        .await
        .unwrap();
        let key = issued.private_key.unwrap().to_pem();
        let chain = format!(
            "{}{}",
            issued.certificate.pem,
            self.core.ca().certificate_pem()
        );
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.server.root_pem))
            .domain_name("localhost")
            .identity(Identity::from_pem(chain, key.as_bytes()));
        let channel = Channel::from_shared(self.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        OperatorClient::new(channel)
    }
}

/// Creates a policy and an empty batch; returns the batch id.
pub async fn policy_and_batch(
    operator: &mut OperatorClient<Channel>,
    name: &str,
    params: v1::policy::Params,
) -> String {
    operator
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: name.into(),
                params: Some(params),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    batch_of(operator, name).await
}

/// Creates an empty batch "<policy> batch" of an existing policy; returns its id.
pub async fn batch_of(operator: &mut OperatorClient<Channel>, policy: &str) -> String {
    operator
        .create_batch(v1::CreateBatchRequest {
            name: format!("{policy} batch"),
            policy_name: policy.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .batch
        .unwrap()
        .batch_id
}

/// Imports records into a batch through the Operator API's ImportDevices stream.
pub async fn import(
    operator: &mut OperatorClient<Channel>,
    batch_id: &str,
    records: Vec<v1::import_record::Record>,
) -> v1::ImportReport {
    let messages = vec![
        v1::ImportDevicesRequest {
            msg: Some(v1::import_devices_request::Msg::Header(v1::ImportHeader {
                batch_id: batch_id.into(),
            })),
        },
        v1::ImportDevicesRequest {
            msg: Some(v1::import_devices_request::Msg::Chunk(v1::ImportChunk {
                records: records
                    .into_iter()
                    .map(|record| v1::ImportRecord {
                        line: 0,
                        record: Some(record),
                    })
                    .collect(),
            })),
        },
    ];
    operator
        .import_devices(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap()
}

/// Revokes a device for key compromise.
pub async fn revoke(operator: &mut OperatorClient<Channel>, device_id: &str) {
    operator
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: device_id.into(),
            reason: v1::RevocationReason::KeyCompromise.into(),
            comment: "test".into(),
        })
        .await
        .unwrap();
}

/// What one agent run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        &self.stdout
    }

    /// Asserts the exit code and returns stderr.
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "expected exit code {code}: {self:#?}");
        assert!(
            self.stderr.contains("error: "),
            "a failure says why: {self:#?}"
        );
        &self.stderr
    }
}

/// The agent binary with one state directory and one silicon source. Every run's stdout and
/// stderr is kept, for the key-material scan.
#[derive(Clone)]
pub struct Agent {
    pub state: PathBuf,
    pub silicon: String,
    pub transcript: Arc<Mutex<String>>,
}

impl Agent {
    pub fn new(state: &Path, silicon: &str) -> Self {
        Self {
            state: state.to_owned(),
            silicon: silicon.to_owned(),
            transcript: Arc::default(),
        }
    }

    /// Runs `device-agent --state STATE ARGS` with OXROOT_SILICON set and debug logging on
    /// (the scan should see everything the agent could log).
    pub async fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_device-agent"))
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .env("OXROOT_SILICON", &self.silicon)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        let mut transcript = self.transcript.lock().unwrap();
        transcript.push_str(&run.stdout);
        transcript.push_str(&run.stderr);
        run
    }

    /// Runs with the service arguments appended.
    pub async fn run_with_service(&self, args: &[&str], harness: &Harness) -> Run {
        let mut all: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        all.extend(harness.service_args());
        self.run(&all).await
    }

    /// `id`: the DeviceId.
    /// Enrols, registers with the harness's service and has the operator import the device
    /// into `batch`; returns its DeviceId.
    pub async fn join_batch(
        &self,
        harness: &Harness,
        operator: &mut OperatorClient<Channel>,
        batch: &str,
    ) -> String {
        self.run(&["enroll"]).await.ok();
        self.run_with_service(&["register"], harness).await.ok();
        let id = self.device_id().await;
        let report = import(
            operator,
            batch,
            vec![v1::import_record::Record::DeviceId(id.clone())],
        )
        .await;
        assert_eq!(report.accepted, 1, "{report:?}");
        id
    }

    pub async fn device_id(&self) -> String {
        self.run(&["id"]).await.ok().trim().to_owned()
    }

    /// `--json` output of a command, parsed.
    pub async fn json(&self, args: &[&str], harness: Option<&Harness>) -> serde_json::Value {
        let mut all = vec!["--json".to_owned()];
        all.extend(args.iter().map(|&a| a.to_owned()));
        if let Some(harness) = harness {
            all.extend(harness.service_args());
        }
        let run = self.run(&all).await;
        serde_json::from_str(run.ok()).unwrap_or_else(|e| panic!("{e}: {run:#?}"))
    }
}

/// A free loopback port (bind, read, close).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Renders `owner`'s policy artefacts through the Operator API (ExportArtifacts with a broker
/// CSR, which only a platform operator may send) into `dir`: `mosquitto.conf`, `acl`,
/// `ca.pem`, `crl.pem`, `broker-certificate.pem` (leaf and intermediate) and the broker's own
/// `broker.key`, made here. Returns `mosquitto.conf`.
pub async fn broker_files(
    platform: &mut OperatorClient<Channel>,
    owner: &str,
    policy: &str,
    dir: &Path,
) -> String {
    // The broker's own key, made here; only its CSR goes to the service.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(vec!["broker.invalid".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    std::fs::write(dir.join("broker.key"), key.serialize_pem()).unwrap();
    let artifacts = platform
        .export_artifacts(v1::ExportArtifactsRequest {
            owner: owner.into(),
            policy_name: policy.into(),
            mosquitto: Some(v1::MosquittoExportOptions {
                config_dir: dir.display().to_string(),
                broker_csr_pem: csr,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .artifacts;
    let mut conf = String::new();
    for artifact in &artifacts {
        std::fs::write(dir.join(&artifact.file_name), &artifact.content).unwrap();
        if artifact.file_name == "mosquitto.conf" {
            conf = String::from_utf8(artifact.content.clone()).unwrap();
        }
    }
    conf
}

/// `openssl s_server` on a loopback port, as a TLS server the agent's code did not write:
/// started with the given arguments, killed by its PID when dropped. Its stdin stays open (at
/// end of input s_server would shut down); stdout and stderr go to files in `dir`.
pub struct OpenSslServer {
    child: std::process::Child,
    _stdin: std::process::ChildStdin,
    out: PathBuf,
    err: PathBuf,
}

impl OpenSslServer {
    /// `openssl s_server -accept 127.0.0.1:PORT ARGS`, in `dir`, with `envs`; waits (at most
    /// 15 s) until it listens.
    pub fn start(dir: &Path, port: u16, args: &[&str], envs: &[(&str, &Path)]) -> Self {
        let out = dir.join(format!("s_server-{port}.out"));
        let err = dir.join(format!("s_server-{port}.err"));
        let mut command = std::process::Command::new("openssl");
        command
            .arg("s_server")
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let server = Self {
            child,
            _stdin: stdin,
            out,
            err,
        };
        // Not a connection probe: s_server would count it as a client.
        server.wait_for("ACCEPT");
        server
    }

    /// What s_server printed so far, stdout then stderr.
    pub fn output(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Waits (at most 15 s) until the output holds `text`; returns the output.
    pub fn wait_for(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let output = self.output();
            if output.contains(text) {
                return output;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "s_server never printed {text:?}: {output}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for OpenSslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Mosquitto broker this test started, killed when the test ends however it ends.
pub struct Broker {
    child: std::process::Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl Broker {
    /// Renders `owner`'s policy artefacts through the Operator API (ExportArtifacts with a
    /// broker CSR, which only a platform operator may send), installs them in `dir` and starts
    /// `mosquitto` on them, listening on loopback only.
    pub async fn start(
        platform: &mut OperatorClient<Channel>,
        owner: &str,
        policy: &str,
        dir: &Path,
        port: u16,
    ) -> Self {
        assert!(
            std::process::Command::new("mosquitto")
                .arg("-h")
                .output()
                .is_ok(),
            "mosquitto is not installed (apt-get install -y mosquitto); tests/run installs it"
        );
        let conf = broker_files(platform, owner, policy, dir).await;
        // The only adaptations: listen on loopback, and keep the current user (as root,
        // Mosquitto would switch to its own user, which cannot read a private temp directory).
        let conf = conf.replace(
            &format!("listener {port}\n"),
            &format!("listener {port} 127.0.0.1\n"),
        );
        assert!(conf.contains("127.0.0.1"), "{conf}");
        std::fs::write(dir.join("test.conf"), format!("user {}\n{conf}", whoami())).unwrap();

        let mut child = std::process::Command::new("mosquitto")
            .args(["-c", "test.conf"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut log = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
                panic!("mosquitto refused the configuration ({status}): {log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not start listening"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self {
            child,
            dir: dir.to_owned(),
            port,
        }
    }

    /// The broker's process id (for a reload command).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the CRL and makes the broker re-read it (SIGHUP).
    pub fn reload_crl(&self, crl_pem: &[u8]) {
        std::fs::write(self.dir.join("crl.pem"), crl_pem).unwrap();
        // The shell's builtin kill: no dependency on a kill binary or on unsafe libc calls.
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -HUP {}", self.child.id())])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stops the broker and returns what it logged.
    pub fn log(&mut self) -> String {
        let _ = self.child.kill();
        let mut log = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut log).unwrap();
        log
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn whoami() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
