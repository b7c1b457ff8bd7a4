//! How the embedded registry stores a record: a format byte, then the record in postcard
//! (serde, varint integers, no field names).
//!
//! ```text
//!  0x02 ‖ version (u64 BE) ‖ postcard(record)   devices and owners, since records carry versions
//!  0x01 ‖ postcard(record)                      other records; devices and owners before versions
//!  {...} / "..." / digits                       JSON, as registries written before postcard hold
//! ```
//!
//! JSON cost more than the rest of the commit path once an onboarding's records (device,
//! credential with its certificate, batch counts, audit entry) were encoded and decoded
//! several times per request; postcard is several times faster both ways and about half the
//! size. The format byte cannot begin a JSON text, so old and new values live side by side and
//! a registry is converted record by record as it is rewritten.
//!
//! Devices and owners are read-modify-written under compare-and-set on their version (see
//! [`super::Op::PutDevice`]), so the version is stored in front of the record, in the same value:
//! one read gives both, and no reader can see a record with another record's version. A record
//! stored before versions reads as version 1, and its next write stores version 2.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::StoreError;
use crate::policy::{CloudParams, PolicySpec, aws_iot::AwsIotParams, azure_dps::AzureDpsParams};

/// The format byte of postcard-encoded records.
pub const POSTCARD: u8 = 0x01;

/// The format byte of records stored with their version (devices, owners).
pub const VERSIONED: u8 = 0x02;
/// Bytes of the version that follows [`VERSIONED`].
const VERSION_BYTES: usize = 8;

/// Encodes a record.
///
/// # Panics
/// Never for the registry's records: they are plain data, which postcard always encodes.
#[must_use]
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    #[allow(
        clippy::expect_used,
        reason = "records are plain data; serialising cannot fail"
    )]
    postcard::to_extend(value, vec![POSTCARD]).expect("records encode")
}

/// Encodes a record with its version.
///
/// # Panics
/// As [`encode`].
#[must_use]
pub fn encode_versioned<T: Serialize>(version: u64, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(VERSIONED);
    out.extend_from_slice(&version.to_be_bytes());
    #[allow(
        clippy::expect_used,
        reason = "records are plain data; serialising cannot fail"
    )]
    postcard::to_extend(value, out).expect("records encode")
}

/// The version of a stored value: what [`encode_versioned`] wrote, or 1 for a value stored
/// before versions (any other format).
#[must_use]
pub fn version_of(bytes: &[u8]) -> u64 {
    match bytes.split_first() {
        Some((&VERSIONED, rest)) => rest
            .get(..VERSION_BYTES)
            .and_then(|b| b.try_into().ok())
            .map_or(1, u64::from_be_bytes),
        _ => 1,
    }
}

/// Decodes a record stored under `key`, in any format (a version in front is skipped: see
/// [`version_of`]).
///
/// # Errors
/// [`StoreError::Corrupt`] naming the key.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    let record = match bytes.split_first() {
        Some((&POSTCARD, record)) => record,
        Some((&VERSIONED, rest)) => rest
            .get(VERSION_BYTES..)
            .ok_or_else(|| corrupt("the version is cut short".into()))?,
        _ => return serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string())),
    };
    let (value, rest) = postcard::take_from_bytes(record).map_err(|e| corrupt(e.to_string()))?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(corrupt(format!("{} bytes after the record", rest.len())))
    }
}

/// Encodes a policy. Policies are JSON, whatever the other records are: they are few and
/// rarely written, and their fields grow with the clouds' features, which JSON with serde
/// defaults absorbs where postcard (no field names) would misread every older record.
#[must_use]
pub fn encode_policy(policy: &PolicySpec) -> Vec<u8> {
    #[allow(
        clippy::expect_used,
        reason = "a policy is plain data; serialising cannot fail"
    )]
    serde_json::to_vec(policy).expect("policies encode")
}

/// Encodes a record as JSON, for records whose fields will grow (firmware releases): JSON with
/// serde defaults reads older records, which postcard (no field names) cannot. [`decode`]
/// reads it back.
#[must_use]
pub fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    #[allow(
        clippy::expect_used,
        reason = "records are plain data; serialising cannot fail"
    )]
    serde_json::to_vec(value).expect("records encode")
}

