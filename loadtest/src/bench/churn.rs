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

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use shardline_shared::metrics::{
    WORKER_CAPACITY_BYTES, WORKER_EVICTIONS_TOTAL, WORKER_MODEL_LOADS_TOTAL,
};

use super::docs::{self, Section};
use crate::fleet::{self, FleetOptions, FleetState};
use crate::loadgen::keys::TenantKey;
use crate::loadgen::report::Report as LoadReport;
use crate::loadgen::{self, Mix, Mode};
use crate::models::MlpArtifact;
use crate::procfs;
use shardline_testkit::metric_sum;

/// This benchmark's section of `docs/benchmarks.md`.
pub const DOCS: Section = Section::fixed("churn", "## Model churn (`just bench-churn`)");
/// The model name every tenant publishes.
const MODEL: &str = "risk";
const INPUT_DIM: usize = 64;
const MIB: u64 = 1 << 20;
/// RSS is sampled this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

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

/// `VmRSS` or `VmHWM` of `pid` from `/proc/<pid>/status`, in bytes.
fn read_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    procfs::field_kib(&text, field).map(|kib| kib * 1024)
}

/// The worker's counters that a phase moves.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkerCounters {
    pub loads: f64,
    pub load_failures: f64,
    pub evictions_memory: f64,
    pub evictions_idle: f64,
}

impl WorkerCounters {
    fn from_metrics(text: &str) -> Self {
        Self {
            loads: metric_sum(text, WORKER_MODEL_LOADS_TOTAL, Some(("result", "ok"))),
            load_failures: metric_sum(text, WORKER_MODEL_LOADS_TOTAL, None)
                - metric_sum(text, WORKER_MODEL_LOADS_TOTAL, Some(("result", "ok"))),
            evictions_memory: metric_sum(text, WORKER_EVICTIONS_TOTAL, Some(("reason", "memory"))),
            evictions_idle: metric_sum(text, WORKER_EVICTIONS_TOTAL, Some(("reason", "idle"))),
        }
    }

    fn minus(&self, before: &Self) -> Self {
        Self {
            loads: self.loads - before.loads,
            load_failures: self.load_failures - before.load_failures,
            evictions_memory: self.evictions_memory - before.evictions_memory,
            evictions_idle: self.evictions_idle - before.evictions_idle,
        }
    }
}

/// One phase's load and what the worker did meanwhile.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: &'static str,
    pub tenants: usize,
    pub load: LoadReport,
    pub worker: WorkerCounters,
    /// Highest sampled `VmRSS` during the phase.
    pub peak_rss: u64,
    pub samples: u64,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: Options,
    pub header: String,
    pub model_bytes: u64,
    pub dims: Vec<usize>,
    pub budget: u64,
    /// What the worker reported as its capacity.
    pub capacity: f64,
    pub warm: Phase,
    pub churn: Phase,
    /// The worker's `VmHWM` at the end (its peak RSS since it started).
    pub hwm: u64,
}

impl Report {
    pub fn rss_limit(&self) -> u64 {
        rss_limit(self.budget)
    }
    /// The highest RSS seen: sampled, or the kernel's high-water mark.
    pub fn peak_rss(&self) -> u64 {
        self.hwm.max(self.warm.peak_rss).max(self.churn.peak_rss)
    }
    pub fn throughput_ratio(&self) -> f64 {
        self.churn.load.throughput() / self.warm.load.throughput().max(1e-9)
    }
    pub fn p99_ratio(&self) -> f64 {
        self.churn.load.latency.p99.as_secs_f64()
            / self.warm.load.latency.p99.as_secs_f64().max(1e-9)
    }

