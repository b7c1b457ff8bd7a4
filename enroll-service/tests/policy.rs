//! Security policies: validation of every field, defaults, round trips, and the rendered
//! artefacts checked against independent tools (serde_json, the `openssl` CLI and, when it is
//! installed, a real Mosquitto broker).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::Command;

use enroll_service::pki::{CaNames, CertificateAuthority, RevocationReason, RevokedEntry, Serial};
use enroll_service::policy::{
    CloudParams, OwnerTrust, PolicyError, PolicySpec, TlsVersion, aws_iot, azure_dps,
    export_artifacts, mosquitto,
};
use oxroot_proto::v1;
use rot_core::keys::DeviceId;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

const OWNER: &str = "acme";
const CREATOR: &str = "alice";

fn now() -> OffsetDateTime {
    // Whole seconds, as X.509 has; an hour back avoids clock-skew flakes with openssl.
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::hours(1)
}

fn max_lifetime() -> Duration {
    Duration::days(5 * 365)
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::initialise(&CaNames::default(), now()).unwrap()
}

/// Some other CA's root: a real certificate to use as a cloud's trust anchor.
fn foreign_root_pem() -> String {
    let names = CaNames {
        organisation: "Example Cloud".into(),
        root_common_name: "Example Root CA 1".into(),
        intermediate_common_name: "unused".into(),
    };
    CertificateAuthority::initialise(&names, now())
        .unwrap()
        .root_pem()
}

fn device_id() -> DeviceId {
    DeviceId::from_bytes([0x5a; 32])
}

fn policy(name: &str, params: v1::policy::Params) -> v1::Policy {
    v1::Policy {
        name: name.into(),
        description: "test fleet".into(),
        params: Some(params),
        ..v1::Policy::default()
    }
}

fn aws_params() -> v1::AwsIotPolicyParams {
    v1::AwsIotPolicyParams {
        endpoint_host: "abc123-ats.iot.eu-west-1.amazonaws.com".into(),
        server_root_ca_pem: foreign_root_pem(),
        aws_region: "eu-west-1".into(),
        aws_account_id: "123456789012".into(),
        ..v1::AwsIotPolicyParams::default()
    }
}

fn azure_params() -> v1::AzureDpsPolicyParams {
    v1::AzureDpsPolicyParams {
        id_scope: "0ne00ABCDEF".into(),
        ..v1::AzureDpsPolicyParams::default()
    }
}

fn mosquitto_params() -> v1::MosquittoPolicyParams {
    v1::MosquittoPolicyParams {
        host: "broker.example.com".into(),
        ..v1::MosquittoPolicyParams::default()
    }
}

fn aws_policy() -> v1::Policy {
    policy("aws-fleet", v1::policy::Params::AwsIot(aws_params()))
}

fn azure_policy() -> v1::Policy {
    policy("azure-fleet", v1::policy::Params::AzureDps(azure_params()))
}

fn mosquitto_policy() -> v1::Policy {
    policy(
        "mqtt-fleet",
        v1::policy::Params::Mosquitto(mosquitto_params()),
    )
}

fn create(policy: &v1::Policy) -> Result<PolicySpec, PolicyError> {
    PolicySpec::from_proto(policy, OWNER, CREATOR, now(), max_lifetime())
}

fn with_aws(edit: impl FnOnce(&mut v1::AwsIotPolicyParams)) -> v1::Policy {
    let mut params = aws_params();
    edit(&mut params);
    policy("aws-fleet", v1::policy::Params::AwsIot(params))
}

fn with_azure(edit: impl FnOnce(&mut v1::AzureDpsPolicyParams)) -> v1::Policy {
    let mut params = azure_params();
    edit(&mut params);
    policy("azure-fleet", v1::policy::Params::AzureDps(params))
}

fn with_mosquitto(edit: impl FnOnce(&mut v1::MosquittoPolicyParams)) -> v1::Policy {
    let mut params = mosquitto_params();
    edit(&mut params);
    policy("mqtt-fleet", v1::policy::Params::Mosquitto(params))
}

fn with(mut policy: v1::Policy, edit: impl FnOnce(&mut v1::Policy)) -> v1::Policy {
    edit(&mut policy);
    policy
}

#[allow(
    clippy::unnecessary_wraps,
    reason = "shaped like the proto's optional duration fields"
)]
fn duration(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

const PRIVATE_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
    MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAAAAAAAAAAAAAAAA\n\
    -----END PRIVATE KEY-----\n";

// ---------------------------------------------------------------------------------------------
// Validation and defaults
// ---------------------------------------------------------------------------------------------

type Edit<T> = fn(&mut T);

/// Applies each edit to `base` and checks the policy is refused on the expected field.
fn assert_refused<T: Clone>(base: &T, wrap: impl Fn(T) -> v1::Policy, cases: &[(&str, Edit<T>)]) {
    for (index, (field, edit)) in cases.iter().enumerate() {
        let mut params = base.clone();
        edit(&mut params);
        let policy = wrap(params);
        let error = create(&policy).expect_err(&format!("case {index} ({field}) must be refused"));
        assert_eq!(error.field, *field, "case {index}: {error}");
        assert!(!error.message.is_empty());
        assert_eq!(
            error.to_string(),
            format!("{}: {}", error.field, error.message)
        );
    }
}

#[test]
fn common_fields_are_validated() {
    let cases: &[(&str, Edit<v1::Policy>)] = &[
        ("policy.name", |p| p.name.clear()),
        ("policy.name", |p| p.name = "Fleet".into()),
        ("policy.name", |p| p.name = "-fleet".into()),
        ("policy.name", |p| p.name = "_fleet".into()),
        ("policy.name", |p| p.name = "a/b".into()),
        ("policy.name", |p| p.name = "a b".into()),
        ("policy.name", |p| p.name = "a".repeat(64)),
        ("policy.description", |p| p.description = "é".repeat(1025)),
        ("policy.certificate_lifetime", |p| {
            p.certificate_lifetime = duration(3599);
        }),
        ("policy.certificate_lifetime", |p| {
            p.certificate_lifetime = duration(max_lifetime().whole_seconds() + 1);
        }),
        ("policy.certificate_lifetime", |p| {
            p.certificate_lifetime = duration(-86_400);
        }),
        ("policy.certificate_lifetime", |p| {
            p.certificate_lifetime = Some(prost_types::Duration {
                seconds: 86_400,
                nanos: -1,
            });
        }),
        ("policy.renew_window", |p| p.renew_window = duration(-1)),
        // Equal to the lifetime is not shorter than it.
        ("policy.renew_window", |p| {
            p.certificate_lifetime = duration(86_400);
            p.renew_window = duration(86_400);
        }),
        // The default window (30 days) does not fit a 10-day lifetime.
        ("policy.renew_window", |p| {
            p.certificate_lifetime = duration(10 * 86_400);
        }),
        ("policy.params", |p| p.params = None),
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "fixed-name".into();
        }),
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "{deviceid}".into();
        }),
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "{device_id}{n}".into();
        }),
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "{device_id".into();
        }),
        // 64 hex characters leave no room for a prefix.
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "x{device_id}".into();
        }),
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "{device_id} ".into();
        }),
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "{device_id}\n".into();
        }),
    ];
    assert_refused(&mosquitto_policy(), |p| p, cases);
    let error = PolicySpec::from_proto(&mosquitto_policy(), "", CREATOR, now(), max_lifetime())
        .unwrap_err();
    assert_eq!(error.field, "policy.owner");
}

