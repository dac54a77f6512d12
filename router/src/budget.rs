//! Retry budget: decides whether a retry may be sent, so that retries stay a
//! bounded fraction of original requests (Finagle's `RetryBudget`, linkerd's
//! retry budget). It owns a fixed ring of time buckets counting deposits
//! (original requests) and withdrawals (retries); time is passed in by the
//! caller and buckets older than the window expire as it advances. It is plain
//! data: share it behind a `Mutex` and lock around each call.
//!
//! Guarantee (checked by a property test, no slack beyond flooring): at every
//! granted withdrawal at time `t`, `W <= floor(ratio_permille * D / 1000) +
//! floor(min_per_sec * window_secs)`, where `W` and `D` count granted
//! withdrawals and deposits in `(t - window, t]`. To keep this exact with
//! buckets, deposits are counted over the last `BUCKETS` buckets (the ones
//! wholly inside the trailing window, so a deposit stops counting at most one
//! window after it was made, and may stop up to one bucket earlier) while
//! withdrawals are counted over `BUCKETS + 1` (so one made up to one bucket
//! more than a window ago still counts). Both errors are conservative.
//!
//! The literal "any window-length interval" form cannot hold for any budget
//! that lets past deposits fund later retries: deposits just before the
//! interval start fund withdrawals inside it (100 deposits at 0 s, 20
//! retries at 5 s, and the interval [4 s, 14 s) holds 20 retries, 0 deposits).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Number of buckets that make up one window for deposits.
pub const BUCKETS: u64 = 10;
const SLOTS: usize = BUCKETS as usize + 1;
const PERMILLE: u128 = 1000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    epoch: u64,
    deposits: u64,
    withdrawals: u64,
}

/// Sliding-window retry budget; O(1) memory (`BUCKETS + 1` buckets).
#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio_permille: u32,
    reserve: u64,
    bucket_nanos: u64,
    /// Set by the first `deposit`/`try_withdraw`; bucket epochs count from it.
    origin: Option<Instant>,
    /// Highest epoch seen; earlier `now` values are treated as this one.
    latest: u64,
    slots: [Bucket; SLOTS],
}

impl RetryBudget {
    /// `ratio_permille`: retries allowed per 1000 original requests (200 =
    /// 20 %). `min_per_sec`: floor of retries per second even without traffic;
    /// the reserve is `floor(min_per_sec * window_secs)`. `window`: how long a
    /// deposit counts; divided into [`BUCKETS`] buckets (a zero window acts as
    /// `BUCKETS` nanoseconds).
    pub fn new(ratio_permille: u32, min_per_sec: u32, window: Duration) -> Self {
        let window_nanos = u64::try_from(window.as_nanos())
            .unwrap_or(u64::MAX)
            .max(BUCKETS);
        let bucket_nanos = window_nanos / BUCKETS;
        let reserve = u128::from(min_per_sec) * u128::from(bucket_nanos * BUCKETS) / NANOS_PER_SEC;
        Self {
            ratio_permille,
            reserve: u64::try_from(reserve).unwrap_or(u64::MAX),
            bucket_nanos,
            origin: None,
            latest: 0,
            slots: [Bucket::default(); SLOTS],
        }
    }

    /// Width of one bucket (`window / BUCKETS`). After an idle period of
    /// `(BUCKETS + 1) * bucket_width()` the budget is back to the reserve.
    pub fn bucket_width(&self) -> Duration {
        Duration::from_nanos(self.bucket_nanos)
    }

    /// Records one original (non-retry) request.
    /// Retries allowed per 1000 original requests.
    pub fn ratio_permille(&self) -> u32 {
        self.ratio_permille
    }

    pub fn deposit(&mut self, now: Instant) {
        let epoch = self.advance(now);
        let slot = self.slot_mut(epoch);
        slot.deposits = slot.deposits.saturating_add(1);
    }

