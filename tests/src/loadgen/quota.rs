//! A CPU bandwidth limit on the service during the measured loop (`--service-cpu-quota`).
//!
//! On a machine where the simulated devices cost more CPU than the service, the service
//! never gets busy: it goes idle between devices, and each wake-up from idle costs it CPU
//! that a loaded service does not pay. Under a quota below what the load generator can feed,
//! the service is the bottleneck, as on a factory line whose devices bring their own CPUs,
//! and its CPU per device is its cost at capacity.
//!
//! The limit is a cgroup of its own (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`) holding the
//! service's processes for the loop only; dropping [`CpuQuota`] moves them back where they
//! were and removes the cgroup.

use std::path::{Path, PathBuf};

use super::Error;

/// The bandwidth period. Short, so that a throttled service stalls for milliseconds at a time
/// rather than for most of a 100-ms default period.
const PERIOD_US: u64 = 20_000;

/// The service's processes held in a CPU-limited cgroup until this is dropped.
#[derive(Debug)]
pub(super) struct CpuQuota {
    /// The cgroup this created.
    cgroup: PathBuf,
    /// Each process and the cgroup it came from.
    moved: Vec<(u32, PathBuf)>,
}

impl CpuQuota {
    /// Limits processes `pids` (every thread of each) together to `cpus` CPUs.
    ///
    /// # Errors
    /// A quota that is not a positive number of CPUs up to `nproc`, no cgroup filesystem with
    /// the cpu controller at /sys/fs/cgroup, or not allowed to write it (needs root).
    pub(super) fn apply(pids: &[u32], cpus: f64, nproc: usize) -> Result<Self, Error> {
        if !cpus.is_finite() || cpus <= 0.0 || cpus > nproc as f64 {
            return Err(format!(
                "--service-cpu-quota must be more than 0 and at most the {nproc} CPUs here, not {cpus}"
            )
            .into());
        }
        if pids.is_empty() {
            return Err("--service-cpu-quota needs the service's process ID".into());
        }
        if pids.contains(&std::process::id()) {
            return Err("--service-cpu-quota needs a service in another process".into());
        }
        let hierarchy = Hierarchy::find()?;
        let cgroup = hierarchy
            .root()
            .join(format!("oxroot-loadgen-{}", std::process::id()));
        std::fs::create_dir(&cgroup).map_err(|e| {
            format!(
                "--service-cpu-quota: cannot create cgroup {} (needs root): {e}",
                cgroup.display()
            )
        })?;
        // From here on the guard removes it again, whatever fails next.
        let mut quota = Self {
            cgroup,
            moved: Vec::new(),
        };
        // At least the kernel's 1-ms minimum.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "cpus is positive and at most nproc, so this is a few seconds in µs"
        )]
        let quota_us = ((cpus * PERIOD_US as f64).round() as u64).max(1_000);
        hierarchy.limit(&quota.cgroup, quota_us)?;
        for pid in pids {
            let from = hierarchy.cgroup_of(*pid)?;
            write(&quota.cgroup.join("cgroup.procs"), &pid.to_string())?;
            quota.moved.push((*pid, from));
        }
        Ok(quota)
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        for (pid, from) in &self.moved {
            // A process that has exited has nothing to move back.
            let _ = std::fs::write(from.join("cgroup.procs"), pid.to_string());
        }
        // Empty now: rmdir removes a cgroup with its control files.
        if let Err(e) = std::fs::remove_dir(&self.cgroup) {
            eprintln!(
                "loadgen: could not remove cgroup {}: {e}",
                self.cgroup.display()
            );
        }
    }
}

