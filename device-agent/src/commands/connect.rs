//! `connect`: use the stored credential.
//!
//! Every policy first gets the same local checks (the chain verifies with webpki to the
//! bundle's root, the CN is the identity the cloud matches, the certificate's key is the DPK
//! the silicon derives for the slot). Mosquitto then gets a live MQTT round trip over the TLS
//! versions the credential allows, and nothing else; AWS IoT and Azure DPS cannot be reached
//! from here, so the agent shows the exact connection parameters (those versions included)
//! and says that no live connection was attempted.

use std::sync::Arc;
use std::time::Duration;

use rot_core::FirmwareMeasurement;
use rustls_pki_types::UnixTime;

use super::{key_slot, open_chip};
use crate::cli::SiliconArgs;
use crate::credential::{self, Endpoint, StoredCredential, Verified};
use crate::error::AgentError;
use crate::mqtt::{self, RoundTrip};
use crate::report::{Console, Report};
use crate::state::StateDir;
use crate::tls_signer::{self, SiliconSigningKey};
use oxroot_client::device::Chip;

/// `connect`'s options.
#[derive(Clone, Debug)]
pub(super) struct Options {
    pub(super) topic: String,
    pub(super) message: Option<String>,
    pub(super) timeout: Duration,
    pub(super) previous: bool,
}

pub(super) async fn connect(
    state: &StateDir,
    silicon: &SiliconArgs,
    options: &Options,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    let credential = chosen_credential(state, options)?;
    let chip = Arc::new(open_chip(state, silicon)?);
    let slot = key_slot(credential.key_slot)?;
    let firmware = credential.firmware()?;
    let certified_key = chip.credential_public_key(slot, firmware.as_ref())?;
    let verified = credential::verify(
        &credential,
        &chip.device_id().to_string(),
        &certified_key,
        UnixTime::now(),
    )?;
    let tls_versions = credential.tls_versions();
    let base = Report::new("")
        .field("device_id", credential.device_id.clone())
        .field("serial", credential.serial.clone())
        .field("key_slot", credential.key_slot)
        .field("certificate_cn", verified.common_name.clone())
        .field(
            "chain",
            "verifies to the bundle's root (webpki, clientAuth)",
        )
        .field(
            "client_key",
            client_key_text(credential.key_slot, firmware.as_ref()),
        )
        .field("tls_versions", credential::tls_versions_text(&tls_versions));
    match &credential.endpoint {
        Endpoint::Mosquitto {
            host,
            port,
            ca_pem,
            topic_prefix,
            client_id,
        } => {
            let topic = match options.topic.strip_prefix('/') {
                Some(absolute) => absolute.to_owned(),
                None => format!("{topic_prefix}{}", options.topic),
            };
            if !topic.starts_with(topic_prefix.as_str()) {
                console.warn(&format!(
                    "{topic} is outside this device's prefix {topic_prefix}; the broker's ACL \
                     should refuse it"
                ));
            }
            let payload = match &options.message {
                Some(text) => text.clone().into_bytes(),
                None => random_message()?,
            };
            let key = Arc::new(SiliconSigningKey::new(
                chip.clone(),
                slot,
                firmware,
                &tls_versions,
            )?);
            let config = tls_signer::client_config(credential.chain_der()?, ca_pem, key.clone())?;
            let delivered = mqtt::round_trip(
                config,
                &RoundTrip {
                    host: host.clone(),
                    port: *port,
                    client_id: client_id.clone(),
                    topic,
                    payload,
                    timeout: options.timeout,
                    tls_versions: tls_versions.clone(),
                },
            )
            .await?;
            // The signer saw which CertificateVerify it signed: the version the broker chose.
            let protocol = match key.signed_version() {
                Some(version) => format!("{} over {version}", delivered.connected),
                None => format!("{} over TLS", delivered.connected),
            };
            base.titled("connected: published and read back")
                .field("broker", format!("mqtts://{host}:{port}"))
                .field("client_id", client_id.clone())
                .field("protocol", protocol)
                .field("topic", delivered.topic)
                .field("bytes_read_back", delivered.payload_len)
                .print(console)
        }
        endpoint => {
            console.warn(&format!(
                "live connection not attempted: {} cannot be reached from here; the credential \
                 was checked locally only",
                cloud_name(endpoint)
            ));
            cloud_parameters(
                base.titled("credential checked locally"),
                &credential,
                &verified,
            )
            .field("live_connection", "not attempted")
            .print(console)
        }
    }
}

