//! `enrollctl`: the operator and factory-MES command line, a client of `oxroot.v1.Operator`.
//!
//! ```text
//!  enrollctl ──mTLS (operator cert, service root as the only anchor)──▶ Operator service
//!    whoami · policy · batch (import ⇉, watch ⇇) · device · export · crl · audit · operator
//!  browser ──HTTP, loopback, token+cookie+CSRF──▶ enrollctl console ──the same mTLS calls──▶
//! ```
//!
//! The binary (`src/main.rs`) only calls [`run`]. Everything else lives here so that
//! tests drive the CLI in-process with captured output:
//!
//! ```no_run
//! # async fn demo() {
//! use enrollctl::{self as ctl, Exit};
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! let exit = ctl::run(
//!     ["enrollctl", "--profile", "ops", "--service", "https://127.0.0.1:50051", "--json", "whoami"],
//!     &mut out,
//!     &mut err,
//! )
//! .await;
//! assert_eq!(exit, Exit::Success);
//! # }
//! ```
//!
//! Output contract ([`output`] has it in full): results go to stdout, diagnostics to stderr,
//! exit codes are [`Exit`]. With `--json`, stdout carries exactly one JSON document (one per
//! line for `batch watch`): the RPC's response message in the proto3 JSON mapping, made from
//! the contract's descriptors, with the few local facts of a command (files written, records
//! that could not be read) as documented keys beside its fields; errors are one JSON object on
//! stderr. Human output escapes every text that comes from the service, so nothing a device or
//! another tenant wrote can drive the operator's terminal.
//!
//! Modules: [`args`] (the command line), [`import`] (device list parsers), [`duration`]
//! (`90d`-style spans), [`output`] (the output contract: the JSON mapping, terminal escaping,
//! tables), [`console`] (`enrollctl console`, the local web console) and [`audit_chain`] (the
//! audit log's hash chain, checked on this side); the commands, the connection and the human
//! views (one module per resource) are private.

#![forbid(unsafe_code)]

pub mod args;
pub mod audit_chain;
mod commands;
mod connect;
pub mod console;
pub mod duration;
mod error;
pub mod import;
mod operator_key;
pub mod output;
mod view;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};

use clap::Parser;
use clap::error::ErrorKind;

pub use args::Cli;
pub use error::{CtlError, Exit, code_name};
pub use output::JsonError;

/// How the CLI may use the terminal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Draw indicatif progress bars on the process's stderr (never in `--json` mode).
    pub progress_bars: bool,
}

/// Parses `args` (program name first) and runs the command, writing results to `stdout` and
/// diagnostics to `stderr`. Progress bars are drawn only if the process's stderr is a
/// terminal; tests that capture output while running in a terminal should call [`run_cli`]
/// with [`Options::default`] instead.
///
/// Never panics on bad input and never exits the process: the outcome is the returned
/// [`Exit`], for the caller to turn into a process exit code.
pub async fn run<I, T>(args: I, stdout: &mut impl Write, stderr: &mut impl Write) -> Exit
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // Known before parsing, so that even a usage error can be reported as JSON.
    let json = args.iter().skip(1).any(|arg| arg == "--json");
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => return usage(&error, json, stdout, stderr),
    };
    let options = Options {
        progress_bars: std::io::stderr().is_terminal(),
    };
    run_cli(cli, options, stdout, stderr).await
}

