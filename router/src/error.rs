//! The one place where every answer the router itself refuses with gets its HTTP status.
//!
//! Bodies are `{"error": "<lowercase message>"}`; 429 and 503 answers carry
//! `Retry-After`. Answers that come from a worker are forwarded as the worker gave them.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shardline_shared::decode::DecodeError;

/// Why the router answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("missing or invalid api key")]
    Unauthorized,
    /// Unknown model or version, or another tenant's (which must look the same).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body came slower than `--body-timeout` and `--body-min-rate` allow.
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("deadline of {0:?} exceeded")]
    DeadlineExceeded(Duration),
    #[error("no such endpoint")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl RouterError {
    pub fn status(&self) -> StatusCode {
        match self {
            RouterError::Unauthorized => StatusCode::UNAUTHORIZED,
            RouterError::NotFound(_) | RouterError::NoRoute => StatusCode::NOT_FOUND,
            RouterError::BadRequest(_) | RouterError::Decode(_) => StatusCode::BAD_REQUEST,
            RouterError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RouterError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            RouterError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            RouterError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RouterError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            RouterError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            RouterError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            RouterError::Unavailable(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// `{"error": message}` with `status` (and `Retry-After` when given).
pub fn error_response(
    status: StatusCode,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if let Some(after) = retry_after {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"shardline\""),
        );
    }
    response
}

impl IntoResponse for RouterError {
    fn into_response(self) -> Response {
        error_response(self.status(), &self.to_string(), self.retry_after())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_headers() {
        let r = RouterError::Unavailable("no live worker".into()).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = RouterError::TooManyRequests {
            message: "over".into(),
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = RouterError::Unauthorized.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            RouterError::TooLarge(10).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