#[test]
fn common_defaults_and_limits() {
    let spec = create(&with(mosquitto_policy(), |p| p.description.clear())).unwrap();
    assert_eq!(spec.name, "mqtt-fleet");
    assert_eq!(spec.owner, OWNER);
    assert_eq!(spec.created_by, CREATOR);
    assert_eq!(spec.certificate_lifetime, Duration::days(365));
    assert_eq!(spec.renew_window, Duration::days(30));
    assert_eq!(spec.subject_cn_template, "{device_id}");
    assert_eq!(spec.kind(), v1::PolicyKind::Mosquitto);

    // Boundaries that are accepted: 1 hour, the maximum, a zero (disabled) renew window,
    // a 1,024-character description, a 63-character name, a short owner prefix in the CN.
    let edge = with(mosquitto_policy(), |p| {
        p.name = format!("a{}", "-".repeat(62));
        p.description = "é".repeat(1024);
        p.certificate_lifetime = duration(3600);
        p.renew_window = duration(0);
    });
    let spec = create(&edge).unwrap();
    assert_eq!(spec.certificate_lifetime, Duration::hours(1));
    assert_eq!(spec.renew_window, Duration::ZERO);
    let longest = with(mosquitto_policy(), |p| {
        p.certificate_lifetime = duration(max_lifetime().whole_seconds());
    });
    assert_eq!(
        create(&longest).unwrap().certificate_lifetime,
        max_lifetime()
    );

    let output_only_ignored = with(mosquitto_policy(), |p| {
        p.kind = v1::PolicyKind::AwsIot.into();
        p.owner = "someone-else".into();
        p.created_by = "mallory".into();
        p.created_at = Some(prost_types::Timestamp::default());
    });
    let spec = create(&output_only_ignored).unwrap();
    assert_eq!(spec.kind(), v1::PolicyKind::Mosquitto);
    assert_eq!(spec.owner, OWNER);
    assert_eq!(spec.created_by, CREATOR);
    assert_eq!(spec.created_at, now());
}

#[test]
fn owner_placeholder_is_rendered_and_checked() {
    // A DeviceId alone fills the 64 characters of a CN, so an owner prefix fits only where
    // the template is not the CN, e.g. in an AWS thing name (up to 128 characters).
    let error = create(&with(azure_policy(), |p| {
        p.subject_cn_template = "{owner}:{device_id}".into();
    }))
    .unwrap_err();
    assert_eq!(error.field, "policy.subject_cn_template");
    assert!(error.message.contains("69"), "{error}");

    let spec = create(&with_aws(|p| {
        p.thing_name_template = "{owner}_{device_id}".into();
    }))
    .unwrap();
    let CloudParams::AwsIot(params) = &spec.cloud else {
        panic!("not AWS: {spec:?}")
    };
    assert_eq!(
        params.thing_name(&device_id(), OWNER),
        format!("acme_{}", "5a".repeat(32))
    );

    // An owner the alphabet cannot carry is refused where a template uses it.
    let error = PolicySpec::from_proto(
        &with_aws(|p| p.thing_name_template = "{owner}{device_id}".into()),
        "*",
        CREATOR,
        now(),
        max_lifetime(),
    )
    .unwrap_err();
    assert_eq!(error.field, "policy.aws_iot.thing_name_template");
    assert!(error.message.contains("{owner}"), "{error}");
}

#[test]
fn aws_iot_fields_are_validated() {
    let cases: &[(&str, Edit<v1::AwsIotPolicyParams>)] = &[
        ("policy.aws_iot.endpoint_host", |p| p.endpoint_host.clear()),
        ("policy.aws_iot.endpoint_host", |p| {
            p.endpoint_host = "host\nevil".into();
        }),
        ("policy.aws_iot.endpoint_host", |p| {
            p.endpoint_host = "https://x.example".into();
        }),
        ("policy.aws_iot.port", |p| p.port = 70_000),
        ("policy.aws_iot.server_root_ca_pem", |p| {
            p.server_root_ca_pem.clear();
        }),
        ("policy.aws_iot.server_root_ca_pem", |p| {
            p.server_root_ca_pem = "not pem".into();
        }),
        ("policy.aws_iot.server_root_ca_pem", |p| {
            p.server_root_ca_pem = PRIVATE_KEY_PEM.into();
        }),
        ("policy.aws_iot.server_root_ca_pem", |p| {
            p.server_root_ca_pem =
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into();
        }),
        ("policy.aws_iot.thing_name_template", |p| {
            p.thing_name_template = "thing".into();
        }),
        ("policy.aws_iot.thing_name_template", |p| {
            p.thing_name_template = "a.{device_id}".into();
        }),
        ("policy.aws_iot.thing_name_template", |p| {
            p.thing_name_template = "{device_id}{device_id}x".into();
        }),
        ("policy.aws_iot.topic_root", |p| p.topic_root = "a/b".into()),
        ("policy.aws_iot.topic_root", |p| p.topic_root = "#".into()),
        ("policy.aws_iot.topic_root", |p| p.topic_root = "*".into()),
        ("policy.aws_iot.aws_region", |p| {
            p.aws_region = "EU-WEST-1".into();
        }),
        ("policy.aws_iot.aws_region", |p| {
            p.aws_region = "eu-west-1\"".into();
        }),
        ("policy.aws_iot.aws_account_id", |p| {
            p.aws_account_id = "12345".into();
        }),
        ("policy.aws_iot.aws_account_id", |p| {
            p.aws_account_id = "12345678901a".into();
        }),
        ("policy.aws_iot.alpn_protocols", |p| {
            p.alpn_protocols = vec![String::new()];
        }),
        ("policy.aws_iot.alpn_protocols", |p| {
            p.alpn_protocols = vec!["a b".into()];
        }),
        ("policy.aws_iot.alpn_protocols", |p| {
            p.alpn_protocols = vec!["x".into(), "x".into()];
        }),
    ];
    assert_refused(
        &aws_params(),
        |p| policy("aws-fleet", v1::policy::Params::AwsIot(p)),
        cases,
    );
}

#[test]
fn aws_iot_defaults() {
    let spec = create(&with_aws(|p| {
        p.aws_region.clear();
        p.aws_account_id.clear();
    }))
    .unwrap();
    let CloudParams::AwsIot(params) = &spec.cloud else {
        panic!("not AWS: {spec:?}")
    };
    assert_eq!(params.port, 8883);
    assert_eq!(params.thing_name_template, "{device_id}");
    assert_eq!(params.topic_root, "devices");
    assert!(params.alpn_protocols.is_empty());
    assert!(
        params
            .server_root_ca_pem
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
    // Port 443 needs the ALPN ID AWS documents; it is filled in.
    let spec = create(&with_aws(|p| p.port = 443)).unwrap();
    let CloudParams::AwsIot(params) = &spec.cloud else {
        panic!()
    };
    assert_eq!(params.alpn_protocols, [aws_iot::ALPN_MQTT_ON_443]);
}

#[test]
fn trust_anchor_pem_is_normalised() {
    let root = foreign_root_pem();
    let second = foreign_root_pem();
    let messy = format!("Amazon Root CA 1\r\n{root}\n# another\n{second}");
    let spec = create(&with_aws(|p| p.server_root_ca_pem = messy)).unwrap();
    let CloudParams::AwsIot(params) = &spec.cloud else {
        panic!()
    };
    assert_eq!(params.server_root_ca_pem, format!("{root}{second}"));
    // A key hidden after a certificate is refused, not dropped silently.
    let error = create(&with_aws(|p| {
        p.server_root_ca_pem = format!("{root}{PRIVATE_KEY_PEM}");
    }))
    .unwrap_err();
    assert_eq!(error.field, "policy.aws_iot.server_root_ca_pem");
    assert!(error.message.contains("PRIVATE KEY"), "{error}");
}

#[test]
fn azure_dps_fields_are_validated() {
    let cases: &[(&str, Edit<v1::AzureDpsPolicyParams>)] = &[
        ("policy.azure_dps.id_scope", |p| p.id_scope.clear()),
        ("policy.azure_dps.id_scope", |p| {
            p.id_scope = "0ne/000".into();
        }),
        ("policy.azure_dps.global_endpoint", |p| {
            p.global_endpoint = "bad host".into();
        }),
        ("policy.azure_dps.port", |p| p.port = 65_536),
        ("policy.azure_dps.server_root_ca_pem", |p| {
            p.server_root_ca_pem = "garbage".into();
        }),
        ("policy.azure_dps.enrollment_group_id", |p| {
            p.enrollment_group_id = "group/1".into();
        }),
        ("policy.azure_dps.enrollment_group_id", |p| {
            p.enrollment_group_id = "group.".into();
        }),
        ("policy.azure_dps.enrollment_group_id", |p| {
            p.enrollment_group_id = "g".repeat(129);
        }),
        ("policy.azure_dps.iot_hub_host_names", |p| {
            p.iot_hub_host_names = vec!["hub 1".into()];
        }),
        ("policy.azure_dps.iot_hub_host_names", |p| {
            p.iot_hub_host_names = vec!["h.azure-devices.net".into(), "h.azure-devices.net".into()];
        }),
    ];
    assert_refused(
        &azure_params(),
        |p| policy("azure-fleet", v1::policy::Params::AzureDps(p)),
        cases,
    );

    let cases: &[(&str, Edit<v1::Policy>)] = &[
        // The registration ID (= CN) must be lowercase [a-z0-9-._:].
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "D{device_id}".into();
        }),
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "{device_id}@".into();
        }),
        // The default group ID is the policy name, which may end in a character DPS refuses.
        ("policy.azure_dps.enrollment_group_id", |p| {
            p.name = "fleet.".into();
        }),
    ];
    assert_refused(&azure_policy(), |p| p, cases);
    let error = create(&with(azure_policy(), |p| p.name = "fleet.".into())).unwrap_err();
    assert!(error.message.contains("policy name"), "{error}");
}

