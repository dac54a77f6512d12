//! `loadtest bench-scale`: one control plane holding `--tenants` tenants (default
//! 100,000, one model each) and `--workers` simulated workers (default 1,000), measured
//! through real routers, a real worker and `shardctl`.
//!
//! It starts a local fleet ([`crate::fleet`]: etcd with `--quota-backend-bytes`, a
//! `file://` store, one release worker `w-0`, one release router `r-0`), publishes one
//! small MLP for a probe tenant, then [`populate`]s etcd: every generated tenant has a key
//! digest, a copy of the probe manifest, a live pointer and an assignment from `place()`;
//! every simulated worker has a leased record whose address is `w-0`'s (so whichever
//! member a router picks answers) and one leased resident key per model it holds.
//! While [`populate::Heartbeats`] keeps the simulated leases alive and changes resident
//! keys at `--resident-changes-per-sec`, it measures:
//!
//! 1. a new router (`r-1`): start to ready, then to a first 200 for a generated tenant;
//! 2. a new worker: start to registered and ready;
//! 3. `shardctl workers | tenants | assignments | blast-radius`, each timed;
//! 4. router RSS over an empty router's (same binary, a prefix with nothing under it),
//!    per tenant-model;
//! 5. key rotation and publish-to-routable, `--probes` of each, until every router
//!    answers the change; the p99 of the slower router;
//! 6. router CPU (from `/proc`) and etcd's write rate (revisions per second) over a quiet
//!    `--window` of heartbeats and resident churn;
//! 7. a compaction while `r-0` is stopped (SIGSTOP) so that its watch falls behind:
//!    after SIGCONT it must re-list (its `shardline_control_resyncs_total` rises) and
//!    accept a key rotated meanwhile, without a restart;
//! 8. placement quality on the live fleet ([`quality`]): a router *with* the placement
//!    controller takes over, `--new-tenants` tenants are created, `--joins` simulated
//!    workers join and `--losses` lose their lease; once the controller is quiet, slot
//!    load, identical shards and overlap of the stored assignments, and every move
//!    checked for a prefetch (a simulated worker's resident key is written only by a
//!    prefetch that reaches it).
//!
//! Until step 8 routers run `--no-controller`, so that the measured steps see exactly
//! the assignments written.

mod measure;
mod populate;
mod probe;
mod quality;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;

use super::docs::{self, Section};
use crate::fleet::{self, FleetOptions};
pub use report::Report;

/// This benchmark's section of `docs/benchmarks.md`.
pub const DOCS: Section = Section::fixed("scale", "## Scale (`just bench-scale`)");

/// What to run (the flags of `loadtest bench-scale`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Tenants to generate, one model each.
    #[arg(long, default_value_t = 100_000)]
    pub tenants: usize,
    /// Simulated workers (leased records and resident keys, no candle).
    #[arg(long, default_value_t = 1_000)]
    pub workers: usize,
    /// Resident-key changes per second across the simulated fleet (loads and evictions).
    #[arg(long, default_value_t = 100.0)]
    pub resident_changes_per_sec: f64,
    /// Key rotations and publications measured (each).
    #[arg(long, default_value_t = 50)]
    pub probes: usize,
    /// Seconds of the quiet window in which router CPU and etcd writes are read.
    #[arg(long, default_value = "20", value_parser = crate::args::parse_secs)]
    pub window: Duration,
    /// etcd's `--quota-backend-bytes`.
    #[arg(long, default_value = "8GiB", value_parser = shardline_shared::units::parse_bytes)]
    pub etcd_quota: u64,
    /// The quality phase's `--max-balance-moves-per-minute` for the controller (the
    /// production default is 60; the bench raises it so that the phase ends in minutes).
    #[arg(long, default_value_t = 6000)]
    pub balance_moves_per_minute: u32,
    /// Tenants (one model each) the quality phase creates.
    #[arg(long, default_value_t = 1_000)]
    pub new_tenants: usize,
    /// Simulated workers that join during the quality phase.
    #[arg(long, default_value_t = 50)]
    pub joins: usize,
    /// Simulated workers that lose their lease during the quality phase.
    #[arg(long, default_value_t = 50)]
    pub losses: usize,
    /// Longest wait, in seconds, for the controller to settle after the churn.
    #[arg(long, default_value = "1200", value_parser = crate::args::parse_secs)]
    pub quality_timeout: Duration,
    /// Scratch directory for the fleet (emptied first, removed afterwards unless `keep`).
    #[arg(long, default_value = "target/bench-scale")]
    pub run_dir: PathBuf,
    /// Keep the scratch directory afterwards.
    #[arg(long)]
    pub keep: bool,
}

impl Options {
    /// The command line that reproduces these options.
    pub fn command(&self) -> String {
        format!(
            "loadtest bench-scale --tenants {} --workers {} --resident-changes-per-sec {} --probes {} --window {} \
             --balance-moves-per-minute {} --new-tenants {} --joins {} --losses {} --quality-timeout {}",
            self.tenants,
            self.workers,
            self.resident_changes_per_sec,
            self.probes,
            self.window.as_secs_f64(),
            self.balance_moves_per_minute,
            self.new_tenants,
            self.joins,
            self.losses,
            self.quality_timeout.as_secs_f64()
        )
    }
}

/// Runs the benchmark; `progress` gets one line per step.
pub async fn run(options: &Options, mut progress: impl FnMut(&str)) -> anyhow::Result<Report> {
    ensure!(options.tenants >= 100, "--tenants must be at least 100");
    ensure!(options.workers >= 8, "--workers must be at least 8");
    ensure!(options.probes >= 1, "--probes must be at least 1");
    ensure!(
        options.losses <= options.workers / 2,
        "--losses must be at most half of --workers"
    );
    fleet::clear_run_dir(&options.run_dir)?;
    let fleet = fleet::up(
        &FleetOptions {
            run_dir: options.run_dir.clone(),
            workers: 1,
            routers: 1,
            memory_budget: 1 << 30,
            idle_ttl: "1h".into(),
            s3: false,
            detach: false,
            bin_dir: fleet::default_bin_dir(),
            router_args: vec!["--no-controller".into()],
            worker_args: Vec::new(),
            etcd_args: vec![format!("--quota-backend-bytes={}", options.etcd_quota)],
        },
        &mut progress,
    )
    .await?;
    let result = measure::measure(options, &fleet, &mut progress).await;
    let stopped = fleet::down(&options.run_dir);
    if result.is_ok() && !options.keep {
        let _ = std::fs::remove_dir_all(&options.run_dir);
    }
    stopped?;
    result.map(|mut r| {
        r.header = docs::header(&options.command());
        r
    })
}
