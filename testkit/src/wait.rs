//! Waiting for a condition in a test: [`eventually`] polls a check until it holds or a
//! time limit passes, and [`eventually!`](crate::eventually!) is its short form. The one
//! polling loop of the workspace's tests: a check that returns `Err(state)` has its last
//! state in the timeout's panic message.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] polls.
pub const POLL: Duration = Duration::from_millis(50);

/// What a check returns: `true`/`false`, `Some(value)`/`None`, or `Ok(value)`/`Err(what
/// it saw)`.
pub trait Check {
    /// What a successful check yields.
    type Value;
    /// `Ok` once the check holds, else what it saw (if it says).
    fn holds(self) -> Result<Self::Value, Option<String>>;
}

impl Check for bool {
    type Value = ();
    fn holds(self) -> Result<(), Option<String>> {
        self.then_some(()).ok_or(None)
    }
}

impl<T> Check for Option<T> {
    type Value = T;
    fn holds(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: std::fmt::Debug> Check for Result<T, E> {
    type Value = T;
    fn holds(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(format!("{e:?}")))
    }
}

/// Polls `check` every [`POLL`] until it holds and returns what it yielded; panics
/// naming `what` (and the last state an `Err` check reported) once `limit` has passed.
pub async fn eventually<C, F, Fut>(what: &str, limit: Duration, mut check: F) -> C::Value
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let started = Instant::now();
    loop {
        let last = match check().await.holds() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if started.elapsed() >= limit {
            match last {
                Some(last) => panic!("timed out after {limit:?} waiting for: {what}; last: {last}"),
                None => panic!("timed out after {limit:?} waiting for: {what}"),
            }
        }
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

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for: a 200; last: 503")]
    async fn the_panic_shows_the_last_state_a_check_reported() {
        eventually("a 200", Duration::from_secs(1), || async {
            Err::<(), _>(503)
        })
        .await;
    }
}
