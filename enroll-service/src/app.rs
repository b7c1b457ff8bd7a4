//! What the `enroll-service` binary does: `init` a state directory, `serve` it, or run the
//! self-contained `demo`. `main.rs` only parses arguments.
//!
//! ```text
//!  <state-dir>/
//!    config.toml            listen addresses, server names, limits
//!    ca/                    root.pem, intermediate.pem, and per key *.key.enc (sealed with the
//!                           passphrase) or *.key.uri (its PKCS#11 URI: no secret)
//!    registry/              sled
//!    admin/                 the first platform admin's operator credential (key mode 0600)
//! ```

pub mod demo;

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use crate::pki::{
    CaNames, CertificateAuthority, DEFAULT_PBKDF2_ITERATIONS, KeyBackend, OperatorKey, Passphrase,
    Role, Sealing, Serial, ServerName, Validity, passphrase_from,
};
use crate::server::{ServerTls, serve as serve_grpc};
use crate::service::{ServiceConfig, ServiceCore};
use crate::store::{PostgresConfig, PostgresRegistry, Registry, SledRegistry, SledTuning};

/// Environment variable holding the CA key passphrase.
pub const PASSPHRASE_ENV: &str = "OXROOT_CA_PASSPHRASE";

/// A boxed error for the binary's top level.
pub type AppError = Box<dyn std::error::Error + Send + Sync>;

/// `config.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address (devices and operators).
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address; unset disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Plain-HTTP CRL endpoint (`/crl/<issuer id>.crl`) listen address; unset disables it.
    /// Brokers and the CRL distribution points of policies with a `crl_base_url` reach it.
    #[serde(default)]
    pub crl_listen: Option<SocketAddr>,
    /// Names in the service's TLS certificate (IP addresses or DNS names).
    pub server_names: Vec<String>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Where CA keys live.
    #[serde(default)]
    pub ca: CaConfig,
    /// Where the registry lives.
    #[serde(default)]
    pub registry: RegistryConfig,
}

/// The `[registry]` table: the embedded sled registry in the state directory (the default:
/// one process), or a PostgreSQL database that several `serve` replicas share.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `sled` or `postgres`.
    #[serde(default)]
    pub backend: RegistryBackend,
    /// `postgres` only: a libpq-style connection string, e.g.
    /// `host=db.internal port=5432 user=oxroot dbname=oxroot`. No password here: see
    /// `postgres_password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// `postgres` only: a file whose first line is the database password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_password_file: Option<PathBuf>,
    /// `postgres` only: connections per replica (reads and the group-commit writer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<usize>,
    /// `sled` only: its page cache in MiB (16 to 65,536; default 64). More keeps more of a
    /// large registry decoded in memory, for a little less CPU per onboarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sled_cache_mib: Option<u64>,
    /// `sled` only: how long, in µs, the writer waits for more changes to join a group
    /// commit while waiting pays off (0 to 100,000; default 2,000; 0 never waits). Longer
    /// waits spread each commit's cost over more devices, for that much more latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_delay_us: Option<u64>,
}

/// The registry backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryBackend {
    /// sled in `<state-dir>/registry`.
    #[default]
    Sled,
    /// A PostgreSQL database shared by every replica.
    Postgres,
}

