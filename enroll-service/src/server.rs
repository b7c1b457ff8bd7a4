//! Wiring: TLS, the two oxroot services, gRPC health and reflection, on one listener.
//!
//! ```text
//!  TcpListener ─TLS (rustls: server cert from our intermediate; client certs optional,
//!               verified against our root when present)
//!   ├─ oxroot.v1.DeviceEnrollment   devices: no client cert, signatures inside the calls
//!   ├─ oxroot.v1.Operator           operators: client cert required (checked per call)
//!   ├─ grpc.health.v1.Health
//!   └─ grpc.reflection.v1.ServerReflection (and v1alpha, for clients that speak only that)
//! ```
//!
//! The server's TLS key is generated at every start and never written: devices pin the root,
//! so a new server certificate from the same intermediate is as good as the old one. Every
//! connection passes through [`edge`] (limits and timeouts) before it reaches tonic.

pub mod crl_http;
mod edge;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use oxroot_proto::v1::device_enrollment_server::DeviceEnrollmentServer;
use oxroot_proto::v1::operator_server::OperatorServer;

use crate::pki::SignerError;
use crate::pki::{CertificateAuthority, PkiError, PrivateKeyPkcs8, Serial, ServerName, Validity};
use crate::service::{DeviceService, OperatorService, ServiceCore};

/// How long a server certificate issued at start-up is valid.
const SERVER_CERT_LIFETIME: time::Duration = time::Duration::days(30);
/// How often the CRL's freshness is checked: also the longest a revocation whose re-signing
/// failed (or was deferred, as for superseded certificates) stays off the CRL.
const CRL_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// How often health checks whether the registry still accepts writes.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The service's TLS identity: its certificate chain and key, and the root that operators'
/// client certificates must chain to.
pub struct ServerTls {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyPkcs8,
    root: CertificateDer<'static>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("key_pem", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Issues a fresh server certificate for `names` from the CA.
    ///
    /// # Errors
    /// [`PkiError`] from the CA.
    pub fn issue(ca: &CertificateAuthority, names: &[ServerName]) -> Result<Self, PkiError> {
        let now = time::OffsetDateTime::now_utc();
        let credentials = ca.issue_server_certificate(
            names,
            Validity::new(now - time::Duration::minutes(5), now + SERVER_CERT_LIFETIME)?,
            Serial::random()?,
        )?;
        Ok(Self {
            chain: credentials
                .chain_der
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            key: credentials.private_key,
            root: CertificateDer::from(ca.root_der().to_vec()),
        })
    }

    fn rustls_config(&self) -> Result<rustls::ServerConfig, rustls::Error> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.der().to_vec()));
        edge::tls_config(self.chain.clone(), key, self.root.clone())
    }
}

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// rustls refused the server's certificate or key.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// Sets the health of both services and of the server as a whole.
async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    reporter
        .set_service_status(
            <DeviceEnrollmentServer<DeviceService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    reporter
        .set_service_status(
            <OperatorServer<OperatorService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    reporter.set_service_status("", status).await;
}

/// Serves until `shutdown` resolves.
///
/// # Errors
/// The TLS configuration or the transport failed.
pub async fn serve(
    listener: TcpListener,
    core: Arc<ServiceCore>,
    tls: &ServerTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = core.config().clone();
    let incoming = edge::accept(listener, Arc::new(tls.rustls_config()?), core.clone());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<DeviceEnrollmentServer<DeviceService>>()
        .await;
    health_reporter
        .set_serving::<OperatorServer<OperatorService>>()
        .await;
    // Reflection in both versions: v1 is the standard, and v1alpha is the only one that some
    // stock clients speak (grpcio-reflection's Python client, older grpcurl).
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(oxroot_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    #[allow(
        clippy::expect_used,
        reason = "the descriptor sets are compiled in and tested"
    )]
    let (reflection, reflection_v1alpha) = (
        reflection_builder()
            .build_v1()
            .expect("embedded descriptor sets are valid"),
        reflection_builder()
            .build_v1alpha()
            .expect("embedded descriptor sets are valid"),
    );

    let device = DeviceEnrollmentServer::new(DeviceService::new(core.clone()))
        .max_decoding_message_size(config.max_device_message);
    let operator = OperatorServer::new(OperatorService::new(core.clone()))
        .max_decoding_message_size(config.max_operator_message);

    let _health_monitor = AbortOnDrop(spawn_health_monitor(core.clone(), health_reporter));

    // CRLs are checked often enough that each is re-signed well before half its validity
    // has passed, whatever the configured validity.
    let crl_core = core.clone();
    let crl_check = (core.crls().validity() / 8).clamp(Duration::from_secs(1), CRL_CHECK_INTERVAL);
    let _crl_refresh = AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(crl_check);
        loop {
            tick.tick().await;
            match crl_core.crls().refresh_all().await {
                Ok(failures) => {
                    for (issuer, e) in failures {
                        tracing::warn!(%issuer, error = %e, "could not refresh a CRL");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not list the CAs to refresh CRLs"),
            }
        }
    }));

    // Superseded credentials whose grace ended are revoked on a schedule too.
    let _sweeper = AbortOnDrop(crate::service::supersede::spawn_sweeper(core.clone()));

    let (ping_interval, ping_timeout) = config.http2_keepalive;
    // The server's accept loop runs on a runtime worker, not in the caller's future: under
    // `#[tokio::main]` that is the main thread, which every new connection would wake only
    // to hand the connection's task back to a worker.
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(ping_interval))
            .http2_keepalive_timeout(Some(ping_timeout))
            .max_concurrent_streams(Some(1024))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(device)
            .add_service(operator)
            .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown),
    );
    // The background tasks end with this call (their guards drop here).
    Ok(AbortOnDrop(server).join().await?)
}

