//! `owner create | get | list | import-ca | rotate`.
//!
//! Files written here are public (a CSR, a root certificate): the keys they belong to stay in
//! the service's key backend.

use std::path::Path;

use oxroot_proto::v1::{
    CaMode, CreateOwnerRequest, GetOwnerRequest, ImportOwnerCaRequest, IssuingCaState,
    ListOwnersRequest, ListOwnersResponse, Owner, RotateOwnerCaRequest,
};
use serde_json::json;

use super::export::write_file;
use super::{Ctx, PAGE_SIZE, all_pages, owner};
use crate::args::OwnerCommand;
use crate::connect::check_certificates;
use crate::error::CtlError;
use crate::output::json;
use crate::view;

pub(super) async fn run(command: OwnerCommand, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    match command {
        OwnerCommand::Create {
            name,
            own_ca,
            organisation,
            csr_out,
        } => {
            let mode = if own_ca {
                CaMode::OwnCa
            } else {
                CaMode::Managed
            };
            let request = CreateOwnerRequest {
                name,
                ca_mode: mode as i32,
                organisation: organisation.unwrap_or_default(),
            };
            create(request, csr_out.as_deref(), ctx).await
        }
        OwnerCommand::Get { name, root_out } => get(owner(name), root_out.as_deref(), ctx).await,
        OwnerCommand::List => list(ctx).await,
        OwnerCommand::ImportCa {
            owner: o,
            certificate,
            chain,
        } => {
            let request = ImportOwnerCaRequest {
                owner: owner(o),
                certificate_pem: read_certificates(&certificate)?,
                chain_pem: read_certificates(&chain)?,
            };
            import_ca(request, ctx).await
        }
        OwnerCommand::Rotate { owner: o, csr_out } => {
            rotate(owner(o), csr_out.as_deref(), ctx).await
        }
    }
}

async fn create(
    request: CreateOwnerRequest,
    csr_out: Option<&Path>,
    ctx: &mut Ctx<'_>,
) -> Result<(), CtlError> {
    refuse_existing(csr_out)?;
    let response = ctx
        .client()
        .await?
        .create_owner(request)
        .await
        .map_err(CtlError::rpc("CreateOwner"))?
        .into_inner();
    let created = answered_owner(response.owner.as_ref(), "CreateOwner")?;
    let written = write_pending_csr(created, csr_out)?;
    ctx.emit(
        || json::message_with(&response, written_field(written)),
        |out| view::owner::created(out, created, written),
    )
}

async fn get(name: String, root_out: Option<&Path>, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let response = ctx
        .client()
        .await?
        .get_owner(GetOwnerRequest { name })
        .await
        .map_err(CtlError::rpc("GetOwner"))?
        .into_inner();
    let found = answered_owner(response.owner.as_ref(), "GetOwner")?;
    if let Some(path) = root_out {
        check_certificates(path, found.root_pem.as_bytes())?;
        write_file(path, found.root_pem.as_bytes(), true)?;
    }
    ctx.emit(
        || json::message_with(&response, written_field(root_out)),
        |out| out.fields(&view::owner::fields(found)),
    )
}

async fn list(ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let client = ctx.client().await?;
    let owners = all_pages("ListOwners", None, |page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_owners(ListOwnersRequest {
                    page_size: PAGE_SIZE,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.owners, page.next_page_token))
        }
    })
    .await?;
    let all = ListOwnersResponse {
        owners,
        next_page_token: String::new(),
    };
    ctx.emit(
        || json::message(&all),
        |out| out.table(&view::owner::table(&all.owners)),
    )
}

async fn import_ca(request: ImportOwnerCaRequest, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let response = ctx
        .client()
        .await?
        .import_owner_ca(request)
        .await
        .map_err(CtlError::rpc("ImportOwnerCa"))?
        .into_inner();
    let imported = answered_owner(response.owner.as_ref(), "ImportOwnerCa")?;
    ctx.emit(
        || json::message(&response),
        |out| view::owner::imported(out, imported),
    )
}

