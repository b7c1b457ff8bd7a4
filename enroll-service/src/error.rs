//! The service's error type and its one mapping to the wire (`impl From<&ServiceError> for
//! tonic::Status`).
//!
//! Operators get precise messages: the field, the record, the reason. Devices never see these
//! for business outcomes (unknown device, bad proof…): those are [`crate::service::Refusal`]s,
//! sent as a final stream message with deliberately coarse reasons.

use tonic::{Code, Status};

use crate::policy::PolicyError;
use crate::store::StoreError;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A malformed field; `field` is the request field path.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// Field path, e.g. `hello.device_id`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A message larger than the size limit.
    #[error("{0}")]
    OutOfRange(String),
    /// A message out of protocol order.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The named resource does not exist, or belongs to another owner.
    #[error("{0} not found")]
    NotFound(String),
    /// A resource with that name exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The resource is not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No or unusable client certificate.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role or owner does not allow the call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A limit on concurrency or rate was hit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The peer was too slow.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The client went away mid-call (it cancelled, or its stream broke off).
    #[error("{0}")]
    Cancelled(String),
    /// The registry or a dependency cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or unexpected failure. The message is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// A malformed field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ServiceError {
    /// An error the client's request stream produced (tonic decodes before the handler sees a
    /// message). An oversized message keeps tonic's OUT_OF_RANGE and its text, which says how
    /// large the message was and what the limit is; one that does not decode is a malformed
    /// request; a client that cancelled, ran out of time or whose stream broke off is not (logs
    /// and metrics must not count a disconnect as a bad request).
    #[must_use]
    pub fn from_client_stream(status: &Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::OutOfRange => Self::OutOfRange(message),
            Code::InvalidArgument => Self::Protocol(format!("stream error: {message}")),
            Code::DeadlineExceeded => Self::DeadlineExceeded(message),
            _ => Self::Cancelled(format!("the request stream ended: {message}")),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            // The detail names the service's disk or database host and its errors: logged
            // here; the peer (a device, any owner's operator) hears only that it may retry.
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "registry unavailable");
                Self::Unavailable("the registry is unavailable; retry later".into())
            }
            // A concurrent writer kept winning past the handler's re-reads (another replica
            // busy with the same record): the client's retry will find it settled.
            StoreError::Conflict(c) if c.is_concurrent_change() => {
                Self::Unavailable(format!("{c}; retry"))
            }
            // Any other conflict that reaches a caller is one the handler did not expect (it
            // checks the guards it relies on first): a failed precondition, said precisely.
            StoreError::Conflict(c) => Self::FailedPrecondition(c.to_string()),
            StoreError::Corrupt { .. } | StoreError::Unrecordable(_) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<PolicyError> for ServiceError {
    fn from(e: PolicyError) -> Self {
        Self::InvalidArgument {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<crate::pki::PkiError> for ServiceError {
    fn from(e: crate::pki::PkiError) -> Self {
        match e {
            // A CA key store that went away: retry later, as with a registry that cannot write.
            // Its detail names the module, tokens and keys of the service's host: logged here,
            // and the peer (a device, any owner's operator) hears only that it may retry.
            crate::pki::PkiError::Signer(crate::pki::SignerError::Unavailable(detail)) => {
                tracing::warn!(%detail, "CA key store unavailable");
                Self::Unavailable("the CA key store is unavailable; retry later".into())
            }
            other => Self::Internal(format!("certificate authority: {other}")),
        }
    }
}

impl From<crate::firmware::mcuboot::ImageError> for ServiceError {
    fn from(e: crate::firmware::mcuboot::ImageError) -> Self {
        use crate::firmware::mcuboot::ImageError;
        match e {
            ImageError::Signer(e) => crate::pki::PkiError::Signer(e).into(),
            other => Self::invalid("payload", other.to_string()),
        }
    }
}

impl From<&ServiceError> for Status {
    fn from(e: &ServiceError) -> Self {
        let code = match e {
            ServiceError::InvalidArgument { .. } | ServiceError::Protocol(_) => {
                Code::InvalidArgument
            }
            ServiceError::OutOfRange(_) => Code::OutOfRange,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::AlreadyExists(_) => Code::AlreadyExists,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServiceError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ServiceError::Cancelled(_) => Code::Cancelled,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::Internal(_) => Code::Internal,
        };
        if let ServiceError::Internal(detail) = e {
            // Internal details can name files and records; they go to the log, not the peer.
            tracing::error!(%detail, "internal error");
            return Status::new(code, "internal error; see the service log");
        }
        Status::new(code, e.to_string())
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        Self::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_stay_in_the_log() {
        let status = Status::from(ServiceError::Internal("/var/lib/oxroot/db: EIO".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/var/lib"));
    }

    #[test]
    fn a_client_that_went_away_is_not_a_malformed_request() {
        let code = |status: Status| Status::from(ServiceError::from_client_stream(&status)).code();
        assert_eq!(code(Status::cancelled("h2 reset")), Code::Cancelled);
        assert_eq!(code(Status::unknown("connection lost")), Code::Cancelled);
        assert_eq!(
            code(Status::deadline_exceeded("late")),
            Code::DeadlineExceeded
        );
        assert_eq!(
            code(Status::invalid_argument("bad protobuf")),
            Code::InvalidArgument
        );
        assert_eq!(code(Status::out_of_range("too large")), Code::OutOfRange);
    }

    #[test]
    fn key_store_details_stay_in_the_log() {
        let error = crate::pki::PkiError::Signer(crate::pki::SignerError::Unavailable(
            "C_Login: CKR_TOKEN_NOT_PRESENT (module /usr/lib/softhsm/libsofthsm2.so)".into(),
        ));
        let status = Status::from(ServiceError::from(error));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("softhsm"), "{status:?}");
        assert!(status.message().contains("retry"), "{status:?}");
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(ServiceError::invalid("hello.epk", "must be 65 bytes"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "hello.epk: must be 65 bytes");
    }

    #[test]
    fn store_errors_map_to_retryable_codes_without_their_detail() {
        let status = Status::from(ServiceError::from(StoreError::Unavailable(
            "PostgreSQL connection: error connecting to db.internal:5432".into(),
        )));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("db.internal"), "{status:?}");
        assert!(status.message().contains("retry"), "{status:?}");
    }
}
