//! One function per command: build the request, call the service, print the answer.

mod audit;
mod batch;
mod console;
mod crl_sync;
mod device;
mod export;
mod firmware;
mod operator;
mod owner;
mod policy;
mod rollout;

use std::io::{self, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use oxroot_proto::v1::WhoAmIRequest;
use oxroot_proto::v1::operator_client::OperatorClient;
use serde_json::Value;
use tonic::transport::Channel;

use super::args::{Command, ConnectionArgs, CrlCommand};
use super::connect::connect;
use super::error::CtlError;
use super::output::Human;
use super::output::json::{self, JsonError, json_line};
use super::view;

/// Page size asked for in list RPCs: the contract's maximum, to keep round trips few.
const PAGE_SIZE: u32 = 1_000;

/// What every command needs: where to print, how, and the (lazily opened) connection.
pub(crate) struct Ctx<'a> {
    pub(crate) out: &'a mut dyn Write,
    pub(crate) json: bool,
    progress: bool,
    connection: &'a ConnectionArgs,
    client: Option<OperatorClient<Channel>>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        out: &'a mut dyn Write,
        json: bool,
        progress: bool,
        connection: &'a ConnectionArgs,
    ) -> Self {
        Self {
            out,
            json,
            progress,
            connection,
            client: None,
        }
    }

    /// How to reach the service, for a command that opens its own connection.
    pub(crate) fn connection(&self) -> &ConnectionArgs {
        self.connection
    }

    /// The client, connecting on first use so that local checks (arguments, input files) fail
    /// before any network traffic. A clone shares the one HTTP/2 connection.
    pub(crate) async fn client(&mut self) -> Result<OperatorClient<Channel>, CtlError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = connect(self.connection).await?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Prints one result: in `--json` mode the JSON document (made only then, see
    /// [`crate::output::json`]), otherwise the human view, which can write only escaped text.
    pub(crate) fn emit(
        &mut self,
        json: impl FnOnce() -> Result<Value, JsonError>,
        human: impl FnOnce(&mut Human<'_>) -> io::Result<()>,
    ) -> Result<(), CtlError> {
        if self.json {
            json_line(self.out, &json()?)?;
        } else {
            let mut out = Human::new(self.out);
            human(&mut out)?;
            out.flush()?;
        }
        Ok(())
    }

    /// The human side of stdout, for commands that print as they go (`batch watch`).
    pub(crate) fn human(&mut self) -> Human<'_> {
        Human::new(self.out)
    }

    /// A progress bar on the terminal's stderr, or a hidden one when stdout must stay clean
    /// JSON, stderr is not a terminal, or the caller captures output (tests).
    pub(crate) fn progress_bar(&self, length: u64, template: &str) -> ProgressBar {
        if !self.progress || self.json {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr()).with_style(style)
    }
}

/// Runs one command.
pub(crate) async fn execute(command: Command, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    match command {
        Command::Whoami => whoami(ctx).await,
        Command::Policy(command) => policy::run(command, ctx).await,
        Command::Firmware(command) => firmware::run(command, ctx).await,
        Command::Rollout(command) => rollout::run(command, ctx).await,
        Command::Export(args) => export::artifacts(args, ctx).await,
        Command::Batch(command) => batch::run(command, ctx).await,
        Command::Device(command) => device::run(command, ctx).await,
        Command::Crl(args) => match args.sync {
            Some(CrlCommand::Sync(sync)) => crl_sync::run(sync, ctx).await,
            None => export::crl(args, ctx).await,
        },
        Command::Audit(command) => audit::run(command, ctx).await,
        Command::Operator(command) => operator::run(command, ctx).await,
        Command::Owner(command) => owner::run(command, ctx).await,
        Command::Console(args) => console::run(args, ctx).await,
    }
}

async fn whoami(ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let me = ctx
        .client()
        .await?
        .who_am_i(WhoAmIRequest {})
        .await
        .map_err(CtlError::rpc("WhoAmI"))?
        .into_inner();
    ctx.emit(
        || json::message(&me),
        |out| out.fields(&view::whoami::fields(&me)),
    )
}

/// Follows page tokens to the last page (or until `limit` items).
///
/// `fetch` makes the call for one page token and returns a future that owns what it needs (a
/// clone of the client, the request), so that the paging future is `Send` and the web console
/// can run it on any thread.
///
/// A service that hands back the token it was given would loop forever; that is reported as a
/// bad answer instead.
pub(crate) async fn all_pages<T, Page>(
    rpc: &'static str,
    limit: Option<usize>,
    mut fetch: impl FnMut(String) -> Page,
) -> Result<Vec<T>, CtlError>
where
    Page: Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = fetch(token.clone()).await.map_err(CtlError::rpc(rpc))?;
        items.extend(page);
        if let Some(limit) = limit
            && items.len() >= limit
        {
            items.truncate(limit);
            return Ok(items);
        }
        if next.is_empty() {
            return Ok(items);
        }
        if next == token {
            return Err(CtlError::BadAnswer(format!(
                "{rpc} returned the page token it was given"
            )));
        }
        token = next;
    }
}

/// Empty for an unset owner: the contract reads "" as the caller's own owner.
pub(crate) fn owner(owner: Option<String>) -> String {
    owner.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_are_followed_to_the_end() {
        let pages = [(vec![1, 2], "a"), (vec![3], "b"), (vec![4, 5], "")];
        let mut calls = Vec::new();
        let items = all_pages("List", None, |token: String| {
            let index = calls.len();
            calls.push(token);
            let (items, next) = &pages[index];
            std::future::ready(Ok((items.clone(), (*next).to_owned())))
        })
        .await
        .expect("pages");
        assert_eq!(items, [1, 2, 3, 4, 5]);
        assert_eq!(calls, ["", "a", "b"]);
    }

    #[tokio::test]
    async fn a_limit_stops_paging_early() {
        let mut calls = 0;
        let items = all_pages("List", Some(3), |_token: String| {
            calls += 1;
            std::future::ready(Ok((vec![calls; 2], format!("t{calls}"))))
        })
        .await
        .expect("pages");
        assert_eq!(items, [1, 1, 2]);
        assert_eq!(calls, 2);
    }

    #[tokio::test]
    async fn a_repeated_token_is_an_error_not_a_loop() {
        let error = all_pages("ListDevices", None, |_token: String| {
            std::future::ready(Ok((vec![0], "same".to_owned())))
        })
        .await
        .expect_err("loops");
        assert!(matches!(error, CtlError::BadAnswer(_)), "{error}");
    }

    #[tokio::test]
    async fn a_failing_page_names_the_rpc() {
        let error = all_pages::<u8, _>("ListPolicies", None, |_token: String| {
            std::future::ready(Err(tonic::Status::permission_denied("auditors only")))
        })
        .await
        .expect_err("fails");
        assert_eq!(
            error.to_string(),
            "ListPolicies: PERMISSION_DENIED: auditors only"
        );
    }
}
