//! AWS IoT Core: devices connect with their oxroot certificate as an IoT thing whose name is
//! also the MQTT client ID, under a least-privilege IoT policy written with the
//! `${iot:Connection.Thing.ThingName}` variable.
//!
//! Artefacts: the IoT policy, `ca-certificate.pem` (for `RegisterCACertificate`), with a
//! registration code `verification-certificate.pem`, and with a JITP role ARN
//! `jitp-template.json`, the complete registration config for just-in-time provisioning.
//!
//! Nothing incomplete is written as if it were ready to use:
//! - the IoT policy is `aws-iot-policy.json` only when the policy names both the AWS region
//!   and the account, so that every ARN is exact; otherwise it is
//!   `aws-iot-policy.template.json`, whose ARNs use `*` for what is missing and which carries
//!   a top-level [`TEMPLATE_NOTE_KEY`] saying what to fill in (AWS's policy grammar has no
//!   such element, so the file cannot be created as it is by mistake);
//! - the registration config needs the IAM role JITP assumes, so it is written only for a
//!   role ARN, and a request for one that cannot be complete is refused.

use oxroot_proto::v1;
use rot_core::keys::DeviceId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::{PolicyError, PolicySpec, TlsVersion, template, validate};
use crate::pki::CertificateAuthority;

/// ALPN protocol AWS IoT requires for MQTT with client certificates on port 443.
pub const ALPN_MQTT_ON_443: &str = "x-amzn-mqtt-ca";
/// Longest thing name AWS accepts.
pub const MAX_THING_NAME_LEN: usize = 128;
/// The IoT policy variable that names the connected thing.
pub const THING_NAME_VARIABLE: &str = "${iot:Connection.Thing.ThingName}";
/// What devices offer AWS IoT Core: TLS 1.2 and 1.3. Every endpoint security policy accepts
/// 1.2 except the TLS 1.3-only ones, and 1.3 is accepted only by the `IoTSecurityPolicy_TLS13_*`
/// policies, so offering both connects to any of them (at the best version the endpoint has).
pub const TLS_VERSIONS: [TlsVersion; 2] = TlsVersion::ALL;

const MAX_ALPN_PROTOCOLS: usize = 8;
const CA_FIELD: &str = "policy.aws_iot.server_root_ca_pem";
const THING_FIELD: &str = "policy.aws_iot.thing_name_template";
const ALPN_FIELD: &str = "policy.aws_iot.alpn_protocols";
const ROLE_FIELD: &str = "aws_role_arn";
/// Longest role ARN AWS accepts in a registration config.
const MAX_ROLE_ARN_LEN: usize = 2048;
/// Longest IAM role name.
const MAX_ROLE_NAME_LEN: usize = 64;

/// The IoT policy file when the region and the account are both known: ready to create.
pub const IOT_POLICY_FILE: &str = "aws-iot-policy.json";
/// The IoT policy file when the region or the account is missing: a template to complete.
pub const IOT_POLICY_TEMPLATE_FILE: &str = "aws-iot-policy.template.json";
/// The top-level key of [`IOT_POLICY_TEMPLATE_FILE`] that says it is a template and what to
/// fill in. Not an element of AWS's policy grammar (Version, Id, Statement).
pub const TEMPLATE_NOTE_KEY: &str = "oxroot:template";
/// The JITP registration config file.
pub const JITP_FILE: &str = "jitp-template.json";

/// AWS IoT parameters of a stored policy, validated and with defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsIotParams {
    /// Device data endpoint host, `<prefix>-ats.iot.<region>.amazonaws.com` or a custom domain.
    pub endpoint_host: String,
    /// TCP port, 8883 by default.
    pub port: u16,
    /// The operator's trust anchors for AWS's server certificate, re-encoded as PEM
    /// certificates only.
    pub server_root_ca_pem: String,
    /// Thing name (= MQTT client ID) template, `{device_id}` by default.
    pub thing_name_template: String,
    /// First topic level of device topics, `devices` by default.
    pub topic_root: String,
    /// Region in the exported policy's ARNs; empty for any (`*`).
    pub aws_region: String,
    /// 12-digit account ID in the exported policy's ARNs; empty for any (`*`).
    pub aws_account_id: String,
    /// ALPN protocol IDs handed to devices; `x-amzn-mqtt-ca` by default on port 443.
    pub alpn_protocols: Vec<String>,
}

/// Characters AWS allows in a thing name: `[a-zA-Z0-9:_-]`.
const THING_NAME: template::Alphabet = template::Alphabet {
    allows: |c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'),
    describe: "A-Z a-z 0-9 : _ - (an AWS thing name)",
};

