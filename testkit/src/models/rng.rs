//! A tiny seeded random generator (SplitMix64) so that datasets, tenant rules and initial
//! weights are reproducible from a seed on every platform and every version of this
//! crate's dependencies (no `rand` algorithm changes under our feet).

/// SplitMix64: 64 bits of state, passes BigCrush, and any seed (even 0) is fine.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for an independent stream: `seed` mixed with a stream label, so that
    /// (tenant 3, train set) and (tenant 3, test set) never share draws.
    pub fn stream(seed: u64, label: u64) -> Self {
        let mut mix = Self::new(seed ^ label.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self::new(mix.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller; one of the pair is dropped, for simplicity).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // (0, 1]: ln is finite
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Exponential with this mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -(1.0 - self.unit()).ln() * mean
    }

    /// A uniform index in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    // Explicit, to win over proptest's `Rng` trait from the glob.
    use super::Rng;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn draws_stay_in_range(seed in any::<u64>(), n in 1usize..1000) {
            let mut r = Rng::new(seed);
            for _ in 0..64 {
                let u = r.unit();
                prop_assert!((0.0..1.0).contains(&u));
                prop_assert!(r.below(n) < n);
                prop_assert!(r.normal().is_finite());
            }
        }

        #[test]
        fn streams_are_reproducible_and_distinct(seed in any::<u64>()) {
            let a: Vec<u64> = (0..4).map({ let mut r = Rng::stream(seed, 1); move |_| r.next_u64() }).collect();
            let b: Vec<u64> = (0..4).map({ let mut r = Rng::stream(seed, 1); move |_| r.next_u64() }).collect();
            let c: Vec<u64> = (0..4).map({ let mut r = Rng::stream(seed, 2); move |_| r.next_u64() }).collect();
            prop_assert_eq!(&a, &b);
            prop_assert_ne!(&a, &c);
        }
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = Rng::new(7);
        let xs: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
