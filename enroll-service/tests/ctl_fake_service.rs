//! `enrollctl` end to end against a scripted Operator service: real TLS with client
//! certificates on 127.0.0.1, real HTTP/2 streams, the CLI driven in-process through
//! `ctl::run_cli` with captured output.
//!
//! The fake answers from fixed data and records what it was sent, so these tests pin the
//! client's side of the contract (requests, paging, chunking, output, exit codes). Tests
//! against the real service belong next to it once it exists.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use clap::Parser;
use enroll_service::ctl::{self, Cli, Exit, Options};
use oxroot_proto::v1::operator_server::{Operator, OperatorServer};
use oxroot_proto::v1::{
    self as pb, Artifact, AuditEntry, Batch, BatchCounts, BatchProgress, CredentialSummary, Device,
    DeviceEvent, DeviceEventKind, DeviceState, ImportRejection, ImportRejectionReason,
    ImportReport, Policy, PolicyKind, Revocation, Role, import_devices_request::Msg,
    import_record::Record, issue_operator_certificate_request::Key, watch_batch_response::Event,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

type Ca = CertifiedIssuer<'static, KeyPair>;

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    CertifiedIssuer::self_signed(params, key).expect("self-signed")
}

/// A leaf signed by `ca`: (certificate PEM, PKCS#8 key PEM).
fn leaf(ca: &Ca, names: &[&str], cn: &str, eku: ExtendedKeyUsagePurpose) -> (String, String) {
    let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![eku];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = params.signed_by(&key, ca).expect("signs");
    (cert.pem(), key.serialize_pem())
}

fn device_id(n: u32) -> String {
    format!("{n:064x}")
}

fn is_device_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the fake was sent.
#[derive(Default)]
struct Recorded {
    policies: Vec<Policy>,
    create_batch: Option<pb::CreateBatchRequest>,
    chunk_sizes: Vec<usize>,
    import_calls: usize,
    audit_queries: Vec<pb::QueryAuditRequest>,
    export: Option<pb::ExportArtifactsRequest>,
}

#[derive(Clone)]
struct Fake {
    recorded: Arc<Mutex<Recorded>>,
    ca: Arc<Ca>,
}

