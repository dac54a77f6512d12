//! The load generator behind `loadtest run`: OIP v2 infer requests against a running router
//! for the tenants of a keys file ([`keys`]), open loop (a constant arrival rate) or closed
//! loop (a fixed number of connections, each sending again as soon as it is answered),
//! with a Zipf or uniform tenant mix. The report ([`report`]) counts answers by status and
//! holds HDR-histogram latency percentiles of the 200 answers.
//!
//! Layout: [`Flags`] are `loadtest run`'s flags; [`plan`] is the pure part (schedule, tenant mix, request body), [`report`] folds
//! finished requests into the report, `runner` does the I/O on the raw hyper connections
//! of [`crate::client`].
//!
//! # Coordinated omission
//!
//! A closed-loop client measures a slow server at the server's own pace: while one answer
//! is late, the requests that a real user population would have sent meanwhile are never
//! sent, so their waiting never shows. In open loop this generator avoids that:
//!
//! - Request `i` has an *intended* send time, `start + i / rate`, fixed before the run. A
//!   dispatcher wakes at each intended time (or at once when it is behind), picks the
//!   tenant and model, and spawns a task for that one request; it never waits for answers.
//! - The task takes one of at most `connections` keep-alive connections (a FIFO semaphore,
//!   idle connections reused, new ones opened up to the cap). When all are busy it waits
//!   in line, as a request behind a saturated client pool would.
//! - Its latency runs from the *intended* send time to the answer's last byte, so time
//!   spent waiting for the dispatcher, for a connection or in the server's queue all
//!   counts. Its deadline (`timeout`) also counts from the intended time.
//! - After the schedule ends the run waits for every spawned request (answer, failure or
//!   timeout), so the requests that queued longest are in the report too; `elapsed` covers
//!   this drain.
//!
//! The dispatcher sleeps with tokio's timer (1 ms resolution): at rates above 1,000 req/s
//! requests leave in small bursts, which adds at most a millisecond. In closed loop the
//! latency is the plain time from send to answer; it shows the service time, not what users
//! arriving at a given rate would see.
//!
//! Errors never stop a run: a refused connection, a broken one, a non-200 answer and a
//! timeout each count in the report's `errors` (by status code, `connect`, `transport`,
//! `timeout`). Bad options and an unusable keys file are refused before any request.
//!
//! ```no_run
//! use std::time::Duration;
//! use shardline_loadtest::loadgen::{self, Mode, Options};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let tenants = loadgen::keys::load("keys.json".as_ref())?;
//! let mut options = Options::new(
//!     "http://127.0.0.1:8080",
//!     tenants,
//!     Mode::Open { rate: 200.0, connections: 64 },
//! );
//! options.duration = Duration::from_secs(30);
//! let report = loadgen::run(&options).await?;
//! println!("{}", report.table());
//! # Ok(())
//! # }
//! ```

mod flags;
pub mod keys;
pub mod plan;
pub mod report;
mod runner;

use std::fmt;
use std::time::Duration;

use crate::protocol::Protocol;

pub use flags::Flags;
pub use keys::{KeysError, TenantKey};
pub use report::Report;
pub use runner::run;

/// The default Zipf exponent of the tenant mix.
pub const DEFAULT_ZIPF: f64 = 1.1;
/// Features per row when neither the options nor the model's metadata say.
pub const DEFAULT_FEATURES: usize = 64;
/// The input name when neither the options nor the model's metadata say.
pub const DEFAULT_INPUT: &str = "features";

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `rate` requests per second on a fixed schedule, over at most `connections`
    /// keep-alive connections; latency counts from each request's intended send time.
    Open { rate: f64, connections: usize },
    /// `concurrency` connections, each sending again when answered.
    Closed { concurrency: usize },
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Open { .. } => "open-loop",
            Self::Closed { .. } => "closed-loop",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { rate, connections } => {
                write!(
                    f,
                    "open loop at {rate} req/s over ≤ {connections} connections"
                )
            }
            Self::Closed { concurrency } => write!(f, "closed loop on {concurrency} connections"),
        }
    }
}

/// Which tenants the requests go to (in keys-file order of rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mix {
    /// Tenant of rank `k` with probability ∝ `1 / k^s`.
    Zipf(f64),
    Uniform,
}

