//! The plain data of a placement run: its input ([`Problem`], with the [`Params`] every
//! run must agree on) and its answer ([`Plan`]: members, moves, violations, load).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ids::{ModelKey, WorkerId};
use crate::records::PlacementConfig;

/// The parameters every placement run must agree on, decoded from [`PlacementConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// First SipHash key half (little-endian bytes 0..8 of the seed).
    pub k0: u64,
    /// Second SipHash key half (little-endian bytes 8..16 of the seed).
    pub k1: u64,
    /// Most workers two shards may share; `k - 1` only forbids identical shards.
    pub max_overlap: u32,
    /// Load cap slack ε in thousandths.
    pub epsilon_permille: u32,
}

impl Params {
    /// Validates `c` and takes what placement needs from it.
    pub fn from_config(c: &PlacementConfig) -> Result<Self, String> {
        c.validate()?;
        let (k0, k1) = c.seed_keys()?;
        Ok(Self {
            k0,
            k1,
            max_overlap: c.max_overlap,
            epsilon_permille: c.epsilon_permille,
        })
    }
}

/// One worker as placement sees it.
///
/// `keep` = live and active or cordoned (may keep its current shards); `take` = live and
/// active (may receive new shard members). `take` implies `keep`. A worker listed twice
/// gets the stricter of its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSlot {
    pub id: WorkerId,
    pub keep: bool,
    pub take: bool,
}

/// One model's shard: wanted size and current members (in stored order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSpec {
    pub key: ModelKey,
    /// Wanted number of members; shards get `min(k, n)` where n counts the workers that
    /// can hold them (take-able workers plus their own keep-able members).
    pub k: u32,
    /// Current members. Unknown workers, workers that may not keep shards and repeats
    /// are dropped; members beyond `k` are dropped from the end.
    pub current: Vec<WorkerId>,
}

/// The whole input of a placement run. Order of either list does not matter; a shard
/// key listed twice keeps its smallest spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub workers: Vec<WorkerSlot>,
    pub shards: Vec<ShardSpec>,
}

/// One membership change: `added` joins `shard`, replacing `removed`.
///
/// `removed` is `None` when an empty slot is filled. A member dropped with nothing to
/// replace it (no eligible worker left, or `k` lowered) appears in no move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub shard: ModelKey,
    pub removed: Option<WorkerId>,
    pub added: WorkerId,
}

/// A guarantee a plan could not keep for one shard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Violation {
    pub shard: ModelKey,
    pub kind: ViolationKind,
}

/// Which guarantee was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// This run gave the shard a member that was already at the load cap, because
    /// every other eligible worker was at the cap or would break `max_overlap`.
    OverCap,
    /// In the plan, the shard shares more than `max_overlap` workers with another shard
    /// (both are reported). Reported exactly when that is true, whatever caused it.
    OverlapExceeded,
    /// The shard has fewer than `min(k, n)` members.
    Undersized,
}

/// Shard slots per worker, over the workers that may take new members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LoadStats {
    pub min: u32,
    pub max: u32,
    /// Slots held by those workers (cordoned workers' slots are not counted here).
    pub total: u32,
    /// Number of workers that may take new members (the `n` of the cap).
    pub workers: u32,
    /// ⌈(1000 + ε)·Σk / (1000·n)⌉ with Σk over all shards' sizes; 0 without workers.
    pub cap: u32,
}

/// The answer of [`place`](super::place::place) or [`rebalance`](super::rebalance::rebalance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Every shard's members: survivors in their stored order, then new members.
    pub shards: BTreeMap<ModelKey, Vec<WorkerId>>,
    /// Changes in the order they were decided (rebalance: round by round).
    pub moves: Vec<Move>,
    /// Sorted by shard, then kind.
    pub violations: Vec<Violation>,
    pub load: LoadStats,
}
