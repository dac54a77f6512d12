//! A lean closed-loop load client: a fixed number of requests in flight, each sent again
//! as soon as the previous answer is read, for a warm-up and then a measured window. Over
//! HTTP/1.1 one keep-alive connection (raw hyper 1 `http1`, one task) per request in
//! flight; over gRPC [`GRPC_STREAMS_PER_CONNECTION`] concurrent streams share each HTTP/2
//! connection, as gRPC clients multiplex calls on a channel.
//!
//! Only answers completed inside the measured window count: throughput is their number
//! divided by the window, and their latencies (send to last body byte) are the samples.
//! Any answer other than 200, and any transport failure, is an error; the client then
//! opens a new connection. The answer's body is read in full but not parsed.
//!
//! Requests are sent with [`crate::client`], the client the load generator (`crate::loadgen`)
//! uses too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::task::JoinSet;

pub use crate::client::GRPC_STREAMS_PER_CONNECTION;
pub use crate::client::{RequestSpec, once};
use crate::client::{Sender, connect_to, exchange, keep_error};
use crate::stats::Summary;

/// What one load run saw.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Latencies of the 200 answers completed inside the measured window.
    pub latencies: Vec<Duration>,
    /// Failures (non-200 answers and transport errors) inside the measured window.
    pub errors: u64,
    /// Up to [`KEPT_ERRORS`](crate::client::KEPT_ERRORS) distinct error messages (from any time in the run).
    pub error_messages: Vec<String>,
    /// The measured window.
    pub window: Duration,
    /// Connections opened (one per task, plus one per reconnect).
    pub connections: u64,
}

impl LoadResult {
    /// 200 answers per second over the measured window.
    pub fn throughput(&self) -> f64 {
        if self.window.is_zero() {
            0.0
        } else {
            self.latencies.len() as f64 / self.window.as_secs_f64()
        }
    }

    fn merge(&mut self, other: Self) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.connections += other.connections;
        for m in other.error_messages {
            keep_error(&mut self.error_messages, m);
        }
    }
}

/// One load run summarised, as the benchmarks' tables show it.
#[derive(Debug, Clone)]
pub struct Measured {
    /// 200 answers per second over the measured window.
    pub throughput: f64,
    pub latency: Summary,
    pub errors: u64,
    pub error_messages: Vec<String>,
    pub connections: u64,
    pub window: Duration,
}

impl From<LoadResult> for Measured {
    fn from(load: LoadResult) -> Self {
        Self {
            throughput: load.throughput(),
            latency: Summary::of(&load.latencies),
            errors: load.errors,
            error_messages: load.error_messages,
            connections: load.connections,
            window: load.window,
        }
    }
}

impl Measured {
    /// `seconds` of CPU per answered request, in microseconds.
    pub fn cpu_us(&self, seconds: f64) -> f64 {
        let n = self.throughput * self.window.as_secs_f64();
        if n == 0.0 { 0.0 } else { seconds * 1e6 / n }
    }

    /// `seconds` of CPU as cores busy over the window.
    pub fn cores(&self, seconds: f64) -> f64 {
        seconds / self.window.as_secs_f64().max(1e-9)
    }

    /// For tests of the figures built on runs: `throughput` req/s over one second, p50
    /// half of `p99`.
    #[cfg(test)]
    pub fn fixture(throughput: f64, p99: Duration) -> Self {
        Self {
            throughput,
            latency: Summary::with_p99(p99),
            errors: 0,
            error_messages: Vec::new(),
            connections: 1,
            window: Duration::from_secs(1),
        }
    }
}

/// Runs `concurrency` connections against `spec` from now on and measures the `window`
/// that starts at `from` (the time before it is the warm-up).
///
/// Call it on the runtime the client should use (its tasks and connections are spawned
/// there).
pub async fn run(
    spec: Arc<RequestSpec>,
    concurrency: usize,
    from: Instant,
    window: Duration,
) -> LoadResult {
    let until = from + window;
    let mut tasks = JoinSet::new();
    let concurrency = concurrency.max(1);
    if spec.grpc {
        let mut left = concurrency;
        while left > 0 {
            let streams = left.min(GRPC_STREAMS_PER_CONNECTION);
            tasks.spawn(multiplexed_loop(spec.clone(), streams, from, until));
            left -= streams;
        }
    } else {
        for _ in 0..concurrency {
            tasks.spawn(connection_loop(spec.clone(), from, until));
        }
    }
    let mut total = LoadResult {
        window,
        ..LoadResult::default()
    };
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(r) => total.merge(r),
            Err(e) => {
                total.errors += 1;
                keep_error(
                    &mut total.error_messages,
                    format!("client task failed: {e}"),
                );
            }
        }
    }
    total
}

