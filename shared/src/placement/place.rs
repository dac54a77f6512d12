//! Place / repair: keep every survivor, fill each shard's empty slots by walking its
//! preference order.
//!
//! Shards that need members are handled fewest survivors first, then by key. A slot
//! goes to the most preferred worker that may take shards, is below the load cap and
//! would not make the shard share more than `max_overlap` workers with another shard.
//! If there is none the cap is relaxed first; if every candidate would break the
//! overlap limit, the limit is relaxed, again preferring workers below the cap.

use super::problem::{Params, Plan, Problem};
use super::report::into_plan;
use super::score::{Ranking, ShardScorer};
use super::state::State;

/// How many candidates beyond the slots to fill are ranked up front. Walking past
/// them (many workers at the cap or blocked) falls back to ranking every worker.
const SLACK: usize = 8;

/// Repairs and fills every shard of `problem`; shards that are full are left alone.
///
/// Idempotent: placing a plan's own shards again moves nothing. A worker that joins
/// gets nothing here; [`rebalance`](super::rebalance::rebalance) moves shards onto it.
pub fn place(problem: &Problem, params: &Params) -> Plan {
    let mut st = State::build(problem, params);
    fill(&mut st, params);
    into_plan(st, params)
}

/// Scratch arrays reused across shards; an entry is valid only if its stamp is the
/// current shard's, so nothing needs clearing between shards.
#[derive(Debug)]
struct Scratch {
    stamp: u32,
    /// Per worker: stamp if it is a member of the shard being filled.
    member: Vec<u32>,
    /// Per worker: stamp if adding it would make the shard share more than m workers.
    blocked: Vec<u32>,
    /// Per shard: (stamp, workers shared with the shard being filled).
    shared: Vec<(u32, u32)>,
}

/// Fills every shard below its target, in the fixed order.
pub(crate) fn fill(st: &mut State<'_>, params: &Params) {
    let mut order: Vec<(usize, u32)> = st
        .shards
        .iter()
        .enumerate()
        .filter(|(_, s)| s.members.len() < s.target as usize)
        .map(|(x, s)| (s.members.len(), x as u32))
        .collect();
    order.sort_unstable();
    let mut sc = Scratch {
        stamp: 0,
        member: vec![0; st.ids.len()],
        blocked: vec![0; st.ids.len()],
        shared: vec![(0, 0); st.shards.len()],
    };
    for (_, x) in order {
        fill_shard(st, params, x, &mut sc);
    }
}

fn fill_shard(st: &mut State<'_>, params: &Params, x: u32, sc: &mut Scratch) {
    sc.stamp += 1;
    let stamp = sc.stamp;
    let shard = &st.shards[x as usize];
    let need = shard.target as usize - shard.members.len();
    let m = params.max_overlap as usize;
    // Sharing more than m workers needs m + 1 members, so a shard whose target is at
    // most m can never be blocked.
    let limit = Limit {
        m,
        track: m < shard.target as usize,
    };
    let scorer = ShardScorer::new(params, &shard.key.shard_key());
    let survivors = shard.members.clone();
    for &u in &survivors {
        sc.member[u as usize] = stamp;
        limit.note_member(st, x, u, sc);
    }
    let mut ranking = st
        .table
        .rank(&scorer, need + SLACK, |w| sc.member[w as usize] == stamp);
    for slot in 0..need {
        // Always found: the target never exceeds the workers that may hold the shard.
        let Some((w, at_cap)) = choose(st, sc, &limit, &scorer, &mut ranking) else {
            break;
        };
        if at_cap {
            st.over_cap.push(x);
        }
        if slot + 1 < need {
            limit.note_member(st, x, w, sc);
        }
        sc.member[w as usize] = stamp;
        let removed = st.shards[x as usize].dropped.get(slot).copied();
        st.add_member(x, w, removed);
    }
}

/// The overlap limit as it applies to the shard being filled.
#[derive(Debug)]
struct Limit {
    m: usize,
    /// Whether the limit can bind at all for this shard.
    track: bool,
}

impl Limit {
    /// Accounts for `u` joining shard `x`: every shard now sharing m workers with `x`
    /// blocks its other members.
    fn note_member(&self, st: &State<'_>, x: u32, u: u32, sc: &mut Scratch) {
        if !self.track || self.m == 0 {
            return;
        }
        for &p in &st.holds[u as usize] {
            if p == x {
                continue;
            }
            let slot = &mut sc.shared[p as usize];
            if slot.0 != sc.stamp {
                *slot = (sc.stamp, 0);
            }
            slot.1 += 1;
            if slot.1 as usize == self.m {
                for &v in &st.shards[p as usize].members {
                    sc.blocked[v as usize] = sc.stamp;
                }
            }
        }
    }

    fn blocks(&self, st: &State<'_>, sc: &Scratch, w: u32) -> bool {
        match (self.track, self.m) {
            (false, _) => false,
            // m = 0: shards must be disjoint, so any worker already serving is out.
            (true, 0) => !st.holds[w as usize].is_empty(),
            (true, _) => sc.blocked[w as usize] == sc.stamp,
        }
    }
}

/// The most preferred acceptable worker and whether it is at the cap; the cap is
/// relaxed first, then the overlap limit.
fn choose(
    st: &State<'_>,
    sc: &Scratch,
    limit: &Limit,
    scorer: &ShardScorer,
    ranking: &mut Ranking,
) -> Option<(u32, bool)> {
    let stamp = sc.stamp;
    for (cap, overlap) in [(true, true), (false, true), (true, false), (false, false)] {
        loop {
            let found = ranking.items.iter().map(|&(_, w)| w).find(|&w| {
                sc.member[w as usize] != stamp
                    && (!cap || st.load[w as usize] < st.cap)
                    && (!overlap || !limit.blocks(st, sc, w))
            });
            if let Some(w) = found {
                return Some((w, st.load[w as usize] >= st.cap));
            }
            if ranking.complete {
                break;
            }
            *ranking = st
                .table
                .rank(scorer, usize::MAX, |w| sc.member[w as usize] == stamp);
        }
    }
    None
}
