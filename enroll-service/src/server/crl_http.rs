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

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::error::ServiceError;
use crate::service::ServiceCore;

/// Serves `GET /crl/<issuer>.crl` on `listener` until `shutdown` resolves.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    core: Arc<ServiceCore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/crl/{*issuer}", axum::routing::get(crl))
        .with_state(core);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn crl(State(core): State<Arc<ServiceCore>>, Path(path): Path<String>) -> Response {
    let Some(issuer) = path.strip_suffix(".crl") else {
        return (StatusCode::NOT_FOUND, "CRLs are at /crl/<issuer id>.crl\n").into_response();
    };
    let known = core
        .authorities()
        .crl_issuers()
        .is_ok_and(|ids| ids.iter().any(|id| id == issuer));
    let live = known
        && core
            .authorities()
            .by_id(issuer)
            .is_ok_and(|ca| ca.not_after() > time::OffsetDateTime::now_utc());
    if !live {
        return (StatusCode::NOT_FOUND, "no such issuing CA\n").into_response();
    }
    match core.crls().current(issuer).await {
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
