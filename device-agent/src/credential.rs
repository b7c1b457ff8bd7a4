//! The credential bundle as the agent stores it, and the local checks that it belongs to this
//! device: the chain verifies to the bundle's root with webpki, the leaf's CN is the identity
//! the endpoint uses, and the leaf certifies the DPK the silicon derives for the slot.

use oxroot_proto::v1;
use rot_core::FirmwareMeasurement;
use rot_core::keys::PublicKey;
use rot_core::keys::tls::TlsVersion;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::AgentError;

/// Where and how to connect, per policy kind (mirrors `oxroot.v1.CredentialBundle.endpoint`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Endpoint {
    /// A Mosquitto broker.
    Mosquitto {
        /// Broker host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
        /// PEM CA certificate(s) of the broker's server certificate.
        ca_pem: String,
        /// The device's topic prefix, ending in `/`.
        topic_prefix: String,
        /// MQTT client ID.
        client_id: String,
    },
    /// AWS IoT Core.
    AwsIot {
        /// Device data endpoint host.
        host: String,
        /// TCP port.
        port: u16,
        /// MQTT client ID (the thing name).
        client_id: String,
        /// PEM trust anchor(s) of the AWS server certificate.
        server_root_ca_pem: String,
        /// The device's topic prefix.
        topic_prefix: String,
        /// ALPN protocols to offer.
        alpn_protocols: Vec<String>,
    },
    /// Azure IoT Hub through DPS.
    AzureDps {
        /// DPS global endpoint host.
        global_endpoint: String,
        /// TCP port.
        port: u16,
        /// The DPS ID scope.
        id_scope: String,
        /// Registration ID (the leaf's CN).
        registration_id: String,
        /// MQTT client ID for DPS.
        mqtt_client_id: String,
        /// MQTT username for DPS.
        mqtt_username: String,
        /// PEM trust anchor(s) for DPS.
        server_root_ca_pem: String,
    },
}

impl Endpoint {
    /// The TLS versions a credential for this kind uses when its bundle names none (a bundle
    /// from a service older than `CredentialBundle.tls_versions`, or a credential stored
    /// before it): the service's own per-kind defaults. AWS IoT and Mosquitto 1.2 and 1.3,
    /// Azure DPS 1.2.
    #[must_use]
    pub fn default_tls_versions(&self) -> &'static [TlsVersion] {
        match self {
            Self::AzureDps { .. } => &[TlsVersion::Tls12],
            Self::AwsIot { .. } | Self::Mosquitto { .. } => &[TlsVersion::Tls12, TlsVersion::Tls13],
        }
    }

    /// The policy kind's name, as `status` prints it.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mosquitto { .. } => "mosquitto",
            Self::AwsIot { .. } => "aws_iot",
            Self::AzureDps { .. } => "azure_dps",
        }
    }

    /// The identity the cloud matches against the certificate's CN.
    #[must_use]
    pub fn certificate_identity(&self) -> Option<&str> {
        match self {
            // The broker takes the CN as the user name; the topic prefix is built from it.
            Self::Mosquitto { .. } => None,
            Self::AwsIot { client_id, .. } => Some(client_id),
            Self::AzureDps {
                registration_id, ..
            } => Some(registration_id),
        }
    }
}

/// A stored credential: public data only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredential {
    /// The DeviceId the certificate was issued to.
    pub device_id: String,
    /// The leaf's serial (lowercase hex).
    pub serial: String,
    /// The key slot whose DPK the certificate certifies.
    pub key_slot: u8,
    /// The leaf certificate, PEM.
    pub certificate_pem: String,
    /// Intermediates, leaf's issuer first.
    pub intermediate_pems: Vec<String>,
    /// The oxroot root, PEM.
    pub root_pem: String,
    /// Name of the policy it was issued under.
    pub policy_name: String,
    /// Validity start (RFC 3339).
    pub not_before: String,
    /// Validity end (RFC 3339).
    pub not_after: String,
    /// Start of the renew window (RFC 3339), if the policy has one.
    pub renew_after: Option<String>,
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The TLS versions to offer, as the bundle named them (sorted, known versions only);
    /// empty for the endpoint's defaults ([`StoredCredential::tls_versions`]).
    #[serde(default, with = "stored_tls_versions")]
    pub tls_versions: Vec<TlsVersion>,
    /// The firmware (SHA-256, lowercase hex) the certificate's key is bound to: it certifies
    /// the slot's alias key for that firmware, not the DPK. Absent for a DPK credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_measurement: Option<String>,
}

