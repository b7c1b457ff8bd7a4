//! Security policies: which cloud a batch's devices are provisioned for, what their
//! certificates look like, and what the operator has to configure on the cloud side.
//!
//! ```text
//!  CreatePolicy ── PolicySpec::from_proto ──▶ PolicySpec (validated, defaults filled) ──serde_json──▶ registry
//!  Onboard/Renew ─ subject_cn, endpoint ────▶ leaf CN, CredentialBundle.endpoint
//!  ExportArtifacts ─ export_artifacts ──────▶ aws-iot-policy.json | enrollment-group.json | mosquitto.conf + acl,
//!                                             CA certificates, CRL, verification and broker certificates
//! ```
//!
//! One module per cloud: [`aws_iot`], [`azure_dps`], [`mosquitto`]. Everything here is pure: no
//! I/O, and no clock (the caller passes `now`).
//!
//! Every string that ends up in a rendered file or a credential is validated on the way in
//! (host names, topic levels, templates, paths, codes), so that a policy cannot add lines to a
//! broker configuration or widen an IoT policy. No artefact ever contains a private key: the
//! verification certificate's key is thrown away, and a broker certificate is issued for the
//! broker's own CSR.

pub mod aws_iot;
pub mod azure_dps;
pub mod mosquitto;
mod template;
mod validate;

use oxroot_proto::v1;
use rot_core::FirmwareMeasurement;
use rot_core::keys::DeviceId;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::pki::{CertificateAuthority, PkiError, Serial, Validity};

/// Device certificate lifetime when the policy leaves it unset.
pub const DEFAULT_CERTIFICATE_LIFETIME: Duration = Duration::days(365);
/// Shortest device certificate lifetime a policy may ask for.
pub const MIN_CERTIFICATE_LIFETIME: Duration = Duration::hours(1);
/// Auto-renew window when the policy leaves it unset.
pub const DEFAULT_RENEW_WINDOW: Duration = Duration::days(30);
/// How long a certificate that a renewal replaced stays valid, when the policy leaves it unset
/// and the device does not prove its successor sooner: long enough for a device that checks
/// its status daily to be offline for most of a week.
pub const DEFAULT_SUPERSEDED_GRACE: Duration = Duration::days(7);
/// The longest such grace a policy may set: the default renew window, the longest a
/// renewal-due certificate is replaced before it expires anyway.
pub const MAX_SUPERSEDED_GRACE: Duration = Duration::days(30);
/// Subject CN template when the policy leaves it empty.
pub const DEFAULT_SUBJECT_CN_TEMPLATE: &str = "{device_id}";
/// Longest policy name.
pub const MAX_NAME_LEN: usize = 63;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest subject CN (X.520 `ub-common-name`).
pub const MAX_SUBJECT_CN_CHARS: usize = 64;
/// MQTT over TLS, the port every cloud here defaults to.
pub const DEFAULT_MQTT_TLS_PORT: u16 = 8883;
/// First topic level of device topics when the policy leaves it empty.
pub const DEFAULT_TOPIC_ROOT: &str = "devices";

/// How long a verification certificate stays valid: long enough to finish a CA registration.
const VERIFICATION_CERTIFICATE_LIFETIME: Duration = Duration::days(30);
/// How long a broker certificate issued for a CSR stays valid.
const BROKER_CERTIFICATE_LIFETIME: Duration = Duration::days(365);
/// Artefact certificates start slightly in the past so that a cloud or broker whose clock lags
/// ours does not see them as not yet valid.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::minutes(5);

