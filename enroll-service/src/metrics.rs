//! Prometheus metrics: onboarded / renewed / registered counts, refusals by precise reason,
//! per-RPC latency histograms, and the HTTP endpoint that serves them (`GET /metrics`).
//!
//! Labels never carry DeviceIds (unbounded cardinality) nor anything secret.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    onboarded: Counter,
    renewed: Counter,
    registered: Counter,
    refused: Family<ReasonLabel, Counter>,
    unaudited_refusals: Counter,
    dropped_connections: Family<ReasonLabel, Counter>,
    latency: Family<MethodLabel, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oxroot");
        let onboarded = Counter::default();
        let renewed = Counter::default();
        let registered = Counter::default();
        let refused = Family::<ReasonLabel, Counter>::default();
        let unaudited_refusals = Counter::default();
        let dropped_connections = Family::<ReasonLabel, Counter>::default();
        let latency = Family::<MethodLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "devices_onboarded",
            "Credentials issued by Onboard",
            onboarded.clone(),
        );
        registry.register(
            "devices_renewed",
            "Credentials issued by Renew",
            renewed.clone(),
        );
        registry.register(
            "devices_registered",
            "New registrations (Register and offline imports)",
            registered.clone(),
        );
        registry.register(
            "device_refusals",
            "Onboard/Renew refusals by precise reason",
            refused.clone(),
        );
        registry.register(
            "device_refusals_unaudited",
            "Refusals of unregistered DeviceIds left out of the audit log: their address was over \
             its budget",
            unaudited_refusals.clone(),
        );
        registry.register(
            "connections_dropped",
            "Connections closed before they reached gRPC, by reason (peer_limit, \
             handshake_timeout, handshake_failed, preface_timeout, not_http2)",
            dropped_connections.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "RPC handling time, by method",
            latency.clone(),
        );
        Self {
            registry,
            onboarded,
            renewed,
            registered,
            refused,
            unaudited_refusals,
            dropped_connections,
            latency,
        }
    }

    /// One credential issued by Onboard.
    pub fn onboarded(&self) {
        self.onboarded.inc();
    }

    /// One credential issued by Renew.
    pub fn renewed(&self) {
        self.renewed.inc();
    }

    /// One new registration.
    pub fn registered(&self) {
        self.registered.inc();
    }

    /// One refusal with its precise reason.
    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// One refusal not written to the audit log (its address was over its budget).
    pub fn refusal_unaudited(&self) {
        self.unaudited_refusals.inc();
    }

    /// One connection closed before it reached gRPC, and why.
    pub fn connection_dropped(&self, reason: &str) {
        self.dropped_connections
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Starts timing an RPC; the time is recorded when the guard drops.
    #[must_use]
    pub fn time(self: &Arc<Self>, method: &'static str) -> RpcTimer {
        RpcTimer {
            metrics: self.clone(),
            method,
            start: Instant::now(),
        }
    }

    /// The text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records an RPC's duration on drop.
#[derive(Debug)]
pub struct RpcTimer {
    metrics: Arc<Metrics>,
    method: &'static str,
    start: Instant,
}

impl Drop for RpcTimer {
    fn drop(&mut self) {
        self.metrics
            .latency
            .get_or_create(&MethodLabel {
                method: self.method,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Where the metrics endpoint listens, for logs.
#[must_use]
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_exposition() {
        let metrics = Arc::new(Metrics::new());
        metrics.onboarded();
        metrics.refused("bad_esk_signature");
        drop(metrics.time("onboard"));
        let text = metrics.render();
        assert!(text.contains("oxroot_devices_onboarded_total 1"), "{text}");
        assert!(text.contains("reason=\"bad_esk_signature\""), "{text}");
        assert!(
            text.contains("oxroot_rpc_duration_seconds_count{method=\"onboard\"} 1"),
            "{text}"
        );
    }
}