impl Fake {
    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Splits `items` into pages of two, whatever page size the client asked for, so that every
/// list test exercises page tokens.
fn page<T: Clone>(items: &[T], token: &str) -> Result<(Vec<T>, String), Status> {
    let start: usize = if token.is_empty() {
        0
    } else {
        token
            .parse()
            .map_err(|_| Status::invalid_argument("bad page token"))?
    };
    let end = (start + 2).min(items.len());
    let next = if end < items.len() {
        end.to_string()
    } else {
        String::new()
    };
    Ok((items[start.min(end)..end].to_vec(), next))
}

fn counts(total: u64, onboarded: u64) -> BatchCounts {
    BatchCounts {
        total,
        awaiting_registration: total - onboarded,
        onboarded,
        ..BatchCounts::default()
    }
}

fn batch(id: &str) -> Batch {
    Batch {
        batch_id: id.to_owned(),
        owner: "acme".into(),
        name: format!("line {id}"),
        policy_name: "mq".into(),
        policy_kind: PolicyKind::Mosquitto as i32,
        counts: Some(counts(3, 1)),
        ..Batch::default()
    }
}

fn device(n: u32) -> Device {
    Device {
        device_id: device_id(n),
        owner: "acme".into(),
        batch_id: "b-1".into(),
        state: DeviceState::Onboarded as i32,
        key_slot: 1,
        ..Device::default()
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchBatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Operator for Fake {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        // Proves the client certificate arrived through the TLS handshake.
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("empty chain"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|_| Status::unauthenticated("unparsable certificate"))?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Response::new(pb::WhoAmIResponse {
            name,
            owner: "acme".into(),
            role: Role::Admin as i32,
            certificate_serial: cert.raw_serial_as_string().replace(':', ""),
            not_after: Some(prost_types::Timestamp {
                seconds: cert.validity().not_after.timestamp(),
                nanos: 0,
            }),
        }))
    }

    async fn create_policy(
        &self,
        request: Request<pb::CreatePolicyRequest>,
    ) -> Result<Response<pb::CreatePolicyResponse>, Status> {
        let mut policy = request
            .into_inner()
            .policy
            .ok_or_else(|| Status::invalid_argument("policy: missing"))?;
        let mut recorded = self.recorded();
        if recorded.policies.iter().any(|p| p.name == policy.name) {
            return Err(Status::already_exists(format!(
                "policy {:?} already exists",
                policy.name
            )));
        }
        policy.kind = match &policy.params {
            Some(pb::policy::Params::AwsIot(_)) => PolicyKind::AwsIot,
            Some(pb::policy::Params::AzureDps(_)) => PolicyKind::AzureDps,
            Some(pb::policy::Params::Mosquitto(_)) => PolicyKind::Mosquitto,
            None => return Err(Status::invalid_argument("params: missing")),
        } as i32;
        policy.owner = "acme".into();
        policy.created_by = "alice".into();
        recorded.policies.push(policy.clone());
        Ok(Response::new(pb::CreatePolicyResponse {
            policy: Some(policy),
        }))
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let name = request.into_inner().name;
        let policy = self
            .recorded()
            .policies
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("policy acme/{name} not found")))?;
        Ok(Response::new(pb::GetPolicyResponse {
            policy: Some(policy),
        }))
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let request = request.into_inner();
        let policies: Vec<Policy> = self
            .recorded()
            .policies
            .iter()
            .filter(|p| request.kind == 0 || p.kind == request.kind)
            .cloned()
            .collect();
        let (policies, next_page_token) = page(&policies, &request.page_token)?;
        Ok(Response::new(pb::ListPoliciesResponse {
            policies,
            next_page_token,
        }))
    }

    async fn create_batch(
        &self,
        request: Request<pb::CreateBatchRequest>,
    ) -> Result<Response<pb::CreateBatchResponse>, Status> {
        let request = request.into_inner();
        let mut report = ImportReport::default();
        for (i, id) in request.device_ids.iter().enumerate() {
            if is_device_id(id) {
                report.accepted += 1;
            } else {
                report.rejected += 1;
                report.rejections.push(ImportRejection {
                    line: i as u64 + 1,
                    device_id: id.clone(),
                    reason: ImportRejectionReason::InvalidDeviceId as i32,
                    message: "not 64 hex characters".into(),
                });
            }
        }
        let mut created = batch("b-1");
        created.name.clone_from(&request.name);
        created.counts = Some(counts(report.accepted, 0));
        self.recorded().create_batch = Some(request);
        Ok(Response::new(pb::CreateBatchResponse {
            batch: Some(created),
            report: Some(report),
        }))
    }

    async fn import_devices(
        &self,
        request: Request<Streaming<pb::ImportDevicesRequest>>,
    ) -> Result<Response<pb::ImportDevicesResponse>, Status> {
        let mut stream = request.into_inner();
        let Some(pb::ImportDevicesRequest {
            msg: Some(Msg::Header(header)),
        }) = stream.message().await?
        else {
            return Err(Status::invalid_argument(
                "the first message must be a header",
            ));
        };
        if header.batch_id != "b-1" {
            return Err(Status::not_found(format!(
                "batch {} not found",
                header.batch_id
            )));
        }
        self.recorded().import_calls += 1;
        let mut report = ImportReport::default();
        let mut seen = HashSet::new();
        let mut reject = |line, device_id: &str, reason: ImportRejectionReason, message: &str| {
            report.rejected += 1;
            report.rejections.push(ImportRejection {
                line,
                device_id: device_id.to_owned(),
                reason: reason as i32,
                message: message.to_owned(),
            });
        };
        let mut accepted = 0;
        while let Some(message) = stream.message().await? {
            let Some(Msg::Chunk(chunk)) = message.msg else {
                return Err(Status::invalid_argument("a header after the first message"));
            };
            self.recorded().chunk_sizes.push(chunk.records.len());
            for record in chunk.records {
                match record.record {
                    Some(Record::DeviceId(id)) if !is_device_id(&id) => reject(
                        record.line,
                        &id,
                        ImportRejectionReason::InvalidDeviceId,
                        "not 64 hex characters",
                    ),
                    Some(Record::DeviceId(id)) if !seen.insert(id.to_ascii_lowercase()) => reject(
                        record.line,
                        &id,
                        ImportRejectionReason::Duplicate,
                        "appears earlier in this import",
                    ),
                    Some(Record::Registration(registration)) if registration.epk.len() != 65 => {
                        reject(
                            record.line,
                            &registration.claimed_device_id,
                            ImportRejectionReason::InvalidRegistration,
                            "epk is not 65 bytes",
                        );
                    }
                    Some(_) => accepted += 1,
                    None => reject(
                        record.line,
                        "",
                        ImportRejectionReason::Malformed,
                        "empty record",
                    ),
                }
            }
        }
        report.accepted = accepted;
        Ok(Response::new(pb::ImportDevicesResponse {
            batch_id: header.batch_id,
            counts: Some(counts(accepted, 0)),
            report: Some(report),
        }))
    }

    async fn get_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::GetBatchResponse>, Status> {
        let id = request.into_inner().batch_id;
        if id != "b-1" {
            return Err(Status::not_found(format!("batch {id} not found")));
        }
        Ok(Response::new(pb::GetBatchResponse {
            batch: Some(batch(&id)),
        }))
    }

    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let all = [batch("b-3"), batch("b-2"), batch("b-1")];
        let (batches, next_page_token) = page(&all, &request.into_inner().page_token)?;
        Ok(Response::new(pb::ListBatchesResponse {
            batches,
            next_page_token,
        }))
    }

    type WatchBatchStream = WatchStream;

    async fn watch_batch(
        &self,
        request: Request<pb::WatchBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        let request = request.into_inner();
        if request.batch_id != "b-1" {
            return Err(Status::not_found("batch not found"));
        }
        let progress = |onboarded| pb::WatchBatchResponse {
            event: Some(Event::Progress(BatchProgress {
                counts: Some(counts(3, onboarded)),
                time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                dropped_events: 0,
            })),
        };
        let mut messages = vec![progress(1)];
        if request.device_events {
            messages.push(pb::WatchBatchResponse {
                event: Some(Event::Device(DeviceEvent {
                    device_id: device_id(2),
                    kind: DeviceEventKind::Onboarded as i32,
                    serial: "0a".into(),
                    key_slot: 1,
                    ..DeviceEvent::default()
                })),
            });
        }
        messages.push(progress(3));
        // Without until_settled the real service streams forever; the fake ends either way.
        Ok(Response::new(Box::pin(tokio_stream::iter(
            messages.into_iter().map(Ok),
        ))))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let request = request.into_inner();
        let all: Vec<Device> = (0..5)
            .map(device)
            .filter(|d| request.batch_id.is_empty() || d.batch_id == request.batch_id)
            .collect();
        let (devices, next_page_token) = page(&all, &request.page_token)?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices,
            next_page_token,
        }))
    }

    async fn get_device(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::GetDeviceResponse>, Status> {
        let id = request.into_inner().device_id;
        if id != device_id(0) {
            return Err(Status::not_found("device not found"));
        }
        let mut found = device(0);
        found.credential_history = vec![CredentialSummary {
            serial: "0a".into(),
            state: pb::CredentialState::Active as i32,
            key_slot: 1,
            policy_name: "mq".into(),
            ..CredentialSummary::default()
        }];
        Ok(Response::new(pb::GetDeviceResponse {
            device: Some(found),
        }))
    }

    async fn revoke_device(
        &self,
        request: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::RevokeDeviceResponse>, Status> {
        let request = request.into_inner();
        let mut revoked = device(0);
        revoked.device_id = request.device_id;
        revoked.state = DeviceState::Revoked as i32;
        revoked.revocation = Some(Revocation {
            reason: request.reason,
            comment: request.comment,
            revoked_by: "alice".into(),
            revoked_at: None,
        });
        Ok(Response::new(pb::RevokeDeviceResponse {
            device: Some(revoked),
            revoked_serials: vec!["0a".into(), "0b".into()],
        }))
    }

    async fn transfer_device(
        &self,
        request: Request<pb::TransferDeviceRequest>,
    ) -> Result<Response<pb::TransferDeviceResponse>, Status> {
        let request = request.into_inner();
        let mut moved = device(0);
        moved.device_id = request.device_id;
        moved.batch_id = request.target_batch_id;
        if !request.target_owner.is_empty() {
            moved.owner = request.target_owner;
        }
        moved.state = DeviceState::ReonboardPending as i32;
        Ok(Response::new(pb::TransferDeviceResponse {
            device: Some(moved),
            revoked_serials: Vec::new(),
        }))
    }

    async fn export_artifacts(
        &self,
        request: Request<pb::ExportArtifactsRequest>,
    ) -> Result<Response<pb::ExportArtifactsResponse>, Status> {
        let request = request.into_inner();
        self.recorded().export = Some(request.clone());
        let file = |name: &str, content: &str| Artifact {
            file_name: name.to_owned(),
            media_type: "text/plain".into(),
            content: content.as_bytes().to_vec(),
            description: format!("the {name}"),
        };
        let artifacts = match request.policy_name.as_str() {
            "mq" => {
                let dir = request
                    .mosquitto
                    .as_ref()
                    .map_or("/etc/mosquitto/oxroot", |m| m.config_dir.as_str());
                let mut files = vec![
                    file("mosquitto.conf", &format!("cafile {dir}/ca.pem\n")),
                    file("acl", "pattern readwrite devices/%u/#\n"),
                    file("ca.pem", "-----BEGIN CERTIFICATE-----\n"),
                ];
                if request
                    .mosquitto
                    .as_ref()
                    .is_some_and(|m| !m.broker_csr_pem.is_empty())
                {
                    files.push(file("broker-certificate.pem", "cert"));
                }
                files
            }
            "evil" => vec![file("ca.pem", "fine"), file("../escape.pem", "gotcha")],
            other => return Err(Status::not_found(format!("policy {other} not found"))),
        };
        Ok(Response::new(pb::ExportArtifactsResponse {
            kind: PolicyKind::Mosquitto as i32,
            artifacts,
        }))
    }

    async fn get_crl(
        &self,
        request: Request<pb::GetCrlRequest>,
    ) -> Result<Response<pb::GetCrlResponse>, Status> {
        let der = request.into_inner().format == pb::CrlFormat::Der as i32;
        let (crl, format) = if der {
            (vec![0x30, 0x03, 0x02, 0x01, 0x07], pb::CrlFormat::Der)
        } else {
            (
                b"-----BEGIN X509 CRL-----\nMAMCAQc=\n-----END X509 CRL-----\n".to_vec(),
                pb::CrlFormat::Pem,
            )
        };
        Ok(Response::new(pb::GetCrlResponse {
            crl,
            format: format as i32,
            crl_number: 7,
            revoked_count: 2,
            this_update: None,
            next_update: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
        }))
    }

    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        let request = request.into_inner();
        self.recorded().audit_queries.push(request.clone());
        let entries: Vec<AuditEntry> = (1..=3)
            .map(|seq| AuditEntry {
                seq,
                actor: "operator:alice".into(),
                action: "device.revoke".into(),
                subject: format!("device:{}", device_id(0)),
                outcome: "ok".into(),
                details: [("reason".to_owned(), "key-compromise".to_owned())].into(),
                hash: vec![0xab; 32],
                ..AuditEntry::default()
            })
            .collect();
        let (entries, next_page_token) = page(&entries, &request.page_token)?;
        Ok(Response::new(pb::QueryAuditResponse {
            entries,
            next_page_token,
            head_seq: 42,
        }))
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let request = request.into_inner();
        let broken = request.start_seq == 666;
        Ok(Response::new(pb::VerifyAuditResponse {
            ok: !broken,
            entries_checked: 10,
            first_seq: request.start_seq.max(1),
            last_seq: 10,
            last_hash: vec![0xcd; 32],
            first_bad_seq: if broken { 667 } else { 0 },
            problem: if broken {
                "hash mismatch".into()
            } else {
                String::new()
            },
        }))
    }

    async fn issue_operator_certificate(
        &self,
        request: Request<pb::IssueOperatorCertificateRequest>,
    ) -> Result<Response<pb::IssueOperatorCertificateResponse>, Status> {
        let request = request.into_inner();
        let Some(Key::CsrPem(csr_pem)) = request.key else {
            return Err(Status::invalid_argument("key: expected a CSR"));
        };
        let mut csr = CertificateSigningRequestParams::from_pem(&csr_pem)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        csr.params.distinguished_name = rcgen::DistinguishedName::new();
        csr.params
            .distinguished_name
            .push(DnType::CommonName, request.name.as_str());
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = csr
            .signed_by(&self.ca)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::IssueOperatorCertificateResponse {
            certificate_pem: cert.pem(),
            intermediate_pems: Vec::new(),
            root_pem: self.ca.pem(),
            serial: "1f".into(),
            not_after: None,
            name: request.name,
            role: request.role,
            owner: if request.owner.is_empty() {
                "acme".into()
            } else {
                request.owner
            },
        }))
    }
}

