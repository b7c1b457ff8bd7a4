//! What a failed TLS handshake with a broker means, in one place.
//!
//! rustls says precisely what went wrong: an alert the server sent (`protocol_version`,
//! `handshake_failure`, `certificate_revoked` …), something the device refused about the server
//! (a version or parameters it does not allow, no extended master secret, a certificate that
//! does not chain to the endpoint's CA), or a failure on the device's side. [`classify`] turns
//! each into the error the operator at the device reads, naming the TLS versions the
//! credential offers where they matter; [`find_rustls_error`] digs the rustls error out of
//! whatever carried it (rumqttc and tokio-rustls wrap it in `io::Error`s).
//!
//! | rustls says | the agent says | exit |
//! |---|---|---|
//! | alert `protocol_version` | the broker refused: it does not speak the offered versions | 3 |
//! | alert `handshake_failure` | the broker refused: no cipher suite, group or signature in common | 3 |
//! | alert `certificate_revoked`, `certificate_expired`, `unknown_ca`, `bad_certificate` … | the broker refused this device's certificate, and why | 3 |
//! | a version or parameters the device does not allow; no extended master secret | TLS with the broker failed: what the device refused | 3 |
//! | the broker's certificate does not verify | the broker is not trusted | 4 |

use std::error::Error;

use rot_core::keys::tls::TlsVersion;
use rustls::{AlertDescription, CertificateError, PeerIncompatible, PeerMisbehaved};

use crate::error::AgentError;

/// The rustls error somewhere in `error`'s chain, looking inside `io::Error`s too (whose
/// `source()` skips the error they carry).
#[must_use]
pub fn find_rustls_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(carried) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| find_rustls_error(inner))
        {
            return Some(carried);
        }
        next = error.source();
    }
    None
}

/// "TLS 1.3 only", "TLS 1.2 and TLS 1.3".
fn offered_text(offered: &[TlsVersion]) -> String {
    match offered {
        [one] => format!("{one} only"),
        _ => offered
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
    }
}

/// The operator's error for a TLS handshake with `target` that failed with `error`, the
/// device having offered the TLS versions `offered`.
#[must_use]
pub fn classify(error: &rustls::Error, target: &str, offered: &[TlsVersion]) -> AgentError {
    let offered = offered_text(offered);
    let refused = |why: String| AgentError::BrokerRefused(why);
    let failed = |problem: String| AgentError::TlsHandshake {
        target: target.to_owned(),
        problem,
    };
    match error {
        rustls::Error::AlertReceived(alert) => refused(alert_text(*alert, &offered)),
        rustls::Error::PeerIncompatible(incompatible) => {
            failed(incompatible_text(incompatible, &offered))
        }
        rustls::Error::PeerMisbehaved(
            PeerMisbehaved::AttemptedDowngradeToTls12WhenTls13IsSupported,
        ) => failed(
            "the broker answered in TLS 1.2 although it signals TLS 1.3 support: a \
                 downgrade attack, or a broken middlebox"
                .to_owned(),
        ),
        rustls::Error::PeerMisbehaved(misbehaved) => failed(format!(
            "the broker broke the TLS protocol ({misbehaved:?})"
        )),
        rustls::Error::InvalidCertificate(certificate) => AgentError::Untrusted {
            target: target.to_owned(),
            detail: server_certificate_text(certificate),
        },
        rustls::Error::NoCertificatesPresented => AgentError::Untrusted {
            target: target.to_owned(),
            detail: "the broker presented no certificate".to_owned(),
        },
        // The device's own side: the signer's opaque refusal or failure, said as it is.
        rustls::Error::General(text) => {
            failed(format!("the device could not authenticate: {text}"))
        }
        other => failed(other.to_string()),
    }
}

fn alert_text(alert: AlertDescription, offered: &str) -> String {
    use AlertDescription as A;
    let why = match alert {
        A::ProtocolVersion => format!(
            "it does not speak the TLS version(s) this credential offers ({offered}); the \
             policy's TLS versions must include one the broker accepts"
        ),
        A::HandshakeFailure | A::InsufficientSecurity => format!(
            "no TLS parameters in common: the device offers {offered}, for TLS 1.2 only \
             ECDHE-ECDSA with AES-GCM and the extended master secret, and authenticates with \
             ECDSA P-256 / SHA-256"
        ),
        A::CertificateRevoked => "this device's certificate is revoked".to_owned(),
        A::CertificateExpired => {
            "this device's certificate has expired or is not yet valid".to_owned()
        }
        A::UnknownCA => "the broker does not trust the CA that issued this device's \
                         certificate (install the issuing CA the policy exports)"
            .to_owned(),
        A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
            "this device's certificate was rejected".to_owned()
        }
        A::CertificateRequired => {
            "the broker requires a client certificate and got none it accepts".to_owned()
        }
        A::DecryptError => {
            "the broker could not verify this device's handshake signature".to_owned()
        }
        A::AccessDenied => "access denied".to_owned(),
        _ => "the broker ended the TLS handshake".to_owned(),
    };
    format!("{why} (TLS alert {alert:?})")
}

