//! Shuffle-sharding placement: which workers serve each tenant model.
//!
//! Every model gets a *shard* of k distinct workers, chosen by sticky rendezvous
//! hashing: each shard key ranks the workers by a keyed SipHash-2-4 score, current
//! members stay as long as they may, and empty slots are filled from the top of the
//! ranking, skipping workers at the load cap and workers that would make two shards
//! share more than `max_overlap` members. The problem is plain data ([`Problem`],
//! [`Params`]) and the answer is plain data ([`Plan`]); [`place`](fn@place) repairs
//! and fills, [`rebalance`](fn@rebalance) also moves a fair share of shards onto
//! under-loaded workers, and [`overlap_stats`] measures how isolated tenants are.
//! Nothing here does I/O, uses floating point or depends on hash-map iteration order:
//! the same input gives the same plan on every machine. See `README.md` beside this
//! file for the guarantees.
//!
//! Layout: the plain data of a run (input and answer) is in `problem.rs`;
//! [`score`](self::score()) and each shard's ranking of workers in `score.rs`; the
//! indexed working state in `state.rs`; the exact overlap check in `overlap.rs`; the
//! end of a run (the state back to a plan, with its violations) in `report.rs`;
//! filling in `place.rs`; balancing rounds in `rebalance.rs`; the blast-radius
//! statistics in `stats.rs`; examples and regressions in `tests/mod.rs` and invariants
//! as property tests in `tests/props.rs`.

mod overlap;
mod place;
mod problem;
mod rebalance;
mod report;
mod score;
mod state;
mod stats;
#[cfg(test)]
mod tests;

pub use place::place;
pub use problem::{
    LoadStats, Move, Params, Plan, Problem, ShardSpec, Violation, ViolationKind, WorkerSlot,
};
pub use rebalance::rebalance;
pub use score::score;
pub use stats::{OverlapStats, overlap_stats};