    /// Missed targets, one line each.
    pub fn misses(&self) -> Vec<String> {
        let mut m = Vec::new();
        if self.peak_rss() > self.rss_limit() {
            m.push(format!(
                "target missed: peak RSS {} > budget × 1.1 + 64 MiB = {}",
                mib(self.peak_rss()),
                mib(self.rss_limit())
            ));
        }
        for p in [&self.warm, &self.churn] {
            if p.load.error_count() > 0 {
                m.push(format!(
                    "target missed: {} failed requests in the {} phase ({:?})",
                    p.load.error_count(),
                    p.name,
                    p.load.errors
                ));
            }
        }
        if self.churn.worker.loads <= self.churn.load.ok as f64 / 10.0 {
            m.push(format!(
                "not a churn test: only {} loads for {} answers",
                self.churn.worker.loads, self.churn.load.ok
            ));
        }
        m
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        s += "| Phase | tenants (models) | req/s | p50 (ms) | p99 (ms) | errors | cold loads | evictions (memory) | failed loads | peak VmRSS (MiB) |\n";
        s += "|---|---|---|---|---|---|---|---|---|---|\n";
        for p in [&self.warm, &self.churn] {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.0} | {:.1} |",
                p.name,
                p.tenants,
                p.load.throughput(),
                ms(p.load.latency.p50),
                ms(p.load.latency.p99),
                p.load.error_count(),
                p.worker.loads,
                p.worker.evictions_memory,
                p.worker.load_failures,
                p.peak_rss as f64 / MIB as f64,
            );
        }
        s += "\n| Measure | Value |\n|---|---|\n";
        let _ = writeln!(
            s,
            "| model | {} ({:.1} MiB resident) |",
            self.dims
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" → "),
            self.model_bytes as f64 / MIB as f64
        );
        let _ = writeln!(
            s,
            "| worker `--memory-budget` | {} ({} models + one load in flight; worker reports capacity {}) |",
            mib(self.budget),
            self.options.fit,
            mib(self.capacity as u64)
        );
        let _ = writeln!(
            s,
            "| RSS limit (budget × 1.1 + 64 MiB) | {} |",
            mib(self.rss_limit())
        );
        let _ = writeln!(
            s,
            "| peak RSS (max of `VmHWM`, {} samples of `VmRSS`) | {} (`VmHWM` {}) |",
            self.warm.samples + self.churn.samples,
            mib(self.peak_rss()),
            mib(self.hwm)
        );
        let _ = writeln!(
            s,
            "| peak RSS ÷ limit | {:.3} |",
            self.peak_rss() as f64 / self.rss_limit() as f64
        );
        let _ = writeln!(
            s,
            "| churn ÷ warm throughput | {:.3} |",
            self.throughput_ratio()
        );
        let _ = writeln!(s, "| churn ÷ warm p99 | {:.2} |", self.p99_ratio());
        s
    }

    /// The generated part of the docs section ([`DOCS`]).
    pub fn docs(&self) -> String {
        let mut s = self.header.clone();
        s += "\n";
        s += &self.table();
        s += "\n";
        s += &docs::verdict(
            &self.misses(),
            "Target met: the worker's peak RSS stayed within budget × 1.1 + 64 MiB and no request failed.",
        );
        s
    }

    pub fn json(&self) -> serde_json::Value {
        let phase = |p: &Phase| {
            serde_json::json!({
                "tenants": p.tenants,
                "load": p.load.json(),
                "worker": {
                    "loads": p.worker.loads, "load_failures": p.worker.load_failures,
                    "evictions_memory": p.worker.evictions_memory,
                    "evictions_idle": p.worker.evictions_idle,
                },
                "peak_rss_bytes": p.peak_rss, "rss_samples": p.samples,
            })
        };
        let o = &self.options;
        serde_json::json!({
            "benchmark": "churn",
            "header": self.header.trim_end(),
            "options": {
                "fit": o.fit, "factor": o.factor, "size_mb": o.size_mb,
                "concurrency": o.concurrency, "warm_s": o.warm.as_secs_f64(),
                "churn_s": o.churn.as_secs_f64(),
            },
            "model_bytes": self.model_bytes, "dims": self.dims,
            "budget_bytes": self.budget, "capacity_bytes": self.capacity,
            "rss_limit_bytes": self.rss_limit(), "hwm_bytes": self.hwm,
            "peak_rss_bytes": self.peak_rss(),
            "warm": phase(&self.warm), "churn": phase(&self.churn),
            "ratios": {
                "throughput_churn_over_warm": self.throughput_ratio(),
                "p99_churn_over_warm": self.p99_ratio(),
                "peak_rss_over_limit": self.peak_rss() as f64 / self.rss_limit() as f64,
            },
            "met": self.misses().is_empty(),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
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

    if options.run_dir.exists() {
        if FleetState::load(&options.run_dir).is_ok() {
            fleet::down(&options.run_dir)?;
        }
        std::fs::remove_dir_all(&options.run_dir)
            .with_context(|| format!("empty {}", options.run_dir.display()))?;
    }
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

async fn measure(
    options: &Options,
    fleet: &FleetState,
    first: MlpArtifact,
    budget: u64,
    header: String,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Report> {
    let (dims, model_bytes) = (first.dims.clone(), first.resident_bytes());
    let mut first = Some(first);
    let tenants = options.fit * options.factor;
    let staging = options.run_dir.join("staging");
    let mut keys = Vec::new();
    for i in 0..tenants {
        progress(&format!(
            "publishing {} MB models: {}/{tenants}",
            options.size_mb,
            i + 1
        ));
        let tenant = format!("churn-{i:03}");
        let artifact = first
            .take()
            .unwrap_or_else(|| MlpArtifact::random(&dims, options.seed + i as u64));
        artifact.write_dir(&staging)?;
        let key = fleet::create_tenant(fleet, &tenant, Some(1))?;
        fleet::publish(fleet, &tenant, MODEL, "1", &staging)?;
        keys.push(TenantKey {
            tenant,
            key,
            models: vec![MODEL.to_owned()],
        });
    }
    let _ = std::fs::remove_dir_all(&staging);

    let worker = fleet.workers.first().context("no worker")?;
    let pid = worker.pid;
    let metrics_url = worker
        .metrics_url
        .clone()
        .context("no worker metrics URL")?;
    let router = fleet.routers.first().context("no router")?.url.clone();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let metrics = || async {
        let text = client.get(&metrics_url).send().await?.text().await?;
        anyhow::Ok(text)
    };
    let capacity = metric_sum(&metrics().await?, WORKER_CAPACITY_BYTES, None);

    let warm_keys = keys[..options.fit].to_vec();
    progress(&format!(
        "priming the {} models that fit, one request each",
        options.fit
    ));
    let body = loadgen::plan::infer_body(crate::models::mlp::INPUT_NAME, 1, INPUT_DIM, 1);
    for k in &warm_keys {
        let answer = client
            .post(format!("{router}/v2/models/{MODEL}/infer"))
            .bearer_auth(&k.key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        let status = answer.status();
        ensure!(
            status.is_success(),
            "priming {} answered {status}: {}",
            k.tenant,
            answer.text().await.unwrap_or_default()
        );
    }

    let mut phase = async |name: &'static str, keys: Vec<TenantKey>, duration: Duration| {
        progress(&format!(
            "{name}: {} s, closed loop on {} connections, uniform over {} tenants",
            duration.as_secs_f64(),
            options.concurrency,
            keys.len()
        ));
        let tenants = keys.len();
        let mut load = loadgen::Options::new(
            router.clone(),
            keys,
            Mode::Closed {
                concurrency: options.concurrency,
            },
        );
        load.mix = Mix::Uniform;
        load.duration = duration;
        load.seed = options.seed;
        let before = WorkerCounters::from_metrics(&metrics().await?);
        let sampler = RssSampler::start(pid);
        let report = loadgen::run(&load).await?;
        let (peak_rss, samples) = sampler.stop();
        let after = WorkerCounters::from_metrics(&metrics().await?);
        anyhow::Ok(Phase {
            name,
            tenants,
            load: report,
            worker: after.minus(&before),
            peak_rss,
            samples,
        })
    };
    let warm = phase("warm", warm_keys, options.warm).await?;
    let churn = phase("churn", keys, options.churn).await?;
    let hwm = read_status(pid, "VmHWM").context("reading the worker's VmHWM")?;
    Ok(Report {
        options: options.clone(),
        header,
        model_bytes,
        dims,
        budget,
        capacity,
        warm,
        churn,
        hwm,
    })
}

/// Samples one process's `VmRSS` on a thread of its own until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            let mut samples = 0;
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = read_status(pid, "VmRSS") {
                    p.fetch_max(rss, Ordering::Relaxed);
                    samples += 1;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            samples
        });
        Self { stop, peak, thread }
    }

    /// Peak `VmRSS` and the number of samples.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or(0);
        (self.peak.load(Ordering::Relaxed), samples)
    }
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
