//! `audit query | verify`.

use oxroot_proto::v1::{QueryAuditRequest, QueryAuditResponse, VerifyAuditRequest};
use time::OffsetDateTime;

use super::{Ctx, PAGE_SIZE, all_pages};
use crate::args::{AuditCommand, AuditQueryArgs, TimeArg};
use crate::error::CtlError;
use crate::output::{json, to_timestamp};
use crate::view;

pub(super) async fn run(command: AuditCommand, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    match command {
        AuditCommand::Query(args) => query(args, ctx).await,
        AuditCommand::Verify { start, end } => {
            let result = ctx
                .client()
                .await?
                .verify_audit(VerifyAuditRequest {
                    start_seq: start.unwrap_or(0),
                    end_seq: end.unwrap_or(0),
                })
                .await
                .map_err(CtlError::rpc("VerifyAudit"))?
                .into_inner();
            ctx.emit(
                || json::message(&result),
                |out| out.fields(&view::audit::verify_fields(&result)),
            )?;
            if result.ok {
                Ok(())
            } else {
                Err(CtlError::AuditChainBroken {
                    first_bad_seq: result.first_bad_seq,
                    problem: result.problem,
                })
            }
        }
    }
}

async fn query(args: AuditQueryArgs, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    // "24h" means 24 hours before now, fixed once so that every page uses the same filter
    // (the contract ties page tokens to unchanged filter values).
    let now = OffsetDateTime::now_utc();
    let request = QueryAuditRequest {
        start_seq: args.start.unwrap_or(0),
        since: args.since.map(|t| resolve(t, now, "--since")).transpose()?,
        until: args.until.map(|t| resolve(t, now, "--until")).transpose()?,
        actor: args.actor.unwrap_or_default(),
        action: args.action.unwrap_or_default(),
        subject: args.subject.unwrap_or_default(),
        correlation_id: args.correlation_id.unwrap_or_default(),
        page_size: PAGE_SIZE,
        page_token: String::new(),
    };
    let client = ctx.client().await?;
    let head_seq = std::cell::Cell::new(0);
    let entries = all_pages("QueryAudit", args.limit, |page_token| {
        let mut client = client.clone();
        let request = QueryAuditRequest {
            page_token,
            ..request.clone()
        };
        let head_seq = &head_seq;
        async move {
            let page = client.query_audit(request).await?.into_inner();
            head_seq.set(page.head_seq);
            Ok((page.entries, page.next_page_token))
        }
    })
    .await?;
    let head_seq = head_seq.get();
    // Every page (or --limit entries) as one response; head_seq says how far the log goes.
    let all = QueryAuditResponse {
        entries,
        next_page_token: String::new(),
        head_seq,
    };
    ctx.emit(
        || json::message(&all),
        |out| view::audit::query(out, &all.entries, all.head_seq),
    )
}

fn resolve(
    time: TimeArg,
    now: OffsetDateTime,
    flag: &str,
) -> Result<prost_types::Timestamp, CtlError> {
    let at = match time {
        TimeArg::At(at) => Some(at),
        TimeArg::Ago(span) => time::Duration::try_from(span)
            .ok()
            .and_then(|span| now.checked_sub(span)),
    };
    at.map(to_timestamp)
        .ok_or_else(|| CtlError::Usage(format!("{flag}: too far in the past")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn relative_times_count_back_from_now() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).expect("valid");
        let ts = resolve(TimeArg::Ago(Duration::from_secs(3_600)), now, "--since").expect("ok");
        assert_eq!(ts.seconds, 1_000_000 - 3_600);
        let absolute = OffsetDateTime::from_unix_timestamp(5).expect("valid");
        assert_eq!(
            resolve(TimeArg::At(absolute), now, "--until")
                .expect("ok")
                .seconds,
            5
        );
        assert!(resolve(TimeArg::Ago(Duration::from_secs(u64::MAX)), now, "--since").is_err());
    }
}
