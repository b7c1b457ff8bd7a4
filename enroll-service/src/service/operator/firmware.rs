//! SignFirmware, GetFirmware, ListFirmware: firmware releases (see [`crate::firmware`]).
//!
//! Signing is an admin's act: the image will run on every device of the policy that installs
//! it. A name and version are signed once; what was signed is kept (the signed file beside its
//! record) and every signature is audited with the measurement it produced.

use rot_core::FirmwareMeasurement;
use rot_core::firmware::manifest::{ImageVersion, Manifest};
use time::OffsetDateTime;

use oxroot_proto::v1;

use super::paging::Pager;
use super::policies::check_policy_name;
use super::{ADMINS, ANY_ROLE, OperatorService, operator_audit};
use crate::error::ServiceError;
use crate::firmware::mcuboot::{self, ImageRequest};
use crate::model::{FirmwareRecord, FirmwareSignerRecord};
use crate::service::authorities::{FirmwareSigner, use_key_off_runtime};
use crate::service::{Caller, random_hex};
use crate::store::{Change, Conflict, Guard, Op, StoreError, commit};
use crate::wire::timestamp;

/// A version as the request wrote it; its text form is canonical (`+build` always written).
pub(super) fn parse_version(field: &str, text: &str) -> Result<ImageVersion, ServiceError> {
    text.parse()
        .map_err(|e: rot_core::firmware::manifest::InvalidVersion| {
            ServiceError::invalid(field, e.to_string())
        })
}

/// The API view of a firmware record and its signer.
fn firmware_view(record: &FirmwareRecord, signer: Option<&FirmwareSignerRecord>) -> v1::Firmware {
    v1::Firmware {
        owner: record.owner.clone(),
        name: record.name.clone(),
        version: record.version.clone(),
        security_counter: record.security_counter,
        policy_name: record.policy_name.clone(),
        measurement: record.measurement.clone(),
        image_size: record.image_size,
        payload_size: record.payload_size,
        manifest: hex::decode(&record.manifest_hex).unwrap_or_default(),
        manifest_signature: hex::decode(&record.manifest_signature_hex).unwrap_or_default(),
        signer_certificate_pem: signer
            .map(|s| s.certificate_pem.clone())
            .unwrap_or_default(),
        signer_chain_pem: signer.map(|s| s.chain_pem.clone()).unwrap_or_default(),
        created_at: Some(timestamp(record.created_at)),
        created_by: record.created_by.clone(),
    }
}