/// Decodes a policy: JSON, or postcard as registries wrote policies before they were JSON
/// (the shape of [`PolicySpecV1`]).
///
/// # Errors
/// [`StoreError::Corrupt`] naming the key.
pub fn decode_policy(key: &[u8], bytes: &[u8]) -> Result<PolicySpec, StoreError> {
    if bytes.first() == Some(&POSTCARD) {
        return decode::<PolicySpecV1>(key, bytes).map(PolicySpec::from);
    }
    decode(key, bytes)
}

/// A policy as registries stored it in postcard, before policies were JSON: Mosquitto
/// parameters without TLS versions, and no CRL base URL.
#[derive(Deserialize)]
struct PolicySpecV1 {
    name: String,
    owner: String,
    description: String,
    certificate_lifetime: Duration,
    renew_window: Duration,
    subject_cn_template: String,
    cloud: CloudParamsV1,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    created_by: String,
}

#[derive(Deserialize)]
enum CloudParamsV1 {
    AwsIot(AwsIotParams),
    AzureDps(AzureDpsParams),
    Mosquitto(MosquittoParamsV1),
}

#[derive(Deserialize)]
struct MosquittoParamsV1 {
    host: String,
    port: u16,
    topic_root: String,
    broker_ca_pem: String,
}

impl From<PolicySpecV1> for PolicySpec {
    fn from(old: PolicySpecV1) -> Self {
        let cloud = match old.cloud {
            CloudParamsV1::AwsIot(params) => CloudParams::AwsIot(params),
            CloudParamsV1::AzureDps(params) => CloudParams::AzureDps(params),
            CloudParamsV1::Mosquitto(params) => {
                CloudParams::Mosquitto(crate::policy::mosquitto::MosquittoParams {
                    host: params.host,
                    port: params.port,
                    topic_root: params.topic_root,
                    broker_ca_pem: params.broker_ca_pem,
                    tls_versions: crate::policy::mosquitto::DEFAULT_TLS_VERSIONS.to_vec(),
                })
            }
        };
        Self {
            name: old.name,
            owner: old.owner,
            description: old.description,
            certificate_lifetime: old.certificate_lifetime,
            renew_window: old.renew_window,
            subject_cn_template: old.subject_cn_template,
            crl_base_url: String::new(),
            cloud,
            created_at: old.created_at,
            created_by: old.created_by,
            superseded_grace: crate::policy::DEFAULT_SUPERSEDED_GRACE,
            firmware_measurements: Vec::new(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;

    use rot_core::FirmwareMeasurement;
    use serde::Deserialize;
    use time::{Duration, OffsetDateTime};

    use super::*;
    use crate::audit::{self, AuditDraft, StoredAuditEntry};
    use crate::model::tests::base_point;
    use crate::model::{
        BatchCounts, BatchRecord, CredentialRecord, CredentialStatus, CrlEntryRecord, CrlRecord,
        DeviceRecord, Registration, RegistrationMetadata, RevocationRecord,
    };
    use crate::pki::{RevocationReason, Serial};
    use crate::policy::aws_iot::AwsIotParams;
    use crate::policy::azure_dps::AzureDpsParams;
    use crate::policy::mosquitto::MosquittoParams;
    use crate::policy::{CloudParams, PolicySpec};
    use rot_core::keys::DeviceId;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    /// Both encodings give back the record, and the binary one is no larger.
    fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + Debug>(record: &T) {
        let binary = encode(record);
        assert_eq!(binary[0], POSTCARD);
        assert_eq!(&decode::<T>(b"k", &binary).unwrap(), record);
        let json = serde_json::to_vec(record).unwrap();
        assert_eq!(&decode::<T>(b"k", &json).unwrap(), record);
        assert!(
            binary.len() <= json.len(),
            "{} > {}",
            binary.len(),
            json.len()
        );
    }

    fn batch() -> BatchRecord {
        BatchRecord {
            batch_id: "b-1".into(),
            owner: "acme".into(),
            name: "line 1".into(),
            policy_name: "broker".into(),
            description: "first line".into(),
            created_at: at(1_700_000_000),
            created_by: "alice".into(),
            counts: BatchCounts {
                total: 3,
                onboarded: 2,
                ..BatchCounts::default()
            },
        }
    }

    fn device() -> DeviceRecord {
        let mut device = DeviceRecord::new(DeviceId::from_bytes([0xab; 32]));
        device.registration = Some(Registration {
            epk: base_point(),
            registered_at: at(1_700_000_001),
            proof_context_hex: "00ff".into(),
            metadata: RegistrationMetadata {
                site: "site".into(),
                station: "station 2".into(),
                firmware_version: "1.2.3".into(),
                labels: BTreeMap::from([("line".into(), "7".into())]),
            },
        });
        device.owner = Some("acme".into());
        device.batch_id = Some("b-1".into());
        device.slot_keys.insert(1, base_point());
        device.retired_slots.push(2);
        device.current_serial = Some(Serial::new(0x1f).unwrap());
        device.serials.push(Serial::new(0x1f).unwrap());
        device.onboarded_at = Some(at(1_700_000_002));
        device.last_seen = Some(at(1_700_000_003));
        device.credential_assignment = Some(0);
        device
    }

    fn credential() -> CredentialRecord {
        CredentialRecord {
            serial: Serial::new(0x1f).unwrap(),
            device_id: DeviceId::from_bytes([0xab; 32]),
            key_slot: 1,
            dpk: base_point(),
            owner: "acme".into(),
            policy_name: "broker".into(),
            batch_id: "b-1".into(),
            assignment: 0,
            subject_cn: "ab".repeat(32),
            issued_at: at(1_700_000_004),
            not_before: at(1_700_000_000),
            not_after: at(1_731_536_004),
            renew_after: Some(at(1_729_000_000)),
            certificate_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                .into(),
            status: CredentialStatus::Active,
            revocation: Some(CrlEntryRecord {
                revoked_at: at(1_700_000_005),
                reason: RevocationReason::Superseded,
            }),
        }
    }

    fn policy(cloud: CloudParams) -> PolicySpec {
        PolicySpec {
            name: "broker".into(),
            owner: "acme".into(),
            description: "the line's broker".into(),
            certificate_lifetime: Duration::days(365),
            renew_window: Duration::days(30),
            subject_cn_template: "{device_id}".into(),
            crl_base_url: String::new(),
            cloud,
            created_at: at(1_700_000_000),
            created_by: "alice".into(),
            superseded_grace: Duration::days(2),
            firmware_measurements: vec![FirmwareMeasurement::of_image(b"firmware 1.0")],
        }
    }

    /// A policy as the registry stored it before `superseded_grace`.
    #[derive(Serialize)]
    struct PolicyWithoutGrace {
        name: String,
        owner: String,
        description: String,
        certificate_lifetime: Duration,
        renew_window: Duration,
        subject_cn_template: String,
        cloud: CloudParams,
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
        created_by: String,
    }

    #[test]
    fn policies_stored_before_the_grace_read_with_the_default() {
        let current = policy(CloudParams::Mosquitto(MosquittoParams {
            host: "broker.example".into(),
            port: 8883,
            topic_root: "devices".into(),
            broker_ca_pem: String::new(),
            tls_versions: vec![crate::policy::TlsVersion::Tls12],
        }));
        let old = PolicyWithoutGrace {
            name: current.name.clone(),
            owner: current.owner.clone(),
            description: current.description.clone(),
            certificate_lifetime: current.certificate_lifetime,
            renew_window: current.renew_window,
            subject_cn_template: current.subject_cn_template.clone(),
            cloud: current.cloud.clone(),
            created_at: current.created_at,
            created_by: current.created_by.clone(),
        };
        let expected = PolicySpec {
            superseded_grace: crate::policy::DEFAULT_SUPERSEDED_GRACE,
            firmware_measurements: Vec::new(),
            ..current.clone()
        };
        // Policies are JSON, which names its fields: the missing ones take their defaults.
        let json = serde_json::to_vec(&old).unwrap();
        assert_eq!(decode_policy(b"p/acme/broker", &json).unwrap(), expected);
        // The current layout reads as itself, and damage is still reported.
        assert_eq!(
            decode_policy(b"p/acme/broker", &encode_policy(&current)).unwrap(),
            current
        );
        let damaged = encode_policy(&current);
        assert!(decode_policy(b"p/acme/broker", &damaged[..damaged.len() - 9]).is_err());
    }

    #[test]
    fn a_policys_firmware_measurements_are_stored_as_the_hex_sha256sum_prints() {
        let current = policy(CloudParams::Mosquitto(MosquittoParams {
            host: "broker.example".into(),
            port: 8883,
            topic_root: "devices".into(),
            broker_ca_pem: String::new(),
            tls_versions: vec![crate::policy::TlsVersion::Tls13],
        }));
        let json: serde_json::Value = serde_json::from_slice(&encode_policy(&current)).unwrap();
        assert_eq!(
            json["firmware_measurements"],
            serde_json::json!([FirmwareMeasurement::of_image(b"firmware 1.0").to_string()])
        );
        let mut bad = json.clone();
        bad["firmware_measurements"] = serde_json::json!(["not hex"]);
        let bad = serde_json::to_vec(&bad).unwrap();
        assert!(decode_policy(b"p/acme/broker", &bad).is_err());
    }

    /// A credential as the registry stored it before its identifiers were typed: the same
    /// field order, every identifier a string.
    #[derive(Serialize)]
    struct CredentialBeforeTypedIds {
        serial: String,
        device_id: String,
        key_slot: u8,
        dpk_hex: String,
        owner: String,
        policy_name: String,
        batch_id: String,
        assignment: u64,
        subject_cn: String,
        #[serde(with = "time::serde::rfc3339")]
        issued_at: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        not_before: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        not_after: OffsetDateTime,
        renew_after: Option<String>,
        certificate_pem: String,
        status: CredentialStatus,
        revocation: Option<CrlEntryRecord>,
    }

    #[test]
    fn records_written_before_the_ids_were_typed_read_the_same() {
        let typed = credential();
        let legacy = CredentialBeforeTypedIds {
            serial: "1f".into(),
            device_id: "ab".repeat(32),
            key_slot: typed.key_slot,
            dpk_hex: hex::encode(typed.dpk.as_bytes()),
            owner: typed.owner.clone(),
            policy_name: typed.policy_name.clone(),
            batch_id: typed.batch_id.clone(),
            assignment: typed.assignment,
            subject_cn: typed.subject_cn.clone(),
            issued_at: typed.issued_at,
            not_before: typed.not_before,
            not_after: typed.not_after,
            renew_after: typed.renew_after.map(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            }),
            certificate_pem: typed.certificate_pem.clone(),
            status: typed.status,
            revocation: typed.revocation,
        };
        // Byte for byte the same in both encodings: old registries read unchanged.
        assert_eq!(encode(&legacy), encode(&typed));
        assert_eq!(
            serde_json::to_value(&legacy).unwrap(),
            serde_json::to_value(&typed).unwrap()
        );
        // A stored identifier that is not one is a corrupt record, named by its key.
        let mut bad = legacy;
        bad.device_id = "not a device id".into();
        let error = decode::<CredentialRecord>(b"c/1f", &encode(&bad)).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { ref key, .. } if key == "c/1f"));
    }

