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

/// Serves `/metrics` for `registry` on `listener` in the background.
pub fn spawn_metrics_server(listener: tokio::net::TcpListener, registry: Registry) {
    let app = metrics_app(registry);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
}
