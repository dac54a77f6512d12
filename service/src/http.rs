//! HTTP plumbing every Shardline server shares: reading a request body under a size
//! limit (refused from `Content-Length` before reading when it is announced), and telling
//! a body that came too slowly from one that broke.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Larger than the limit (HTTP 413).
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The client's stream failed (HTTP 400).
    #[error("could not read request body: {0}")]
    Unreadable(String),
    /// The body came slower than the connection limits allow (HTTP 408; the
    /// connection is closed).
    #[error("request body not received in time")]
    TimedOut,
}

/// Reads the whole body, refusing more than `limit` bytes: up front when
/// `Content-Length` announces more, otherwise as soon as the limit is passed.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.to_string().contains("length limit") {
            BodyError::TooLarge(limit)
        } else if timed_out(&e) {
            BodyError::TimedOut
        } else {
            BodyError::Unreadable(e.to_string())
        }
    })
}

/// Whether an I/O timeout (the connection's body deadline, `conn::Guarded`) caused `e`.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}
