//! The load generator's pure decisions, apart from any I/O: when the open-loop schedule
//! sends request `i` ([`Schedule`]), which tenant it goes to ([`TenantMix`], Zipf or
//! uniform), and what it carries ([`infer_body`], [`input_from_metadata`]).

use std::time::Duration;

use crate::protocol::{Payload, Protocol};

/// A constant arrival rate: request `i` is due `i / rate` seconds after the start, for as
/// long as that is inside the run's duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
    duration: Duration,
}

impl Schedule {
    /// `rate` requests per second (finite, > 0) for `duration`.
    pub fn new(rate: f64, duration: Duration) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then_some(Self { rate, duration })
    }

    /// When request `i` is due, counted from the start of the run.
    pub fn intended(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How many requests are due inside the duration: every `i` with `intended(i) <
    /// duration`.
    pub fn len(&self) -> u64 {
        let approx = (self.duration.as_secs_f64() * self.rate).ceil();
        // Saturating float-to-int cast; then correct the rounding of the float maths so
        // that the definition above holds exactly.
        let mut n = approx as u64;
        while n > 0 && self.intended(n - 1) >= self.duration {
            n -= 1;
        }
        while self.intended(n) < self.duration {
            n += 1;
        }
        n
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which tenant each request goes to: tenant of rank `k` (1-based, in keys-file order) with
/// probability proportional to `1 / k^exponent`. Exponent 0 is the uniform mix.
///
/// Sampling is an inverse CDF: a binary search of a uniform draw in the precomputed
/// cumulative weights.
#[derive(Debug, Clone)]
pub struct TenantMix {
    /// `cumulative[k]` = sum of the weights of ranks `1..=k+1`; strictly increasing.
    cumulative: Vec<f64>,
}

impl TenantMix {
    /// The Zipf mix of `tenants` (≥ 1) ranks with `exponent` (finite, ≥ 0).
    pub fn zipf(tenants: usize, exponent: f64) -> Option<Self> {
        if tenants == 0 || !exponent.is_finite() || exponent < 0.0 {
            return None;
        }
        let mut total = 0.0;
        let cumulative = (1..=tenants)
            .map(|k| {
                total += (k as f64).powf(-exponent);
                total
            })
            .collect();
        Some(Self { cumulative })
    }

    pub fn uniform(tenants: usize) -> Option<Self> {
        Self::zipf(tenants, 0.0)
    }

    pub fn tenants(&self) -> usize {
        self.cumulative.len()
    }

    /// The probability of the tenant at `index` (0-based).
    pub fn probability(&self, index: usize) -> f64 {
        let below = index.checked_sub(1).map_or(0.0, |i| self.cumulative[i]);
        (self.cumulative[index] - below) / self.total()
    }

    /// The tenant index for a uniform draw `u` in `[0, 1)`.
    pub fn index_for(&self, u: f64) -> usize {
        let target = u * self.total();
        let i = self.cumulative.partition_point(|&c| c <= target);
        i.min(self.cumulative.len() - 1)
    }

    /// A tenant index drawn from `rng`.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        self.index_for(rng.f64())
    }

    fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(1.0)
    }
}

/// An OIP v2 infer request in `protocol`: one FP32 input `name` of shape `[batch,
/// features]`, values in `[0, 1)` drawn from `seed` (row-major, flat).
pub fn infer_body(
    name: &str,
    batch: usize,
    features: usize,
    seed: u64,
    protocol: Protocol,
) -> Payload {
    let mut rng = fastrand::Rng::with_seed(seed);
    let data: Vec<f32> = (0..batch * features).map(|_| rng.f32()).collect();
    protocol.payload(name, batch, &data)
}