impl RegistryConfig {
    /// The PostgreSQL configuration, with the password read from its file.
    ///
    /// # Errors
    /// No connection string, or an unreadable password file.
    pub fn postgres_config(&self) -> Result<PostgresConfig, AppError> {
        let url = self
            .postgres
            .clone()
            .ok_or("[registry] backend = \"postgres\" needs `postgres`, a connection string")?;
        let parsed: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("[registry] postgres does not parse: {e}"))?;
        if parsed.get_password().is_some() {
            return Err(
                "[registry] postgres must not carry a password: use postgres_password_file".into(),
            );
        }
        let password = match &self.postgres_password_file {
            Some(file) => Some(
                fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(PostgresConfig {
            url,
            password,
            pool_size: self.pool_size.unwrap_or(16),
        })
    }

    /// The embedded registry's tuning: the configured values, each checked, or the defaults.
    ///
    /// # Errors
    /// A value out of its range.
    pub fn sled_tuning(&self) -> Result<SledTuning, AppError> {
        let mut tuning = SledTuning::default();
        match self.sled_cache_mib {
            None => {}
            Some(mib @ 16..=65_536) => tuning.cache_bytes = mib * 1024 * 1024,
            Some(mib) => {
                return Err(
                    format!("[registry] sled_cache_mib must be 16 to 65536, not {mib}").into(),
                );
            }
        }
        match self.commit_delay_us {
            None => {}
            Some(us @ 0..=100_000) => tuning.commit_delay = Duration::from_micros(us),
            Some(us) => {
                return Err(
                    format!("[registry] commit_delay_us must be 0 to 100000, not {us}").into(),
                );
            }
        }
        Ok(tuning)
    }

    /// Opens the configured registry: sled under `state_dir`, or the PostgreSQL database
    /// (whose schema must be current: `enroll-service migrate`).
    ///
    /// # Errors
    /// The store's, when it cannot be opened or reached.
    pub async fn open(&self, state_dir: &Path) -> Result<Arc<dyn Registry>, AppError> {
        Ok(match self.backend {
            RegistryBackend::Sled => {
                SledRegistry::open_tuned(&state_dir.join("registry"), self.sled_tuning()?)?
            }
            RegistryBackend::Postgres => {
                PostgresRegistry::connect(&self.postgres_config()?).await?
            }
        })
    }
}

/// The `[ca]` table: where new CA keys are generated, and the CRLs' lifetime. It names the
/// token and where its PIN comes from, never the PIN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// `sealed` (software keys sealed under the CA passphrase) or `pkcs11`.
    #[serde(default)]
    pub backend: CaBackend,
    /// The token (`pkcs11` only): an RFC 7512 URI with `module-path` and `pin-source`, e.g.
    /// `pkcs11:token=oxroot?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/oxroot/pin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11_token: Option<String>,
    /// Sessions kept open on the token (`pkcs11` only): at most this many signatures at once.
    #[serde(default = "default_sessions")]
    pub pkcs11_sessions: usize,
    /// How long each CRL is valid (nextUpdate − thisUpdate), seconds; at least 10. Every CRL
    /// is re-signed when half of it has passed, and at once after a revocation.
    #[serde(default = "default_crl_validity")]
    pub crl_validity_secs: u64,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            backend: CaBackend::default(),
            pkcs11_token: None,
            pkcs11_sessions: default_sessions(),
            crl_validity_secs: default_crl_validity(),
        }
    }
}

fn default_crl_validity() -> u64 {
    ServiceConfig::default().crl_validity.as_secs()
}

/// The key backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaBackend {
    /// Software keys sealed under the CA passphrase.
    #[default]
    Sealed,
    /// Keys generated inside a PKCS#11 token.
    Pkcs11,
}

fn default_sessions() -> usize {
    4
}

/// Where `init` puts the platform CA's keys (and where later CA keys go).
#[derive(Debug)]
pub enum CaKeys {
    /// Software keys sealed under the passphrase.
    Sealed(Passphrase),
    /// Keys generated in the token the URI names (see [`CaConfig::pkcs11_token`]).
    Pkcs11 {
        /// The token's URI.
        token: String,
        /// Sessions to keep open.
        sessions: usize,
    },
}