impl AwsIotParams {
    /// Validates the proto parameters; `owner` is needed to check the thing name template.
    pub(super) fn from_proto(
        params: &v1::AwsIotPolicyParams,
        owner: &str,
    ) -> Result<Self, PolicyError> {
        validate::host("policy.aws_iot.endpoint_host", &params.endpoint_host)?;
        let port = validate::port(
            "policy.aws_iot.port",
            params.port,
            super::DEFAULT_MQTT_TLS_PORT,
        )?;
        if params.server_root_ca_pem.is_empty() {
            return Err(PolicyError::new(
                CA_FIELD,
                "is required: the PEM root you trust for AWS's server certificate, \
                 normally Amazon Root CA 1",
            ));
        }
        let server_root_ca_pem = validate::certificates_pem(CA_FIELD, &params.server_root_ca_pem)?;

        let thing_name_template = if params.thing_name_template.is_empty() {
            super::DEFAULT_SUBJECT_CN_TEMPLATE.to_owned()
        } else {
            params.thing_name_template.clone()
        };
        template::check(&thing_name_template, owner, THING_NAME)
            .map_err(|message| PolicyError::new(THING_FIELD, message))?;
        let sample = template::render(&thing_name_template, &super::sample_device_id(), owner);
        if sample.len() > MAX_THING_NAME_LEN {
            return Err(PolicyError::new(
                THING_FIELD,
                format!(
                    "renders to {} characters; a thing name has at most {MAX_THING_NAME_LEN}",
                    sample.len()
                ),
            ));
        }

        let topic_root = validate::topic_level(
            "policy.aws_iot.topic_root",
            &params.topic_root,
            super::DEFAULT_TOPIC_ROOT,
        )?;
        check_region(&params.aws_region)?;
        check_account_id(&params.aws_account_id)?;
        let alpn_protocols = alpn_protocols(&params.alpn_protocols, port)?;
        Ok(Self {
            endpoint_host: params.endpoint_host.clone(),
            port,
            server_root_ca_pem,
            thing_name_template,
            topic_root,
            aws_region: params.aws_region.clone(),
            aws_account_id: params.aws_account_id.clone(),
            alpn_protocols,
        })
    }

    pub(super) fn to_proto(&self) -> v1::AwsIotPolicyParams {
        v1::AwsIotPolicyParams {
            endpoint_host: self.endpoint_host.clone(),
            port: self.port.into(),
            server_root_ca_pem: self.server_root_ca_pem.clone(),
            thing_name_template: self.thing_name_template.clone(),
            topic_root: self.topic_root.clone(),
            aws_region: self.aws_region.clone(),
            aws_account_id: self.aws_account_id.clone(),
            alpn_protocols: self.alpn_protocols.clone(),
        }
    }

    /// The device's thing name, which is also its MQTT client ID.
    #[must_use]
    pub fn thing_name(&self, device_id: &DeviceId, owner: &str) -> String {
        template::render(&self.thing_name_template, device_id, owner)
    }

    pub(super) fn endpoint(&self, device_id: &DeviceId, owner: &str) -> v1::AwsIotEndpoint {
        let thing_name = self.thing_name(device_id, owner);
        v1::AwsIotEndpoint {
            host: self.endpoint_host.clone(),
            port: self.port.into(),
            topic_prefix: format!("{}/{thing_name}/", self.topic_root),
            client_id: thing_name,
            server_root_ca_pem: self.server_root_ca_pem.clone(),
            alpn_protocols: self.alpn_protocols.clone(),
        }
    }

