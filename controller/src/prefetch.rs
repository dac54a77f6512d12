//! Asking a worker to load a model before it is named in an assignment.
//!
//! [`Prefetch`] is the seam (tests record calls through it); [`HttpPrefetcher`] calls
//! the worker's internal API, `POST /v2/repository/models/{tenant}.{model}/load` with
//! the internal token and `{"parameters":{"version":"<v>"}}`, which answers 200 once
//! the model is resident. [`PrefetchError::from_status`] says which failures are worth
//! retrying (the swap waits) and which are not (the swap goes ahead; the model will
//! cold-start on the new member).

use std::future::Future;
use std::time::Duration;

use shardline_shared::ids::{ModelKey, VersionId};
use tracing::warn;

/// Why a prefetch did not make the model resident.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefetchError {
    /// Worth retrying later (unreachable worker, timeout, 503, 429).
    #[error("prefetch failed, will retry: {0}")]
    Transient(String),
    /// Retrying will not help (unknown model, corrupt or too large artifact).
    #[error("prefetch failed for good: {0}")]
    Permanent(String),
}

impl PrefetchError {
    /// Classifies a worker's answer to a load request.
    pub fn from_status(status: u16, body: &str) -> Option<Self> {
        let reason = format!("worker answered {status}: {}", body.trim());
        match status {
            200..=299 => None,
            429 | 500 | 503 | 504 => Some(Self::Transient(reason)),
            _ => Some(Self::Permanent(reason)),
        }
    }
}

/// Asks a worker to load a model version and waits until it is resident.
pub trait Prefetch: Send + Sync {
    fn prefetch(
        &self,
        address: &str,
        model: &ModelKey,
        version: &VersionId,
    ) -> impl Future<Output = Result<(), PrefetchError>> + Send;
}

/// [`Prefetch`] over the worker's internal API (`POST .../load`, plain HTTP).
#[derive(Debug, Clone)]
pub struct HttpPrefetcher {
    client: reqwest::Client,
    token: String,
}

impl HttpPrefetcher {
    /// A client presenting `token`, giving each load at most `timeout`.
    pub fn new(token: impl Into<String>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2).min(timeout))
            .timeout(timeout)
            .build()
            .unwrap_or_else(|e| {
                // Plain HTTP only: building fails only if the system resolver cannot be set up.
                warn!(error = %e, "prefetch client setup failed; using a default client");
                reqwest::Client::default()
            });
        Self {
            client,
            token: token.into(),
        }
    }
}

impl Prefetch for HttpPrefetcher {
    async fn prefetch(
        &self,
        address: &str,
        model: &ModelKey,
        version: &VersionId,
    ) -> Result<(), PrefetchError> {
        let url = format!(
            "http://{address}/v2/repository/models/{}.{}/load",
            model.tenant, model.model
        );
        let body = serde_json::json!({"parameters": {"version": version.as_str()}});
        let resp = self
            .client
            .post(url)
            .header(shardline_shared::wire::TOKEN_HEADER, &self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| PrefetchError::Transient(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match PrefetchError::from_status(status, &text) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}