/// A running fake service with a profile directory for operator "alice".
struct Env {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    recorded: Arc<Mutex<Recorded>>,
    _shutdown: oneshot::Sender<()>,
}

/// What one enrollctl run printed.
struct Outcome {
    exit: Exit,
    out: String,
    err: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", self.out))
    }

    fn json_lines(&self) -> Vec<Value> {
        self.out
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

impl Env {
    async fn start() -> Self {
        let ca = new_ca("fake oxroot root");
        let (server_cert, server_key) = leaf(
            &ca,
            &["127.0.0.1", "::1", "localhost"],
            "127.0.0.1",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (operator_cert, operator_key) =
            leaf(&ca, &[], "alice", ExtendedKeyUsagePurpose::ClientAuth);

        let dir = tempfile::tempdir().expect("tempdir");
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).expect("mkdir");
        std::fs::write(profile.join("root.pem"), ca.pem()).expect("writes");
        std::fs::write(profile.join("operator.pem"), operator_cert).expect("writes");
        std::fs::write(profile.join("operator.key"), operator_key).expect("writes");

        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(server_cert, server_key))
            .client_ca_root(Certificate::from_pem(ca.pem()));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let fake = Fake {
            recorded: Arc::clone(&recorded),
            ca: Arc::new(ca),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(OperatorServer::new(fake))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop.await;
            });
        tokio::spawn(server);
        Self {
            addr,
            dir,
            recorded,
            _shutdown: shutdown,
        }
    }

    fn service(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn profile(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8")
            .to_owned()
    }

    fn write(&self, name: &str, content: &str) -> String {
        std::fs::write(self.dir.path().join(name), content).expect("writes");
        self.path(name)
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs enrollctl with this service and alice's profile.
    async fn run(&self, args: &[&str]) -> Outcome {
        let profile = self.profile();
        self.run_with_profile(&profile, args).await
    }

    async fn run_with_profile(&self, profile: &Path, args: &[&str]) -> Outcome {
        let service = self.service();
        let profile = profile.to_str().expect("utf-8");
        let mut argv = vec!["enrollctl", "--service", &service, "--profile", profile];
        argv.extend_from_slice(args);
        run(&argv).await
    }
}

async fn run(argv: &[&str]) -> Outcome {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = match Cli::try_parse_from(argv) {
        Ok(cli) => ctl::run_cli(cli, Options::default(), &mut out, &mut err).await,
        Err(e) => panic!("{argv:?} does not parse: {e}"),
    };
    Outcome {
        exit,
        out: String::from_utf8(out).expect("utf-8"),
        err: String::from_utf8(err).expect("utf-8"),
    }
}

#[tokio::test]
async fn whoami_over_mutual_tls() {
    let env = Env::start().await;
    let human = env.run(&["whoami"]).await;
    assert_eq!(human.exit, Exit::Success, "{}", human.err);
    assert!(human.out.contains("name:"), "{}", human.out);
    assert!(human.out.contains("alice"), "{}", human.out);
    assert!(human.err.is_empty());

    let json = env.run(&["--json", "whoami"]).await;
    assert_eq!(json.exit, Exit::Success, "{}", json.err);
    let me = json.json();
    assert_eq!(me["name"], "alice");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["owner"], "acme");
}