impl Mix {
    /// The Zipf exponent (0 for uniform).
    pub fn exponent(&self) -> f64 {
        match self {
            Self::Zipf(s) => *s,
            Self::Uniform => 0.0,
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zipf(s) => write!(f, "Zipf({s}) tenant mix"),
            Self::Uniform => write!(f, "uniform tenant mix"),
        }
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `http://host[:port]` of the router; plain HTTP only.
    pub router: String,
    /// Tenants in rank order (see [`keys`]).
    pub tenants: Vec<TenantKey>,
    pub mode: Mode,
    pub mix: Mix,
    /// How long requests are started for (the run then waits for those in flight).
    pub duration: Duration,
    /// Rows per request.
    pub batch: usize,
    /// Features per row; `None`: from the first tenant's first model's metadata, else
    /// [`DEFAULT_FEATURES`].
    pub features: Option<usize>,
    /// The input's name; `None`: from the same metadata, else [`DEFAULT_INPUT`].
    pub input: Option<String>,
    /// Per request, from its intended send time (open loop) or its send (closed loop).
    pub timeout: Duration,
    /// Seeds the tenant and model choices and the feature values.
    pub seed: u64,
    /// JSON or binary tensors.
    pub protocol: Protocol,
}

impl Options {
    /// A 30 s run with the default Zipf mix, one row per request, the input from the
    /// model's metadata, a 30 s timeout and seed 1.
    pub fn new(router: impl Into<String>, tenants: Vec<TenantKey>, mode: Mode) -> Self {
        Self {
            router: router.into(),
            tenants,
            mode,
            mix: Mix::Zipf(DEFAULT_ZIPF),
            duration: Duration::from_secs(30),
            batch: 1,
            features: None,
            input: None,
            timeout: Duration::from_secs(30),
            seed: 1,
            protocol: Protocol::HttpJson,
        }
    }

    /// Every problem with these options, at once.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        if let Err(e) = runner::parse_router(&self.router) {
            problems.push(e);
        }
        if let Err(e) = keys::check(&self.tenants) {
            problems.push(format!("tenants: {e}"));
        }
        match self.mode {
            Mode::Open { rate, connections } => {
                if plan::Schedule::new(rate, self.duration).is_none() {
                    problems.push(format!("rate must be a positive number, not {rate}"));
                }
                if connections == 0 {
                    problems.push("connections must be at least 1".to_owned());
                }
            }
            Mode::Closed { concurrency: 0 } => {
                problems.push("concurrency must be at least 1".to_owned());
            }
            Mode::Closed { .. } => {}
        }
        if let Mix::Zipf(s) = self.mix
            && !(s.is_finite() && s >= 0.0)
        {
            problems.push(format!("zipf exponent must be ≥ 0, not {s}"));
        }
        if self.duration.is_zero() {
            problems.push("duration must be positive".to_owned());
        }
        if self.batch == 0 {
            problems.push("batch must be at least 1".to_owned());
        }
        if self.features == Some(0) {
            problems.push("features must be at least 1".to_owned());
        }
        if self.input.as_deref() == Some("") {
            problems.push("input name must not be empty".to_owned());
        }
        if self.timeout.is_zero() {
            problems.push("timeout must be positive".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Options(problems.join("; ")))
        }
    }
}

/// Why a load run could not start (failures during the run are counted, not returned).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error("invalid load options: {0}")]
    Options(String),
    #[error("cannot resolve router {router}: {reason}")]
    Resolve { router: String, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> Vec<TenantKey> {
        vec![TenantKey {
            tenant: "t1".into(),
            key: "k".into(),
            models: vec!["risk".into()],
        }]
    }

    #[test]
    fn defaults_are_valid() {
        let o = Options::new(
            "http://127.0.0.1:1",
            tenants(),
            Mode::Closed { concurrency: 1 },
        );
        assert!(o.validate().is_ok());
    }

    #[test]
    fn every_problem_is_reported() {
        let mut o = Options::new(
            "https://example.com",
            Vec::new(),
            Mode::Open {
                rate: 0.0,
                connections: 0,
            },
        );
        o.mix = Mix::Zipf(-1.0);
        o.batch = 0;
        o.features = Some(0);
        o.duration = Duration::ZERO;
        let err = o.validate().expect_err("invalid").to_string();
        for needle in [
            "plain http",
            "no tenants",
            "rate",
            "connections",
            "zipf",
            "duration",
            "batch",
            "features",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }
}
