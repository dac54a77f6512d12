//! `shardctl blast-radius`: how isolated tenants are under the stored assignments, next
//! to what shards drawn uniformly at random would give.
//!
//! Observed figures come from [`overlap_stats`]: the distribution of how many workers
//! each pair of shards shares, identical shards, the largest overlap against the
//! configured `max_overlap` (m), and per-worker slot load. The random baseline draws
//! each shard's members uniformly from the n live, non-draining workers: two shards of
//! sizes a and b share exactly i workers with the hypergeometric probability
//! `C(a,i)·C(n−a,b−i) / C(n,b)`, and are identical (a = b) with probability
//! `1 / C(n,a)`. Expectations are summed over the actual pairs, grouped by shard size,
//! so the cost depends on the number of distinct sizes, not of shards. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use shardline_shared::ids::{ModelKey, WorkerId};
use shardline_shared::placement::{overlap_stats, place};
use shardline_shared::records::AdminState;
use shardline_shared::snapshot::Snapshot;

/// Slot load per worker, over the live workers that are not draining.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotLoad {
    pub workers: u32,
    pub min: u32,
    pub avg: f64,
    pub max: u32,
    /// The placement's balance cap ⌈(1 + ε)·Σk / n⌉ (0 when it cannot be computed).
    pub cap: u32,
}

/// What random shards of the same sizes over the same workers would give.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RandomFigures {
    /// n: workers the random shards are drawn from.
    pub workers: u32,
    /// Expected number of pairs sharing exactly `i` workers.
    pub histogram: Vec<f64>,
    pub identical_pairs: f64,
    /// Expected number of pairs sharing more than m workers.
    pub pairs_over_max_overlap: f64,
    /// Largest i for which at least half a pair is expected to share i or more workers.
    pub likely_max_overlap: u32,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlastRadius {
    pub shards: u64,
    pub pairs: u64,
    /// Pairs sharing exactly `i` workers.
    pub histogram: Vec<u64>,
    pub identical_pairs: u64,
    pub max_overlap: u32,
    /// m, from the placement parameters.
    pub configured_max_overlap: u32,
    pub pairs_over_max_overlap: u64,
    pub load: SlotLoad,
    pub random: RandomFigures,
}

/// Measures the stored assignments of `snap`.
pub fn blast_radius(snap: &Snapshot) -> BlastRadius {
    let shards: BTreeMap<ModelKey, Vec<WorkerId>> = snap
        .assignments()
        .iter()
        .map(|(k, a)| (k.clone(), a.value.workers.clone()))
        .collect();
    let stats = overlap_stats(&shards);
    let m = snap.placement().max_overlap;
    let pool: Vec<&WorkerId> = snap
        .workers()
        .keys()
        .filter(|w| snap.admin_state(w) != AdminState::Draining)
        .collect();
    let sizes: Vec<u32> = shards
        .values()
        .map(|w| w.iter().collect::<BTreeSet<_>>().len() as u32)
        .collect();
    let widest = sizes.iter().copied().max().unwrap_or(0);
    let n = (pool.len() as u32).max(stats.workers).max(widest);
    let cap = snap
        .placement_params()
        .map(|p| place(&snap.placement_problem(), &p).load.cap)
        .unwrap_or(0);
    BlastRadius {
        shards: stats.shards,
        pairs: stats.pairs,
        pairs_over_max_overlap: stats.histogram.iter().skip(m as usize + 1).sum(),
        histogram: stats.histogram,
        identical_pairs: stats.identical_pairs,
        max_overlap: stats.max_overlap,
        configured_max_overlap: m,
        load: slot_load(&shards, &pool, cap),
        random: random_figures(n, &sizes, m),
    }
}

