//! Unloading models: explicit [`remove`](ModelCache::remove), idle sweeps (once or on a
//! background task), and reporting every eviction, whatever its reason, to the events
//! hook. Evicted models are dropped outside the lock.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::debug;

use super::flight::Evicted;
use super::{EvictReason, ModelCache, Removal, Weighted};

impl<K, V, E> ModelCache<K, V, E>
where
    K: Ord + Clone + fmt::Debug + Send + Sync + 'static,
    V: Weighted + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// Unloads `key`. An unleased model goes now; a leased one is marked draining: new
    /// calls wait for it to go (bounded by their deadline) and then load it afresh, and it
    /// unloads when its last lease drops. A load in progress for `key` is not affected.
    /// Also forgets a cached load failure of `key`, so the next call loads at once.
    pub fn remove(&self, key: &K) -> Removal {
        let (removal, evicted) = {
            let mut state = self.inner.lock();
            state.failures.remove(key);
            let removal = state.policy.remove(key);
            let evicted = match removal {
                Removal::Removed { .. } => state.take_values(std::slice::from_ref(key)),
                Removal::Deferred | Removal::Absent => Vec::new(),
            };
            (removal, evicted)
        };
        if !evicted.is_empty() {
            self.inner.room.notify_waiters();
        }
        self.report_evictions(evicted, EvictReason::Explicit);
        removal
    }

    /// Unloads the unleased models unused for longer than `ttl`; returns their keys, least
    /// recently used first. Also forgets expired load failures.
    pub fn sweep_idle(&self, ttl: Duration) -> Vec<K> {
        let now = Instant::now();
        let evicted = {
            let mut state = self.inner.lock();
            state.failures.retain(|_, (_, until)| *until > now);
            let idle = state.policy.idle(now.into_std(), ttl);
            for key in &idle {
                state.policy.remove(key);
            }
            state.take_values(&idle)
        };
        let keys = evicted.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
        if !keys.is_empty() {
            self.inner.room.notify_waiters();
        }
        self.report_evictions(evicted, EvictReason::Idle);
        keys
    }

    /// Runs [`sweep_idle(ttl)`](Self::sweep_idle) every `interval` (at least 1 ms) on tokio
    /// time, starting one `interval` from now. The task ends once every handle to the
    /// cache and every lease are dropped; abort the handle to stop it sooner.
    pub fn spawn_idle_sweeper(&self, ttl: Duration, interval: Duration) -> JoinHandle<()> {
        let cache = Arc::downgrade(&self.inner);
        let interval = interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = cache.upgrade() else { break };
                let swept = Self { inner }.sweep_idle(ttl);
                if !swept.is_empty() {
                    debug!(models = ?swept, "idle sweep unloaded models");
                }
            }
        })
    }

    pub(super) fn report_evictions(&self, evicted: Vec<Evicted<K, V>>, reason: EvictReason) {
        for Evicted { key, bytes, value } in evicted {
            debug!(model = ?key, bytes, ?reason, "model evicted");
            self.inner.events.on_evict(&key, reason, bytes);
            // The model's memory is freed here, outside the lock, unless a clone of its
            // `Arc` outlived its leases.
            drop(value);
        }
    }
}
