//! Each issuing CA's current CRL over plain HTTP, where brokers and relying parties fetch it
//! by the distribution point in device certificates:
//!
//! ```text
//!  GET /crl/<issuer id>.crl   200 application/pkix-crl (DER)   e.g. /crl/acme/1.crl, /crl/platform.crl
//!                             404 for a CA that is not known, or expired (its CRL is final)
//! ```
//!
//! Plain HTTP on purpose (RFC 5280 §4.2.1.13): a CRL is signed, and fetching it over TLS would
//! need a revocation check of its own. What it reveals is public in every PKI: which serials of
//! a CA are revoked. The CRL served is the current one ([`CrlSigner::current`]): re-signed when
//! a revocation is not on it yet or half its validity has passed.
//!
//! [`CrlSigner::current`]: crate::service::CrlSigner::current

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::error::ServiceError;
use crate::service::ServiceCore;

/// The pause after a failed accept (out of descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `GET /crl/<issuer>.crl` on `listener` until `shutdown` resolves. Each connection
/// takes a place under its address's connection cap (`[limits] max_connections_per_peer`,
/// shared with the gRPC port), must send its headers within `[limits] crl_request_timeout`,
/// serves one request and lives at most three times that (a CRL is small): the port is
/// unauthenticated, and idle or slow connections must not hold the descriptors the gRPC port
/// needs too.
///
/// # Errors
/// None today: a failed accept is logged and retried.
pub async fn serve(
    listener: TcpListener,
    core: Arc<ServiceCore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/crl/{*issuer}", axum::routing::get(crl))
        .with_state(core.clone());
    let header_timeout = core.config().crl_request_timeout;
    let connection_timeout = header_timeout * 3;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "CRL endpoint: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Some(slot) = core.limits().open_connection(peer.ip()) else {
            tracing::debug!(%peer, "CRL endpoint: connection cap reached");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(false);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(connection_timeout, connection).await {
                tracing::debug!(%peer, error = %e, "CRL endpoint: connection failed");
            }
        });
    }
}

async fn crl(State(core): State<Arc<ServiceCore>>, Path(path): Path<String>) -> Response {
    let Some(issuer) = path.strip_suffix(".crl") else {
        return (StatusCode::NOT_FOUND, "CRLs are at /crl/<issuer id>.crl\n").into_response();
    };
    // A live issuing CA or the platform's; a pending CA has no CRL, an expired one's is final.
    // Read from the record, so that a stored CRL is served while the CA's key store is away.
    let live = core
        .authorities()
        .not_after_of(issuer)
        .await
        .is_ok_and(|not_after| not_after > time::OffsetDateTime::now_utc());
    if !live {
        return (StatusCode::NOT_FOUND, "no such issuing CA\n").into_response();
    }
    match core.crls().to_serve(issuer).await {
        Ok(record) => match hex::decode(&record.der_hex) {
            Ok(der) => {
                // Caches may keep it a little while, never past a re-signing's usual lead.
                let validity: time::Duration = record.next_update - record.this_update;
                let max_age = (validity.whole_seconds() / 8).clamp(0, 300);
                (
                    [
                        (header::CONTENT_TYPE, "application/pkix-crl".to_owned()),
                        (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
                    ],
                    der,
                )
                    .into_response()
            }
            Err(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "stored CRL is damaged\n").into_response()
            }
        },
        Err(ServiceError::Unavailable(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the CA key store is unavailable; retry\n",
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(%issuer, error = %e, "could not serve a CRL");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not read the CRL\n",
            )
                .into_response()
        }
    }
}
