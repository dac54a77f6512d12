//! The balancing move budget: at most `limit` moves in any window of `window`, paced so
//! that they are spread over the window instead of spent in one burst.
//!
//! A plain token bucket of capacity N refilled at N per minute lets 2N moves through in
//! some minute (a full bucket spent at once, then the refill). To keep the promise "never
//! more than N per minute" for *every* minute, [`MoveBudget`] remembers when each move was
//! spent (at most N entries) and grants only what keeps every half-open window of length
//! `window` at N or fewer. Pacing uses the same log: any window of a sixth of `window`
//! holds at most ⌈N/6⌉ moves, so a new worker receives its shards a few at a time (six such
//! windows make one whole window, so N per window stays reachable).
//!
//! Time is passed in: the caller spends moves at the instant they could last have been
//! committed, and asks how many it may start now.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Parts of the window that each get at most ⌈limit / PACES⌉ moves.
const PACES: u32 = 6;

/// At most `limit` moves in any window of `window`, at most ⌈limit/6⌉ in any sixth of it.
#[derive(Debug, Clone)]
pub struct MoveBudget {
    limit: u32,
    window: Duration,
    /// Moves spent and when, oldest first; entries a whole window old are dropped.
    spent: VecDeque<(Instant, u32)>,
}

impl MoveBudget {
    /// `limit` moves per `window`; a limit of 0 never grants a move.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window: window.max(Duration::from_millis(1)),
            spent: VecDeque::new(),
        }
    }

    /// Most moves granted in any sixth of the window.
    fn burst(&self) -> u32 {
        self.limit.div_ceil(PACES)
    }

    /// Moves spent less than `age` before `now`.
    fn spent_within(&self, now: Instant, age: Duration) -> u32 {
        self.spent
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) < age)
            .map(|(_, n)| *n)
            .sum()
    }

    /// How many moves may be started at `now`.
    pub fn available(&self, now: Instant) -> usize {
        let window = self
            .limit
            .saturating_sub(self.spent_within(now, self.window));
        let pace = self
            .burst()
            .saturating_sub(self.spent_within(now, self.window / PACES));
        window.min(pace) as usize
    }

    /// Records `n` moves at `now` (`now` never earlier than an instant spent before).
    pub fn spend(&mut self, now: Instant, n: usize) {
        while self
            .spent
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.window)
        {
            self.spent.pop_front();
        }
        if n > 0 {
            self.spent
                .push_back((now, u32::try_from(n).unwrap_or(u32::MAX)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Spends what is asked, within what is granted, at the given steps; returns when.
    fn run(limit: u32, window: Duration, steps: &[(u64, usize)]) -> Vec<(Duration, usize)> {
        let start = Instant::now();
        let mut budget = MoveBudget::new(limit, window);
        let mut t = Duration::ZERO;
        let mut log = Vec::new();
        for &(dt_ms, want) in steps {
            t += Duration::from_millis(dt_ms);
            let n = want.min(budget.available(start + t));
            budget.spend(start + t, n);
            if n > 0 {
                log.push((t, n));
            }
        }
        log
    }

    /// Most moves in any half-open window of `len` (one starting at each spend is enough).
    fn most_in(log: &[(Duration, usize)], len: Duration) -> usize {
        log.iter()
            .map(|(a, _)| {
                log.iter()
                    .filter(|(t, _)| t >= a && *t < *a + len)
                    .map(|(_, n)| n)
                    .sum()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn sixty_a_minute_comes_ten_every_ten_seconds() {
        let log = run(60, Duration::from_secs(60), &[(0, 100); 1]);
        assert_eq!(log, vec![(Duration::ZERO, 10)]);
        // Asking every second for a long time: 60 per minute, never more.
        let log = run(60, Duration::from_secs(60), &vec![(1000, 100); 600]);
        let total: usize = log.iter().map(|(_, n)| n).sum();
        assert!((590..=600).contains(&total), "{total}");
        assert_eq!(most_in(&log, Duration::from_secs(60)), 60);
    }

    #[test]
    fn zero_disables() {
        assert!(run(0, Duration::from_secs(60), &vec![(1000, 5); 120]).is_empty());
    }

    #[test]
    fn one_a_minute_waits_a_whole_minute() {
        let log = run(1, Duration::from_secs(60), &vec![(1000, 5); 130]);
        let at: Vec<u64> = log.iter().map(|(t, _)| t.as_secs()).collect();
        assert_eq!(at, vec![1, 61, 121]);
    }

    proptest! {
        #[test]
        fn no_window_ever_holds_more_than_the_limit_and_the_limit_is_reached(
            limit in 0u32..40,
            window_ms in 100u64..5000,
            steps in prop::collection::vec((0u64..2000, 0usize..30), 1..200),
        ) {
            let window = Duration::from_millis(window_ms);
            let log = run(limit, window, &steps);
            prop_assert!(most_in(&log, window) <= limit as usize);
            prop_assert!(most_in(&log, window / PACES) <= limit.div_ceil(PACES) as usize);
            // Liveness: after a whole quiet window everything is available again, paced.
            let start = Instant::now();
            let mut budget = MoveBudget::new(limit, window);
            for &(dt, n) in &log {
                budget.spend(start + dt, n);
            }
            let later = start + log.last().map_or(Duration::ZERO, |l| l.0) + window;
            prop_assert_eq!(budget.available(later), limit.div_ceil(PACES) as usize);
        }
    }
}
