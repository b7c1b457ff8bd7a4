//! Checks for the strings and numbers of a policy and of an export request.
//!
//! Anything that lands in a rendered file is held to an allow-list of characters, never a
//! deny-list: a host name, topic level or path that passes cannot carry a newline, a space or
//! a comment marker into `mosquitto.conf`, nor a wildcard into an IoT policy or ACL.

use std::net::IpAddr;

use super::PolicyError;

/// Longest DNS name (RFC 1035, without the trailing dot).
const MAX_DNS_NAME_LEN: usize = 253;
/// Most PEM certificates a trust-anchor field may hold, and its size limit.
const MAX_TRUST_ANCHORS: usize = 16;
const MAX_PEM_BYTES: usize = 64 * 1024;
/// Longest topic level we accept; far below MQTT's limit, plenty for a name.
const MAX_TOPIC_LEVEL_LEN: usize = 64;
/// Longest registration or verification code (operator.proto).
const MAX_CODE_LEN: usize = 64;
/// Longest `config_dir`.
const MAX_PATH_LEN: usize = 1024;

fn error(field: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::new(field, message)
}

/// 1 to 63 characters of `[a-z0-9-_.]`, starting with a letter or digit.
pub(super) fn policy_name(field: &str, name: &str) -> Result<(), PolicyError> {
    let valid = (1..=super::MAX_NAME_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(error(
            field,
            "must be 1 to 63 characters of a-z 0-9 - _ . starting with a letter or digit",
        ))
    }
}

/// A non-negative protobuf duration.
pub(super) fn duration(
    field: &str,
    value: &prost_types::Duration,
) -> Result<time::Duration, PolicyError> {
    // google.protobuf.Duration: nanos within ±999,999,999 and of the same sign as seconds.
    let nanos_ok = value.nanos.unsigned_abs() < 1_000_000_000;
    if !nanos_ok || value.seconds < 0 || value.nanos < 0 {
        return Err(error(field, "must be a non-negative, well-formed duration"));
    }
    Ok(time::Duration::new(value.seconds, value.nanos))
}

/// A TCP port; 0 means `default`.
pub(super) fn port(field: &str, value: u32, default: u16) -> Result<u16, PolicyError> {
    match value {
        0 => Ok(default),
        _ => u16::try_from(value).map_err(|_| error(field, "must be a TCP port, 1 to 65535")),
    }
}

/// An IP address or a DNS name of letters, digits and hyphens: what a device dials and what
/// a server certificate's SAN carries.
pub(super) fn host(field: &str, value: &str) -> Result<(), PolicyError> {
    if value.is_empty() {
        return Err(error(field, "is required"));
    }
    if value.parse::<IpAddr>().is_ok() || is_dns_name(value) {
        Ok(())
    } else {
        Err(error(
            field,
            "must be an IP address or a DNS name (labels of letters, digits and inner hyphens)",
        ))
    }
}

/// Whether `value` is a DNS host name: dot-separated labels of 1 to 63 letters, digits and
/// inner hyphens, 253 characters at most, not all-numeric at the top (that would be an IP).
pub(super) fn is_dns_name(value: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    value.len() <= MAX_DNS_NAME_LEN
        && value.split('.').all(label_ok)
        && !value
            .rsplit('.')
            .next()
            .is_some_and(|top| top.chars().all(|c| c.is_ascii_digit()))
}

/// One MQTT topic level of `[A-Za-z0-9._-]`: no separator (`/`), no wildcards (`+ #`), no
/// `$` (reserved topics), no `%` (Mosquitto ACL substitutions), nothing a file could trip on.
/// Empty means `default`.
pub(super) fn topic_level(field: &str, value: &str, default: &str) -> Result<String, PolicyError> {
    if value.is_empty() {
        return Ok(default.to_owned());
    }
    let valid = value.len() <= MAX_TOPIC_LEVEL_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(error(
            field,
            format!(
                "must be a single topic level of 1 to {MAX_TOPIC_LEVEL_LEN} characters \
                 of A-Z a-z 0-9 . _ - (no / + # $ %)"
            ),
        ))
    }
}

