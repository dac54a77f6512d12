//! Rebalance: move a fair share of shards onto under-loaded workers, one member per
//! shard per round.
//!
//! A *receiver* is a worker that may take shards and is below the average load, or
//! below the cap while some worker is over it. Receivers are served least loaded
//! first; each takes the shards that prefer it most among those with a *donor*: a
//! member at least two slots more loaded that is above average (or over the cap).
//! The donor replaced is the most loaded one (the least preferred among equals) whose
//! replacement keeps the shard within `max_overlap`. Every move lowers Σ load², so rounds always end; they stop
//! when a round moves nothing or `max_moves` is reached. Without overlap constraints
//! the result has no worker over the cap and none below average with a donor left.

use super::place::fill;
use super::problem::{Params, Plan, Problem};
use super::report::into_plan;
use super::score::ShardScorer;
use super::state::State;

/// Repairs like [`place`](super::place::place), then balances in rounds.
///
/// `max_moves` bounds the balancing moves only: repairs are always made.
pub fn rebalance(problem: &Problem, params: &Params, max_moves: Option<usize>) -> Plan {
    rebalance_in_rounds(problem, params, max_moves).0
}

/// [`rebalance`] plus the number of moves of each round; round 0 is the repair.
pub(crate) fn rebalance_in_rounds(
    problem: &Problem,
    params: &Params,
    max_moves: Option<usize>,
) -> (Plan, Vec<usize>) {
    let mut st = State::build(problem, params);
    fill(&mut st, params);
    let mut rounds = vec![st.moves.len()];
    Balancer::new(&st, params).run(&mut st, max_moves.unwrap_or(usize::MAX), &mut rounds);
    (into_plan(st, params), rounds)
}

#[derive(Debug)]
struct Balancer {
    m: usize,
    /// Workers that may take shards, and their total load (constant across moves).
    n: u64,
    total: u64,
    /// Workers over the cap right now.
    over: usize,
    /// Per shard: the hash state of its key.
    scorers: Vec<ShardScorer>,
    /// Per shard: stamp of the receiver whose candidates it was last checked for.
    seen: Vec<u32>,
    stamp: u32,
}

impl Balancer {
    fn new(st: &State<'_>, params: &Params) -> Self {
        let loads = st.takers.iter().map(|&w| st.load[w as usize]);
        Self {
            m: params.max_overlap as usize,
            n: st.takers.len() as u64,
            total: loads.clone().map(u64::from).sum(),
            over: loads.filter(|&l| l > st.cap).count(),
            scorers: st
                .shards
                .iter()
                .map(|s| ShardScorer::new(params, &s.key.shard_key()))
                .collect(),
            seen: vec![0; st.shards.len()],
            stamp: 0,
        }
    }

    fn run(&mut self, st: &mut State<'_>, mut budget: usize, rounds: &mut Vec<usize>) {
        while budget > 0 {
            let mut moved = vec![false; st.shards.len()];
            let mut receivers: Vec<u32> = st
                .takers
                .iter()
                .copied()
                .filter(|&w| self.receives(st, w))
                .collect();
            receivers.sort_unstable_by_key(|&w| (st.load[w as usize], w));
            let before = budget;
            for w in receivers {
                self.serve(st, w, &mut moved, &mut budget);
            }
            if budget == before {
                break;
            }
            rounds.push(before - budget);
        }
    }

