//! The mapping, checked against the contract itself: samples with every field set are built
//! from the descriptors, not written by hand, so a field added to the `.proto` is covered
//! without touching this file. The expected JSON of each value is worked out here from the
//! proto3 JSON rules (decimal strings, base64, enum names, RFC 3339), independently of the
//! serialiser under test.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use oxroot_proto::v1;
use prost::Message as _;
use prost::bytes::Bytes;
use prost_reflect::{
    DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage as _, Value as Field,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::*;

/// Hostile text in every string field: the JSON must carry it exactly.
const HOSTILE: &str = "\x1b[31m\u{202e}\r\n\0\\\"";

fn pool() -> &'static DescriptorPool {
    POOL.as_ref().expect("the contract's descriptors decode")
}

/// Every message of the contract's package (the imported well-known types are not printed on
/// their own).
fn contract_messages() -> Vec<MessageDescriptor> {
    let messages: Vec<_> = pool()
        .all_messages()
        .filter(|m| m.package_name() == "oxroot.v1" && !m.is_map_entry())
        .collect();
    assert!(messages.len() > 50, "only {} messages", messages.len());
    messages
}

/// One sample per oneof case: sample `case` sets every field, and of each oneof the member at
/// `case` (modulo the oneof's size), so that every case of every oneof is printed once.
fn samples(descriptor: &MessageDescriptor) -> Vec<DynamicMessage> {
    let cases = descriptor
        .oneofs()
        .filter(|oneof| !oneof.is_synthetic())
        .map(|oneof| oneof.fields().len())
        .max()
        .unwrap_or(1);
    (0..cases).map(|case| sample(descriptor, case, 0)).collect()
}

fn sample(descriptor: &MessageDescriptor, case: usize, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    for field in descriptor.fields() {
        if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
            let members: Vec<_> = oneof.fields().collect();
            if members[case % members.len()].number() != field.number() {
                continue;
            }
        }
        let label = field.full_name().to_owned();
        let value = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                panic!("{label}: a map of a non-message kind")
            };
            let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            Field::Map(
                (0..3)
                    .map(|i| {
                        (
                            map_key(&key.kind(), i),
                            single(&value.kind(), &label, case, depth, i),
                        )
                    })
                    .collect::<HashMap<_, _>>(),
            )
        } else if field.is_list() {
            Field::List(
                (0..2)
                    .map(|i| single(&field.kind(), &label, case, depth, i))
                    .collect(),
            )
        } else {
            single(&field.kind(), &label, case, depth, 0)
        };
        message.set_field(&field, value);
    }
    message
}

/// A value of `kind` that is not the default, and differs between fields and list elements.
fn single(kind: &Kind, label: &str, case: usize, depth: usize, index: usize) -> Field {
    let n = u32::try_from(label.len() * 7 + index).expect("small");
    match kind {
        Kind::String => Field::String(format!("{label}#{index}{HOSTILE}")),
        Kind::Bytes => Field::Bytes(Bytes::from(vec![n as u8, 0xff, 0x00, 0xfb, index as u8])),
        Kind::Bool => Field::Bool(true),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Field::I32(-1_000 - n as i32),
        Kind::Uint32 | Kind::Fixed32 => Field::U32(1_000 + n),
        // Beyond 2^53: a JSON number would lose these digits in most parsers.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Field::I64(-(1 << 60) - i64::from(n)),
        Kind::Uint64 | Kind::Fixed64 => Field::U64((1 << 63) + u64::from(n)),
        Kind::Float => Field::F32(1.5),
        Kind::Double => Field::F64(2.25),
        Kind::Enum(enumeration) => {
            let named: Vec<_> = enumeration.values().filter(|v| v.number() != 0).collect();
            assert!(
                !named.is_empty(),
                "{label}: an enum with only its zero value"
            );
            Field::EnumNumber(named[(n as usize) % named.len()].number())
        }
        Kind::Message(message) => {
            let mut value = DynamicMessage::new(message.clone());
            match message.full_name() {
                "google.protobuf.Timestamp" => {
                    value.set_field_by_name("seconds", Field::I64(1_700_000_000 + i64::from(n)));
                    value.set_field_by_name("nanos", Field::I32(250_000_000));
                }
                "google.protobuf.Duration" => {
                    value.set_field_by_name("seconds", Field::I64(86_400 + i64::from(n)));
                    value.set_field_by_name("nanos", Field::I32(500_000_000));
                }
                name => {
                    assert!(
                        !name.starts_with("google."),
                        "{label}: {name} is not sampled"
                    );
                    // The contract has no recursive messages today; the bound keeps a future
                    // one from recursing forever.
                    if depth < 8 {
                        value = sample(message, case, depth + 1);
                    }
                }
            }
            Field::Message(value)
        }
    }
}

