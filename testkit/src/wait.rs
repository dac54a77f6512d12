//! Waiting for a condition in a test: [`eventually`] polls a check until it holds or a
//! time limit passes, and [`eventually!`](crate::eventually!) is its short form.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] polls.
pub const POLL: Duration = Duration::from_millis(50);

/// What a check returns: `true`/`false`, or `Some(value)`/`None`.
pub trait Check {
    /// What a successful check yields.
    type Value;
    /// `Some` once the check holds.
    fn holds(self) -> Option<Self::Value>;
}

impl Check for bool {
    type Value = ();
    fn holds(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Check for Option<T> {
    type Value = T;
    fn holds(self) -> Option<T> {
        self
    }
}

/// Polls `check` every [`POLL`] until it holds and returns what it yielded; panics
/// naming `what` once `limit` has passed.
pub async fn eventually<C, F, Fut>(what: &str, limit: Duration, mut check: F) -> C::Value
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await.holds() {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `eventually!(limit, "what", { check })` polls the async block `check` (a `bool` or an
/// `Option`) until it holds, as [`eventually`] does, and evaluates to what it yielded.
#[macro_export]
macro_rules! eventually {
    ($limit:expr, $what:expr, $check:block) => {
        $crate::wait::eventually($what, $limit, || async $check).await
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_what_the_check_yields_once_it_holds() {
        let mut calls = 0;
        let got = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { (n >= 3).then_some(n) }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for: never")]
    async fn panics_after_the_limit() {
        eventually("never", Duration::from_secs(1), || async { false }).await;
    }
}
