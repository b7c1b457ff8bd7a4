//! `console`: serve the web console until interrupted.

use crate::args::ConsoleArgs;
use crate::console::{self, ConsoleOptions};
use crate::error::CtlError;
use crate::output::json;

use super::Ctx;

pub(super) async fn run(args: ConsoleArgs, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let running = console::start(
        ctx.connection(),
        ConsoleOptions {
            listen: args.listen,
            fleet_refresh: args.fleet_refresh,
        },
    )
    .await?;
    let me = running.operator().clone();
    let url = running.login_url().to_owned();
    ctx.emit(
        || {
            json::message_with(
                &me,
                [
                    ("login_url", url.clone().into()),
                    ("listen", running.address().to_string().into()),
                ],
            )
        },
        |out| {
            let owner = if me.owner == "*" {
                "the platform"
            } else {
                &me.owner
            };
            out.line(&format!(
                "console for {} ({} of {owner}), acting with this profile's certificate",
                me.name,
                crate::output::role_name(me.role)
            ))?;
            out.line(&format!("open {url}"))?;
            out.line(
                "in a browser on this machine: the link logs in once. Ctrl-C stops the console.",
            )
        },
    )?;
    // The operator reads the link now, not when the console stops.
    ctx.out.flush()?;
    tokio::signal::ctrl_c()
        .await
        .map_err(CtlError::io("the Ctrl-C handler"))?;
    running.stop().await;
    Ok(())
}
