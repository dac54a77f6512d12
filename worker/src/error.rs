//! The one place where every failure the worker can answer with gets its HTTP status.
//!
//! Bodies are `{"error": "<lowercase message>"}`; 503 answers carry `Retry-After`.
//! What the client reads never names the object store's paths, endpoints or bucket
//! ([`LoadError::client_message`]): those go to the worker's log, with the model.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::cache::CacheError;
use crate::decode::DecodeError;
use shardline_artifacts::FetchError;
use shardline_model::ModelError;

/// Why a model could not be loaded (the cache's loader error).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("model artifact is invalid: {0}")]
    Model(#[from] ModelError),
    #[error("config.json in the store does not match the registered manifest")]
    ConfigMismatch,
    #[error("model build task failed: {0}")]
    Join(String),
}

impl LoadError {
    /// What a client may read about this failure: the kind of fault and what the
    /// publisher can act on (a bad digest, a tensor shape), never where the store is or
    /// what its paths are. The full error is logged where the load fails.
    pub fn client_message(&self) -> String {
        match self {
            LoadError::Fetch(FetchError::NotFound { .. }) => {
                "model artifact not found in the model store".into()
            }
            LoadError::Fetch(FetchError::Corrupt { .. }) => {
                "model artifact is corrupt (its size or sha256 differs from the manifest)".into()
            }
            LoadError::Fetch(FetchError::Unavailable { .. }) => "model store unavailable".into(),
            LoadError::Fetch(FetchError::TooLarge { size, limit, .. }) => {
                format!("model artifact is {size} bytes, more than the limit of {limit} bytes")
            }
            LoadError::Fetch(FetchError::Other { .. }) => "model store error".into(),
            LoadError::Model(e) => format!("model artifact is invalid: {e}"),
            LoadError::ConfigMismatch => self.to_string(),
            LoadError::Join(_) => "model build failed".into(),
        }
    }

    /// Label for `shardline_worker_model_loads_total{result}`.
    pub fn result_label(&self) -> &'static str {
        match self {
            LoadError::Fetch(FetchError::NotFound { .. }) => "not_found",
            LoadError::Fetch(FetchError::Corrupt { .. }) | LoadError::ConfigMismatch => "corrupt",
            LoadError::Fetch(FetchError::Unavailable { .. }) => "unavailable",
            LoadError::Fetch(FetchError::TooLarge { .. }) => "too_large",
            LoadError::Model(_) => "invalid",
            LoadError::Fetch(FetchError::Other { .. }) | LoadError::Join(_) => "error",
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            retry_after: Some(retry_after),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::InputLength { .. } => Self::new(StatusCode::BAD_REQUEST, e.to_string()),
            // The inputs were valid but the model overflowed f32: say so rather than
            // send a wrong score.
            ModelError::NonFinite => Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<CacheError<LoadError>> for ApiError {
    fn from(e: CacheError<LoadError>) -> Self {
        match &e {
            CacheError::TooLarge { .. } => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
            }
            CacheError::NoRoom { .. } => Self::unavailable(e.to_string(), Duration::from_secs(1)),
            CacheError::SizeHintExceeded { .. } => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
            }
            CacheError::LoadFailed { error, retry_after } => {
                let retry = (*retry_after).max(Duration::from_secs(1));
                match &**error {
                    LoadError::Fetch(f) if f.is_retryable() => {
                        Self::unavailable(error.client_message(), retry)
                    }
                    // A broken artifact is the store's or the publisher's fault, not the
                    // caller's: a bad gateway answer tells the router not to blame the
                    // request, and the message says what is wrong.
                    other => Self {
                        status: StatusCode::BAD_GATEWAY,
                        message: format!("model could not be loaded: {}", other.client_message()),
                        retry_after: Some(retry),
                    },
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        let mut response = (self.status, body).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
