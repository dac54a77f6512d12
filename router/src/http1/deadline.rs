//! One connection's timer on the fast path: every wait on the client — for the next
//! request, its head, its body, a write it does not read — runs against a deadline, on
//! one `Sleep` per connection reset as the deadline moves. An operation that is ready
//! at once never touches the timer wheel.

use std::future::Future;
use std::pin::Pin;

use tokio::time::{Instant, Sleep};

/// The connection's timer.
#[derive(Debug)]
pub(super) struct Deadline(Pin<Box<Sleep>>);

impl Deadline {
    pub(super) fn new() -> Self {
        Self(Box::pin(tokio::time::sleep_until(Instant::now())))
    }

    /// `f`'s output, or `None` if `at` passes first.
    pub(super) async fn run<F: Future>(&mut self, at: Instant, f: F) -> Option<F::Output> {
        if self.0.deadline() != at {
            self.0.as_mut().reset(at);
        }
        tokio::select! {
            biased;
            out = f => Some(out),
            () = self.0.as_mut() => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_work_wins_and_pending_work_times_out() {
        let mut d = Deadline::new();
        let now = Instant::now();
        assert_eq!(d.run(now, async { 7 }).await, Some(7));
        let late = d.run(now + Duration::from_secs(3), std::future::pending::<()>());
        assert_eq!(late.await, None);
        assert_eq!(now.elapsed(), Duration::from_secs(3));
        let sleep = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(
            d.run(Instant::now() + Duration::from_secs(2), sleep).await,
            Some(())
        );
    }
}
