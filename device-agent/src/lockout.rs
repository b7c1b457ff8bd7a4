//! The helper-data oracle defence: count consecutive key-reconstruction failures and refuse to
//! reconstruct after [`MAX_CONSECUTIVE_FAILURES`].
//!
//! Helper data is public and may be rewritten by an attacker; each reconstruction that then
//! succeeds or fails tells them one bit about the cells. rot-core holds no state, so the agent
//! counts. The counter is raised *before* the attempt and reset after a success: cutting the
//! power in the middle of a failed attempt still counts it. A silicon read failure (no
//! reconstruction ran) puts the counter back.
//!
//! The counter lives in the state directory, which is good enough against an attacker who can
//! rewrite helper data remotely but cannot run commands on the device. On real hardware it
//! belongs in storage the attacker cannot reset (a monotonic counter or RPMB).

use std::path::PathBuf;

use rot_core::extractor::ReconstructError;

use crate::error::AgentError;
use crate::state::{self, StateDir};

/// Consecutive failures after which the agent stops reconstructing.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 5;

/// The persistent failure counter.
#[derive(Clone, Debug)]
pub struct Lockout {
    path: PathBuf,
    limit: u32,
}

impl Lockout {
    /// The counter of a state directory, with the standard limit.
    #[must_use]
    pub fn new(state: &StateDir) -> Self {
        Self::with_limit(state, MAX_CONSECUTIVE_FAILURES)
    }

    /// The counter with another limit (tests).
    #[must_use]
    pub fn with_limit(state: &StateDir, limit: u32) -> Self {
        Self {
            path: state.path(state::FAILURES),
            limit,
        }
    }

    /// Consecutive failures recorded so far.
    ///
    /// # Errors
    /// [`AgentError::CorruptState`] if the file holds something other than a count: the agent
    /// then stays locked (failing closed) until [`Lockout::clear`].
    pub fn failures(&self) -> Result<u32, AgentError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse().map_err(|_| AgentError::CorruptState {
                path: self.path.clone(),
                problem: "the lockout counter is not a number; clear it with \
                              `device-agent unlock` after checking the device"
                    .to_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(AgentError::io(&self.path)(e)),
        }
    }

    /// Runs one reconstruction under the counter.
    ///
    /// # Errors
    /// [`AgentError::LockedOut`] without calling `reconstruct` when the limit is reached;
    /// [`AgentError::ReconstructionFailed`] (opaque) or [`AgentError::Silicon`] from the
    /// attempt; [`AgentError::Io`] if the counter cannot be written (then nothing is tried).
    pub fn attempt<T>(
        &self,
        reconstruct: impl FnOnce() -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        let failures = self.failures()?;
        if failures >= self.limit {
            return Err(AgentError::LockedOut {
                failures,
                path: self.path.clone(),
            });
        }
        self.store(failures + 1)?;
        match reconstruct() {
            Ok(value) => {
                self.store(0)?;
                Ok(value)
            }
            // The silicon was not read, so no oracle query was made.
            Err(error @ AgentError::Silicon { .. }) => {
                self.store(failures)?;
                Err(error)
            }
            Err(AgentError::ReconstructionFailed { .. }) => Err(AgentError::ReconstructionFailed {
                failures: failures + 1,
                limit: self.limit,
            }),
            Err(other) => Err(other),
        }
    }

    /// Resets the counter (the operator's `unlock`).
    ///
    /// # Errors
    /// [`AgentError::Io`].
    pub fn clear(&self) -> Result<(), AgentError> {
        self.store(0)
    }

    fn store(&self, failures: u32) -> Result<(), AgentError> {
        state::write_atomic(&self.path, format!("{failures}\n").as_bytes(), 0o644)
    }
}

/// Maps rot-core's reconstruction error into the agent's, keeping the failure opaque.
pub(crate) fn from_reconstruct(error: ReconstructError, silicon_name: &str) -> AgentError {
    match error {
        ReconstructError::Silicon(e) => AgentError::Silicon {
            source_name: silicon_name.to_owned(),
            problem: e.to_string(),
        },
        // The counts are filled in by `Lockout::attempt`.
        ReconstructError::Failed(_) => AgentError::ReconstructionFailed {
            failures: 0,
            limit: 0,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn failed() -> Result<(), AgentError> {
        Err(AgentError::ReconstructionFailed {
            failures: 0,
            limit: 0,
        })
    }

    #[test]
    fn locks_after_the_limit_and_never_calls_the_extractor_again() {
        let dir = tempfile::tempdir().unwrap();
        let lockout = Lockout::with_limit(&StateDir::new(dir.path()), 3);
        for expected in 1..=3 {
            match lockout.attempt(failed) {
                Err(AgentError::ReconstructionFailed { failures, limit }) => {
                    assert_eq!((failures, limit), (expected, 3));
                }
                other => panic!("{other:?}"),
            }
        }
        let mut called = false;
        let error = lockout
            .attempt(|| {
                called = true;
                Ok(())
            })
            .unwrap_err();
        assert!(!called);
        assert!(matches!(error, AgentError::LockedOut { failures: 3, .. }));
        assert!(error.to_string().contains("device-agent unlock"), "{error}");
        // The counter survives the process: a new Lockout reads the file.
        assert_eq!(
            Lockout::new(&StateDir::new(dir.path())).failures().unwrap(),
            3
        );
        lockout.clear().unwrap();
        lockout.attempt(|| Ok(())).unwrap();
    }

    #[test]
    fn a_success_resets_and_a_read_failure_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let lockout = Lockout::with_limit(&StateDir::new(dir.path()), 3);
        lockout.attempt(failed).unwrap_err();
        lockout.attempt(failed).unwrap_err();
        assert_eq!(lockout.failures().unwrap(), 2);
        lockout
            .attempt::<()>(|| {
                Err(AgentError::Silicon {
                    source_name: "test".into(),
                    problem: "absent".into(),
                })
            })
            .unwrap_err();
        assert_eq!(lockout.failures().unwrap(), 2);
        lockout.attempt(|| Ok(())).unwrap();
        assert_eq!(lockout.failures().unwrap(), 0);
    }

    #[test]
    fn the_attempt_is_counted_before_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let lockout = Lockout::with_limit(&StateDir::new(dir.path()), 3);
        // What a power cut during the attempt would leave on disk.
        lockout
            .attempt(|| {
                assert_eq!(lockout.failures().unwrap(), 1);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_garbled_counter_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::write(state.path(state::FAILURES), "many").unwrap();
        let lockout = Lockout::new(&state);
        assert!(matches!(
            lockout.attempt(|| Ok(())),
            Err(AgentError::CorruptState { .. })
        ));
        lockout.clear().unwrap();
        lockout.attempt(|| Ok(())).unwrap();
    }
}