impl CaConfig {
    /// The key backend this table describes. `passphrase` opens sealed keys: required for the
    /// `sealed` backend, and with `pkcs11` only for keys sealed before the token was
    /// configured.
    ///
    /// # Errors
    /// A `pkcs11` backend with no or a bad token URI, a token that cannot be opened, or a
    /// `sealed` backend without a passphrase.
    pub fn key_backend(&self, passphrase: Option<Passphrase>) -> Result<KeyBackend, AppError> {
        let sealing = passphrase.map(|passphrase| Sealing {
            passphrase,
            iterations: DEFAULT_PBKDF2_ITERATIONS,
        });
        match self.backend {
            CaBackend::Sealed => {
                let sealing = sealing.ok_or_else(|| {
                    format!("no CA passphrase: set {PASSPHRASE_ENV} or pass --passphrase-file")
                })?;
                Ok(KeyBackend::sealed(sealing.passphrase, sealing.iterations))
            }
            CaBackend::Pkcs11 => {
                let uri = self.pkcs11_token.as_deref().ok_or(
                    "[ca] backend = \"pkcs11\" needs pkcs11_token, the token's RFC 7512 URI",
                )?;
                Ok(KeyBackend::pkcs11(
                    open_token(uri, self.pkcs11_sessions)?,
                    sealing,
                ))
            }
        }
    }
}

/// Opens a PKCS#11 token by its URI.
///
/// # Errors
/// A URI that does not parse (or holds a PIN), a module or token that cannot be opened.
pub fn open_token(uri: &str, sessions: usize) -> Result<Arc<oxroot_hsm::Token>, AppError> {
    let parsed: oxroot_hsm::Pkcs11Uri = uri.parse().map_err(|e| format!("pkcs11_token: {e}"))?;
    if parsed.object().is_some() || parsed.id().is_some() {
        return Err(format!(
            "pkcs11_token names a key ({parsed}); name the token only: new keys are made in it"
        )
        .into());
    }
    Ok(oxroot_hsm::Token::open(&parsed, sessions.max(1))
        .map_err(|e| format!("cannot open the PKCS#11 token: {e}"))?)
}

/// The `[limits]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Challenge lifetime, seconds.
    pub challenge_ttl_secs: u64,
    /// Challenges per device and client address (IPv6: per /64) per minute.
    pub challenges_per_minute: u32,
    /// Challenges per device per minute, from all addresses together.
    pub challenges_per_device_per_minute: u32,
    /// Concurrent device streams per client address.
    pub max_streams_per_peer: usize,
    /// Concurrent calls and streams per operator.
    pub max_calls_per_operator: usize,
    /// Refusals of unregistered DeviceIds audited per client address per minute.
    pub audited_unknown_refusals_per_minute: u32,
    /// Signed Status requests verified per client address (IPv6: per /64) per minute.
    pub status_proofs_per_minute: u32,
    /// Largest device message, bytes.
    pub max_device_message: usize,
    /// Largest operator message, bytes.
    pub max_operator_message: usize,
    /// Open connections per client address (IPv6: per /64).
    pub max_connections_per_peer: usize,
    /// Longest TLS handshake, seconds.
    pub tls_handshake_timeout_secs: u64,
    /// Longest wait for the HTTP/2 preface after the handshake, seconds.
    pub http2_preface_timeout_secs: u64,
    /// The CRL endpoint's longest wait for a request's headers, seconds (a connection lives
    /// at most three times this).
    pub crl_request_timeout_secs: u64,
    /// TCP keepalive idle time, seconds.
    pub tcp_keepalive_secs: u64,
    /// HTTP/2 PING interval on idle connections, seconds.
    pub http2_keepalive_interval_secs: u64,
    /// How long an HTTP/2 PING may go unanswered before the connection is closed, seconds.
    pub http2_keepalive_timeout_secs: u64,
    /// How often superseded certificates whose policy grace ended are looked for and revoked,
    /// seconds: also the longest such a certificate outlives its grace.
    pub superseded_sweep_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let defaults = ServiceConfig::default();
        Self {
            challenge_ttl_secs: defaults.challenge_ttl.as_secs(),
            challenges_per_minute: defaults.challenges_per_window,
            challenges_per_device_per_minute: defaults.challenges_per_device_window,
            max_streams_per_peer: defaults.max_streams_per_peer,
            max_calls_per_operator: defaults.max_calls_per_operator,
            audited_unknown_refusals_per_minute: defaults.audited_unknown_refusals_per_peer,
            status_proofs_per_minute: defaults.status_proofs_per_peer,
            max_device_message: defaults.max_device_message,
            max_operator_message: defaults.max_operator_message,
            max_connections_per_peer: defaults.max_connections_per_peer,
            tls_handshake_timeout_secs: defaults.tls_handshake_timeout.as_secs(),
            http2_preface_timeout_secs: defaults.http2_preface_timeout.as_secs(),
            crl_request_timeout_secs: defaults.crl_request_timeout.as_secs(),
            tcp_keepalive_secs: defaults.tcp_keepalive.as_secs(),
            http2_keepalive_interval_secs: defaults.http2_keepalive.0.as_secs(),
            http2_keepalive_timeout_secs: defaults.http2_keepalive.1.as_secs(),
            superseded_sweep_secs: defaults.superseded_sweep_interval.as_secs(),
        }
    }
}

