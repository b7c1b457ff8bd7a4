//! The TLS channel to the enrolment service, and bounded retries with backoff.
//!
//! The given root is the only trust anchor: no system store and no switch to skip
//! verification (devices "pin the oxroot root certificate they were given at provisioning").
//! Transport failures and UNAVAILABLE-like statuses are retried a bounded number of times;
//! refusals, rejected requests and trust failures are not, because they would only repeat.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use oxroot_client::channel::{self, ConnectError};
use oxroot_proto::v1::device_enrollment_client::DeviceEnrollmentClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::error::{AgentError, chain};

/// Longest pause between two attempts, however many doublings.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest message the agent reads from the service: a firmware offer (an image of up to 3 MiB,
/// its manifest and signer chain) with room to spare.
const MAX_SERVICE_MESSAGE: usize = 8 * 1024 * 1024;

/// Where the service is and which root it must chain to.
#[derive(Clone, Debug)]
pub struct ServiceTarget {
    url: String,
    endpoint: Endpoint,
}

impl ServiceTarget {
    /// Checks the URL (`https://HOST:PORT` only) and reads the root certificate.
    ///
    /// # Errors
    /// [`AgentError::Usage`] for the URL, [`AgentError::File`] for an unreadable CA file or
    /// one without a parsable certificate (rustls would skip it silently and fail later with
    /// an opaque "unknown issuer").
    pub fn new(url: &str, ca: &Path) -> Result<Self, AgentError> {
        let endpoint =
            channel::service_endpoint(url).map_err(|e| AgentError::Usage(e.to_string()))?;
        let file_problem = |problem: String| AgentError::File {
            path: ca.to_owned(),
            problem,
        };
        let root_pem = std::fs::read(ca)
            .map_err(|e| file_problem(format!("cannot read the root certificate: {e}")))?;
        channel::check_certificates(&root_pem).map_err(file_problem)?;
        let endpoint = channel::tls_endpoint(endpoint, &root_pem, None)
            .map_err(|e| AgentError::Usage(format!("TLS configuration: {}", chain(&e))))?;
        Ok(Self {
            url: url.to_owned(),
            endpoint,
        })
    }

    /// The service URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens the channel (TCP, TLS pinned to the root, HTTP/2).
    ///
    /// # Errors
    /// [`AgentError::Untrusted`] when the service's certificate does not chain to the root or
    /// is not valid for the host; [`AgentError::Unavailable`] otherwise.
    pub async fn connect(&self) -> Result<DeviceEnrollmentClient<Channel>, AgentError> {
        let channel = channel::connect(&self.endpoint)
            .await
            .map_err(|e| self.connect_error(e))?;
        // A firmware offer carries an image of up to 3 MiB beside its manifest and chain.
        Ok(DeviceEnrollmentClient::new(channel).max_decoding_message_size(MAX_SERVICE_MESSAGE))
    }

    fn connect_error(&self, error: ConnectError) -> AgentError {
        match error {
            error @ ConnectError::Untrusted(_) => AgentError::Untrusted {
                target: self.url.clone(),
                detail: format!("{error}; check --service and --ca"),
            },
            ConnectError::Unreachable(detail) => AgentError::Unavailable {
                target: self.url.clone(),
                detail,
            },
        }
    }

    /// Maps a gRPC status: transient codes become [`AgentError::Unavailable`] (retried), the
    /// others [`AgentError::Rejected`] with the service's message.
    #[must_use]
    pub fn status_error(&self, status: &tonic::Status) -> AgentError {
        match status.code() {
            Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::ResourceExhausted => {
                let source = std::error::Error::source(status)
                    .map(|s| format!(" ({})", chain(s)))
                    .unwrap_or_default();
                if source.contains("invalid peer certificate") {
                    return self.connect_error(ConnectError::classify(status));
                }
                AgentError::Unavailable {
                    target: self.url.clone(),
                    detail: format!("{:?}: {}{source}", status.code(), status.message()),
                }
            }
            code => AgentError::Rejected(format!("{code:?}: {}", status.message())),
        }
    }
}

/// How often to retry a dropped or refused connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts after the first.
    pub retries: u32,
    /// Pause before the first retry; doubled each time, at most 30 s.
    pub initial_backoff: Duration,
}

impl Retry {
    /// Runs `attempt` with a fresh connection until it succeeds, fails with a non-transient
    /// error, or the retries are spent. Each retry is reported on `notes`.
    ///
    /// # Errors
    /// The last attempt's error.
    pub async fn run<T>(
        &self,
        target: &ServiceTarget,
        notes: &mut dyn Write,
        mut attempt: impl AsyncFnMut(&mut DeviceEnrollmentClient<Channel>) -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        let mut backoff = self.initial_backoff;
        let mut tries = 0;
        loop {
            let result = match target.connect().await {
                Ok(mut client) => attempt(&mut client).await,
                Err(e) => Err(e),
            };
            match result {
                Err(error) if error.is_transient() && tries < self.retries => {
                    tries += 1;
                    let _ = writeln!(
                        notes,
                        "warning: {error}; retrying in {} ms (retry {tries} of {})",
                        backoff.as_millis(),
                        self.retries
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    /// Writes a self-signed root certificate (PEM) to `path`; returns its key.
    fn write_self_signed_root(path: &std::path::Path) -> rcgen::KeyPair {
        let key = rcgen::KeyPair::generate().unwrap();
        let root = rcgen::CertificateParams::new(vec!["root".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(path, root.pem()).unwrap();
        key
    }

    #[test]
    fn only_https_urls_with_a_readable_root_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("root.pem");
        let key = write_self_signed_root(&ca);
        assert!(ServiceTarget::new("https://127.0.0.1:8443", &ca).is_ok());
        for url in ["http://127.0.0.1:8443", "127.0.0.1:8443", "https://"] {
            assert!(
                matches!(ServiceTarget::new(url, &ca), Err(AgentError::Usage(_))),
                "{url}"
            );
        }
        let missing = ServiceTarget::new("https://h:1", &dir.path().join("nope.pem"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.pem"), "{missing}");
        std::fs::write(&ca, key.serialize_pem()).unwrap();
        let not_a_cert = ServiceTarget::new("https://h:1", &ca)
            .unwrap_err()
            .to_string();
        assert!(not_a_cert.contains("no PEM certificate"), "{not_a_cert}");
    }

    #[tokio::test]
    async fn retries_are_bounded_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("root.pem");
        write_self_signed_root(&ca);
        // A port nobody listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = ServiceTarget::new(&format!("https://127.0.0.1:{port}"), &ca).unwrap();
        let retry = Retry {
            retries: 2,
            initial_backoff: Duration::from_millis(1),
        };
        let mut notes = Vec::new();
        let mut calls = 0;
        let error = retry
            .run(&target, &mut notes, async |_| {
                calls += 1;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 0);
        assert!(matches!(error, AgentError::Unavailable { .. }), "{error}");
        let notes = String::from_utf8(notes).unwrap();
        assert_eq!(notes.matches("retrying in").count(), 2, "{notes}");
    }
}