async fn rotate(owner: String, csr_out: Option<&Path>, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    refuse_existing(csr_out)?;
    if csr_out.is_none() {
        // An own-CA rotation makes a key whose CSR must reach the owner's root: ask first, so
        // that it is never made with nowhere to write its CSR.
        let current = ctx
            .client()
            .await?
            .get_owner(GetOwnerRequest {
                name: owner.clone(),
            })
            .await
            .map_err(CtlError::rpc("GetOwner"))?
            .into_inner();
        if answered_owner(current.owner.as_ref(), "GetOwner")?.ca_mode == CaMode::OwnCa as i32 {
            return Err(CtlError::Usage(
                "this owner's root is its own: the new issuing CA's CSR needs --csr-out FILE"
                    .into(),
            ));
        }
    }
    let response = ctx
        .client()
        .await?
        .rotate_owner_ca(RotateOwnerCaRequest { owner })
        .await
        .map_err(CtlError::rpc("RotateOwnerCa"))?
        .into_inner();
    let rotated = answered_owner(response.owner.as_ref(), "RotateOwnerCa")?;
    let written = write_pending_csr(rotated, csr_out)?;
    ctx.emit(
        || json::message_with(&response, written_field(written)),
        |out| view::owner::rotated(out, rotated, written),
    )
}

fn answered_owner<'a>(owner: Option<&'a Owner>, rpc: &str) -> Result<&'a Owner, CtlError> {
    owner.ok_or_else(|| CtlError::BadAnswer(format!("{rpc} without an owner")))
}

/// Writes the CSR of the owner's pending issuing CA, if there is one, to `path`. A pending
/// CSR with nowhere to go is an error: the owner's root cannot sign what it never sees (it can
/// still be fetched with `owner get --json`).
fn write_pending_csr<'a>(
    owner: &Owner,
    path: Option<&'a Path>,
) -> Result<Option<&'a Path>, CtlError> {
    let pending = owner
        .issuing_cas
        .iter()
        .find(|ca| ca.state == IssuingCaState::Pending as i32);
    match (pending, path) {
        (Some(ca), Some(path)) => {
            if !is_pem_request(&ca.csr_pem) {
                return Err(CtlError::BadAnswer(
                    "the pending issuing CA's CSR is not a PEM certificate request".into(),
                ));
            }
            write_file(path, ca.csr_pem.as_bytes(), false)?;
            Ok(Some(path))
        }
        (Some(_), None) => Err(CtlError::Usage(
            "the owner's new issuing CA waits for a certificate: --csr-out FILE writes its \
             CSR for the owner's root to sign"
                .into(),
        )),
        (None, _) => Ok(None),
    }
}

/// Checked before the call as well as by the write: an owner created or rotated whose CSR
/// then has nowhere to go is a needless detour through `owner get --json`.
fn refuse_existing(path: Option<&Path>) -> Result<(), CtlError> {
    match path {
        Some(path) if path.exists() => Err(CtlError::Exists(path.to_owned())),
        _ => Ok(()),
    }
}

/// One PEM certificate request, and nothing a terminal would act on.
fn is_pem_request(text: &str) -> bool {
    let text = text.trim_end();
    text.starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        && text.ends_with("-----END CERTIFICATE REQUEST-----")
        && text
            .bytes()
            .all(|b| b == b'\n' || b == b'\r' || (0x20..0x7f).contains(&b))
}

fn written_field(path: Option<&Path>) -> Vec<(&'static str, serde_json::Value)> {
    path.map(|p| ("path", json!(p.to_string_lossy())))
        .into_iter()
        .collect()
}

fn read_certificates(path: &Path) -> Result<String, CtlError> {
    let bytes = std::fs::read(path).map_err(CtlError::io(path))?;
    check_certificates(path, &bytes)?;
    String::from_utf8(bytes).map_err(|_| CtlError::Credential {
        path: path.to_owned(),
        problem: "not UTF-8 text".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pem_request_is_written() {
        assert!(is_pem_request(
            "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
        ));
        assert!(!is_pem_request(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        ));
        assert!(!is_pem_request(
            "-----BEGIN CERTIFICATE REQUEST-----\n\x1b[2J\n-----END CERTIFICATE REQUEST-----\n"
        ));
        assert!(!is_pem_request(""));
    }
}