impl OperatorService {
    /// SignFirmware for an authenticated caller.
    pub(crate) async fn sign_firmware_as(
        &self,
        caller: &Caller,
        request: v1::SignFirmwareRequest,
    ) -> Result<v1::SignFirmwareResponse, ServiceError> {
        caller.require("SignFirmware", ADMINS)?;
        let owner = caller.owner_for("owner", &request.owner)?;
        check_policy_name("name", &request.name)?;
        check_policy_name("policy_name", &request.policy_name)?;
        let version = parse_version("version", &request.version)?;
        let version_text = version.to_string();
        if request.payload.is_empty() || request.payload.len() > mcuboot::MAX_PAYLOAD_BYTES {
            return Err(ServiceError::invalid(
                "payload",
                format!("must be 1 to {} bytes", mcuboot::MAX_PAYLOAD_BYTES),
            ));
        }
        let registry = self.core.registry.as_ref();
        if registry
            .policy(&owner, &request.policy_name)
            .await?
            .is_none()
        {
            return Err(ServiceError::NotFound(format!(
                "policy {:?} of owner {owner:?}",
                request.policy_name
            )));
        }
        if registry
            .firmware(&owner, &request.name, &version_text)
            .await?
            .is_some()
        {
            return Err(already_signed(&owner, &request.name, &version_text));
        }
        let signer = self
            .core
            .authorities()
            .firmware_signer(&owner, &caller.actor())
            .await?;
        let signed = sign_release(&signer, &owner, &request, version).await?;
        let security_counter = request.security_counter;
        let now = OffsetDateTime::now_utc();
        let record = FirmwareRecord {
            owner: owner.clone(),
            name: request.name.clone(),
            version: version_text.clone(),
            security_counter,
            policy_name: request.policy_name.clone(),
            measurement: hex::encode(signed.digest),
            image_size: signed.image.len() as u64,
            payload_size: request.payload.len() as u64,
            manifest_hex: hex::encode(&signed.manifest),
            manifest_signature_hex: hex::encode(&signed.manifest_signature),
            signer: signer.record.id.clone(),
            created_at: now,
            created_by: caller.qualified_name(),
        };
        let subject = format!("firmware:{owner}/{}/{version_text}", request.name);
        let mut change = Change::new();
        change
            .guard(Guard::FirmwareAbsent {
                owner: owner.clone(),
                name: request.name.clone(),
                version: version_text.clone(),
            })
            .op(Op::PutFirmware {
                record: Box::new(record.clone()),
                image: signed.image,
            })
            .audit(
                operator_audit(
                    caller,
                    now,
                    &owner,
                    "firmware.sign",
                    subject,
                    &random_hex(12)?,
                )
                .detail("policy", request.policy_name.clone())
                .detail("security_counter", security_counter.to_string())
                .detail("measurement", record.measurement.clone())
                .detail("signer", signer.record.id.clone()),
            );
        match commit(registry, change).await {
            Ok(_) => {}
            Err(StoreError::Conflict(Conflict::FirmwareExists { .. })) => {
                return Err(already_signed(&owner, &request.name, &version_text));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(operator = %caller.name, %owner, name = %record.name, version = %record.version, measurement = %record.measurement, "firmware signed");
        Ok(v1::SignFirmwareResponse {
            firmware: Some(firmware_view(&record, Some(&signer.record))),
        })
    }

    /// GetFirmware for an authenticated caller.
    pub(crate) async fn get_firmware_as(
        &self,
        caller: &Caller,
        request: &v1::GetFirmwareRequest,
    ) -> Result<v1::GetFirmwareResponse, ServiceError> {
        caller.require("GetFirmware", ANY_ROLE)?;
        let owner = caller.owner_for("owner", &request.owner)?;
        check_policy_name("name", &request.name)?;
        let version = parse_version("version", &request.version)?.to_string();
        let registry = self.core.registry.as_ref();
        let not_found =
            || ServiceError::NotFound(format!("firmware {}/{} {version}", owner, request.name));
        let record = registry
            .firmware(&owner, &request.name, &version)
            .await?
            .ok_or_else(not_found)?;
        let signer = registry.firmware_signer(&owner).await?;
        let image = if request.include_image {
            registry
                .firmware_image(&owner, &request.name, &version)
                .await?
                .ok_or_else(not_found)?
        } else {
            Vec::new()
        };
        Ok(v1::GetFirmwareResponse {
            firmware: Some(firmware_view(&record, signer.as_ref())),
            image,
        })
    }

    /// ListFirmware for an authenticated caller.
    pub(crate) async fn list_firmware_as(
        &self,
        caller: &Caller,
        request: &v1::ListFirmwareRequest,
    ) -> Result<v1::ListFirmwareResponse, ServiceError> {
        caller.require("ListFirmware", ANY_ROLE)?;
        let owner = caller.owner_filter("owner", &request.owner)?;
        if !request.name.is_empty() {
            check_policy_name("name", &request.name)?;
        }
        let pager = Pager::new(
            "ListFirmware",
            &[owner.as_deref().unwrap_or_default(), &request.name],
            request.page_size,
        );
        let start: Option<(String, String, String)> = pager.resume(&request.page_token)?;
        let registry = self.core.registry.as_ref();
        let (records, next) = pager
            .collect(
                start,
                |after: Option<(String, String, String)>, n| {
                    let owner = owner.as_deref();
                    async move {
                        let after = after
                            .as_ref()
                            .map(|(o, n, v)| (o.as_str(), n.as_str(), v.as_str()));
                        Ok(registry.firmwares(owner, after, n).await?)
                    }
                },
                |f: &FirmwareRecord| (f.owner.clone(), f.name.clone(), f.version.clone()),
                |f| request.name.is_empty() || f.name == request.name,
            )
            .await?;
        let mut firmware = Vec::with_capacity(records.len());
        for record in &records {
            let signer = registry.firmware_signer(&record.owner).await?;
            firmware.push(firmware_view(record, signer.as_ref()));
        }
        Ok(v1::ListFirmwareResponse {
            firmware,
            next_page_token: pager.token(next.as_ref()),
        })
    }
}

/// What one SignFirmware signed: the image, its SHA-256, the manifest and its signature.
struct SignedRelease {
    image: Vec<u8>,
    digest: [u8; 32],
    manifest: Vec<u8>,
    manifest_signature: Vec<u8>,
}

/// Signs the request's payload as an MCUboot image, then the manifest that names it, with the
/// owner's firmware-signing key (off the runtime when the key is in a token).
async fn sign_release(
    signer: &FirmwareSigner,
    owner: &str,
    request: &v1::SignFirmwareRequest,
    version: ImageVersion,
) -> Result<SignedRelease, ServiceError> {
    let security_counter = request.security_counter;
    let payload = request.payload.clone();
    let image = use_key_off_runtime(&signer.key, move |key| {
        mcuboot::sign(
            &ImageRequest {
                payload: &payload,
                version,
                security_counter,
            },
            key,
        )
    })
    .await??;
    let digest = *FirmwareMeasurement::of_image(&image).as_bytes();
    let manifest = Manifest {
        owner,
        policy: &request.policy_name,
        image_name: &request.name,
        version,
        security_counter,
        image_digest: digest,
        image_size: u32::try_from(image.len())
            .map_err(|_| ServiceError::Internal("a signed image outgrew u32".into()))?,
    }
    .encode()
    .map_err(|e| ServiceError::Internal(format!("manifest: {e}")))?
    .as_bytes()
    .to_vec();
    let to_sign = manifest.clone();
    let manifest_signature = use_key_off_runtime(&signer.key, move |key| key.sign(&to_sign))
        .await?
        .map_err(|e| ServiceError::from(crate::pki::PkiError::Signer(e)))?;
    Ok(SignedRelease {
        image,
        digest,
        manifest,
        manifest_signature,
    })
}

fn already_signed(owner: &str, name: &str, version: &str) -> ServiceError {
    ServiceError::AlreadyExists(format!(
        "firmware {owner}/{name} {version} was signed before; a version is signed once"
    ))
}
