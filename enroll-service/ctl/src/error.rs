//! What can go wrong in `enrollctl`, and the one place where a failure becomes an exit code.

use std::io;
use std::path::PathBuf;

use super::import::ImportFileError;
use super::output::JsonError;

/// How `enrollctl` ends. Scripts branch on these, so they are part of the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exit {
    /// 0: done.
    Success,
    /// 1: anything not covered below (local I/O, a service bug, an unexpected answer).
    Failure,
    /// 2: the command line or its input is wrong (clap errors, bad durations, an unreadable
    /// import file, the service's INVALID_ARGUMENT / OUT_OF_RANGE): fix it before retrying.
    Usage,
    /// 3: refused: not allowed, not found, already exists, wrong state, or a broken audit
    /// chain. Retrying the same command will not help.
    Refused,
    /// 4: the service is unreachable, unavailable or overloaded: retry later with backoff.
    Unavailable,
}

impl Exit {
    /// The process exit code.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Usage => 2,
            Self::Refused => 3,
            Self::Unavailable => 4,
        }
    }

    /// The exit code for a gRPC status code.
    #[must_use]
    pub const fn for_code(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::Ok => Self::Success,
            Code::InvalidArgument | Code::OutOfRange => Self::Usage,
            Code::PermissionDenied
            | Code::Unauthenticated
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition => Self::Refused,
            // Transient by the contract's own words ("retry with backoff"); ABORTED is a
            // concurrency conflict, also worth a retry.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted => Self::Unavailable,
            Code::Cancelled
            | Code::Unknown
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => Self::Failure,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit.code())
    }
}

/// The canonical name of a gRPC status code, as other gRPC tools print it (`NOT_FOUND`).
#[must_use]
pub const fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A failed `enrollctl` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// The command line is incomplete or contradictory beyond what clap checks.
    #[error("{0}")]
    Usage(String),
    /// The service answered an RPC with an error status.
    #[error("{rpc}: {}: {}", code_name(.status.code()), status_message(.status))]
    Rpc {
        /// The RPC, e.g. `GetPolicy`.
        rpc: &'static str,
        /// The status.
        status: tonic::Status,
    },
    /// No connection could be made (address, TCP, or TLS handshake).
    #[error("cannot connect to {service}: {detail}")]
    Connect {
        /// The URL.
        service: String,
        /// The transport error and its causes.
        detail: String,
    },
    /// A credential file is not what its option says it is.
    #[error("{}: {problem}", .path.display())]
    Credential {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An output file exists and enrollctl does not overwrite it.
    #[error("{} already exists; not overwriting it", .0.display())]
    Exists(PathBuf),
    /// An import file could not be read at all.
    #[error("{}: {source}", .path.display())]
    ImportFile {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: ImportFileError,
    },
    /// The operator key or its CSR could not be made.
    #[error("generating the operator key: {0}")]
    KeyGeneration(String),
    /// The service answered something this client will not act on.
    #[error("unexpected answer from the service: {0}")]
    BadAnswer(String),
    /// The audit chain does not verify (the result itself was printed on stdout).
    #[error("audit chain broken at seq {first_bad_seq}: {problem}")]
    AuditChainBroken {
        /// First entry that fails.
        first_bad_seq: u64,
        /// What failed.
        problem: String,
    },
    /// Some import records were rejected (the report was printed on stdout); the others are
    /// in the batch.
    #[error("{0} record(s) rejected; the report lists each with its line")]
    Rejected(u64),
    /// A result could not be written in the proto3 JSON mapping (`--json`).
    #[error("printing JSON: {0}")]
    Json(#[from] JsonError),
    /// Writing to stdout failed.
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

impl CtlError {
    /// The exit code this failure ends the process with.
    #[must_use]
    pub fn exit(&self) -> Exit {
        match self {
            Self::Usage(_) | Self::Credential { .. } | Self::ImportFile { .. } => Exit::Usage,
            Self::Rpc { status, .. } => Exit::for_code(status.code()),
            Self::Connect { .. } => Exit::Unavailable,
            Self::AuditChainBroken { .. } | Self::Rejected(_) => Exit::Refused,
            Self::Io { .. }
            | Self::Exists(_)
            | Self::KeyGeneration(_)
            | Self::BadAnswer(_)
            | Self::Json(_)
            | Self::Output(_) => Exit::Failure,
        }
    }

    /// Wraps an RPC's error status.
    pub fn rpc(rpc: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Rpc { rpc, status }
    }

    /// Wraps a failed file operation.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// The error as one JSON object, for `--json` mode's stderr.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "message": self.to_string(),
            "exit_code": self.exit().code(),
        });
        if let Self::Rpc { rpc, status } = self {
            error["rpc"] = (*rpc).into();
            error["grpc_code"] = code_name(status.code()).into();
            error["grpc_message"] = status_message(status).into();
        }
        serde_json::json!({ "error": error })
    }

    /// True for a closed stdout (`enrollctl … | head`): nothing is wrong worth printing.
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// The status message, followed by its causes: a transport failure's message alone is often
/// just "transport error", while the cause says "connection refused" or which certificate
/// check failed.
fn status_message(status: &tonic::Status) -> String {
    let mut message = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        source = cause.source();
    }
    if message.is_empty() {
        message.push_str("(no message)");
    }
    message
}