#[test]
fn azure_dps_defaults() {
    let spec = create(&azure_policy()).unwrap();
    let CloudParams::AzureDps(params) = &spec.cloud else {
        panic!()
    };
    assert_eq!(params.global_endpoint, azure_dps::DEFAULT_GLOBAL_ENDPOINT);
    assert_eq!(params.port, 8883);
    assert_eq!(params.enrollment_group_id, "azure-fleet");
    assert!(params.server_root_ca_pem.is_empty());
    assert!(params.iot_hub_host_names.is_empty());
    // A lowercase prefix fits when the CN stays within 64 characters: not with a DeviceId.
    assert!(
        create(&with(azure_policy(), |p| p.subject_cn_template =
            "{device_id}".into()))
        .is_ok()
    );
}

#[test]
fn mosquitto_fields_are_validated() {
    let cases: &[(&str, Edit<v1::MosquittoPolicyParams>)] = &[
        ("policy.mosquitto.host", |p| p.host.clear()),
        ("policy.mosquitto.host", |p| {
            p.host = "broker\nlistener 1883".into();
        }),
        ("policy.mosquitto.port", |p| p.port = 100_000),
        ("policy.mosquitto.topic_root", |p| {
            p.topic_root = "devices/#".into();
        }),
        ("policy.mosquitto.topic_root", |p| p.topic_root = "+".into()),
        ("policy.mosquitto.topic_root", |p| {
            p.topic_root = "dev ices".into();
        }),
        ("policy.mosquitto.topic_root", |p| {
            p.topic_root = "d\npattern readwrite #".into();
        }),
        ("policy.mosquitto.topic_root", |p| {
            p.topic_root = "%c".into();
        }),
        ("policy.mosquitto.broker_ca_pem", |p| {
            p.broker_ca_pem = PRIVATE_KEY_PEM.into();
        }),
        ("policy.mosquitto.tls_versions", |p| {
            p.tls_versions = vec![0];
        }),
        ("policy.mosquitto.tls_versions", |p| {
            p.tls_versions = vec![2, 99];
        }),
        ("policy.mosquitto.tls_versions", |p| {
            p.tls_versions = vec![2, 1, 2];
        }),
    ];
    assert_refused(
        &mosquitto_params(),
        |p| policy("mqtt-fleet", v1::policy::Params::Mosquitto(p)),
        cases,
    );

    // The CN is the broker user name and, through %u, a topic level.
    let cases: &[(&str, Edit<v1::Policy>)] = &[
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "{device_id}/x".into();
        }),
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "+{device_id}".into();
        }),
        ("policy.subject_cn_template", |p| {
            p.subject_cn_template = "#{device_id}".into();
        }),
    ];
    assert_refused(&mosquitto_policy(), |p| p, cases);
}