impl Config {
    fn defaults() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            crl_listen: None,
            server_names: vec!["127.0.0.1".into(), "::1".into(), "localhost".into()],
            limits: Limits::default(),
            ca: CaConfig::default(),
            registry: RegistryConfig::default(),
        }
    }

    fn service_config(&self) -> ServiceConfig {
        ServiceConfig {
            challenge_ttl: Duration::from_secs(self.limits.challenge_ttl_secs.max(1)),
            challenges_per_window: self.limits.challenges_per_minute.max(1),
            challenges_per_device_window: self.limits.challenges_per_device_per_minute.max(1),
            rate_window: Duration::from_secs(60),
            max_streams_per_peer: self.limits.max_streams_per_peer.max(1),
            max_calls_per_operator: self.limits.max_calls_per_operator.max(1),
            audited_unknown_refusals_per_peer: self.limits.audited_unknown_refusals_per_minute,
            status_proofs_per_peer: self.limits.status_proofs_per_minute.max(1),
            max_device_message: self.limits.max_device_message,
            max_operator_message: self.limits.max_operator_message,
            max_connections_per_peer: self.limits.max_connections_per_peer.max(1),
            tls_handshake_timeout: Duration::from_secs(
                self.limits.tls_handshake_timeout_secs.max(1),
            ),
            http2_preface_timeout: Duration::from_secs(
                self.limits.http2_preface_timeout_secs.max(1),
            ),
            crl_request_timeout: Duration::from_secs(self.limits.crl_request_timeout_secs.max(1)),
            tcp_keepalive: Duration::from_secs(self.limits.tcp_keepalive_secs.max(1)),
            http2_keepalive: (
                Duration::from_secs(self.limits.http2_keepalive_interval_secs.max(1)),
                Duration::from_secs(self.limits.http2_keepalive_timeout_secs.max(1)),
            ),
            crl_validity: Duration::from_secs(self.ca.crl_validity_secs.max(10)),
            superseded_sweep_interval: Duration::from_secs(
                self.limits.superseded_sweep_secs.max(1),
            ),
            ..ServiceConfig::default()
        }
    }

    fn server_names(&self) -> Vec<ServerName> {
        self.server_names
            .iter()
            .map(|name| {
                name.parse()
                    .map_or_else(|_| ServerName::Dns(name.clone()), ServerName::Ip)
            })
            .collect()
    }
}

/// Reads the CA passphrase from [`PASSPHRASE_ENV`] or the file.
///
/// # Errors
/// Neither is set, the file cannot be read, or the passphrase is empty.
pub fn load_passphrase(file: Option<&Path>) -> Result<Passphrase, AppError> {
    load_passphrase_if_given(file)?.ok_or_else(|| {
        format!("no CA passphrase: set {PASSPHRASE_ENV} or pass --passphrase-file").into()
    })
}