fn map_key(kind: &Kind, index: usize) -> MapKey {
    let n = u32::try_from(index).expect("small") + 1;
    match kind {
        Kind::String => MapKey::String(format!("key{index}\x07\u{202e}")),
        Kind::Bool => MapKey::Bool(index.is_multiple_of(2)),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(-(n as i32)),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(-(1 << 60) - i64::from(n)),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(n),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64((1 << 63) + u64::from(n)),
        other => panic!("{other:?} cannot be a map key"),
    }
}

/// Checks the printed `json` of `message` field by field: every field without presence is
/// there (with its default if unset), a field with presence is there exactly when set, each
/// value is what the mapping says, and there is nothing else.
fn check_message(message: &DynamicMessage, json: &Value, path: &str) {
    let descriptor = message.descriptor();
    let object = json
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object: {json}"));
    for key in object.keys() {
        assert!(
            descriptor.get_field_by_name(key).is_some(),
            "{path}.{key}: not a field of {}",
            descriptor.full_name()
        );
    }
    for field in descriptor.fields() {
        let path = format!("{path}.{}", field.name());
        let set = message.has_field(&field);
        match object.get(field.name()) {
            None => assert!(
                field.supports_presence() && !set,
                "{path} is missing from {json}"
            ),
            Some(value) => {
                assert!(
                    set || !field.supports_presence(),
                    "{path}: unset but printed"
                );
                let kind = field.kind();
                let kind = match &kind {
                    Kind::Message(entry) if field.is_map() => entry.map_entry_value_field().kind(),
                    _ => kind,
                };
                check_value(&kind, &message.get_field(&field), value, &path);
            }
        }
    }
}

fn check_value(kind: &Kind, value: &Field, json: &Value, path: &str) {
    match value {
        Field::Bool(b) => assert_eq!(json, &Value::Bool(*b), "{path}"),
        Field::I32(n) => assert_eq!(json, &json!(n), "{path}"),
        Field::U32(n) => assert_eq!(json, &json!(n), "{path}"),
        Field::I64(n) => assert_eq!(json, &Value::String(n.to_string()), "{path}"),
        Field::U64(n) => assert_eq!(json, &Value::String(n.to_string()), "{path}"),
        Field::F32(x) => assert_eq!(json.as_f64(), Some(f64::from(*x)), "{path}"),
        Field::F64(x) => assert_eq!(json.as_f64(), Some(*x), "{path}"),
        Field::String(s) => assert_eq!(json.as_str(), Some(s.as_str()), "{path}"),
        Field::Bytes(b) => assert_eq!(json.as_str(), Some(BASE64.encode(b).as_str()), "{path}"),
        Field::EnumNumber(number) => {
            let Kind::Enum(enumeration) = kind else {
                panic!("{path}: an enum value of kind {kind:?}")
            };
            let name = enumeration.get_value(*number).expect("a named value");
            assert_eq!(json.as_str(), Some(name.name()), "{path}");
        }
        Field::Message(message) => match message.descriptor().full_name() {
            "google.protobuf.Timestamp" => check_timestamp(message, json, path),
            "google.protobuf.Duration" => check_duration(message, json, path),
            _ => check_message(message, json, path),
        },
        Field::List(items) => {
            let printed = json
                .as_array()
                .unwrap_or_else(|| panic!("{path}: not an array: {json}"));
            assert_eq!(printed.len(), items.len(), "{path}");
            for (i, (item, printed)) in items.iter().zip(printed).enumerate() {
                check_value(kind, item, printed, &format!("{path}[{i}]"));
            }
        }
        Field::Map(entries) => {
            let printed = json
                .as_object()
                .unwrap_or_else(|| panic!("{path}: not an object: {json}"));
            assert_eq!(printed.len(), entries.len(), "{path}");
            for (key, value) in entries {
                // Map keys are JSON strings whatever their proto type.
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                let printed = printed
                    .get(&key)
                    .unwrap_or_else(|| panic!("{path}: key {key:?} missing"));
                check_value(kind, value, printed, &format!("{path}[{key:?}]"));
            }
        }
    }
}

/// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, naming the same instant.
fn check_timestamp(message: &DynamicMessage, json: &Value, path: &str) {
    let ts: prost_types::Timestamp = message.transcode_to().expect("a timestamp");
    let text = json.as_str().unwrap_or_else(|| panic!("{path}: {json}"));
    assert!(text.ends_with('Z'), "{path}: {text}");
    let fraction = text
        .split_once('.')
        .map_or(0, |(_, f)| f.trim_end_matches('Z').len());
    assert!([0, 3, 6, 9].contains(&fraction), "{path}: {text}");
    let at = OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        at.unix_timestamp_nanos(),
        i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos),
        "{path}: {text}"
    );
}

/// Seconds with the suffix `s` and 0, 3, 6 or 9 fractional digits ("86401.500s").
fn check_duration(message: &DynamicMessage, json: &Value, path: &str) {
    let d: prost_types::Duration = message.transcode_to().expect("a duration");
    let expected = match d.nanos {
        0 => format!("{}s", d.seconds),
        n if n % 1_000_000 == 0 => format!("{}.{:03}s", d.seconds, n / 1_000_000),
        n => format!("{}.{n:09}s", d.seconds),
    };
    assert_eq!(json.as_str(), Some(expected.as_str()), "{path}");
}

/// Prints as the CLI does, to the bytes of one line, and reads the line back.
fn printed(value: &Value) -> Value {
    let mut line = Vec::new();
    json_line(&mut line, value).expect("writes");
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(line.split(|&b| b == b'\n').count(), 2, "one line");
    serde_json::from_slice(&line).expect("valid JSON")
}

#[test]
fn every_message_of_the_contract_prints_every_field() {
    let mut checked = 0;
    for descriptor in contract_messages() {
        for sample in samples(&descriptor) {
            let json = map(descriptor.full_name(), &sample.encode_to_vec())
                .unwrap_or_else(|e| panic!("{e}"));
            check_message(&sample, &printed(&json), descriptor.full_name());
            checked += 1;
        }
    }
    assert!(checked > 60, "{checked} samples");
}

#[test]
fn every_message_prints_its_defaults_and_leaves_unset_messages_out() {
    for descriptor in contract_messages() {
        let empty = DynamicMessage::new(descriptor.clone());
        let json = map(descriptor.full_name(), &[]).unwrap_or_else(|e| panic!("{e}"));
        check_message(&empty, &printed(&json), descriptor.full_name());
    }
    // The same, spelled out for one message.
    let json = message(&v1::Device::default()).expect("maps");
    assert_eq!(json["device_id"], "");
    assert_eq!(json["state"], "DEVICE_STATE_UNSPECIFIED");
    assert_eq!(json["refusals"], "0");
    assert_eq!(json["credential_history"], json!([]));
    assert!(json.get("revocation").is_none(), "{json}");
    assert!(json.get("registered_at").is_none(), "{json}");
}

