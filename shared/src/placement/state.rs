//! The indexed working state of a run, built from a [`Problem`] in canonical order;
//! `report.rs` turns it into a [`Plan`](super::problem::Plan).
//!
//! Workers become indices `0..n` in id order and shards indices in key order, so the
//! rest of the module works on small integers and never on input order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::problem::{LoadStats, Move, Params, Problem, ShardSpec};
use super::score::{ScoreTable, WorkerWords};
use crate::ids::{ModelKey, WorkerId};

/// One shard during a run.
#[derive(Debug)]
pub(crate) struct Shard<'a> {
    pub(crate) key: &'a ModelKey,
    /// `min(k, n)`: the size this shard must reach.
    pub(crate) target: u32,
    /// Worker indices: survivors in stored order, then additions.
    pub(crate) members: Vec<u32>,
    /// Current members that were dropped, in stored order; new members replace them
    /// in this order in [`Move`]s.
    pub(crate) dropped: Vec<&'a WorkerId>,
}

/// Everything a run reads and changes.
#[derive(Debug)]
pub(crate) struct State<'a> {
    pub(crate) ids: Vec<&'a WorkerId>,
    pub(crate) take: Vec<bool>,
    /// Indices of the workers that may take new members, ascending.
    pub(crate) takers: Vec<u32>,
    /// Per worker: its part of every score.
    pub(crate) words: Vec<WorkerWords>,
    /// The takers' words, for ranking whole shards.
    pub(crate) table: ScoreTable,
    pub(crate) shards: Vec<Shard<'a>>,
    /// Shards per worker.
    pub(crate) load: Vec<u32>,
    /// Per worker: indices of the shards it is a member of (unordered).
    pub(crate) holds: Vec<Vec<u32>>,
    pub(crate) cap: u32,
    pub(crate) moves: Vec<Move>,
    /// Shards that were given a member at or over the cap by this run.
    pub(crate) over_cap: Vec<u32>,
}

