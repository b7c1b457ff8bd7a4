//! Cross-crate tests and tools for oxroot.
//!
//! - [`loadgen`]: the fleet load generator behind the `loadgen` binary.
//! - [`postgres`]: throwaway PostgreSQL clusters (loadgen's, and the service's test suites').

pub mod loadgen;
pub mod postgres;

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
