//! The TLS channel to the service, the same for every client (the device agent, `enrollctl`,
//! the load generator).
//!
//! The given root is the only trust anchor: no system store, no switch to skip verification.
//! Devices pin the root they were given at provisioning; operators the one in their profile.
//! Misconfigurations fail here with a message that names the file or the flag, not later as
//! an opaque handshake error.

use std::error::Error;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A TCP connect or TLS handshake slower than this counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A `--service` URL that is not `https://HOST[:PORT]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--service {url:?}: {problem}")]
pub struct InvalidServiceUrl {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub problem: String,
}

/// The endpoint for a service URL, which must be `https://`: the service speaks TLS only.
///
/// # Errors
/// [`InvalidServiceUrl`] naming the problem.
pub fn service_endpoint(url: &str) -> Result<Endpoint, InvalidServiceUrl> {
    let invalid = |problem: String| InvalidServiceUrl {
        url: url.to_owned(),
        problem,
    };
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| invalid(error_chain(&e)))?;
    match endpoint.uri().scheme_str() {
        Some("https") => {}
        Some(other) => {
            return Err(invalid(format!(
                "scheme {other:?} is not supported; the service speaks TLS only \
                 (https://HOST:PORT)"
            )));
        }
        None => return Err(invalid(format!("give a URL, e.g. https://{url}"))),
    }
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(invalid("no host".to_owned()));
    }
    Ok(endpoint)
}

/// Checks that PEM bytes hold at least one certificate and that every one parses; returns how
/// many there are.
///
/// rustls silently skips trust anchors it cannot parse, which would turn a wrong root file
/// into an opaque "unknown issuer" during the handshake; checking first lets the caller name
/// the file instead.
///
/// # Errors
/// What is wrong, for the caller to prefix with the file's name.
pub fn check_certificates(pem_bytes: &[u8]) -> Result<usize, String> {
    let blocks = pem::parse_many(pem_bytes).map_err(|e| format!("not PEM: {e}"))?;
    let mut certificates = 0;
    for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
        x509_parser::parse_x509_certificate(block.contents())
            .map_err(|e| format!("certificate {} does not parse: {e}", certificates + 1))?;
        certificates += 1;
    }
    if certificates == 0 {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".to_owned());
    }
    Ok(certificates)
}

/// `endpoint` with TLS pinned to `root_pem` (and the client's identity for mutual TLS), the
/// connect timeout and `TCP_NODELAY`. Connect it once ([`connect`]) or many times.
///
/// # Errors
/// tonic's refusal of the TLS configuration (an unusable identity).
pub fn tls_endpoint(
    endpoint: Endpoint,
    root_pem: &[u8],
    identity: Option<Identity>,
) -> Result<Endpoint, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(root_pem));
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Ok(endpoint
        .tls_config(tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true))
}

/// Why a channel could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The service's certificate does not chain to the pinned root, or does not name the host.
    #[error(
        "its TLS certificate does not chain to the pinned root or does not name the host ({0})"
    )]
    Untrusted(String),
    /// TCP or TLS failed for another reason (refused, timed out, reset).
    #[error("{0}")]
    Unreachable(String),
}

impl ConnectError {
    /// The transport's own account of what failed, causes included.
    #[must_use]
    pub fn detail(&self) -> &str {
        match self {
            Self::Untrusted(detail) | Self::Unreachable(detail) => detail,
        }
    }

    /// Classifies a transport error by its whole cause chain: rustls reports a certificate it
    /// rejects several levels down.
    #[must_use]
    pub fn classify(error: &dyn Error) -> Self {
        let detail = error_chain(error);
        if detail.contains("invalid peer certificate") || detail.contains("InvalidCertificate") {
            Self::Untrusted(detail)
        } else {
            Self::Unreachable(detail)
        }
    }
}

/// Opens the channel: TCP, TLS, HTTP/2.
///
/// # Errors
/// [`ConnectError`], classified.
pub async fn connect(endpoint: &Endpoint) -> Result<Channel, ConnectError> {
    endpoint
        .connect()
        .await
        .map_err(|e| ConnectError::classify(&e))
}

/// An error and its causes on one line, each cause once: transport errors put the useful part
/// (connection refused, unknown issuer) several levels down.
#[must_use]
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_host_are_accepted() {
        for good in [
            "https://127.0.0.1:50051",
            "https://[::1]:50051",
            "https://localhost",
        ] {
            assert!(service_endpoint(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("http://127.0.0.1:50051", "scheme \"http\" is not supported"),
            (
                "127.0.0.1:50051",
                "give a URL, e.g. https://127.0.0.1:50051",
            ),
            ("", "--service \"\""),
            ("https://", "--service \"https://\""),
        ] {
            let error = service_endpoint(bad).unwrap_err();
            assert!(error.to_string().contains(says), "{bad}: {error}");
            assert!(error.to_string().starts_with("--service "), "{error}");
        }
    }

    #[test]
    fn certificate_files_are_checked_before_rustls_sees_them() {
        let good = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .unwrap()
            .cert
            .pem();
        assert_eq!(check_certificates(good.as_bytes()).unwrap(), 1);
        assert_eq!(
            check_certificates(format!("{good}{good}").as_bytes()).unwrap(),
            2
        );
        for (bad, says) in [
            ("", "no PEM certificate"),
            ("hello", "no PEM certificate"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "certificate 1 does not parse",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "no PEM certificate",
            ),
        ] {
            let problem = check_certificates(bad.as_bytes()).unwrap_err();
            assert!(problem.contains(says), "{bad:?}: {problem}");
        }
    }

    #[test]
    fn error_chain_joins_causes_without_repeating_them() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("/x")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_chain(&Outer(refused())), "/x: refused");
        let classified = ConnectError::classify(&Outer(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        )));
        assert!(
            matches!(classified, ConnectError::Untrusted(_)),
            "{classified}"
        );
        assert!(matches!(
            ConnectError::classify(&Outer(refused())),
            ConnectError::Unreachable(_)
        ));
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .unwrap()
            .cert
            .pem();
        let endpoint = tls_endpoint(
            service_endpoint(&format!("https://127.0.0.1:{port}")).unwrap(),
            root.as_bytes(),
            None,
        )
        .unwrap();
        let error = connect(&endpoint).await.unwrap_err();
        assert!(matches!(error, ConnectError::Unreachable(_)), "{error}");
    }
}
