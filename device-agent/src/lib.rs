//! # device-agent — the device side of oxroot
//!
//! Enrols the PUF, registers the chip, answers the enrolment service's challenge, stores the
//! credential it issues, renews it and uses it, with every private key derived from the
//! silicon at the moment it is needed and zeroized right after.
//!
//! ```text
//!  silicon ──(emulated | silicon file | QEMU fw_cfg)──▶ chip ── helper data (state dir, public)
//!    enroll    majority of 5 readouts ▶ helper data + identity
//!    register  ESK signs the registration message      ──▶ Register   (or a JSON line, offline)
//!    onboard   Hello ▶ Challenge ▶ Proof(ESK, DSK slot) ──▶ Onboard ⇄  ▶ credential (state dir)
//!    renew     same, optionally on the next slot        ──▶ Renew ⇄    (old kept until replaced)
//!    connect   MQTT 5 over TLS 1.2 or 1.3, as the credential's policy says; the client key
//!              is a rustls SigningKey that reconstructs, derives the DSK, signs the
//!              CertificateVerify rot-core has checked and drops it
//! ```
//!
//! Modules:
//! - [`silicon`]: `--silicon` sources and operating conditions; silicon files.
//! - [`state`]: the state directory (public data only, atomic writes).
//! - [`lockout`]: the persistent counter of failed reconstructions (helper-data oracle defence).
//! - [`chip`]: the enrolled chip: silicon + helper data + lockout, keys on demand.
//! - the Register / Onboard / Renew exchange itself is [`oxroot_client::device`], generic over
//!   a [`Chip`](oxroot_client::device::Chip), which [`chip`] implements for the silicon.
//! - [`service`]: the TLS channel to the service (pinned root) and bounded retries.
//! - [`credential`]: the stored bundle and its local verification.
//! - [`tls_signer`], [`mqtt`]: mutual TLS with the silicon-backed key, MQTT round trip;
//!   [`tls_failure`]: what a failed handshake means, said in one place.
//! - [`cli`], [`commands`], [`report`]: the command line, the commands and their output.
//!
//! Exit codes ([`error`]): 0 ok, 1 internal, 2 usage / input / state, 3 refused, 4 service or
//! broker unreachable or untrusted, 5 silicon (unreadable, reconstruction failed, locked out).

pub mod chip;
pub mod cli;
pub mod commands;
pub mod credential;
pub mod error;
pub mod firmware;
pub mod lockout;
pub mod mqtt;
pub mod report;
pub mod service;
pub mod silicon;
pub mod state;
pub mod tls_failure;
pub mod tls_signer;

use std::io::IsTerminal;
use std::process::ExitCode;

pub use error::AgentError;

/// Runs the agent for a parsed command line, writing results to stdout and diagnostics to
/// stderr, and returns the process exit code.
#[must_use]
pub fn run(cli: cli::Cli) -> ExitCode {
    init_tracing(cli.verbose);
    let json = cli.json;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::io("<tokio runtime>"))
        .and_then(|runtime| {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
            let mut console = report::Console {
                out: &mut out,
                err: &mut err,
                json,
            };
            runtime.block_on(commands::execute(cli, &mut console))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Diagnostics on stderr: warnings by default, `-v` info, `-vv` debug; `RUST_LOG` wins.
fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only for a person at a terminal: a QEMU console log or a file gets plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
