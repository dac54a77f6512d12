//! The router's public HTTP API as an axum [`Router`] ([`app`]): Open Inference
//! Protocol v2 REST for a tenant's own models (infer, metadata, ready, with or without a
//! version), server health and metadata. Model endpoints need `Authorization: Bearer
//! <api key>` ([`crate::infer::auth`]); inference itself is [`crate::infer::handle`]'s,
//! the same service the HTTP/1.1 fast path calls.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use shardline_shared::ids::{ModelKey, TenantId};
use shardline_shared::manifest::Manifest;
use shardline_shared::snapshot::Snapshot;

use crate::codec::{DEADLINE_HEADER, INFERENCE_HEADER, ROUTE_KEY_HEADER};
use crate::error::RouterError;
use crate::infer::{self, InferRequest, KeyMemo, authenticate, read_body, resolve};
use crate::state::AppState;
use crate::upstream::Upstream;

/// The router's public API, ready to serve.
pub fn app<U: Upstream>(state: Arc<AppState<U>>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({"live": true})) }),
        )
        .route("/v2/health/ready", get(server_ready::<U>))
        .route("/v2/models/{model}", get(metadata::<U>))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(metadata_v::<U>),
        )
        .route("/v2/models/{model}/ready", get(ready::<U>))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(ready_v::<U>),
        )
        .route("/v2/models/{model}/infer", post(infer_handler::<U>))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version_handler::<U>),
        )
        .fallback(|| async { RouterError::NoRoute })
        .method_not_allowed_fallback(|| async { RouterError::MethodNotAllowed })
        .with_state(state)
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(json!({
        "name": crate::grpc::meta::SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": crate::grpc::meta::EXTENSIONS,
    }))
}

/// Ready (`{"ready": true}`) once a snapshot has been read from etcd and at least one
/// worker is live. Stays ready while etcd is away: the last snapshot keeps serving.
async fn server_ready<U: Upstream>(State(state): State<Arc<AppState<U>>>) -> Response {
    let snap = state.snapshot();
    if crate::grpc::meta::server_ready(&snap) {
        Json(json!({"ready": true})).into_response()
    } else if snap.revision() == 0 {
        RouterError::Unavailable("no control-plane snapshot yet".into()).into_response()
    } else {
        RouterError::Unavailable("no live worker".into()).into_response()
    }
}

/// The tenant owning the request's bearer key.
fn authenticate_headers(snap: &Snapshot, headers: &HeaderMap) -> Result<TenantId, RouterError> {
    authenticate(
        snap,
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    )
}

fn metadata_body(snap: &Snapshot, key: &ModelKey, m: &Manifest) -> serde_json::Value {
    let versions: Vec<String> = snap
        .model(key)
        .map(|e| e.versions.keys().map(ToString::to_string).collect())
        .unwrap_or_default();
    json!({
        "name": key.model.as_str(),
        "versions": versions,
        "platform": "shardline_mlp",
        "inputs": [{"name": m.config.input.name, "datatype": "FP32", "shape": [-1, m.config.input.dim]}],
        "outputs": [{"name": m.config.output.name, "datatype": "FP32", "shape": [-1, m.config.output.dim]}],
    })
}

fn model_metadata<U>(
    state: &AppState<U>,
    headers: &HeaderMap,
    name: &str,
    version: Option<&str>,
) -> Result<Json<serde_json::Value>, RouterError> {
    let snap = state.snapshot();
    let tenant = authenticate_headers(&snap, headers)?;
    let (key, manifest) = resolve(&snap, &tenant, name, version, None)?;
    Ok(Json(metadata_body(&snap, &key, manifest)))
}

async fn metadata<U: Upstream>(
    State(state): State<Arc<AppState<U>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, RouterError> {
    model_metadata(&state, &headers, &name, None)
}

async fn metadata_v<U: Upstream>(
    State(state): State<Arc<AppState<U>>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, RouterError> {
    model_metadata(&state, &headers, &name, Some(&version))
}

/// 200 and `{"name", "ready": true}` when the model can be served now: a live worker of
/// its shard (or, before it is placed, any live worker) exists.
fn model_ready<U>(
    state: &AppState<U>,
    headers: &HeaderMap,
    name: &str,
    version: Option<&str>,
) -> Result<Json<serde_json::Value>, RouterError> {
    let snap = state.snapshot();
    let tenant = authenticate_headers(&snap, headers)?;
    let (key, _) = resolve(&snap, &tenant, name, version, None)?;
    if crate::grpc::meta::model_live(&snap, &key) {
        Ok(Json(json!({"name": key.model.as_str(), "ready": true})))
    } else {
        Err(RouterError::Unavailable(format!(
            "no live worker serves model {}",
            shardline_shared::echo::Echo(name)
        )))
    }
}

async fn ready<U: Upstream>(
    State(state): State<Arc<AppState<U>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, RouterError> {
    model_ready(&state, &headers, &name, None)
}

async fn ready_v<U: Upstream>(
    State(state): State<Arc<AppState<U>>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, RouterError> {
    model_ready(&state, &headers, &name, Some(&version))
}

// Handlers take the whole request: axum's `HeaderMap` extractor would clone the headers.
async fn infer_handler<U: Upstream>(
    State(state): State<Arc<AppState<U>>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    infer_response(&state, &name, None, &parts.headers, body).await
}

async fn infer_version_handler<U: Upstream>(
    State(state): State<Arc<AppState<U>>>,
    Path((name, version)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    infer_response(&state, &name, Some(&version), &parts.headers, body).await
}

/// Runs one inference through the inference service and turns its result into a response.
async fn infer_response<U: Upstream>(
    state: &AppState<U>,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let request = InferRequest {
        name,
        version,
        chosen: None,
        authorization: headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        deadline: headers.get(DEADLINE_HEADER).map(HeaderValue::as_bytes),
        header_length: headers.get(INFERENCE_HEADER).map(HeaderValue::as_bytes),
        route_key: headers.get(ROUTE_KEY_HEADER).map(HeaderValue::as_bytes),
        content_length: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
    };
    let body = read_body(headers, body, state.limits.max_body);
    match infer::handle(state, request, body, &mut KeyMemo::default()).await {
        Ok(relay) => relay.into_response(),
        Err(e) => e.into_response(),
    }
}