/// The cgroup hierarchy that has the cpu controller.
enum Hierarchy {
    /// cgroup v2, unified at /sys/fs/cgroup.
    Unified,
    /// cgroup v1, the cpu controller mounted here (possibly shared with cpuacct).
    Legacy(PathBuf),
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Hierarchy {
    fn find() -> Result<Self, Error> {
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            let controllers = read(&root.join("cgroup.controllers"))?;
            if !controllers.split_whitespace().any(|c| c == "cpu") {
                return Err("--service-cpu-quota: cgroup v2 here has no cpu controller".into());
            }
            // Children of the root get the controller once it is in subtree_control.
            let enabled = read(&root.join("cgroup.subtree_control"))?;
            if !enabled.split_whitespace().any(|c| c == "cpu") {
                write(&root.join("cgroup.subtree_control"), "+cpu")?;
            }
            return Ok(Self::Unified);
        }
        for name in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
            let dir = root.join(name);
            if dir.join("cpu.cfs_quota_us").exists() {
                return Ok(Self::Legacy(dir));
            }
        }
        Err(format!("--service-cpu-quota: no cgroup cpu controller under {CGROUP_ROOT}").into())
    }

    /// Where new cgroups go.
    fn root(&self) -> &Path {
        match self {
            Self::Unified => Path::new(CGROUP_ROOT),
            Self::Legacy(dir) => dir,
        }
    }

    fn limit(&self, cgroup: &Path, quota_us: u64) -> Result<(), Error> {
        match self {
            Self::Unified => write(&cgroup.join("cpu.max"), &format!("{quota_us} {PERIOD_US}")),
            Self::Legacy(_) => {
                write(&cgroup.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&cgroup.join("cpu.cfs_quota_us"), &quota_us.to_string())
            }
        }
    }

    /// The cgroup directory process `pid` is in now, from /proc/<pid>/cgroup.
    fn cgroup_of(&self, pid: u32) -> Result<PathBuf, Error> {
        let table = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
        let relative = table.lines().find_map(|line| {
            // hierarchy-ID:controller-list:path
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let ours = match self {
                Self::Unified => controllers.is_empty(),
                Self::Legacy(_) => controllers.split(',').any(|c| c == "cpu"),
            };
            ours.then(|| path.trim_start_matches('/').to_owned())
        });
        let relative = relative
            .ok_or_else(|| format!("process {pid} is in no cpu cgroup (/proc/{pid}/cgroup)"))?;
        Ok(self.root().join(relative))
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("--service-cpu-quota: cannot read {}: {e}", path.display()).into())
}

fn write(path: &Path, value: &str) -> Result<(), Error> {
    std::fs::write(path, value).map_err(|e| {
        format!(
            "--service-cpu-quota: cannot write {value:?} to {} (needs root): {e}",
            path.display()
        )
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quota is refused before anything is touched when it is not a share of this
    /// machine's CPUs.
    #[test]
    fn a_quota_outside_the_machine_is_refused() {
        for cpus in [0.0, -1.0, f64::NAN, 3.0] {
            let error = CpuQuota::apply(&[1], cpus, 2).expect_err("refused");
            assert!(
                error
                    .to_string()
                    .contains("more than 0 and at most the 2 CPUs"),
                "{error}"
            );
        }
    }

    /// A process is held in a cgroup of its own with the asked-for bandwidth while the quota
    /// lives, and is back where it was, with the cgroup gone, after. Without root nothing can
    /// be moved, and the refusal says so.
    #[test]
    fn a_quota_holds_the_process_for_its_lifetime_only() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep runs");
        let pid = child.id();
        let cgroup_table =
            || std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        let before = cgroup_table();
        let name = format!("oxroot-loadgen-{}", std::process::id());
        if crate::postgres::running_as_root() {
            let quota = CpuQuota::apply(&[pid], 0.5, 2).expect("a quota as root");
            assert!(cgroup_table().contains(&name), "{}", cgroup_table());
            let limit = match std::fs::read_to_string(quota.cgroup.join("cpu.max")) {
                Ok(max) => max,
                Err(_) => std::fs::read_to_string(quota.cgroup.join("cpu.cfs_quota_us"))
                    .expect("a v1 quota"),
            };
            assert!(
                limit.starts_with("10000"),
                "half of a 20-ms period: {limit}"
            );
            let cgroup = quota.cgroup.clone();
            drop(quota);
            assert_eq!(cgroup_table(), before, "back where it was");
            assert!(!cgroup.exists(), "{} removed", cgroup.display());
        } else {
            let error = CpuQuota::apply(&[pid], 0.5, 2).expect_err("needs root");
            assert!(error.to_string().contains("needs root"), "{error}");
        }
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
    }
}