/// The order of `N` targets (indexes) in 1-based round `round`: rotated one place per
/// round, so that no target always runs first or right after another, and a slow drift of
/// the machine's speed falls on every target alike.
pub fn rotation<const N: usize>(round: usize) -> [usize; N] {
    std::array::from_fn(|i| (i + round.max(1) - 1) % N)
}

/// How a benchmark loads each of its targets, the same for every target: `concurrency`
/// connections of a client with `client_threads` runtime threads, `warmup` then a
/// measured `duration`, for `rounds` rounds.
/// Its fields are the load flags every HTTP benchmark shares.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct LoadPlan {
    /// Keep-alive connections of the closed-loop client (one request in flight each).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Warm-up before each measured window, in seconds.
    #[arg(long, default_value = "1", value_parser = crate::args::parse_secs)]
    pub warmup: Duration,
    /// Measured window per target (and model) and round, in seconds.
    #[arg(long, default_value = "3", value_parser = crate::args::parse_secs)]
    pub duration: Duration,
    /// Rounds of every target, the order rotated each round; ratios are medians of the
    /// rounds' ratios between targets measured in the same round.
    #[arg(long, default_value_t = 9)]
    pub rounds: usize,
    /// Runtime threads of the load client (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
}

impl Default for LoadPlan {
    fn default() -> Self {
        Self {
            concurrency: 32,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(3),
            rounds: 9,
            client_threads: 1,
        }
    }
}

impl LoadPlan {
    /// The command-line flags that give this plan.
    pub fn flags(&self) -> String {
        format!(
            "--concurrency {} --warmup {} --duration {} --rounds {} --client-threads {}",
            self.concurrency,
            self.warmup.as_secs_f64(),
            self.duration.as_secs_f64(),
            self.rounds,
            self.client_threads
        )
    }

    /// The plan in words, for a docs section.
    pub fn describe(&self) -> String {
        format!(
            "client: {} runtime thread(s), {} keep-alive connections, {} s warm-up then {} s measured per target and round, {} round(s) with the order of the targets rotated each round",
            self.client_threads,
            self.concurrency,
            self.warmup.as_secs_f64(),
            self.duration.as_secs_f64(),
            self.rounds
        )
    }

    /// The plan as JSON (seconds).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "concurrency": self.concurrency, "warmup_s": self.warmup.as_secs_f64(),
            "duration_s": self.duration.as_secs_f64(), "rounds": self.rounds,
            "client_threads": self.client_threads,
        })
    }

    /// Every count at least 1 and a measured window.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        anyhow::ensure!(self.rounds > 0, "--rounds must be at least 1");
        anyhow::ensure!(
            self.client_threads > 0,
            "--client-threads must be at least 1"
        );
        anyhow::ensure!(!self.duration.is_zero(), "--duration must be positive");
        Ok(())
    }

    /// One target's window: runs the client against `spec` on a fresh runtime of its own
    /// (on a blocking thread, so that the caller's runtime stays out of its way) and calls
    /// `sample` at the measured window's start and end (CPU time, memory).
    pub async fn window<S>(
        &self,
        spec: Arc<RequestSpec>,
        sample: impl Fn() -> S,
    ) -> anyhow::Result<(LoadResult, S, S)> {
        let (threads, concurrency, window) = (self.client_threads, self.concurrency, self.duration);
        let from = Instant::now() + self.warmup;
        let client = tokio::task::spawn_blocking(move || -> anyhow::Result<LoadResult> {
            let rt = if threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()?
            };
            Ok(rt.block_on(run(spec, concurrency, from, window)))
        });
        tokio::time::sleep_until(from.into()).await;
        let before = sample();
        tokio::time::sleep_until((from + window).into()).await;
        let after = sample();
        Ok((client.await??, before, after))
    }
}