    #[test]
    fn versioned_records_carry_their_version_in_front() {
        let record = device();
        let stored = encode_versioned(41, &record);
        assert_eq!(stored[0], VERSIONED);
        assert_eq!(version_of(&stored), 41);
        assert_eq!(decode::<DeviceRecord>(b"d/", &stored).unwrap(), record);
        // Records stored before versions are the first version.
        assert_eq!(version_of(&encode(&record)), 1);
        assert_eq!(version_of(&serde_json::to_vec(&record).unwrap()), 1);
        assert!(decode::<DeviceRecord>(b"d/", &stored[..5]).is_err());
    }

    #[test]
    fn every_record_round_trips_in_both_encodings() {
        round_trip(&batch());
        round_trip(&device());
        let mut revoked = device();
        revoked.onboarded_at = None;
        revoked.revocation = Some(RevocationRecord {
            revoked_at: at(1_700_000_006),
            reason: RevocationReason::KeyCompromise,
            comment: "lost".into(),
            revoked_by: "alice".into(),
        });
        round_trip(&revoked);
        round_trip(&DeviceRecord::new(DeviceId::from_bytes([0xcd; 32])));
        round_trip(&credential());
        round_trip(&CrlRecord {
            number: 7,
            this_update: at(1_700_000_000),
            next_update: at(1_700_600_000),
            der_hex: "3082".into(),
            pem: "-----BEGIN X509 CRL-----\n".into(),
            revoked_count: 1,
        });
        round_trip(&policy(CloudParams::Mosquitto(MosquittoParams {
            host: "broker.example".into(),
            port: 8883,
            topic_root: "devices".into(),
            broker_ca_pem: String::new(),
            tls_versions: vec![crate::policy::TlsVersion::Tls13],
        })));
        round_trip(&policy(CloudParams::AwsIot(AwsIotParams {
            endpoint_host: "x-ats.iot.eu-west-1.amazonaws.com".into(),
            port: 8883,
            server_root_ca_pem: "pem".into(),
            thing_name_template: "{device_id}".into(),
            topic_root: "devices".into(),
            aws_region: "eu-west-1".into(),
            aws_account_id: "123456789012".into(),
            alpn_protocols: vec!["x-amzn-mqtt-ca".into()],
        })));
        round_trip(&policy(CloudParams::AzureDps(AzureDpsParams {
            id_scope: "0ne00000000".into(),
            global_endpoint: "global.azure-devices-provisioning.net".into(),
            port: 8883,
            server_root_ca_pem: "pem".into(),
            enrollment_group_id: "group".into(),
            iot_hub_host_names: vec!["hub.azure-devices.net".into()],
        })));
        let entry: StoredAuditEntry = audit::seal(
            &AuditDraft::new(at(1_700_000_000), "system", "*", "test", "x", "ok"),
            1,
            &audit::GENESIS_HASH,
        )
        .unwrap();
        round_trip(&entry);
        // The hashes are stored as raw bytes in the binary encoding, hex in JSON.
        assert!(encode(&entry).len() < entry.record.len() + 80);
        round_trip(&"batch-id".to_owned());
        round_trip(&12_345_u64);
    }

