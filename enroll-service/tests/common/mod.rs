//! Shared harness: an in-process service on 127.0.0.1:0 over a temporary sled registry.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::missing_panics_doc,
    clippy::unwrap_used
)]

// One throwaway-cluster helper for every suite that needs PostgreSQL (loadgen uses it too).
#[path = "../../../tests/src/postgres.rs"]
pub mod postgres;
pub mod process;

use std::sync::Arc;

use enroll_service::fleet::{EmulatedDevice, Outcome};
use enroll_service::metrics::Metrics;
use enroll_service::pki::{CaNames, CertificateAuthority};
use enroll_service::server::RunningServer;
use enroll_service::service::{ServiceConfig, ServiceCore};
use enroll_service::store::{Registry, SledRegistry};
use oxroot_proto::v1;
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub core: Arc<ServiceCore>,
    pub registry: Arc<SledRegistry>,
    pub server: RunningServer,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(ServiceConfig::default()).await
    }

    pub async fn start_with(config: ServiceConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = SledRegistry::open(&dir.path().join("registry")).unwrap();
        let ca = CertificateAuthority::initialise(
            &CaNames::default(),
            time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
        )
        .unwrap();
        let core = ServiceCore::new(
            registry.clone(),
            Arc::new(ca),
            config,
            Arc::new(Metrics::new()),
        );
        let server = RunningServer::start(core.clone()).await.unwrap();
        Self {
            dir,
            core,
            registry,
            server,
        }
    }

    pub async fn channel(&self) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.server.root_pem))
            .domain_name("localhost");
        Channel::from_shared(self.server.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn device_client(&self) -> DeviceEnrollmentClient<Channel> {
        DeviceEnrollmentClient::new(self.channel().await)
    }

    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_ref()
    }

    /// The audit entries of one correlation ID (a refusal's reference).
    pub async fn audit_for(&self, correlation: &str) -> Vec<enroll_service::audit::AuditRecord> {
        self.registry
            .audit(1, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.decode().unwrap())
            .filter(|r| r.correlation_id == correlation)
            .collect()
    }
}

pub fn fleet(n: u32, seed: u8) -> Vec<EmulatedDevice> {
    (0..n)
        .map(|i| EmulatedDevice::manufacture(&[seed; 32], i).unwrap())
        .collect()
}

pub async fn register(client: &mut DeviceEnrollmentClient<Channel>, device: &EmulatedDevice) {
    let response = client
        .register(device.registration(b"station-1").unwrap())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.device_id, device.device_id().to_string());
}

pub fn bundle(outcome: &Outcome) -> &v1::CredentialBundle {
    outcome
        .credentials()
        .unwrap_or_else(|| panic!("expected credentials, got {outcome:?}"))
}

pub fn refusal(outcome: &Outcome) -> &v1::Refusal {
    match outcome {
        Outcome::Refused(r) => r,
        Outcome::Credentials(_) => panic!("expected a refusal, got credentials"),
    }
}

/// Creates a Mosquitto policy and a batch holding `devices`, straight through the registry
/// (the device-side tests do not depend on the operator API).
pub async fn seed_batch(
    harness: &Harness,
    owner: &str,
    batch_id: &str,
    devices: &[&EmulatedDevice],
) {
    use enroll_service::model::{BatchCounts, BatchRecord, CountsDelta, DeviceRecord};
    use enroll_service::policy::PolicySpec;
    use enroll_service::store::{Change, Op, commit};
    let now = time::OffsetDateTime::now_utc();
    harness
        .core
        .authorities()
        .ensure_owner(owner, "system:test-harness")
        .await
        .unwrap();
    let policy = PolicySpec::from_proto(
        &v1::Policy {
            name: format!("{batch_id}-policy"),
            params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                host: "127.0.0.1".into(),
                ..Default::default()
            })),
            ..Default::default()
        },
        owner,
        "test",
        now,
        time::Duration::days(3650),
    )
    .unwrap();
    let mut change = Change::new();
    change
        .op(Op::PutPolicy(Box::new(policy.clone())))
        .op(Op::PutBatch(BatchRecord {
            batch_id: batch_id.into(),
            owner: owner.into(),
            name: batch_id.into(),
            policy_name: policy.name.clone(),
            description: String::new(),
            created_at: now,
            created_by: "test".into(),
            counts: BatchCounts::default(),
        }));
    commit(harness.registry(), change).await.unwrap();
    for device in devices {
        let id = *device.device_id();
        let mut record = harness
            .registry()
            .device(&id)
            .await
            .unwrap()
            .unwrap_or_else(|| DeviceRecord::new(id));
        record.owner = Some(owner.into());
        record.batch_id = Some(batch_id.into());
        let mut change = Change::new();
        change
            .op(Op::AdjustCounts {
                batch_id: batch_id.into(),
                delta: CountsDelta::joined(record.state()),
            })
            .op(Op::AddToBatch {
                batch_id: batch_id.into(),
                device_id: id,
            })
            .op(Op::PutDevice(record));
        commit(harness.registry(), change).await.unwrap();
    }
}