#[tokio::test]
async fn a_service_outside_the_trust_anchor_is_unreachable() {
    let env = Env::start().await;
    let other = env.write("other-root.pem", &new_ca("someone else").pem());
    let outcome = env.run(&["--ca", &other, "whoami"]).await;
    assert_eq!(outcome.exit, Exit::Unavailable);
    assert!(outcome.out.is_empty());
    assert!(
        outcome
            .err
            .starts_with("enrollctl: cannot connect to https://127.0.0.1:"),
        "{}",
        outcome.err
    );
}

#[tokio::test]
async fn nothing_listening_is_exit_4() {
    let env = Env::start().await;
    let profile = env.profile();
    let profile = profile.to_str().expect("utf-8");
    // Port 9 (discard) on loopback: nothing listens there in a test environment.
    let outcome = run(&[
        "enrollctl",
        "--service",
        "https://127.0.0.1:9",
        "--profile",
        profile,
        "--json",
        "whoami",
    ])
    .await;
    assert_eq!(outcome.exit, Exit::Unavailable);
    let error: Value = serde_json::from_str(&outcome.err).expect("one JSON object");
    assert_eq!(error["error"]["exit_code"], 4);
}

#[tokio::test]
async fn policies_are_created_read_and_listed_across_pages() {
    let env = Env::start().await;
    let broker_ca = env.write("broker-ca.pem", &new_ca("broker").pem());
    for (name, extra) in [
        (
            "mq",
            vec![
                "--mosquitto-host",
                "broker.local",
                "--broker-ca",
                &broker_ca,
            ],
        ),
        ("mq2", vec!["--mosquitto-host", "b2", "--lifetime", "90d"]),
        ("az", vec!["--azure-id-scope", "0ne00000000"]),
    ] {
        let mut args = vec!["policy", "create", "--name", name];
        args.extend(extra);
        let outcome = env.run(&args).await;
        assert_eq!(outcome.exit, Exit::Success, "{name}: {}", outcome.err);
    }
    let stored = env.recorded().policies.clone();
    let Some(pb::policy::Params::Mosquitto(mq)) = &stored[0].params else {
        panic!("{stored:?}")
    };
    assert!(mq.broker_ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        stored[1].certificate_lifetime.as_ref().map(|d| d.seconds),
        Some(90 * 86_400)
    );

    let again = env
        .run(&["policy", "create", "--name", "mq", "--mosquitto-host", "x"])
        .await;
    assert_eq!(again.exit, Exit::Refused);
    assert!(
        again.err.contains("CreatePolicy: ALREADY_EXISTS"),
        "{}",
        again.err
    );

    let get = env.run(&["--json", "policy", "get", "mq2"]).await;
    assert_eq!(get.exit, Exit::Success, "{}", get.err);
    assert_eq!(get.json()["certificate_lifetime"], 90 * 86_400);
    assert_eq!(get.json()["mosquitto"]["host"], "b2");

    let missing = env.run(&["policy", "get", "nope"]).await;
    assert_eq!(missing.exit, Exit::Refused);
    assert_eq!(
        missing.err,
        "enrollctl: GetPolicy: NOT_FOUND: policy acme/nope not found\n"
    );

    // Three policies, two per page: the client must follow the token.
    let list = env.run(&["--json", "policy", "list"]).await;
    assert_eq!(list.exit, Exit::Success, "{}", list.err);
    let names: Vec<_> = list.json()["policies"]
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, ["mq", "mq2", "az"]);

    let mosquitto_only = env
        .run(&["--json", "policy", "list", "--kind", "mosquitto"])
        .await;
    assert_eq!(
        mosquitto_only.json()["policies"]
            .as_array()
            .expect("array")
            .len(),
        2
    );

    let table = env.run(&["policy", "list"]).await;
    assert!(table.out.starts_with("NAME "), "{}", table.out);
    assert_eq!(table.out.lines().count(), 4, "{}", table.out);
}

