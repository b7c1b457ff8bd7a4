//! An Eclipse Mosquitto 2.x broker that authenticates devices by client certificate: the
//! certificate's CN becomes the MQTT user name (`use_identity_as_username`) and the ACL
//! confines each user to `<topic_root>/<CN>/#`.
//!
//! Artefacts: `mosquitto.conf` (a listener block), `acl`, `ca.pem` (the chain that signs
//! device certificates), `crl.pem` and, for a broker CSR, `broker-certificate.pem`.

use std::net::IpAddr;

use oxroot_proto::v1;
use rot_core::keys::DeviceId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{MEDIA_PEM, MEDIA_TEXT, PolicyError, PolicySpec, TlsVersion, template, validate};
use crate::pki::{CertificateAuthority, Serial, ServerName};

/// Where the exported files are meant to live on the broker host unless the request says.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/mosquitto/oxroot";

/// The TLS versions of a policy that names none: what a Mosquitto 2.x listener accepts by
/// default (`tls_version` unset allows 1.2 and 1.3).
pub const DEFAULT_TLS_VERSIONS: [TlsVersion; 2] = TlsVersion::ALL;

const CONFIG_DIR_FIELD: &str = "mosquitto.config_dir";
const TLS_FIELD: &str = "policy.mosquitto.tls_versions";
const CSR_FIELD: &str = "mosquitto.broker_csr_pem";

/// Mosquitto parameters of a stored policy, validated and with defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MosquittoParams {
    /// Broker host name or IP address; the SAN of a broker certificate.
    pub host: String,
    /// TCP port, 8883 by default.
    pub port: u16,
    /// First topic level of device topics, `devices` by default.
    pub topic_root: String,
    /// The CA certificates that sign the broker's certificate, handed to devices, as PEM
    /// certificates only; empty means the oxroot root.
    pub broker_ca_pem: String,
    /// The TLS versions the broker's listener accepts and devices offer: sorted, no
    /// duplicates, not empty. Policies stored before this field get the default.
    #[serde(default = "default_tls_versions")]
    pub tls_versions: Vec<TlsVersion>,
}

fn default_tls_versions() -> Vec<TlsVersion> {
    DEFAULT_TLS_VERSIONS.to_vec()
}

/// Characters of a CN that is a Mosquitto user name and, through `%u`, a topic level: the CN
/// alphabet already leaves out `/ + #` (Mosquitto refuses `%u` substitution for such names).
pub(super) const USER_NAME: template::Alphabet = template::CN;

impl MosquittoParams {
    /// Validates the proto parameters.
    pub(super) fn from_proto(params: &v1::MosquittoPolicyParams) -> Result<Self, PolicyError> {
        validate::host("policy.mosquitto.host", &params.host)?;
        let port = validate::port(
            "policy.mosquitto.port",
            params.port,
            super::DEFAULT_MQTT_TLS_PORT,
        )?;
        let topic_root = validate::topic_level(
            "policy.mosquitto.topic_root",
            &params.topic_root,
            super::DEFAULT_TOPIC_ROOT,
        )?;
        let broker_ca_pem = if params.broker_ca_pem.is_empty() {
            String::new()
        } else {
            validate::certificates_pem("policy.mosquitto.broker_ca_pem", &params.broker_ca_pem)?
        };
        Ok(Self {
            host: params.host.clone(),
            port,
            topic_root,
            broker_ca_pem,
            tls_versions: tls_versions(&params.tls_versions)?,
        })
    }

    pub(super) fn to_proto(&self) -> v1::MosquittoPolicyParams {
        v1::MosquittoPolicyParams {
            host: self.host.clone(),
            port: self.port.into(),
            topic_root: self.topic_root.clone(),
            broker_ca_pem: self.broker_ca_pem.clone(),
            tls_versions: self
                .tls_versions
                .iter()
                .map(|version| version.to_proto() as i32)
                .collect(),
        }
    }

    pub(super) fn endpoint(
        &self,
        device_id: &DeviceId,
        subject_cn: &str,
        oxroot_root_pem: &str,
    ) -> v1::MosquittoEndpoint {
        let ca_pem = if self.broker_ca_pem.is_empty() {
            oxroot_root_pem
        } else {
            &self.broker_ca_pem
        };
        v1::MosquittoEndpoint {
            host: self.host.clone(),
            port: self.port.into(),
            ca_pem: ca_pem.to_owned(),
            // The ACL grants `<root>/%u/#` and %u is the CN, so the prefix uses the CN too.
            topic_prefix: format!("{}/{subject_cn}/", self.topic_root),
            client_id: device_id.to_string(),
        }
    }