/// A validated, stored security policy with its defaults filled in. The registry stores it
/// with `serde_json`; [`PolicySpec::to_proto`] gives the API view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    /// 1 to 63 characters of `[a-z0-9-_.]`, starting with a letter or digit; unique per owner.
    pub name: String,
    /// The owning tenant (validated by the caller).
    pub owner: String,
    /// Free text, at most [`MAX_DESCRIPTION_CHARS`] characters.
    pub description: String,
    /// Validity of device certificates: at least [`MIN_CERTIFICATE_LIFETIME`].
    pub certificate_lifetime: Duration,
    /// Devices renew this long before expiry; zero disables auto-renew. Shorter than
    /// `certificate_lifetime`.
    pub renew_window: Duration,
    /// Subject CN template with `{device_id}` and optionally `{owner}`; renders to at most
    /// [`MAX_SUBJECT_CN_CHARS`] characters.
    pub subject_cn_template: String,
    /// Base URL of the CRL endpoint (`http://…`, no trailing slash), or empty: device
    /// certificates then carry no CRL distribution point.
    #[serde(default)]
    pub crl_base_url: String,
    /// The cloud the policy provisions for, with its parameters.
    pub cloud: CloudParams,
    /// When the policy was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The operator who created it.
    pub created_by: String,
    /// How long a certificate that a renewal replaced stays valid when the device does not
    /// prove it uses its successor: more than zero, at most [`MAX_SUPERSEDED_GRACE`]. Policies
    /// stored before it had this field get the default.
    #[serde(default = "default_superseded_grace")]
    pub superseded_grace: Duration,
    /// The firmware the policy accepts, by measurement (SHA-256 of the image), sorted, at most
    /// [`MAX_FIRMWARE_MEASUREMENTS`]. Empty: no requirement (a device that proves its firmware
    /// still gets a certificate of its alias key naming it). Stored as hex text.
    #[serde(default, with = "measurements_as_text")]
    pub firmware_measurements: Vec<FirmwareMeasurement>,
}

/// Most firmware measurements one policy lists.
pub const MAX_FIRMWARE_MEASUREMENTS: usize = 64;