#[tokio::test]
async fn import_merges_local_and_service_rejections_in_line_order() {
    let env = Env::start().await;
    let a = device_id(1);
    let b = device_id(2);
    let file = env.write(
        "devices.jsonl",
        &format!("\"{a}\"\n{{\"device_id\": 5}}\n\"not-hex\"\n\n\"{b}\"\n\"{a}\"\n{{broken\n"),
    );
    let outcome = env.run(&["--json", "batch", "import", "b-1", &file]).await;
    // Rejections make the command fail after the report is printed.
    assert_eq!(outcome.exit, Exit::Refused, "{}", outcome.err);
    let report = outcome.json();
    assert_eq!(report["format"], "jsonl");
    assert_eq!(report["accepted"], 2);
    assert_eq!(report["rejected"], 4);
    assert_eq!(report["rejected_locally"], 2);
    let rows: Vec<(u64, &str, &str)> = report["rejections"]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().expect("line"),
                r["reason"].as_str().expect("reason"),
                r["source"].as_str().expect("source"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (2, "malformed", "enrollctl"),
            (3, "invalid-device-id", "service"),
            (6, "duplicate", "service"),
            (7, "malformed", "enrollctl"),
        ]
    );
    let error: Value = serde_json::from_str(&outcome.err).expect("JSON error");
    assert_eq!(error["error"]["exit_code"], 3);

    let human = env.run(&["batch", "import", "b-1", &file]).await;
    assert!(
        human.out.starts_with(
            "batch b-1: 2 accepted, 0 unchanged, 4 rejected (2 unreadable, 2 by the service)\nLINE"
        ),
        "{}",
        human.out
    );
    assert!(human.err.contains("4 record(s) rejected"), "{}", human.err);
}

