//! Continuous balance, the pure half: what one reconcile pass writes, repairs first and
//! then, when the fleet is settled but its slot load is out of the band, a few
//! balancing moves.
//!
//! [`plan_pass`] places with `place()` and decides as before. Only when that leaves
//! nothing to add or replace (no repair, new model or drain in progress) and the load
//! is out of the band ([`out_of_balance`]: max/avg above [`MAX_RATIO_PERMILLE`], or
//! min/avg below [`MIN_RATIO_PERMILLE`], with two workers at least two slots apart) does
//! it plan with `rebalance(problem, params, tokens)` instead: the same algorithm as
//! `shardctl rebalance`, stopped after the moves the [`MoveBudget`](super::budget::MoveBudget)
//! grants now. Every balancing move replaces a member, so `decide()` makes it a swap
//! (prefetch on the new member, the old one kept in `previous` until warm), and it is
//! marked `balancing`: a move nobody needs is dropped rather than made cold.
//!
//! Once in the band the pass plans nothing more, so a fleet that is balanced enough is
//! left alone; where the band cannot be reached (too few slots per worker for
//! integer loads to come within 5 %, or the overlap limit blocks every move) balancing
//! ends where `rebalance` ends: within one slot, or with no move left.

use shardline_shared::placement::{LoadStats, Params, Plan, place, rebalance};
use shardline_shared::snapshot::Snapshot;

use super::decide::{Action, Clock, decide};

/// Highest max/avg slot load (in thousandths) that needs no balancing.
pub const MAX_RATIO_PERMILLE: u64 = 1050;
/// Lowest min/avg slot load (in thousandths) that needs no balancing.
pub const MIN_RATIO_PERMILLE: u64 = 950;

/// Whether `load` is outside the band and a move could narrow it (the most and the
/// least loaded worker that may take shards are at least two slots apart).
pub fn out_of_balance(load: &LoadStats) -> bool {
    let (n, total) = (u64::from(load.workers), u64::from(load.total));
    if n < 2 || load.max < load.min.saturating_add(2) {
        return false;
    }
    u64::from(load.max) * n * 1000 > MAX_RATIO_PERMILLE * total
        || u64::from(load.min) * n * 1000 < MIN_RATIO_PERMILLE * total
}

/// max/avg and min/avg of the slot load (both 1 when no slot is held).
pub fn load_ratios(load: &LoadStats) -> (f64, f64) {
    if load.total == 0 || load.workers == 0 {
        return (1.0, 1.0);
    }
    let avg = f64::from(load.total) / f64::from(load.workers);
    (f64::from(load.max) / avg, f64::from(load.min) / avg)
}

/// What one pass should do.
#[derive(Debug, Clone)]
pub struct Pass {
    /// The actions to execute (balancing swaps marked `balancing`).
    pub actions: Vec<Action>,
    /// The `place()` plan of the pass (before any balancing): its load and violations
    /// are what the metrics report.
    pub placed: Plan,
    /// Members added by the balancing swaps of `actions` (what they cost of the budget).
    pub balancing: usize,
    /// Balancing was wanted and allowed, but `rebalance` found no move: until the
    /// snapshot changes, trying again would find none either.
    pub stuck: bool,
}

/// Plans one pass: repairs and other placement changes as `place()` and `decide()` say,
/// or, when there are none and the load is out of the band, at most `tokens` balancing
/// moves. `tokens = 0` never balances.
pub fn plan_pass(snap: &Snapshot, params: &Params, clock: &Clock<'_>, tokens: usize) -> Pass {
    let problem = snap.placement_problem();
    let placed = place(&problem, params);
    let actions = decide(snap, &placed, clock);
    let settled = placed.moves.is_empty()
        && actions
            .iter()
            .all(|a| matches!(a, Action::ClearPrevious { .. } | Action::Delete { .. }));
    if !settled || tokens == 0 || !out_of_balance(&placed.load) {
        return Pass {
            actions,
            placed,
            balancing: 0,
            stuck: false,
        };
    }
    // `place()` changed nothing, so every move of this plan is a balancing move.
    let balanced = rebalance(&problem, params, Some(tokens));
    if balanced.moves.is_empty() {
        return Pass {
            actions,
            placed,
            balancing: 0,
            stuck: true,
        };
    }
    let mut balancing = 0;
    let actions = decide(snap, &balanced, clock)
        .into_iter()
        .map(|mut a| {
            if let Action::Swap {
                balancing: mark,
                warm,
                ..
            } = &mut a
            {
                *mark = true;
                balancing += warm.len();
            }
            a
        })
        .collect();
    Pass {
        actions,
        placed,
        balancing,
        stuck: false,
    }
}
