//! The `enroll-service` binary: argument parsing and wiring only; the work is in
//! [`enroll_service::app`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use enroll_service::app::{self, ImportedIntermediate, demo::DemoOptions};
use mimalloc::MiMalloc;

/// Onboarding allocates many small, short-lived buffers (protobuf messages, HTTP/2 frames,
/// registry records); mimalloc serves them for a fraction of glibc's cost.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// oxroot's enrolment service.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a state directory: the platform CA (root + issuing intermediate; keys sealed
    /// with the passphrase from OXROOT_CA_PASSPHRASE or --passphrase-file, or generated in a
    /// PKCS#11 token), config, first admin.
    Init {
        /// State directory to create.
        #[arg(long, env = "OXROOT_STATE_DIR")]
        state_dir: PathBuf,
        /// File holding the CA key passphrase (first line).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Where CA keys live: sealed files, or a PKCS#11 token (--pkcs11-token).
        #[arg(long, value_parser = ["sealed", "pkcs11"], default_value = "sealed")]
        ca_backend: String,
        /// The token for `--ca-backend pkcs11`: an RFC 7512 URI with module-path and
        /// pin-source (never pin-value).
        #[arg(long, value_name = "URI", required_if_eq("ca_backend", "pkcs11"))]
        pkcs11_token: Option<String>,
        /// Sessions kept open on the token.
        #[arg(long, default_value_t = 4)]
        pkcs11_sessions: usize,
        /// Organisation (O) of the new CA certificates.
        #[arg(long)]
        organisation: Option<String>,
        /// Import this intermediate certificate (PEM) instead of creating a CA.
        #[arg(long, requires_all = ["intermediate_key", "root"])]
        import_intermediate: Option<PathBuf>,
        /// The imported intermediate's PKCS#8 private key (PEM); stored encrypted.
        #[arg(long)]
        intermediate_key: Option<PathBuf>,
        /// The root certificate (PEM) that signed the imported intermediate.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Keep the registry in this PostgreSQL database (a libpq connection string, no
        /// password) instead of the embedded sled store; its schema is migrated first.
        #[arg(long, value_name = "CONNINFO")]
        postgres: Option<String>,
        /// The database password's file (first line), for --postgres.
        #[arg(long, requires = "postgres")]
        postgres_password_file: Option<PathBuf>,
        /// Name of the first platform admin.
        #[arg(long, default_value = "admin")]
        admin_name: String,
        /// Write the first admin's profile (operator.key, operator.pem, root.pem) to this
        /// directory instead of <state-dir>/admin, e.g. a removable disk: its key then never
        /// rests on the server.
        #[arg(long, value_name = "DIR")]
        admin_out: Option<PathBuf>,
    },
    /// Serve the state directory until SIGINT / SIGTERM.
    Serve {
        /// State directory made by `init`.
        #[arg(long, env = "OXROOT_STATE_DIR")]
        state_dir: PathBuf,
        /// Config file (default: <state-dir>/config.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// File holding the CA key passphrase.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Override the gRPC listen address.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Override the metrics listen address.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Override the CRL endpoint's listen address (plain HTTP).
        #[arg(long)]
        crl_listen: Option<std::net::SocketAddr>,
    },
    /// Bring the PostgreSQL registry's schema to this build's version (`serve` refuses a
    /// database that is behind).
    Migrate {
        /// State directory made by `init`.
        #[arg(long, env = "OXROOT_STATE_DIR")]
        state_dir: PathBuf,
        /// Config file (default: <state-dir>/config.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Where CA keys live: show it, or choose where new ones go.
    Ca {
        /// State directory made by `init`.
        #[arg(long, env = "OXROOT_STATE_DIR", global = true)]
        state_dir: Option<PathBuf>,
        /// Config file (default: <state-dir>/config.toml).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// File holding the CA key passphrase (for sealed keys).
        #[arg(long, global = true)]
        passphrase_file: Option<PathBuf>,
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Onboard a batch of emulated chips against an in-process service and print a summary.
    Demo {
        /// Number of emulated chips.
        #[arg(long, default_value_t = 200)]
        devices: u32,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// The platform CA, where each of its keys lives, where new keys go, and whether the key
    /// store answers.
    Show,
    /// Generate new CA keys (owners' CAs, rotations) in a PKCS#11 token from now on. Keys
    /// made before stay where they are.
    UsePkcs11 {
        /// The token: an RFC 7512 URI with module-path and pin-source.
        #[arg(long, value_name = "URI")]
        token: String,
        /// Sessions kept open on the token.
        #[arg(long, default_value_t = 4)]
        sessions: usize,
    },
    /// Seal new CA keys under the CA passphrase from now on.
    UseSealed,
}

fn init_logging(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a person at a terminal: a log file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The `[registry]` `init` writes: PostgreSQL when given a connection string, else sled.
fn registry_config(
    postgres: Option<String>,
    postgres_password_file: Option<PathBuf>,
) -> app::RegistryConfig {
    match postgres {
        Some(conninfo) => app::RegistryConfig {
            backend: app::RegistryBackend::Postgres,
            postgres: Some(conninfo),
            postgres_password_file,
            ..app::RegistryConfig::default()
        },
        None => app::RegistryConfig::default(),
    }
}

async fn run(cli: Cli) -> Result<(), app::AppError> {
    let mut out = std::io::stdout();
    match cli.command {
        Command::Init {
            state_dir,
            passphrase_file,
            ca_backend,
            pkcs11_token,
            pkcs11_sessions,
            organisation,
            import_intermediate,
            intermediate_key,
            root,
            postgres,
            postgres_password_file,
            admin_name,
            admin_out,
        } => {
            let registry = registry_config(postgres, postgres_password_file);
            let keys = match pkcs11_token {
                Some(token) if ca_backend == "pkcs11" => app::CaKeys::Pkcs11 {
                    token,
                    sessions: pkcs11_sessions,
                },
                _ => app::CaKeys::Sealed(app::load_passphrase(passphrase_file.as_deref())?),
            };
            let import = match (import_intermediate, intermediate_key, root) {
                (Some(certificate), Some(key), Some(root)) => Some(ImportedIntermediate {
                    certificate,
                    key,
                    root,
                }),
                _ => None,
            };
            app::init(
                &state_dir,
                &keys,
                organisation,
                &registry,
                import,
                &admin_name,
                admin_out.as_deref(),
                &mut out,
            )
            .await
        }
        Command::Serve {
            state_dir,
            config,
            passphrase_file,
            listen,
            metrics_listen,
            crl_listen,
        } => {
            let mut config = app::load_config(&state_dir, config.as_deref())?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if metrics_listen.is_some() {
                config.metrics_listen = metrics_listen;
            }
            if crl_listen.is_some() {
                config.crl_listen = crl_listen;
            }
            let passphrase = app::load_passphrase_if_given(passphrase_file.as_deref())?;
            let core = app::open_state(&state_dir, passphrase, &config).await?;
            app::serve(core, &config, &mut out).await
        }
        Command::Migrate { state_dir, config } => {
            let config = app::load_config(&state_dir, config.as_deref())?;
            app::migrate(&config, &mut out).await
        }
        Command::Ca {
            state_dir,
            config,
            passphrase_file,
            command,
        } => ca(
            state_dir,
            config.as_deref(),
            passphrase_file.as_deref(),
            command,
            &mut out,
        ),
        Command::Demo { devices } => {
            let options = DemoOptions {
                devices,
                progress: std::io::stderr().is_terminal(),
            };
            app::demo::run(&options, &mut out).await
        }
    }
}

/// `enroll-service ca …`.
fn ca(
    state_dir: Option<PathBuf>,
    config: Option<&std::path::Path>,
    passphrase_file: Option<&std::path::Path>,
    command: CaCommand,
    out: &mut dyn std::io::Write,
) -> Result<(), app::AppError> {
    let state_dir = state_dir.ok_or("--state-dir (or OXROOT_STATE_DIR) is required")?;
    let passphrase = app::load_passphrase_if_given(passphrase_file)?;
    let keys = match command {
        CaCommand::Show => return app::ca_show(&state_dir, config, passphrase, out),
        CaCommand::UsePkcs11 { token, sessions } => app::CaKeys::Pkcs11 { token, sessions },
        CaCommand::UseSealed => app::CaKeys::Sealed(passphrase.ok_or(
            "sealing new keys needs the CA passphrase: set OXROOT_CA_PASSPHRASE or pass \
             --passphrase-file",
        )?),
    };
    app::ca_use(&state_dir, config, keys, out)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Demo { .. });
    init_logging(&cli.log_format, if quiet { "warn" } else { "info" });
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enroll-service: {e}");
            ExitCode::FAILURE
        }
    }
}
