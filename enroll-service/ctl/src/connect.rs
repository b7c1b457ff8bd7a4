//! The mutual-TLS channel to the service.
//!
//! The service's root CA is the only trust anchor: no system store, no switch to skip
//! verification. An operator authenticates with a certificate the service issued; that is the
//! whole of the access control, so a misconfiguration must fail loudly here rather than turn
//! into a confusing handshake error later.

use std::path::{Path, PathBuf};

use oxroot_client::channel;
use oxroot_proto::v1::operator_client::OperatorClient;
use tonic::transport::{Channel, Endpoint, Identity};
use zeroize::Zeroizing;

use super::args::ConnectionArgs;
use super::error::{CtlError, chain};

/// Profile file names, as `operator issue` writes them.
pub(crate) const PROFILE_ROOT: &str = "root.pem";
/// The operator's certificate chain in a profile.
pub(crate) const PROFILE_CERT: &str = "operator.pem";
/// The operator's private key in a profile.
pub(crate) const PROFILE_KEY: &str = "operator.key";

/// Where to connect and with which files, after applying `--profile`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) service: String,
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Resolves the connection options: each explicit file wins over the profile's.
pub(crate) fn resolve(args: &ConnectionArgs) -> Result<Target, CtlError> {
    let from_profile = |name: &str| args.profile.as_ref().map(|dir| dir.join(name));
    let missing = |what: &str, flag: &str, env: &str| {
        CtlError::Usage(format!(
            "no {what}: pass {flag} or set {env}, or name a profile directory with --profile \
             (OXROOT_PROFILE)"
        ))
    };
    let service = args.service.clone().ok_or_else(|| {
        CtlError::Usage(
            "no service: pass --service https://HOST:PORT or set OXROOT_SERVICE".to_owned(),
        )
    })?;
    Ok(Target {
        service,
        ca: args
            .ca
            .clone()
            .or_else(|| from_profile(PROFILE_ROOT))
            .ok_or_else(|| missing("trust anchor", "--ca FILE", "OXROOT_CA"))?,
        cert: args
            .cert
            .clone()
            .or_else(|| from_profile(PROFILE_CERT))
            .ok_or_else(|| missing("operator certificate", "--cert FILE", "OXROOT_CERT"))?,
        key: args
            .key
            .clone()
            .or_else(|| from_profile(PROFILE_KEY))
            .ok_or_else(|| missing("operator key", "--key FILE", "OXROOT_KEY"))?,
    })
}

/// Connects to the service.
///
/// # Errors
/// [`CtlError::Usage`] for a missing option or a URL that is not `https://`,
/// [`CtlError::Io`] / [`CtlError::Credential`] for unreadable or wrong credential files, and
/// [`CtlError::Connect`] if the TCP connection or the TLS handshake fails.
pub(crate) async fn connect(args: &ConnectionArgs) -> Result<OperatorClient<Channel>, CtlError> {
    connect_channel(args).await.map(OperatorClient::new)
}

/// The mutual-TLS channel [`connect`] makes, for clients of the service's other gRPC services
/// on the same connection (the console's health check).
///
/// # Errors
/// As [`connect`].
pub(crate) async fn connect_channel(args: &ConnectionArgs) -> Result<Channel, CtlError> {
    let target = resolve(args)?;
    let endpoint = endpoint(&target.service)?;

    let ca = std::fs::read(&target.ca).map_err(CtlError::io(&target.ca))?;
    check_certificates(&target.ca, &ca)?;
    let cert = std::fs::read(&target.cert).map_err(CtlError::io(&target.cert))?;
    check_certificates(&target.cert, &cert)?;
    let key = Zeroizing::new(std::fs::read(&target.key).map_err(CtlError::io(&target.key))?);
    check_private_key(&target.key, &key)?;

    let endpoint = channel::tls_endpoint(endpoint, &ca, Some(Identity::from_pem(&cert, &*key)))
        .map_err(|e| CtlError::Credential {
            path: target.cert.clone(),
            problem: format!("unusable with {}: {}", target.key.display(), chain(&e)),
        })?;
    channel::connect(&endpoint)
        .await
        .map_err(|e| CtlError::Connect {
            service: target.service.clone(),
            detail: e.detail().to_owned(),
        })
}

/// The endpoint for a URL, which must be `https://`: the service speaks TLS only.
pub(crate) fn endpoint(service: &str) -> Result<Endpoint, CtlError> {
    channel::service_endpoint(service).map_err(|e| CtlError::Usage(e.to_string()))
}

