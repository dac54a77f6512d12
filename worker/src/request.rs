//! What the worker's handlers read of every request besides its path: the etcd revision
//! the router resolved it at, and the body, under a limit.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use shardline_service::http::BodyError;
use shardline_shared::wire::REVISION_HEADER;

use crate::error::ApiError;

/// The `x-shardline-revision` value, if any (and a number).
pub fn revision(headers: &HeaderMap) -> Option<i64> {
    headers.get(REVISION_HEADER)?.to_str().ok()?.parse().ok()
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    shardline_service::http::read_body(headers, body, limit)
        .await
        .map_err(|e| {
            let status = match e {
                BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Unreadable(_) => StatusCode::BAD_REQUEST,
                BodyError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            };
            ApiError::new(status, e.to_string())
        })
}
