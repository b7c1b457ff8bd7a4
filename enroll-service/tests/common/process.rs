//! `enroll-service` as a real child process (init, serve), for the tests that need one: a
//! restart, a SIGKILL, a full disk, the command line.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// The CA passphrase of every state directory these helpers make.
pub const PASSPHRASE: &str = "test passphrase";

/// A running `enroll-service serve`; killed when dropped, so a failing test leaks no process.
pub struct Service {
    pub child: Arc<std::sync::Mutex<Child>>,
    pub url: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_enroll-service")
}

/// `enroll-service init --state-dir STATE` with the passphrase set, to add arguments to.
pub fn init_command(state: &Path) -> Command {
    let mut command = Command::new(bin());
    command
        .args(["init", "--state-dir"])
        .arg(state)
        .env("OXROOT_CA_PASSPHRASE", PASSPHRASE);
    command
}

/// A state directory made by `init`.
pub fn init(state: &Path) {
    let status = init_command(state).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
}

/// `enroll-service serve` on 127.0.0.1:0 for a state directory made by [`init`].
pub fn start(state: &Path) -> Service {
    start_command(Command::new(bin()), state)
}

/// [`start`] with more environment (a `SOFTHSM2_CONF`, say).
pub fn start_with_env(state: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Service {
    let mut command = Command::new(bin());
    command.envs(env.iter().copied());
    start_command(command, state)
}

/// `serve` limited to files of `blocks` × 512 bytes (RLIMIT_FSIZE, with SIGXFSZ ignored so a
/// write past it fails with EFBIG instead of killing the process): a disk that fills up.
pub fn start_with_file_size_limit(state: &Path, blocks: u64) -> Service {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "trap '' XFSZ; ulimit -f \"$1\"; shift; exec \"$@\"",
        "sh",
        &blocks.to_string(),
        bin(),
    ]);
    start_command(command, state)
}

fn start_command(mut command: Command, state: &Path) -> Service {
    let mut child = command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(state)
        .env("OXROOT_CA_PASSPHRASE", PASSPHRASE)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the service exited before listening")
            .unwrap();
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.trim_end_matches(" (TLS)").to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Service {
        child: Arc::new(std::sync::Mutex::new(child)),
        url: format!("https://{addr}"),
    }
}

/// A TLS channel to a service `init` made in `state`: pinned to its root (`admin/root.pem`),
/// with the first admin's certificate when `operator`, without one (as a device) otherwise.
pub async fn channel(url: &str, state: &Path, operator: bool) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let admin = state.join("admin");
    let read = |name: &str| std::fs::read(admin.join(name)).expect("the admin profile");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("root.pem")))
        .domain_name("localhost");
    if operator {
        tls = tls.identity(Identity::from_pem(
            read("operator.pem"),
            read("operator.key"),
        ));
    }
    Channel::from_shared(url.to_owned())
        .expect("a service URL")
        .tls_config(tls)
        .expect("a TLS configuration")
        .connect()
        .await
        .expect("the service accepts a connection")
}
