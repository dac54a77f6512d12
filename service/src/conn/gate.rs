//! Counting client connections against the limit ([`ConnGate`]: a slot per open
//! connection, given back when it closes), the descriptor budget that caps the limit
//! (`ulimit -n`, read from `/proc/self/limits`), and the connection metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use shardline_shared::metrics::{
    CONNECTIONS_CLOSED_TOTAL, CONNECTIONS_MAX, CONNECTIONS_OPEN, CONNECTIONS_REFUSED_TOTAL,
};

/// Why the server closed a client connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A request head did not arrive within `--header-timeout`.
    HeaderTimeout,
    /// A request body came slower than `--body-timeout` / `--body-min-rate` allow.
    BodyTimeout,
    /// No new request within `--idle-timeout`.
    IdleTimeout,
    /// The client did not read an answer within `--write-timeout`.
    WriteTimeout,
    /// Answered before its body was read (e.g. 401): the rest is not read.
    BodyUnread,
    /// Still busy when the shutdown grace period ended.
    Shutdown,
}

impl Reason {
    const ALL: [Reason; 6] = [
        Reason::HeaderTimeout,
        Reason::BodyTimeout,
        Reason::IdleTimeout,
        Reason::WriteTimeout,
        Reason::BodyUnread,
        Reason::Shutdown,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::HeaderTimeout => "header_timeout",
            Reason::BodyTimeout => "body_timeout",
            Reason::IdleTimeout => "idle_timeout",
            Reason::WriteTimeout => "write_timeout",
            Reason::BodyUnread => "body_unread",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// Connection metrics, registered into the component's registry.
#[derive(Debug, Clone)]
pub struct ConnMetrics {
    open: IntGauge,
    max: IntGauge,
    refused: IntCounter,
    /// One series per [`Reason`], in `Reason::ALL` order.
    closed: Vec<IntCounter>,
}

impl ConnMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let open = IntGauge::new(CONNECTIONS_OPEN, "Client connections open")?;
        let max = IntGauge::new(
            CONNECTIONS_MAX,
            "Client connections allowed at once (--max-connections, lowered to fit the descriptor limit)",
        )?;
        let refused = IntCounter::new(
            CONNECTIONS_REFUSED_TOTAL,
            "Client connections closed at once because --max-connections were open",
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                CONNECTIONS_CLOSED_TOTAL,
                "Client connections the server closed itself, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(max.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        let closed = Reason::ALL
            .iter()
            .map(|r| closed.with_label_values(&[r.label()]))
            .collect();
        Ok(Self {
            open,
            max,
            refused,
            closed,
        })
    }

    /// Metrics registered nowhere (tests).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).unwrap_or_else(|_| unreachable!("fresh registry"))
    }
}

/// Open client connections against the limit.
#[derive(Debug)]
pub struct ConnGate {
    open: AtomicUsize,
    max: usize,
    metrics: ConnMetrics,
}

/// One open connection's place under the limit, given back when dropped.
#[derive(Debug)]
pub struct ConnSlot(Arc<ConnGate>);

impl ConnGate {
    pub fn new(max: usize, metrics: ConnMetrics) -> Arc<Self> {
        metrics.max.set(i64::try_from(max).unwrap_or(i64::MAX));
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            metrics,
        })
    }

    /// A slot for a new connection, or `None` (counted as refused) at the limit.
    pub fn try_enter(self: &Arc<Self>) -> Option<ConnSlot> {
        let entered = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !entered {
            self.metrics.refused.inc();
            return None;
        }
        self.metrics.open.inc();
        Some(ConnSlot(self.clone()))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Counts a connection the server closed for `reason`.
    pub fn closed(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.metrics.closed[i].inc();
        }
    }
}

impl ConnSlot {
    /// The gate this slot belongs to.
    pub fn gate(&self) -> &ConnGate {
        &self.0
    }

    /// The gate this slot belongs to, shared.
    pub fn gate_arc(&self) -> Arc<ConnGate> {
        self.0.clone()
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.open.dec();
    }
}

/// The soft `Max open files` limit in the text of `/proc/<pid>/limits`.
pub fn descriptor_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// This process's soft descriptor limit, where the OS says (Linux).
pub fn nofile_soft() -> Option<u64> {
    descriptor_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// How many client connections fit in `nofile` descriptors: `reserve` are kept for the
/// process's own (listeners, etcd, stores, logs), and every client connection may need
/// one more for its request to a worker or its store, so at most half of the rest.
/// Never more than `requested`, never less than one.
pub fn max_connections_for(requested: usize, nofile: Option<u64>, reserve: u64) -> usize {
    let Some(nofile) = nofile else {
        return requested;
    };
    let fit = usize::try_from(nofile.saturating_sub(reserve) / 2).unwrap_or(usize::MAX);
    requested.min(fit).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            1024                 524288               files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn reads_the_soft_descriptor_limit() {
        assert_eq!(descriptor_limit(LIMITS), Some(1024));
        let unlimited = LIMITS.replace("1024   ", "unlimited");
        assert_eq!(descriptor_limit(&unlimited), Some(u64::MAX));
        assert_eq!(descriptor_limit("Max cpu time 1 1 seconds"), None);
        if cfg!(target_os = "linux") {
            assert!(nofile_soft().is_some());
        }
    }

    #[test]
    fn slots_are_counted_and_given_back() {
        let gate = ConnGate::new(2, ConnMetrics::unregistered());
        let a = gate.try_enter().unwrap();
        let _b = gate.try_enter().unwrap();
        assert!(gate.try_enter().is_none());
        assert_eq!(gate.metrics.refused.get(), 1);
        drop(a);
        assert_eq!(gate.open(), 1);
        assert!(gate.try_enter().is_some());
        gate.closed(Reason::WriteTimeout);
        assert_eq!(gate.metrics.closed[3].get(), 1);
    }

    proptest! {
        /// Client connections plus one upstream connection each, plus the reserve,
        /// always fit in the descriptor limit (when it leaves room for one).
        #[test]
        fn connections_fit_the_descriptors(requested in 1usize..1_000_000, nofile in any::<u64>(), reserve in 0u64..4096) {
            let n = max_connections_for(requested, Some(nofile), reserve) as u64;
            prop_assert!(n >= 1 && n <= requested as u64);
            if nofile >= reserve + 2 {
                prop_assert!(2 * n + reserve <= nofile);
            }
        }
    }
}
