//! Azure IoT Hub through the Device Provisioning Service, X.509 attestation with an enrollment
//! group (bring-your-own chain, P-256). The registration ID is the certificate's subject CN.
//!
//! Artefacts: `enrollment-group.json` (the DPS REST `EnrollmentGroup` body),
//! `ca-certificate.pem` and, with a verification code, `verification-certificate.pem`
//! (proof of possession).

use oxroot_proto::v1;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::{PolicyError, TlsVersion, template, validate};
use crate::pki::CertificateAuthority;

/// The DPS global device endpoint.
pub const DEFAULT_GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";
/// The DPS MQTT API version in the username.
pub const DPS_API_VERSION: &str = "2019-03-31";
/// What devices offer DPS: TLS 1.2, the only version DPS documents ("Currently, DPS only
/// supports TLS 1.2"). Offering 1.3 as well would only be a version DPS does not document.
pub const TLS_VERSIONS: [TlsVersion; 1] = [TlsVersion::Tls12];

const MAX_ID_SCOPE_LEN: usize = 32;
const MAX_ENROLLMENT_GROUP_ID_LEN: usize = 128;
const MAX_IOT_HUBS: usize = 64;
const CA_FIELD: &str = "policy.azure_dps.server_root_ca_pem";
const GROUP_FIELD: &str = "policy.azure_dps.enrollment_group_id";
const HUBS_FIELD: &str = "policy.azure_dps.iot_hub_host_names";

/// Azure DPS parameters of a stored policy, validated and with defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureDpsParams {
    /// The DPS instance's ID scope, e.g. `0ne00000000`.
    pub id_scope: String,
    /// DPS global endpoint host.
    pub global_endpoint: String,
    /// TCP port, 8883 by default.
    pub port: u16,
    /// Trust anchors for the DPS and IoT Hub server certificates, re-encoded as PEM
    /// certificates only; empty if the operator gave none.
    pub server_root_ca_pem: String,
    /// Enrollment group ID of the exported enrollment group; the policy name by default.
    pub enrollment_group_id: String,
    /// IoT hubs the enrollment group may allocate to; empty for DPS's linked hubs.
    pub iot_hub_host_names: Vec<String>,
}

/// Characters DPS allows in a registration ID (which is the CN): lowercase `[a-z0-9-._:]`.
pub(super) const REGISTRATION_ID: template::Alphabet = template::Alphabet {
    allows: |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_' | ':'),
    describe: "a-z 0-9 - . _ : (a DPS registration ID is lowercase)",
};

impl AzureDpsParams {
    /// Validates the proto parameters; `policy_name` is the default enrollment group ID.
    pub(super) fn from_proto(
        params: &v1::AzureDpsPolicyParams,
        policy_name: &str,
    ) -> Result<Self, PolicyError> {
        let id_scope_ok = (1..=MAX_ID_SCOPE_LEN).contains(&params.id_scope.len())
            && params.id_scope.chars().all(|c| c.is_ascii_alphanumeric());
        if !id_scope_ok {
            return Err(PolicyError::new(
                "policy.azure_dps.id_scope",
                format!(
                    "is required: 1 to {MAX_ID_SCOPE_LEN} letters and digits, e.g. 0ne00000000"
                ),
            ));
        }
        let global_endpoint = if params.global_endpoint.is_empty() {
            DEFAULT_GLOBAL_ENDPOINT.to_owned()
        } else {
            validate::host("policy.azure_dps.global_endpoint", &params.global_endpoint)?;
            params.global_endpoint.clone()
        };
        let port = validate::port(
            "policy.azure_dps.port",
            params.port,
            super::DEFAULT_MQTT_TLS_PORT,
        )?;
        let server_root_ca_pem = if params.server_root_ca_pem.is_empty() {
            String::new()
        } else {
            validate::certificates_pem(CA_FIELD, &params.server_root_ca_pem)?
        };
        let enrollment_group_id = if params.enrollment_group_id.is_empty() {
            // Policy names allow a final `.` or `_`, which DPS does not.
            check_enrollment_group_id(policy_name).map_err(|e| {
                PolicyError::new(
                    e.field,
                    format!("{} (it defaults to the policy name)", e.message),
                )
            })?;
            policy_name.to_owned()
        } else {
            check_enrollment_group_id(&params.enrollment_group_id)?;
            params.enrollment_group_id.clone()
        };
        check_iot_hubs(&params.iot_hub_host_names)?;
        Ok(Self {
            id_scope: params.id_scope.clone(),
            global_endpoint,
            port,
            server_root_ca_pem,
            enrollment_group_id,
            iot_hub_host_names: params.iot_hub_host_names.clone(),
        })
    }