/// The first input's name and feature count (its last dimension, when fixed) from a `GET
/// /v2/models/{model}` answer.
pub fn input_from_metadata(metadata: &serde_json::Value) -> Option<(String, usize)> {
    let input = metadata.get("inputs")?.get(0)?;
    let name = input.get("name")?.as_str()?.to_owned();
    let features = input.get("shape")?.as_array()?.last()?.as_i64()?;
    let features = usize::try_from(features).ok().filter(|&f| f > 0)?;
    Some((name, features))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn schedule_is_evenly_spaced_and_ends_inside_the_duration(
            rate in 0.1f64..100_000.0,
            millis in 0u64..20_000,
        ) {
            let duration = Duration::from_millis(millis);
            let s = Schedule::new(rate, duration).expect("valid rate");
            let n = s.len();
            prop_assert_eq!(s.intended(0), Duration::ZERO);
            if n > 0 {
                prop_assert!(s.intended(n - 1) < duration);
            }
            prop_assert!(s.intended(n) >= duration);
            // About rate × duration requests (one more for the one at t = 0).
            let expected = duration.as_secs_f64() * rate;
            prop_assert!((n as f64 - expected).abs() <= 1.0, "{} vs {}", n, expected);
            for i in [0, n / 2, n.saturating_sub(1)] {
                let gap = s.intended(i + 1) - s.intended(i);
                prop_assert!((gap.as_secs_f64() - 1.0 / rate).abs() < 1e-6);
            }
        }

        #[test]
        fn mix_draws_follow_the_cumulative_weights(
            tenants in 1usize..2_000,
            exponent in 0.0f64..3.0,
            u in 0.0f64..1.0,
        ) {
            let mix = TenantMix::zipf(tenants, exponent).expect("valid mix");
            let i = mix.index_for(u);
            prop_assert!(i < tenants);
            // `u` falls inside tenant i's slice of [0, 1).
            let below: f64 = (0..i).map(|j| mix.probability(j)).sum();
            prop_assert!(below <= u + 1e-9 && u < below + mix.probability(i) + 1e-9);
        }

        #[test]
        fn mix_probabilities_are_zipf(tenants in 1usize..500, exponent in 0.0f64..3.0) {
            let mix = TenantMix::zipf(tenants, exponent).expect("valid mix");
            let sum: f64 = (0..tenants).map(|i| mix.probability(i)).sum();
            prop_assert!((sum - 1.0).abs() < 1e-9);
            let first = mix.probability(0);
            for i in 0..tenants {
                let expected = first * ((i + 1) as f64).powf(-exponent);
                prop_assert!((mix.probability(i) - expected).abs() <= 1e-9 * first.max(1.0));
                if i > 0 {
                    prop_assert!(mix.probability(i) <= mix.probability(i - 1) + 1e-12);
                }
            }
        }
    }

    #[test]
    fn invalid_plans_are_refused() {
        assert!(Schedule::new(0.0, Duration::from_secs(1)).is_none());
        assert!(Schedule::new(f64::NAN, Duration::from_secs(1)).is_none());
        assert!(TenantMix::zipf(0, 1.1).is_none());
        assert!(TenantMix::zipf(3, -1.0).is_none());
        let uniform = TenantMix::uniform(4).expect("valid mix");
        assert!((uniform.probability(3) - 0.25).abs() < 1e-12);
        assert_eq!(uniform.index_for(0.0), 0);
        assert_eq!(uniform.index_for(0.999_999), 3);
    }

    #[test]
    fn sampling_is_seeded() {
        let mix = TenantMix::zipf(100, 1.1).expect("valid mix");
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..50).map(|_| mix.sample(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn body_and_metadata() {
        let body = infer_body("features", 2, 3, 1, Protocol::HttpJson);
        let v: serde_json::Value = serde_json::from_slice(&body.body).expect("json");
        assert_eq!(v["inputs"][0]["shape"], serde_json::json!([2, 3]));
        assert_eq!(v["inputs"][0]["data"].as_array().map(Vec::len), Some(6));
        assert_eq!(body, infer_body("features", 2, 3, 1, Protocol::HttpJson));
        let binary = infer_body("features", 2, 3, 1, Protocol::HttpBinary);
        assert_eq!(binary.body.len() - binary.header_length.unwrap(), 6 * 4);
        let meta = serde_json::json!({
            "name": "risk",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
        });
        assert_eq!(input_from_metadata(&meta), Some(("x".to_owned(), 64)));
        let variable = serde_json::json!({"inputs": [{"name": "x", "shape": [-1, -1]}]});
        assert_eq!(input_from_metadata(&variable), None);
    }
}
