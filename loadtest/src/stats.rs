//! Percentiles of measured durations: exact ones (nearest rank, on a sorted copy) for the
//! benchmarks' few thousand samples, and [`Histogram`] (HDR, bounded memory, 0.1 %
//! precision, same nearest-rank definition) for the load generator's unbounded runs; and
//! the [`median`] and [`ratio`] the benchmarks build their figures from. A leaf: it
//! imports nothing from the crate.

use std::time::Duration;

/// p50, p99, min and max of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub min: Duration,
    pub max: Duration,
    pub count: usize,
}

impl Summary {
    /// Summarises `samples`; all zero when there are none.
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Self {
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
            min: sorted.first().copied().unwrap_or_default(),
            max: sorted.last().copied().unwrap_or_default(),
            count: sorted.len(),
        }
    }
}

#[cfg(test)]
impl Summary {
    /// For tests of the figures built on summaries: one sample's worth, p50 half of `p99`.
    pub fn with_p99(p99: Duration) -> Self {
        Self {
            p50: p99 / 2,
            p99,
            min: Duration::ZERO,
            max: p99,
            count: 1,
        }
    }
}

/// The nearest-rank `q` quantile (0 < q ≤ 1) of sorted samples; zero when empty.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latencies from 1 µs to one hour in an HDR histogram with three significant digits
/// (every quantile within 0.1 % of the recorded sample's value), in constant memory.
///
/// Quantiles use the nearest rank, as [`percentile`] does; longer samples count as one
/// hour.
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: hdrhistogram::Histogram<u64>,
}

/// The longest latency a [`Histogram`] tells apart, in microseconds.
const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            inner: hdrhistogram::Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)
                .expect("constant bounds are valid"),
        }
    }

    /// Records one sample (to the microsecond, below).
    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.inner
            .saturating_record(micros.min(HISTOGRAM_MAX_MICROS));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides: adding cannot run out of range.
        let _ = self.inner.add(&other.inner);
    }

    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// The nearest-rank `q` quantile (0 < q ≤ 1); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.inner.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.inner.value_at_quantile(q))
    }

    /// The longest sample (to the histogram's precision); zero when empty.
    pub fn max(&self) -> Duration {
        if self.inner.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.inner.max())
    }

    /// The mean sample; zero when empty.
    pub fn mean(&self) -> Duration {
        Duration::from_secs_f64(self.inner.mean() / 1e6)
    }
}

/// The median (mean of the middle two for an even count); zero when empty.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// `a ÷ b`, infinite when `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::INFINITY } else { a / b }
}

/// Milliseconds, for tables and JSON.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The histogram's quantiles are the exact nearest-rank ones, rounded up to the
        /// histogram's bucket: never below the sample and at most 0.1 % (+1 µs) above.
        #[test]
        fn histogram_quantiles_match_nearest_rank(
            micros in prop::collection::vec(1u64..120_000_000, 1..400),
            q in 0.001f64..=1.0,
        ) {
            let samples: Vec<Duration> = micros.iter().map(|&m| Duration::from_micros(m)).collect();
            let mut h = Histogram::new();
            for s in &samples {
                h.record(*s);
            }
            let mut sorted = samples.clone();
            sorted.sort_unstable();
            let exact = percentile(&sorted, q);
            let approx = h.quantile(q);
            prop_assert!(approx >= exact, "{approx:?} < {exact:?}");
            prop_assert!(approx <= exact + exact / 1000 + Duration::from_micros(1), "{approx:?} ≫ {exact:?}");
            let max = *sorted.last().expect("non-empty");
            prop_assert!(h.max() >= max && h.max() <= max + max / 1000 + Duration::from_micros(1));
            prop_assert_eq!(h.count(), samples.len() as u64);
        }
    }

    #[test]
    fn histogram_empty_merge_and_saturation() {
        let mut a = Histogram::new();
        assert_eq!(
            (a.quantile(0.5), a.max(), a.mean()),
            (Duration::ZERO, Duration::ZERO, Duration::ZERO)
        );
        let mut b = Histogram::new();
        b.record(Duration::from_millis(10));
        b.record(Duration::from_secs(10_000));
        a.merge(&b);
        assert_eq!(a.count(), 2);
        let ten = Duration::from_millis(10);
        assert!(a.quantile(0.5) >= ten && a.quantile(0.5) <= ten + ten / 1000);
        let hour = Duration::from_secs(3600);
        assert!(a.max() >= hour && a.max() <= hour + hour / 1000);
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert_eq!(ratio(1.0, 0.0), f64::INFINITY);
    }

    #[test]
    fn nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let sum = Summary::of(&s);
        assert_eq!(sum.p50, Duration::from_millis(50));
        assert_eq!(sum.p99, Duration::from_millis(99));
        assert_eq!(sum.min, Duration::from_millis(1));
        assert_eq!(sum.max, Duration::from_millis(100));
        assert_eq!(Summary::of(&[]).p50, Duration::ZERO);
        let one = [Duration::from_millis(7)];
        assert_eq!(percentile(&one, 0.5), Duration::from_millis(7));
    }
}