#[tokio::test]
async fn large_imports_stream_in_chunks_of_at_most_1000() {
    let env = Env::start().await;
    let mut csv = String::from("station,device_id\r\n");
    for n in 0..2_500 {
        csv.push_str("s1,");
        csv.push_str(&device_id(n));
        csv.push_str("\r\n");
    }
    let file = env.write("devices.csv", &csv);
    let outcome = env.run(&["batch", "import", "b-1", &file]).await;
    assert_eq!(outcome.exit, Exit::Success, "{}", outcome.err);
    assert!(
        outcome.out.starts_with("batch b-1: 2500 accepted"),
        "{}",
        outcome.out
    );
    let recorded = env.recorded();
    assert_eq!(recorded.chunk_sizes, [1_000, 1_000, 500]);
    assert_eq!(recorded.import_calls, 1);
}

#[tokio::test]
async fn import_into_a_missing_batch_is_refused() {
    let env = Env::start().await;
    let file = env.write(
        "one.json",
        &format!("{{\"devices\": [\"{}\"]}}", device_id(1)),
    );
    let outcome = env.run(&["batch", "import", "b-404", &file]).await;
    assert_eq!(outcome.exit, Exit::Refused);
    assert!(
        outcome
            .err
            .contains("ImportDevices: NOT_FOUND: batch b-404 not found"),
        "{}",
        outcome.err
    );
}

#[tokio::test]
async fn batch_create_maps_rejections_back_to_file_lines() {
    let env = Env::start().await;
    let file = env.write(
        "initial.csv",
        &format!("device_id\n{}\n\nbad\n{}\n", device_id(1), device_id(2)),
    );
    let outcome = env
        .run(&[
            "--json",
            "batch",
            "create",
            "--name",
            "line 7",
            "--policy",
            "mq",
            "--request-id",
            "r-1",
            "--devices",
            &file,
        ])
        .await;
    assert_eq!(outcome.exit, Exit::Refused, "{}", outcome.err);
    let json = outcome.json();
    assert_eq!(json["batch"]["batch_id"], "b-1");
    assert_eq!(json["report"]["accepted"], 2);
    // "bad" is the 2nd id sent but sits on line 4 of the file.
    assert_eq!(json["report"]["rejections"][0]["line"], 4);
    let sent = env.recorded().create_batch.clone().expect("sent");
    assert_eq!(sent.request_id, "r-1");
    assert_eq!(sent.device_ids.len(), 3);

    let plain = env
        .run(&["batch", "create", "--name", "n", "--policy", "mq"])
        .await;
    assert_eq!(plain.exit, Exit::Success, "{}", plain.err);
    assert!(
        plain.out.starts_with("created batch b-1\n"),
        "{}",
        plain.out
    );
}