fn slot_load(shards: &BTreeMap<ModelKey, Vec<WorkerId>>, pool: &[&WorkerId], cap: u32) -> SlotLoad {
    let mut load: BTreeMap<&WorkerId, u32> = pool.iter().map(|w| (*w, 0)).collect();
    for members in shards.values() {
        for w in members {
            if let Some(l) = load.get_mut(w) {
                *l += 1;
            }
        }
    }
    let total: u64 = load.values().map(|&l| u64::from(l)).sum();
    let workers = load.len() as u32;
    SlotLoad {
        workers,
        min: load.values().copied().min().unwrap_or(0),
        avg: if workers == 0 {
            0.0
        } else {
            total as f64 / f64::from(workers)
        },
        max: load.values().copied().max().unwrap_or(0),
        cap,
    }
}

/// Expected overlap figures for random shards of these `sizes` over `n` workers.
pub fn random_figures(n: u32, sizes: &[u32], m: u32) -> RandomFigures {
    let mut count: BTreeMap<u32, u64> = BTreeMap::new();
    for &k in sizes {
        *count.entry(k.min(n)).or_default() += 1;
    }
    let widest = count.keys().copied().max().unwrap_or(0) as usize;
    let mut histogram = vec![0.0; widest + 1];
    let mut identical_pairs = 0.0;
    let classes: Vec<(u32, u64)> = count.into_iter().collect();
    for (x, &(a, ca)) in classes.iter().enumerate() {
        for &(b, cb) in &classes[x..] {
            let pairs = if a == b {
                (ca * ca.saturating_sub(1) / 2) as f64
            } else {
                (ca * cb) as f64
            };
            if pairs == 0.0 {
                continue;
            }
            for (i, slot) in histogram.iter_mut().enumerate() {
                *slot += pairs * hypergeometric(n, a, b, i as u32);
            }
            if a == b && a > 0 {
                identical_pairs += pairs * (-ln_choose(n, a)).exp();
            }
        }
    }
    let pairs_over_max_overlap = histogram.iter().skip(m as usize + 1).sum();
    let mut at_least = 0.0;
    let mut likely_max_overlap = 0;
    for (i, expected) in histogram.iter().enumerate().rev() {
        at_least += expected;
        if at_least >= 0.5 {
            likely_max_overlap = i as u32;
            break;
        }
    }
    RandomFigures {
        workers: n,
        histogram,
        identical_pairs,
        pairs_over_max_overlap,
        likely_max_overlap,
    }
}

/// P(two random subsets of sizes a and b of n items share exactly i items).
pub fn hypergeometric(n: u32, a: u32, b: u32, i: u32) -> f64 {
    if a > n || b > n || i > a.min(b) || b - i > n - a {
        return 0.0;
    }
    (ln_choose(a, i) + ln_choose(n - a, b - i) - ln_choose(n, b)).exp()
}

/// ln C(n, r) (−∞ when r > n), summed term by term: r is a shard size, so small.
fn ln_choose(n: u32, r: u32) -> f64 {
    if r > n {
        return f64::NEG_INFINITY;
    }
    let r = r.min(n - r);
    (0..r)
        .map(|j| (f64::from(n - j)).ln() - (f64::from(j + 1)).ln())
        .sum()
}