/// The CA passphrase if [`PASSPHRASE_ENV`] or the file gives one (a `pkcs11` backend needs
/// one only for keys sealed before the token was configured).
///
/// # Errors
/// The file cannot be read, or the passphrase is empty.
pub fn load_passphrase_if_given(file: Option<&Path>) -> Result<Option<Passphrase>, AppError> {
    let env = std::env::var(PASSPHRASE_ENV).ok();
    let contents = match file {
        Some(path) => Some(
            fs::read_to_string(path)
                .map_err(|e| format!("cannot read passphrase file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    if env.is_none() && contents.is_none() {
        return Ok(None);
    }
    Ok(Some(passphrase_from(env, contents)?))
}

/// An existing intermediate to import at `init`.
#[derive(Clone, Debug)]
pub struct ImportedIntermediate {
    /// Intermediate certificate PEM file.
    pub certificate: PathBuf,
    /// Its PKCS#8 private key PEM file.
    pub key: PathBuf,
    /// The root certificate PEM file.
    pub root: PathBuf,
}

/// Writes a file of the first admin's profile, refusing to overwrite one: `mode` is its
/// permission bits from creation on.
fn write_profile_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), AppError> {
    oxroot_files::write_atomically(path, contents, mode, oxroot_files::Existing::Refuse)
        .map_err(|e| format!("cannot create {}: {e}", path.display()).into())
}

/// Makes the platform CA for `init` in `ca_dir`: new, or an imported intermediate (sealed keys
/// only), its keys sealed or generated in the token; a token goes into `config`.
fn create_platform_ca(
    ca_dir: &Path,
    keys: &CaKeys,
    names: &CaNames,
    import: Option<ImportedIntermediate>,
    config: &mut Config,
    now: time::OffsetDateTime,
) -> Result<CertificateAuthority, AppError> {
    let ca = match (keys, import) {
        (CaKeys::Sealed(passphrase), Some(import)) => {
            let read = |p: &Path| {
                fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let key = zeroize::Zeroizing::new(read(&import.key)?);
            let ca = CertificateAuthority::import_intermediate(
                &read(&import.certificate)?,
                &key,
                &read(&import.root)?,
            )?;
            fs::create_dir_all(ca_dir)?;
            ca.save(ca_dir, passphrase)?;
            ca
        }
        (CaKeys::Sealed(passphrase), None) => {
            let ca = CertificateAuthority::initialise(names, now)?;
            fs::create_dir_all(ca_dir)?;
            ca.save(ca_dir, passphrase)?;
            ca
        }
        (CaKeys::Pkcs11 { .. }, Some(_)) => {
            return Err(
                "an imported intermediate's key is a file: import it with the sealed \
                        backend, or have the HSM officer make the key in the token and sign \
                        its CSR"
                    .into(),
            );
        }
        (CaKeys::Pkcs11 { token, sessions }, None) => {
            config.ca = CaConfig {
                backend: CaBackend::Pkcs11,
                pkcs11_token: Some(token.clone()),
                pkcs11_sessions: *sessions,
                ..CaConfig::default()
            };
            let backend = config.ca.key_backend(None)?;
            let (root_key, _) = backend.generate("platform/root")?;
            let (issuing_key, _) = backend.generate("platform/issuing")?;
            let ca = CertificateAuthority::initialise_with(names, now, root_key, issuing_key)?;
            fs::create_dir_all(ca_dir)?;
            ca.save_with(ca_dir, None)?;
            ca
        }
    };
    Ok(ca)
}

/// `enroll-service init`: creates (or imports) the CA, the config and the first platform admin
/// credential in `state_dir`.
///
/// # Errors
/// The directory is already initialised, inputs are unreadable or invalid, or writing fails.
#[allow(
    clippy::too_many_arguments,
    reason = "one per init flag; a struct would only rename them"
)]
pub async fn init(
    state_dir: &Path,
    keys: &CaKeys,
    organisation: Option<String>,
    registry_config: &RegistryConfig,
    import: Option<ImportedIntermediate>,
    admin_name: &str,
    admin_out: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let ca_dir = state_dir.join("ca");
    if ca_dir.exists() {
        return Err(format!(
            "{} is already initialised (found {}); refusing to overwrite a CA",
            state_dir.display(),
            ca_dir.display()
        )
        .into());
    }
    // The admin profile goes to the state directory unless the operator takes it elsewhere
    // (off the server). Checked before anything is created, so a clash leaves nothing behind.
    let admin_dir = admin_out.map_or_else(|| state_dir.join("admin"), Path::to_path_buf);
    refuse_existing_profile(&admin_dir)?;
    let now = time::OffsetDateTime::now_utc();
    let mut names = CaNames::default();
    if let Some(organisation) = organisation {
        names.organisation = organisation;
    }
    let mut config = Config::defaults();
    config.registry = registry_config.clone();
    // The database first: a state directory whose registry cannot be reached is no use.
    if registry_config.backend == RegistryBackend::Postgres {
        crate::store::postgres::migrate(&registry_config.postgres_config()?).await?;
    }
    let ca = create_platform_ca(&ca_dir, keys, &names, import, &mut config, now)?;
    let config_file = state_dir.join("config.toml");
    oxroot_files::write_atomically(
        &config_file,
        toml::to_string_pretty(&config)?.as_bytes(),
        oxroot_files::PUBLIC,
        oxroot_files::Existing::Replace,
    )
    .map_err(|e| format!("cannot write {}: {e}", config_file.display()))?;

    fs::create_dir_all(&admin_dir)?;
    let admin = ca.issue_operator_certificate(
        &OperatorKey::Generate,
        admin_name,
        crate::pki::PLATFORM_OWNER,
        Role::Admin,
        Validity::starting(now, time::Duration::days(90))?,
        Serial::random()?,
    )?;
    // On record before its key is written: only recorded operator certificates authenticate.
    let registry = registry_config.open(state_dir).await?;
    crate::service::record_operator_certificate(
        registry.as_ref(),
        &admin.certificate.der,
        "system:init",
    )
    .await?;
    write_profile(&admin_dir, &admin, &ca)?;

    writeln!(out, "initialised {}", state_dir.display())?;
    writeln!(
        out,
        "  root CA:        {}",
        ca_dir.join("root.pem").display()
    )?;
    match keys {
        CaKeys::Sealed(_) => writeln!(
            out,
            "  CA keys:        encrypted in {} (root key {})",
            ca_dir.display(),
            if ca.has_root_key() {
                "included: move root.key.enc offline"
            } else {
                "not held"
            }
        )?,
        CaKeys::Pkcs11 { .. } => writeln!(
            out,
            "  CA keys:        in the PKCS#11 token: {}",
            ca.key().location()
        )?,
    }
    writeln!(
        out,
        "  platform admin: {} (name {admin_name}, owner *)",
        admin_dir.display()
    )?;
    writeln!(
        out,
        "  config:         {}",
        state_dir.join("config.toml").display()
    )?;
    Ok(())
}

/// The files of an operator profile directory (as `enrollctl --profile` reads them).
const PROFILE_FILES: [&str; 3] = ["operator.key", "operator.pem", "root.pem"];

/// Refuses a directory that already holds any file of an operator profile.
fn refuse_existing_profile(dir: &Path) -> Result<(), AppError> {
    for file in PROFILE_FILES {
        let path = dir.join(file);
        if path.exists() {
            return Err(format!(
                "{} already exists; refusing to overwrite an operator profile",
                path.display()
            )
            .into());
        }
    }
    Ok(())
}

/// Writes an operator profile: the key owner-only, the chain, the root.
fn write_profile(
    dir: &Path,
    operator: &crate::pki::OperatorCredentials,
    ca: &CertificateAuthority,
) -> Result<(), AppError> {
    let key = operator
        .private_key
        .as_ref()
        .ok_or("the CA did not return the generated operator key")?;
    let [key_file, chain_file, root_file] = PROFILE_FILES;
    write_profile_file(
        &dir.join(key_file),
        key.to_pem().as_bytes(),
        oxroot_files::PRIVATE,
    )?;
    write_profile_file(
        &dir.join(chain_file),
        format!("{}{}", operator.certificate.pem, ca.chain_pems().concat()).as_bytes(),
        oxroot_files::PUBLIC,
    )?;
    write_profile_file(
        &dir.join(root_file),
        ca.root_pem().as_bytes(),
        oxroot_files::PUBLIC,
    )?;
    Ok(())
}

/// `enroll-service ca show`: the platform CA, where each of its keys lives, where new keys go,
/// and whether the key store answers.
///
/// # Errors
/// The config or the CA cannot be read, or the key store cannot be opened.
pub fn ca_show(
    state_dir: &Path,
    config: Option<&Path>,
    passphrase: Option<Passphrase>,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let config = load_config(state_dir, config)?;
    let keys = config.ca.key_backend(passphrase)?;
    let ca = CertificateAuthority::load_with(&state_dir.join("ca"), &keys)?;
    writeln!(out, "new CA keys:       {}", keys.describe())?;
    writeln!(
        out,
        "platform CA:       {} (valid until {})",
        ca.subject(),
        ca.not_after()
    )?;
    writeln!(out, "  its key:         {}", ca.key().location())?;
    writeln!(
        out,
        "  root key:        {}",
        ca.root_key()
            .map_or_else(|| "not held (offline)".to_owned(), |k| k.location())
    )?;
    let probe = keys.probe().and_then(|()| ca.key().probe());
    match probe {
        Ok(()) => writeln!(out, "key store:         answers")?,
        Err(e) => writeln!(out, "key store:         UNAVAILABLE: {e}")?,
    }
    writeln!(
        out,
        "owners' CAs:       enrollctl owner list / owner get NAME (key locations per CA)"
    )?;
    Ok(())
}

/// `enroll-service ca use-pkcs11 | use-sealed`: where new CA keys are generated from now on
/// (owners' CAs, rotations). The token is opened and probed before the config changes; keys
/// made before stay where they are and keep opening from there.
///
/// # Errors
/// The config cannot be read or written, or the token cannot be opened.
pub fn ca_use(
    state_dir: &Path,
    config_path: Option<&Path>,
    keys: CaKeys,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let mut config = load_config(state_dir, config_path)?;
    config.ca = match keys {
        CaKeys::Pkcs11 { token, sessions } => {
            open_token(&token, sessions)?
                .probe()
                .map_err(|e| format!("the token does not answer: {e}"))?;
            CaConfig {
                backend: CaBackend::Pkcs11,
                pkcs11_token: Some(token),
                pkcs11_sessions: sessions,
                ..config.ca
            }
        }
        CaKeys::Sealed(_) => CaConfig {
            backend: CaBackend::Sealed,
            pkcs11_token: None,
            ..config.ca
        },
    };
    let path = config_path.map_or_else(|| state_dir.join("config.toml"), Path::to_path_buf);
    oxroot_files::write_atomically(
        &path,
        toml::to_string_pretty(&config)?.as_bytes(),
        oxroot_files::PUBLIC,
        oxroot_files::Existing::Replace,
    )
    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    writeln!(
        out,
        "new CA keys go to {} (restart the service to apply)",
        config
            .ca
            .pkcs11_token
            .as_deref()
            .unwrap_or("sealed files, under the CA passphrase")
    )?;
    Ok(())
}

/// Loads `config.toml` from the state directory, or `config` if given.
///
/// # Errors
/// Unreadable or invalid TOML.
pub fn load_config(state_dir: &Path, config: Option<&Path>) -> Result<Config, AppError> {
    let path = config.map_or_else(|| state_dir.join("config.toml"), Path::to_path_buf);
    let text = fs::read_to_string(&path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()).into())
}