#[tokio::test]
async fn batches_are_listed_across_pages_and_read() {
    let env = Env::start().await;
    let list = env.run(&["--json", "batch", "list"]).await;
    assert_eq!(list.exit, Exit::Success, "{}", list.err);
    assert_eq!(list.json()["batches"].as_array().expect("array").len(), 3);
    let get = env.run(&["batch", "get", "b-1"]).await;
    assert!(
        get.out.contains("3 total: 2 awaiting registration"),
        "{}",
        get.out
    );
}

#[tokio::test]
async fn watch_prints_json_lines_or_progress_lines() {
    let env = Env::start().await;
    let json = env
        .run(&[
            "--json",
            "batch",
            "watch",
            "b-1",
            "--events",
            "--until-settled",
        ])
        .await;
    assert_eq!(json.exit, Exit::Success, "{}", json.err);
    let lines = json.json_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["progress"]["counts"]["onboarded"], 1);
    assert_eq!(lines[1]["device"]["kind"], "onboarded");
    assert_eq!(lines[2]["progress"]["counts"]["onboarded"], 3);

    let human = env.run(&["batch", "watch", "b-1", "--until-settled"]).await;
    assert_eq!(human.exit, Exit::Success, "{}", human.err);
    let text: Vec<_> = human.out.lines().collect();
    assert_eq!(text.len(), 3, "{}", human.out);
    assert!(
        text[0].starts_with("2023-11-14T22:13:20Z  3 total"),
        "{}",
        text[0]
    );
    assert!(
        text[2].starts_with("batch b-1 settled: 3 total"),
        "{}",
        text[2]
    );
}

#[tokio::test]
async fn devices_are_listed_read_revoked_and_moved() {
    let env = Env::start().await;
    let list = env
        .run(&["--json", "device", "list", "--batch", "b-1"])
        .await;
    assert_eq!(list.exit, Exit::Success, "{}", list.err);
    assert_eq!(list.json()["devices"].as_array().expect("array").len(), 5);

    let id = device_id(0);
    let get = env.run(&["device", "get", &id]).await;
    assert_eq!(get.exit, Exit::Success, "{}", get.err);
    assert!(get.out.contains("SERIAL"), "{}", get.out);

    let revoke = env
        .run(&[
            "--json",
            "device",
            "revoke",
            &id,
            "--reason",
            "key-compromise",
            "--comment",
            "stolen",
        ])
        .await;
    assert_eq!(revoke.exit, Exit::Success, "{}", revoke.err);
    let json = revoke.json();
    assert_eq!(json["revoked_serials"], serde_json::json!(["0a", "0b"]));
    assert_eq!(json["device"]["revocation"]["reason"], "key-compromise");
    assert_eq!(json["device"]["revocation"]["comment"], "stolen");

    let moved = env
        .run(&["device", "transfer", &id, "--owner", "globex"])
        .await;
    assert_eq!(moved.exit, Exit::Success, "{}", moved.err);
    assert!(
        moved.out.starts_with(&format!(
            "moved {id} to owner globex, no batch (unassigned); now reonboard-pending"
        )),
        "{}",
        moved.out
    );

    let unknown = env.run(&["device", "get", &device_id(9)]).await;
    assert_eq!(unknown.exit, Exit::Refused);
}

#[tokio::test]
async fn export_writes_plain_files_and_refuses_to_clobber() {
    let env = Env::start().await;
    let out = env.path("mq-export");
    let csr = env.write("broker.csr", "-----BEGIN CERTIFICATE REQUEST-----\n");
    let outcome = env
        .run(&[
            "--json",
            "export",
            "mq",
            "--out",
            &out,
            "--mosquitto-config-dir",
            "/srv/mq",
            "--broker-csr",
            &csr,
        ])
        .await;
    assert_eq!(outcome.exit, Exit::Success, "{}", outcome.err);
    assert_eq!(
        outcome.json()["artifacts"].as_array().expect("array").len(),
        4
    );
    let conf = std::fs::read_to_string(Path::new(&out).join("mosquitto.conf")).expect("written");
    assert_eq!(conf, "cafile /srv/mq/ca.pem\n");
    let sent = env.recorded().export.clone().expect("sent");
    assert_eq!(
        sent.mosquitto.expect("options").broker_csr_pem,
        "-----BEGIN CERTIFICATE REQUEST-----\n"
    );

    // A second export would overwrite: refused unless --force, and nothing is touched.
    let again = env.run(&["batch", "export", "mq", "--out", &out]).await;
    assert_eq!(again.exit, Exit::Failure);
    assert!(again.err.contains("already exists"), "{}", again.err);
    let forced = env.run(&["export", "mq", "--out", &out, "--force"]).await;
    assert_eq!(forced.exit, Exit::Success, "{}", forced.err);
    let conf = std::fs::read_to_string(Path::new(&out).join("mosquitto.conf")).expect("written");
    assert_eq!(conf, "cafile /etc/mosquitto/oxroot/ca.pem\n");
}

