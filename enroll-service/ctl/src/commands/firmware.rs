//! `firmware sign | get | list`.

use oxroot_proto::v1::{
    GetFirmwareRequest, ListFirmwareRequest, ListFirmwareResponse, SignFirmwareRequest,
};

use oxroot_client::release::Release;

use super::export::write_file;
use super::{Ctx, PAGE_SIZE, all_pages, owner};
use crate::args::{FirmwareCommand, FirmwareSignArgs};
use crate::error::CtlError;
use crate::output::json;
use crate::view;

pub(super) async fn run(command: FirmwareCommand, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    match command {
        FirmwareCommand::Sign(args) => sign(args, ctx).await,
        FirmwareCommand::Get {
            name,
            image_version: version,
            out,
            release,
            force,
            owner: o,
        } => {
            let response = ctx
                .client()
                .await?
                .get_firmware(GetFirmwareRequest {
                    owner: owner(o),
                    name,
                    version,
                    include_image: out.is_some() || release.is_some(),
                })
                .await
                .map_err(CtlError::rpc("GetFirmware"))?
                .into_inner();
            let firmware = response
                .firmware
                .as_ref()
                .ok_or_else(|| CtlError::BadAnswer("GetFirmware without firmware".into()))?;
            if let Some(path) = &out {
                write_file(path, &response.image, force)?;
            }
            if let Some(dir) = &release {
                std::fs::create_dir_all(dir).map_err(CtlError::io(dir))?;
                let files = Release::of(firmware, response.image.clone());
                for (name, content) in files.files() {
                    write_file(&dir.join(name), content, force)?;
                }
            }
            ctx.emit(
                || json::message(firmware),
                |out| out.fields(&view::firmware::fields(firmware)),
            )
        }
        FirmwareCommand::List { owner: o, name } => {
            let client = ctx.client().await?;
            let request = ListFirmwareRequest {
                owner: owner(o),
                name: name.unwrap_or_default(),
                page_size: PAGE_SIZE,
                page_token: String::new(),
            };
            let firmware = all_pages("ListFirmware", None, |page_token| {
                let mut client = client.clone();
                let request = ListFirmwareRequest {
                    page_token,
                    ..request.clone()
                };
                async move {
                    let page = client.list_firmware(request).await?.into_inner();
                    Ok((page.firmware, page.next_page_token))
                }
            })
            .await?;
            let all = ListFirmwareResponse {
                firmware,
                next_page_token: String::new(),
            };
            ctx.emit(
                || json::message(&all),
                |out| out.table(&view::firmware::table(&all.firmware)),
            )
        }
    }
}

async fn sign(args: FirmwareSignArgs, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    // Checked before the upload: an --out that exists is refused without --force anyway.
    if let Some(path) = &args.out
        && !args.force
        && path.exists()
    {
        return Err(CtlError::Exists(path.clone()));
    }
    let payload = std::fs::read(&args.payload).map_err(CtlError::io(&args.payload))?;
    let mut client = ctx.client().await?;
    let response = client
        .sign_firmware(SignFirmwareRequest {
            owner: owner(args.owner),
            name: args.name.clone(),
            version: args.image_version,
            security_counter: args.security_counter,
            policy_name: args.policy_name,
            payload,
        })
        .await
        .map_err(CtlError::rpc("SignFirmware"))?
        .into_inner();
    let firmware = response
        .firmware
        .as_ref()
        .ok_or_else(|| CtlError::BadAnswer("SignFirmware without firmware".into()))?;
    if let Some(path) = &args.out {
        let image = client
            .get_firmware(GetFirmwareRequest {
                owner: firmware.owner.clone(),
                name: firmware.name.clone(),
                version: firmware.version.clone(),
                include_image: true,
            })
            .await
            .map_err(CtlError::rpc("GetFirmware"))?
            .into_inner()
            .image;
        write_file(path, &image, args.force)?;
    }
    ctx.emit(
        || json::message(firmware),
        |out| {
            out.line(&format!(
                "signed {} {} for policy {}",
                firmware.name, firmware.version, firmware.policy_name
            ))?;
            out.fields(&view::firmware::fields(firmware))
        },
    )
}
