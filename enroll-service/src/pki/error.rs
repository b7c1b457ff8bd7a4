//! The PKI module's error type.

use std::path::PathBuf;

/// Everything that can go wrong in [`crate::pki`].
///
/// Messages are meant for operators: they name the input that was refused and why. The one
/// deliberate exception is [`PkiError::KeyDecryption`], which stays opaque so that a wrong
/// passphrase cannot be told apart from a tampered file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The encrypted CA key could not be opened. Covers a wrong passphrase, a truncated or
    /// modified file, and a file that is not in the `OXKEY1` format at all.
    #[error("CA key could not be decrypted: wrong passphrase or corrupted file")]
    KeyDecryption,
    /// An empty passphrase was supplied for encrypting or decrypting a CA key.
    #[error("the CA key passphrase is empty")]
    EmptyPassphrase,
    /// The PBKDF2 iteration count is outside the accepted range.
    #[error("PBKDF2 iteration count {0} is outside 1..={max}", max = super::keystore::MAX_PBKDF2_ITERATIONS)]
    InvalidIterations(u32),
    /// A public key handed in for a certificate is not an uncompressed P-256 point.
    #[error("public key is not an uncompressed P-256 point (65 bytes, 0x04 ‖ x ‖ y, on the curve)")]
    InvalidPublicKey,
    /// Serial numbers must be positive (RFC 5280 §4.1.2.2).
    #[error("certificate serial number must be non-zero")]
    ZeroSerial,
    /// Not a serial as this service writes them: 1 to 32 lowercase hex digits, no leading zero.
    #[error("{0:?} is not a serial number (1 to 32 lowercase hex digits, no leading zero)")]
    InvalidSerial(String),
    /// `not_after` is not later than `not_before`.
    #[error(
        "validity period is empty: not_after ({not_after}) is not after not_before ({not_before})"
    )]
    InvalidValidity {
        /// Requested start.
        not_before: time::OffsetDateTime,
        /// Requested end.
        not_after: time::OffsetDateTime,
    },
    /// The CRL's `next_update` is not later than `this_update`.
    #[error("CRL next_update ({next_update}) is not after this_update ({this_update})")]
    InvalidCrlPeriod {
        /// Issue time of the CRL.
        this_update: time::OffsetDateTime,
        /// Promised time of the next CRL.
        next_update: time::OffsetDateTime,
    },
    /// A subject common name is empty or longer than X.520 allows (64 characters).
    #[error("subject common name must be 1..=64 characters, got {0} characters")]
    InvalidCommonName(usize),
    /// An operator owner name contains characters that would break the operator URN.
    #[error(
        "operator owner {0:?} is invalid: use \"*\" or 1..=63 characters from a-z 0-9 - starting with a letter or digit"
    )]
    InvalidOwner(String),
    /// An operator name is empty, too long, or has characters outside `[A-Za-z0-9._@-]`.
    #[error(
        "operator name {0:?} is invalid: use 1..=64 characters from A-Z a-z 0-9 . _ @ -, and not 64 hex digits (a DeviceId)"
    )]
    InvalidOperatorName(String),
    /// A DNS name for the server certificate is not a valid IA5 string.
    #[error("server name {0:?} is not a valid DNS name")]
    InvalidDnsName(String),
    /// No names were given for a server certificate.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerNames,
    /// PEM or DER input could not be parsed.
    #[error("{what} could not be parsed: {reason}")]
    Parse {
        /// Which input (e.g. "root certificate").
        what: &'static str,
        /// The parser's explanation.
        reason: String,
    },
    /// A certificate that must be a CA is not one.
    #[error("{0} is not a CA certificate (basicConstraints CA:TRUE missing)")]
    NotCa(&'static str),
    /// The intermediate certificate does not chain to the given root.
    #[error("the intermediate certificate is not issued by the root: {0}")]
    NotIssuedByRoot(String),
    /// A private key does not belong to the certificate it was paired with.
    #[error("the {0} private key does not match its certificate")]
    KeyMismatch(&'static str),
    /// A certificate does not carry a well-formed oxroot operator identity.
    #[error("not an oxroot operator certificate: {0}")]
    NotOperatorCertificate(String),
    /// The CA key's store did not sign (a token that went away: [`super::SignerError::Unavailable`]).
    #[error(transparent)]
    Signer(#[from] super::SignerError),
    /// rcgen refused to build or sign a certificate or CRL.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A file of the CA directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl PkiError {
    pub(crate) fn parse(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Parse {
            what,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
