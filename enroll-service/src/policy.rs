//! TEMPORARY stand-in for the per-cloud policy modules (being written on branch `policy`).
#![allow(
    missing_docs,
    clippy::missing_errors_doc,
    clippy::needless_pass_by_value
)]

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use oxroot_proto::v1;
use rot_core::keys::DeviceId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    pub name: String,
    pub owner: String,
    pub description: String,
    pub certificate_lifetime: time::Duration,
    pub renew_window: time::Duration,
    pub subject_cn_template: String,
    pub cloud: CloudParams,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloudParams {
    Mosquitto { host: String, port: u16 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

impl PolicySpec {
    pub fn from_proto(
        policy: &v1::Policy,
        owner: &str,
        created_by: &str,
        now: OffsetDateTime,
        _max_lifetime: time::Duration,
    ) -> Result<Self, PolicyError> {
        let Some(v1::policy::Params::Mosquitto(m)) = &policy.params else {
            return Err(PolicyError {
                field: "policy.params".into(),
                message: "stub".into(),
            });
        };
        Ok(Self {
            name: policy.name.clone(),
            owner: owner.into(),
            description: policy.description.clone(),
            certificate_lifetime: time::Duration::days(365),
            renew_window: time::Duration::days(30),
            subject_cn_template: "{device_id}".into(),
            cloud: CloudParams::Mosquitto {
                host: m.host.clone(),
                port: 8883,
            },
            created_at: now,
            created_by: created_by.into(),
        })
    }
    #[must_use]
    pub fn to_proto(&self) -> v1::Policy {
        v1::Policy {
            name: self.name.clone(),
            owner: self.owner.clone(),
            kind: self.kind() as i32,
            ..Default::default()
        }
    }
    #[must_use]
    pub fn kind(&self) -> v1::PolicyKind {
        v1::PolicyKind::Mosquitto
    }
    pub fn subject_cn(&self, device_id: &DeviceId) -> Result<String, PolicyError> {
        Ok(device_id.to_string())
    }
    #[must_use]
    pub fn endpoint(
        &self,
        device_id: &DeviceId,
        _cn: &str,
        root: &str,
    ) -> v1::credential_bundle::Endpoint {
        let CloudParams::Mosquitto { host, port } = &self.cloud;
        v1::credential_bundle::Endpoint::Mosquitto(v1::MosquittoEndpoint {
            host: host.clone(),
            port: u32::from(*port),
            ca_pem: root.into(),
            topic_prefix: format!("devices/{device_id}/"),
            client_id: device_id.to_string(),
        })
    }
}

pub fn export_artifacts(
    _spec: &PolicySpec,
    _ca: &crate::pki::CertificateAuthority,
    _crl_pem: &str,
    _request: &v1::ExportArtifactsRequest,
    _now: OffsetDateTime,
) -> Result<Vec<v1::Artifact>, PolicyError> {
    Ok(Vec::new())
}