fn incompatible_text(incompatible: &PeerIncompatible, offered: &str) -> String {
    use PeerIncompatible as P;
    let why = match incompatible {
        P::ServerTlsVersionIsDisabledByOurConfig
        | P::SupportedVersionsExtensionRequired
        | P::ServerDoesNotSupportTls12Or13
        | P::Tls12NotOffered
        | P::Tls12NotOfferedOrEnabled => format!(
            "the broker chose a TLS version this credential does not allow (it offers \
             {offered})"
        ),
        P::ExtendedMasterSecretExtensionRequired => {
            "the broker does not support the extended master secret (RFC 7627), which this \
             device requires for TLS 1.2"
                .to_owned()
        }
        P::NoCipherSuitesInCommon => "no cipher suite in common with the broker".to_owned(),
        P::NoKxGroupsInCommon | P::NamedGroupsExtensionRequired => {
            "no key exchange group in common with the broker".to_owned()
        }
        P::NoSignatureSchemesInCommon
        | P::NoCertificateRequestSignatureSchemesInCommon
        | P::SignatureAlgorithmsExtensionRequired => {
            "no signature scheme in common with the broker (the device signs ECDSA P-256 / \
             SHA-256)"
                .to_owned()
        }
        _ => "the broker's TLS is not compatible with this device".to_owned(),
    };
    format!("{why} ({incompatible:?})")
}

fn server_certificate_text(error: &CertificateError) -> String {
    let why = match error {
        CertificateError::UnknownIssuer => "does not chain to the endpoint's CA",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "is not valid for the endpoint's host"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "has expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "is not valid yet"
        }
        CertificateError::Revoked => "is revoked",
        _ => "does not verify",
    };
    format!("the broker's certificate {why} ({error:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "mqtts://127.0.0.1:8883";

    fn said(error: &rustls::Error, offered: &[TlsVersion]) -> (String, u8) {
        let error = classify(error, TARGET, offered);
        (error.to_string(), error.exit_code())
    }

    /// Every row of the table in the module documentation, and no alert reads as another.
    #[test]
    fn each_failure_says_what_it_is() {
        use TlsVersion::{Tls12, Tls13};
        let cases: &[(rustls::Error, &[TlsVersion], &[&str], u8)] = &[
            (
                rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
                &[Tls13],
                &["the broker refused", "TLS 1.3 only", "ProtocolVersion"],
                3,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
                &[Tls12, Tls13],
                &["TLS 1.2 and TLS 1.3", "ProtocolVersion"],
                3,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
                &[Tls12],
                &[
                    "no TLS parameters in common",
                    "ECDHE-ECDSA",
                    "HandshakeFailure",
                ],
                3,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRevoked),
                &[Tls13],
                &["the broker refused", "revoked", "CertificateRevoked"],
                3,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateExpired),
                &[Tls13],
                &["expired", "CertificateExpired"],
                3,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                &[Tls13],
                &["does not trust the CA", "UnknownCA"],
                3,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::BadCertificate),
                &[Tls13],
                &["certificate was rejected", "BadCertificate"],
                3,
            ),
            (
                rustls::Error::PeerIncompatible(
                    PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
                ),
                &[Tls13],
                &["TLS with mqtts://127.0.0.1:8883 failed", "TLS 1.3 only"],
                3,
            ),
            (
                rustls::Error::PeerIncompatible(
                    PeerIncompatible::ExtendedMasterSecretExtensionRequired,
                ),
                &[Tls12],
                &["extended master secret", "RFC 7627"],
                3,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                &[Tls13],
                &["is not trusted", "does not chain to the endpoint's CA"],
                4,
            ),
            (
                rustls::Error::General("the device key could not be derived".into()),
                &[Tls13],
                &["could not authenticate", "could not be derived"],
                3,
            ),
        ];
        for (error, offered, fragments, exit) in cases {
            let (text, code) = said(error, offered);
            for fragment in *fragments {
                assert!(text.contains(fragment), "{error:?}: {text}");
            }
            assert_eq!(code, *exit, "{error:?}: {text}");
            // The message of issue 15: a version refusal is never a certificate rejection.
            if matches!(
                error,
                rustls::Error::AlertReceived(
                    AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure
                )
            ) {
                assert!(!text.contains("certificate"), "{text}");
            }
        }
    }

    /// tokio-rustls hands rustls errors over inside `io::Error`s, whose `source()` skips them.
    #[test]
    fn the_rustls_error_is_found_inside_io_errors() {
        let tls = rustls::Error::AlertReceived(AlertDescription::ProtocolVersion);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        assert_eq!(find_rustls_error(&io), Some(&tls));
        let nested = std::io::Error::other(io);
        assert_eq!(find_rustls_error(&nested), Some(&tls));
        let unrelated = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(find_rustls_error(&unrelated), None);
    }
}
