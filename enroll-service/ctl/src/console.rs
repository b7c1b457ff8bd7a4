//! `enrollctl console`: the fleet, its batches and devices in a browser, served on loopback by
//! the operator's own `enrollctl`.
//!
//! ```text
//!  browser ──HTTP on loopback──▶ console (this process) ──mTLS, the profile's operator──▶ Operator
//!    one-time login link ─▶ session cookie        every page is Operator calls made as that
//!    CSRF token on every POST                     operator: the service checks the role and
//!    CSP: this console's own script and style     writes every change and denial to its log
//!    live batch progress ◀─ server-sent events ◀──────────────────────────── WatchBatch
//! ```
//!
//! The console has no authority of its own: it holds the profile's mTLS identity and makes the
//! same calls `enrollctl` makes. It hides what the operator's role cannot use (an auditor gets
//! no revoke button) and relies on the service to refuse it anyway.
//!
//! Pages are server-rendered HTML (maud) and SVG; each can be read with JavaScript off. One
//! small script of our own (`console/assets/console.js`) turns the batch page live through an
//! `EventSource`.
//!
//! Modules: `access` (login token, session cookie, CSRF, host check, security headers),
//! `page` (the shell, the error pages, and `shown` for text from the service), `fleet_index`
//! (the device list the overview and the search read, refreshed in the background), `stats`
//! and `chart` (what the overview counts and draws), one module per section (`overview`,
//! `batches` with `live`, `devices` with `revoke` and `evidence`, `audit`, `ca` for the owner's
//! CAs, their CRLs and the service's health), and `assets` (the script and the stylesheet).
//!
//! ```no_run
//! # async fn demo() -> Result<(), enrollctl::CtlError> {
//! use enrollctl::args::ConnectionArgs;
//! use enrollctl::console::{self, ConsoleOptions};
//! let connection = ConnectionArgs {
//!     service: Some("https://127.0.0.1:8443".into()),
//!     profile: Some("acme".into()),
//!     ..ConnectionArgs::default()
//! };
//! let running = console::start(&connection, ConsoleOptions::default()).await?;
//! println!("open {}", running.login_url());
//! running.stop().await;
//! # Ok(())
//! # }
//! ```

mod access;
mod assets;
mod audit;
mod batches;
mod ca;
mod chart;
mod devices;
mod evidence;
mod fleet_index;
mod live;
mod overview;
mod page;
mod revoke;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use oxroot_proto::v1::operator_client::OperatorClient;
use oxroot_proto::v1::{Role, WhoAmIRequest, WhoAmIResponse};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

use crate::args::ConnectionArgs;
use crate::connect::{connect_channel, resolve};
use crate::error::CtlError;

pub use access::CONTENT_SECURITY_POLICY;

/// Live batch views (WatchBatch streams) open at once; the service limits streams per
/// operator too, and a forgotten tab should not use them all.
const MAX_LIVE_VIEWS: usize = 8;
/// How long stopping waits for open pages before closing them.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How to run the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleOptions {
    /// Where to listen: a loopback address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How old the device list behind the overview and the search may get before it is read
    /// again (in the background: pages never wait for a refresh once one list is there).
    pub fleet_refresh: Duration,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fleet_refresh: Duration::from_secs(15),
        }
    }
}

/// What every page handler shares.
pub(crate) struct Console {
    /// The operator's client; clones share its one HTTP/2 connection.
    client: OperatorClient<Channel>,
    /// gRPC health on the same connection, for the CA page.
    health: HealthClient<Channel>,
    /// Who the console acts as, from WhoAmI at start.
    me: WhoAmIResponse,
    access: access::Access,
    fleet: Arc<fleet_index::FleetIndex>,
    /// The profile's CA certificates (the platform CA's), for the CA page.
    trust: ca::TrustFiles,
    live_views: Arc<Semaphore>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// The console as handlers get it.
pub(crate) type SharedConsole = Arc<Console>;

impl Console {
    /// A client for one call.
    fn client(&self) -> OperatorClient<Channel> {
        self.client.clone()
    }

