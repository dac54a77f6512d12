//! Single-flight loading: the locked decision each `get_or_load` round makes (lease a
//! resident model, fail fast from the negative cache, follow a load in progress, wait for
//! room, or lead a new load), the leader's [`Ticket`] that publishes the load's outcome,
//! and the lease release path. Every function here takes the lock, decides, and lets go
//! before anything is awaited or any caller code runs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::policy::{Admission, Commit, Released};
use super::{CacheError, EvictReason, Inner, Lease, LoadOutcome, LoadSize, ModelCache, Weighted};

/// A model dropped from the cache, reported and freed once the lock is released.
pub(super) struct Evicted<K, V> {
    pub(super) key: K,
    pub(super) bytes: u64,
    pub(super) value: Arc<V>,
}

/// What one round of `get_or_load` does next.
pub(super) enum Step<'a, K: Ord + Clone, V, E> {
    Ready(Lease<V>),
    Failed(CacheError<E>),
    /// Another call is loading the model: wait for its outcome.
    Follow(watch::Receiver<Option<CacheError<E>>>),
    /// No room (or the model is draining): wait for a room notification.
    WaitForRoom,
    /// This call loads; the evicted models made room for it.
    Lead(Ticket<'a, K, V, E>, Vec<Evicted<K, V>>),
}

/// The leader's hold on a load in progress. Dropped unfinished (the caller's future was
/// dropped, or the loader panicked), it releases the reservation and wakes the followers,
/// one of which then loads instead.
pub(super) struct Ticket<'a, K: Ord + Clone, V, E> {
    inner: &'a Inner<K, V, E>,
    key: K,
    size: LoadSize,
    outcome: watch::Sender<Option<CacheError<E>>>,
    finished: bool,
}

impl<K: Ord + Clone, V, E> Drop for Ticket<'_, K, V, E> {
    fn drop(&mut self) {
        if !self.finished {
            {
                let mut state = self.inner.lock();
                state.loading.remove(&self.key);
                state.policy.cancel(&self.key);
            }
            self.inner.room.notify_waiters();
        }
        // `outcome` drops after this, waking the followers once the state is updated.
    }
}

