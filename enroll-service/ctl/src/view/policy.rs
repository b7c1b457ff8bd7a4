//! `policy create | get | list`.

use std::io;

use oxroot_proto::v1::{Policy, TlsVersion, policy::Params};

use super::by;
use crate::output::{Fields, Human, Table, duration_text, kind_name, timestamp_text};

/// `policy create`: what was created.
pub(crate) fn created(out: &mut Human<'_>, policy: &Policy) -> io::Result<()> {
    out.line(&format!("created policy {}", policy.name))?;
    out.fields(&fields(policy))
}

/// A policy. Defaults the service fills in are shown as such when a server leaves them unset,
/// so that the reader never has to know the contract's defaults.
pub(crate) fn fields(policy: &Policy) -> Fields {
    let mut fields = Fields::new()
        .field("name", &policy.name)
        .field("owner", &policy.owner)
        .field("kind", kind_name(policy.kind))
        .field("description", &policy.description)
        .field(
            "lifetime",
            duration_text(policy.certificate_lifetime.as_ref(), "365d (default)"),
        )
        .field(
            "renew window",
            duration_text(policy.renew_window.as_ref(), "30d (default)"),
        )
        .field(
            "superseded grace",
            duration_text(policy.superseded_grace.as_ref(), "7d (default)"),
        )
        .field(
            "cn template",
            or_default(&policy.subject_cn_template, "{device_id}"),
        )
        .field("crl base url", &policy.crl_base_url)
        .field(
            "firmware",
            if policy.firmware_measurements.is_empty() {
                "any (no measurement required)".to_owned()
            } else {
                policy.firmware_measurements.join(", ")
            },
        );
    match &policy.params {
        Some(Params::AwsIot(aws)) => {
            fields = fields
                .field("endpoint", host_port(&aws.endpoint_host, aws.port))
                .field(
                    "thing name",
                    or_default(&aws.thing_name_template, "{device_id}"),
                )
                .field("topic root", or_default(&aws.topic_root, "devices"))
                .field("region", or_default(&aws.aws_region, "*"))
                .field("account", or_default(&aws.aws_account_id, "*"))
                .field("alpn", aws.alpn_protocols.join(", "))
                .field("server root ca", pem_summary(&aws.server_root_ca_pem));
        }
        Some(Params::AzureDps(azure)) => {
            fields = fields
                .field("id scope", &azure.id_scope)
                .field(
                    "endpoint",
                    host_port(
                        or_default(
                            &azure.global_endpoint,
                            "global.azure-devices-provisioning.net",
                        )
                        .as_str(),
                        azure.port,
                    ),
                )
                .field(
                    "enrollment group",
                    or_default(&azure.enrollment_group_id, &policy.name),
                )
                .field("iot hubs", azure.iot_hub_host_names.join(", "))
                .field("server root ca", pem_summary(&azure.server_root_ca_pem));
        }
        Some(Params::Mosquitto(mosquitto)) => {
            fields = fields
                .field("broker", host_port(&mosquitto.host, mosquitto.port))
                .field("topic root", or_default(&mosquitto.topic_root, "devices"))
                .field(
                    "broker ca",
                    if mosquitto.broker_ca_pem.is_empty() {
                        "the oxroot root (default)".to_owned()
                    } else {
                        pem_summary(&mosquitto.broker_ca_pem)
                    },
                )
                .field("tls versions", tls_versions(&mosquitto.tls_versions));
        }
        None => {}
    }
    fields.field(
        "created",
        by(
            timestamp_text(policy.created_at.as_ref()),
            &policy.created_by,
        ),
    )
}

/// Policies, one per row.
pub(crate) fn table(policies: &[Policy]) -> Table {
    let mut table = Table::new(&["NAME", "OWNER", "KIND", "LIFETIME", "TARGET", "CREATED"]);
    for policy in policies {
        let target = match &policy.params {
            Some(Params::AwsIot(aws)) => host_port(&aws.endpoint_host, aws.port),
            Some(Params::AzureDps(azure)) => azure.id_scope.clone(),
            Some(Params::Mosquitto(mosquitto)) => host_port(&mosquitto.host, mosquitto.port),
            None => String::new(),
        };
        table.row(vec![
            policy.name.clone(),
            policy.owner.clone(),
            kind_name(policy.kind),
            duration_text(policy.certificate_lifetime.as_ref(), "365d"),
            target,
            timestamp_text(policy.created_at.as_ref()),
        ]);
    }
    table
}