impl<'a> State<'a> {
    pub(crate) fn build(problem: &'a Problem, params: &Params) -> Self {
        let mut workers: Vec<(&WorkerId, bool, bool)> = problem
            .workers
            .iter()
            .map(|w| (&w.id, w.keep || w.take, w.take))
            .collect();
        workers.sort_unstable();
        // Sorted by (id, keep, take): the first of a run of repeats is the strictest.
        workers.dedup_by(|a, b| a.0 == b.0);
        let ids: Vec<&WorkerId> = workers.iter().map(|w| w.0).collect();
        let keep: Vec<bool> = workers.iter().map(|w| w.1).collect();
        let take: Vec<bool> = workers.iter().map(|w| w.2).collect();
        let takers: Vec<u32> = (0..ids.len() as u32)
            .filter(|&i| take[i as usize])
            .collect();
        let words: Vec<WorkerWords> = ids.iter().map(|id| WorkerWords::new(id.as_str())).collect();
        let table = ScoreTable::new(&takers, &words);
        let index: HashMap<&str, u32, BuildHasherDefault<PackHasher>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i as u32))
            .collect();

        let mut specs: Vec<&ShardSpec> = problem.shards.iter().collect();
        // Usually already in key order (read from a sorted map): then checking is enough.
        if !specs.is_sorted_by(|a, b| a.key < b.key) {
            specs
                .sort_unstable_by(|a, b| (&a.key, a.k, &a.current).cmp(&(&b.key, b.k, &b.current)));
            specs.dedup_by(|a, b| a.key == b.key);
        }

        let mut seen = vec![false; ids.len()];
        let mut total_target: u64 = 0;
        let shards: Vec<Shard<'a>> = specs
            .iter()
            .map(|spec| {
                let mut members = Vec::with_capacity(spec.k.min(64) as usize);
                let mut dropped = Vec::new();
                let mut kept_only = 0u32;
                for id in &spec.current {
                    match index.get(id.as_str()) {
                        Some(&i) if keep[i as usize] && !seen[i as usize] => {
                            seen[i as usize] = true;
                            kept_only += u32::from(!take[i as usize]);
                            members.push(i);
                        }
                        _ => dropped.push(id),
                    }
                }
                for &i in &members {
                    seen[i as usize] = false;
                }
                let eligible = (takers.len() as u32).saturating_add(kept_only);
                let target = spec.k.min(eligible);
                while members.len() > target as usize {
                    if let Some(i) = members.pop() {
                        dropped.push(ids[i as usize]);
                    }
                }
                total_target += u64::from(target);
                Shard {
                    key: &spec.key,
                    target,
                    members,
                    dropped,
                }
            })
            .collect();

        let mut load = vec![0u32; ids.len()];
        let mut holds: Vec<Vec<u32>> = vec![Vec::new(); ids.len()];
        for (x, shard) in shards.iter().enumerate() {
            for &w in &shard.members {
                load[w as usize] += 1;
                holds[w as usize].push(x as u32);
            }
        }
        let cap = load_cap(total_target, takers.len() as u64, params.epsilon_permille);
        Self {
            ids,
            take,
            takers,
            words,
            table,
            shards,
            load,
            holds,
            cap,
            moves: Vec::new(),
            over_cap: Vec::new(),
        }
    }

    /// Adds worker `w` to shard `x`, recording the move.
    pub(crate) fn add_member(&mut self, x: u32, w: u32, removed: Option<&WorkerId>) {
        self.shards[x as usize].members.push(w);
        self.load[w as usize] += 1;
        self.holds[w as usize].push(x);
        self.moves.push(Move {
            shard: self.shards[x as usize].key.clone(),
            removed: removed.cloned(),
            added: self.ids[w as usize].clone(),
        });
    }

    /// Replaces member `u` of shard `x` by `w` (appended), recording the move.
    pub(crate) fn replace_member(&mut self, x: u32, u: u32, w: u32) {
        let members = &mut self.shards[x as usize].members;
        members.retain(|&m| m != u);
        self.load[u as usize] -= 1;
        let held = &mut self.holds[u as usize];
        if let Some(at) = held.iter().position(|&s| s == x) {
            held.swap_remove(at);
        }
        self.add_member(x, w, Some(self.ids[u as usize]));
    }

    pub(crate) fn load_stats(&self) -> LoadStats {
        let loads = self.takers.iter().map(|&w| self.load[w as usize]);
        LoadStats {
            min: loads.clone().min().unwrap_or(0),
            max: loads.clone().max().unwrap_or(0),
            total: loads.fold(0, u32::saturating_add),
            workers: self.takers.len() as u32,
            cap: self.cap,
        }
    }
}

/// ⌈(1000 + ε)·total / (1000·n)⌉, saturating; 0 when nobody may take shards.
pub(crate) fn load_cap(total: u64, n: u64, epsilon_permille: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    let num = u128::from(1000 + u64::from(epsilon_permille)) * u128::from(total);
    let den = 1000 * u128::from(n);
    u32::try_from(num.div_ceil(den)).unwrap_or(u32::MAX)
}

/// A fixed multiply-xorshift hasher for worker-id look-ups: fast, and only ever used
/// for look-ups, so its output never reaches a plan.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PackHasher(u64);

impl Hasher for PackHasher {
    fn write(&mut self, bytes: &[u8]) {
        let chunks = bytes.chunks_exact(8);
        let rest = chunks.remainder();
        for chunk in chunks {
            self.write_u64(
                chunk
                    .iter()
                    .rev()
                    .fold(0, |acc, &b| (acc << 8) | u64::from(b)),
            );
        }
        self.write_u64(
            rest.iter()
                .fold(rest.len() as u64, |acc, &b| (acc << 8) | u64::from(b)),
        );
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(23) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    #[inline]
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}