impl<K, V, E> ModelCache<K, V, E>
where
    K: Ord + Clone + fmt::Debug + Send + Sync + 'static,
    V: Weighted + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    pub(super) fn step(&self, key: &K, size: LoadSize) -> Step<'_, K, V, E> {
        let now = Instant::now();
        let mut guard = self.inner.lock();
        let state = &mut *guard;
        if let Some((value, _)) = state.values.get(key) {
            if state.policy.pin(key, now.into_std()) {
                return Step::Ready(self.lease(key.clone(), Arc::clone(value)));
            }
            return Step::WaitForRoom; // Draining: it goes when its last lease drops.
        }
        if let Some((error, until)) = state.failures.get(key) {
            if *until > now {
                return Step::Failed(error.clone().with_retry_after(*until - now));
            }
            state.failures.remove(key);
        }
        if let Some(outcome) = state.loading.get(key) {
            return Step::Follow(outcome.clone());
        }
        match state
            .policy
            .reserve(key.clone(), size.transient, size.resident)
        {
            Admission::TooLarge => {
                let budget = state.policy.budget();
                Step::Failed(CacheError::TooLarge {
                    needed: size.peak(),
                    budget,
                })
            }
            Admission::Busy | Admission::Present => Step::WaitForRoom,
            Admission::Admit { evict } => {
                let evicted = state.take_values(&evict);
                let (outcome, follow) = watch::channel(None);
                state.loading.insert(key.clone(), follow);
                let ticket = Ticket {
                    inner: &self.inner,
                    key: key.clone(),
                    size,
                    outcome,
                    finished: false,
                };
                Step::Lead(ticket, evicted)
            }
        }
    }

    /// Runs the loader and publishes its outcome.
    pub(super) async fn lead<F, Fut>(
        &self,
        ticket: Ticket<'_, K, V, E>,
        loader: F,
    ) -> Result<Lease<V>, CacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let started = Instant::now();
        let loaded = loader().await;
        let took = started.elapsed();
        match loaded {
            Ok(value) => self.commit(ticket, value, took),
            Err(error) => {
                warn!(model = ?ticket.key, error = %error, ?took, "model load failed");
                let retry_after = self.inner.config.failure_backoff;
                let error = CacheError::LoadFailed {
                    error: Arc::new(error),
                    retry_after,
                };
                Err(self.fail(ticket, error, took))
            }
        }
    }

    fn commit(
        &self,
        mut ticket: Ticket<'_, K, V, E>,
        value: V,
        took: Duration,
    ) -> Result<Lease<V>, CacheError<E>> {
        let (key, hinted) = (ticket.key.clone(), ticket.size.resident);
        let actual = value.resident_bytes();
        if actual > hinted {
            warn!(model = ?key, hinted, actual, "model is larger than its size hint");
        }
        let value = Arc::new(value);
        let now = Instant::now();
        let committed = {
            let mut state = self.inner.lock();
            match state.policy.commit(key.clone(), actual, now.into_std()) {
                Commit::Resident { evict } => {
                    ticket.finished = true;
                    state.loading.remove(&key);
                    let evicted = state.take_values(&evict);
                    state
                        .values
                        .insert(key.clone(), (Arc::clone(&value), actual));
                    state.policy.pin(&key, now.into_std());
                    Ok(evicted)
                }
                Commit::TooLarge => Err(CacheError::TooLarge {
                    needed: actual,
                    budget: state.policy.budget(),
                }),
                // `NotReserved` cannot happen: the ticket holds the reservation until now.
                Commit::NoRoom | Commit::NotReserved => {
                    Err(CacheError::SizeHintExceeded { hinted, actual })
                }
            }
        };
        let evicted = match committed {
            Ok(evicted) => evicted,
            Err(error) => {
                warn!(model = ?key, hinted, actual, error = %error, "loaded model does not fit");
                return Err(self.fail(ticket, error, took));
            }
        };
        // The load's transient bytes are free now.
        self.inner.room.notify_waiters();
        debug!(model = ?key, bytes = actual, ?took, "model loaded");
        self.inner
            .events
            .on_load(&key, LoadOutcome::Loaded { bytes: actual }, took);
        self.report_evictions(evicted, EvictReason::Memory);
        drop(ticket); // Wakes the followers, who find the model resident.
        Ok(self.lease(key, value))
    }

    /// Publishes a failed load to its followers and the negative cache.
    fn fail(
        &self,
        mut ticket: Ticket<'_, K, V, E>,
        error: CacheError<E>,
        took: Duration,
    ) -> CacheError<E> {
        ticket.finished = true;
        let backoff = self.inner.config.failure_backoff;
        {
            let mut state = self.inner.lock();
            state.loading.remove(&ticket.key);
            state.policy.cancel(&ticket.key);
            if !backoff.is_zero() {
                let until = Instant::now() + backoff;
                state
                    .failures
                    .insert(ticket.key.clone(), (error.clone(), until));
            }
            ticket.outcome.send_replace(Some(error.clone()));
        }
        self.inner.room.notify_waiters();
        self.inner
            .events
            .on_load(&ticket.key, LoadOutcome::Failed, took);
        error
    }

    /// A lease on `key`, which the caller has just pinned.
    pub(super) fn lease(&self, key: K, value: Arc<V>) -> Lease<V> {
        let cache = self.clone();
        Lease::new(value, Box::new(move || cache.release(&key)))
    }

    fn release(&self, key: &K) {
        let now = Instant::now().into_std();
        let (released, evicted) = {
            let mut state = self.inner.lock();
            let released = state.policy.unpin(key, now);
            let evicted = match released {
                Released::Removed { .. } => state.take_values(std::slice::from_ref(key)),
                Released::StillPinned | Released::Idle | Released::NotPinned => Vec::new(),
            };
            (released, evicted)
        };
        if matches!(released, Released::Idle | Released::Removed { .. }) {
            self.inner.room.notify_waiters();
        }
        self.report_evictions(evicted, EvictReason::Explicit);
    }
}
