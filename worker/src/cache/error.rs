//! [`CacheError`]: why the model cache returned no model. The HTTP layer picks the status
//! for each kind in its one error-to-response mapping; the suggested statuses below are
//! only a guide.

use std::sync::Arc;
use std::time::Duration;

/// Why [`ModelCache::get_or_load`](super::ModelCache::get_or_load) returned no model.
#[derive(Debug, thiserror::Error)]
pub enum CacheError<E> {
    /// The model can never fit: its peak size (or, once loaded, its actual size) exceeds
    /// the whole budget (507).
    #[error("model needs {needed} bytes, more than the cache budget of {budget} bytes")]
    TooLarge { needed: u64, budget: u64 },
    /// The room the model needs is held by models in use, by other loads, or by this
    /// model draining after a `remove`, and it did not free up before the caller's
    /// deadline (503).
    #[error("no room for the model after waiting {waited:?}: the cache is full of models in use")]
    NoRoom { waited: Duration },
    /// The loader failed, in this call or within the failure backoff (the error is shared
    /// by every call that got it); new calls load again after `retry_after` (503 with
    /// `Retry-After`, or what `E` calls for).
    #[error("model load failed (retry after {retry_after:?}): {error}")]
    LoadFailed {
        error: Arc<E>,
        retry_after: Duration,
    },
    /// The loaded model holds more than its load reserved, and no unpinned model could be
    /// evicted for the difference: its manifest's size is wrong. Cached like a load
    /// failure (500).
    #[error(
        "loaded model holds {actual} bytes, more than its hint of {hinted} bytes, and no room was free for the difference"
    )]
    SizeHintExceeded { hinted: u64, actual: u64 },
}

impl<E> CacheError<E> {
    /// This error as returned `retry_after` from now (for a cached failure).
    pub(super) fn with_retry_after(self, retry_after: Duration) -> Self {
        match self {
            Self::LoadFailed { error, .. } => Self::LoadFailed { error, retry_after },
            other => other,
        }
    }
}

/// By hand: `E` need not be `Clone`, the load error is shared through its `Arc`.
impl<E> Clone for CacheError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::TooLarge { needed, budget } => Self::TooLarge {
                needed: *needed,
                budget: *budget,
            },
            Self::NoRoom { waited } => Self::NoRoom { waited: *waited },
            Self::LoadFailed { error, retry_after } => Self::LoadFailed {
                error: Arc::clone(error),
                retry_after: *retry_after,
            },
            Self::SizeHintExceeded { hinted, actual } => Self::SizeHintExceeded {
                hinted: *hinted,
                actual: *actual,
            },
        }
    }
}