/// Checks that a file holds at least one PEM certificate and that every one parses.
///
/// # Errors
/// [`CtlError::Credential`] naming the file and the problem.
pub(crate) fn check_certificates(path: &Path, bytes: &[u8]) -> Result<usize, CtlError> {
    channel::check_certificates(bytes).map_err(|problem| CtlError::Credential {
        path: path.to_owned(),
        problem,
    })
}

/// Checks that a file holds an unencrypted PEM private key, by its armour lines only: the
/// key is not decoded here, so no second copy of it lingers in memory.
///
/// # Errors
/// [`CtlError::Credential`] naming the file and the problem.
pub(crate) fn check_private_key(path: &Path, bytes: &[u8]) -> Result<(), CtlError> {
    let problem = |problem: &str| CtlError::Credential {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| problem("not a PEM file"))?;
    let mut labels = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("-----BEGIN "))
        .filter_map(|rest| rest.strip_suffix("-----"));
    match labels.next() {
        Some("PRIVATE KEY" | "EC PRIVATE KEY") => Ok(()),
        Some("ENCRYPTED PRIVATE KEY") => Err(problem(
            "the private key is encrypted; enrollctl needs an unencrypted PKCS#8 key (keep \
             the file mode 0600)",
        )),
        Some("CERTIFICATE") => Err(problem(
            "this is a certificate, not a private key (swapped --cert and --key?)",
        )),
        Some(_) | None => Err(problem(
            "no PEM private key (-----BEGIN PRIVATE KEY-----) in the file",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_fills_in_what_is_not_given() {
        let args = ConnectionArgs {
            service: Some("https://127.0.0.1:1".into()),
            ca: Some("/explicit/ca.pem".into()),
            cert: None,
            key: None,
            profile: Some("/p".into()),
        };
        assert_eq!(
            resolve(&args).expect("resolves"),
            Target {
                service: "https://127.0.0.1:1".into(),
                ca: "/explicit/ca.pem".into(),
                cert: "/p/operator.pem".into(),
                key: "/p/operator.key".into(),
            }
        );
    }

    #[test]
    fn missing_options_are_usage_errors_naming_the_flag() {
        let args = ConnectionArgs {
            service: Some("https://h:1".into()),
            ..ConnectionArgs::default()
        };
        let error = resolve(&args).expect_err("no ca");
        assert!(error.to_string().contains("--ca FILE"), "{error}");
        assert_eq!(error.exit(), super::super::Exit::Usage);
        let error = resolve(&ConnectionArgs::default()).expect_err("no service");
        assert!(error.to_string().contains("OXROOT_SERVICE"), "{error}");
    }

    #[test]
    fn only_https_urls_are_accepted() {
        assert!(endpoint("https://127.0.0.1:50051").is_ok());
        assert!(endpoint("https://[::1]:50051").is_ok());
        assert!(endpoint("https://localhost").is_ok());
        for bad in ["http://127.0.0.1:50051", "127.0.0.1:50051", "", "https://"] {
            let error = endpoint(bad).expect_err(bad);
            assert!(matches!(error, CtlError::Usage(_)), "{bad}: {error}");
        }
    }

    #[test]
    fn certificate_files_are_checked_before_rustls_sees_them() {
        let path = Path::new("ca.pem");
        let good = crate::operator_key::tests::self_signed_pem(
            &crate::operator_key::OperatorKey::generate().expect("key"),
        );
        assert_eq!(check_certificates(path, good.as_bytes()).expect("valid"), 1);
        let two = format!("{good}{good}");
        assert_eq!(check_certificates(path, two.as_bytes()).expect("valid"), 2);
        for bad in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let error = check_certificates(path, bad.as_bytes()).expect_err(bad);
            assert!(error.to_string().starts_with("ca.pem: "), "{error}");
        }
    }

    #[test]
    fn private_key_files_are_checked_by_their_armour() {
        let path = Path::new("op.key");
        let ok = |s: &str| check_private_key(path, s.as_bytes()).is_ok();
        assert!(ok(
            "-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----\n"
        ));
        assert!(ok(
            "-----BEGIN EC PRIVATE KEY-----\r\nAA\r\n-----END EC PRIVATE KEY-----\r\n"
        ));
        let message = |s: &str| {
            check_private_key(path, s.as_bytes())
                .expect_err(s)
                .to_string()
        };
        assert!(message("-----BEGIN ENCRYPTED PRIVATE KEY-----\n").contains("encrypted"));
        assert!(message("-----BEGIN CERTIFICATE-----\n").contains("swapped"));
        assert!(message("").contains("no PEM private key"));
        assert!(message("\u{0}\u{ff}").contains("no PEM private key"));
    }
}
