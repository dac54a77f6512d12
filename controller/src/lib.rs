//! Shardline's placement controller: exactly one router replica keeps every published model's
//! assignment correct.
//!
//! Layout:
//! - `election.rs`: every router stands for election under a lease; the oldest
//!   candidate key leads, and its [`Fence`] guards every write it makes;
//! - `decide.rs`: the pure part, [`decide`]`(snapshot, plan, clock) -> Vec<Action>`;
//! - `balance.rs`: one pass planned, purely: repairs first, then, on a settled fleet
//!   whose slot load is out of the band (max/avg > 1.05 or min/avg < 0.95), balancing
//!   swaps from `rebalance()`, as many as the move budget grants;
//! - `budget.rs`: [`MoveBudget`], the balancing moves allowed per window, time passed in;
//! - `executor.rs`: prefetch on new members, then compare-and-swap writes
//!   ([`execute`], and [`apply`] for `shardctl rebalance --apply`);
//! - `prefetch.rs`: the worker's load call ([`HttpPrefetcher`]) behind [`Prefetch`];
//! - `reconcile.rs`: the leader's loop, run on snapshot changes (debounced) and
//!   every second: plan the pass, execute it, spend the budget;
//! - `metrics.rs`: the `shardline_placement_*` metrics.
//!
//! ```no_run
//! # async fn demo(cp: shardline_control::ControlPlane,
//! #     watcher: shardline_control::SnapshotWatcher) -> Result<(), Box<dyn std::error::Error>> {
//! use shardline_controller::{Controller, ControllerConfig, ControllerMetrics};
//!
//! let registry = prometheus::Registry::new();
//! let config = ControllerConfig::new("router-1", "secret-token");
//! let controller = Controller::spawn(cp, watcher.subscribe(), config,
//!     ControllerMetrics::register(&registry)?);
//! // ... serve ...
//! controller.shutdown().await; // hands leadership over at once
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use shardline_control::ControlPlane;
use shardline_shared::snapshot::Snapshot;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod balance;
mod budget;
mod decide;
mod election;
mod executor;
mod metrics;
mod prefetch;
mod reconcile;
#[cfg(test)]
mod tests;

pub use balance::{
    MAX_RATIO_PERMILLE, MIN_RATIO_PERMILLE, Pass, load_ratios, out_of_balance, plan_pass,
};
pub use budget::MoveBudget;
pub use decide::{Action, Clock, decide, drained};
pub use election::{Candidacy, is_leader, leader};
pub use executor::{ApplyError, Fence, PREFETCH_CONCURRENCY, Report, apply, execute};
pub use metrics::ControllerMetrics;
pub use prefetch::{HttpPrefetcher, Prefetch, PrefetchError};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The router's id, stored as the value of its candidate key.
    pub id: String,
    /// Shared secret presented to workers in `x-shardline-token`.
    pub internal_token: String,
    /// Lease of the candidacy: a crashed leader is replaced within about this long.
    pub lease_ttl: Duration,
    /// Longest wait for one worker to load a model before a swap.
    pub prefetch_timeout: Duration,
    /// After a swap, `previous` is cleared at the latest this long after it was seen,
    /// even if the new members never report the model resident.
    pub previous_grace: Duration,
    /// Most balancing moves (members added to even out the slot load) in any
    /// `balance_window`; 0 turns continuous balancing off. Repairs are not counted.
    pub balance_moves: u32,
    /// The window of `balance_moves` (a minute, except in tests).
    pub balance_window: Duration,
}

impl ControllerConfig {
    /// Defaults: 5 s lease, 30 s prefetch timeout, 10 s grace for `previous`, 60
    /// balancing moves per minute.
    pub fn new(id: impl Into<String>, internal_token: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            internal_token: internal_token.into(),
            lease_ttl: Duration::from_secs(5),
            prefetch_timeout: Duration::from_secs(30),
            previous_grace: Duration::from_secs(10),
            balance_moves: 60,
            balance_window: Duration::from_secs(60),
        }
    }
}

/// A running controller; dropping it aborts its tasks (the lease then expires).
#[derive(Debug)]
pub struct Controller {
    leader: watch::Receiver<bool>,
    candidacy: Option<Candidacy>,
    task: JoinHandle<()>,
    metrics: ControllerMetrics,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Controller {
    /// Stands for election and, while leading, reconciles assignments with `place()`.
    pub fn spawn(
        cp: ControlPlane,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        config: ControllerConfig,
        metrics: ControllerMetrics,
    ) -> Self {
        let candidacy = Candidacy::start(cp.clone(), config.id.clone(), config.lease_ttl);
        let (leader_tx, leader_rx) = watch::channel(false);
        let prefetcher = HttpPrefetcher::new(&config.internal_token, config.prefetch_timeout);
        let task = tokio::spawn(reconcile::run(reconcile::Loop {
            cp,
            snapshots,
            fence: candidacy.fence(),
            leader: leader_tx,
            prefetcher,
            grace: config.previous_grace,
            budget: MoveBudget::new(config.balance_moves, config.balance_window),
            metrics: metrics.clone(),
        }));
        Self {
            leader: leader_rx,
            candidacy: Some(candidacy),
            task,
            metrics,
        }
    }

    /// Whether this replica is the placement controller now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Leadership changes.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Stops reconciling and revokes the candidacy lease, so that another replica
    /// takes over at once.
    pub async fn shutdown(mut self) {
        self.task.abort();
        if let Some(c) = self.candidacy.take() {
            c.shutdown().await;
        }
        self.metrics.leader.set(0);
    }
}