    /// Takes one retry from the budget; `false` means do not retry.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        let epoch = self.advance(now);
        let (deposits, withdrawals) = self.totals(epoch);
        if withdrawals >= self.allowance(deposits) {
            return false;
        }
        let slot = self.slot_mut(epoch);
        slot.withdrawals = slot.withdrawals.saturating_add(1);
        true
    }

    /// Retries that would be granted at `now` (for metrics).
    pub fn available(&self, now: Instant) -> u64 {
        let (deposits, withdrawals) = self.totals(self.epoch_of(now));
        self.allowance(deposits).saturating_sub(withdrawals)
    }

    fn epoch_of(&self, now: Instant) -> u64 {
        let Some(origin) = self.origin else {
            return self.latest;
        };
        let nanos = now.saturating_duration_since(origin).as_nanos();
        let epoch = u64::try_from(nanos / u128::from(self.bucket_nanos)).unwrap_or(u64::MAX);
        epoch.max(self.latest)
    }

    fn advance(&mut self, now: Instant) -> u64 {
        self.origin.get_or_insert(now);
        self.latest = self.epoch_of(now);
        self.latest
    }

    fn slot_mut(&mut self, epoch: u64) -> &mut Bucket {
        // SLOTS is tiny, so the remainder always fits in usize.
        let slot = &mut self.slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        slot
    }

    /// (deposits over the last `BUCKETS` buckets, withdrawals over the last
    /// `BUCKETS + 1`), both ending at `epoch`.
    fn totals(&self, epoch: u64) -> (u64, u64) {
        let mut deposits = 0u64;
        let mut withdrawals = 0u64;
        for slot in self.slots.iter().filter(|s| s.epoch <= epoch) {
            let age = epoch - slot.epoch;
            if age < BUCKETS {
                deposits = deposits.saturating_add(slot.deposits);
            }
            if age <= BUCKETS {
                withdrawals = withdrawals.saturating_add(slot.withdrawals);
            }
        }
        (deposits, withdrawals)
    }

    fn allowance(&self, deposits: u64) -> u64 {
        let earned = u128::from(self.ratio_permille) * u128::from(deposits) / PERMILLE;
        u64::try_from(earned)
            .unwrap_or(u64::MAX)
            .saturating_add(self.reserve)
    }
}

/// Retries one tenant may have saved up (and starts with): enough to fail over a burst
/// away from a dead worker before its requests have earned any.
pub const TENANT_RETRY_RESERVE: u32 = 10;

/// One tenant's share of retries, beside the router's [`RetryBudget`]: each request the
/// tenant sends earns `ratio_permille` thousandths of a retry, up to
/// [`TENANT_RETRY_RESERVE`] saved, and each retry spends one. So a tenant's retries never
/// exceed its own requests × ratio + the reserve, whatever the other tenants do, and
/// one tenant whose requests keep failing cannot spend the router's budget for everyone
/// (gRPC's retry throttling is built the same way). One atomic: no lock per request.
#[derive(Debug)]
pub struct TenantRetries {
    milli: AtomicU32,
}

impl Default for TenantRetries {
    fn default() -> Self {
        Self {
            milli: AtomicU32::new(TENANT_RETRY_RESERVE * 1000),
        }
    }
}

