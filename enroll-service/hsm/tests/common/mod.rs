//! A throwaway SoftHSM2 token per test, each test in its own process.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, at `C_Initialize`, and keeps its library state for the
//! life of the process; and Rust 2024 makes `std::env::set_var` unsafe (forbidden here). So a
//! test that needs a token runs [`isolated`]: the test binary starts itself again, filtered to
//! that one test, with `SOFTHSM2_CONF` pointing at a fresh configuration whose `tokendir` is a
//! new temporary directory, holding tokens that `softhsm2-util --init-token` made for it. The
//! child runs the body; the parent checks that the child ran exactly that test and that it
//! passed, within a time limit. Nothing touches a system-wide token.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::missing_panics_doc
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oxroot_hsm::Pkcs11Uri;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const SO_PIN: &str = "so-secret-1234";
pub const PIN: &str = "user-secret-5678";
/// The token every isolated test gets; a second one, [`OTHER`], sits beside it.
pub const LABEL: &str = "oxroot-test";
pub const OTHER: &str = "oxroot-other";

const CHILD_ENV: &str = "OXROOT_HSM_TEST_CHILD";
const DIR_ENV: &str = "OXROOT_HSM_TEST_DIR";
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// The test's SoftHSM2 set-up, as the child sees it.
#[derive(Debug)]
pub struct Hsm {
    /// The temporary directory: softhsm2.conf, tokens/, pin.
    pub dir: PathBuf,
    pub tokendir: PathBuf,
    pub pin_file: PathBuf,
}

impl Hsm {
    /// The URI of token `label`, its PIN read from the pin file.
    pub fn token_uri(&self, label: &str) -> Pkcs11Uri {
        format!(
            "pkcs11:token={label}?module-path={MODULE}&pin-source=file:{}",
            self.pin_file.display()
        )
        .parse()
        .unwrap()
    }

    pub fn uri(&self) -> Pkcs11Uri {
        self.token_uri(LABEL)
    }

    /// The directory SoftHSM keeps token `label` in (`tokendir/<uuid>/`).
    pub fn token_dir_of(&self, label: &str) -> PathBuf {
        for entry in std::fs::read_dir(&self.tokendir).unwrap() {
            let path = entry.unwrap().path();
            let Ok(bytes) = std::fs::read(path.join("token.object")) else {
                continue;
            };
            // The token object holds the label (blank-padded); the test labels are not
            // substrings of one another.
            if bytes.windows(label.len()).any(|w| w == label.as_bytes()) {
                return path;
            }
        }
        panic!(
            "no token directory for {label} in {}",
            self.tokendir.display()
        );
    }

    /// `pkcs11-tool --module … <args>` (with this test's SOFTHSM2_CONF, inherited), its stdout.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.dir.join("softhsm2.conf"))
            .arg("--module")
            .arg(MODULE)
            .args(args)
            .output()
            .expect("pkcs11-tool (Debian package opensc) must be installed");
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn init_token(conf: &Path, label: &str) {
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            PIN,
        ])
        .output()
        .expect("softhsm2-util (Debian package softhsm2) must be installed");
    assert!(
        out.status.success(),
        "softhsm2-util --init-token failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `body` in a child process of this test binary with its own SoftHSM2 configuration and
/// two fresh tokens ([`LABEL`], [`OTHER`]). `name` is the test function's name.
pub fn isolated(name: &str, body: impl FnOnce(&Hsm)) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
        let hsm = Hsm {
            tokendir: dir.join("tokens"),
            pin_file: dir.join("pin"),
            dir,
        };
        body(&hsm);
        return;
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tokendir = dir.join("tokens");
    std::fs::create_dir(&tokendir).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokendir.display()
        ),
    )
    .unwrap();
    init_token(&conf, LABEL);
    init_token(&conf, OTHER);
    // The pin-source file: the PIN on the first line, a newline after it (dropped when read).
    std::fs::write(dir.join("pin"), format!("{PIN}\n")).unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD_ENV, name)
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CHILD_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name} did not finish within {CHILD_LIMIT:?} (hung?):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(status.success(), "{name} failed in its own process");
    assert!(
        // (With --nocapture the body's output sits between "... " and "ok".)
        stdout.contains(&format!("test {name} ... "))
            && stdout.contains("test result: ok. 1 passed; 0 failed"),
        "the child process did not run {name}"
    );
}
