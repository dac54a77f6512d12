//! Metrics of the placement controller, registered into a registry the caller owns.
//!
//! Every replica registers them; only the leader moves them (the others report
//! `shardline_placement_leader 0` and leave the rest where they were).

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use shardline_shared::metrics as names;

/// Values of `prefetch_total{result}`.
const PREFETCH_RESULTS: [&str; 3] = ["ok", "failed", "skipped"];

/// Values of `writes_total{kind}` (the executor's write kinds, and refused CAS).
const WRITE_KINDS: [&str; 6] = ["create", "update", "swap", "clear", "delete", "conflict"];

/// Counters, gauges and the reconcile histogram of the controller.
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    pub leader: IntGauge,
    pub moves: IntCounter,
    /// By `result`: `ok` (resident on the new member), `failed`, `skipped` (a swap
    /// that had no live version to warm).
    pub prefetch: IntCounterVec,
    /// By `kind`: `create`, `update`, `swap`, `clear`, `delete`, and `conflict` for refused CAS.
    pub writes: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub violations: IntGauge,
    pub shards: IntGauge,
    pub max_overlap: IntGauge,
    pub slots_max: IntGauge,
    pub slots_min: IntGauge,
    /// Members added by balancing swaps (a subset of `moves`).
    pub balance_moves: IntCounter,
    /// `slots_max` and `slots_min` over the average slot load (1 with no slots).
    pub load_max_ratio: Gauge,
    pub load_min_ratio: Gauge,
    /// By `worker`: slots it holds in the stored assignments (current members).
    pub worker_slots: IntGaugeVec,
}

impl ControllerMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.moves.clone()))?;
        registry.register(Box::new(m.prefetch.clone()))?;
        registry.register(Box::new(m.writes.clone()))?;
        registry.register(Box::new(m.reconcile_duration.clone()))?;
        registry.register(Box::new(m.violations.clone()))?;
        registry.register(Box::new(m.shards.clone()))?;
        registry.register(Box::new(m.max_overlap.clone()))?;
        registry.register(Box::new(m.slots_max.clone()))?;
        registry.register(Box::new(m.slots_min.clone()))?;
        registry.register(Box::new(m.balance_moves.clone()))?;
        registry.register(Box::new(m.load_max_ratio.clone()))?;
        registry.register(Box::new(m.load_min_ratio.clone()))?;
        registry.register(Box::new(m.worker_slots.clone()))?;
        // Every label value exists from the start (at 0): `rate` and `increase` then see
        // the first prefetch or write, and dashboards show 0 rather than no data.
        for result in PREFETCH_RESULTS {
            m.prefetch.with_label_values(&[result]);
        }
        for kind in WRITE_KINDS {
            m.writes.with_label_values(&[kind]);
        }
        // No load seen yet is no imbalance (a follower never sets them).
        m.load_max_ratio.set(1.0);
        m.load_min_ratio.set(1.0);
        Ok(m)
    }

    /// Metrics that go nowhere (tools and tests that do not export metrics).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            leader: IntGauge::new(
                names::PLACEMENT_LEADER,
                "1 while this router is the elected placement controller, else 0",
            )?,
            moves: IntCounter::new(
                names::PLACEMENT_MOVES_TOTAL,
                "Shard members added by committed assignment writes",
            )?,
            prefetch: IntCounterVec::new(
                Opts::new(
                    names::PLACEMENT_PREFETCH_TOTAL,
                    "Model prefetches on new shard members before a swap, by result",
                ),
                &["result"],
            )?,
            writes: IntCounterVec::new(
                Opts::new(
                    names::PLACEMENT_WRITES_TOTAL,
                    "Assignment writes by kind (create, update, swap, clear, delete) and refused CAS (conflict)",
                ),
                &["kind"],
            )?,
            reconcile_duration: Histogram::with_opts(
                HistogramOpts::new(
                    names::PLACEMENT_RECONCILE_DURATION_SECONDS,
                    "Duration of one reconcile pass of the leader, prefetches included",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0,
                ]),
            )?,
            violations: IntGauge::new(
                names::PLACEMENT_VIOLATIONS,
                "Placement guarantees the current plan could not keep (over cap, overlap, undersized)",
            )?,
            shards: IntGauge::new(
                names::PLACEMENT_SHARDS,
                "Models with a live version, i.e. shards the controller places",
            )?,
            max_overlap: IntGauge::new(
                names::PLACEMENT_MAX_OVERLAP,
                "Most workers any two stored assignments share",
            )?,
            slots_max: IntGauge::new(
                names::PLACEMENT_SLOTS_MAX,
                "Most shard slots on one worker that may take shards, in the current plan",
            )?,
            slots_min: IntGauge::new(
                names::PLACEMENT_SLOTS_MIN,
                "Fewest shard slots on one worker that may take shards, in the current plan",
            )?,
            balance_moves: IntCounter::new(
                names::PLACEMENT_BALANCE_MOVES_TOTAL,
                "Shard members added by the controller's balancing swaps (a part of the moves)",
            )?,
            load_max_ratio: Gauge::new(
                names::PLACEMENT_LOAD_MAX_RATIO,
                "Most shard slots on one worker that may take shards over the average, in the current plan (balancing keeps it at most 1.05)",
            )?,
            load_min_ratio: Gauge::new(
                names::PLACEMENT_LOAD_MIN_RATIO,
                "Fewest shard slots on one worker that may take shards over the average, in the current plan (balancing keeps it at least 0.95 where integer loads allow)",
            )?,
            worker_slots: IntGaugeVec::new(
                Opts::new(
                    names::PLACEMENT_WORKER_SLOTS,
                    "Shard slots each worker holds as a current member of stored assignments",
                ),
                &["worker"],
            )?,
        })
    }
}
