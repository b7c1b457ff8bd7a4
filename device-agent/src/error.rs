//! The agent's one error type: what went wrong, said for the operator at the device, and the
//! exit code it maps to.
//!
//! Messages on the API path are rich (which file, which flag, what the service said); those on
//! the crypto path are opaque on purpose: a failed key reconstruction says only that it failed,
//! because any detail would help an attacker who is probing the helper data.

use std::path::PathBuf;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: an unexpected failure (a bug, or the system refused something basic).
pub const EXIT_INTERNAL: u8 = 1;
/// Exit code: bad usage or input: flags, files, a missing or corrupted state directory.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: refused: by the service (with its reason), by the broker, or by the agent's own
/// safety checks (already enrolled, inconsistent credential).
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: the service or broker could not be reached or is not the one the root pins.
pub const EXIT_UNAVAILABLE: u8 = 4;
/// Exit code: the silicon: unreadable, key reconstruction failed, or locked out.
pub const EXIT_SILICON: u8 = 5;

/// Everything that can make a command fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A flag or argument is wrong or missing.
    #[error("{0}")]
    Usage(String),
    /// A file the operator named (CA, export target, silicon file) cannot be used.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The state directory does not exist or holds no helper data.
    #[error(
        "this device is not enrolled: no helper data in {state} (run `device-agent enroll`, or \
         point --state / OXROOT_AGENT_STATE at the right directory)"
    )]
    NotEnrolled {
        /// The state directory.
        state: PathBuf,
    },
    /// The device has no stored credential yet.
    #[error("no credential in {state}: run `device-agent onboard` first")]
    NoCredential {
        /// The state directory.
        state: PathBuf,
    },
    /// A state file exists but cannot be used.
    #[error("{path}: {problem}")]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// `enroll` found helper data and `--force` was not given.
    #[error(
        "this device is already enrolled (helper data in {path}); enrolling again gives it a new \
         identity, which its registration and credentials do not know. Pass --force to re-enrol \
         anyway"
    )]
    AlreadyEnrolled {
        /// The existing helper data.
        path: PathBuf,
    },
    /// The silicon could not be read.
    #[error("the silicon ({source_name}) could not be read: {problem}")]
    Silicon {
        /// The silicon source, as `id --json` names it (never a secret).
        source_name: String,
        /// What went wrong.
        problem: String,
    },
    /// Key reconstruction failed. Deliberately says nothing about why.
    #[error(
        "key reconstruction failed ({failures} consecutive failure(s); the agent locks after \
         {limit})"
    )]
    ReconstructionFailed {
        /// Consecutive failures so far, this one included.
        failures: u32,
        /// Failures that lock the agent.
        limit: u32,
    },
    /// Too many consecutive reconstruction failures: the agent refuses to try again.
    #[error(
        "key reconstruction is locked after {failures} consecutive failures: each failure is a \
         query an attacker who rewrites the helper data can learn from. Check the helper data \
         and the operating conditions, then clear the lock with `device-agent unlock` \
         (counter in {path})"
    )]
    LockedOut {
        /// Consecutive failures recorded.
        failures: u32,
        /// The counter file.
        path: PathBuf,
    },
    /// The service (or broker) could not be reached, or the connection dropped.
    #[error("cannot reach {target}: {detail}")]
    Unavailable {
        /// The URL or host:port.
        target: String,
        /// The transport's description.
        detail: String,
    },
    /// TLS to the service or broker failed its certificate checks.
    #[error("{target} is not trusted: {detail}")]
    Untrusted {
        /// The URL or host:port.
        target: String,
        /// Why.
        detail: String,
    },
    /// The service answered with a refusal.
    #[error("the service refused: {reason}: {message} (reference {reference})")]
    Refused {
        /// The coarse reason, as the contract names it.
        reason: String,
        /// The service's text for device logs.
        message: String,
        /// Operators look this up in the audit log.
        reference: String,
    },
    /// A firmware release failed a check and was not installed.
    #[error("the firmware release was refused: {0}")]
    FirmwareRefused(String),
    /// The service rejected the request itself (a gRPC error other than unavailability).
    #[error("the service rejected the request: {0}")]
    Rejected(String),
    /// The service's answer breaks the protocol or does not match this device.
    #[error("unexpected answer from the service: {0}")]
    Protocol(String),
    /// A stored or received credential is not consistent with this device.
    #[error("credential check failed: {0}")]
    Credential(String),
    /// The broker refused the connection, a subscription or a publish.
    #[error("the broker refused: {0}")]
    BrokerRefused(String),
    /// The TLS handshake with the broker failed on the device's side: the broker offered a
    /// version or parameters the credential does not allow, or the device could not sign.
    #[error("TLS with {target} failed: {problem}")]
    TlsHandshake {
        /// The URL or host:port.
        target: String,
        /// What the device refused or could not do.
        problem: String,
    },
}

impl AgentError {
    /// The process exit code for this error (see the crate documentation for the table).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_)
            | Self::File { .. }
            | Self::NotEnrolled { .. }
            | Self::NoCredential { .. }
            | Self::CorruptState { .. } => EXIT_USAGE,
            Self::Io { .. } => EXIT_INTERNAL,
            Self::AlreadyEnrolled { .. }
            | Self::Refused { .. }
            | Self::Rejected(_)
            | Self::Protocol(_)
            | Self::Credential(_)
            | Self::FirmwareRefused(_)
            | Self::BrokerRefused(_)
            | Self::TlsHandshake { .. } => EXIT_REFUSED,
            Self::Unavailable { .. } | Self::Untrusted { .. } => EXIT_UNAVAILABLE,
            Self::Silicon { .. } | Self::ReconstructionFailed { .. } | Self::LockedOut { .. } => {
                EXIT_SILICON
            }
        }
    }

    /// Whether trying again after a pause may succeed (a dropped or refused connection, an
    /// overloaded service), as opposed to a refusal or a trust failure that will repeat.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// An [`AgentError::Io`] for `path`, for `map_err`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// The whole `source()` chain of an error on one line (one helper for every client).
pub(crate) use oxroot_client::channel::error_chain as chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_group_by_what_the_operator_does_next() {
        assert_eq!(AgentError::Usage("x".into()).exit_code(), EXIT_USAGE);
        assert_eq!(
            AgentError::NotEnrolled { state: "/s".into() }.exit_code(),
            EXIT_USAGE
        );
        assert_eq!(
            AgentError::Refused {
                reason: "REVOKED".into(),
                message: String::new(),
                reference: "r".into()
            }
            .exit_code(),
            EXIT_REFUSED
        );
        let unavailable = AgentError::Unavailable {
            target: "https://x".into(),
            detail: "refused".into(),
        };
        assert_eq!(unavailable.exit_code(), EXIT_UNAVAILABLE);
        assert!(unavailable.is_transient());
        let untrusted = AgentError::Untrusted {
            target: "https://x".into(),
            detail: "unknown issuer".into(),
        };
        assert_eq!(untrusted.exit_code(), EXIT_UNAVAILABLE);
        assert!(!untrusted.is_transient());
        assert_eq!(
            AgentError::ReconstructionFailed {
                failures: 1,
                limit: 5
            }
            .exit_code(),
            EXIT_SILICON
        );
    }
}