/// Firmware measurements as the lowercase hex `sha256sum` prints, so stored policies read as
/// the operator wrote them.
mod measurements_as_text {
    use rot_core::FirmwareMeasurement;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        measurements: &[FirmwareMeasurement],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(measurements.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<FirmwareMeasurement>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Validates the firmware measurements a policy lists: each 64 hex characters, no duplicates,
/// at most [`MAX_FIRMWARE_MEASUREMENTS`]. Returned sorted.
fn firmware_measurements(texts: &[String]) -> Result<Vec<FirmwareMeasurement>, PolicyError> {
    const FIELD: &str = "policy.firmware_measurements";
    if texts.len() > MAX_FIRMWARE_MEASUREMENTS {
        return Err(PolicyError::new(
            FIELD,
            format!("must list at most {MAX_FIRMWARE_MEASUREMENTS} measurements"),
        ));
    }
    let mut measurements = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            text.parse::<FirmwareMeasurement>()
                .map_err(|e| PolicyError::new(FIELD, format!("entry {index}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    measurements.sort_unstable();
    if let Some(twice) = measurements.windows(2).find_map(|pair| {
        (pair.first() == pair.last())
            .then(|| pair.first())
            .flatten()
    }) {
        return Err(PolicyError::new(FIELD, format!("lists {twice} twice")));
    }
    Ok(measurements)
}

fn default_superseded_grace() -> Duration {
    DEFAULT_SUPERSEDED_GRACE
}

/// The per-cloud half of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloudParams {
    /// AWS IoT Core.
    AwsIot(aws_iot::AwsIotParams),
    /// Azure IoT Hub through the Device Provisioning Service.
    AzureDps(azure_dps::AzureDpsParams),
    /// An Eclipse Mosquitto 2.x broker.
    Mosquitto(mosquitto::MosquittoParams),
}

/// A TLS version a device may use for its cloud connection (`oxroot.v1.TlsVersion`), as the
/// registry stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2: ECDHE-ECDSA with AES-GCM and the extended master secret only.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersion {
    /// Both versions, in order.
    pub const ALL: [Self; 2] = [Self::Tls12, Self::Tls13];

    /// The wire value.
    #[must_use]
    pub fn to_proto(self) -> v1::TlsVersion {
        match self {
            Self::Tls12 => v1::TlsVersion::TlsVersion12,
            Self::Tls13 => v1::TlsVersion::TlsVersion13,
        }
    }

    /// A wire value, if it names a version (not UNSPECIFIED, not an unknown number).
    #[must_use]
    pub fn from_proto(value: i32) -> Option<Self> {
        match v1::TlsVersion::try_from(value).ok()? {
            v1::TlsVersion::TlsVersion12 => Some(Self::Tls12),
            v1::TlsVersion::TlsVersion13 => Some(Self::Tls13),
            v1::TlsVersion::Unspecified => None,
        }
    }
}

/// A policy or export field that is missing or malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct PolicyError {
    /// The proto field path, e.g. `policy.aws_iot.endpoint_host` or `mosquitto.config_dir`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl PolicyError {
    /// An error about `field`.
    #[must_use]
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A DeviceId to render templates with at creation time. Every DeviceId is 64 lowercase hex
/// characters, so a template that renders well for this one renders well for all of them.
fn sample_device_id() -> DeviceId {
    DeviceId::from_bytes([0xab; 32])
}

/// Longest CRL base URL accepted.
const MAX_CRL_BASE_URL: usize = 200;

/// Validates a CRL base URL: empty, or `http://host[:port][/path]` of visible ASCII without
/// query, fragment, user info or a trailing slash (one is taken off).
fn crl_base_url(url: &str) -> Result<String, PolicyError> {
    const FIELD: &str = "policy.crl_base_url";
    if url.is_empty() {
        return Ok(String::new());
    }
    let url = url.strip_suffix('/').unwrap_or(url);
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(PolicyError::new(
            FIELD,
            "must start with http:// (a CRL is signed; https would need a CRL check of its own)",
        ));
    };
    let host = rest.split('/').next().unwrap_or_default();
    let problem = if url.len() > MAX_CRL_BASE_URL {
        Some(format!("must be at most {MAX_CRL_BASE_URL} characters"))
    } else if !url.bytes().all(|b| b.is_ascii_graphic()) {
        Some("must be visible ASCII, without spaces".to_owned())
    } else if url.contains(['?', '#']) {
        Some("must not have a query or a fragment".to_owned())
    } else if host.is_empty() || host.contains('@') {
        Some("must name a host, without user information".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(PolicyError::new(FIELD, problem)),
        None => Ok(url.to_owned()),
    }
}

impl PolicySpec {
    /// Validates a CreatePolicy request's policy and fills in the defaults. The output-only
    /// fields of `policy` (`kind`, `created_at`, `created_by`) and its `owner` are ignored: the
    /// caller resolves `owner` and names `created_by`. `max_lifetime` is the longest
    /// certificate lifetime the issuing CA can still cover.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the first field that is missing, malformed or out of range:
    /// the name, the description, the lifetimes, the subject CN template (which must contain
    /// `{device_id}` and render to a CN the cloud accepts), or any per-cloud parameter.
    pub fn from_proto(
        policy: &v1::Policy,
        owner: &str,
        created_by: &str,
        now: OffsetDateTime,
        max_lifetime: Duration,
    ) -> Result<Self, PolicyError> {
        validate::policy_name("policy.name", &policy.name)?;
        if owner.is_empty() {
            return Err(PolicyError::new("policy.owner", "must not be empty"));
        }
        if let Some(problem) = crate::text::problem(&policy.description, MAX_DESCRIPTION_CHARS) {
            return Err(PolicyError::new("policy.description", problem));
        }
        let certificate_lifetime = match &policy.certificate_lifetime {
            None => DEFAULT_CERTIFICATE_LIFETIME,
            Some(lifetime) => validate::duration("policy.certificate_lifetime", lifetime)?,
        };
        if certificate_lifetime < MIN_CERTIFICATE_LIFETIME {
            return Err(PolicyError::new(
                "policy.certificate_lifetime",
                format!("must be at least {MIN_CERTIFICATE_LIFETIME}"),
            ));
        }
        if certificate_lifetime > max_lifetime {
            return Err(PolicyError::new(
                "policy.certificate_lifetime",
                format!(
                    "must be at most {max_lifetime} (what the issuing CA's validity still covers)"
                ),
            ));
        }
        let renew_window = match &policy.renew_window {
            None => DEFAULT_RENEW_WINDOW,
            Some(window) => validate::duration("policy.renew_window", window)?,
        };
        if renew_window >= certificate_lifetime {
            return Err(PolicyError::new(
                "policy.renew_window",
                format!(
                    "must be shorter than the certificate lifetime ({certificate_lifetime}); \
                     when unset it is {DEFAULT_RENEW_WINDOW}; zero disables auto-renew"
                ),
            ));
        }
        let superseded_grace = match &policy.superseded_grace {
            None => DEFAULT_SUPERSEDED_GRACE,
            Some(grace) => validate::duration("policy.superseded_grace", grace)?,
        };
        if superseded_grace <= Duration::ZERO || superseded_grace > MAX_SUPERSEDED_GRACE {
            return Err(PolicyError::new(
                "policy.superseded_grace",
                format!(
                    "must be more than zero and at most {MAX_SUPERSEDED_GRACE}; when unset it is \
                     {DEFAULT_SUPERSEDED_GRACE}"
                ),
            ));
        }
        let subject_cn_template = if policy.subject_cn_template.is_empty() {
            DEFAULT_SUBJECT_CN_TEMPLATE.to_owned()
        } else {
            policy.subject_cn_template.clone()
        };
        let cloud = match &policy.params {
            None => {
                return Err(PolicyError::new(
                    "policy.params",
                    "exactly one of aws_iot, azure_dps or mosquitto must be set",
                ));
            }
            Some(v1::policy::Params::AwsIot(params)) => {
                CloudParams::AwsIot(aws_iot::AwsIotParams::from_proto(params, owner)?)
            }
            Some(v1::policy::Params::AzureDps(params)) => {
                CloudParams::AzureDps(azure_dps::AzureDpsParams::from_proto(params, &policy.name)?)
            }
            Some(v1::policy::Params::Mosquitto(params)) => {
                CloudParams::Mosquitto(mosquitto::MosquittoParams::from_proto(params)?)
            }
        };
        let spec = Self {
            name: policy.name.clone(),
            owner: owner.to_owned(),
            description: policy.description.clone(),
            certificate_lifetime,
            renew_window,
            subject_cn_template,
            crl_base_url: crl_base_url(&policy.crl_base_url)?,
            cloud,
            created_at: now,
            created_by: created_by.to_owned(),
            superseded_grace,
            firmware_measurements: firmware_measurements(&policy.firmware_measurements)?,
        };
        spec.check_subject_cn_template()?;
        Ok(spec)
    }

    /// Checks the CN template once, at creation, so that issuing never fails on it: every
    /// DeviceId has the same length and alphabet, so the sample stands for all of them.
    fn check_subject_cn_template(&self) -> Result<(), PolicyError> {
        const FIELD: &str = "policy.subject_cn_template";
        let alphabet = match &self.cloud {
            CloudParams::AwsIot(_) => template::CN,
            CloudParams::AzureDps(_) => azure_dps::REGISTRATION_ID,
            CloudParams::Mosquitto(_) => mosquitto::USER_NAME,
        };
        template::check(&self.subject_cn_template, &self.owner, alphabet)
            .map_err(|message| PolicyError::new(FIELD, message))?;
        self.subject_cn(&sample_device_id()).map(drop)
    }

    /// The API view of the policy: kind, defaults, `created_at` and `created_by` filled in.
    #[must_use]
    pub fn to_proto(&self) -> v1::Policy {
        v1::Policy {
            name: self.name.clone(),
            owner: self.owner.clone(),
            kind: self.kind().into(),
            description: self.description.clone(),
            certificate_lifetime: Some(duration_to_proto(self.certificate_lifetime)),
            renew_window: Some(duration_to_proto(self.renew_window)),
            subject_cn_template: self.subject_cn_template.clone(),
            crl_base_url: self.crl_base_url.clone(),
            params: Some(match &self.cloud {
                CloudParams::AwsIot(params) => v1::policy::Params::AwsIot(params.to_proto()),
                CloudParams::AzureDps(params) => v1::policy::Params::AzureDps(params.to_proto()),
                CloudParams::Mosquitto(params) => v1::policy::Params::Mosquitto(params.to_proto()),
            }),
            created_at: Some(timestamp_to_proto(self.created_at)),
            created_by: self.created_by.clone(),
            superseded_grace: Some(duration_to_proto(self.superseded_grace)),
            firmware_measurements: self
                .firmware_measurements
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// Whether the policy names firmware measurements, and so refuses devices that prove none.
    #[must_use]
    pub fn requires_firmware(&self) -> bool {
        !self.firmware_measurements.is_empty()
    }

    /// Whether a device running `measurement` may get a certificate under this policy.
    #[must_use]
    pub fn accepts_firmware(&self, measurement: &FirmwareMeasurement) -> bool {
        !self.requires_firmware()
            || self
                .firmware_measurements
                .binary_search(measurement)
                .is_ok()
    }

    /// The CRL distribution point of certificates `issuer` (a CA id) signs under this policy,
    /// if the policy names a CRL base URL.
    #[must_use]
    pub fn crl_distribution_point(&self, issuer: &str) -> Option<String> {
        (!self.crl_base_url.is_empty()).then(|| format!("{}/{issuer}.crl", self.crl_base_url))
    }

    /// The policy's kind, from its cloud parameters.
    #[must_use]
    pub fn kind(&self) -> v1::PolicyKind {
        match self.cloud {
            CloudParams::AwsIot(_) => v1::PolicyKind::AwsIot,
            CloudParams::AzureDps(_) => v1::PolicyKind::AzureDps,
            CloudParams::Mosquitto(_) => v1::PolicyKind::Mosquitto,
        }
    }

    /// The subject CN of this device's certificate: the template rendered.
    ///
    /// # Errors
    /// A [`PolicyError`] on `policy.subject_cn_template` if the CN is empty or longer than
    /// [`MAX_SUBJECT_CN_CHARS`]; [`PolicySpec::from_proto`] rules this out for the policies it
    /// makes.
    pub fn subject_cn(&self, device_id: &DeviceId) -> Result<String, PolicyError> {
        let cn = template::render(&self.subject_cn_template, device_id, &self.owner);
        let len = cn.chars().count();
        if (1..=MAX_SUBJECT_CN_CHARS).contains(&len) {
            Ok(cn)
        } else {
            Err(PolicyError::new(
                "policy.subject_cn_template",
                format!(
                    "renders to {len} characters; a subject CN has 1 to {MAX_SUBJECT_CN_CHARS}"
                ),
            ))
        }
    }

    /// The TLS versions the device offers, and nothing else: the `tls_versions` of its
    /// `CredentialBundle`. Each cloud gets what it documents: AWS IoT Core 1.2 and 1.3 (1.3
    /// only on endpoints with a TLS13 security policy, so the device offers both and the
    /// endpoint's policy picks); Azure DPS 1.2, the only version it documents; a Mosquitto
    /// broker what its policy says the listener accepts.
    #[must_use]
    pub fn tls_versions(&self) -> Vec<TlsVersion> {
        match &self.cloud {
            CloudParams::AwsIot(_) => aws_iot::TLS_VERSIONS.to_vec(),
            CloudParams::AzureDps(_) => azure_dps::TLS_VERSIONS.to_vec(),
            CloudParams::Mosquitto(params) => params.tls_versions.clone(),
        }
    }

    /// Where and how the device connects: the `endpoint` case of its `CredentialBundle`.
    /// `subject_cn` is the CN of the device's certificate ([`PolicySpec::subject_cn`]);
    /// `oxroot_root_pem` is the service's root, the default broker CA for Mosquitto.
    #[must_use]
    pub fn endpoint(
        &self,
        device_id: &DeviceId,
        subject_cn: &str,
        oxroot_root_pem: &str,
    ) -> v1::credential_bundle::Endpoint {
        use v1::credential_bundle::Endpoint;
        match &self.cloud {
            CloudParams::AwsIot(params) => {
                Endpoint::AwsIot(params.endpoint(device_id, &self.owner))
            }
            CloudParams::AzureDps(params) => Endpoint::AzureDps(params.endpoint(subject_cn)),
            CloudParams::Mosquitto(params) => {
                Endpoint::Mosquitto(params.endpoint(device_id, subject_cn, oxroot_root_pem))
            }
        }
    }
}

/// Renders the operator-side artefacts of a policy (ExportArtifacts); see the `Artifact`
/// comment in `operator.proto` for the files of each kind. The request's `owner` and
/// `policy_name` are the caller's to resolve into `spec`; only its codes and Mosquitto options
/// are read here. `crl_pem` is the issuing CA's current CRL, shipped as it is as Mosquitto's
/// `crl.pem`. Verification and broker certificates get random serials ([`Serial::random`],
/// also given in the artefact's description) and are valid from shortly before `now`.
///
/// # Errors
/// A [`PolicyError`] naming the request field that is malformed (`aws_registration_code`,
/// `aws_role_arn`, `azure_verification_code`, `mosquitto.config_dir`,
/// `mosquitto.broker_csr_pem`), that does not apply to the policy's kind, or that asks for an
/// artefact the policy cannot make complete (`aws_role_arn` when the thing name is not the
/// CN). A failure to sign (RNG, an issuing CA about to expire)
/// is reported on the field whose certificate could not be made.
pub fn export_artifacts(
    spec: &PolicySpec,
    trust: &OwnerTrust<'_>,
    crl_pem: &str,
    request: &v1::ExportArtifactsRequest,
    now: OffsetDateTime,
) -> Result<Vec<v1::Artifact>, PolicyError> {
    let ca = trust.issuing;
    // Options for another kind are refused, not ignored: an operator who sends a registration
    // code expects a verification certificate back, and silence would hide the mistake.
    let kind = spec.kind();
    if !request.aws_registration_code.is_empty() && kind != v1::PolicyKind::AwsIot {
        return Err(not_for_kind("aws_registration_code", "AWS IoT"));
    }
    if !request.aws_role_arn.is_empty() && kind != v1::PolicyKind::AwsIot {
        return Err(not_for_kind("aws_role_arn", "AWS IoT"));
    }
    if !request.azure_verification_code.is_empty() && kind != v1::PolicyKind::AzureDps {
        return Err(not_for_kind("azure_verification_code", "Azure DPS"));
    }
    let mosquitto_options = request.mosquitto.clone().unwrap_or_default();
    if mosquitto_options != v1::MosquittoExportOptions::default()
        && kind != v1::PolicyKind::Mosquitto
    {
        return Err(not_for_kind("mosquitto", "Mosquitto"));
    }
    let mut artifacts = match &spec.cloud {
        CloudParams::AwsIot(params) => params.artifacts(
            spec,
            ca,
            &request.aws_registration_code,
            &request.aws_role_arn,
            now,
        ),
        CloudParams::AzureDps(params) => {
            params.artifacts(ca, &request.azure_verification_code, now)
        }
        CloudParams::Mosquitto(params) => {
            params.artifacts(spec, ca, crl_pem, &mosquitto_options, now)
        }
    }?;
    // During a rotation's overlap the retired CA's certificates are still out: the broker
    // trusts both chains, and the cloud keeps the retired CA registered until they expire.
    for artifact in &mut artifacts {
        if artifact.file_name == "ca.pem" {
            artifact.content = trust.trust_pem().into_bytes();
        }
    }
    for (index, retired) in trust.retired.iter().enumerate() {
        artifacts.push(artifact(
            &format!("ca-certificate-previous-{}.pem", index + 1),
            MEDIA_PEM,
            retired.certificate_pem(),
            format!(
                "A retired issuing CA whose certificates are still valid: keep it registered \
                 until {}",
                retired
                    .not_after()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ),
        ));
    }
    Ok(artifacts)
}

/// What an owner's devices chain to: the issuing CA that issues now, and the retired ones whose
/// certificates are still valid (a rotation's overlap).
#[derive(Debug)]
pub struct OwnerTrust<'a> {
    /// The CA that issues now.
    pub issuing: &'a CertificateAuthority,
    /// Retired CAs not yet expired, newest first.
    pub retired: Vec<&'a CertificateAuthority>,
}

impl<'a> From<&'a CertificateAuthority> for OwnerTrust<'a> {
    /// The trust of an owner with one issuing CA.
    fn from(issuing: &'a CertificateAuthority) -> Self {
        Self {
            issuing,
            retired: Vec::new(),
        }
    }
}

impl OwnerTrust<'_> {
    /// Every live issuing CA's chain, then each distinct root once: a trust file (Mosquitto's
    /// `cafile`) that accepts exactly the owner's devices.
    #[must_use]
    pub fn trust_pem(&self) -> String {
        let mut pem = String::new();
        let mut roots: Vec<String> = Vec::new();
        for ca in std::iter::once(self.issuing).chain(self.retired.iter().copied()) {
            for certificate in ca.chain_pems() {
                if !pem.contains(&certificate) {
                    pem.push_str(&certificate);
                }
            }
            if !roots.contains(&ca.root_pem()) {
                roots.push(ca.root_pem());
            }
        }
        pem.extend(roots);
        pem
    }
}

fn not_for_kind(field: &str, kind: &str) -> PolicyError {
    PolicyError::new(field, format!("only applies to {kind} policies"))
}

fn duration_to_proto(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: duration.whole_seconds(),
        nanos: duration.subsec_nanoseconds(),
    }
}

fn timestamp_to_proto(instant: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: instant.unix_timestamp(),
        nanos: instant.nanosecond() as i32,
    }
}