#[tokio::test]
async fn export_refuses_names_that_leave_the_directory() {
    let env = Env::start().await;
    let out = env.path("evil-export");
    let outcome = env.run(&["export", "evil", "--out", &out]).await;
    assert_eq!(outcome.exit, Exit::Failure);
    assert!(outcome.err.contains("../escape.pem"), "{}", outcome.err);
    // Checked before writing anything: not even the harmless file is there.
    assert!(!Path::new(&out).exists());
    assert!(!env.dir.path().join("escape.pem").exists());
}

#[tokio::test]
async fn crl_goes_to_stdout_a_file_or_json() {
    let env = Env::start().await;
    let pem = env.run(&["crl"]).await;
    assert_eq!(pem.exit, Exit::Success, "{}", pem.err);
    assert!(
        pem.out.starts_with("-----BEGIN X509 CRL-----"),
        "{}",
        pem.out
    );

    let path = env.path("crl.der");
    let der = env.run(&["crl", "--der", "--out", &path]).await;
    assert_eq!(der.exit, Exit::Success, "{}", der.err);
    assert_eq!(
        std::fs::read(&path).expect("written"),
        [0x30, 0x03, 0x02, 0x01, 0x07]
    );
    assert!(
        der.out.starts_with("wrote CRL #7 (2 revoked"),
        "{}",
        der.out
    );

    let json = env.run(&["--json", "crl", "--der"]).await;
    let json = json.json();
    assert_eq!(json["crl_der"], "3003020107");
    assert_eq!(json["format"], "der");
    assert_eq!(json["next_update"], "2023-11-14T22:13:20Z");
}

#[tokio::test]
async fn audit_query_pages_and_verify_reports_a_broken_chain() {
    let env = Env::start().await;
    let query = env
        .run(&[
            "--json",
            "audit",
            "query",
            "--since",
            "24h",
            "--action",
            "device.revoke",
        ])
        .await;
    assert_eq!(query.exit, Exit::Success, "{}", query.err);
    let json = query.json();
    assert_eq!(json["head_seq"], 42);
    assert_eq!(json["entries"].as_array().expect("array").len(), 3);
    assert_eq!(json["entries"][0]["details"]["reason"], "key-compromise");
    {
        let recorded = env.recorded();
        assert_eq!(recorded.audit_queries.len(), 2);
        // The filter, including the resolved --since, is identical on every page.
        assert_eq!(
            recorded.audit_queries[0].since,
            recorded.audit_queries[1].since
        );
        assert_eq!(recorded.audit_queries[1].action, "device.revoke");
        assert!(recorded.audit_queries[0].since.is_some());
    }

    let limited = env.run(&["--json", "audit", "query", "--limit", "1"]).await;
    assert_eq!(
        limited.json()["entries"].as_array().expect("array").len(),
        1
    );

    let ok = env.run(&["audit", "verify"]).await;
    assert_eq!(ok.exit, Exit::Success, "{}", ok.err);
    assert!(ok.out.starts_with("chain:"), "{}", ok.out);

    let broken = env
        .run(&["--json", "audit", "verify", "--start", "666"])
        .await;
    assert_eq!(broken.exit, Exit::Refused);
    assert_eq!(broken.json()["ok"], false);
    assert_eq!(broken.json()["first_bad_seq"], 667);
    let error: Value = serde_json::from_str(&broken.err).expect("JSON error");
    assert_eq!(
        error["error"]["message"],
        "audit chain broken at seq 667: hash mismatch"
    );
}

#[tokio::test]
async fn operator_issue_writes_a_working_profile_and_never_overwrites() {
    let env = Env::start().await;
    let new_profile = env.dir.path().join("bob");
    let dir = new_profile.to_str().expect("utf-8");
    let outcome = env
        .run(&[
            "--json",
            "operator",
            "issue",
            "--name",
            "bob",
            "--role",
            "operator",
            "--validity",
            "30d",
            "--out",
            dir,
        ])
        .await;
    assert_eq!(outcome.exit, Exit::Success, "{}", outcome.err);
    let json = outcome.json();
    assert_eq!(json["name"], "bob");
    assert_eq!(json["role"], "operator");
    assert!(!outcome.out.contains("PRIVATE KEY"));

    let key = std::fs::read_to_string(new_profile.join("operator.key")).expect("key");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(new_profile.join("operator.key"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The profile authenticates as bob.
    let me = env
        .run_with_profile(&new_profile, &["--json", "whoami"])
        .await;
    assert_eq!(me.exit, Exit::Success, "{}", me.err);
    assert_eq!(me.json()["name"], "bob");

    // Issuing into the same directory again is refused before the service is asked, and the
    // existing key is untouched.
    let again = env
        .run(&[
            "operator", "issue", "--name", "bob", "--role", "operator", "--out", dir,
        ])
        .await;
    assert_eq!(again.exit, Exit::Failure);
    assert!(again.err.contains("already exists"), "{}", again.err);
    assert_eq!(
        std::fs::read_to_string(new_profile.join("operator.key")).expect("key"),
        key
    );
}