impl StoredCredential {
    /// The firmware the credential is bound to, if it certifies an alias key.
    ///
    /// # Errors
    /// [`AgentError::Protocol`] if the stored measurement is not 64 hex characters.
    pub fn firmware(&self) -> Result<Option<FirmwareMeasurement>, AgentError> {
        self.firmware_measurement
            .as_deref()
            .map(|text| {
                text.parse().map_err(|e| {
                    AgentError::Protocol(format!("stored credential's firmware measurement: {e}"))
                })
            })
            .transpose()
    }

    /// Converts a bundle from the service.
    ///
    /// # Errors
    /// [`AgentError::Protocol`] if a field is missing or out of range, or the endpoint does
    /// not match the policy kind.
    pub fn from_bundle(bundle: &v1::CredentialBundle) -> Result<Self, AgentError> {
        let bad = |what: &str| AgentError::Protocol(format!("credential bundle: {what}"));
        let key_slot = u8::try_from(bundle.key_slot)
            .ok()
            .filter(|slot| (1..=7).contains(slot))
            .ok_or_else(|| bad("key slot outside 1..=7"))?;
        let port = |port: u32| u16::try_from(port).map_err(|_| bad("port outside 0..=65535"));
        let endpoint = match (bundle.policy_kind(), bundle.endpoint.as_ref()) {
            (
                v1::PolicyKind::Mosquitto,
                Some(v1::credential_bundle::Endpoint::Mosquitto(broker)),
            ) => Endpoint::Mosquitto {
                host: broker.host.clone(),
                port: port(broker.port)?,
                ca_pem: broker.ca_pem.clone(),
                topic_prefix: broker.topic_prefix.clone(),
                client_id: broker.client_id.clone(),
            },
            (v1::PolicyKind::AwsIot, Some(v1::credential_bundle::Endpoint::AwsIot(aws))) => {
                Endpoint::AwsIot {
                    host: aws.host.clone(),
                    port: port(aws.port)?,
                    client_id: aws.client_id.clone(),
                    server_root_ca_pem: aws.server_root_ca_pem.clone(),
                    topic_prefix: aws.topic_prefix.clone(),
                    alpn_protocols: aws.alpn_protocols.clone(),
                }
            }
            (v1::PolicyKind::AzureDps, Some(v1::credential_bundle::Endpoint::AzureDps(azure))) => {
                Endpoint::AzureDps {
                    global_endpoint: azure.global_endpoint.clone(),
                    port: port(azure.port)?,
                    id_scope: azure.id_scope.clone(),
                    registration_id: azure.registration_id.clone(),
                    mqtt_client_id: azure.mqtt_client_id.clone(),
                    mqtt_username: azure.mqtt_username.clone(),
                    server_root_ca_pem: azure.server_root_ca_pem.clone(),
                }
            }
            (kind, _) => {
                return Err(bad(&format!(
                    "policy kind {} without its matching endpoint",
                    kind.as_str_name()
                )));
            }
        };
        let tls_versions = tls_versions_from_bundle(&bundle.tls_versions)?;
        let firmware_measurement = match bundle.firmware_measurement.as_slice() {
            [] => None,
            digest => Some(
                <[u8; 32]>::try_from(digest)
                    .map(FirmwareMeasurement::from_digest)
                    .map_err(|_| bad("firmware measurement is not 32 bytes"))?
                    .to_string(),
            ),
        };
        let instant = |t: Option<&prost_types::Timestamp>| t.map(timestamp).transpose();
        Ok(Self {
            device_id: bundle.device_id.clone(),
            serial: bundle.serial.clone(),
            key_slot,
            certificate_pem: bundle.certificate_pem.clone(),
            intermediate_pems: bundle.intermediate_pems.clone(),
            root_pem: bundle.root_pem.clone(),
            policy_name: bundle.policy_name.clone(),
            not_before: instant(bundle.not_before.as_ref())?.unwrap_or_default(),
            not_after: instant(bundle.not_after.as_ref())?.unwrap_or_default(),
            renew_after: instant(bundle.renew_after.as_ref())?,
            endpoint,
            tls_versions,
            firmware_measurement,
        })
    }

