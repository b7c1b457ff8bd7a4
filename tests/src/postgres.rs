//! A throwaway PostgreSQL cluster for one test: `initdb` and `pg_ctl` in a temporary
//! directory, listening on 127.0.0.1 on a port the test picks, stopped (by its postmaster's
//! PID, through `pg_ctl stop`) when dropped. Nothing depends on a system-wide cluster.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, the cluster runs as the
//! unprivileged `postgres` account the Debian package creates, through `runuser`.
//!
//! A test helper: a cluster that cannot be made is a failed test, so it panics.
#![allow(
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "a test helper: failing to make a cluster fails the test that asked for it"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use enroll_service::store::PostgresConfig;

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    // Removed after the cluster stopped (field order: `Drop` runs first).
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// The directory of the newest installed PostgreSQL's server programs.
fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (tests/run installs the postgresql package)")
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// Whether this process runs with effective UID 0 (PostgreSQL refuses root; a cgroup CPU quota
/// needs it).
#[must_use]
pub fn running_as_root() -> bool {
    // The effective uid of this process, from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

impl Cluster {
    /// Initialises and starts a cluster.
    #[must_use]
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let bin = server_bin();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = Self { dir, bin, port };
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the cluster directory failed");
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--locale=C",
                "--encoding=UTF8",
            ],
        );
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` of the server's bin directory, as the account the cluster runs as.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if running_as_root() {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(program)
                .current_dir(self.dir.path());
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the server (again, after [`Cluster::stop`]), waiting until it accepts
    /// connections.
    pub fn start_server(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c max_connections=200 -c fsync=on -c synchronous_commit=on",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.dir.path().join("server.log").display().to_string(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast shutdown: open transactions are rolled back, committed ones
    /// are kept).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for the cluster's `postgres` database.
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The registry configuration for it.
    #[must_use]
    pub fn config(&self) -> PostgresConfig {
        PostgresConfig {
            url: self.url(),
            password: None,
            pool_size: 8,
        }
    }

    /// Creates an empty database (a fresh registry on the same cluster) and returns its
    /// configuration.
    #[must_use]
    pub fn database(&self, name: &str) -> PostgresConfig {
        let psql = self.bin.join("psql");
        let status = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-c", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("psql");
        assert!(
            status.status.success(),
            "CREATE DATABASE {name}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        PostgresConfig {
            url: format!(
                "host=127.0.0.1 port={} user=postgres dbname={name}",
                self.port
            ),
            password: None,
            pool_size: 8,
        }
    }

    /// The postmaster's process ID (first line of `postmaster.pid`), while it runs.
    #[must_use]
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Bytes the cluster's data directory holds.
    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| match entry.metadata() {
                        Ok(m) if m.is_dir() => walk(&entry.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
        }
        walk(&self.data())
    }

    /// The cluster's directory (its server log is `server.log` there).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}
