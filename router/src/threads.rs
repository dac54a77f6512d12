//! The router's serving threads: one single-threaded runtime per core, of which only as
//! many take client connections as the load needs.
//!
//! Why not always all of them: a serving thread that has too little to do sleeps in
//! `epoll_wait` between requests and is woken for the next one, and on a shared host
//! every sleep and wake-up is a context switch: the same load costs more CPU per request
//! spread over two serving threads than kept on one (see docs/benchmarks.md, section
//! Router hop). So connections live on the
//! first `active` threads; a once-per-window check of how much CPU those threads
//! actually used ([`next_active`], pure) adds a thread when they run near a full core
//! and retires one when the load fits in fewer. A connection sits on thread
//! `id % active` and moves between two requests (never with bytes of a pipelined
//! request unread), so a change reaches every busy connection within one request.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

/// How often the load of the serving threads is measured.
pub const WINDOW: Duration = Duration::from_millis(500);
/// Average CPU share of the active threads above which one more takes connections.
pub const GROW_ABOVE: f64 = 0.75;
/// CPU share per thread under which the load of `active` threads would fit in one
/// fewer, and one is retired.
pub const SHRINK_BELOW: f64 = 0.5;
/// Per-thread share from which the active threads count as saturated: the next step
/// adds three for every four instead of one (not more: the grown count must not be
/// shrunk again by the same load).
const SATURATED: f64 = 0.9;

/// How many threads take connections in the next window, given `active` of `max` did
/// in this one (never fewer than `min`) and `used`, the CPU (in cores) every serving
/// thread spent in it — retired threads still finishing a request count too.
pub fn next_active(active: usize, min: usize, max: usize, used: f64) -> usize {
    let min = min.clamp(1, max.max(1));
    let active = active.clamp(min, max.max(min));
    let per_thread = used / active as f64;
    let next = if per_thread >= SATURATED {
        active + (3 * active).div_ceil(4)
    } else if per_thread > GROW_ABOVE {
        active + 1
    } else if active > 1 && used < SHRINK_BELOW * (active - 1) as f64 {
        active - 1
    } else {
        active
    };
    next.clamp(min, max.max(min))
}

/// A single-threaded runtime with I/O and timers: what each serving thread runs, and
/// what the binary's control plane runs on.
pub fn runtime() -> std::io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

thread_local! {
    /// The index of the serving thread this is, if it is one.
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The serving thread the caller runs on (`None` off the pool).
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// A thread running a single-threaded runtime until the pool is dropped.
#[derive(Debug)]
struct ServingThread {
    handle: Handle,
    /// `/proc/self/task/<tid>/stat` (CPU time), where there is one.
    stat: Option<PathBuf>,
    _stop: oneshot::Sender<()>,
}

/// The serving threads and how many of them take connections.
#[derive(Debug)]
pub struct ServingPool {
    threads: Vec<ServingThread>,
    active: AtomicUsize,
    min: usize,
    moves: AtomicU64,
}

impl ServingPool {
    /// Starts `threads` serving threads of which at least `min` always take connections
    /// (`min == threads`: all of them, no adaptation).
    pub fn start(threads: usize, min: usize) -> std::io::Result<Arc<Self>> {
        let threads = (0..threads.max(1))
            .map(ServingThread::start)
            .collect::<std::io::Result<Vec<_>>>()?;
        let min = min.clamp(1, threads.len());
        Ok(Arc::new(Self {
            active: AtomicUsize::new(min),
            min,
            threads,
            moves: AtomicU64::new(0),
        }))
    }

    /// Serving threads in the pool.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether the pool has no threads (never: it starts at least one).
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Threads taking connections now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Sets the threads taking connections (clamped to `min..=len`).
    pub fn set_active(&self, n: usize) {
        self.active
            .store(n.clamp(self.min, self.len()), Ordering::Relaxed);
    }

    /// The thread connection `id` belongs on now.
    pub fn home(&self, id: usize) -> usize {
        id % self.active().max(1)
    }

    /// The runtime of thread `index`.
    pub fn handle(&self, index: usize) -> &Handle {
        &self.threads[index % self.threads.len()].handle
    }

    /// Counts one connection moved to another thread.
    pub fn moved(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections moved between threads so far.
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// CPU time each thread has used so far (`None` where the OS does not say).
    fn cpu_times(&self) -> Option<Vec<Duration>> {
        self.threads
            .iter()
            .map(|t| cpu_time(&std::fs::read_to_string(t.stat.as_ref()?).ok()?))
            .collect()
    }

    /// Measures the threads' CPU every [`WINDOW`] and sets how many take connections,
    /// reporting it (and the moves) through `active` and `moves`. Returns at once where
    /// thread CPU time cannot be read, leaving every thread active.
    pub async fn adapt(self: Arc<Self>, active: IntGauge, moves: IntCounter) {
        let Some(mut before) = self.cpu_times() else {
            self.set_active(self.len());
            active.set(self.len() as i64);
            return;
        };
        let mut at = Instant::now();
        let mut reported = 0;
        active.set(self.active() as i64);
        loop {
            tokio::time::sleep(WINDOW).await;
            let Some(now) = self.cpu_times() else {
                continue;
            };
            let elapsed = at.elapsed().as_secs_f64();
            at = Instant::now();
            let used: Duration = now
                .iter()
                .zip(&before)
                .map(|(n, b)| n.saturating_sub(*b))
                .sum();
            before = now;
            let next = next_active(
                self.active(),
                self.min,
                self.len(),
                used.as_secs_f64() / elapsed.max(1e-3),
            );
            self.set_active(next);
            active.set(self.active() as i64);
            let total = self.moves();
            moves.inc_by(total - reported);
            reported = total;
        }
    }
}

impl ServingThread {
    fn start(index: usize) -> std::io::Result<Self> {
        let runtime = runtime()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("serve-{index}"))
            .spawn(move || {
                INDEX.with(|i| i.set(Some(index)));
                // "<pid>/task/<tid>" on Linux.
                let tid = std::fs::read_link("/proc/thread-self")
                    .ok()
                    .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok());
                let _ = tid_tx.send(tid);
                let _ = runtime.block_on(stopped);
            })?;
        let stat = tid_rx
            .recv()
            .ok()
            .flatten()
            .map(|tid| PathBuf::from(format!("/proc/self/task/{tid}/stat")));
        Ok(Self {
            handle,
            stat,
            _stop: stop,
        })
    }
}