    /// The TLS versions the device offers for this credential, and nothing else: the bundle's,
    /// or the endpoint's defaults when it named none.
    #[must_use]
    pub fn tls_versions(&self) -> Vec<TlsVersion> {
        if self.tls_versions.is_empty() {
            self.endpoint.default_tls_versions().to_vec()
        } else {
            self.tls_versions.clone()
        }
    }

    /// The leaf and the intermediates, DER, in handshake order.
    ///
    /// # Errors
    /// [`AgentError::Credential`] if a PEM block does not decode.
    pub fn chain_der(&self) -> Result<Vec<CertificateDer<'static>>, AgentError> {
        let mut chain = certificates(&self.certificate_pem, "certificate")?;
        if chain.len() != 1 {
            return Err(AgentError::Credential(
                "the certificate field holds more than one certificate".to_owned(),
            ));
        }
        for pem in &self.intermediate_pems {
            chain.extend(certificates(pem, "intermediate")?);
        }
        Ok(chain)
    }
}

/// The versions a bundle names, sorted and once each. Values this agent does not know (a
/// later TLS version, UNSPECIFIED) are skipped, as the contract asks; a list of nothing but
/// those is refused rather than read as "the defaults".
fn tls_versions_from_bundle(values: &[i32]) -> Result<Vec<TlsVersion>, AgentError> {
    let mut versions: Vec<TlsVersion> = values
        .iter()
        .filter_map(|&value| match v1::TlsVersion::try_from(value) {
            Ok(v1::TlsVersion::TlsVersion12) => Some(TlsVersion::Tls12),
            Ok(v1::TlsVersion::TlsVersion13) => Some(TlsVersion::Tls13),
            _ => None,
        })
        .collect();
    versions.sort_unstable();
    versions.dedup();
    if versions.is_empty() && !values.is_empty() {
        return Err(AgentError::Protocol(format!(
            "credential bundle: tls_versions {values:?} names no TLS version this agent speaks \
             (1.2, 1.3)"
        )));
    }
    Ok(versions)
}