    /// Moves onto `w` the shards that prefer it most, while it is a receiver.
    ///
    /// Candidates are the shards of the workers that could give `w` a slot, walked in
    /// `w`'s preference order (highest score first). Sorting them all for each
    /// receiver would dominate, so they are walked in bands (see below); the bands
    /// together are exactly that order.
    fn serve(&mut self, st: &mut State<'_>, w: u32, moved: &mut [bool], budget: &mut usize) {
        let mut donors: Vec<u32> = st
            .takers
            .iter()
            .copied()
            .filter(|&u| self.gives(st, u, w))
            .collect();
        if donors.is_empty() {
            return;
        }
        // Mark the candidates, then score them in shard order: the per-shard hash
        // states are read sequentially instead of at random.
        self.stamp += 1;
        for &u in &donors {
            for &x in &st.holds[u as usize] {
                self.seen[x as usize] = self.stamp;
            }
        }
        for &x in &st.holds[w as usize] {
            self.seen[x as usize] = 0;
        }
        let mut candidates: Vec<(u64, u32)> = Vec::new();
        for (x, scorer) in self.scorers.iter().enumerate() {
            if self.seen[x] == self.stamp && !moved[x] {
                candidates.push((scorer.score(&st.words[w as usize]), x as u32));
            }
        }
        // Walk in bands of decreasing score, each expected to hold four times as many
        // candidates as the one before, starting at about three times the slots `w`
        // can take; stop as soon as `w` is served or no worker can give to it.
        let count = candidates.len() as u128;
        let mut expected = 3 * u128::from(self.room(st, w)) + 8;
        let mut hi = u64::MAX;
        loop {
            let lo = match u128::from(u64::MAX).checked_div(count) {
                Some(step) if expected < count => (u128::from(u64::MAX) - step * expected) as u64,
                _ => 0,
            };
            let mut band: Vec<(u64, u32)> = candidates
                .iter()
                .copied()
                .filter(|c| (lo..=hi).contains(&c.0))
                .collect();
            band.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            for (_, x) in band {
                if *budget == 0 || !self.receives(st, w) {
                    return;
                }
                if let Some(u) = self.donor(st, x, w) {
                    let was_over = st.load[u as usize] > st.cap;
                    st.replace_member(x, u, w);
                    if was_over && st.load[u as usize] <= st.cap {
                        self.over -= 1;
                    }
                    moved[x as usize] = true;
                    *budget -= 1;
                }
            }
            donors.retain(|&u| self.gives(st, u, w));
            if lo == 0 || donors.is_empty() {
                return;
            }
            hi = lo - 1;
            expected *= 4;
        }
    }

    fn below_average(&self, load: u32) -> bool {
        u64::from(load) * self.n < self.total
    }

    fn receives(&self, st: &State<'_>, w: u32) -> bool {
        let load = st.load[w as usize];
        self.below_average(load) || (self.over > 0 && load < st.cap)
    }

    /// About how many more slots `w` may receive.
    fn room(&self, st: &State<'_>, w: u32) -> u32 {
        let load = st.load[w as usize];
        let level = if self.below_average(load) {
            self.total.div_ceil(self.n.max(1)) as u32
        } else {
            st.cap
        };
        level.saturating_sub(load)
    }

    /// Whether member `u` may hand a slot to receiver `w`.
    fn gives(&self, st: &State<'_>, u: u32, w: u32) -> bool {
        let (lu, lw) = (st.load[u as usize], st.load[w as usize]);
        st.take[u as usize]
            && lu >= lw.saturating_add(2)
            && (lu > st.cap || (self.below_average(lw) && u64::from(lu) * self.n > self.total))
    }

    /// The member of `x` that `w` replaces: the most loaded donor (the least preferred
    /// among equals) whose replacement keeps `x` within the overlap limit.
    fn donor(&self, st: &State<'_>, x: u32, w: u32) -> Option<u32> {
        let scorer = &self.scorers[x as usize];
        let mut donors: Vec<(u64, u32)> = st.shards[x as usize]
            .members
            .iter()
            .filter(|&&u| self.gives(st, u, w))
            .map(|&u| (scorer.score(&st.words[u as usize]), u))
            .collect();
        // Most loaded first, so that donations spread over the most loaded members
        // instead of pushing one below the average (which a later round would have to
        // undo with a move between old workers); then least preferred: lowest score,
        // then the larger worker id.
        donors.sort_unstable_by(|a, b| {
            let load = |u: u32| st.load[u as usize];
            load(b.1)
                .cmp(&load(a.1))
                .then(a.0.cmp(&b.0))
                .then(b.1.cmp(&a.1))
        });
        donors
            .into_iter()
            .map(|(_, u)| u)
            .find(|&u| !would_exceed(st, x, u, w, self.m))
    }
}

/// Whether replacing `u` by `w` in shard `x` makes it share more than `m` workers
/// with a shard `w` already serves.
fn would_exceed(st: &State<'_>, x: u32, u: u32, w: u32, m: usize) -> bool {
    let members = &st.shards[x as usize].members;
    if members.len() <= m {
        return false;
    }
    st.holds[w as usize].iter().any(|&p| {
        let shared = st.shards[p as usize]
            .members
            .iter()
            .filter(|&&v| v != u && members.contains(&v))
            .count();
        shared >= m
    })
}