impl Harness {
    /// The id of the owner's active issuing CA (whose CRL lists its devices' revocations).
    pub async fn issuer(&self, owner: &str) -> String {
        self.core.authorities().issuing(owner).await.unwrap().id
    }

    /// A fresh operator certificate for (name, owner, role): (chain PEM, PKCS#8 key PEM).
    pub async fn issue_operator(
        &self,
        name: &str,
        owner: &str,
        role: enroll_service::pki::Role,
    ) -> (String, String) {
        use enroll_service::pki::{OperatorKey, Validity};
        let now = time::OffsetDateTime::now_utc();
        let issued = enroll_service::service::issue_operator_certificate(
            &self.core,
            &OperatorKey::Generate,
            (name, owner, role),
            Validity::starting(now - time::Duration::minutes(1), time::Duration::hours(1)).unwrap(),
            "system:test-harness",
        )
        .await
        .unwrap();
        let key = issued.private_key.unwrap().to_pem().to_string();
        let chain = format!(
            "{}{}",
            issued.certificate.pem,
            self.core.ca().certificate_pem()
        );
        (chain, key)
    }

    /// An Operator client authenticated with a fresh certificate for (name, owner, role).
    pub async fn operator(
        &self,
        name: &str,
        owner: &str,
        role: enroll_service::pki::Role,
    ) -> oxroot_proto::v1::operator_client::OperatorClient<Channel> {
        let (chain, key) = self.issue_operator(name, owner, role).await;
        self.client_with_identity(&chain, key.as_bytes()).await
    }

    /// An Operator client presenting an arbitrary certificate chain and key.
    pub async fn client_with_identity(
        &self,
        chain_pem: &str,
        key_pem: &[u8],
    ) -> oxroot_proto::v1::operator_client::OperatorClient<Channel> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.server.root_pem))
            .domain_name("localhost")
            .identity(tonic::transport::Identity::from_pem(chain_pem, key_pem));
        let channel = Channel::from_shared(self.server.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        oxroot_proto::v1::operator_client::OperatorClient::new(channel)
    }
}

impl Harness {
    /// Writes an enrollctl profile (root.pem, operator.pem, operator.key) for a fresh operator.
    pub async fn write_profile(
        &self,
        dir: &std::path::Path,
        name: &str,
        owner: &str,
        role: enroll_service::pki::Role,
    ) {
        let (chain, key) = self.issue_operator(name, owner, role).await;
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("root.pem"), &self.server.root_pem).unwrap();
        std::fs::write(dir.join("operator.pem"), chain).unwrap();
        std::fs::write(dir.join("operator.key"), key).unwrap();
    }
}

/// Runs `enrollctl --service <url> --profile <profile> --json <args…>` in process; returns the
/// exit, the last JSON line of stdout (streams print JSON lines), and everything printed.
pub async fn ctl(
    harness: &Harness,
    profile: &std::path::Path,
    args: &[&str],
) -> (enrollctl::Exit, serde_json::Value, String) {
    use clap::Parser;
    let url = harness.server.url();
    let mut argv = vec![
        "enrollctl",
        "--service",
        &url,
        "--profile",
        profile.to_str().unwrap(),
        "--json",
    ];
    argv.extend_from_slice(args);
    let cli = enrollctl::Cli::try_parse_from(&argv).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = enrollctl::run_cli(cli, enrollctl::Options::default(), &mut out, &mut err).await;
    let stdout = String::from_utf8(out).unwrap();
    let stderr = String::from_utf8(err).unwrap();
    let value = stdout
        .lines()
        .last()
        .map_or(serde_json::Value::Null, |line| {
            serde_json::from_str(line).unwrap_or(serde_json::Value::Null)
        });
    (exit, value, format!("{stdout}{stderr}"))
}