/// One artefact file.
fn artifact(
    file_name: &str,
    media_type: &str,
    content: impl Into<Vec<u8>>,
    description: impl Into<String>,
) -> v1::Artifact {
    v1::Artifact {
        file_name: file_name.to_owned(),
        media_type: media_type.to_owned(),
        content: content.into(),
        description: description.into(),
    }
}

const MEDIA_JSON: &str = "application/json";
const MEDIA_PEM: &str = "application/x-pem-file";
const MEDIA_TEXT: &str = "text/plain";

/// A pretty-printed JSON artefact ending in a newline.
fn json_artifact(
    file_name: &str,
    value: &serde_json::Value,
    description: impl Into<String>,
) -> v1::Artifact {
    // Serialising a `Value` cannot fail: its map keys are strings.
    let mut content = serde_json::to_vec_pretty(value).unwrap_or_default();
    content.push(b'\n');
    artifact(file_name, MEDIA_JSON, content, description)
}

/// The issuing intermediate as `ca-certificate.pem`: the CA a cloud registers, since it is the
/// one that signs the device certificates (and the verification certificate).
fn ca_certificate_artifact(ca: &CertificateAuthority, description: &str) -> v1::Artifact {
    artifact(
        "ca-certificate.pem",
        MEDIA_PEM,
        ca.certificate_pem(),
        description,
    )
}