    /// The least-privilege IoT policy: connect only as the attached thing whose name is the
    /// client ID, publish, receive and subscribe only below `<topic_root>/<thing name>/`.
    #[must_use]
    pub fn iot_policy_document(&self) -> serde_json::Value {
        let region = non_empty_or_any(&self.aws_region);
        let account = non_empty_or_any(&self.aws_account_id);
        let arn = |resource: String| format!("arn:aws:iot:{region}:{account}:{resource}");
        let own_topics = format!("{}/{THING_NAME_VARIABLE}/*", self.topic_root);
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ConnectAsAttachedThing",
                    "Effect": "Allow",
                    "Action": "iot:Connect",
                    "Resource": arn(format!("client/{THING_NAME_VARIABLE}")),
                    // Without this a certificate could connect under any thing's name.
                    "Condition": { "Bool": { "iot:Connection.Thing.IsAttached": "true" } }
                },
                {
                    "Sid": "PublishReceiveOwnTopics",
                    "Effect": "Allow",
                    "Action": ["iot:Publish", "iot:Receive"],
                    "Resource": arn(format!("topic/{own_topics}"))
                },
                {
                    "Sid": "SubscribeOwnTopics",
                    "Effect": "Allow",
                    "Action": "iot:Subscribe",
                    "Resource": arn(format!("topicfilter/{own_topics}"))
                }
            ]
        })
    }

    /// Whether the exported IoT policy can name exact ARNs: the policy has both the region and
    /// the account.
    #[must_use]
    pub fn iot_policy_is_complete(&self) -> bool {
        !self.aws_region.is_empty() && !self.aws_account_id.is_empty()
    }

    /// The IoT policy artefact: [`IOT_POLICY_FILE`] when complete, otherwise
    /// [`IOT_POLICY_TEMPLATE_FILE`] with the [`TEMPLATE_NOTE_KEY`] note naming what is missing.
    fn iot_policy_artifact(&self, policy_name: &str) -> v1::Artifact {
        let mut document = self.iot_policy_document();
        if self.iot_policy_is_complete() {
            return super::json_artifact(
                IOT_POLICY_FILE,
                &document,
                format!(
                    "Least-privilege AWS IoT policy: create it as \"{policy_name}\" and attach it \
                     to each device certificate"
                ),
            );
        }
        let missing = match (self.aws_region.is_empty(), self.aws_account_id.is_empty()) {
            (true, true) => "the AWS region and account ID",
            (true, false) => "the AWS region",
            _ => "the AWS account ID",
        };
        let note = format!(
            "TEMPLATE, not ready to create: the oxroot policy does not name {missing}, so the \
             ARNs below use * in their place. Replace each * between \"arn:aws:iot:\" and the \
             resource type with your region and 12-digit account ID and delete this key, or set \
             aws_region and aws_account_id in the oxroot policy and export again to get \
             {IOT_POLICY_FILE}."
        );
        if let Some(fields) = document.as_object_mut() {
            // First, so that a reader sees it before the statements.
            let statements = std::mem::take(fields);
            fields.insert(TEMPLATE_NOTE_KEY.to_owned(), note.into());
            fields.extend(statements);
        }
        super::json_artifact(
            IOT_POLICY_TEMPLATE_FILE,
            &document,
            format!(
                "TEMPLATE of the least-privilege AWS IoT policy \"{policy_name}\": {missing} \
                 missing, fill in the ARNs and remove \"{TEMPLATE_NOTE_KEY}\" before creating it"
            ),
        )
    }

    /// The JITP provisioning template body (a thing named after the certificate CN, the
    /// certificate activated, the exported IoT policy attached).
    fn jitp_template_body(spec: &PolicySpec) -> serde_json::Value {
        json!({
            "Parameters": {
                "AWS::IoT::Certificate::CommonName": { "Type": "String" },
                "AWS::IoT::Certificate::Id": { "Type": "String" }
            },
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": { "ThingName": { "Ref": "AWS::IoT::Certificate::CommonName" } }
                },
                "certificate": {
                    "Type": "AWS::IoT::Certificate",
                    "Properties": {
                        "CertificateId": { "Ref": "AWS::IoT::Certificate::Id" },
                        "Status": "ACTIVE"
                    }
                },
                "policy": {
                    "Type": "AWS::IoT::Policy",
                    "Properties": { "PolicyName": spec.name }
                }
            }
        })
    }

    /// The complete JITP registration config of `RegisterCACertificate` for `role_arn`
    /// (`{"templateBody": <the body as a JSON string>, "roleArn": ...}`, the CLI's
    /// `--registration-config` form). JITP names the thing from certificate fields, so the
    /// thing name must be the certificate's CN.
    fn jitp_registration_config(
        &self,
        spec: &PolicySpec,
        role_arn: &str,
    ) -> Result<serde_json::Value, PolicyError> {
        check_role_arn(role_arn, &self.aws_account_id)?;
        if self.thing_name_template != spec.subject_cn_template {
            return Err(PolicyError::new(
                ROLE_FIELD,
                format!(
                    "just-in-time provisioning names the thing after the certificate's CN, but \
                     this policy's thing name template {:?} is not its CN template {:?}",
                    self.thing_name_template, spec.subject_cn_template
                ),
            ));
        }
        Ok(json!({
            "templateBody": Self::jitp_template_body(spec).to_string(),
            "roleArn": role_arn,
        }))
    }

    pub(super) fn artifacts(
        &self,
        spec: &PolicySpec,
        ca: &CertificateAuthority,
        registration_code: &str,
        role_arn: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<v1::Artifact>, PolicyError> {
        // Checked before anything is signed, so a refused request costs no certificate.
        let jitp = if role_arn.is_empty() {
            None
        } else {
            Some(self.jitp_registration_config(spec, role_arn)?)
        };
        let mut artifacts = vec![
            self.iot_policy_artifact(&spec.name),
            super::ca_certificate_artifact(
                ca,
                "The issuing CA that signs the device certificates: register it with \
                 RegisterCACertificate (for just-in-time provisioning, export with a role ARN \
                 to get its registration config)",
            ),
        ];
        if !registration_code.is_empty() {
            artifacts.push(super::verification_certificate_artifact(
                ca,
                "aws_registration_code",
                registration_code,
                now,
                "Verification certificate for RegisterCACertificate (CN = registration code)",
            )?);
        }
        if let Some(jitp) = jitp {
            artifacts.push(super::json_artifact(
                JITP_FILE,
                &jitp,
                format!(
                    "Registration config for just-in-time provisioning (thing named after the \
                     certificate CN, IoT policy \"{}\" attached, role {role_arn}): pass it as \
                     RegisterCACertificate's --registration-config with \
                     --allow-auto-registration",
                    spec.name
                ),
            ));
        }
        Ok(artifacts)
    }
}