    pub(super) fn to_proto(&self) -> v1::AzureDpsPolicyParams {
        v1::AzureDpsPolicyParams {
            id_scope: self.id_scope.clone(),
            global_endpoint: self.global_endpoint.clone(),
            port: self.port.into(),
            server_root_ca_pem: self.server_root_ca_pem.clone(),
            enrollment_group_id: self.enrollment_group_id.clone(),
            iot_hub_host_names: self.iot_hub_host_names.clone(),
        }
    }

    /// DPS connection settings for the device whose certificate CN is `registration_id`.
    pub(super) fn endpoint(&self, registration_id: &str) -> v1::AzureDpsEndpoint {
        v1::AzureDpsEndpoint {
            global_endpoint: self.global_endpoint.clone(),
            port: self.port.into(),
            id_scope: self.id_scope.clone(),
            registration_id: registration_id.to_owned(),
            mqtt_client_id: registration_id.to_owned(),
            mqtt_username: format!(
                "{}/registrations/{registration_id}/api-version={DPS_API_VERSION}",
                self.id_scope
            ),
            server_root_ca_pem: self.server_root_ca_pem.clone(),
        }
    }

    /// The DPS REST `EnrollmentGroup` body: X.509 attestation with the issuing intermediate as
    /// the group's primary signing certificate, so every device whose chain runs through it
    /// is admitted.
    #[must_use]
    pub fn enrollment_group(&self, intermediate_pem: &str) -> serde_json::Value {
        let mut group = json!({
            "enrollmentGroupId": self.enrollment_group_id,
            "attestation": {
                "type": "x509",
                "x509": {
                    "signingCertificates": {
                        "primary": { "certificate": intermediate_pem }
                    }
                }
            },
            "capabilities": { "iotEdge": false },
            "provisioningStatus": "enabled",
            "reprovisionPolicy": { "updateHubAssignment": true, "migrateDeviceData": true },
            "allocationPolicy": "hashed"
        });
        if !self.iot_hub_host_names.is_empty() {
            group["iotHubs"] = json!(self.iot_hub_host_names);
        }
        group
    }

    pub(super) fn artifacts(
        &self,
        ca: &CertificateAuthority,
        verification_code: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<v1::Artifact>, PolicyError> {
        let mut artifacts = vec![
            super::json_artifact(
                "enrollment-group.json",
                &self.enrollment_group(&ca.certificate_pem()),
                format!(
                    "DPS enrollment group \"{}\" (X.509, signed by the issuing CA): PUT it to \
                     /enrollmentGroups/{}",
                    self.enrollment_group_id, self.enrollment_group_id
                ),
            ),
            super::ca_certificate_artifact(
                ca,
                "The issuing CA that signs the device certificates: upload it to DPS and verify it",
            ),
        ];
        if !verification_code.is_empty() {
            artifacts.push(super::verification_certificate_artifact(
                ca,
                "azure_verification_code",
                verification_code,
                now,
                "Proof-of-possession certificate for DPS (CN = verification code)",
            )?);
        }
        Ok(artifacts)
    }
}

/// DPS: up to 128 characters of letters, digits and `- . _ :`, ending in a letter, digit or
/// `-`.
fn check_enrollment_group_id(id: &str) -> Result<(), PolicyError> {
    let valid = (1..=MAX_ENROLLMENT_GROUP_ID_LEN).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
        && id.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(PolicyError::new(
            GROUP_FIELD,
            format!(
                "must be 1 to {MAX_ENROLLMENT_GROUP_ID_LEN} characters of A-Z a-z 0-9 - . _ :, \
                 ending in a letter, digit or -"
            ),
        ))
    }
}

fn check_iot_hubs(hubs: &[String]) -> Result<(), PolicyError> {
    if hubs.len() > MAX_IOT_HUBS {
        return Err(PolicyError::new(
            HUBS_FIELD,
            format!("must hold at most {MAX_IOT_HUBS} host names"),
        ));
    }
    for (index, hub) in hubs.iter().enumerate() {
        if !validate::is_dns_name(hub) {
            return Err(PolicyError::new(
                HUBS_FIELD,
                format!("entry {index} must be an IoT hub host name, e.g. hub1.azure-devices.net"),
            ));
        }
        if hubs[..index].contains(hub) {
            return Err(PolicyError::new(
                HUBS_FIELD,
                format!("{hub:?} is listed twice"),
            ));
        }
    }
    Ok(())
}