/// Runs an already parsed command line.
pub async fn run_cli(
    cli: Cli,
    options: Options,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> Exit {
    let Cli {
        connection,
        json,
        command,
    } = cli;
    let result = {
        let mut ctx = commands::Ctx::new(stdout, json, options.progress_bars, &connection);
        commands::execute(command, &mut ctx).await
    };
    let _ = stdout.flush();
    match result {
        Ok(()) => Exit::Success,
        Err(error) => report(&error, json, stderr),
    }
}

/// Prints a failure on stderr (one JSON object in `--json` mode) and picks the exit code.
fn report(error: &CtlError, json: bool, stderr: &mut impl Write) -> Exit {
    let exit = error.exit();
    // A reader that went away (`| head`) is not worth a message; the exit code still says
    // the output is incomplete.
    if error.is_broken_pipe() {
        return exit;
    }
    // If stderr is gone too there is nowhere left to report to; the exit code still tells.
    let _ = if json {
        writeln!(stderr, "{}", error.to_json())
    } else {
        // The message may quote the service (a status message, a name): escaped like every
        // human view.
        writeln!(stderr, "enrollctl: {}", output::escape(&error.to_string()))
    };
    let _ = stderr.flush();
    exit
}

/// Help and version go to stdout with success, as users expect from `--help | less`; real
/// usage errors go to stderr with exit code 2.
fn usage(
    error: &clap::Error,
    json: bool,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> Exit {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            if error.exit_code() == 0 =>
        {
            let _ = write!(stdout, "{}", error.render());
            let _ = stdout.flush();
            Exit::Success
        }
        _ => {
            let rendered = error.render().to_string();
            let _ = if json {
                let message = rendered.trim_end();
                writeln!(
                    stderr,
                    "{}",
                    serde_json::json!({ "error": {
                        "message": message,
                        "exit_code": Exit::Usage.code(),
                    }})
                )
            } else {
                write!(stderr, "{rendered}")
            };
            let _ = stderr.flush();
            Exit::Usage
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn capture(args: &[&str]) -> (Exit, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let exit = run(
            std::iter::once("enrollctl").chain(args.iter().copied()),
            &mut out,
            &mut err,
        )
        .await;
        (
            exit,
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn help_goes_to_stdout_with_success() {
        let (exit, out, err) = capture(&["--help"]).await;
        assert_eq!(exit, Exit::Success);
        assert!(out.contains("Usage: enrollctl"), "{out}");
        assert!(out.contains("Exit codes"), "{out}");
        assert!(err.is_empty());
    }

    #[tokio::test]
    async fn usage_errors_exit_2_on_stderr() {
        let (exit, out, err) = capture(&["policy", "frobnicate"]).await;
        assert_eq!(exit, Exit::Usage);
        assert!(out.is_empty());
        assert!(err.contains("frobnicate"), "{err}");
    }

    #[tokio::test]
    async fn usage_errors_are_json_in_json_mode() {
        let (exit, out, err) = capture(&["--json", "device", "revoke"]).await;
        assert_eq!(exit, Exit::Usage);
        assert!(out.is_empty());
        let value: serde_json::Value = serde_json::from_str(&err).expect("one JSON object");
        assert_eq!(value["error"]["exit_code"], 2);
    }

    #[tokio::test]
    async fn missing_connection_settings_fail_before_any_network() {
        let (exit, out, err) = capture(&[
            "--service",
            "https://127.0.0.1:9",
            "--ca",
            "/nonexistent/root.pem",
            "--cert",
            "c",
            "--key",
            "k",
            "whoami",
        ])
        .await;
        assert_eq!(exit, Exit::Failure);
        assert!(out.is_empty());
        assert!(
            err.starts_with("enrollctl: /nonexistent/root.pem: "),
            "{err}"
        );
    }

    #[test]
    fn errors_escape_what_the_service_said_for_humans_only() {
        let hostile = "gone\x1b[2J\r\u{202e}";
        let error = CtlError::Rpc {
            rpc: "GetDevice",
            status: tonic::Status::not_found(hostile),
        };
        let mut err = Vec::new();
        assert_eq!(report(&error, false, &mut err), Exit::Refused);
        assert_eq!(
            String::from_utf8(err).expect("utf-8"),
            "enrollctl: GetDevice: NOT_FOUND: gone\\x1b[2J\\r\\u{202e}\n"
        );
        let mut err = Vec::new();
        assert_eq!(report(&error, true, &mut err), Exit::Refused);
        let value: serde_json::Value = serde_json::from_slice(&err).expect("one JSON object");
        assert_eq!(value["error"]["grpc_message"], hostile);
    }

    #[tokio::test]
    async fn the_console_refuses_a_non_loopback_address_before_connecting() {
        let (exit, out, err) = capture(&[
            "--service",
            "https://127.0.0.1:9",
            "console",
            "--listen",
            "0.0.0.0:8780",
        ])
        .await;
        assert_eq!(exit, Exit::Usage);
        assert!(out.is_empty());
        assert!(err.contains("loopback only"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_import_file_is_reported_before_connecting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("devices.json");
        std::fs::write(&file, "{\n\"devices\": [\n\"a\"\n\"b\"]}").expect("writes");
        let file = file.to_str().expect("utf-8 path");
        let (exit, _, err) = capture(&["--json", "batch", "import", "b-1", file]).await;
        assert_eq!(exit, Exit::Usage);
        let value: serde_json::Value = serde_json::from_str(&err).expect("one JSON object");
        let message = value["error"]["message"].as_str().expect("message");
        assert!(message.contains("devices.json"), "{message}");
        assert!(message.contains("line 4"), "{message}");
    }
}