    /// A health client for one call.
    fn health(&self) -> HealthClient<Channel> {
        self.health.clone()
    }

    fn role(&self) -> Role {
        Role::try_from(self.me.role).unwrap_or_default()
    }

    /// RevokeDevice is for operators and admins (the service checks it too).
    fn can_revoke(&self) -> bool {
        matches!(self.role(), Role::Admin | Role::Operator)
    }

    /// QueryAudit and VerifyAudit are for auditors and admins (the service checks it too).
    fn can_read_audit(&self) -> bool {
        matches!(self.role(), Role::Admin | Role::Auditor)
    }
}

/// A console serving in this process.
#[derive(Debug)]
pub struct RunningConsole {
    login_url: String,
    address: SocketAddr,
    me: WhoAmIResponse,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningConsole {
    /// The one-time login link (`http://127.0.0.1:PORT/login?token=…`).
    #[must_use]
    pub fn login_url(&self) -> &str {
        &self.login_url
    }

    /// Where it listens.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The operator it acts as.
    #[must_use]
    pub fn operator(&self) -> &WhoAmIResponse {
        &self.me
    }

    /// Stops serving: waits briefly for open pages, then closes the rest (live views never end
    /// by themselves).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(STOP_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for RunningConsole {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Connects as the profile's operator, asks the service who that is, and serves the console.
///
/// # Errors
/// [`CtlError::Usage`] for a non-loopback address, the connection's errors, WhoAmI's refusal,
/// and [`CtlError::Io`] if the address cannot be bound.
pub async fn start(
    connection: &ConnectionArgs,
    options: ConsoleOptions,
) -> Result<RunningConsole, CtlError> {
    access::check_loopback(options.listen)?;
    let target = resolve(connection)?;
    let channel = connect_channel(connection).await?;
    let client = OperatorClient::new(channel.clone());
    let me = client
        .clone()
        .who_am_i(WhoAmIRequest {})
        .await
        .map_err(CtlError::rpc("WhoAmI"))?
        .into_inner();
    let trust = ca::TrustFiles::read(&target.cert, &target.ca)?;
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(CtlError::io(options.listen.to_string()))?;
    let address = listener
        .local_addr()
        .map_err(CtlError::io(options.listen.to_string()))?;
    let access = access::Access::new(address)?;
    let login_url = access.login_url();
    let fleet = fleet_index::FleetIndex::new(client.clone(), options.fleet_refresh);
    // Read the device list now, so that it is there when the operator opens the link.
    fleet.warm_up();
    let console = Arc::new(Console {
        client,
        health: HealthClient::new(channel),
        me: me.clone(),
        access,
        fleet,
        trust,
        live_views: Arc::new(Semaphore::new(MAX_LIVE_VIEWS)),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(console);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningConsole {
        login_url,
        address,
        me,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Every route, behind the session check where it needs one, and the headers on all of them.
fn router(console: SharedConsole) -> Router {
    let pages = Router::new()
        .route("/", get(overview::show))
        .route("/batches", get(batches::list))
        .route("/batches/{batch_id}", get(batches::view))
        .route("/batches/{batch_id}/events", get(live::events))
        .route("/devices", get(devices::search))
        .route("/devices/{device_id}", get(devices::view))
        .route(
            "/devices/{device_id}/revoke",
            get(revoke::confirm).post(revoke::submit),
        )
        .route("/devices/{device_id}/evidence", get(evidence::download))
        .route("/audit", get(audit::log))
        .route("/audit/verify", post(audit::verify))
        .route("/ca", get(ca::show))
        .route("/crl.pem", get(ca::crl_pem))
        .route("/logout", post(access::logout))
        .route_layer(from_fn_with_state(console.clone(), access::require_session));
    Router::new()
        .merge(pages)
        .route("/login", get(access::login))
        .route("/static/console.js", get(assets::script))
        .route("/static/console.css", get(assets::style))
        .fallback(access::not_found)
        .layer(DefaultBodyLimit::max(access::MAX_FORM_BYTES))
        .layer(from_fn_with_state(console.clone(), access::check_host))
        .layer(from_fn(access::security_headers))
        .with_state(console)
}
