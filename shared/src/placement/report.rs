//! The end of a run: the working state becomes a [`Plan`] (worker indices back to ids)
//! with every guarantee it could not keep reported as a [`Violation`].

use std::collections::BTreeMap;

use super::overlap::overlapping_shards;
use super::problem::{Params, Plan, Violation, ViolationKind};
use super::state::State;
use crate::ids::{ModelKey, WorkerId};

/// The plan `st` has reached: every shard's members, the moves in the order they were
/// made, and the violations sorted by shard, then kind.
pub(crate) fn into_plan(mut st: State<'_>, params: &Params) -> Plan {
    st.over_cap.sort_unstable();
    st.over_cap.dedup();
    let mut violations: Vec<Violation> = Vec::new();
    let overlapping = overlapping_shards(&st, params.max_overlap);
    for (x, shard) in st.shards.iter().enumerate() {
        let mut report = |kind| {
            violations.push(Violation {
                shard: shard.key.clone(),
                kind,
            })
        };
        if st.over_cap.binary_search(&(x as u32)).is_ok() {
            report(ViolationKind::OverCap);
        }
        if overlapping[x] {
            report(ViolationKind::OverlapExceeded);
        }
        if shard.members.len() < shard.target as usize {
            report(ViolationKind::Undersized);
        }
    }
    let load = st.load_stats();
    let shards: BTreeMap<ModelKey, Vec<WorkerId>> = st
        .shards
        .iter()
        .map(|s| {
            let ids = s.members.iter().map(|&w| st.ids[w as usize].clone());
            (s.key.clone(), ids.collect())
        })
        .collect();
    Plan {
        shards,
        moves: st.moves,
        violations,
        load,
    }
}
