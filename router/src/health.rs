//! What this router knows about each worker beyond etcd: requests it has in flight
//! there (for the power-of-two choice) and passive health — a worker whose connection
//! just failed is tried last for a short, growing while, so that one dead worker costs
//! a handful of retries rather than one per request until its lease expires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use prometheus::Histogram;
use shardline_shared::ids::WorkerId;

/// First ejection after a failure; doubled per consecutive failure up to [`MAX_EJECTION`].
const BASE_EJECTION: Duration = Duration::from_millis(500);
const MAX_EJECTION: Duration = Duration::from_secs(10);

/// One worker's counters.
#[derive(Debug, Default)]
pub struct WorkerHealth {
    /// This worker's `upstream_duration` series, resolved once (not per request).
    pub upstream_duration: OnceLock<Histogram>,
    /// This worker's id as the value of the answer's worker header, made once.
    pub header: OnceLock<Option<HeaderValue>>,
    in_flight: AtomicU32,
    consecutive_failures: AtomicU32,
    /// Milliseconds since [`Fleet::origin`] until which the worker is tried last.
    ejected_until_ms: AtomicU64,
}

impl WorkerHealth {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Marks one request in flight on a worker until dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<WorkerHealth>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Health of every worker this router has talked to.
#[derive(Debug)]
pub struct Fleet {
    origin: Instant,
    workers: RwLock<HashMap<WorkerId, Arc<WorkerHealth>>>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            workers: RwLock::default(),
        }
    }
}

impl Fleet {
    /// The counters of `id`, created on first use.
    pub fn get(&self, id: &WorkerId) -> Arc<WorkerHealth> {
        get_or_default(&self.workers, id)
    }

    /// Whether `h` is ejected at `now`.
    pub fn is_ejected(&self, h: &WorkerHealth, now: Instant) -> bool {
        h.ejected_until_ms.load(Ordering::Relaxed) > self.millis(now)
    }

    /// Counts a request in flight on `h`.
    pub fn enter(h: &Arc<WorkerHealth>) -> InFlightGuard {
        h.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(h.clone())
    }

    /// Records a failed attempt (no answer): ejects the worker for a while.
    pub fn failed(&self, h: &WorkerHealth, now: Instant) {
        let n = h
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .min(8);
        let ejection = (BASE_EJECTION * 2u32.pow(n)).min(MAX_EJECTION);
        h.ejected_until_ms
            .store(self.millis(now + ejection), Ordering::Relaxed);
    }

    /// Records an answer: the worker is reachable.
    pub fn answered(&self, h: &WorkerHealth) {
        if h.consecutive_failures.load(Ordering::Relaxed) != 0 {
            h.consecutive_failures.store(0, Ordering::Relaxed);
            h.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Forgets workers that are no longer live (keeps the map bounded).
    pub fn retain(&self, live: impl Fn(&WorkerId) -> bool) {
        self.workers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, h| live(id) || h.in_flight() > 0);
    }

    fn millis(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_millis() as u64
    }
}

/// The entry for `key`, inserted with its default on first use: a read lock on the hot
/// path, the write lock only to insert.
pub fn get_or_default<K, V>(map: &RwLock<HashMap<K, Arc<V>>>, key: &K) -> Arc<V>
where
    K: Eq + std::hash::Hash + Clone,
    V: Default,
{
    if let Some(v) = map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
        return v.clone();
    }
    map.write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.clone())
        .or_default()
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_eject_for_a_growing_while_and_an_answer_clears_it() {
        let fleet = Fleet::default();
        let id = WorkerId::new("w-1").unwrap();
        let h = fleet.get(&id);
        let t0 = Instant::now();
        assert!(!fleet.is_ejected(&h, t0));
        fleet.failed(&h, t0);
        assert!(fleet.is_ejected(&h, t0 + Duration::from_millis(400)));
        assert!(!fleet.is_ejected(&h, t0 + Duration::from_millis(600)));
        fleet.failed(&h, t0);
        assert!(fleet.is_ejected(&h, t0 + Duration::from_millis(900)));
        fleet.answered(&h);
        assert!(!fleet.is_ejected(&h, t0));
        {
            let _g = Fleet::enter(&h);
            assert_eq!(fleet.get(&id).in_flight(), 1);
            fleet.retain(|_| false);
            assert_eq!(fleet.get(&id).in_flight(), 1, "busy workers are kept");
        }
        assert_eq!(h.in_flight(), 0);
        fleet.retain(|_| false);
        assert_eq!(fleet.get(&id).in_flight(), 0);
    }
}
