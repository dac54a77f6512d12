#![allow(clippy::unwrap_used)]

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