/// Every response of the Operator service, through its generated Rust type and the function
/// the commands call. The list of types is the only thing written by hand; the test fails if
/// it misses a response of the contract.
#[test]
fn every_operator_response_prints_every_field_through_its_rust_type() {
    fn check<M: prost::Message + prost::Name + Default>(seen: &mut Vec<String>) {
        let descriptor = pool()
            .get_message_by_name(&M::full_name())
            .unwrap_or_else(|| panic!("{} is not in the descriptor set", M::full_name()));
        for sample in samples(&descriptor) {
            let typed = M::decode(sample.encode_to_vec().as_slice()).expect("decodes");
            let json = message(&typed).unwrap_or_else(|e| panic!("{e}"));
            check_message(&sample, &printed(&json), &M::full_name());
        }
        seen.push(M::full_name());
    }
    let mut seen = Vec::new();
    macro_rules! check_all {
        ($($message:ident),* $(,)?) => { $(check::<v1::$message>(&mut seen);)* };
    }
    check_all!(
        WhoAmIResponse,
        CreatePolicyResponse,
        GetPolicyResponse,
        ListPoliciesResponse,
        CreateBatchResponse,
        ImportDevicesResponse,
        GetBatchResponse,
        ListBatchesResponse,
        WatchBatchResponse,
        ListDevicesResponse,
        GetDeviceResponse,
        RevokeDeviceResponse,
        TransferDeviceResponse,
        ExportArtifactsResponse,
        GetCrlResponse,
        QueryAuditResponse,
        VerifyAuditResponse,
        IssueOperatorCertificateResponse,
        RevokeOperatorCertificateResponse,
        ListOperatorCertificatesResponse,
        CreateOwnerResponse,
        GetOwnerResponse,
        ListOwnersResponse,
        ImportOwnerCaResponse,
        RotateOwnerCaResponse,
        SignFirmwareResponse,
        GetFirmwareResponse,
        ListFirmwareResponse,
        CreateRolloutResponse,
        GetRolloutResponse,
        ListRolloutsResponse,
        UpdateRolloutResponse,
        // Printed by `rollout create|get|advance|…` directly.
        Rollout,
        WatchCrlsResponse,
        // enrollctl's own unreadable import records are printed as this message.
        ImportRejection,
    );
    let operator = pool()
        .get_service_by_name("oxroot.v1.Operator")
        .expect("the Operator service");
    for method in operator.methods() {
        let output = method.output();
        assert!(
            seen.iter().any(|name| name == output.full_name()),
            "{} returns {}, which this test does not print",
            method.name(),
            output.full_name()
        );
    }
}

