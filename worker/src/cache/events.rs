//! The hook through which the model cache reports what it does (loads, evictions, cold
//! waits) to the caller's metrics. The cache owns no metrics itself: the worker implements
//! [`CacheEvents`] over the counters it registered and passes it to
//! [`ModelCache::with_events`](super::ModelCache::with_events).

use std::time::Duration;

/// Why a model left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvictReason {
    /// Unused for longer than the idle TTL ([`sweep_idle`](super::ModelCache::sweep_idle)).
    Idle,
    /// Evicted, least recently used first, to make room for a load.
    Memory,
    /// Unloaded by [`remove`](super::ModelCache::remove) (when its last lease dropped, if
    /// it was in use).
    Explicit,
}

/// How a loader call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    /// The model is resident with `bytes` accounted.
    Loaded { bytes: u64 },
    /// The loader failed, or its model could not be kept (larger than its hint with no
    /// room for the difference, or larger than the budget).
    Failed,
}

/// Callbacks for the caller's metrics. Every method defaults to doing nothing. They are
/// called outside the cache's lock but on the request's task, so they must be cheap and
/// must not block.
pub trait CacheEvents<K>: Send + Sync {
    /// A loader call finished (`took` is the loader's own run time).
    fn on_load(&self, _key: &K, _outcome: LoadOutcome, _took: Duration) {}

    /// A resident model left the cache, releasing `bytes`.
    fn on_evict(&self, _key: &K, _reason: EvictReason, _bytes: u64) {}

    /// A `get_or_load` call did not find its model ready and waited `waited` (for its own
    /// load, another caller's load, or room) before it returned, successfully or not.
    fn on_wait(&self, _key: &K, _waited: Duration) {}
}

/// The default [`CacheEvents`]: records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl<K> CacheEvents<K> for NoEvents {}