/// An error and its causes on one line (one helper for every client).
pub(crate) use oxroot_client::channel::error_chain as chain;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const ALL_CODES: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    #[test]
    fn every_grpc_code_maps_to_the_documented_exit_code() {
        let expected = |code: Code| match code {
            Code::Ok => 0,
            Code::InvalidArgument | Code::OutOfRange => 2,
            Code::PermissionDenied
            | Code::Unauthenticated
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition => 3,
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted => 4,
            _ => 1,
        };
        for code in ALL_CODES {
            assert_eq!(Exit::for_code(code).code(), expected(code), "{code:?}");
        }
    }

    #[test]
    fn code_names_are_the_canonical_ones() {
        for code in ALL_CODES {
            // tonic's Debug is CamelCase; the canonical name is its SCREAMING_SNAKE form.
            let mut snake = String::new();
            for (i, c) in format!("{code:?}").chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_uppercase());
            }
            assert_eq!(code_name(code), snake);
        }
    }

    #[test]
    fn rpc_errors_carry_code_and_message() {
        let error = CtlError::Rpc {
            rpc: "GetPolicy",
            status: tonic::Status::not_found("policy \"p\" not found"),
        };
        assert_eq!(
            error.to_string(),
            "GetPolicy: NOT_FOUND: policy \"p\" not found"
        );
        assert_eq!(error.exit(), Exit::Refused);
        let json = error.to_json();
        assert_eq!(json["error"]["grpc_code"], "NOT_FOUND");
        assert_eq!(json["error"]["rpc"], "GetPolicy");
        assert_eq!(json["error"]["exit_code"], 3);
    }

    #[test]
    fn local_failures_have_their_own_exit_codes() {
        assert_eq!(CtlError::Usage("x".into()).exit(), Exit::Usage);
        assert_eq!(
            CtlError::Connect {
                service: "https://h".into(),
                detail: "refused".into()
            }
            .exit(),
            Exit::Unavailable
        );
        assert_eq!(
            CtlError::AuditChainBroken {
                first_bad_seq: 3,
                problem: "hash mismatch".into()
            }
            .exit(),
            Exit::Refused
        );
        assert_eq!(CtlError::Exists("f".into()).exit(), Exit::Failure);
        let broken = CtlError::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(broken.is_broken_pipe());
    }

    #[test]
    fn empty_status_messages_are_visible() {
        let error = CtlError::Rpc {
            rpc: "WhoAmI",
            status: tonic::Status::new(Code::Internal, ""),
        };
        assert_eq!(error.to_string(), "WhoAmI: INTERNAL: (no message)");
    }
}