fn or_default(value: &str, default: &str) -> String {
    if value.is_empty() {
        format!("{default} (default)")
    } else {
        value.to_owned()
    }
}

fn host_port(host: &str, port: u32) -> String {
    let port = if port == 0 { 8883 } else { port };
    if host.contains(':') && !host.starts_with('[') {
        // An IPv6 literal: brackets keep the port readable.
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// "1.2, 1.3": the names of a TLS version list, the default when it is empty, the number of a
/// value this build does not know.
fn tls_versions(versions: &[i32]) -> String {
    if versions.is_empty() {
        return "1.2, 1.3 (default)".to_owned();
    }
    versions
        .iter()
        .map(|&value| match TlsVersion::try_from(value) {
            Ok(TlsVersion::TlsVersion12) => "1.2".to_owned(),
            Ok(TlsVersion::TlsVersion13) => "1.3".to_owned(),
            _ => value.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// "2 PEM certificates" rather than the PEM itself, which nobody reads in a terminal.
fn pem_summary(pem: &str) -> String {
    let count = pem.matches("-----BEGIN CERTIFICATE-----").count();
    match count {
        0 if pem.is_empty() => String::new(),
        0 => format!("{} bytes, no PEM certificate", pem.len()),
        1 => "1 PEM certificate".to_owned(),
        n => format!("{n} PEM certificates"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::testing::{HOSTILE, assert_escaped, human, json_of};
    use oxroot_proto::v1::{AwsIotPolicyParams, MosquittoPolicyParams, PolicyKind};

    #[test]
    fn policies_show_defaults_and_their_params_case() {
        let policy = Policy {
            name: "line-a".into(),
            owner: "acme".into(),
            kind: PolicyKind::Mosquitto as i32,
            params: Some(Params::Mosquitto(MosquittoPolicyParams {
                host: "::1".into(),
                port: 0,
                topic_root: String::new(),
                broker_ca_pem: String::new(),
                tls_versions: vec![],
            })),
            ..Policy::default()
        };
        let json = json_of(&policy);
        assert_eq!(json["kind"], "POLICY_KIND_MOSQUITTO");
        assert_eq!(json["mosquitto"]["host"], "::1");
        assert!(json.get("certificate_lifetime").is_none(), "{json}");
        assert!(json.get("aws_iot").is_none());
        let text = human(|out| out.fields(&fields(&policy)));
        assert!(text.contains("lifetime:          365d (default)"), "{text}");
        assert!(text.contains("superseded grace:  7d (default)"), "{text}");
        assert!(text.contains("broker:            [::1]:8883"), "{text}");
        assert!(
            text.contains("topic root:        devices (default)"),
            "{text}"
        );
        assert!(
            text.contains("tls versions:      1.2, 1.3 (default)"),
            "{text}"
        );
        assert_eq!(tls_versions(&[2]), "1.3");
        assert_eq!(tls_versions(&[1, 2, 7]), "1.2, 1.3, 7");
    }

    #[test]
    fn a_hostile_policy_is_escaped_for_humans_and_exact_in_json() {
        let policy = Policy {
            name: "p".into(),
            description: HOSTILE.into(),
            created_by: HOSTILE.into(),
            params: Some(Params::AwsIot(AwsIotPolicyParams {
                endpoint_host: HOSTILE.into(),
                alpn_protocols: vec![HOSTILE.into()],
                ..AwsIotPolicyParams::default()
            })),
            ..Policy::default()
        };
        // description, created by, endpoint, alpn.
        assert_escaped(&human(|out| created(out, &policy)), 4);
        // Table cells too: the endpoint is the TARGET column.
        assert_escaped(
            &human(|out| out.table(&table(std::slice::from_ref(&policy)))),
            1,
        );
        let json = json_of(&policy);
        assert_eq!(json["description"], HOSTILE);
        assert_eq!(json["aws_iot"]["endpoint_host"], HOSTILE);
        assert_eq!(json["aws_iot"]["alpn_protocols"][0], HOSTILE);
    }

    #[test]
    fn pem_summaries_count_certificates() {
        assert_eq!(pem_summary(""), "");
        assert_eq!(
            pem_summary("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"),
            "1 PEM certificate"
        );
        assert_eq!(pem_summary("junk"), "4 bytes, no PEM certificate");
    }
}
