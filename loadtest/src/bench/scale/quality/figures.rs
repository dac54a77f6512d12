//! Placement quality of stored assignments, purely: slot load over the workers that may
//! take shards, identical shards and the largest pairwise overlap ([`overlap_stats`],
//! what `shardctl blast-radius` reports), and what is left unfinished (`previous` not
//! cleared, members on workers outside the pool).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use shardline_shared::ids::{ModelKey, WorkerId};
use shardline_shared::placement::overlap_stats;
use shardline_shared::records::Assignment;

/// The figures of one set of assignments.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Placement {
    pub shards: usize,
    /// Live workers that may take shards (active, not cordoned or draining).
    pub pool: usize,
    /// Current-member slots held by pool workers.
    pub slots: u64,
    pub min: u64,
    pub max: u64,
    pub max_ratio: f64,
    pub min_ratio: f64,
    /// Pairs of shards with the same member set.
    pub identical_pairs: u64,
    /// Most workers two shards share, against `m`, the configured limit.
    pub max_overlap: u32,
    pub m: u32,
    /// Current-member slots on workers outside the pool (dead, cordoned, draining).
    pub outside_pool: u64,
    /// Assignments whose `previous` is not empty yet.
    pub with_previous: usize,
}

/// Measures `assignments` against the workers of `pool`, with overlap limit `m`.
pub fn measure(
    pool: &BTreeSet<WorkerId>,
    assignments: &BTreeMap<ModelKey, Assignment>,
    m: u32,
) -> Placement {
    let mut load: BTreeMap<&WorkerId, u64> = pool.iter().map(|w| (w, 0)).collect();
    let mut outside_pool = 0;
    for a in assignments.values() {
        for w in &a.workers {
            match load.get_mut(w) {
                Some(n) => *n += 1,
                None => outside_pool += 1,
            }
        }
    }
    let slots: u64 = load.values().sum();
    let (min, max) = (
        load.values().copied().min().unwrap_or(0),
        load.values().copied().max().unwrap_or(0),
    );
    let avg = slots as f64 / pool.len().max(1) as f64;
    let ratio = |x: u64| if slots == 0 { 1.0 } else { x as f64 / avg };
    let members: BTreeMap<ModelKey, Vec<WorkerId>> = assignments
        .iter()
        .map(|(k, a)| (k.clone(), a.workers.clone()))
        .collect();
    let stats = overlap_stats(&members);
    Placement {
        shards: assignments.len(),
        pool: pool.len(),
        slots,
        min,
        max,
        max_ratio: ratio(max),
        min_ratio: ratio(min),
        identical_pairs: stats.identical_pairs,
        max_overlap: stats.max_overlap,
        m,
        outside_pool,
        with_previous: assignments
            .values()
            .filter(|a| !a.previous.is_empty())
            .count(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use shardline_shared::ids::{ModelName, TenantId};

    fn w(i: usize) -> WorkerId {
        WorkerId::new(format!("w{i}")).unwrap()
    }

    fn shard(i: usize, members: &[usize], previous: &[usize]) -> (ModelKey, Assignment) {
        (
            ModelKey::new(
                TenantId::new(format!("t{i}")).unwrap(),
                ModelName::new("m").unwrap(),
            ),
            Assignment {
                workers: members.iter().map(|&x| w(x)).collect(),
                epoch: 1,
                previous: previous.iter().map(|&x| w(x)).collect(),
            },
        )
    }

    #[test]
    fn load_is_over_the_pool_and_the_rest_is_counted_apart() {
        let pool: BTreeSet<WorkerId> = (0..4).map(w).collect();
        let shards = BTreeMap::from([
            shard(0, &[0, 1], &[]),
            shard(1, &[0, 2], &[3]),
            shard(2, &[0, 9], &[]),
        ]);
        let p = measure(&pool, &shards, 1);
        // Pool slots 3, 1, 1, 0 over 4 workers: avg 1.25; w9 is outside the pool.
        assert_eq!((p.slots, p.min, p.max, p.outside_pool), (5, 0, 3, 1));
        assert!((p.max_ratio - 2.4).abs() < 1e-9 && p.min_ratio == 0.0);
        assert_eq!((p.identical_pairs, p.max_overlap, p.m), (0, 1, 1));
        assert_eq!((p.shards, p.pool, p.with_previous), (3, 4, 1));
    }

    #[test]
    fn identical_shards_are_found() {
        let pool: BTreeSet<WorkerId> = (0..3).map(w).collect();
        let shards = BTreeMap::from([shard(0, &[0, 1], &[]), shard(1, &[1, 0], &[])]);
        let p = measure(&pool, &shards, 1);
        assert_eq!((p.identical_pairs, p.max_overlap), (1, 2));
    }

    #[test]
    fn nothing_stored_is_balanced() {
        let pool: BTreeSet<WorkerId> = (0..3).map(w).collect();
        let p = measure(&pool, &BTreeMap::new(), 2);
        assert_eq!((p.max_ratio, p.min_ratio, p.slots), (1.0, 1.0, 0));
    }

    proptest! {
        /// Every member slot is counted once, in the pool or outside it, and the
        /// ratios bracket 1 whenever the pool holds a slot.
        #[test]
        fn slots_are_conserved(
            shards in prop::collection::vec(prop::collection::btree_set(0usize..12, 1..5), 0..40),
            pool_size in 1usize..12,
        ) {
            let pool: BTreeSet<WorkerId> = (0..pool_size).map(w).collect();
            let stored: BTreeMap<ModelKey, Assignment> = shards
                .iter()
                .enumerate()
                .map(|(i, s)| shard(i, &s.iter().copied().collect::<Vec<_>>(), &[]))
                .collect();
            let p = measure(&pool, &stored, 2);
            let all: u64 = shards.iter().map(|s| s.len() as u64).sum();
            prop_assert_eq!(p.slots + p.outside_pool, all);
            prop_assert!(p.min <= p.max);
            if p.slots > 0 {
                prop_assert!(p.min_ratio <= 1.0 + 1e-9 && p.max_ratio >= 1.0 - 1e-9);
            }
        }
    }
}