#[test]
fn mosquitto_defaults_and_ip_host() {
    let spec = create(&mosquitto_policy()).unwrap();
    let CloudParams::Mosquitto(params) = &spec.cloud else {
        panic!()
    };
    assert_eq!(params.port, 8883);
    assert_eq!(params.topic_root, "devices");
    assert!(params.broker_ca_pem.is_empty());
    for host in ["192.0.2.7", "2001:db8::7"] {
        assert!(
            create(&with_mosquitto(|p| p.host = host.into())).is_ok(),
            "{host}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

fn all_policies() -> Vec<v1::Policy> {
    vec![
        aws_policy(),
        with_aws(|p| {
            p.port = 443;
            p.thing_name_template = "{owner}_{device_id}".into();
            p.topic_root = "things".into();
        }),
        azure_policy(),
        with_azure(|p| {
            p.global_endpoint = "dps.example.net".into();
            p.port = 443;
            p.server_root_ca_pem = foreign_root_pem();
            p.enrollment_group_id = "Group_1".into();
            p.iot_hub_host_names = vec!["hub1.azure-devices.net".into()];
        }),
        mosquitto_policy(),
        with_mosquitto(|p| {
            p.host = "10.0.0.1".into();
            p.port = 18_883;
            p.topic_root = "fleet".into();
            p.broker_ca_pem = foreign_root_pem();
        }),
        with_mosquitto(|p| p.tls_versions = vec![v1::TlsVersion::TlsVersion13.into()]),
    ]
}

#[test]
fn proto_round_trip_keeps_everything() {
    for policy in all_policies() {
        let policy = with(policy, |p| {
            p.certificate_lifetime = Some(prost_types::Duration {
                seconds: 90 * 86_400,
                nanos: 500,
            });
            p.renew_window = duration(7 * 86_400);
        });
        let spec = create(&policy).unwrap();
        let proto = spec.to_proto();
        assert_eq!(proto.kind, i32::from(spec.kind()));
        assert_ne!(spec.kind(), v1::PolicyKind::Unspecified);
        assert_eq!(proto.owner, OWNER);
        assert_eq!(proto.created_by, CREATOR);
        assert_eq!(
            proto.created_at,
            Some(prost_types::Timestamp {
                seconds: now().unix_timestamp(),
                nanos: 0
            })
        );
        assert_eq!(proto.certificate_lifetime, policy.certificate_lifetime);
        assert_eq!(proto.renew_window, policy.renew_window);
        assert_eq!(proto.subject_cn_template, "{device_id}");
        let again = PolicySpec::from_proto(&proto, OWNER, CREATOR, spec.created_at, max_lifetime())
            .unwrap();
        assert_eq!(again, spec);
        // Defaults are explicit in the proto view, so it is a fixed point.
        assert_eq!(again.to_proto(), proto);
    }
}

#[test]
fn defaults_are_filled_in_the_proto_view() {
    let proto = create(&mosquitto_policy()).unwrap().to_proto();
    assert_eq!(proto.certificate_lifetime, duration(365 * 86_400));
    assert_eq!(proto.renew_window, duration(30 * 86_400));
    let Some(v1::policy::Params::Mosquitto(params)) = proto.params else {
        panic!()
    };
    assert_eq!((params.port, params.topic_root.as_str()), (8883, "devices"));
}

#[test]
fn serde_json_round_trip() {
    for policy in all_policies() {
        let spec = create(&policy).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        let parsed: Value = serde_json::from_str(&json).unwrap();
        // Instants are stored as RFC 3339 text, readable in the registry.
        assert!(
            parsed["created_at"].as_str().unwrap().ends_with('Z'),
            "{json}"
        );
        let back: PolicySpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
}

// ---------------------------------------------------------------------------------------------
// Device view
// ---------------------------------------------------------------------------------------------

#[test]
fn endpoints_per_cloud() {
    use v1::credential_bundle::Endpoint;
    let id = device_id();
    let hex = id.to_string();
    let root = "ROOT PEM";

    let spec = create(&with_aws(|p| {
        p.thing_name_template = "{owner}_{device_id}".into();
    }))
    .unwrap();
    let cn = spec.subject_cn(&id).unwrap();
    assert_eq!(cn, hex);
    let Endpoint::AwsIot(aws) = spec.endpoint(&id, &cn, root) else {
        panic!()
    };
    assert_eq!(aws.host, "abc123-ats.iot.eu-west-1.amazonaws.com");
    assert_eq!(aws.port, 8883);
    assert_eq!(aws.client_id, format!("acme_{hex}"));
    assert_eq!(aws.topic_prefix, format!("devices/acme_{hex}/"));
    assert!(aws.server_root_ca_pem.contains("BEGIN CERTIFICATE"));
    assert!(aws.alpn_protocols.is_empty());

    let spec = create(&azure_policy()).unwrap();
    let Endpoint::AzureDps(azure) = spec.endpoint(&id, &hex, root) else {
        panic!()
    };
    assert_eq!(
        azure.global_endpoint,
        "global.azure-devices-provisioning.net"
    );
    assert_eq!(azure.port, 8883);
    assert_eq!(azure.id_scope, "0ne00ABCDEF");
    assert_eq!(azure.registration_id, hex);
    assert_eq!(azure.mqtt_client_id, hex);
    assert_eq!(
        azure.mqtt_username,
        format!("0ne00ABCDEF/registrations/{hex}/api-version=2019-03-31")
    );
    assert!(azure.server_root_ca_pem.is_empty());

    let spec = create(&mosquitto_policy()).unwrap();
    let Endpoint::Mosquitto(mqtt) = spec.endpoint(&id, &hex, root) else {
        panic!()
    };
    assert_eq!(mqtt.host, "broker.example.com");
    assert_eq!(mqtt.port, 8883);
    assert_eq!(mqtt.ca_pem, root);
    assert_eq!(mqtt.topic_prefix, format!("devices/{hex}/"));
    assert_eq!(mqtt.client_id, hex);
    // A broker CA in the policy replaces the oxroot root.
    let foreign = foreign_root_pem();
    let spec = create(&with_mosquitto(|p| p.broker_ca_pem = foreign.clone())).unwrap();
    let Endpoint::Mosquitto(mqtt) = spec.endpoint(&id, &hex, root) else {
        panic!()
    };
    assert_eq!(mqtt.ca_pem, foreign);
}

/// Which TLS versions each cloud's devices offer: AWS IoT both, Azure DPS only 1.2 (all it
/// documents), Mosquitto what the policy says the broker accepts, both by default. The
/// rendered broker configuration agrees with what the devices are told.
#[test]
fn tls_versions_per_cloud() {
    use enroll_service::policy::TlsVersion::{Tls12, Tls13};
    assert_eq!(
        create(&aws_policy()).unwrap().tls_versions(),
        [Tls12, Tls13]
    );
    assert_eq!(create(&azure_policy()).unwrap().tls_versions(), [Tls12]);
    let default = create(&mosquitto_policy()).unwrap();
    assert_eq!(default.tls_versions(), [Tls12, Tls13]);
    let Some(v1::policy::Params::Mosquitto(params)) = default.to_proto().params else {
        panic!()
    };
    // The default is explicit in the API view.
    assert_eq!(params.tls_versions, [1, 2]);

    let only_13 = create(&with_mosquitto(|p| {
        p.tls_versions = vec![v1::TlsVersion::TlsVersion13.into()];
    }))
    .unwrap();
    assert_eq!(only_13.tls_versions(), [Tls13]);
    // Given in any order, stored sorted.
    let both = create(&with_mosquitto(|p| p.tls_versions = vec![2, 1])).unwrap();
    assert_eq!(both.tls_versions(), [Tls12, Tls13]);

    // Mosquitto 2.x reads tls_version as the listener's minimum.
    let ca = ca();
    for (spec, minimum) in [(&default, "tlsv1.2"), (&only_13, "tlsv1.3")] {
        let artifacts = export(spec, &ca, &request()).unwrap();
        let found = directives(file(&artifacts, "mosquitto.conf"));
        assert!(found.contains(&("tls_version", minimum)), "{found:?}");
    }
}

/// Mosquitto policies stored before the field existed read as the default.
#[test]
fn stored_mosquitto_policies_without_tls_versions_get_the_default() {
    let spec = create(&mosquitto_policy()).unwrap();
    let mut stored: Value = serde_json::to_value(&spec).unwrap();
    let params = stored["cloud"]["Mosquitto"].as_object_mut().unwrap();
    assert!(params.remove("tls_versions").is_some(), "{stored}");
    let old: PolicySpec = serde_json::from_value(stored).unwrap();
    assert_eq!(old, spec);
    assert_eq!(old.tls_versions(), TlsVersion::ALL);
}

#[test]
fn subject_cn_of_a_tampered_record_is_refused() {
    let mut spec = create(&mosquitto_policy()).unwrap();
    spec.subject_cn_template = "xx{device_id}".into();
    let error = spec.subject_cn(&device_id()).unwrap_err();
    assert_eq!(error.field, "policy.subject_cn_template");
}

// ---------------------------------------------------------------------------------------------
// Artefacts
// ---------------------------------------------------------------------------------------------

fn request() -> v1::ExportArtifactsRequest {
    v1::ExportArtifactsRequest {
        owner: OWNER.into(),
        policy_name: "p".into(),
        ..v1::ExportArtifactsRequest::default()
    }
}

/// A JITP role of the test policies' account.
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/oxroot-jitp";

fn with_role(arn: &str) -> v1::ExportArtifactsRequest {
    v1::ExportArtifactsRequest {
        aws_role_arn: arn.into(),
        ..request()
    }
}

fn crl_pem(ca: &CertificateAuthority, revoked: &[Serial]) -> String {
    let entries: Vec<RevokedEntry> = revoked
        .iter()
        .map(|&serial| RevokedEntry {
            serial,
            revoked_at: now(),
            reason: RevocationReason::KeyCompromise,
        })
        .collect();
    ca.sign_crl(&entries, now(), now() + Duration::days(7), 1)
        .unwrap()
        .pem
}

fn export(
    spec: &PolicySpec,
    ca: &CertificateAuthority,
    request: &v1::ExportArtifactsRequest,
) -> Result<Vec<v1::Artifact>, PolicyError> {
    let artifacts = export_artifacts(
        spec,
        &OwnerTrust::from(ca),
        &crl_pem(ca, &[]),
        request,
        now() + Duration::hours(1),
    );
    if let Ok(artifacts) = &artifacts {
        for artifact in artifacts {
            let text = String::from_utf8(artifact.content.clone()).unwrap();
            assert!(!text.contains("PRIVATE KEY"), "{}", artifact.file_name);
            assert!(!artifact.description.is_empty());
            assert!(!artifact.media_type.is_empty());
        }
    }
    artifacts
}

fn names(artifacts: &[v1::Artifact]) -> Vec<&str> {
    artifacts.iter().map(|a| a.file_name.as_str()).collect()
}

fn file<'a>(artifacts: &'a [v1::Artifact], name: &str) -> &'a str {
    let artifact = artifacts
        .iter()
        .find(|a| a.file_name == name)
        .unwrap_or_else(|| panic!("{name} missing from {:?}", names(artifacts)));
    std::str::from_utf8(&artifact.content).unwrap()
}

/// Runs `openssl` with `args` in `dir`; returns (success, stdout + stderr).
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed (apt-get install -y openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Verifies `cert_pem` (leaf first) up to `ca`'s root with `openssl verify` and extra `args`;
/// returns the certificate's subject line.
fn openssl_verify(ca: &CertificateAuthority, cert_pem: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("root.pem"), ca.root_pem()).unwrap();
    fs::write(dir.path().join("intermediate.pem"), ca.certificate_pem()).unwrap();
    fs::write(dir.path().join("cert.pem"), cert_pem).unwrap();
    let verify = [
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
        ],
        args,
        &["cert.pem"],
    ]
    .concat();
    let (ok, out) = openssl(dir.path(), &verify);
    assert!(ok && out.contains("cert.pem: OK"), "openssl verify: {out}");
    let (ok, subject) = openssl(
        dir.path(),
        &["x509", "-in", "cert.pem", "-noout", "-subject"],
    );
    assert!(ok, "{subject}");
    subject
}

#[test]
fn aws_iot_policy_document_is_least_privilege() {
    let ca = ca();
    let spec = create(&aws_policy()).unwrap();
    let artifacts = export(&spec, &ca, &with_role(ROLE_ARN)).unwrap();
    assert_eq!(
        names(&artifacts),
        [
            "aws-iot-policy.json",
            "ca-certificate.pem",
            "jitp-template.json"
        ]
    );
    let document: Value = serde_json::from_str(file(&artifacts, "aws-iot-policy.json")).unwrap();
    assert_eq!(document["Version"], "2012-10-17");
    let statements = document["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 3);
    let prefix = "arn:aws:iot:eu-west-1:123456789012:";
    let thing = "${iot:Connection.Thing.ThingName}";

    assert_eq!(statements[0]["Effect"], "Allow");
    assert_eq!(statements[0]["Action"], "iot:Connect");
    assert_eq!(statements[0]["Resource"], format!("{prefix}client/{thing}"));
    assert_eq!(
        statements[0]["Condition"],
        serde_json::json!({ "Bool": { "iot:Connection.Thing.IsAttached": "true" } })
    );
    assert_eq!(statements[1]["Effect"], "Allow");
    assert_eq!(
        statements[1]["Action"],
        serde_json::json!(["iot:Publish", "iot:Receive"])
    );
    assert_eq!(
        statements[1]["Resource"],
        format!("{prefix}topic/devices/{thing}/*")
    );
    assert_eq!(statements[2]["Effect"], "Allow");
    assert_eq!(statements[2]["Action"], "iot:Subscribe");
    assert_eq!(
        statements[2]["Resource"],
        format!("{prefix}topicfilter/devices/{thing}/*")
    );
    // Nothing grants anything else: no wildcard actions, no wildcard-only resources, no Deny
    // needed.
    for statement in statements {
        let resource = statement["Resource"].as_str().unwrap();
        assert!(resource.contains(thing), "{resource}");
        assert!(!statement.to_string().contains("iot:*"));
        assert_eq!(
            statement.as_object().unwrap().len(),
            4 + usize::from(statement.get("Condition").is_some())
        );
    }

    assert_eq!(file(&artifacts, "ca-certificate.pem"), ca.certificate_pem());

    // JITP: a thing named after the certificate CN, with the exported policy attached.
    let jitp: Value = serde_json::from_str(file(&artifacts, "jitp-template.json")).unwrap();
    let body: Value = serde_json::from_str(jitp["templateBody"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["Resources"]["thing"]["Properties"]["ThingName"]["Ref"],
        "AWS::IoT::Certificate::CommonName"
    );
    assert_eq!(
        body["Resources"]["policy"]["Properties"]["PolicyName"],
        "aws-fleet"
    );
    assert_eq!(
        body["Resources"]["certificate"]["Properties"]["Status"],
        "ACTIVE"
    );
    // The complete registration config: the body and the role JITP assumes, nothing else.
    assert_eq!(jitp["roleArn"], ROLE_ARN);
    assert_eq!(jitp.as_object().unwrap().len(), 2, "{jitp}");
}

#[test]
fn aws_iot_policy_document_wildcards_unset_region_and_account() {
    let spec = create(&with_aws(|p| {
        p.aws_region.clear();
        p.aws_account_id.clear();
        p.topic_root = "fleet-7".into();
        // The thing name is no longer the CN: JITP cannot name the thing, so no template.
        p.thing_name_template = "t_{device_id}".into();
    }))
    .unwrap();
    let artifacts = export(&spec, &ca(), &request()).unwrap();
    // Without the region and the account the ARNs cannot be exact: the file says it is a
    // template, by its name and by a note AWS's policy grammar does not accept.
    assert_eq!(
        names(&artifacts),
        ["aws-iot-policy.template.json", "ca-certificate.pem"]
    );
    let document: Value =
        serde_json::from_str(file(&artifacts, "aws-iot-policy.template.json")).unwrap();
    assert_eq!(
        document["Statement"][1]["Resource"],
        "arn:aws:iot:*:*:topic/fleet-7/${iot:Connection.Thing.ThingName}/*"
    );
    let note = document[aws_iot::TEMPLATE_NOTE_KEY].as_str().unwrap();
    assert!(note.starts_with("TEMPLATE"), "{note}");
    assert!(note.contains("region and account ID"), "{note}");
    let artifact = artifacts
        .iter()
        .find(|a| a.file_name == "aws-iot-policy.template.json")
        .unwrap();
    assert!(artifact.description.starts_with("TEMPLATE"), "{artifact:?}");
}

#[test]
fn the_iot_policy_is_ready_only_with_both_region_and_account() {
    let ca = ca();
    for (region, account, missing) in [
        ("", "123456789012", "the AWS region,"),
        ("eu-west-1", "", "the AWS account ID,"),
    ] {
        let spec = create(&with_aws(|p| {
            p.aws_region = region.into();
            p.aws_account_id = account.into();
        }))
        .unwrap();
        let artifacts = export(&spec, &ca, &request()).unwrap();
        assert!(!names(&artifacts).contains(&"aws-iot-policy.json"));
        let document: Value =
            serde_json::from_str(file(&artifacts, "aws-iot-policy.template.json")).unwrap();
        let note = document[aws_iot::TEMPLATE_NOTE_KEY].as_str().unwrap();
        assert!(note.contains(missing), "{note}");
        // The part that is known is used; only the missing one is a wildcard.
        let resource = document["Statement"][0]["Resource"].as_str().unwrap();
        let expected = format!(
            "arn:aws:iot:{}:{}:client/",
            if region.is_empty() { "*" } else { region },
            if account.is_empty() { "*" } else { account },
        );
        assert!(resource.starts_with(&expected), "{resource}");
    }
    // Both given: the ready file, with nothing but the policy grammar in it.
    let artifacts = export(&create(&aws_policy()).unwrap(), &ca, &request()).unwrap();
    let document: Value = serde_json::from_str(file(&artifacts, "aws-iot-policy.json")).unwrap();
    let mut keys: Vec<_> = document.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["Statement", "Version"]);
}

/// The JITP registration config is written only when it can be complete, that is with the IAM
/// role JITP assumes; a role ARN that is malformed, of another account, or for a policy whose
/// thing name is not the certificate CN is refused on `aws_role_arn`, and nothing is exported.
#[test]
fn the_jitp_registration_config_needs_a_valid_role_arn() {
    let ca = ca();
    let spec = create(&aws_policy()).unwrap();
    let artifacts = export(&spec, &ca, &request()).unwrap();
    assert_eq!(
        names(&artifacts),
        ["aws-iot-policy.json", "ca-certificate.pem"]
    );

    for arn in [
        "arn:aws:iam::123456789012:role/service-role/oxroot-jitp",
        "arn:aws-cn:iam::123456789012:role/JITP_Role+=,.@-",
    ] {
        let artifacts = export(&spec, &ca, &with_role(arn)).unwrap();
        let jitp: Value = serde_json::from_str(file(&artifacts, "jitp-template.json")).unwrap();
        assert_eq!(jitp["roleArn"], arn);
        assert!(jitp["templateBody"].is_string());
    }

    let long_name = format!("arn:aws:iam::123456789012:role/{}", "r".repeat(65));
    for bad in [
        "JITPRole",
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:iam::12345678901:role/JITPRole",
        "arn:aws:s3::123456789012:role/JITPRole",
        "arn::iam::123456789012:role/JITPRole",
        "arn:aws:iam:eu-west-1:123456789012:role/JITPRole",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:iam::123456789012:role/JITP Role",
        "arn:aws:iam::123456789012:role/JITP\"Role",
        "arn:aws:iam::123456789012:role/JITPRole\n",
        long_name.as_str(),
    ] {
        let error = export(&spec, &ca, &with_role(bad)).unwrap_err();
        assert_eq!(error.field, "aws_role_arn", "{bad:?}: {error}");
        assert!(error.message.contains("IAM role ARN"), "{error}");
    }

    // A role of another account than the policy's.
    let error = export(
        &spec,
        &ca,
        &with_role("arn:aws:iam::210987654321:role/JITPRole"),
    )
    .unwrap_err();
    assert_eq!(error.field, "aws_role_arn");
    assert!(error.message.contains("123456789012"), "{error}");

    // JITP cannot name a thing that is not the CN: refused, not silently left out.
    let renamed = create(&with_aws(|p| {
        p.thing_name_template = "t_{device_id}".into();
    }))
    .unwrap();
    let error = export(&renamed, &ca, &with_role(ROLE_ARN)).unwrap_err();
    assert_eq!(error.field, "aws_role_arn");
    assert!(error.message.contains("CN"), "{error}");
}

#[test]
fn aws_verification_certificate_validates_with_openssl() {
    let ca = ca();
    let spec = create(&aws_policy()).unwrap();
    let code = "8b2e9ad1c4f1d4a0e7e3f9c6b0a1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9";
    let request = v1::ExportArtifactsRequest {
        aws_registration_code: code.into(),
        ..request()
    };
    let artifacts = export(&spec, &ca, &request).unwrap();
    let certificate = file(&artifacts, "verification-certificate.pem");
    assert_eq!(certificate.matches("BEGIN CERTIFICATE").count(), 1);
    let subject = openssl_verify(&ca, certificate, &[]);
    assert!(subject.contains(&format!("CN = {code}")), "{subject}");

    for bad in ["a b", "x\ny", &"a".repeat(65), "code/1"] {
        let request = v1::ExportArtifactsRequest {
            aws_registration_code: bad.into(),
            ..self::request()
        };
        assert_eq!(
            export(&spec, &ca, &request).unwrap_err().field,
            "aws_registration_code",
            "{bad:?}"
        );
    }
}

#[test]
fn artefact_certificates_never_outlive_the_issuing_ca() {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let ca = ca();
    let ca_end = ca.not_after();
    let spec = create(&aws_policy()).unwrap();
    let request = v1::ExportArtifactsRequest {
        aws_registration_code: "ABC123".into(),
        ..request()
    };
    let late = ca_end - Duration::days(10);
    let artifacts = export_artifacts(&spec, &OwnerTrust::from(&ca), "", &request, late).unwrap();
    let pem = pem::parse(file(&artifacts, "verification-certificate.pem")).unwrap();
    let (_, certificate) = X509Certificate::from_der(pem.contents()).unwrap();
    assert_eq!(
        certificate.validity().not_after.timestamp(),
        ca_end.unix_timestamp()
    );
    // Once the CA has expired there is nothing valid left to issue.
    let error = export_artifacts(
        &spec,
        &OwnerTrust::from(&ca),
        "",
        &request,
        ca_end + Duration::days(1),
    )
    .unwrap_err();
    assert_eq!(error.field, "aws_registration_code");
}

#[test]
fn azure_enrollment_group_and_proof_of_possession() {
    let ca = ca();
    let spec = create(&with_azure(|p| {
        p.iot_hub_host_names = vec![
            "hub1.azure-devices.net".into(),
            "hub2.azure-devices.net".into(),
        ];
    }))
    .unwrap();
    let code = "1B1F84DE79B9BD5F16D71E92709917C2A1CA19D5A156CB9F";
    let request = v1::ExportArtifactsRequest {
        azure_verification_code: code.into(),
        ..request()
    };
    let artifacts = export(&spec, &ca, &request).unwrap();
    assert_eq!(
        names(&artifacts),
        [
            "enrollment-group.json",
            "ca-certificate.pem",
            "verification-certificate.pem"
        ]
    );
    let group: Value = serde_json::from_str(file(&artifacts, "enrollment-group.json")).unwrap();
    assert_eq!(group["enrollmentGroupId"], "azure-fleet");
    assert_eq!(group["attestation"]["type"], "x509");
    assert_eq!(
        group["attestation"]["x509"]["signingCertificates"]["primary"]["certificate"],
        ca.certificate_pem()
    );
    assert_eq!(group["provisioningStatus"], "enabled");
    assert_eq!(group["allocationPolicy"], "hashed");
    assert_eq!(group["reprovisionPolicy"]["updateHubAssignment"], true);
    assert_eq!(
        group["iotHubs"],
        serde_json::json!(["hub1.azure-devices.net", "hub2.azure-devices.net"])
    );
    assert_eq!(file(&artifacts, "ca-certificate.pem"), ca.certificate_pem());
    let subject = openssl_verify(&ca, file(&artifacts, "verification-certificate.pem"), &[]);
    assert!(subject.contains(&format!("CN = {code}")), "{subject}");

    // Without hubs the group leaves allocation to DPS's linked hubs.
    let artifacts = export(&create(&azure_policy()).unwrap(), &ca, &self::request()).unwrap();
    let group: Value = serde_json::from_str(file(&artifacts, "enrollment-group.json")).unwrap();
    assert!(group.get("iotHubs").is_none());

    let request = v1::ExportArtifactsRequest {
        azure_verification_code: "bad code".into(),
        ..self::request()
    };
    assert_eq!(
        export(&spec, &ca, &request).unwrap_err().field,
        "azure_verification_code"
    );
}

#[test]
fn options_for_another_kind_are_refused() {
    let ca = ca();
    let aws = create(&aws_policy()).unwrap();
    let azure = create(&azure_policy()).unwrap();
    let mqtt = create(&mosquitto_policy()).unwrap();
    let with_code = |aws_code: &str, azure_code: &str| v1::ExportArtifactsRequest {
        aws_registration_code: aws_code.into(),
        azure_verification_code: azure_code.into(),
        ..request()
    };
    let with_mosquitto = v1::ExportArtifactsRequest {
        mosquitto: Some(v1::MosquittoExportOptions {
            config_dir: "/etc/x".into(),
            ..v1::MosquittoExportOptions::default()
        }),
        ..request()
    };
    assert_eq!(
        export(&aws, &ca, &with_code("", "ABC")).unwrap_err().field,
        "azure_verification_code"
    );
    assert_eq!(
        export(&mqtt, &ca, &with_code("ABC", "")).unwrap_err().field,
        "aws_registration_code"
    );
    assert_eq!(
        export(&azure, &ca, &with_code("ABC", ""))
            .unwrap_err()
            .field,
        "aws_registration_code"
    );
    assert_eq!(
        export(&aws, &ca, &with_mosquitto).unwrap_err().field,
        "mosquitto"
    );
    for other in [&azure, &mqtt] {
        assert_eq!(
            export(other, &ca, &with_role(ROLE_ARN)).unwrap_err().field,
            "aws_role_arn"
        );
    }
    // An empty options message is no option.
    let empty = v1::ExportArtifactsRequest {
        mosquitto: Some(v1::MosquittoExportOptions::default()),
        ..request()
    };
    assert!(export(&azure, &ca, &empty).is_ok());
}

/// Mosquitto directives in the rendered config, comments and blank lines skipped.
fn directives(conf: &str) -> Vec<(&str, &str)> {
    conf.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| line.split_once(' ').unwrap())
        .collect()
}

#[test]
fn mosquitto_config_acl_and_chain() {
    let ca = ca();
    let spec = create(&with_mosquitto(|p| p.port = 8884)).unwrap();
    let artifacts = export(&spec, &ca, &request()).unwrap();
    assert_eq!(
        names(&artifacts),
        ["mosquitto.conf", "acl", "ca.pem", "crl.pem"]
    );

    let dir = mosquitto::DEFAULT_CONFIG_DIR;
    let expected = [
        ("listener", "8884".to_owned()),
        ("cafile", format!("{dir}/ca.pem")),
        ("certfile", format!("{dir}/broker-certificate.pem")),
        ("keyfile", format!("{dir}/broker.key")),
        ("require_certificate", "true".to_owned()),
        ("use_identity_as_username", "true".to_owned()),
        ("crlfile", format!("{dir}/crl.pem")),
        ("tls_version", "tlsv1.2".to_owned()),
        ("acl_file", format!("{dir}/acl")),
    ];
    let found = directives(file(&artifacts, "mosquitto.conf"));
    assert_eq!(found.len(), expected.len(), "{found:?}");
    for (key, value) in &expected {
        let matching: Vec<_> = found.iter().filter(|(k, _)| k == key).collect();
        assert_eq!(matching, [&(*key, value.as_str())], "{key}");
    }

    let acl = directives(file(&artifacts, "acl"));
    assert_eq!(acl, [("pattern", "readwrite devices/%u/#")]);

    assert_eq!(
        file(&artifacts, "ca.pem"),
        format!("{}{}", ca.certificate_pem(), ca.root_pem())
    );
    // The CRL is shipped as given.
    let crl = crl_pem(&ca, &[]);
    let artifacts =
        export_artifacts(&spec, &OwnerTrust::from(&ca), &crl, &request(), now()).unwrap();
    assert_eq!(file(&artifacts, "crl.pem"), crl);

    // A custom directory, with its trailing slash dropped.
    let request = v1::ExportArtifactsRequest {
        mosquitto: Some(v1::MosquittoExportOptions {
            config_dir: "/opt/broker/tls/".into(),
            ..v1::MosquittoExportOptions::default()
        }),
        ..request()
    };
    let artifacts = export(&spec, &ca, &request).unwrap();
    let found = directives(file(&artifacts, "mosquitto.conf"));
    assert!(
        found.contains(&("cafile", "/opt/broker/tls/ca.pem")),
        "{found:?}"
    );
    assert!(
        found.contains(&("acl_file", "/opt/broker/tls/acl")),
        "{found:?}"
    );
}

#[test]
fn mosquitto_config_dir_is_validated() {
    let ca = ca();
    let spec = create(&mosquitto_policy()).unwrap();
    for bad in [
        "relative/dir",
        "/etc/mosquitto oxroot",
        "/etc/x\ncafile /tmp/evil.pem",
        "/etc/x\r",
        "/etc/../tmp",
        "/etc/#x",
    ] {
        let request = v1::ExportArtifactsRequest {
            mosquitto: Some(v1::MosquittoExportOptions {
                config_dir: bad.into(),
                ..v1::MosquittoExportOptions::default()
            }),
            ..request()
        };
        assert_eq!(
            export(&spec, &ca, &request).unwrap_err().field,
            "mosquitto.config_dir",
            "{bad:?}"
        );
    }
}

/// A P-256 key and CSR made by the `openssl` CLI in `dir` (`broker.key`, `broker.csr`).
fn openssl_csr(dir: &Path, curve: &str) -> String {
    let (ok, out) = openssl(
        dir,
        &[
            "ecparam",
            "-name",
            curve,
            "-genkey",
            "-noout",
            "-out",
            "broker.key",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "broker.key",
            "-subj",
            "/CN=ignored.example",
            "-out",
            "broker.csr",
        ],
    );
    assert!(ok, "{out}");
    fs::read_to_string(dir.join("broker.csr")).unwrap()
}

fn with_csr(csr_pem: &str) -> v1::ExportArtifactsRequest {
    v1::ExportArtifactsRequest {
        mosquitto: Some(v1::MosquittoExportOptions {
            broker_csr_pem: csr_pem.into(),
            ..v1::MosquittoExportOptions::default()
        }),
        ..request()
    }
}

#[test]
fn broker_certificate_for_csr_validates_with_openssl() {
    let ca = ca();
    let work = tempfile::tempdir().unwrap();
    let csr = openssl_csr(work.path(), "prime256v1");

    let spec = create(&mosquitto_policy()).unwrap();
    let artifacts = export(&spec, &ca, &with_csr(&csr)).unwrap();
    let chain = file(&artifacts, "broker-certificate.pem");
    // Leaf then intermediate, so devices that trust only the root can build the chain.
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(chain.ends_with(&ca.certificate_pem()));
    let subject = openssl_verify(
        &ca,
        chain,
        &[
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "broker.example.com",
        ],
    );
    // The CSR's subject is ignored: the policy decides the name.
    assert!(subject.contains("CN = broker.example.com"), "{subject}");
    // The certificate is for the CSR's key.
    fs::write(work.path().join("chain.pem"), chain).unwrap();
    let (_, cert_key) = openssl(
        work.path(),
        &["x509", "-in", "chain.pem", "-noout", "-pubkey"],
    );
    let (_, csr_key) = openssl(
        work.path(),
        &["req", "-in", "broker.csr", "-noout", "-pubkey"],
    );
    assert_eq!(cert_key, csr_key);
    assert!(cert_key.contains("BEGIN PUBLIC KEY"));

    // An IP host becomes an IP SAN.
    let spec = create(&with_mosquitto(|p| p.host = "192.0.2.10".into())).unwrap();
    let artifacts = export(&spec, &ca, &with_csr(&csr)).unwrap();
    openssl_verify(
        &ca,
        file(&artifacts, "broker-certificate.pem"),
        &["-purpose", "sslserver", "-verify_ip", "192.0.2.10"],
    );
}

#[test]
fn bad_or_foreign_csrs_are_refused() {
    let ca = ca();
    let spec = create(&mosquitto_policy()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let good = openssl_csr(work.path(), "prime256v1");

    // Flip a bit in the signature's last byte: still a CSR, but the self-signature fails.
    let block = pem::parse(&good).unwrap();
    let mut der = block.contents().to_vec();
    *der.last_mut().unwrap() ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let error = export(&spec, &ca, &with_csr(&tampered)).unwrap_err();
    assert_eq!(error.field, "mosquitto.broker_csr_pem");
    assert!(error.message.contains("self-signature"), "{error}");

    // P-384 is not P-256.
    let p384 = openssl_csr(work.path(), "secp384r1");
    let error = export(&spec, &ca, &with_csr(&p384)).unwrap_err();
    assert_eq!(error.field, "mosquitto.broker_csr_pem");
    assert!(error.message.contains("P-256"), "{error}");

    // Nor is RSA.
    let (ok, out) = openssl(
        work.path(),
        &[
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "rsa.key", "-subj", "/CN=x",
            "-out", "rsa.csr",
        ],
    );
    assert!(ok, "{out}");
    let rsa = fs::read_to_string(work.path().join("rsa.csr")).unwrap();
    let error = export(&spec, &ca, &with_csr(&rsa)).unwrap_err();
    assert!(error.message.contains("P-256"), "{error}");

    for junk in ["not a csr", PRIVATE_KEY_PEM, &ca.root_pem()] {
        let error = export(&spec, &ca, &with_csr(junk)).unwrap_err();
        assert_eq!(error.field, "mosquitto.broker_csr_pem", "{junk}");
    }
}

// ---------------------------------------------------------------------------------------------
// A real Mosquitto broker
// ---------------------------------------------------------------------------------------------

/// A Mosquitto broker this test started, killed when the test ends however it ends.
/// A Mosquitto broker this test started, logging to `mosquitto.log` in its directory.
struct Broker {
    child: std::process::Child,
    log_file: std::path::PathBuf,
}

impl Broker {
    /// Starts `mosquitto -c test.conf` in `dir` and waits (at most 15 s, generous for a loaded CI machine) until it listens.
    fn start(dir: &Path, port: u16) -> Self {
        let log_file = dir.join("mosquitto.log");
        let mut broker = Self {
            child: Command::new("mosquitto")
                .args(["-c", "test.conf"])
                .current_dir(dir)
                .stdout(std::process::Stdio::null())
                .stderr(fs::File::create(&log_file).unwrap())
                .spawn()
                .unwrap(),
            log_file,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = broker.child.try_wait().unwrap() {
                panic!(
                    "mosquitto refused the configuration ({status}): {}",
                    broker.log()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not start listening"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        broker
    }

    /// What the broker logged so far.
    fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap()
    }

    /// The log once it satisfies `done`, or after 10 s: a client can exit before the broker
    /// has logged why it dropped the connection.
    fn log_once(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.log();
            if done(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(program: &str) -> bool {
    Command::new(program).arg("--help").output().is_ok()
}

/// A device key made by openssl and an oxroot certificate for it; returns the file names of
/// the certificate chain and key in `dir`.
fn device_credentials(
    ca: &CertificateAuthority,
    dir: &Path,
    name: &str,
    common_name: &str,
    serial: Serial,
) -> (String, String) {
    let key = format!("{name}.key");
    let generate = [
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
    ];
    let (ok, out) = openssl(dir, &[&generate[..], &[&key]].concat());
    assert!(ok, "{out}");
    let spki = Command::new("openssl")
        .args(["pkey", "-in", &key, "-pubout", "-outform", "DER"])
        .current_dir(dir)
        .output()
        .unwrap()
        .stdout;
    // The uncompressed point is the last 65 bytes of a P-256 SubjectPublicKeyInfo.
    let public_key: [u8; 65] = spki[spki.len() - 65..].try_into().unwrap();
    let leaf = ca
        .issue_device_certificate(&enroll_service::pki::LeafRequest {
            public_key,
            common_name: common_name.into(),
            validity: enroll_service::pki::Validity::starting(now(), Duration::days(1)).unwrap(),
            serial,
            crl_distribution_point: None,
            firmware: None,
        })
        .unwrap();
    let chain = format!("{name}-chain.pem");
    let chain_pem = format!("{}{}", leaf.pem, ca.certificate_pem());
    fs::write(dir.join(&chain), chain_pem).unwrap();
    (chain, key)
}

/// Publishes one QoS 1 message over MQTT 5 with `mosquitto_pub`; true if the broker accepted
/// it (MQTT 5 reports a refused publish in the PUBACK, which mosquitto_pub prints).
fn publish(
    dir: &Path,
    port: u16,
    client_id: &str,
    credentials: &(String, String),
    topic: &str,
) -> (bool, String) {
    let (chain, key) = credentials;
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--cafile",
            "root.pem",
        ])
        .args(["--cert", chain, "--key", key, "-V", "mqttv5", "-q", "1"])
        .args(["-i", client_id, "-t", topic, "-m", "hello"])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.is_empty(), text)
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The rendered files in a temp directory, run by a real Mosquitto: it accepts the
/// configuration, lets a device publish below its prefix only, and refuses a revoked device.
#[test]
fn mosquitto_accepts_the_rendered_configuration() {
    // tests/run installs the broker; a missing one is a failure, never a silent skip.
    assert!(
        installed("mosquitto"),
        "mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)"
    );
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let spec = create(&with_mosquitto(|p| {
        p.host = "127.0.0.1".into();
        p.port = u32::from(port);
    }))
    .unwrap();
    let revoked_serial = Serial::new(0x0bad).unwrap();
    let request = v1::ExportArtifactsRequest {
        mosquitto: Some(v1::MosquittoExportOptions {
            config_dir: path.to_str().unwrap().into(),
            broker_csr_pem: openssl_csr(path, "prime256v1"),
        }),
        ..request()
    };
    let crl = crl_pem(&ca, &[revoked_serial]);
    let artifacts = export_artifacts(&spec, &OwnerTrust::from(&ca), &crl, &request, now()).unwrap();
    for artifact in &artifacts {
        fs::write(path.join(&artifact.file_name), &artifact.content).unwrap();
    }
    // The only adaptations: listen on loopback, and keep the current user (as root, Mosquitto
    // would switch to its own user, which cannot read a private temp directory).
    let conf = file(&artifacts, "mosquitto.conf").replace(
        &format!("listener {port}\n"),
        &format!("listener {port} 127.0.0.1\n"),
    );
    fs::write(path.join("test.conf"), format!("user {}\n{conf}", whoami())).unwrap();
    let broker = Broker::start(path, port);

    assert!(
        installed("mosquitto_pub"),
        "mosquitto_pub is not installed (apt-get install -y mosquitto-clients)"
    );
    fs::write(path.join("root.pem"), ca.root_pem()).unwrap();
    let good = device_id();
    let good_cn = spec.subject_cn(&good).unwrap();
    let good_files = device_credentials(&ca, path, "good", &good_cn, Serial::new(0x600d).unwrap());
    let revoked = DeviceId::from_bytes([0x77; 32]);
    let revoked_cn = spec.subject_cn(&revoked).unwrap();
    let revoked_files = device_credentials(&ca, path, "revoked", &revoked_cn, revoked_serial);

    let own_topic = format!("devices/{good_cn}/telemetry");
    let (ok, out) = publish(path, port, &good.to_string(), &good_files, &own_topic);
    assert!(ok, "a device must publish below its own prefix: {out}");
    let foreign_topic = format!("devices/{revoked_cn}/telemetry");
    let (ok, out) = publish(path, port, &good.to_string(), &good_files, &foreign_topic);
    assert!(
        !ok && out.contains("Not authorized"),
        "the ACL must refuse another device's topic: {out}"
    );
    let (ok, out) = publish(
        path,
        port,
        &revoked.to_string(),
        &revoked_files,
        &foreign_topic,
    );
    assert!(!ok, "the CRL must refuse a revoked device: {out}");

    // The broker's log says why: the CN became the user name, and the revoked certificate
    // failed verification (its chain is otherwise made exactly like the good one).
    let log = broker.log_once(|log| log.contains("certificate verify failed"));
    assert!(log.contains(&format!("u'{good_cn}'")), "{log}");
    assert_eq!(log.matches("certificate verify failed").count(), 1, "{log}");
}

/// A TLS 1.3-only Mosquitto policy renders a listener that a real broker runs with TLS 1.3
/// as its minimum: `mosquitto_pub` gets through with TLS 1.3 and is refused with TLS 1.2, as
/// the policy's devices are told (CredentialBundle.tls_versions).
#[test]
fn a_tls13_only_mosquitto_policy_gives_a_broker_that_refuses_tls12() {
    assert!(installed("mosquitto") && installed("mosquitto_pub"));
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let spec = create(&with_mosquitto(|p| {
        p.host = "127.0.0.1".into();
        p.port = u32::from(port);
        p.tls_versions = vec![v1::TlsVersion::TlsVersion13.into()];
    }))
    .unwrap();
    let request = v1::ExportArtifactsRequest {
        mosquitto: Some(v1::MosquittoExportOptions {
            config_dir: path.to_str().unwrap().into(),
            broker_csr_pem: openssl_csr(path, "prime256v1"),
        }),
        ..request()
    };
    let artifacts = export_artifacts(
        &spec,
        &OwnerTrust::from(&ca),
        &crl_pem(&ca, &[]),
        &request,
        now(),
    )
    .unwrap();
    for artifact in &artifacts {
        fs::write(path.join(&artifact.file_name), &artifact.content).unwrap();
    }
    let conf = file(&artifacts, "mosquitto.conf").replace(
        &format!("listener {port}\n"),
        &format!("listener {port} 127.0.0.1\n"),
    );
    fs::write(path.join("test.conf"), format!("user {}\n{conf}", whoami())).unwrap();
    let _broker = Broker::start(path, port);
    fs::write(path.join("root.pem"), ca.root_pem()).unwrap();

    let device = device_id();
    let cn = spec.subject_cn(&device).unwrap();
    let credentials = device_credentials(&ca, path, "device", &cn, Serial::new(0x13).unwrap());
    let topic = format!("devices/{cn}/telemetry");
    let (ok, out) = publish(path, port, &device.to_string(), &credentials, &topic);
    assert!(
        ok,
        "TLS 1.3 is what the policy says the broker accepts: {out}"
    );
    // mosquitto_pub's --tls-version is a minimum too, so the TLS 1.2-only client is openssl's.
    let handshake = |version: &str| {
        let out = Command::new("openssl")
            .args(["s_client", "-brief", version, "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-CAfile", "root.pem", "-cert", &credentials.0])
            .args(["-key", &credentials.1])
            .current_dir(path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        (text.contains("CONNECTION ESTABLISHED"), text)
    };
    let (ok, out) = handshake("-tls1_3");
    assert!(ok && out.contains("Protocol version: TLSv1.3"), "{out}");
    let (ok, out) = handshake("-tls1_2");
    assert!(
        !ok && out.contains("protocol version"),
        "the listener's minimum is TLS 1.3: {out}"
    );
}

#[test]
fn a_crl_base_url_is_plain_http_and_names_each_issuers_crl() {
    let with_base = |url: &str| {
        let mut policy = mosquitto_policy();
        policy.crl_base_url = url.into();
        create(&policy)
    };
    let spec = with_base("http://pki.example.com:8080/crl/").unwrap();
    assert_eq!(spec.crl_base_url, "http://pki.example.com:8080/crl");
    assert_eq!(
        spec.crl_distribution_point("acme/2").as_deref(),
        Some("http://pki.example.com:8080/crl/acme/2.crl")
    );
    assert_eq!(
        spec.to_proto().crl_base_url,
        "http://pki.example.com:8080/crl"
    );
    assert_eq!(
        create(&mosquitto_policy())
            .unwrap()
            .crl_distribution_point("acme/1"),
        None
    );
    for (bad, why) in [
        ("https://pki.example.com/crl", "http://"),
        ("ldap://pki.example.com/crl", "http://"),
        ("http://pki.example.com/crl?x=1", "query"),
        ("http://pki.example.com/crl#top", "fragment"),
        ("http://user@pki.example.com/crl", "user information"),
        ("http:///crl", "name a host"),
        ("http://pki.example.com/a b", "visible ASCII"),
        ("http://pki.example.com/\u{1b}[2J", "visible ASCII"),
    ] {
        let error = with_base(bad).unwrap_err();
        assert_eq!(error.field, "policy.crl_base_url", "{bad}");
        assert!(error.to_string().contains(why), "{bad}: {error}");
    }
    let long = format!("http://pki.example.com/{}", "a".repeat(200));
    assert!(
        with_base(&long)
            .unwrap_err()
            .to_string()
            .contains("at most 200")
    );
}
