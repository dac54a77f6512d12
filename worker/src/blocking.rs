//! Bounded blocking work: model builds and large forward passes run on tokio's blocking
//! threads, at most `--max-blocking` at once, with at most `--max-blocking-queue` more
//! waiting for a turn. A request whose forward pass finds both full is refused at once
//! (503 with `Retry-After`; the router tries another member) instead of joining an
//! unbounded queue whose wait no deadline survives.
//!
//! A load is never refused here: other requests may be waiting on it, and it was admitted
//! under the memory budget already; it waits for a turn like queued work does (and counts
//! in the queue, so forward passes see the worker as busier).
//!
//! Work that has started runs to its end whether or not anyone still waits for it (a
//! blocking closure cannot be stopped), and it holds its turn until then: a client that
//! goes away frees no thread that is still busy. Work still waiting for its turn leaves
//! the queue when its request is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::{IntCounter, IntGauge};
use tokio::sync::Semaphore;
use tokio::task::JoinError;

/// The worker's blocking work: turns to run and room to wait.
#[derive(Debug, Clone)]
pub struct Blocking {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    turns: Arc<Semaphore>,
    /// Work admitted and not ended: running plus waiting.
    admitted: AtomicUsize,
    /// Most work admitted at once: turns plus queue.
    most: usize,
    gauge: IntGauge,
    refused: IntCounter,
}

/// Why work was not admitted: `running + waiting` were already at `most`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub most: usize,
}

/// A place in the queue, given back when dropped (when the work ends, or when its request
/// is dropped before its turn came).
#[derive(Debug)]
pub struct Admitted {
    inner: Arc<Inner>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.inner.admitted.fetch_sub(1, Ordering::AcqRel);
        self.inner.gauge.dec();
    }
}

impl Blocking {
    /// `running` turns (at least one) and `queue` places to wait; `gauge` shows the work
    /// admitted (running and waiting), `refused` counts refusals.
    pub fn new(running: usize, queue: usize, gauge: IntGauge, refused: IntCounter) -> Self {
        let running = running.max(1);
        Self {
            inner: Arc::new(Inner {
                turns: Arc::new(Semaphore::new(running)),
                admitted: AtomicUsize::new(0),
                most: running.saturating_add(queue),
                gauge,
                refused,
            }),
        }
    }

    /// A place for work that may be refused (a forward pass), or [`Busy`].
    pub fn admit(&self) -> Result<Admitted, Busy> {
        let most = self.inner.most;
        let admitted = self
            .inner
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < most).then_some(n + 1)
            });
        match admitted {
            Ok(_) => {
                self.inner.gauge.inc();
                Ok(Admitted {
                    inner: self.inner.clone(),
                })
            }
            Err(_) => {
                self.inner.refused.inc();
                Err(Busy { most })
            }
        }
    }

    /// A place for work that is never refused (a load others wait on).
    pub fn admit_always(&self) -> Admitted {
        self.inner.admitted.fetch_add(1, Ordering::AcqRel);
        self.inner.gauge.inc();
        Admitted {
            inner: self.inner.clone(),
        }
    }

    /// Work admitted and not ended.
    pub fn admitted(&self) -> usize {
        self.inner.admitted.load(Ordering::Acquire)
    }
}

impl Admitted {
    /// Waits for a turn, then runs `work` on a blocking thread. The turn and the place are
    /// held until `work` returns, even if the caller stops waiting.
    pub async fn run<T, F>(self, work: F) -> Result<T, JoinError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // The semaphore is never closed.
        let turn = self.inner.turns.clone().acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop((turn, self));
            out
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn blocking(running: usize, queue: usize) -> Blocking {
        Blocking::new(
            running,
            queue,
            IntGauge::new("blocking", "test").unwrap(),
            IntCounter::new("refused", "test").unwrap(),
        )
    }

    #[test]
    fn admits_turns_plus_queue_then_refuses() {
        let b = blocking(2, 1);
        let held: Vec<_> = (0..3).map(|_| b.admit().unwrap()).collect();
        assert_eq!(b.admit().unwrap_err(), Busy { most: 3 });
        assert_eq!(b.inner.refused.get(), 1);
        // A load is admitted regardless, and counts.
        let load = b.admit_always();
        assert_eq!((b.admitted(), b.inner.gauge.get()), (4, 4));
        drop(held);
        let two = (b.admit().unwrap(), b.admit().unwrap());
        assert!(b.admit().is_err(), "the load still holds a place");
        drop((load, two));
        assert!(b.admit().is_ok());
        assert_eq!((b.admitted(), b.inner.gauge.get()), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_turns_run_and_started_work_keeps_its_place_when_dropped() {
        let b = blocking(1, 1);
        let (started_tx, started) = mpsc::channel();
        let (release, gate) = mpsc::channel::<()>();
        let running = tokio::spawn(b.admit().unwrap().run(move || {
            started_tx.send(()).unwrap();
            gate.recv().unwrap();
        }));
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        // The second waits for the only turn; a third is refused.
        let waiting = tokio::spawn(b.admit().unwrap().run(|| ()));
        assert!(b.admit().is_err());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        // The waiting one's request goes away: its place is free at once.
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(b.admitted(), 1);
        // The running one's request goes away: the work goes on and keeps its place.
        running.abort();
        let _ = running.await;
        assert_eq!(b.admitted(), 1);
        assert!(b.admit().is_ok_and(|a| {
            drop(a);
            true
        }));
        release.send(()).unwrap();
        let b2 = b.clone();
        tokio::task::spawn_blocking(move || {
            while b2.admitted() > 0 {
                std::thread::yield_now();
            }
        })
        .await
        .unwrap();
        assert_eq!(b.inner.gauge.get(), 0);
    }
}
