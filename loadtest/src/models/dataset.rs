//! A labelled dataset of one tenant's authentication events: rows from the tenant's
//! traffic, labels sampled from its ground-truth risk ([`TenantProfile::risk`]).

use super::features::{FEATURES, Row};
use super::rng::Rng;
use super::tenant::TenantProfile;

/// `len()` events of one tenant, row-major, with their labels and true risks.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `len() × FEATURES` values, row-major (as the worker's runtime takes them).
    pub rows: Vec<f32>,
    /// 1.0 for an attack, 0.0 otherwise.
    pub labels: Vec<f32>,
    /// The probability the labels were sampled from; scoring by it gives the best AUC any
    /// model can reach on this data.
    pub risk: Vec<f64>,
}

impl Dataset {
    /// `n` events of `tenant` from stream `stream` (distinct streams are independent, so
    /// the training and the held-out set use different ones).
    pub fn generate(tenant: &TenantProfile, n: usize, stream: u64) -> Self {
        let mut events = tenant.events(stream);
        let mut coins = Rng::stream(tenant.seed, stream ^ 0x6c61_6265_6c73); // "labels"
        let mut rows = Vec::with_capacity(n * FEATURES);
        let mut labels = Vec::with_capacity(n);
        let mut risk = Vec::with_capacity(n);
        for _ in 0..n {
            let row: Row = events.next_row();
            let p = tenant.risk(&row);
            rows.extend_from_slice(&row);
            labels.push(if coins.chance(p) { 1.0 } else { 0.0 });
            risk.push(p);
        }
        Self { rows, labels, risk }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * FEATURES..(i + 1) * FEATURES]
    }

    /// Share of positive labels.
    pub fn positive_rate(&self) -> f64 {
        self.labels.iter().map(|l| f64::from(*l)).sum::<f64>() / self.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::auc::auc;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Same tenant and stream, same data; another stream, other data.
        #[test]
        fn generation_is_deterministic(seed in any::<u64>(), index in 0usize..8) {
            let t = TenantProfile::new(index, seed);
            let a = Dataset::generate(&t, 40, 1);
            let b = Dataset::generate(&t, 40, 1);
            let c = Dataset::generate(&t, 40, 2);
            prop_assert_eq!(&a.rows, &b.rows);
            prop_assert_eq!(&a.labels, &b.labels);
            prop_assert_ne!(&a.rows, &c.rows);
            prop_assert_eq!(a.rows.len(), 40 * FEATURES);
            prop_assert!(a.labels.iter().all(|l| *l == 0.0 || *l == 1.0));
        }
    }

    /// Every kind has a reasonable share of positives, and its true risk separates them
    /// well enough that a learned model can clear AUC 0.8.
    #[test]
    fn labels_are_balanced_and_learnable() {
        for t in TenantProfile::fleet(8, 11) {
            let d = Dataset::generate(&t, 3000, 1);
            let rate = d.positive_rate();
            assert!((0.08..0.4).contains(&rate), "{}: {rate}", t.name);
            let risk: Vec<f32> = d.risk.iter().map(|p| *p as f32).collect();
            let best = auc(&risk, &d.labels).expect("both classes");
            assert!(best > 0.85, "{}: oracle AUC {best}", t.name);
        }
    }
}
