//! Per-tenant admission: owns the two checks a router makes before forwarding
//! a tenant's request — the in-flight cap ([`InFlight`], a lock-free counter)
//! and the request rate ([`RateBucket`], an exact integer token bucket) — and
//! the [`Refusal`] that names the limit hit, for a 429 body and `Retry-After`.
//! Time is passed in by the caller; limits are passed on every call, so an
//! edited tenant record takes effect at once.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use shardline_shared::records::TenantLimits;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    InFlight { limit: u32 },
    Rate { limit: u32, retry_after: Duration },
}

impl Refusal {
    /// Value for a `Retry-After` header: whole seconds, rounded up, at least 1.
    /// `None` for the in-flight limit, whose relief time is unknown.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::InFlight { .. } => None,
            Refusal::Rate { retry_after, .. } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(secs.max(1))
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::InFlight { limit } => {
                write!(f, "tenant in-flight limit reached ({limit} requests)")
            }
            Refusal::Rate { limit, retry_after } => write!(
                f,
                "tenant rate limit exceeded ({limit} requests/s); retry after {} ms",
                retry_after.as_millis().max(1)
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// One token, in the bucket's unit (nano-tokens): at `rate` tokens/s the
/// bucket gains exactly `rate` units per nanosecond, so refill never drifts.
const UNITS_PER_TOKEN: u64 = 1_000_000_000;

/// Token bucket for `rate_per_sec`: burst `max(rate, 1)`, refill `rate`/s.
#[derive(Debug, Clone, Default)]
pub struct RateBucket {
    units: u64,
    /// Time of the last refill; `None` means "full" (new, or was unlimited).
    last: Option<Instant>,
}

impl RateBucket {
    pub const fn new() -> Self {
        Self {
            units: 0,
            last: None,
        }
    }

    /// Takes one token at `now` under `limits.rate_per_sec`. Times earlier
    /// than a previous call are treated as that call's time. A lowered rate
    /// clamps the stored tokens to the new burst.
    pub fn try_take(&mut self, now: Instant, limits: TenantLimits) -> Result<(), Refusal> {
        let rate = limits.rate_per_sec;
        if rate == 0 {
            self.last = None;
            return Ok(());
        }
        let capacity = u64::from(rate.max(1)) * UNITS_PER_TOKEN;
        match self.last {
            None => {
                self.units = capacity;
                self.last = Some(now);
            }
            Some(last) if now > last => {
                let gained = now.duration_since(last).as_nanos() * u128::from(rate);
                let total = u128::from(self.units).saturating_add(gained);
                self.units = u64::try_from(total).unwrap_or(u64::MAX).min(capacity);
                self.last = Some(now);
            }
            Some(_) => {}
        }
        self.units = self.units.min(capacity);
        if self.units >= UNITS_PER_TOKEN {
            self.units -= UNITS_PER_TOKEN;
            return Ok(());
        }
        let missing = UNITS_PER_TOKEN - self.units;
        let retry_after = Duration::from_nanos(missing.div_ceil(u64::from(rate)));
        Err(Refusal::Rate {
            limit: rate,
            retry_after,
        })
    }
}

/// Count of a tenant's requests in flight. Share it (e.g. in an `Arc`); every
/// successful [`try_enter`](Self::try_enter) must be paired with one
/// [`leave`](Self::leave).
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicU32,
}

impl InFlight {
    pub const fn new() -> Self {
        Self {
            count: AtomicU32::new(0),
        }
    }