fn cloud_name(endpoint: &Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Mosquitto { .. } => "the Mosquitto broker",
        Endpoint::AwsIot { .. } => "AWS IoT Core",
        Endpoint::AzureDps { .. } => "Azure DPS",
    }
}

/// The exact parameters a live connection would use.
fn cloud_parameters(report: Report, credential: &StoredCredential, verified: &Verified) -> Report {
    let chain = 1 + credential.intermediate_pems.len();
    let report = report
        .field("cloud", cloud_name(&credential.endpoint))
        .field(
            "client_certificate",
            format!(
                "{chain} certificate(s): leaf CN {} and its intermediates, not after {}",
                verified.common_name, verified.not_after
            ),
        );
    match &credential.endpoint {
        Endpoint::AwsIot {
            host,
            port,
            client_id,
            server_root_ca_pem,
            topic_prefix,
            alpn_protocols,
        } => report
            .field("endpoint", format!("mqtts://{host}:{port}"))
            .field("tls_server_name", host.clone())
            .field("alpn", alpn_protocols.join(","))
            .field("mqtt_client_id", client_id.clone())
            .field("topic_prefix", topic_prefix.clone())
            .field("server_trust", trust_summary(server_root_ca_pem)),
        Endpoint::AzureDps {
            global_endpoint,
            port,
            id_scope,
            registration_id,
            mqtt_client_id,
            mqtt_username,
            server_root_ca_pem,
        } => report
            .field("endpoint", format!("mqtts://{global_endpoint}:{port}"))
            .field("tls_server_name", global_endpoint.clone())
            .field("id_scope", id_scope.clone())
            .field("registration_id", registration_id.clone())
            .field("mqtt_client_id", mqtt_client_id.clone())
            .field("mqtt_username", mqtt_username.clone())
            .field("subscribe", "$dps/registrations/res/#")
            .field(
                "publish",
                format!(
                    "$dps/registrations/PUT/iotdps-register/?$rid=1 \
                     {{\"registrationId\":\"{registration_id}\"}}"
                ),
            )
            .field("server_trust", trust_summary(server_root_ca_pem)),
        Endpoint::Mosquitto { .. } => report,
    }
}

/// The subjects of the trust anchors a policy configured, or a note that there are none.
fn trust_summary(pem_text: &str) -> String {
    let subjects: Vec<String> = credential::certificates(pem_text, "server CA")
        .unwrap_or_default()
        .iter()
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .map(|(_, cert)| cert.subject().to_string())
        })
        .collect();
    if subjects.is_empty() {
        "none configured in the policy (the cloud's public root would be needed)".to_owned()
    } else {
        subjects.join("; ")
    }
}

/// A fresh message, so a stale retained or queued one is never mistaken for ours.
fn random_message() -> Result<Vec<u8>, AgentError> {
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| AgentError::Io {
        path: "<system random generator>".into(),
        source: std::io::Error::other("failed"),
    })?;
    Ok(format!("oxroot device-agent hello {}", hex::encode(nonce)).into_bytes())
}

/// How the client key is made, for the report.
fn client_key_text(slot: u8, firmware: Option<&FirmwareMeasurement>) -> String {
    match firmware {
        None => format!("derived from the silicon for slot {slot} at each handshake"),
        Some(measurement) => format!(
            "alias key derived from the silicon for slot {slot} and the firmware measured at \
             each handshake ({measurement})"
        ),
    }
}

/// The stored credential `connect` uses: the current one, or with `--previous` the one kept
/// from before the last renewal.
fn chosen_credential(state: &StateDir, options: &Options) -> Result<StoredCredential, AgentError> {
    if options.previous {
        state.previous_credential()?.ok_or_else(|| {
            AgentError::Usage("--previous: no previous credential is kept".to_owned())
        })
    } else {
        state.require_credential()
    }
}
