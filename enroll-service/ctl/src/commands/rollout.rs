//! `rollout create | get | list | advance | pause | resume | abort`.

use oxroot_proto::v1::{
    self, CreateRolloutRequest, GetRolloutRequest, ListRolloutsRequest, ListRolloutsResponse,
    RolloutStep, UpdateRolloutRequest,
};

use super::{Ctx, PAGE_SIZE, all_pages, owner};
use crate::args::{RolloutCommand, RolloutStepArgs};
use crate::error::CtlError;
use crate::output::json;
use crate::view;

pub(super) async fn run(command: RolloutCommand, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    match command {
        RolloutCommand::Create {
            name,
            image_version,
            batch,
            stages,
            failure_threshold,
            owner: o,
        } => {
            let rollout = ctx
                .client()
                .await?
                .create_rollout(CreateRolloutRequest {
                    owner: owner(o),
                    firmware_name: name,
                    firmware_version: image_version,
                    batch_id: batch.unwrap_or_default(),
                    stages,
                    failure_threshold,
                })
                .await
                .map_err(CtlError::rpc("CreateRollout"))?
                .into_inner()
                .rollout;
            show("CreateRollout", rollout, ctx)
        }
        RolloutCommand::Get {
            rollout_id,
            owner: o,
        } => {
            let rollout = ctx
                .client()
                .await?
                .get_rollout(GetRolloutRequest {
                    owner: owner(o),
                    rollout_id,
                })
                .await
                .map_err(CtlError::rpc("GetRollout"))?
                .into_inner()
                .rollout;
            show("GetRollout", rollout, ctx)
        }
        RolloutCommand::List {
            owner: o,
            policy_name,
        } => {
            let client = ctx.client().await?;
            let request = ListRolloutsRequest {
                owner: owner(o),
                policy_name: policy_name.unwrap_or_default(),
                page_size: PAGE_SIZE,
                page_token: String::new(),
            };
            let rollouts = all_pages("ListRollouts", None, |page_token| {
                let mut client = client.clone();
                let request = ListRolloutsRequest {
                    page_token,
                    ..request.clone()
                };
                async move {
                    let page = client.list_rollouts(request).await?.into_inner();
                    Ok((page.rollouts, page.next_page_token))
                }
            })
            .await?;
            let all = ListRolloutsResponse {
                rollouts,
                next_page_token: String::new(),
            };
            ctx.emit(
                || json::message(&all),
                |out| out.table(&view::rollout::table(&all.rollouts)),
            )
        }
        RolloutCommand::Advance(args) => step(RolloutStep::Advance, args, ctx).await,
        RolloutCommand::Pause(args) => step(RolloutStep::Pause, args, ctx).await,
        RolloutCommand::Resume(args) => step(RolloutStep::Resume, args, ctx).await,
        RolloutCommand::Abort(args) => step(RolloutStep::Abort, args, ctx).await,
    }
}

async fn step(step: RolloutStep, args: RolloutStepArgs, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let rollout = ctx
        .client()
        .await?
        .update_rollout(UpdateRolloutRequest {
            owner: owner(args.owner),
            rollout_id: args.rollout_id,
            step: step as i32,
            failure_threshold: args.failure_threshold.unwrap_or(0),
        })
        .await
        .map_err(CtlError::rpc("UpdateRollout"))?
        .into_inner()
        .rollout;
    show("UpdateRollout", rollout, ctx)
}

fn show(rpc: &str, rollout: Option<v1::Rollout>, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let rollout = rollout.ok_or_else(|| CtlError::BadAnswer(format!("{rpc} without a rollout")))?;
    ctx.emit(
        || json::message(&rollout),
        |out| out.fields(&view::rollout::fields(&rollout)),
    )
}
