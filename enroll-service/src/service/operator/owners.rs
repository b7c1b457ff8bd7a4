//! CreateOwner, GetOwner, ListOwners, ImportOwnerCa and RotateOwnerCa: owners (tenants) and
//! their certificate authorities. The CAs themselves are the service's
//! [`Authorities`](crate::service::Authorities); this is who may ask for what.

use oxroot_proto::v1;

use super::paging::Pager;
use super::{ADMINS, ANY_ROLE, OperatorService};
use crate::error::ServiceError;
use crate::model::{AuthorityState, CaMode, OwnerRecord};
use crate::pki::{Validity, certs_pem_to_der};
use crate::service::{Caller, PLATFORM_ISSUER};
use crate::wire::timestamp;

/// The wire form of an owner and its CAs.
fn owner_to_proto(owner: &OwnerRecord, platform_root_pem: &str, platform_pem: &str) -> v1::Owner {
    let mut issuing_cas: Vec<v1::IssuingCa> = owner
        .issuing
        .iter()
        .rev()
        .map(|ca| {
            let validity = Validity::of_certificate_pem(&ca.certificate_pem);
            v1::IssuingCa {
                id: ca.id.clone(),
                state: match ca.state {
                    AuthorityState::Pending => v1::IssuingCaState::Pending,
                    AuthorityState::Active => v1::IssuingCaState::Active,
                    AuthorityState::Retired => v1::IssuingCaState::Retired,
                } as i32,
                certificate_pem: ca.certificate_pem.clone(),
                chain_pems: certs_pem_to_der("chain", &ca.chain_pem)
                    .map(|ders| {
                        ders.iter()
                            .map(|d| crate::pki::certificate_pem(d))
                            .collect()
                    })
                    .unwrap_or_default(),
                csr_pem: ca.csr_pem.clone(),
                key_location: ca.key.location(),
                not_before: validity.map(|v| timestamp(v.not_before)),
                not_after: validity.map(|v| timestamp(v.not_after)),
            }
        })
        .collect();
    // A migrated owner that rotated has two roots in its trust; root_pem is its own.
    let root_pem = match (&owner.root, owner.ca_mode) {
        (Some(root), _) => root.certificate_pem.clone(),
        (None, CaMode::SharedPlatform) => platform_root_pem.to_owned(),
        // Bring your own CA: the root is the last certificate of an issuing CA's chain.
        (None, _) => owner
            .issuing
            .iter()
            .rev()
            .find_map(|ca| {
                certs_pem_to_der("chain", &ca.chain_pem)
                    .ok()
                    .and_then(|ders| ders.last().map(|d| crate::pki::certificate_pem(d)))
            })
            .unwrap_or_default(),
    };
    if owner.ca_mode == CaMode::SharedPlatform {
        // A migrated owner's devices chain to the platform's CA: it issues until the owner's
        // first rotation and stays in the owner's trust, retired, after.
        let validity = Validity::of_certificate_pem(platform_pem);
        let own_active = owner.active().is_some();
        issuing_cas.push(v1::IssuingCa {
            id: PLATFORM_ISSUER.to_owned(),
            state: if own_active {
                v1::IssuingCaState::Retired
            } else {
                v1::IssuingCaState::Active
            } as i32,
            certificate_pem: platform_pem.to_owned(),
            chain_pems: vec![platform_root_pem.to_owned()],
            csr_pem: String::new(),
            key_location: String::new(),
            not_before: validity.map(|v| timestamp(v.not_before)),
            not_after: validity.map(|v| timestamp(v.not_after)),
        });
    }
    v1::Owner {
        name: owner.name.clone(),
        ca_mode: match owner.ca_mode {
            CaMode::Managed => v1::CaMode::Managed,
            CaMode::OwnCa => v1::CaMode::OwnCa,
            CaMode::SharedPlatform => v1::CaMode::SharedPlatform,
        } as i32,
        root_pem,
        issuing_cas,
        created_at: Some(timestamp(owner.created_at)),
        created_by: owner.created_by.clone(),
    }
}

impl OperatorService {
    fn owner_view(&self, record: &OwnerRecord) -> v1::Owner {
        let platform = self.core.authorities().platform();
        owner_to_proto(record, &platform.root_pem(), &platform.certificate_pem())
    }

