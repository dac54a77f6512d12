//! `loadtest bench-churn`: one worker under a memory budget scoring five times more
//! models than fit, with its RSS sampled from `/proc` throughout, against a baseline
//! load on models that all fit, measured in the same run.
//!
//! It starts a local fleet ([`crate::fleet`]: etcd, a `file://` store, ONE release
//! worker, ONE release router), sizes the worker's `--memory-budget` to hold `--fit`
//! models of `--size-mb` MB plus one load in flight (a load briefly holds the fetched file
//! beside the built tensors), creates `--fit × --factor` tenants (shard size 1) and
//! publishes one distinct random MLP (`input → h → h → 1`) for each through `shardctl`.
//! Then, with the load generator ([`crate::loadgen`], closed loop, `--concurrency`
//! connections, uniform tenant mix, through the router):
//!
//! 1. warm (the baseline): after one request to each, load on the first `--fit`
//!    tenants only, whose models all fit;
//! 2. churn: load on every tenant, so most requests find their model evicted and load it
//!    again while others are scoring.
//!
//! A sampler reads the worker's `VmRSS` every 10 ms during both phases; the worker's
//! `VmHWM` (the kernel's own peak, between samples too) is read at the end. The target:
//! peak RSS ≤ budget × 1.1 + 64 MiB, and no failed request. The ratios: churn ÷ warm
//! throughput and p99, and peak RSS ÷ the RSS limit. Cold loads and evictions come from
//! the worker's metrics, read before and after each phase.
//!
//! Layout: this module holds the flags and the budget arithmetic and runs the fleet;
//! `measure` publishes the models and runs the two phases, sampling the worker's RSS and
//! reading its counters; [`report`] holds what a run saw and prints it.

mod measure;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;

use super::docs::{self, Section};
use crate::fleet::{self, FleetOptions};
use crate::models::MlpArtifact;
#[cfg(test)]
use measure::RssSampler;
use measure::measure;
pub use report::{Phase, Report, WorkerCounters};

/// This benchmark's section of `docs/benchmarks.md`.
pub const DOCS: Section = Section::fixed("churn", "## Model churn (`just bench-churn`)");
/// The model name every tenant publishes.
pub(super) const MODEL: &str = "risk";
pub(super) const INPUT_DIM: usize = 64;
pub(super) const MIB: u64 = 1 << 20;
/// RSS is sampled this often.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// What to run (the flags of `loadtest bench-churn`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Models the worker's budget holds at once (plus one load in flight).
    #[arg(long, default_value_t = 5)]
    pub fit: usize,
    /// Models published per model that fits.
    #[arg(long, default_value_t = 5)]
    pub factor: usize,
    /// Size of each model's f32 weights, in MB (10⁶ bytes).
    #[arg(long, default_value_t = 50.0)]
    pub size_mb: f64,
    /// Closed-loop connections of the load generator.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds of the warm (baseline) phase.
    #[arg(long, default_value = "10", value_parser = crate::args::parse_secs)]
    pub warm: Duration,
    /// Seconds of the churn phase.
    #[arg(long, default_value = "30", value_parser = crate::args::parse_secs)]
    pub churn: Duration,
    /// Scratch directory for the fleet and its store (emptied first).
    // Removed afterwards unless `keep`.
    #[arg(long, default_value = "target/bench-churn")]
    pub run_dir: PathBuf,
    /// Keep the scratch directory afterwards.
    #[arg(long)]
    pub keep: bool,
    // Seed of the published models' weights; not a flag.
    #[arg(skip = 7_u64)]
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fit: 5,
            factor: 5,
            size_mb: 50.0,
            concurrency: 8,
            warm: Duration::from_secs(10),
            churn: Duration::from_secs(30),
            run_dir: PathBuf::from("target/bench-churn"),
            keep: false,
            seed: 7,
        }
    }
}

impl Options {
    /// The command line that reproduces these options.
    pub fn command(&self) -> String {
        format!(
            "loadtest bench-churn --fit {} --factor {} --size-mb {} --concurrency {} --warm {} --churn {}",
            self.fit,
            self.factor,
            self.size_mb,
            self.concurrency,
            self.warm.as_secs_f64(),
            self.churn.as_secs_f64()
        )
    }
}

/// The worker's memory budget for `fit` resident models of `model_bytes` each plus one
/// load in flight, with 64 KiB to spare for rounding.
pub fn budget_for(fit: usize, model_bytes: u64) -> u64 {
    (fit as u64 + 1) * model_bytes + (64 << 10)
}

/// The RSS the worker must stay under: budget × 1.1 + 64 MiB.
pub fn rss_limit(budget: u64) -> u64 {
    budget + budget / 10 + 64 * MIB
}

/// Runs the benchmark; `progress` gets one line per step.
pub async fn run(options: &Options, mut progress: impl FnMut(&str)) -> anyhow::Result<Report> {
    ensure!(options.fit >= 1, "--fit must be at least 1");
    ensure!(options.factor >= 2, "--factor must be at least 2");
    ensure!(options.concurrency >= 1, "--concurrency must be at least 1");
    let header = docs::header(&options.command());
    let dims = MlpArtifact::dims_for_size(INPUT_DIM, options.size_mb);
    // Same widths for every model: the first one's size stands for all (it is also the
    // first tenant's model).
    let first = MlpArtifact::random(&dims, options.seed);
    let budget = budget_for(options.fit, first.resident_bytes());

    fleet::clear_run_dir(&options.run_dir)?;
    let fleet = fleet::up(
        &FleetOptions {
            run_dir: options.run_dir.clone(),
            workers: 1,
            routers: 1,
            memory_budget: budget,
            // Only the budget evicts here.
            idle_ttl: "1h".into(),
            s3: false,
            detach: false,
            bin_dir: fleet::default_bin_dir(),
            router_args: Vec::new(),
            worker_args: Vec::new(),
            etcd_args: Vec::new(),
        },
        &mut progress,
    )
    .await?;
    let result = measure(options, &fleet, first, budget, header, &mut progress).await;
    let stopped = fleet::down(&options.run_dir);
    if result.is_ok() && !options.keep {
        let _ = std::fs::remove_dir_all(&options.run_dir);
    }
    stopped?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_limit() {
        assert_eq!(budget_for(5, 50 * MIB), 300 * MIB + 65_536);
        assert_eq!(rss_limit(100 * MIB), 110 * MIB + 64 * MIB);
    }

    #[test]
    fn counters_subtract_and_read_labels() {
        let text = "shardline_worker_model_loads_total{result=\"ok\"} 7\nshardline_worker_model_loads_total{result=\"error\"} 2\nshardline_worker_evictions_total{reason=\"memory\"} 4\nshardline_worker_evictions_total{reason=\"idle\"} 1\n";
        let c = WorkerCounters::from_metrics(text);
        assert_eq!(
            c,
            WorkerCounters {
                loads: 7.0,
                load_failures: 2.0,
                evictions_memory: 4.0,
                evictions_idle: 1.0
            }
        );
        let d = c.minus(&WorkerCounters {
            loads: 2.0,
            ..WorkerCounters::default()
        });
        assert_eq!(d.loads, 5.0);
        assert_eq!(d.evictions_memory, 4.0);
    }

    #[test]
    fn sampler_sees_this_process() {
        let s = RssSampler::start(std::process::id());
        std::thread::sleep(Duration::from_millis(50));
        let (peak, samples) = s.stop();
        assert!(samples >= 1 && peak > 0, "{samples} samples, peak {peak}");
    }
}