/// `verification-certificate.pem`: a leaf signed by the issuing CA whose CN is `code`.
fn verification_certificate_artifact(
    ca: &CertificateAuthority,
    field: &str,
    code: &str,
    now: OffsetDateTime,
    description: &str,
) -> Result<v1::Artifact, PolicyError> {
    validate::registration_code(field, code)?;
    let serial = Serial::random().map_err(pki_error(field))?;
    let validity = artefact_validity(ca, now, VERIFICATION_CERTIFICATE_LIFETIME, field)?;
    let certificate = ca
        .issue_verification_certificate(code, validity, serial)
        .map_err(pki_error(field))?;
    Ok(artifact(
        "verification-certificate.pem",
        MEDIA_PEM,
        certificate.pem,
        format!("{description} (serial {:x})", serial.get()),
    ))
}

/// The validity of an artefact certificate: from just before `now` for `lifetime`, but never
/// past the issuing intermediate.
fn artefact_validity(
    ca: &CertificateAuthority,
    now: OffsetDateTime,
    lifetime: Duration,
    field: &str,
) -> Result<Validity, PolicyError> {
    let ca_end = ca.not_after();
    let not_before = now - CLOCK_SKEW_ALLOWANCE;
    Validity::new(not_before, (now + lifetime).min(ca_end)).map_err(pki_error(field))
}

fn pki_error(field: &str) -> impl FnOnce(PkiError) -> PolicyError + '_ {
    move |error| PolicyError::new(field, error.to_string())
}
