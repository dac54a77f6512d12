//! The router's in-flight body budget: the request bytes all requests being handled
//! hold at once are bounded by `--max-inflight-bytes`. A request reserves its declared
//! `Content-Length` (capped at `--max-body`; a body of unknown length reserves
//! `--max-body`) after it is authenticated and admitted and before its body is read,
//! and gives it back when it ends — answered, refused, timed out, or dropped because the
//! client went away (the reservation is a guard). A request that does not fit gets 503
//! with `Retry-After`: the limit is the router's, not the tenant's (429 stays the
//! tenant's own limits), and another router may have room.
//!
//! Pure: an atomic counter and its arithmetic, no I/O; the gauge it keeps is updated
//! with each change (`add`/`sub`, so concurrent changes never leave it stale).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::IntGauge;

/// Bytes of request bodies reserved by the requests in flight, up to a limit.
#[derive(Debug)]
pub struct ByteBudget {
    limit: u64,
    used: AtomicU64,
    /// Shows `used`.
    gauge: IntGauge,
}

/// A request's reserved bytes, given back when dropped.
#[derive(Debug)]
#[must_use = "the bytes are given back when the reservation is dropped"]
pub struct Reservation<'a> {
    budget: &'a ByteBudget,
    bytes: u64,
}

/// Why bytes were not reserved: `need` did not fit beside `in_use` under `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub need: u64,
    pub in_use: u64,
    pub limit: u64,
}

impl ByteBudget {
    /// A budget of `limit` bytes, shown in `gauge`.
    pub fn new(limit: u64, gauge: IntGauge) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            gauge,
        }
    }

    /// Reserves `need` bytes if they fit beside those reserved now.
    pub fn try_reserve(&self, need: u64) -> Result<Reservation<'_>, Refused> {
        let fits = |used: u64| used.checked_add(need).filter(|&total| total <= self.limit);
        match self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, fits)
        {
            Ok(_) => {
                self.gauge.add(clamp(need));
                Ok(Reservation {
                    budget: self,
                    bytes: need,
                })
            }
            Err(in_use) => Err(Refused {
                need,
                in_use,
                limit: self.limit,
            }),
        }
    }

    /// Bytes reserved right now.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Reservation<'_> {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.gauge.sub(clamp(self.bytes));
    }
}

fn clamp(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The bytes a request reserves: its declared length, or `max_body` when it declares
/// none (a chunked body may grow to it); never more than `max_body`, since a longer
/// declared body is refused with 413 before it is read.
pub fn bytes_to_reserve(declared: Option<u64>, max_body: u64) -> u64 {
    declared.map_or(max_body, |n| n.min(max_body))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn budget(limit: u64) -> ByteBudget {
        ByteBudget::new(limit, IntGauge::new("inflight_bytes", "test").unwrap())
    }

    #[test]
    fn reserves_up_to_the_limit_and_gives_back_on_drop() {
        let b = budget(100);
        let a = b.try_reserve(60).unwrap();
        let c = b.try_reserve(40).unwrap();
        assert_eq!(b.in_use(), 100);
        assert_eq!(b.gauge.get(), 100);
        assert_eq!(
            b.try_reserve(1).unwrap_err(),
            Refused {
                need: 1,
                in_use: 100,
                limit: 100
            }
        );
        drop(a);
        assert_eq!(b.in_use(), 40);
        assert!(b.try_reserve(61).is_err());
        let d = b.try_reserve(60).unwrap();
        drop((c, d));
        assert_eq!((b.in_use(), b.gauge.get()), (0, 0));
    }

    #[test]
    fn extreme_sizes_never_overflow() {
        let b = budget(u64::MAX);
        let big = b.try_reserve(u64::MAX).unwrap();
        assert!(b.try_reserve(1).is_err());
        assert_eq!(b.try_reserve(0).map(|r| r.bytes()).ok(), Some(0));
        drop(big);
        assert_eq!(b.in_use(), 0);
        assert_eq!(bytes_to_reserve(Some(u64::MAX), 8 << 20), 8 << 20);
        assert_eq!(bytes_to_reserve(None, 8 << 20), 8 << 20);
        assert_eq!(bytes_to_reserve(Some(3), 8 << 20), 3);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let b = budget(1000);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for n in 0..2000u64 {
                        if let Ok(r) = b.try_reserve(n % 300) {
                            assert!(b.in_use() <= 1000);
                            drop(r);
                        }
                    }
                });
            }
        });
        assert_eq!((b.in_use(), b.gauge.get()), (0, 0));
    }

    /// One step of a run: reserve that many bytes, or drop the reservation held at
    /// this index (modulo those held).
    #[derive(Debug, Clone)]
    enum Step {
        Reserve(u64),
        Release(usize),
    }

    fn step(limit: u64) -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..=limit.saturating_add(limit / 2)).prop_map(Step::Reserve),
            any::<u64>().prop_map(Step::Reserve),
            any::<usize>().prop_map(Step::Release),
        ]
    }

    proptest! {
        /// Against a plain sum: a reservation succeeds exactly when it fits beside those
        /// held, the total never exceeds the limit, and everything comes back.
        #[test]
        fn the_budget_is_the_sum_of_what_is_held(
            (limit, steps) in (0u64..10_000).prop_flat_map(|l| {
                (Just(l), prop::collection::vec(step(l), 0..64))
            }),
        ) {
            let b = budget(limit);
            let mut held: Vec<Reservation<'_>> = Vec::new();
            for s in steps {
                let sum: u64 = held.iter().map(Reservation::bytes).sum();
                match s {
                    Step::Reserve(n) => {
                        let fits = sum.checked_add(n).is_some_and(|t| t <= limit);
                        match b.try_reserve(n) {
                            Ok(r) => {
                                prop_assert!(fits);
                                held.push(r);
                            }
                            Err(refused) => {
                                prop_assert!(!fits);
                                prop_assert_eq!(refused, Refused { need: n, in_use: sum, limit });
                            }
                        }
                    }
                    Step::Release(i) if !held.is_empty() => {
                        let i = i % held.len();
                        drop(held.swap_remove(i));
                    }
                    Step::Release(_) => {}
                }
                let sum: u64 = held.iter().map(Reservation::bytes).sum();
                prop_assert!(sum <= limit);
                prop_assert_eq!(b.in_use(), sum);
                prop_assert_eq!(b.gauge.get(), clamp(sum));
            }
            drop(held);
            prop_assert_eq!(b.in_use(), 0);
        }
    }
}