    /// The `mosquitto.conf` listener block, with its files under `config_dir` (a path
    /// checked by the caller).
    #[must_use]
    pub fn config(&self, policy_name: &str, config_dir: &str) -> String {
        let dir = config_dir.trim_end_matches('/');
        format!(
            "# Mosquitto 2.x listener for oxroot policy \"{policy_name}\".\n\
             # Devices authenticate with their oxroot certificate; its CN becomes the MQTT user\n\
             # name, which the ACL confines to {root}/<CN>/#.\n\
             # keyfile is the broker's own key and never leaves this host (send its CSR to\n\
             # ExportArtifacts to get certfile). Replace crlfile before its nextUpdate and send\n\
             # SIGHUP: an expired CRL makes Mosquitto reject every client.\n\
             listener {port}\n\
             cafile {dir}/ca.pem\n\
             certfile {dir}/broker-certificate.pem\n\
             keyfile {dir}/broker.key\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             crlfile {dir}/crl.pem\n\
             tls_version {minimum}\n\
             acl_file {dir}/acl\n",
            root = self.topic_root,
            port = self.port,
            // Mosquitto 2.x reads `tls_version` as the listener's minimum: the lowest version
            // the policy's devices offer.
            minimum = match self.tls_versions.first() {
                Some(TlsVersion::Tls13) => "tlsv1.3",
                Some(TlsVersion::Tls12) | None => "tlsv1.2",
            },
        )
    }

    /// The ACL file: each device may read and write below its own prefix, nothing else.
    #[must_use]
    pub fn acl(&self, policy_name: &str) -> String {
        format!(
            "# oxroot policy \"{policy_name}\": each device (user name = certificate CN) may use\n\
             # {root}/<CN>/# and nothing else.\n\
             pattern readwrite {root}/%u/#\n",
            root = self.topic_root
        )
    }

    fn server_name(&self) -> ServerName {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::Ip(ip),
            Err(_) => ServerName::Dns(self.host.clone()),
        }
    }

    pub(super) fn artifacts(
        &self,
        spec: &PolicySpec,
        ca: &CertificateAuthority,
        crl_pem: &str,
        options: &v1::MosquittoExportOptions,
        now: OffsetDateTime,
    ) -> Result<Vec<v1::Artifact>, PolicyError> {
        let config_dir = if options.config_dir.is_empty() {
            DEFAULT_CONFIG_DIR.to_owned()
        } else {
            validate::absolute_dir(CONFIG_DIR_FIELD, &options.config_dir)?
        };
        let mut artifacts = vec![
            super::artifact(
                "mosquitto.conf",
                MEDIA_TEXT,
                self.config(&spec.name, &config_dir),
                format!("Mosquitto listener block; its files go in {config_dir}"),
            ),
            super::artifact(
                "acl",
                MEDIA_TEXT,
                self.acl(&spec.name),
                format!(
                    "Mosquitto ACL: each device may use {}/<CN>/# only",
                    self.topic_root
                ),
            ),
            // Intermediate and root: Mosquitto verifies device chains up to a trusted root.
            super::artifact(
                "ca.pem",
                MEDIA_PEM,
                format!("{}{}", ca.chain_pems().concat(), ca.root_pem()),
                "The CA chain that signs device certificates (issuing CA, then root)",
            ),
            super::artifact(
                "crl.pem",
                MEDIA_PEM,
                crl_pem,
                "The issuing CA's current CRL: refresh it before its nextUpdate",
            ),
        ];
        if !options.broker_csr_pem.is_empty() {
            artifacts.push(self.broker_certificate(ca, &options.broker_csr_pem, now)?);
        }
        Ok(artifacts)
    }

    /// `broker-certificate.pem`: a serverAuth certificate for the CSR's key with SAN = the
    /// policy's host, followed by the intermediate so that devices trusting only the root can
    /// build the chain.
    fn broker_certificate(
        &self,
        ca: &CertificateAuthority,
        csr_pem: &str,
        now: OffsetDateTime,
    ) -> Result<v1::Artifact, PolicyError> {
        let serial = Serial::random().map_err(super::pki_error(CSR_FIELD))?;
        let validity =
            super::artefact_validity(ca, now, super::BROKER_CERTIFICATE_LIFETIME, CSR_FIELD)?;
        let certificate = ca
            .issue_server_certificate_for_csr(csr_pem, &[self.server_name()], validity, serial)
            .map_err(super::pki_error(CSR_FIELD))?;
        Ok(super::artifact(
            "broker-certificate.pem",
            MEDIA_PEM,
            format!("{}{}", certificate.pem, ca.chain_pems().concat()),
            format!(
                "Broker certificate for {} and the issuing CA (serial {:x})",
                self.host,
                serial.get()
            ),
        ))
    }
}

/// The policy's TLS versions: empty for the default, otherwise known versions, each once,
/// sorted so the bundle and the configuration do not depend on the order given.
fn tls_versions(values: &[i32]) -> Result<Vec<TlsVersion>, PolicyError> {
    if values.is_empty() {
        return Ok(default_tls_versions());
    }
    let mut versions = Vec::with_capacity(values.len());
    for (index, &value) in values.iter().enumerate() {
        let version = TlsVersion::from_proto(value).ok_or_else(|| {
            PolicyError::new(
                TLS_FIELD,
                format!(
                    "entry {index} ({value}) is not a TLS version: TLS_VERSION_1_2 or \
                     TLS_VERSION_1_3"
                ),
            )
        })?;
        if versions.contains(&version) {
            return Err(PolicyError::new(
                TLS_FIELD,
                format!("entry {index} lists a version twice"),
            ));
        }
        versions.push(version);
    }
    versions.sort_unstable();
    Ok(versions)
}
