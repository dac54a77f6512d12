//! Tests of the model cache: property tests of the pure policy (`policy.rs`), and
//! scenario tests of the async shell on paused tokio time (`loading.rs`: single flight,
//! failures, cancellation, sizes; `eviction.rs`: LRU, leases, room waits, idle sweeps,
//! removal). This file holds the shell tests' harness: a model that reports its size, a
//! loader that counts its calls, and an events recorder.

mod eviction;
mod loading;
mod policy;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tokio::time::{Instant, sleep};

use crate::cache::{
    CacheConfig, CacheError, CacheEvents, EvictReason, Lease, LoadOutcome, LoadSize, ModelCache,
    Weighted,
};

type Key = &'static str;
type Cache = ModelCache<Key, Model, LoadError>;
type Loader = Box<dyn FnOnce() -> BoxFuture<'static, Result<Model, LoadError>> + Send>;

#[derive(Debug)]
struct Model {
    bytes: u64,
}

impl Weighted for Model {
    fn resident_bytes(&self) -> u64 {
        self.bytes
    }
}

#[derive(Debug, PartialEq, Eq)]
struct LoadError(&'static str);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Counts what the cache reports.
#[derive(Debug, Default)]
struct Recorder {
    loaded: AtomicUsize,
    failed: AtomicUsize,
    waits: AtomicUsize,
    evictions: Mutex<Vec<(Key, EvictReason, u64)>>,
}

impl CacheEvents<Key> for Recorder {
    fn on_load(&self, _key: &Key, outcome: LoadOutcome, _took: Duration) {
        match outcome {
            LoadOutcome::Loaded { .. } => self.loaded.fetch_add(1, Ordering::SeqCst),
            LoadOutcome::Failed => self.failed.fetch_add(1, Ordering::SeqCst),
        };
    }

    fn on_evict(&self, key: &Key, reason: EvictReason, bytes: u64) {
        self.evictions.lock().unwrap().push((*key, reason, bytes));
    }

    fn on_wait(&self, _key: &Key, _waited: Duration) {
        self.waits.fetch_add(1, Ordering::SeqCst);
    }
}

impl Recorder {
    fn evicted(&self, reason: EvictReason) -> Vec<Key> {
        let evictions = self.evictions.lock().unwrap();
        evictions
            .iter()
            .filter(|e| e.1 == reason)
            .map(|e| e.0)
            .collect()
    }

    fn count(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// Loaders that count their calls.
#[derive(Debug, Clone, Default)]
struct Loads(Arc<AtomicUsize>);

impl Loads {
    fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// A loader that sleeps `delay`, then returns a model of `Ok(bytes)` or fails.
    fn after(&self, delay: Duration, result: Result<u64, &'static str>) -> Loader {
        let calls = self.0.clone();
        Box::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                sleep(delay).await;
                result.map(|bytes| Model { bytes }).map_err(LoadError)
            }
            .boxed()
        })
    }

    fn ok(&self, bytes: u64) -> Loader {
        self.after(Duration::ZERO, Ok(bytes))
    }

    fn never(&self) -> Loader {
        self.after(Duration::MAX, Err("unreachable"))
    }
}

fn cache_with(config: CacheConfig) -> (Cache, Arc<Recorder>) {
    let events = Arc::new(Recorder::default());
    (Cache::with_events(config, events.clone()), events)
}

fn cache(budget: u64) -> (Cache, Arc<Recorder>) {
    cache_with(CacheConfig::new(budget))
}

fn size(bytes: u64) -> LoadSize {
    LoadSize {
        transient: bytes,
        resident: bytes,
    }
}

fn in_secs(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// `get_or_load` of a model hinted at `bytes`, waiting for room up to one second.
async fn get(
    cache: &Cache,
    key: Key,
    bytes: u64,
    loader: Loader,
) -> Result<Lease<Model>, CacheError<LoadError>> {
    cache
        .get_or_load(key, size(bytes), in_secs(1), loader)
        .await
}

/// (resident, reserved) bytes.
fn accounted(cache: &Cache) -> (u64, u64) {
    let usage = cache.usage();
    (usage.resident_bytes, usage.reserved_bytes)
}

fn assert_within_budget(cache: &Cache) {
    let usage = cache.usage();
    let used = usage.resident_bytes + usage.reserved_bytes;
    assert!(used <= usage.budget_bytes, "{usage:?}");
}