    /// Enters if fewer than `limit` are in flight (0 = unlimited, still
    /// counted). Never lets the count exceed `limit`, however many threads.
    pub fn try_enter(&self, limit: u32) -> bool {
        let limit = effective(limit);
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Leaves; a `leave` without an `enter` is ignored rather than wrapping.
    pub fn leave(&self) {
        let _ = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn current(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }
}

fn effective(limit: u32) -> u32 {
    if limit == 0 { u32::MAX } else { limit }
}

/// Both checks: enters `gate`, then takes a token; on a rate refusal the
/// in-flight slot is given back. On `Ok` the caller must `gate.leave()` when
/// the request ends.
pub fn admit(
    gate: &InFlight,
    bucket: &mut RateBucket,
    now: Instant,
    limits: TenantLimits,
) -> Result<(), Refusal> {
    if !gate.try_enter(limits.max_in_flight) {
        let limit = effective(limits.max_in_flight);
        return Err(Refusal::InFlight { limit });
    }
    bucket.try_take(now, limits).inspect_err(|_| gate.leave())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn rate(r: u32) -> TenantLimits {
        TenantLimits {
            max_in_flight: 0,
            rate_per_sec: r,
        }
    }

    #[test]
    fn burst_then_refill_and_retry_after() {
        let t0 = Instant::now();
        let mut b = RateBucket::new();
        assert!((0..5).all(|_| b.try_take(t0, rate(5)).is_ok()));
        let r = b.try_take(t0, rate(5)).unwrap_err();
        let want = Duration::from_millis(200);
        assert_eq!(
            r,
            Refusal::Rate {
                limit: 5,
                retry_after: want
            }
        );
        assert_eq!(r.retry_after_secs(), Some(1));
        assert!(r.to_string().contains("5 requests/s"));
        assert!(
            b.try_take(t0 + want - Duration::from_nanos(1), rate(5))
                .is_err()
        );
        assert!(b.try_take(t0 + want, rate(5)).is_ok());
    }

    #[test]
    fn lowered_rate_clamps_tokens() {
        let t0 = Instant::now();
        let mut b = RateBucket::new();
        assert!(b.try_take(t0, rate(100)).is_ok()); // 99 left
        assert_eq!(
            (0..10).filter(|_| b.try_take(t0, rate(3)).is_ok()).count(),
            3
        );
    }

    #[test]
    fn admit_reports_which_limit_and_releases_on_rate_refusal() {
        let t0 = Instant::now();
        let (gate, mut b) = (InFlight::new(), RateBucket::new());
        let l = TenantLimits {
            max_in_flight: 2,
            rate_per_sec: 1,
        };
        assert_eq!(admit(&gate, &mut b, t0, l), Ok(()));
        assert!(matches!(
            admit(&gate, &mut b, t0, l),
            Err(Refusal::Rate { .. })
        ));
        assert_eq!(gate.current(), 1);
        let l = TenantLimits {
            max_in_flight: 1,
            rate_per_sec: 0,
        };
        assert_eq!(
            admit(&gate, &mut b, t0, l),
            Err(Refusal::InFlight { limit: 1 })
        );
        gate.leave();
        gate.leave(); // unmatched: ignored
        assert_eq!(gate.current(), 0);
    }

    #[test]
    fn in_flight_never_exceeds_limit_across_threads() {
        const LIMIT: u32 = 3;
        let gate = Arc::new(InFlight::new());
        let inside = Arc::new(AtomicU32::new(0));
        let max_seen = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside, max_seen) = (gate.clone(), inside.clone(), max_seen.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if gate.try_enter(LIMIT) {
                            let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            max_seen.fetch_max(n, Ordering::SeqCst);
                            std::thread::yield_now();
                            inside.fetch_sub(1, Ordering::SeqCst);
                            gate.leave();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(max_seen.load(Ordering::SeqCst) <= LIMIT);
        assert_eq!(gate.current(), 0);
    }

    proptest! {
        #[test]
        fn accepted_within_burst_plus_refill(r in 1u32..2000, gaps in prop::collection::vec(
            prop_oneof![Just(0u64), 0u64..5_000_000, 0u64..2_000_000_000], 1..400)
        ) {
            let t0 = Instant::now();
            let mut b = RateBucket::new();
            let mut elapsed = 0u64;
            let mut accepted = 0u128;
            for (i, gap) in gaps.iter().enumerate() {
                if i > 0 { elapsed += gap; }
                accepted += u128::from(b.try_take(t0 + Duration::from_nanos(elapsed), rate(r)).is_ok());
                let bound = u128::from(r) + (u128::from(r) * u128::from(elapsed)).div_ceil(1_000_000_000);
                prop_assert!(accepted <= bound, "{} > {}", accepted, bound);
            }
        }

        #[test]
        fn full_after_one_idle_second_and_retry_after_is_honest(
            r in 1u32..500, burst in 0usize..600, limits in prop::collection::vec(0u32..500, 0..5)
        ) {
            let t0 = Instant::now();
            let mut b = RateBucket::new();
            for (i, l) in limits.iter().enumerate() {
                let _ = b.try_take(t0 + Duration::from_millis(i as u64), rate(*l));
            }
            let t = t0 + Duration::from_secs(2);
            let ok = (0..burst).filter(|_| b.try_take(t, rate(r)).is_ok()).count();
            let t = t + Duration::from_secs(1);
            prop_assert_eq!(ok, burst.min(r as usize));
            prop_assert!((0..r).all(|_| b.try_take(t, rate(r)).is_ok()));
            let Err(Refusal::Rate { retry_after, .. }) = b.try_take(t, rate(r)) else {
                return Err(TestCaseError::fail("expected a rate refusal"));
            };
            prop_assert!(b.try_take(t + retry_after, rate(r)).is_ok());
        }

        #[test]
        fn zero_limits_always_accept(n in 0usize..1000, gaps in prop::collection::vec(0u64..10, 0..50)) {
            let (gate, mut b, t0) = (InFlight::new(), RateBucket::new(), Instant::now());
            let ok = gaps.iter().all(|g| admit(&gate, &mut b, t0 + Duration::from_nanos(*g), TenantLimits { max_in_flight: 0, rate_per_sec: 0 }).is_ok());
            prop_assert!(ok && (0..n).all(|_| gate.try_enter(0)));
        }
    }
}
