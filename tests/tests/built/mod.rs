//! Where the binaries under test are: the ones cargo built for this test run.
//!
//! `cargo nextest run --workspace` (and `cargo test --workspace`) builds the `enroll-service`,
//! `enrollctl` and `device-agent` binaries next to the test executables, because those crates
//! have integration tests of their own. `OXROOT_BIN_DIR` points elsewhere.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The binaries the cross-crate tests run.
const BINARIES: [&str; 3] = ["enroll-service", "enrollctl", "device-agent"];

/// The repository's root directory.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_owned()
}

/// The directory holding the built binaries; panics with what to do when one is missing.
pub(crate) fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("OXROOT_BIN_DIR").map_or_else(
        || {
            // <target>/<profile>/deps/<this test> → <target>/<profile>
            let exe = std::env::current_exe().expect("the test executable's path");
            exe.parent()
                .and_then(Path::parent)
                .expect("the test executable lives in <target>/<profile>/deps")
                .to_owned()
        },
        PathBuf::from,
    );
    for binary in BINARIES {
        assert!(
            dir.join(binary).is_file(),
            "{} is missing: run the workspace's tests (tests/run, or cargo nextest run \
             --workspace), build them with cargo build --workspace --bins, or set OXROOT_BIN_DIR",
            dir.join(binary).display()
        );
    }
    warn_if_stale(&dir);
    dir
}

/// A run of only this crate's tests does not rebuild the other crates' binaries: say so when a
/// source file is newer than a binary, since the test would then check yesterday's code.
fn warn_if_stale(dir: &Path) {
    let oldest_binary = BINARIES
        .iter()
        .filter_map(|binary| modified(&dir.join(binary)))
        .min();
    let newest_source = [
        "rot-core/src",
        "proto",
        "enroll-service/src",
        "enroll-service/ctl/src",
        "device-agent/src",
    ]
    .iter()
    .filter_map(|sub| newest(&repo_root().join(sub)))
    .max();
    if let (Some(binary), Some(source)) = (oldest_binary, newest_source)
        && source > binary
    {
        eprintln!(
            "warning: sources changed after the binaries in {} were built; build them again \
             (cargo build --workspace --bins) or run the whole workspace's tests",
            dir.display()
        );
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

fn newest(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            self::newest(&path)
        } else {
            modified(&path)
        };
        newest = newest.max(time);
    }
    newest
}