    /// The owner a request names, which the caller may see (others' owners look absent).
    async fn visible_owner(
        &self,
        caller: &Caller,
        requested: &str,
    ) -> Result<OwnerRecord, ServiceError> {
        let name = if requested.is_empty() && !caller.is_platform() {
            caller.owner.clone()
        } else {
            requested.to_owned()
        };
        if !caller.can_see(Some(&name)) {
            return Err(ServiceError::NotFound(format!("owner {name:?}")));
        }
        self.core
            .registry
            .owner(&name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("owner {name:?}")))
    }

    /// CreateOwner for an authenticated caller.
    pub(crate) async fn create_owner_as(
        &self,
        caller: &Caller,
        request: &v1::CreateOwnerRequest,
    ) -> Result<v1::CreateOwnerResponse, ServiceError> {
        caller.require("CreateOwner", ADMINS)?;
        if !caller.is_platform() {
            return Err(ServiceError::PermissionDenied(
                "owners are created by platform admins".into(),
            ));
        }
        let mode = match v1::CaMode::try_from(request.ca_mode) {
            Ok(v1::CaMode::Unspecified | v1::CaMode::Managed) => CaMode::Managed,
            Ok(v1::CaMode::OwnCa) => CaMode::OwnCa,
            Ok(v1::CaMode::SharedPlatform) | Err(_) => {
                return Err(ServiceError::invalid(
                    "ca_mode",
                    "a new owner's CA is CA_MODE_MANAGED or CA_MODE_OWN_CA",
                ));
            }
        };
        super::check_text("organisation", &request.organisation, 64)?;
        let record = self
            .core
            .authorities()
            .create_owner(&request.name, mode, &request.organisation, &caller.actor())
            .await?;
        tracing::info!(operator = %caller.name, owner = %record.name, ?mode, "owner created");
        Ok(v1::CreateOwnerResponse {
            owner: Some(self.owner_view(&record)),
        })
    }

    /// GetOwner for an authenticated caller.
    pub(crate) async fn get_owner_as(
        &self,
        caller: &Caller,
        request: &v1::GetOwnerRequest,
    ) -> Result<v1::GetOwnerResponse, ServiceError> {
        caller.require("GetOwner", ANY_ROLE)?;
        let record = self.visible_owner(caller, &request.name).await?;
        Ok(v1::GetOwnerResponse {
            owner: Some(self.owner_view(&record)),
        })
    }

    /// ListOwners for an authenticated caller.
    pub(crate) async fn list_owners_as(
        &self,
        caller: &Caller,
        request: &v1::ListOwnersRequest,
    ) -> Result<v1::ListOwnersResponse, ServiceError> {
        caller.require("ListOwners", ANY_ROLE)?;
        if !caller.is_platform() {
            let own = self.core.registry.owner(&caller.owner).await?;
            return Ok(v1::ListOwnersResponse {
                owners: own.iter().map(|o| self.owner_view(o)).collect(),
                next_page_token: String::new(),
            });
        }
        let pager = Pager::new("ListOwners", &[], request.page_size);
        let start: Option<String> = pager.resume(&request.page_token)?;
        let registry = self.core.registry.as_ref();
        let (owners, next) = pager
            .collect(
                start,
                |after: Option<String>, n| async move {
                    Ok(registry.owners(after.as_deref(), n).await?)
                },
                |o: &OwnerRecord| o.name.clone(),
                |_| true,
            )
            .await?;
        Ok(v1::ListOwnersResponse {
            owners: owners.iter().map(|o| self.owner_view(o)).collect(),
            next_page_token: pager.token(next.as_ref()),
        })
    }

    /// ImportOwnerCa for an authenticated caller.
    pub(crate) async fn import_owner_ca_as(
        &self,
        caller: &Caller,
        request: &v1::ImportOwnerCaRequest,
    ) -> Result<v1::ImportOwnerCaResponse, ServiceError> {
        caller.require("ImportOwnerCa", ADMINS)?;
        let owner = self.visible_owner(caller, &request.owner).await?;
        let record = self
            .core
            .authorities()
            .import_certificate(
                &owner.name,
                &request.certificate_pem,
                &request.chain_pem,
                &caller.actor(),
            )
            .await?;
        Ok(v1::ImportOwnerCaResponse {
            owner: Some(self.owner_view(&record)),
        })
    }

    /// RotateOwnerCa for an authenticated caller.
    pub(crate) async fn rotate_owner_ca_as(
        &self,
        caller: &Caller,
        request: &v1::RotateOwnerCaRequest,
    ) -> Result<v1::RotateOwnerCaResponse, ServiceError> {
        caller.require("RotateOwnerCa", ADMINS)?;
        // "*" is no owner's record: it answers NOT_FOUND like any unknown owner.
        let owner = self.visible_owner(caller, &request.owner).await?;
        let record = self
            .core
            .authorities()
            .rotate(&owner.name, &caller.actor())
            .await?;
        tracing::info!(operator = %caller.name, owner = %record.name, "issuing CA rotated");
        Ok(v1::RotateOwnerCaResponse {
            owner: Some(self.owner_view(&record)),
        })
    }
}