    /// A policy as registries stored it before policies were JSON: postcard, Mosquitto
    /// parameters without TLS versions, no CRL base URL.
    #[derive(Serialize)]
    struct PolicyBeforeJson {
        name: String,
        owner: String,
        description: String,
        certificate_lifetime: Duration,
        renew_window: Duration,
        subject_cn_template: String,
        cloud: CloudBeforeJson,
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
        created_by: String,
    }

    #[derive(Serialize)]
    #[allow(dead_code, reason = "the variant order is the stored enum's")]
    enum CloudBeforeJson {
        AwsIot(AwsIotParams),
        AzureDps(AzureDpsParams),
        Mosquitto {
            host: String,
            port: u16,
            topic_root: String,
            broker_ca_pem: String,
        },
    }

    #[test]
    fn policies_are_json_and_older_postcard_policies_still_read() {
        let current = policy(CloudParams::Mosquitto(MosquittoParams {
            host: "broker.example".into(),
            port: 8883,
            topic_root: "devices".into(),
            broker_ca_pem: String::new(),
            tls_versions: vec![crate::policy::TlsVersion::Tls12],
        }));
        let stored = encode_policy(&current);
        assert_eq!(stored[0], b'{');
        assert_eq!(decode_policy(b"p/acme/broker", &stored).unwrap(), current);

        let old = PolicyBeforeJson {
            name: "broker".into(),
            owner: "acme".into(),
            description: "the line's broker".into(),
            certificate_lifetime: Duration::days(365),
            renew_window: Duration::days(30),
            subject_cn_template: "{device_id}".into(),
            cloud: CloudBeforeJson::Mosquitto {
                host: "broker.example".into(),
                port: 8883,
                topic_root: "devices".into(),
                broker_ca_pem: String::new(),
            },
            created_at: at(1_700_000_000),
            created_by: "alice".into(),
        };
        let read = decode_policy(b"p/acme/broker", &encode(&old)).unwrap();
        let CloudParams::Mosquitto(params) = &read.cloud else {
            panic!("{read:?}");
        };
        assert_eq!(
            params.tls_versions,
            crate::policy::mosquitto::DEFAULT_TLS_VERSIONS.to_vec()
        );
        assert_eq!(read.crl_base_url, "");
        assert_eq!(
            (read.name.as_str(), read.created_by.as_str()),
            ("broker", "alice")
        );
    }

    #[test]
    fn damage_is_reported_with_the_key() {
        let mut binary = encode(&batch());
        binary.push(0);
        let error = decode::<BatchRecord>(b"b/b-1", &binary).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { ref key, .. } if key == "b/b-1"));
        assert!(decode::<BatchRecord>(b"b/b-1", &binary[..5]).is_err());
    }
}