/// "TLS 1.2, TLS 1.3".
#[must_use]
pub fn tls_versions_text(versions: &[TlsVersion]) -> String {
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `["1.2", "1.3"]` in the stored credential, rot-core's [`TlsVersion`] in memory.
mod stored_tls_versions {
    use rot_core::keys::tls::TlsVersion;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        versions: &[TlsVersion],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(versions.iter().map(|version| match version {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<TlsVersion>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| match text.as_str() {
                "1.2" => Ok(TlsVersion::Tls12),
                "1.3" => Ok(TlsVersion::Tls13),
                other => Err(D::Error::custom(format!(
                    "unknown TLS version {other:?} (1.2 or 1.3)"
                ))),
            })
            .collect()
    }
}

/// RFC 3339 text of a protobuf timestamp.
pub(crate) fn timestamp(t: &prost_types::Timestamp) -> Result<String, AgentError> {
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| AgentError::Protocol("a timestamp out of range".to_owned()))
}

/// Every PEM certificate in `text`, DER.
pub(crate) fn certificates(
    text: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, AgentError> {
    let blocks = pem::parse_many(text)
        .map_err(|e| AgentError::Credential(format!("{what} is not PEM: {e}")))?;
    let certificates: Vec<_> = blocks
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect();
    if certificates.is_empty() {
        return Err(AgentError::Credential(format!(
            "{what} holds no PEM certificate"
        )));
    }
    Ok(certificates)
}

/// What the local checks established about a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The leaf's subject CN.
    pub common_name: String,
    /// The leaf's validity end (RFC 3339).
    pub not_after: String,
}

/// Checks that `credential` belongs to `device_id` and certifies `key` (the slot's DPK, or its
/// alias key for the firmware the credential names), and that its chain
/// verifies for client authentication to the bundle's own root at `now`.
///
/// # Errors
/// [`AgentError::Credential`] saying which check failed.
pub fn verify(
    credential: &StoredCredential,
    device_id: &str,
    key: &PublicKey,
    now: UnixTime,
) -> Result<Verified, AgentError> {
    let fail = |what: String| Err(AgentError::Credential(what));
    if credential.device_id != device_id {
        return fail(format!(
            "issued to {}, but this chip is {device_id}",
            credential.device_id
        ));
    }
    let chain = credential.chain_der()?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return fail("the credential holds no certificate".to_owned());
    };
    let roots = certificates(&credential.root_pem, "root")?;
    let anchors = roots
        .iter()
        .map(|root| {
            webpki::anchor_from_trusted_cert(root)
                .map(|anchor| anchor.to_owned())
                .map_err(|e| AgentError::Credential(format!("the root does not parse: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    webpki::EndEntityCert::try_from(leaf)
        .and_then(|cert| {
            cert.verify_for_usage(
                &[webpki::aws_lc_rs::ECDSA_P256_SHA256],
                &anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map(|_| ())
        })
        .map_err(|e| {
            AgentError::Credential(format!(
                "the certificate chain does not verify to the bundle's root: {e:?}"
            ))
        })?;

    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| AgentError::Credential(format!("the certificate does not parse: {e}")))?;
    if parsed.public_key().subject_public_key.data.as_ref() != key.as_bytes() {
        return fail(format!(
            "the certificate's key is not the key of slot {} derived from this silicon (its \
             device key, or its alias key for the firmware the credential names)",
            credential.key_slot
        ));
    }
    let common_name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    match &credential.endpoint {
        Endpoint::Mosquitto { topic_prefix, .. } => {
            let user_level = topic_prefix.trim_end_matches('/').rsplit('/').next();
            if user_level != Some(common_name.as_str()) {
                return fail(format!(
                    "the topic prefix {topic_prefix} does not end in the certificate's CN \
                     {common_name}, which the broker uses as the user name"
                ));
            }
        }
        endpoint => {
            let identity = endpoint.certificate_identity().unwrap_or_default();
            if identity != common_name {
                return fail(format!(
                    "the certificate's CN {common_name} is not the endpoint's identity {identity}"
                ));
            }
        }
    }
    let not_after = parsed.validity().not_after.to_datetime();
    Ok(Verified {
        common_name,
        not_after: not_after.format(&Rfc3339).unwrap_or_default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
pub(crate) mod tests {
    use super::*;

    /// A structurally complete credential with placeholder PEM, for state-file tests.
    pub(crate) fn sample_credential(serial: &str) -> StoredCredential {
        StoredCredential {
            device_id: "ab".repeat(32),
            serial: serial.to_owned(),
            key_slot: 1,
            certificate_pem: String::new(),
            intermediate_pems: vec![],
            root_pem: String::new(),
            policy_name: "broker".to_owned(),
            not_before: "2025-01-01T00:00:00Z".to_owned(),
            not_after: "2026-01-01T00:00:00Z".to_owned(),
            renew_after: None,
            endpoint: Endpoint::Mosquitto {
                host: "127.0.0.1".to_owned(),
                port: 8883,
                ca_pem: String::new(),
                topic_prefix: format!("devices/{}/", "ab".repeat(32)),
                client_id: "ab".repeat(32),
            },
            tls_versions: vec![],
            firmware_measurement: None,
        }
    }

    #[test]
    fn bundles_convert_per_policy_kind() {
        let mut bundle = v1::CredentialBundle {
            device_id: "ab".repeat(32),
            serial: "1f".to_owned(),
            key_slot: 2,
            policy_kind: v1::PolicyKind::AwsIot.into(),
            not_after: Some(prost_types::Timestamp {
                seconds: 1_767_225_600,
                nanos: 0,
            }),
            endpoint: Some(v1::credential_bundle::Endpoint::AwsIot(
                v1::AwsIotEndpoint {
                    host: "abc-ats.iot.eu-west-1.amazonaws.com".to_owned(),
                    port: 8883,
                    client_id: "thing".to_owned(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let stored = StoredCredential::from_bundle(&bundle).unwrap();
        assert_eq!(stored.key_slot, 2);
        assert_eq!(stored.not_after, "2026-01-01T00:00:00Z");
        assert_eq!(stored.endpoint.kind(), "aws_iot");
        assert_eq!(stored.endpoint.certificate_identity(), Some("thing"));

        bundle.policy_kind = v1::PolicyKind::Mosquitto.into();
        assert!(StoredCredential::from_bundle(&bundle).is_err());
        bundle.policy_kind = v1::PolicyKind::AwsIot.into();
        bundle.key_slot = 8;
        assert!(StoredCredential::from_bundle(&bundle).is_err());
    }

    #[test]
    fn tls_versions_come_from_the_bundle_or_the_kind() {
        let mut bundle = v1::CredentialBundle {
            key_slot: 1,
            policy_kind: v1::PolicyKind::AzureDps.into(),
            endpoint: Some(v1::credential_bundle::Endpoint::AzureDps(
                v1::AzureDpsEndpoint::default(),
            )),
            ..Default::default()
        };
        // A bundle from a service before the field: the kind's default.
        let azure = StoredCredential::from_bundle(&bundle).unwrap();
        assert!(azure.tls_versions.is_empty());
        assert_eq!(azure.tls_versions(), [TlsVersion::Tls12]);
        let mut mosquitto = sample_credential("01");
        assert_eq!(
            mosquitto.tls_versions(),
            [TlsVersion::Tls12, TlsVersion::Tls13]
        );
        mosquitto.tls_versions = vec![TlsVersion::Tls13];
        assert_eq!(mosquitto.tls_versions(), [TlsVersion::Tls13]);

        // Sorted, once each; unknown values (a future version, UNSPECIFIED) skipped.
        bundle.tls_versions = vec![2, 9, 1, 2, 0];
        assert_eq!(
            StoredCredential::from_bundle(&bundle)
                .unwrap()
                .tls_versions(),
            [TlsVersion::Tls12, TlsVersion::Tls13]
        );
        // Nothing this agent speaks: refused, not read as the default.
        bundle.tls_versions = vec![9];
        let error = StoredCredential::from_bundle(&bundle).unwrap_err();
        assert!(error.to_string().contains("no TLS version"), "{error}");
    }

    #[test]
    fn stored_credentials_round_trip_through_json() {
        let credential = sample_credential("01");
        let text = serde_json::to_string(&credential).unwrap();
        assert!(text.contains("\"kind\":\"mosquitto\""), "{text}");
        assert_eq!(
            serde_json::from_str::<StoredCredential>(&text).unwrap(),
            credential
        );
        let mut credential = credential;
        credential.tls_versions = vec![TlsVersion::Tls12];
        let text = serde_json::to_string(&credential).unwrap();
        assert!(text.contains("\"tls_versions\":[\"1.2\"]"), "{text}");
        assert_eq!(
            serde_json::from_str::<StoredCredential>(&text).unwrap(),
            credential
        );
        // A credential stored before the field reads with the kind's default.
        let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
        old.as_object_mut().unwrap().remove("tls_versions");
        let old: StoredCredential = serde_json::from_value(old).unwrap();
        assert!(old.tls_versions.is_empty());
    }
}
