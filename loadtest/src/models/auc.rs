//! Exact ROC AUC: the Mann–Whitney U statistic over average ranks, `O(n log n)`.
//!
//! AUC is the probability that a random positive scores above a random negative, ties
//! counting one half. [`auc`] sorts once and gives tied scores their average rank, which
//! makes it exact (not a trapezoid over thresholds); the tests check it against the
//! `O(n²)` pair count by definition.

/// ROC AUC of `scores` against `labels` (positive when `> 0.5`); `None` when one class is
/// missing, a score is NaN, or the lengths differ.
pub fn auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.len() != labels.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let positives = labels.iter().filter(|l| **l > 0.5).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        // `==` rather than `total_cmp`: -0.0 and 0.0 are the same score.
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        let tied_positives = order[i..=j].iter().filter(|k| labels[**k] > 0.5).count();
        rank_sum += average_rank * tied_positives as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: the share of (positive, negative) pairs ordered right, ties ½.
    fn naive(scores: &[f32], labels: &[f32]) -> Option<f64> {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (sp, lp) in scores.iter().zip(labels) {
            for (sn, ln) in scores.iter().zip(labels) {
                if *lp > 0.5 && *ln <= 0.5 {
                    pairs += 1.0;
                    if sp > sn {
                        wins += 1.0;
                    } else if sp == sn {
                        wins += 0.5;
                    }
                }
            }
        }
        if pairs > 0.0 {
            Some(wins / pairs)
        } else {
            None
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(auc(&[0.1, 0.9], &[0.0, 1.0]), Some(1.0));
        assert_eq!(auc(&[0.9, 0.1], &[0.0, 1.0]), Some(0.0));
        assert_eq!(auc(&[0.5, 0.5], &[0.0, 1.0]), Some(0.5));
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]),
            Some(0.75)
        );
        assert_eq!(auc(&[0.3, 0.2], &[1.0, 1.0]), None);
        assert_eq!(auc(&[], &[]), None);
        assert_eq!(auc(&[f32::NAN, 0.2], &[1.0, 0.0]), None);
        assert_eq!(auc(&[-0.0, 0.0], &[1.0, 0.0]), Some(0.5));
        assert_eq!(auc(&[0.1], &[1.0, 0.0]), None);
    }

    proptest! {
        /// Equal to the pair count, with many ties (scores drawn from a few values) or few.
        #[test]
        fn equals_the_pair_count(
            rows in proptest::collection::vec((0u8..6, any::<bool>(), any::<f32>()), 0..200),
            coarse in any::<bool>(),
        ) {
            let scores: Vec<f32> = rows
                .iter()
                .map(|(bucket, _, s)| if coarse { f32::from(*bucket) } else if s.is_nan() { 0.0 } else { *s })
                .collect();
            let labels: Vec<f32> = rows.iter().map(|(_, l, _)| if *l { 1.0 } else { 0.0 }).collect();
            match (auc(&scores, &labels), naive(&scores, &labels)) {
                (Some(fast), Some(slow)) => prop_assert!((fast - slow).abs() < 1e-9, "{fast} vs {slow}"),
                (fast, slow) => prop_assert_eq!(fast, slow),
            }
        }

        /// A strictly increasing map of the scores leaves the AUC unchanged (here an exact
        /// one: scaling by a power of two).
        #[test]
        fn invariant_under_monotone_maps(
            rows in proptest::collection::vec((-5.0f32..5.0, any::<bool>()), 2..100),
        ) {
            let scores: Vec<f32> = rows.iter().map(|r| r.0).collect();
            let labels: Vec<f32> = rows.iter().map(|r| if r.1 { 1.0 } else { 0.0 }).collect();
            let mapped: Vec<f32> = scores.iter().map(|s| s * 1024.0).collect();
            prop_assert_eq!(auc(&scores, &labels), auc(&mapped, &labels));
        }
    }
}
