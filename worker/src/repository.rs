//! The model-repository extension of the worker's internal API: the resident models
//! (`index`), and `load` / `unload` of a model version named in the path and, optionally,
//! in the body (`{"parameters": {"version": "3"}}`; nothing else of the body is kept).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use shardline_shared::manifest::Manifest;

use crate::error::ApiError;
use crate::request::{read_body, revision};
use crate::state::AppState;

pub(crate) async fn index(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let models: Vec<serde_json::Value> = state
        .cache
        .resident()
        .into_iter()
        .map(|r| {
            json!({
                "name": format!("{}.{}", r.key.model.tenant, r.key.model.model),
                "version": r.key.version.as_str(),
                "state": if r.draining { "UNLOADING" } else { "READY" },
                "bytes": r.bytes,
                "idle_seconds": r.idle_for.as_secs_f64(),
                "in_flight": r.leases,
            })
        })
        .collect();
    Json(serde_json::Value::Array(models))
}

/// A repository call's body: `{"parameters": {"version": "3"}}` selects a version. Only
/// that member is read; the rest of the body is skipped, never built into maps.
#[derive(Deserialize)]
struct RepositoryBody {
    #[serde(default)]
    parameters: Option<RepositoryParameters>,
}

#[derive(Deserialize)]
struct RepositoryParameters {
    #[serde(default)]
    version: Option<String>,
}

/// The version a repository call's body selects; `None`: the live one.
fn requested_version(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body: RepositoryBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid repository request (expected {{\"parameters\": {{\"version\": \"<version>\"}}}}): {}",
                shardline_shared::echo::bounded(&e.to_string(), 200)
            ),
        )
    })?;
    Ok(body.parameters.and_then(|p| p.version))
}

/// The manifest a repository call names: `{name}` plus an optional version in the body.
async fn repository_target(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Arc<Manifest>, ApiError> {
    state.catch_up(revision(headers)).await;
    let bytes = read_body(headers, body, 64 << 10).await?;
    let version = requested_version(&bytes)?;
    state.resolve(name, version.as_deref())
}

pub(crate) async fn load(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let manifest = repository_target(&state, &name, &headers, body).await?;
    drop(state.lease(manifest).await?);
    Ok(StatusCode::OK)
}

pub(crate) async fn unload(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let manifest = repository_target(&state, &name, &headers, body).await?;
    let key = crate::state::LoadedKey {
        model: manifest.key(),
        version: manifest.version.clone(),
    };
    state.cache.remove(&key);
    state.resident_changed.notify_one();
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::requested_version;

    #[test]
    fn a_repository_body_names_a_version_or_none() {
        let v = |body: &str| requested_version(body.as_bytes()).map_err(|e| e.status);
        assert_eq!(v(r#"{"parameters":{"version":"3"}}"#), Ok(Some("3".into())));
        let bomb = format!(
            r#"{{"parameters":{{{}}}}}"#,
            vec![r#""":{"":0}"#; 1000].join(",")
        );
        for none in [" \n", "{}", r#"{"parameters":null}"#, &bomb] {
            assert_eq!(v(none), Ok(None), "{none}");
        }
        for bad in [
            "[1]",
            "{",
            r#"{"parameters":{"version":3}}"#,
            r#"{"parameters":4}"#,
        ] {
            assert_eq!(v(bad), Err(axum::http::StatusCode::BAD_REQUEST), "{bad}");
        }
    }
}