#[test]
fn the_options_are_the_documented_ones() {
    let response = v1::CreateBatchResponse {
        batch: Some(v1::Batch {
            batch_id: "bt-1".into(),
            policy_kind: v1::PolicyKind::AwsIot as i32,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            counts: Some(v1::BatchCounts {
                total: 12,
                ..v1::BatchCounts::default()
            }),
            ..v1::Batch::default()
        }),
        report: None,
    };
    let json = message(&response).expect("maps");
    // `jq .batch.batch_id`: the .proto's field names, not lowerCamelCase.
    assert_eq!(json["batch"]["batch_id"], "bt-1");
    assert!(json["batch"].get("batchId").is_none());
    assert_eq!(json["batch"]["policy_kind"], "POLICY_KIND_AWS_IOT");
    assert_eq!(json["batch"]["created_at"], "2023-11-14T22:13:20Z");
    assert_eq!(json["batch"]["counts"]["total"], "12");
    assert_eq!(json["batch"]["counts"]["revoked"], "0");
    assert_eq!(json["batch"]["description"], "");
    assert!(json.get("report").is_none(), "{json}");

    let policy = v1::Policy {
        certificate_lifetime: Some(prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        ..v1::Policy::default()
    };
    assert_eq!(
        message(&policy).expect("maps")["certificate_lifetime"],
        "1.500s"
    );
    let device = v1::Device {
        epk: vec![4, 0xff],
        ..v1::Device::default()
    };
    assert_eq!(message(&device).expect("maps")["epk"], "BP8=");
}

#[test]
fn an_enum_value_newer_than_this_client_prints_as_its_number() {
    let device = v1::Device {
        state: 99,
        ..v1::Device::default()
    };
    assert_eq!(message(&device).expect("maps")["state"], 99);
}

#[test]
fn hostile_text_is_carried_exactly() {
    let entry = v1::AuditEntry {
        actor: HOSTILE.into(),
        details: [("comment".to_owned(), "\u{1b}]52;c;ZXZpbA==\u{7}".to_owned())].into(),
        ..v1::AuditEntry::default()
    };
    let mut line = Vec::new();
    json_line(&mut line, &message(&entry).expect("maps")).expect("writes");
    // JSON escapes control characters itself; nothing is escaped twice.
    assert!(!line.contains(&0x1b) && !line.contains(&0x07) && !line.contains(&0));
    let text = String::from_utf8(line.clone()).expect("utf-8");
    assert!(text.contains(r#""actor":"\u001b[31m"#), "{text}");
    assert!(
        !text.contains(r"\\u001b") && !text.contains(r"\\x1b"),
        "{text}"
    );
    let back: Value = serde_json::from_slice(&line).expect("valid JSON");
    assert_eq!(back["actor"], HOSTILE);
    assert_eq!(back["details"]["comment"], "\u{1b}]52;c;ZXZpbA==\u{7}");
}

#[test]
fn maps_print_in_the_same_order_whatever_order_they_arrived_in() {
    let labels: Vec<_> = (0..32)
        .map(|i| (format!("k{i:02}"), format!("v{i}")))
        .collect();
    let print = |labels: Vec<(String, String)>| {
        let context = v1::RegistrationContext {
            labels: labels.into_iter().collect(),
            ..v1::RegistrationContext::default()
        };
        let mut line = Vec::new();
        json_line(&mut line, &message(&context).expect("maps")).expect("writes");
        String::from_utf8(line).expect("utf-8")
    };
    let forward = print(labels.clone());
    let backward = print(labels.into_iter().rev().collect());
    assert_eq!(forward, backward);
    assert!(forward.find("k00").expect("k00") < forward.find("k31").expect("k31"));
}

#[test]
fn a_timestamp_the_mapping_cannot_express_is_an_error_naming_the_message() {
    let device = v1::Device {
        last_seen: Some(prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        }),
        ..v1::Device::default()
    };
    let error = message(&device).expect_err("year 292 billion");
    assert!(
        matches!(&error, JsonError::Unrepresentable { message, .. } if message == "oxroot.v1.Device"),
        "{error}"
    );
    assert!(error.to_string().contains("out of range"), "{error}");
}

#[test]
fn local_keys_sit_beside_the_fields_and_may_not_hide_one() {
    let response = v1::ImportDevicesResponse {
        batch_id: "bt-1".into(),
        ..v1::ImportDevicesResponse::default()
    };
    let json = message_with(&response, [("format", json!("csv"))]).expect("maps");
    assert_eq!(json["format"], "csv");
    assert_eq!(json["batch_id"], "bt-1");
    let error = message_with(&response, [("batch_id", json!("forged"))]).expect_err("clash");
    assert_eq!(
        error,
        JsonError::KeyClash {
            message: "oxroot.v1.ImportDevicesResponse".into(),
            key: "batch_id"
        }
    );
    // The lowerCamelCase spelling of a field is refused too: a reader of the mapping may use it.
    let error = message_with(&response, [("batchId", json!("forged"))]).expect_err("clash");
    assert!(matches!(error, JsonError::KeyClash { .. }), "{error}");
}

/// The keys the commands add (documented in the output contract) are no field of the message
/// they sit beside: a contract that grows such a field fails here, not in an operator's run.
#[test]
fn the_documented_local_keys_clash_with_no_field() {
    fn check<M: prost::Message + prost::Name + Default>(keys: &[&'static str]) {
        let json = message_with(&M::default(), keys.iter().map(|&key| (key, Value::Null)))
            .unwrap_or_else(|e| panic!("{e}"));
        for key in keys {
            assert_eq!(json.get(*key), Some(&Value::Null), "{}", M::full_name());
        }
    }
    check::<v1::CreateBatchResponse>(&["format", "local_rejections"]);
    check::<v1::ImportDevicesResponse>(&["format", "local_rejections"]);
    check::<v1::ExportArtifactsResponse>(&["paths"]);
    check::<v1::GetCrlResponse>(&["path"]);
    check::<v1::IssueOperatorCertificateResponse>(&["profile"]);
}
