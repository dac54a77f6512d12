//! The worker's model cache: loads a tenant's model on its first request, keeps resident
//! models within a memory budget, evicts the least recently used ones to make room and
//! unloads idle ones. Generic over the key `K`, the model `V` (which reports its size
//! through [`Weighted`]) and the loader's error `E`; fetching and building models is the
//! caller's loader, metrics are the caller's [`CacheEvents`].
//!
//! Layout:
//! - this file: the public API, [`ModelCache`] and its types;
//! - [`policy`]: the pure bookkeeping (budget, reservations, pins, LRU and idle choice),
//!   property-tested;
//! - `flight.rs`: single-flight loads, the negative cache and their cancellation guard;
//! - `unload.rs`: explicit removal, idle sweeps, and reporting evictions;
//! - `error.rs`: [`CacheError`];
//! - `lease.rs`: [`Lease`], the guard that pins a model while a request uses it;
//! - `events.rs`: the [`CacheEvents`] metrics hook.
//!
//! Memory accounting. A load reserves its peak, `max(transient, resident)` of its
//! [`LoadSize`], before the loader runs, evicting unpinned models least recently used
//! first; the loader only starts once that room is free. When it finishes, the
//! reservation is replaced by the model's actual [`Weighted::resident_bytes`]. Resident
//! plus reserved bytes never exceed the budget. A model whose actual size exceeds its
//! reservation is kept only if unpinned models can be evicted for the difference, else
//! the load fails with [`CacheError::SizeHintExceeded`].
//!
//! Concurrency. Concurrent calls for a model that is not resident share one loader call
//! and its outcome. A failure is returned to all of them and then cached for
//! [`CacheConfig::failure_backoff`], during which calls fail fast without loading. A load
//! that has no room (the budget is held by leased models or other loads) waits until
//! room frees up or the caller's deadline passes. Dropping a `get_or_load` future
//! (timeout, client gone) is safe: if it was running the loader, its reservation is
//! released and one of the waiting calls, if any, loads instead. The state sits behind a
//! `std` mutex that is never held across an `.await` nor while calling the caller's code.

mod error;
mod events;
mod flight;
mod lease;
pub mod policy;
mod unload;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

pub use error::CacheError;
pub use events::{CacheEvents, EvictReason, LoadOutcome, NoEvents};
pub use lease::Lease;
pub use policy::Removal;

use flight::{Evicted, Step};
use policy::Policy;

/// How long a failed load is remembered by default before the next call retries it.
pub const DEFAULT_FAILURE_BACKOFF: Duration = Duration::from_secs(1);

/// A cached value that can tell how many bytes it keeps in memory.
pub trait Weighted {
    /// Bytes this value holds while resident (weights, buffers...).
    fn resident_bytes(&self) -> u64;
}

/// A model's expected memory use, known from its manifest before loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSize {
    /// Peak bytes held while the loader runs, everything included (e.g. the fetched file
    /// plus the built model: about twice `resident`).
    pub transient: u64,
    /// Bytes the model keeps once loaded.
    pub resident: u64,
}

impl LoadSize {
    /// What a load reserves: the larger of the two sizes.
    pub fn peak(&self) -> u64 {
        self.transient.max(self.resident)
    }
}

/// Settings of a [`ModelCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes that resident models plus loads in progress may use.
    pub budget_bytes: u64,
    /// How long a failed load is returned to new calls without retrying it.
    pub failure_backoff: Duration,
}

impl CacheConfig {
    /// A budget of `budget_bytes` and the default failure backoff.
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            budget_bytes,
            failure_backoff: DEFAULT_FAILURE_BACKOFF,
        }
    }
}

/// A resident model, as listed by [`ModelCache::resident`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidentInfo<K> {
    pub key: K,
    /// Bytes accounted for it (its actual size).
    pub bytes: u64,
    /// Time since it was last leased or released.
    pub idle_for: Duration,
    /// Leases alive now.
    pub leases: u32,
    /// Removed while leased: unloads when the last lease drops.
    pub draining: bool,
}

/// The cache's memory accounting at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub budget_bytes: u64,
    /// Bytes of resident models.
    pub resident_bytes: u64,
    /// Peak bytes reserved by loads in progress.
    pub reserved_bytes: u64,
}

/// Lazily loaded, memory-bounded, shared models. Cheap to clone: clones share one cache.
///
/// ```no_run
/// use std::time::Duration;
///
/// use shardline_worker::cache::{CacheConfig, LoadSize, ModelCache, Weighted};
///
/// struct Mlp {
///     weights: Vec<f32>,
/// }
///
/// impl Weighted for Mlp {
///     fn resident_bytes(&self) -> u64 {
///         (self.weights.len() * size_of::<f32>()) as u64
///     }
/// }
///
/// async fn fetch_and_build(id: &str) -> Result<Mlp, std::io::Error> {
///     # let _ = id;
///     # unimplemented!()
///     // fetch the artifact, check it, build the model...
/// }
///
/// # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
/// let cache: ModelCache<String, Mlp, std::io::Error> =
///     ModelCache::new(CacheConfig::new(8 << 30));
/// let _sweeper = cache.spawn_idle_sweeper(Duration::from_secs(600), Duration::from_secs(30));
///
/// // Sizes from the model's manifest; the load holds about twice the model's size.
/// let size = LoadSize { transient: 800 << 20, resident: 400 << 20 };
/// let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
/// let id = "tenant-a/churn".to_owned();
/// let model = cache
///     .get_or_load(id.clone(), size, deadline, || fetch_and_build(&id))
///     .await?;
/// // `model` pins the model until dropped: move it, not a clone of its `Arc`, into
/// // `spawn_blocking` to run it.
/// let _weights = model.weights.len();
/// # Ok(())
/// # }
/// ```
pub struct ModelCache<K, V, E> {
    inner: Arc<Inner<K, V, E>>,
}

