//! The router's public HTTP API: Open Inference Protocol v2 REST for a tenant's own
//! models (infer, metadata, ready, with or without a version), server health and
//! metadata. Model endpoints need `Authorization: Bearer <api key>`; the tenant comes
//! only from the key, so another tenant's model answers exactly like a missing one.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus::IntGauge;
use serde_json::json;
use shardline_service::http::BodyError;
use shardline_shared::ids::{ModelKey, ModelName, TenantId, VersionId};
use shardline_shared::manifest::Manifest;
use shardline_shared::snapshot::Snapshot;

use crate::error::RouterError;
use crate::proxy::{self, Relay};
use crate::state::AppState;

/// The router's public API, ready to serve.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{model}", get(metadata))
        .route("/v2/models/{model}/versions/{version}", get(metadata_v))
        .route("/v2/models/{model}/ready", get(ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(ready_v))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_v))
        .fallback(|| async { RouterError::NoRoute })
        .method_not_allowed_fallback(|| async { RouterError::MethodNotAllowed })
        .with_state(state)
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(json!({
        "name": "shardline",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

/// Ready once a snapshot has been read from etcd and at least one worker is live. Stays
/// ready while etcd is away: the last snapshot keeps serving.
async fn server_ready(State(state): State<Arc<AppState>>) -> Response {
    let snap = state.snapshot();
    if snap.revision() > 0 && !snap.workers().is_empty() {
        StatusCode::OK.into_response()
    } else if snap.revision() == 0 {
        RouterError::Unavailable("no control-plane snapshot yet".into()).into_response()
    } else {
        RouterError::Unavailable("no live worker".into()).into_response()
    }
}

/// The tenant owning the request's bearer key.
fn authenticate(snap: &Snapshot, headers: &HeaderMap) -> Result<TenantId, RouterError> {
    authenticate_value(
        snap,
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    )
}

/// The tenant owning the bearer key of an `Authorization` value.
fn authenticate_value(snap: &Snapshot, value: Option<&[u8]>) -> Result<TenantId, RouterError> {
    let value = value
        .and_then(|v| std::str::from_utf8(v).ok())
        .ok_or(RouterError::Unauthorized)?;
    let (scheme, key) = value
        .trim()
        .split_once(' ')
        .ok_or(RouterError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(RouterError::Unauthorized);
    }
    snap.tenant_for_key(key.trim())
        .cloned()
        .ok_or(RouterError::Unauthorized)
}

/// The manifest of `tenant`'s model `name` at `version` (else the live one).
fn resolve<'s>(
    snap: &'s Snapshot,
    tenant: &TenantId,
    name: &str,
    version: Option<&str>,
) -> Result<(ModelKey, &'s Manifest), RouterError> {
    let unknown = || RouterError::NotFound(format!("model {name:?} not found"));
    let model = ModelName::new(name).map_err(|_| unknown())?;
    let key = ModelKey::new(tenant.clone(), model);
    let entry = snap.model(&key).ok_or_else(unknown)?;
    let manifest = match version {
        Some(v) => {
            let no_version =
                || RouterError::NotFound(format!("model {name:?} has no version {v:?}"));
            let v = VersionId::new(v).map_err(|_| no_version())?;
            entry
                .versions
                .get(&v)
                .map(|m| &m.value)
                .ok_or_else(no_version)?
        }
        None => entry
            .live_manifest()
            .ok_or_else(|| RouterError::NotFound(format!("model {name:?} has no live version")))?,
    };
    Ok((key, manifest))
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

fn model_metadata(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    version: Option<&str>,
) -> Result<Json<serde_json::Value>, RouterError> {
    let snap = state.snapshot();
    let tenant = authenticate(&snap, headers)?;
    let (key, manifest) = resolve(&snap, &tenant, name, version)?;
    Ok(Json(metadata_body(&snap, &key, manifest)))
}

async fn metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, RouterError> {
    model_metadata(&state, &headers, &name, None)
}

async fn metadata_v(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, RouterError> {
    model_metadata(&state, &headers, &name, Some(&version))
}

/// 200 when the model can be served now: a live worker of its shard (or, before it is
/// placed, any live worker) exists.
fn model_ready(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    version: Option<&str>,
) -> Result<StatusCode, RouterError> {
    let snap = state.snapshot();
    let tenant = authenticate(&snap, headers)?;
    let (key, _) = resolve(&snap, &tenant, name, version)?;
    let live = match snap.assignments().get(&key) {
        Some(a) => a
            .value
            .workers
            .iter()
            .chain(&a.value.previous)
            .any(|w| snap.workers().contains_key(w)),
        None => !snap.workers().is_empty(),
    };
    if live {
        Ok(StatusCode::OK)
    } else {
        Err(RouterError::Unavailable(format!(
            "no live worker serves model {name:?}"
        )))
    }
}

async fn ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, RouterError> {
    model_ready(&state, &headers, &name, None)
}

async fn ready_v(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, RouterError> {
    model_ready(&state, &headers, &name, Some(&version))
}

// Handlers take the whole request: axum's `HeaderMap` extractor would clone the headers.
async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    score_request(&state, &name, None, &parts.headers, body).await
}

async fn infer_v(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    score_request(&state, &name, Some(&version), &parts.headers, body).await
}

async fn score_request(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let request = Inference {
        name,
        version,
        authorization: headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        deadline: headers
            .get(proxy::DEADLINE_HEADER)
            .map(HeaderValue::as_bytes),
    };
    let body = read_body(headers, body, state.limits.max_body);
    match score(state, request, body, &mut KeyMemo::default()).await {
        Ok(relay) => relay.into_response(),
        Err(e) => e.into_response(),
    }
}

/// What the inference path needs of a request besides its body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inference<'a> {
    pub name: &'a str,
    pub version: Option<&'a str>,
    /// The `Authorization` value.
    pub authorization: Option<&'a [u8]>,
    /// The `x-shardline-deadline-ms` value.
    pub deadline: Option<&'a [u8]>,
}

/// Authenticates, admits, reads (`body`, awaited only once the request is admitted)
/// and forwards one inference; counts its answer.
pub(crate) async fn score(
    state: &AppState,
    request: Inference<'_>,
    body: impl Future<Output = Result<Bytes, RouterError>>,
    keys: &mut KeyMemo,
) -> Result<Relay, RouterError> {
    let started = Instant::now();
    let _in_flight = InFlightGauge::enter(&state.metrics.in_flight);
    let snap = state.snapshot();
    let mut model = None;
    let result = async {
        let tenant = keys.tenant(&snap, request.authorization)?;
        let (key, manifest) = resolve(&snap, &tenant, request.name, request.version)?;
        if state.metrics.per_model() {
            model = Some(key.clone());
        }
        let deadline = proxy::deadline(request.deadline, state)?;
        let limits = snap
            .tenants()
            .get(&tenant)
            .map(|t| t.value.limits)
            .unwrap_or_default();
        let _permit = state.admit(&tenant, limits, started)?;
        let bytes = body.await?;
        proxy::infer(state, &snap, &key, manifest, bytes, deadline, started).await
    }
    .await;
    let status = match &result {
        Ok(relay) => relay.answer.status,
        Err(e) => e.status(),
    };
    state.metrics.answered(
        model.as_ref(),
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    result
}

/// The tenant of the last key a connection presented, for one snapshot revision: a
/// client sending the same key on every request pays for one digest per snapshot, and
/// a rotated or revoked key stops working with the snapshot that says so (any change
/// moves the revision). Only the connection's own earlier key is compared, so the
/// plain comparison reveals nothing about anyone else's.
#[derive(Debug, Default)]
pub(crate) struct KeyMemo {
    revision: i64,
    key: Vec<u8>,
    tenant: Option<TenantId>,
}

impl KeyMemo {
    fn tenant(&mut self, snap: &Snapshot, value: Option<&[u8]>) -> Result<TenantId, RouterError> {
        if let (Some(tenant), Some(value)) = (&self.tenant, value)
            && self.revision == snap.revision()
            && self.key == value
        {
            return Ok(tenant.clone());
        }
        self.tenant = None;
        let tenant = authenticate_value(snap, value)?;
        self.revision = snap.revision();
        self.key.clear();
        self.key.extend_from_slice(value.unwrap_or_default());
        self.tenant = Some(tenant.clone());
        Ok(tenant)
    }
}

/// Counts a request in flight until dropped (also when the client goes away mid-request).
struct InFlightGauge<'a>(&'a IntGauge);

impl<'a> InFlightGauge<'a> {
    fn enter(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlightGauge<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, RouterError> {
    shardline_service::http::read_body(headers, body, limit)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(limit) => RouterError::TooLarge(limit),
            BodyError::Unreadable(_) => RouterError::BadRequest(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_shared::keys::Prefix;

    /// A snapshot at `revision` where tenant `acme` holds the keys whose digests are given.
    fn snapshot(revision: i64, keys: &[&str]) -> Snapshot {
        let keys: Vec<serde_json::Value> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let digest = hex::encode(shardline_shared::auth::digest_bytes(k));
                json!({"id": format!("k{i}"), "sha256": digest, "created_at": 1})
            })
            .collect();
        let record = json!({"keys": keys, "created_at": 1}).to_string();
        let (snap, invalid) = Snapshot::from_kvs(
            Prefix::default(),
            revision,
            [("/shardline/tenants/acme", record.as_bytes(), 1)],
        );
        assert!(invalid.is_empty(), "{invalid:?}");
        snap
    }

    #[test]
    fn the_key_memo_answers_like_the_snapshot_and_forgets_on_a_new_revision() {
        let mut memo = KeyMemo::default();
        let first = snapshot(5, &["secret-1"]);
        let acme = |r: Result<TenantId, RouterError>| r.map(|t| t.as_str().to_owned());
        for _ in 0..2 {
            assert_eq!(
                acme(memo.tenant(&first, Some(b"Bearer secret-1"))),
                Ok("acme".into())
            );
        }
        // Another key on the same connection is checked, not taken from the memo.
        for wrong in [
            &b"Bearer secret-2"[..],
            b"Bearer secret-1x",
            b"Basic secret-1",
        ] {
            assert_eq!(
                memo.tenant(&first, Some(wrong)),
                Err(RouterError::Unauthorized),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert_eq!(memo.tenant(&first, None), Err(RouterError::Unauthorized));
        // Rotated: the next snapshot no longer holds the key.
        assert_eq!(
            acme(memo.tenant(&first, Some(b"Bearer secret-1"))),
            Ok("acme".into())
        );
        let rotated = snapshot(6, &["secret-2"]);
        assert_eq!(
            memo.tenant(&rotated, Some(b"Bearer secret-1")),
            Err(RouterError::Unauthorized)
        );
        assert_eq!(
            acme(memo.tenant(&rotated, Some(b"Bearer secret-2"))),
            Ok("acme".into())
        );
    }
}