/// An IAM role ARN as a registration config takes it (AWS's pattern
/// `arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+`, 20 to 2,048 characters),
/// with a partition, a role name of 1 to 64 characters, and, when the policy names the
/// account, that account: JITP assumes a role of the account the CA is registered in.
fn check_role_arn(arn: &str, policy_account: &str) -> Result<(), PolicyError> {
    let invalid = || {
        PolicyError::new(
            ROLE_FIELD,
            "must be an IAM role ARN, arn:aws:iam::<12-digit account>:role/<name>",
        )
    };
    if !(20..=MAX_ROLE_ARN_LEN).contains(&arn.len()) {
        return Err(invalid());
    }
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid());
    };
    let partition_ok = partition
        .strip_prefix("aws")
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_alphabetic() || c == '-'));
    let account_ok = account.len() == 12 && account.chars().all(|c| c.is_ascii_digit());
    let path = resource.strip_prefix("role/").ok_or_else(invalid)?;
    let name = path.rsplit('/').next().unwrap_or_default();
    let path_ok = path.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-' | '/')
    });
    if !(partition_ok && account_ok && path_ok && (1..=MAX_ROLE_NAME_LEN).contains(&name.len())) {
        return Err(invalid());
    }
    if !policy_account.is_empty() && account != policy_account {
        return Err(PolicyError::new(
            ROLE_FIELD,
            format!(
                "names account {account}, but the policy's AWS account is {policy_account}: \
                 JITP assumes a role of the account the CA is registered in"
            ),
        ));
    }
    Ok(())
}

fn non_empty_or_any(value: &str) -> &str {
    if value.is_empty() { "*" } else { value }
}

/// An AWS region name such as `eu-west-1`: lowercase letters, digits and inner hyphens.
fn check_region(region: &str) -> Result<(), PolicyError> {
    let valid = region.is_empty()
        || (region.len() <= 32
            && region.starts_with(|c: char| c.is_ascii_lowercase())
            && !region.ends_with('-')
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    if valid {
        Ok(())
    } else {
        Err(PolicyError::new(
            "policy.aws_iot.aws_region",
            "must be an AWS region name such as eu-west-1, or empty for any",
        ))
    }
}

fn check_account_id(account: &str) -> Result<(), PolicyError> {
    if account.is_empty() || (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit())) {
        Ok(())
    } else {
        Err(PolicyError::new(
            "policy.aws_iot.aws_account_id",
            "must be 12 digits, or empty for any",
        ))
    }
}

/// ALPN IDs: 1 to 255 visible ASCII characters each (RFC 7301 allows any bytes, but these go
/// to device configuration), no duplicates. Port 443 needs `x-amzn-mqtt-ca`, so that is the
/// default there.
fn alpn_protocols(protocols: &[String], port: u16) -> Result<Vec<String>, PolicyError> {
    if protocols.is_empty() && port == 443 {
        return Ok(vec![ALPN_MQTT_ON_443.to_owned()]);
    }
    if protocols.len() > MAX_ALPN_PROTOCOLS {
        return Err(PolicyError::new(
            ALPN_FIELD,
            format!("must hold at most {MAX_ALPN_PROTOCOLS} protocols"),
        ));
    }
    for (index, protocol) in protocols.iter().enumerate() {
        let valid =
            (1..=255).contains(&protocol.len()) && protocol.chars().all(|c| c.is_ascii_graphic());
        if !valid {
            return Err(PolicyError::new(
                ALPN_FIELD,
                format!("protocol {index} must be 1 to 255 visible ASCII characters"),
            ));
        }
        if protocols[..index].contains(protocol) {
            return Err(PolicyError::new(
                ALPN_FIELD,
                format!("protocol {protocol:?} is listed twice"),
            ));
        }
    }
    Ok(protocols.to_vec())
}
