//! [`Lease`]: a caller's hold on a resident model. While a lease is alive its model is
//! pinned (never evicted, never unloaded); dropping it releases the pin.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A pinned, resident model. Derefs to the cache's `Arc<V>`, so methods of `V` are called
/// directly on the lease.
///
/// Keep the lease, not a clone of the `Arc`, for as long as the model is used: a cloned
/// `Arc` outlives the pin, so the cache may evict the entry and stop accounting for the
/// memory that clone still holds. To use the model on a blocking thread, move the lease
/// itself into the closure (it is `Send + 'static` when `V: Send + Sync`).
#[must_use = "the model is unpinned as soon as the lease is dropped"]
pub struct Lease<V> {
    value: Arc<V>,
    /// Unpins the entry; boxed so the lease does not carry the cache's key and error
    /// types. `None` only while dropping.
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<V> Lease<V> {
    pub(super) fn new(value: Arc<V>, release: Box<dyn FnOnce() + Send + Sync>) -> Self {
        Self {
            value,
            release: Some(release),
        }
    }
}

impl<V> Deref for Lease<V> {
    type Target = Arc<V>;

    fn deref(&self) -> &Arc<V> {
        &self.value
    }
}

impl<V> Drop for Lease<V> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl<V> fmt::Debug for Lease<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}
