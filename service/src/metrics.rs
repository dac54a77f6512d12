//! The `/metrics` endpoint every Shardline component serves on its own port.

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};

/// Serves `/metrics` (Prometheus text format) for `registry`.
pub fn metrics_app(registry: Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let encoder = TextEncoder::new();
                let mut out = Vec::new();
                match encoder.encode(&registry.gather(), &mut out) {
                    Ok(()) => {
                        ([(CONTENT_TYPE, encoder.format_type().to_owned())], out).into_response()
                    }
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    )
}

/// Connections `/metrics` serves at once (scrapers and people: a handful).
const METRICS_CONNECTIONS: usize = 64;

/// Serves `/metrics` for `registry` on `listener` in the background, under the same
/// kind of limits as the API (10 s for a head, 60 s idle, 10 s to take an answer) and
/// at most [`METRICS_CONNECTIONS`] connections, so a client on the metrics port cannot
/// hold descriptors or memory the service needs.
pub fn spawn_metrics_server(listener: tokio::net::TcpListener, registry: Registry) {
    let app = metrics_app(registry);
    let limits = crate::conn::ConnLimits {
        header_timeout: std::time::Duration::from_secs(10),
        body_timeout: std::time::Duration::from_secs(10),
        body_min_rate: 64 << 10,
        idle_timeout: std::time::Duration::from_secs(60),
        write_timeout: std::time::Duration::from_secs(10),
        max_header_bytes: 16 << 10,
        max_headers: 64,
        max_connections: METRICS_CONNECTIONS,
        shutdown_grace: std::time::Duration::from_secs(1),
    };
    let gate = crate::conn::ConnGate::new(
        METRICS_CONNECTIONS,
        crate::conn::ConnMetrics::unregistered(),
    );
    tokio::spawn(crate::conn::serve_app(
        listener,
        app,
        crate::conn::HyperConn::new(limits),
        gate,
        std::future::pending(),
    ));
}