/// Opens the CA and registry of a state directory and builds the shared service state.
///
/// # Errors
/// Wrong passphrase, missing files, or a registry that cannot be opened.
pub async fn open_state(
    state_dir: &Path,
    passphrase: Option<Passphrase>,
    config: &Config,
) -> Result<Arc<ServiceCore>, AppError> {
    // Owners' CA keys live where the platform's do: sealed under the same passphrase, or in
    // the configured token.
    let keys = config.ca.key_backend(passphrase)?;
    let ca = CertificateAuthority::load_with(&state_dir.join("ca"), &keys)?;
    let registry = config.registry.open(state_dir).await?;
    Ok(ServiceCore::with_keys(
        registry,
        Arc::new(ca),
        keys,
        config.service_config(),
        Arc::new(Metrics::new()),
    ))
}

/// `enroll-service migrate`: brings the configured PostgreSQL database's schema to this
/// build's version.
///
/// # Errors
/// The registry is not PostgreSQL, or the migration fails (nothing of it stays).
pub async fn migrate(config: &Config, out: &mut dyn Write) -> Result<(), AppError> {
    if config.registry.backend != RegistryBackend::Postgres {
        return Err("the registry is sled (embedded): it needs no migration; \
                    `migrate` is for [registry] backend = \"postgres\""
            .into());
    }
    let (before, after) =
        crate::store::postgres::migrate(&config.registry.postgres_config()?).await?;
    if before == after {
        writeln!(
            out,
            "the database schema is at version {after}: nothing to do"
        )?;
    } else {
        writeln!(
            out,
            "migrated the database schema from version {before} to {after}"
        )?;
    }
    Ok(())
}