/// One or more PEM certificates. Returns them re-encoded, certificates only, so that whatever
/// else the input held (comments, headers, a stray key block is refused) goes no further.
pub(super) fn certificates_pem(field: &str, value: &str) -> Result<String, PolicyError> {
    use x509_parser::prelude::{FromDer, X509Certificate};

    if value.len() > MAX_PEM_BYTES {
        return Err(error(
            field,
            format!("must be at most {MAX_PEM_BYTES} bytes"),
        ));
    }
    let blocks = pem::parse_many(value).map_err(|e| error(field, format!("is not PEM: {e}")))?;
    if blocks.is_empty() {
        return Err(error(field, "must hold at least one PEM CERTIFICATE"));
    }
    if blocks.len() > MAX_TRUST_ANCHORS {
        return Err(error(
            field,
            format!("must hold at most {MAX_TRUST_ANCHORS} certificates"),
        ));
    }
    let mut out = String::new();
    for (index, block) in blocks.iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            return Err(error(
                field,
                format!(
                    "PEM block {index} is a {:?}; only CERTIFICATE blocks are accepted",
                    block.tag()
                ),
            ));
        }
        match X509Certificate::from_der(block.contents()) {
            Ok(([], _)) => {}
            Ok(_) => {
                return Err(error(
                    field,
                    format!("certificate {index} has trailing bytes"),
                ));
            }
            Err(e) => {
                return Err(error(
                    field,
                    format!("certificate {index} does not parse: {e}"),
                ));
            }
        }
        out.push_str(&pem::encode_config(
            &pem::Pem::new("CERTIFICATE", block.contents()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ));
    }
    Ok(out)
}

/// A cloud's registration or verification code: 1 to 64 of `[A-Za-z0-9._-]` (both clouds hand
/// out hex strings); it becomes a certificate CN.
pub(super) fn registration_code(field: &str, value: &str) -> Result<(), PolicyError> {
    let valid = (1..=MAX_CODE_LEN).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(error(
            field,
            format!("must be 1 to {MAX_CODE_LEN} characters of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// An absolute directory path for a configuration file: `/`-separated components of
/// `[A-Za-z0-9._+@:-]`, no `.` or `..` component. Mosquitto has no quoting, so anything wider
/// (spaces, `#`, newlines) would change the meaning of the line. A trailing `/` is dropped.
pub(super) fn absolute_dir(field: &str, value: &str) -> Result<String, PolicyError> {
    let trimmed = value.trim_end_matches('/');
    let component_ok = |component: &str| {
        !component.is_empty()
            && component != "."
            && component != ".."
            && component.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '@' | ':' | '-')
            })
    };
    let valid = value.len() <= MAX_PATH_LEN
        && value.starts_with('/')
        && trimmed.split('/').skip(1).all(component_ok);
    if !valid {
        return Err(error(
            field,
            "must be an absolute path of components made of A-Z a-z 0-9 . _ + @ : - \
             (no spaces, no . or .. components)",
        ));
    }
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "abc123-ats.iot.eu-west-1.amazonaws.com",
            "localhost",
            "127.0.0.1",
            "::1",
            "fe80::1",
            "broker-1",
            "a.b",
        ] {
            assert!(host("f", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a\nlistener 1883",
            "-a.com",
            "a-.com",
            "a..b",
            "a.",
            "[::1]",
            "1.2.3",
            "a_b.com",
            "http://x",
            "x:8883",
            &"a".repeat(64),
        ] {
            assert_eq!(host("f", bad).unwrap_err().field, "f", "{bad:?}");
        }
    }

    #[test]
    fn topic_levels() {
        assert_eq!(topic_level("f", "", "devices").unwrap(), "devices");
        assert_eq!(topic_level("f", "fleet_1.a-b", "x").unwrap(), "fleet_1.a-b");
        for bad in ["a/b", "+", "#", "$SYS", "%u", "a b", "a\n", &"a".repeat(65)] {
            assert!(topic_level("f", bad, "x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn directories() {
        assert_eq!(
            absolute_dir("f", "/etc/mosquitto/oxroot/").unwrap(),
            "/etc/mosquitto/oxroot"
        );
        assert_eq!(absolute_dir("f", "/").unwrap(), "/");
        for bad in [
            "",
            "etc/x",
            "/etc/a b",
            "/etc/x\ncafile /tmp/evil",
            "/etc/../root",
            "/etc/./x",
            "/etc//x",
            "/etc/#x",
            "/tmp/\t",
        ] {
            assert!(absolute_dir("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(
            duration("f", &d(60, 5)).unwrap(),
            time::Duration::new(60, 5)
        );
        assert!(duration("f", &d(-1, 0)).is_err());
        assert!(duration("f", &d(1, -1)).is_err());
        assert!(duration("f", &d(1, 1_000_000_000)).is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(port("f", 0, 8883).unwrap(), 8883);
        assert_eq!(port("f", 443, 8883).unwrap(), 443);
        assert!(port("f", 65_536, 8883).is_err());
    }
}