/// One HTTP/1.1 connection, one request at a time, reopened after a transport error.
async fn connection_loop(spec: Arc<RequestSpec>, from: Instant, until: Instant) -> LoadResult {
    let mut out = LoadResult::default();
    while Instant::now() < until {
        if let Some(sender) = open(&spec, from, &mut out).await {
            requests(sender, &spec, from, until, &mut out).await;
        }
    }
    out
}

/// One HTTP/2 connection carrying `streams` calls at a time (each its own request loop on
/// a clone of the connection's sender), reopened once they have all stopped on an error.
async fn multiplexed_loop(
    spec: Arc<RequestSpec>,
    streams: usize,
    from: Instant,
    until: Instant,
) -> LoadResult {
    let mut out = LoadResult::default();
    while Instant::now() < until {
        let Some(sender) = open(&spec, from, &mut out).await else {
            continue;
        };
        let loops = (0..streams).filter_map(|_| sender.stream()).map(|s| {
            let spec = spec.clone();
            async move {
                let mut out = LoadResult::default();
                requests(s, &spec, from, until, &mut out).await;
                out
            }
        });
        for r in futures::future::join_all(loops).await {
            out.merge(r);
        }
    }
    out
}

/// A new connection for `spec`, counted; on failure the error is counted (inside the
/// window) and kept, after a short pause.
async fn open(spec: &RequestSpec, from: Instant, out: &mut LoadResult) -> Option<Sender> {
    out.connections += 1;
    match connect_to(spec).await {
        Ok(s) => Some(s),
        Err(e) => {
            if Instant::now() >= from {
                out.errors += 1;
            }
            keep_error(&mut out.error_messages, format!("connect: {e:#}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            None
        }
    }
}

/// Sends `spec` on `sender` again and again until `until`, or until the connection fails
/// or closes.
async fn requests(
    mut sender: Sender,
    spec: &RequestSpec,
    from: Instant,
    until: Instant,
    out: &mut LoadResult,
) {
    while Instant::now() < until && !sender.is_closed() {
        let start = Instant::now();
        let result = exchange(&mut sender, spec).await;
        let end = Instant::now();
        let counted = end >= from && end <= until;
        match result {
            Ok((StatusCode::OK, _)) => {
                if counted {
                    out.latencies.push(end - start);
                }
            }
            Ok((status, body)) => {
                if counted {
                    out.errors += 1;
                }
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                keep_error(&mut out.error_messages, format!("{status}: {text}"));
            }
            Err(e) => {
                if counted {
                    out.errors += 1;
                }
                keep_error(&mut out.error_messages, format!("{e:#}"));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_read_back_as_flags_and_refuse_zeros() {
        let plan = LoadPlan::default();
        assert_eq!(
            plan.flags(),
            "--concurrency 32 --warmup 1 --duration 3 --rounds 9 --client-threads 1"
        );
        assert!(plan.validate().is_ok());
        assert_eq!(plan.json()["duration_s"], 3.0);
        for bad in [
            LoadPlan {
                concurrency: 0,
                ..LoadPlan::default()
            },
            LoadPlan {
                duration: Duration::ZERO,
                ..LoadPlan::default()
            },
        ] {
            assert!(bad.validate().is_err());
        }
        assert_eq!(rotation::<3>(2), [1, 2, 0]);
    }

    #[test]
    fn throughput_and_merge() {
        let mut a = LoadResult {
            latencies: vec![Duration::from_millis(1); 30],
            window: Duration::from_secs(3),
            error_messages: vec!["x".into()],
            ..LoadResult::default()
        };
        assert!((a.throughput() - 10.0).abs() < 1e-9);
        a.merge(LoadResult {
            latencies: vec![Duration::from_millis(2); 30],
            errors: 2,
            error_messages: vec!["x".into(), "y".into()],
            connections: 1,
            window: Duration::ZERO,
        });
        assert!((a.throughput() - 20.0).abs() < 1e-9);
        assert_eq!((a.errors, a.connections), (2, 1));
        assert_eq!(a.error_messages, ["x", "y"]);
        assert_eq!(LoadResult::default().throughput(), 0.0);
    }
}