impl TenantRetries {
    /// One original request: earns `ratio_permille` thousandths of a retry.
    pub fn deposit(&self, ratio_permille: u32) {
        let cap = TENANT_RETRY_RESERVE * 1000;
        let _ = self
            .milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(m.saturating_add(ratio_permille).min(cap))
            });
    }

    /// Spends one retry, if one is saved.
    pub fn try_withdraw(&self) -> bool {
        self.milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                m.checked_sub(1000)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn ratio_plus_reserve() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(200, 10, 10 * SEC);
        assert_eq!(b.available(t0), 100);
        for _ in 0..1000 {
            b.deposit(t0);
        }
        assert_eq!(b.available(t0), 300);
        assert_eq!((0..400).filter(|_| b.try_withdraw(t0)).count(), 300);
        assert_eq!(b.available(t0), 0);
        assert!(!b.try_withdraw(t0 + SEC));
    }

    #[test]
    fn deposits_expire_after_window_and_withdrawals_a_bucket_later() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(1000, 0, 10 * SEC);
        for _ in 0..5 {
            b.deposit(t0);
        }
        assert!(b.try_withdraw(t0));
        assert_eq!(b.available(t0 + 9 * SEC), 4);
        assert_eq!(b.available(t0 + 10 * SEC), 0);
        b.deposit(t0 + 10 * SEC);
        // The old withdrawal still counts for one more bucket.
        assert_eq!(b.available(t0 + 10 * SEC), 0);
        assert_eq!(b.available(t0 + 11 * SEC), 1);
    }

    #[test]
    fn earlier_time_is_treated_as_latest() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(1000, 0, 10 * SEC);
        b.deposit(t0 + 5 * SEC);
        b.deposit(t0); // out of order: counted in the latest bucket
        assert_eq!(b.available(t0), 2);
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Deposit,
        Withdraw,
    }

    fn ops() -> impl Strategy<Value = Vec<(u64, Op)>> {
        let op = prop_oneof![Just(Op::Deposit), Just(Op::Withdraw)];
        // Gaps in ms; many zero gaps to make bursts.
        prop::collection::vec((prop_oneof![Just(0u64), 0u64..1500], op), 0..300)
    }

    proptest! {
        #[test]
        fn withdrawals_bounded_by_trailing_window(
            ratio in 0u32..1500, min in 0u32..20, window_ms in 10u64..8000, ops in ops()
        ) {
            let window = Duration::from_millis(window_ms);
            let t0 = Instant::now();
            let mut b = RetryBudget::new(ratio, min, window);
            let mut t = Duration::ZERO;
            let mut deposits: Vec<Duration> = Vec::new();
            let mut withdrawals: Vec<Duration> = Vec::new();
            for (gap, op) in ops {
                t += Duration::from_millis(gap);
                match op {
                    Op::Deposit => { b.deposit(t0 + t); deposits.push(t); }
                    Op::Withdraw => {
                        let before = b.available(t0 + t);
                        let granted = b.try_withdraw(t0 + t);
                        prop_assert_eq!(granted, before > 0);
                        if !granted { continue; }
                        withdrawals.push(t);
                        let inside = |x: &&Duration| **x + window > t;
                        let w = withdrawals.iter().filter(inside).count() as u128;
                        let d = deposits.iter().filter(inside).count() as u128;
                        // 1000 * 1e9 * W <= ratio * 1e9 * D + 1000 * min * window_ns
                        let lhs = PERMILLE * NANOS_PER_SEC * w;
                        let rhs = u128::from(ratio) * NANOS_PER_SEC * d
                            + PERMILLE * u128::from(min) * window.as_nanos();
                        prop_assert!(lhs <= rhs, "W={} D={} at {:?}", w, d, t);
                    }
                }
            }
        }

        #[test]
        fn idle_restores_reserve_and_old_deposits_stop_counting(
            ratio in 0u32..1500, min in 0u32..20, window_ms in 10u64..8000,
            ops in ops(), fresh in 0u64..50
        ) {
            let window = Duration::from_millis(window_ms);
            let t0 = Instant::now();
            let mut b = RetryBudget::new(ratio, min, window);
            let reserve = u64::from(min) * window_ms / 1000;
            let mut t = t0;
            for (gap, op) in ops {
                t += Duration::from_millis(gap);
                match op {
                    Op::Deposit => b.deposit(t),
                    Op::Withdraw => { b.try_withdraw(t); }
                }
            }
            // Deposits never count once a full window old.
            prop_assert!(b.available(t + window) <= reserve);
            // After (BUCKETS + 1) buckets of idleness: exactly the reserve,
            // plus what fresh deposits earn.
            let later = t + b.bucket_width() * (BUCKETS as u32 + 1);
            prop_assert_eq!(b.available(later), reserve);
            for _ in 0..fresh {
                b.deposit(later);
            }
            let earned = u64::from(ratio) * fresh / 1000;
            prop_assert_eq!(b.available(later), reserve + earned);
            let granted = (0..reserve + earned + 5).filter(|_| b.try_withdraw(later)).count();
            prop_assert_eq!(granted as u64, reserve + earned);
        }
    }

    proptest! {
        /// A tenant's retries stay within its own requests × ratio + the reserve, for
        /// any interleaving of requests and retries.
        #[test]
        fn a_tenant_retries_within_its_own_share(
            ratio in 0u32..=1000,
            ops in prop::collection::vec(any::<bool>(), 0..400),
        ) {
            let t = TenantRetries::default();
            let (mut requests, mut retries) = (0u64, 0u64);
            for deposit in ops {
                if deposit {
                    t.deposit(ratio);
                    requests += 1;
                } else if t.try_withdraw() {
                    retries += 1;
                }
                prop_assert!(
                    retries * 1000 <= requests * u64::from(ratio) + u64::from(TENANT_RETRY_RESERVE) * 1000
                );
            }
        }
    }

    #[test]
    fn a_tenant_starts_with_its_reserve_and_earns_more_by_requests() {
        let t = TenantRetries::default();
        assert_eq!(
            (0..20).filter(|_| t.try_withdraw()).count(),
            TENANT_RETRY_RESERVE as usize
        );
        (0..10).for_each(|_| t.deposit(200));
        assert_eq!(
            (0..5).filter(|_| t.try_withdraw()).count(),
            2,
            "10 requests at 20 %"
        );
    }
}
