//! Blast-radius statistics of an assignment: how many workers pairs of shards share.
//!
//! Comparing all T·(T−1)/2 pairs is too slow for 100,000 shards, so pairs that share
//! at least one worker are found through a worker → shards index and the pairs that
//! share none are counted as the remainder.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::ids::{ModelKey, WorkerId};

/// Pairwise overlap and per-worker load of an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct OverlapStats {
    pub shards: u64,
    /// T·(T−1)/2: every unordered pair of shards.
    pub pairs: u64,
    /// `histogram[i]`: pairs sharing exactly `i` workers; sums to `pairs`.
    pub histogram: Vec<u64>,
    /// Pairs with the same non-empty member set (a worker failure hits both fully).
    pub identical_pairs: u64,
    /// Most workers any pair shares (0 with fewer than two shards).
    pub max_overlap: u32,
    /// Workers that serve at least one shard.
    pub workers: u32,
    /// Fewest and most shards served by one of those workers.
    pub load_min: u32,
    pub load_max: u32,
    /// Slots over all shards; the average load is `load_total / workers`.
    pub load_total: u64,
}

/// Measures `shards` (repeated members of a shard count once).
pub fn overlap_stats(shards: &BTreeMap<ModelKey, Vec<WorkerId>>) -> OverlapStats {
    let mut index: HashMap<&WorkerId, u32> = HashMap::new();
    let mut holds: Vec<Vec<u32>> = Vec::new();
    let members: Vec<Vec<u32>> = shards
        .values()
        .enumerate()
        .map(|(x, list)| {
            let mut ids: Vec<u32> = list
                .iter()
                .map(|w| {
                    let next = index.len() as u32;
                    *index.entry(w).or_insert(next)
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            for &w in &ids {
                if holds.len() <= w as usize {
                    holds.resize_with(w as usize + 1, Vec::new);
                }
                holds[w as usize].push(x as u32);
            }
            ids
        })
        .collect();

    let t = members.len() as u64;
    let pairs = t * t.saturating_sub(1) / 2;
    let width = members.iter().map(Vec::len).max().unwrap_or(0);
    let mut histogram = vec![0u64; width + 1];
    let mut identical_pairs = 0;
    let mut max_overlap = 0;
    // Per shard: (stamp of the shard being counted + 1, shared workers).
    let mut shared: Vec<(u32, u32)> = vec![(0, 0); members.len()];
    let mut touched: Vec<u32> = Vec::new();
    for (x, mine) in members.iter().enumerate() {
        let stamp = x as u32 + 1;
        for &w in mine {
            for &p in &holds[w as usize] {
                // Each pair once: only partners after `x`.
                if p as usize <= x {
                    continue;
                }
                let slot = &mut shared[p as usize];
                if slot.0 != stamp {
                    *slot = (stamp, 0);
                    touched.push(p);
                }
                slot.1 += 1;
            }
        }
        for p in touched.drain(..) {
            let n = shared[p as usize].1;
            histogram[n as usize] += 1;
            max_overlap = max_overlap.max(n);
            if n as usize == mine.len() && n as usize == members[p as usize].len() {
                identical_pairs += 1;
            }
        }
    }
    let sharing: u64 = histogram.iter().sum();
    histogram[0] = pairs - sharing;

    let loads = holds.iter().map(|h| h.len() as u32);
    OverlapStats {
        shards: t,
        pairs,
        histogram,
        identical_pairs,
        max_overlap,
        workers: holds.len() as u32,
        load_min: loads.clone().min().unwrap_or(0),
        load_max: loads.clone().max().unwrap_or(0),
        load_total: loads.map(u64::from).sum(),
    }
}