/// The text report.
pub fn render(b: &BlastRadius) -> String {
    let mut out = format!(
        "{} shards, {} pairs; random baseline: same sizes drawn from {} workers\n\n",
        b.shards, b.pairs, b.random.workers
    );
    let width = b.histogram.len().max(b.random.histogram.len());
    let rows: Vec<Vec<String>> = (0..width)
        .map(|i| {
            let seen = b.histogram.get(i).copied().unwrap_or(0);
            let share = if b.pairs == 0 {
                0.0
            } else {
                100.0 * seen as f64 / b.pairs as f64
            };
            let random = b.random.histogram.get(i).copied().unwrap_or(0.0);
            vec![
                i.to_string(),
                seen.to_string(),
                format!("{share:.2}%"),
                format!("{random:.1}"),
            ]
        })
        .collect();
    out.push_str(&super::table::render(
        &["SHARED WORKERS", "PAIRS", "SHARE", "RANDOM (EXPECTED)"],
        &rows,
    ));
    out.push_str(&format!(
        "\nidentical shards: {} pairs (random: {:.2})\n\
         max overlap: {} (configured m = {}; random: likely {})\n\
         pairs over m: {} (random: {:.1})\n\
         slot load over {} workers: min {} / avg {:.1} / max {} (cap {})\n",
        b.identical_pairs,
        b.random.identical_pairs,
        b.max_overlap,
        b.configured_max_overlap,
        b.random.likely_max_overlap,
        b.pairs_over_max_overlap,
        b.random.pairs_over_max_overlap,
        b.load.workers,
        b.load.min,
        b.load.avg,
        b.load.max,
        b.load.cap,
    ));
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fixture::World;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn hypergeometric_matches_hand_computed_values() {
        // n = 5, shards of 2: C(2,i)·C(3,2−i)/C(5,2) = 3/10, 6/10, 1/10.
        assert!(close(hypergeometric(5, 2, 2, 0), 0.3));
        assert!(close(hypergeometric(5, 2, 2, 1), 0.6));
        assert!(close(hypergeometric(5, 2, 2, 2), 0.1));
        assert_eq!(hypergeometric(5, 2, 2, 3), 0.0);
        // Two shards of 4 out of 4 workers always coincide.
        assert!(close(hypergeometric(4, 4, 4, 4), 1.0));
    }

    #[test]
    fn random_figures_sum_to_the_pairs() {
        let f = random_figures(5, &[2, 2, 2], 1);
        let total: f64 = f.histogram.iter().sum();
        assert!(close(total, 3.0), "{f:?}");
        assert!(close(f.identical_pairs, 0.3), "{f:?}");
        assert!(close(f.pairs_over_max_overlap, 0.3), "{f:?}");
        assert_eq!(f.likely_max_overlap, 1);
    }

    #[test]
    fn report_counts_overlaps_identical_shards_and_load() {
        let snap = World::new()
            .worker("w-0")
            .worker("w-1")
            .worker("w-2")
            .worker("w-3")
            .admin("w-3", "draining")
            .tenant("acme", Some(2))
            .model("acme", "a")
            .model("acme", "b")
            .model("acme", "c")
            .assignment("acme", "a", &["w-0", "w-1"], &[])
            .assignment("acme", "b", &["w-0", "w-1"], &[])
            .assignment("acme", "c", &["w-2", "w-0"], &[])
            .snapshot();
        let b = blast_radius(&snap);
        assert_eq!((b.shards, b.pairs), (3, 3));
        assert_eq!(b.histogram, [0, 2, 1]);
        assert_eq!(b.identical_pairs, 1);
        assert_eq!(b.max_overlap, 2);
        assert_eq!(b.configured_max_overlap, 2);
        assert_eq!(b.pairs_over_max_overlap, 0);
        assert_eq!((b.load.workers, b.load.min, b.load.max), (3, 1, 3));
        assert!(close(b.load.avg, 2.0));
        assert!(b.load.cap >= 2);
        assert_eq!(b.random.workers, 3);
        let text = render(&b);
        assert!(text.contains("identical shards: 1 pairs"), "{text}");
        assert!(text.contains("configured m = 2"), "{text}");
    }

    proptest! {
        /// The expected histogram is a distribution over the actual pairs: it sums to the
        /// number of pairs, whatever the mix of shard sizes.
        #[test]
        fn expectations_sum_to_pair_count(n in 1u32..40, sizes in prop::collection::vec(1u32..8, 0..30)) {
            let f = random_figures(n, &sizes, 2);
            let t = sizes.len() as f64;
            let total: f64 = f.histogram.iter().sum();
            prop_assert!(close(total, t * (t - 1.0) / 2.0), "{total} for {t} shards");
            prop_assert!(f.identical_pairs <= total + 1e-9);
            prop_assert!(f.histogram.iter().all(|p| *p >= 0.0));
        }

        /// Each hypergeometric row is a probability distribution.
        #[test]
        fn hypergeometric_rows_sum_to_one(n in 1u32..60, a in 0u32..60, b in 0u32..60) {
            prop_assume!(a <= n && b <= n);
            let s: f64 = (0..=a.min(b)).map(|i| hypergeometric(n, a, b, i)).sum();
            prop_assert!(close(s, 1.0), "n={n} a={a} b={b}: {s}");
        }
    }
}