/// `enroll-service serve`: serves until SIGINT or SIGTERM.
///
/// # Errors
/// Start-up failures (bind, TLS, state).
pub async fn serve(
    core: Arc<ServiceCore>,
    config: &Config,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let adopted = core.authorities().adopt_legacy_owners().await?;
    if !adopted.is_empty() {
        writeln!(
            out,
            "owners from before per-owner CAs keep the platform's CA until their first \
             rotation: {}",
            adopted.join(", ")
        )?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let tls = ServerTls::issue(core.ca(), &config.server_names())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.metrics_listen {
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
        writeln!(
            out,
            "metrics on {}",
            crate::metrics::describe(metrics_listener.local_addr()?)
        )?;
        let metrics = core.metrics_handle();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = crate::metrics::serve(metrics_listener, metrics, async move {
                let _ = stop.changed().await;
            })
            .await;
        });
    }
    if let Some(addr) = config.crl_listen {
        let crl_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} for CRLs: {e}"))?;
        writeln!(
            out,
            "CRLs on http://{}/crl/<issuer id>.crl",
            crl_listener.local_addr()?
        )?;
        let core = core.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = crate::server::crl_http::serve(crl_listener, core, async move {
                let _ = stop.changed().await;
            })
            .await;
        });
    }
    writeln!(out, "listening on {} (TLS)", listener.local_addr()?)?;
    out.flush()?;
    let mut stop = stop_rx;
    let signals = async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    };
    tokio::spawn(signals);
    serve_grpc(listener, core, &tls, async move {
        let _ = stop.changed().await;
    })
    .await?;
    writeln!(out, "stopped")?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sled_cache_is_configurable_within_its_range() {
        let state = tempfile::tempdir().unwrap();
        for refused in [0, 15, 65_537] {
            let config = RegistryConfig {
                sled_cache_mib: Some(refused),
                ..RegistryConfig::default()
            };
            let error = config.open(state.path()).await.err().unwrap().to_string();
            assert!(
                error.contains("sled_cache_mib must be 16 to 65536"),
                "{error}"
            );
        }
        let parsed: RegistryConfig = toml::from_str("sled_cache_mib = 32").unwrap();
        assert_eq!(parsed.sled_cache_mib, Some(32));
        parsed.open(state.path()).await.unwrap();
    }

    #[test]
    fn the_commit_delay_is_configurable_within_its_range() {
        let refused = RegistryConfig {
            commit_delay_us: Some(100_001),
            ..RegistryConfig::default()
        };
        let error = refused.sled_tuning().err().unwrap().to_string();
        assert!(
            error.contains("commit_delay_us must be 0 to 100000"),
            "{error}"
        );
        let parsed: RegistryConfig =
            toml::from_str("commit_delay_us = 0\nsled_cache_mib = 32").unwrap();
        assert_eq!(
            parsed.sled_tuning().unwrap(),
            SledTuning {
                cache_bytes: 32 * 1024 * 1024,
                commit_delay: Duration::ZERO,
            }
        );
        assert_eq!(
            RegistryConfig::default().sled_tuning().unwrap(),
            SledTuning::default()
        );
    }
}