/// User plus system time from a `/proc/<pid>/task/<tid>/stat` line (fields 14 and 15,
/// in clock ticks of 1/100 s — `USER_HZ`, fixed by the Linux ABI).
fn cpu_time(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_light_load_stays_on_one_thread_and_a_heavy_one_spreads() {
        assert_eq!(next_active(1, 1, 4, 0.5), 1);
        assert_eq!(next_active(1, 1, 4, 0.8), 2);
        assert_eq!(next_active(1, 1, 4, 0.95), 2);
        assert_eq!(next_active(2, 1, 4, 1.9), 4);
        assert_eq!(next_active(2, 1, 4, 0.4), 1);
        assert_eq!(next_active(2, 1, 4, 0.6), 2);
        assert_eq!(next_active(4, 1, 4, 4.0), 4);
        assert_eq!(next_active(3, 3, 4, 0.0), 3);
    }

    proptest! {
        #[test]
        fn stays_within_bounds(active in 0usize..40, min in 0usize..40, max in 1usize..40, used in 0.0f64..64.0) {
            let n = next_active(active, min, max, used);
            prop_assert!(n >= 1 && n <= max.max(min.max(1)));
            prop_assert!(n >= min.clamp(1, max));
        }

        /// A load that made `a` threads grow never makes the grown count shrink back at
        /// once: growing needs more than GROW_ABOVE per thread, shrinking from `n` less
        /// than SHRINK_BELOW per remaining thread, and SHRINK_BELOW × a < GROW_ABOVE × a.
        #[test]
        fn no_flapping_at_steady_load(active in 1usize..16, used in 0.0f64..32.0) {
            let max = 16;
            let n = next_active(active, 1, max, used);
            if n > active {
                prop_assert!(next_active(n, 1, max, used) >= n);
            }
            if n < active {
                prop_assert!(next_active(n, 1, max, used) <= n);
            }
        }

        #[test]
        fn more_load_never_means_fewer_threads(active in 1usize..16, a in 0.0f64..32.0, b in 0.0f64..32.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(next_active(active, 1, 16, lo) <= next_active(active, 1, 16, hi));
        }
    }

    #[test]
    fn cpu_time_is_user_plus_system_ticks() {
        let line =
            "4242 (serve-0 (x)) S 1 4242 4242 0 -1 4194368 100 0 0 0 37 5 0 0 20 0 3 0 99 0 0";
        assert_eq!(cpu_time(line), Some(Duration::from_millis(420)));
        assert_eq!(cpu_time("4242 (serve-0) S 1"), None);
        let own = std::fs::read_to_string("/proc/thread-self/stat");
        if cfg!(target_os = "linux") {
            assert!(cpu_time(&own.unwrap()).is_some());
        }
    }

    #[test]
    fn threads_know_their_index_and_report_cpu_time() {
        let pool = ServingPool::start(2, 1).unwrap();
        assert_eq!(pool.active(), 1);
        for i in 0..2 {
            let (tx, rx) = std::sync::mpsc::channel();
            pool.handle(i).spawn(async move {
                let _ = tx.send(current());
            });
            assert_eq!(rx.recv().unwrap(), Some(i));
        }
        assert_eq!(current(), None);
        if cfg!(target_os = "linux") {
            assert_eq!(pool.cpu_times().map(|t| t.len()), Some(2));
        }
        pool.set_active(5);
        assert_eq!(pool.active(), 2);
        assert_eq!(pool.home(3), 1);
        pool.set_active(0);
        assert_eq!(pool.active(), 1);
        assert_eq!(pool.home(3), 0);
    }
}
