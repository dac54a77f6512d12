//! The worker's internal HTTP API: Open Inference Protocol v2 under
//! `/v2/models/{tenant}.{model}[/versions/{v}]/...`, the model-repository extension,
//! and health. Everything but health needs the internal token (`x-shardline-token`).
//! The model-repository handlers are in `repository.rs`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use shardline_shared::manifest::Manifest;
use subtle::ConstantTimeEq;

use crate::activations::{Refusal, Reserved, bytes_needed};
use crate::decode::{
    INFERENCE_HEADER, InputSpec, decode_request, encode_infer_response,
    encode_infer_response_binary, parse_header_length,
};
use crate::error::ApiError;
use crate::repository::{index, load, unload};
pub use crate::request::read_body;
use crate::request::revision;
use crate::state::AppState;

pub use shardline_shared::wire::{PUBLIC_NAME_HEADER, REVISION_HEADER, TOKEN_HEADER};

/// The worker's router, ready to serve.
pub fn app(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/versions/{version}", get(metadata_v))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/v2/repository/index", get(index).post(index))
        .route("/v2/repository/models/{name}/load", post(load))
        .route("/v2/repository/models/{name}/unload", post(unload))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({"live": true})) }),
        )
        .route("/v2/health/ready", get(server_ready))
        .route("/v2", get(server_metadata))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(state)
}

async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(TOKEN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    // Every token compared (no early exit): the time taken does not say which matched.
    let accepted = state.tokens.iter().fold(subtle::Choice::from(0), |any, t| {
        any | presented.ct_eq(t.as_bytes())
    });
    if bool::from(accepted) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or invalid internal token",
        )
        .into_response()
    }
}

/// `{"ready": true}` (200) or `{"ready": false}` (503), as KServe's clients read it.
async fn server_ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready}))).into_response()
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(json!({
        "name": "shardline-worker",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["model_repository", "binary_tensor_data"],
    }))
}

fn oip_name(m: &Manifest) -> String {
    format!("{}.{}", m.tenant, m.model)
}

fn metadata_body(state: &AppState, m: &Manifest) -> serde_json::Value {
    let snap = state.snapshot.borrow().clone();
    let versions: Vec<String> = snap
        .model(&m.key())
        .map(|e| e.versions.keys().map(ToString::to_string).collect())
        .unwrap_or_default();
    json!({
        "name": oip_name(m),
        "versions": versions,
        "platform": "shardline_mlp",
        "inputs": [{"name": m.config.input.name, "datatype": "FP32", "shape": [-1, m.config.input.dim]}],
        "outputs": [{"name": m.config.output.name, "datatype": "FP32", "shape": [-1, m.config.output.dim]}],
    })
}

async fn metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = state.resolve(&name, None)?;
    Ok(Json(metadata_body(&state, &m)))
}

async fn metadata_v(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = state.resolve(&name, Some(&version))?;
    Ok(Json(metadata_body(&state, &m)))
}

/// 200 and `{"name", "ready": true}` when the model is resident, else 503 and
/// `"ready": false`.
fn ready_status(state: &AppState, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    let m = state.resolve(name, version)?;
    let resident = state
        .cache
        .resident()
        .iter()
        .any(|r| r.key.model == m.key() && r.key.version == m.version);
    let status = if resident {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"name": oip_name(&m), "ready": resident});
    Ok((status, Json(body)).into_response())
}

async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    ready_status(&state, &name, None)
}

async fn model_ready_v(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ready_status(&state, &name, Some(&version))
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    score(state, &name, None, &headers, body).await
}

async fn infer_v(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    score(state, &name, Some(&version), &headers, body).await
}

/// Reserves the activations of a forward pass over `rows` rows (see [`crate::activations`]).
async fn reserve_activations(
    state: &AppState,
    rows: usize,
    dims: &[usize],
) -> Result<Reserved, ApiError> {
    let need = bytes_needed(rows, dims);
    let refused = match state
        .activations
        .reserve(need, state.limits.room_wait)
        .await
    {
        Ok(reserved) => return Ok(reserved),
        Err(r) => r,
    };
    let mib = |b: u64| b.div_ceil(1 << 20);
    let (reason, error) = match refused {
        Refusal::TooLarge { need, budget } => (
            "too_large",
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "scoring {rows} rows needs {} MiB of activations, more than this worker's \
                     inference memory ({} MiB); send fewer rows per request",
                    mib(need),
                    mib(budget)
                ),
            ),
        ),
        Refusal::Busy { need, .. } => (
            "busy",
            ApiError::unavailable(
                format!(
                    "no inference memory free for {} MiB of activations; retry shortly",
                    mib(need)
                ),
                std::time::Duration::from_secs(1),
            ),
        ),
    };
    state
        .metrics
        .activation_refusals
        .with_label_values(&[reason])
        .inc();
    Err(error)
}

/// Rows × params above which scoring moves off the async runtime.
const BLOCKING_WORK: u64 = 1 << 18;

async fn score(
    state: Arc<AppState>,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.catch_up(revision(headers)).await;
    let manifest = state.resolve(name, version)?;
    let _in_flight = state.admit(&manifest.key())?;
    let header_length = headers
        .get(INFERENCE_HEADER)
        .map(|v| parse_header_length(v.as_bytes()))
        .transpose()?;
    let bytes = read_body(headers, body, state.limits.max_body).await?;
    // Decoding needs only the manifest: a bad request never triggers a load.
    let spec = InputSpec::for_model(&manifest.config, state.limits.max_rows);
    let batch = decode_request(&bytes, header_length, &spec)?;
    drop(bytes);
    let rows = batch.rows;
    let work = (rows as u64).saturating_mul(manifest.config.parameter_count(&manifest.dims));
    // A place among the blocking work, then the memory, both before the load: a request
    // that cannot run now must not make anyone load or evict.
    let blocking = if work > BLOCKING_WORK {
        Some(state.blocking.admit().map_err(|busy| {
            ApiError::unavailable(
                format!(
                    "this worker is running and queueing {} large forward passes, its limit; \
                     retry shortly",
                    busy.most
                ),
                std::time::Duration::from_secs(1),
            )
        })?)
    } else {
        None
    };
    let activations = reserve_activations(&state, rows, &manifest.dims).await?;
    let lease = state.lease(manifest.clone()).await?;
    let started = Instant::now();
    let scores = if let Some(admitted) = blocking {
        admitted
            .run(move || {
                let out = lease.model.forward(&batch.data, rows);
                // Given back when the pass has ended, whether or not anyone still waits.
                drop(activations);
                (out, batch)
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
            .and_then(|(out, batch)| Ok((out?, batch)))
    } else {
        let out = lease.model.forward(&batch.data, rows);
        drop(lease);
        drop(activations);
        Ok((out?, batch))
    };
    let (scores, batch) = scores?;
    state
        .metrics
        .inference_duration
        .with_label_values(&state.metrics.model_labels(&manifest.key()))
        .observe(started.elapsed().as_secs_f64());
    let name = headers
        .get(PUBLIC_NAME_HEADER)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| oip_name(&manifest), str::to_owned);
    let (version, id) = (manifest.version.as_str(), batch.id.as_deref());
    let (output, dim) = (&manifest.config.output.name, manifest.config.output.dim);
    if batch.binary_output {
        let (body, header_length) =
            encode_infer_response_binary(&name, version, id, output, rows, dim, &scores);
        let headers = [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static(INFERENCE_HEADER),
                header_length.to_string(),
            ),
        ];
        return Ok((headers, body).into_response());
    }
    let body = encode_infer_response(&name, version, id, output, rows, dim, &scores);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