struct Inner<K, V, E> {
    config: CacheConfig,
    events: Arc<dyn CacheEvents<K>>,
    state: Mutex<State<K, V, E>>,
    /// Signalled (`notify_waiters`) whenever room may have freed up or a draining model
    /// has gone: loads waiting for room look again.
    room: Notify,
}

struct State<K, V, E> {
    policy: Policy<K>,
    /// The resident models (draining ones included) and their accounted bytes.
    values: BTreeMap<K, (Arc<V>, u64)>,
    /// Loads in progress; the value becomes `Some(error)` if the load fails, and the
    /// sender is dropped when the load ends either way.
    loading: BTreeMap<K, watch::Receiver<Option<CacheError<E>>>>,
    /// Failed loads returned to new calls until `.1`.
    failures: BTreeMap<K, (CacheError<E>, Instant)>,
}

impl<K, V, E> Clone for ModelCache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, E> fmt::Debug for ModelCache<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelCache")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl<K, V, E> ModelCache<K, V, E>
where
    K: Ord + Clone + fmt::Debug + Send + Sync + 'static,
    V: Weighted + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// An empty cache that reports no events.
    pub fn new(config: CacheConfig) -> Self {
        Self::with_events(config, Arc::new(NoEvents))
    }

    /// An empty cache that reports to `events`.
    pub fn with_events(config: CacheConfig, events: Arc<dyn CacheEvents<K>>) -> Self {
        let state = State {
            policy: Policy::new(config.budget_bytes),
            values: BTreeMap::new(),
            loading: BTreeMap::new(),
            failures: BTreeMap::new(),
        };
        let inner = Inner {
            config,
            events,
            state: Mutex::new(state),
            room: Notify::new(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Leases `key`'s model, calling `loader` if it is not resident and no other call is
    /// loading it. `size` is the model's expected size; the load's peak is reserved
    /// before `loader` runs. Waiting for room ends at `deadline` with
    /// [`CacheError::NoRoom`]; waiting for a load (this call's or another's) is not
    /// bounded by `deadline`: wrap the call in `tokio::time::timeout` for that.
    pub async fn get_or_load<F, Fut>(
        &self,
        key: K,
        size: LoadSize,
        deadline: Instant,
        loader: F,
    ) -> Result<Lease<V>, CacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let started = Instant::now();
        let mut waited = false;
        let result = loop {
            // Created before looking, so no notification after the look is missed.
            let room = self.inner.room.notified();
            match self.step(&key, size) {
                Step::Ready(lease) => break Ok(lease),
                Step::Failed(error) => break Err(error),
                Step::Follow(mut outcome) => {
                    waited = true;
                    let failed = outcome
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|o| o.clone());
                    if let Some(error) = failed {
                        break Err(error);
                    }
                    // Loaded (or abandoned by its caller): look again.
                }
                Step::WaitForRoom => {
                    waited = true;
                    if tokio::time::timeout_at(deadline, room).await.is_err() {
                        break Err(CacheError::NoRoom {
                            waited: started.elapsed(),
                        });
                    }
                }
                Step::Lead(ticket, evicted) => {
                    waited = true;
                    self.report_evictions(evicted, EvictReason::Memory);
                    break self.lead(ticket, loader).await;
                }
            }
        };
        if waited {
            self.inner.events.on_wait(&key, started.elapsed());
        }
        result
    }

    /// Leases `key`'s model if it is resident (and not draining), without waiting.
    pub fn try_lease(&self, key: &K) -> Option<Lease<V>> {
        let now = Instant::now().into_std();
        let value = {
            let mut guard = self.inner.lock();
            let state = &mut *guard;
            let (value, _) = state.values.get(key)?;
            if !state.policy.pin(key, now) {
                return None;
            }
            Arc::clone(value)
        };
        Some(self.lease(key.clone(), value))
    }

    /// The resident models, least recently used first.
    pub fn resident(&self) -> Vec<ResidentInfo<K>> {
        let now = Instant::now().into_std();
        let state = self.inner.lock();
        let entries = state.policy.entries().map(|e| ResidentInfo {
            key: e.key.clone(),
            bytes: e.bytes,
            idle_for: now.saturating_duration_since(e.last_used),
            leases: e.pins,
            draining: e.draining,
        });
        entries.collect()
    }

    /// The memory accounting now.
    pub fn usage(&self) -> Usage {
        let state = self.inner.lock();
        Usage {
            budget_bytes: state.policy.budget(),
            resident_bytes: state.policy.resident_bytes(),
            reserved_bytes: state.policy.reserved_bytes(),
        }
    }
}

impl<K, V, E> Inner<K, V, E> {
    fn lock(&self) -> MutexGuard<'_, State<K, V, E>> {
        // No code panics while holding the lock, but a poisoned lock still holds
        // consistent state: keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Ord + Clone, V, E> State<K, V, E> {
    /// Takes the values of entries the policy has just dropped.
    fn take_values(&mut self, keys: &[K]) -> Vec<Evicted<K, V>> {
        let evicted = keys.iter().filter_map(|key| {
            let (value, bytes) = self.values.remove(key)?;
            Some(Evicted {
                key: key.clone(),
                bytes,
                value,
            })
        });
        evicted.collect()
    }
}
