//! One connection's timer on the fast path: every wait on the client — for the next
//! request, its head, its body, a write it does not read — runs against a deadline, on
//! one `Sleep` per connection. An operation that is ready at once never touches the
//! timer wheel, and the `Sleep` is moved only earlier, never later: a later deadline
//! leaves it where it is, and when it fires before the deadline in force it is re-armed
//! then. Resetting it per request and per phase (each one a lock on the timer driver)
//! cost the fast path about a tenth of its throughput; this way a busy connection
//! re-arms about once per timeout period.

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
        if self.0.deadline() > at {
            self.0.as_mut().reset(at);
        }
        let mut f = std::pin::pin!(f);
        loop {
            tokio::select! {
                biased;
                out = &mut f => return Some(out),
                () = self.0.as_mut() => {
                    if Instant::now() >= at {
                        return None;
                    }
                    // Armed for an earlier deadline than this one: wait on.
                    self.0.as_mut().reset(at);
                }
            }
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
        // Armed for a deadline 1 s away, then asked to wait until one 5 s away: the
        // early firing does not end the wait, the later deadline does.
        let start = Instant::now();
        let short = d.run(start + Duration::from_secs(1), std::future::pending::<()>());
        assert_eq!(short.await, None);
        let _ = d
            .run(Instant::now() + Duration::from_secs(1), async {})
            .await;
        let long = d.run(
            Instant::now() + Duration::from_secs(5),
            std::future::pending::<()>(),
        );
        assert_eq!(long.await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        // Work that takes 3 s finishes within a 5 s deadline although the timer was
        // armed for 1 s.
        let _ = d
            .run(Instant::now() + Duration::from_secs(1), async {})
            .await;
        let work = tokio::time::sleep(Duration::from_secs(3));
        assert_eq!(
            d.run(Instant::now() + Duration::from_secs(5), work).await,
            Some(())
        );
    }
}