/// Health follows the registry and the CA key store, both ways. An embedded registry whose
/// write failed stays failed until a restart (what was applied but not synced must not be
/// served); a database registry is failed while the database is unreachable and recovers
/// with it. While the key store is away (a PKCS#11 token removed, its module failing)
/// signing calls answer UNAVAILABLE. Either way health says NOT_SERVING meanwhile, so that
/// orchestrators and load balancers send traffic elsewhere.
fn spawn_health_monitor(
    core: Arc<ServiceCore>,
    health_reporter: tonic_health::server::HealthReporter,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        let (mut registry_ok, mut keys_ok) = (true, true);
        loop {
            tick.tick().await;
            let registry_now = !core.registry().failed();
            let probe_core = core.clone();
            let keys = tokio::task::spawn_blocking(move || probe_core.authorities().probe())
                .await
                .unwrap_or_else(|e| Err(SignerError::Failed(e.to_string())));
            match (&keys, keys_ok) {
                (Err(e), true) => tracing::error!(error = %e, "CA key store unavailable"),
                (Ok(()), false) => tracing::info!("CA key store back"),
                _ => {}
            }
            match (registry_now, registry_ok) {
                (false, true) => tracing::error!("registry unavailable"),
                (true, false) => tracing::info!("registry back"),
                _ => {}
            }
            let keys_now = keys.is_ok();
            if (registry_now && keys_now) != (registry_ok && keys_ok) {
                let status = if registry_now && keys_now {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                tracing::info!(?status, "health");
                set_health(&health_reporter, status).await;
            }
            (registry_ok, keys_ok) = (registry_now, keys_now);
        }
    })
}

/// A spawned task that ends with the future awaiting it: a `serve` that is dropped stops
/// its server instead of leaving it running detached.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<Result<T, tonic::transport::Error>> {
    /// The task's result; its panic is the caller's, and a task cancelled because the runtime
    /// is shutting down has stopped like any other.
    async fn join(mut self) -> Result<T, tonic::transport::Error>
    where
        T: Default,
    {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(T::default()),
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A server running in this process (tests, `demo`).
#[derive(Debug)]
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The root clients must pin.
    pub root_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl RunningServer {
    /// Binds `127.0.0.1:0` and serves in a task.
    ///
    /// # Errors
    /// Binding or certificate issue failed.
    pub async fn start(
        core: Arc<ServiceCore>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tls = ServerTls::issue(core.ca(), &ServerName::loopback())?;
        let root_pem = core.ca().root_pem();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, core, &tls, async move {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Self {
            addr,
            root_pem,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `https://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops serving and waits for the server task.
    ///
    /// # Errors
    /// The server task failed.
    pub async fn stop(mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
