//! `loadtest bench-worker`: the worker's overhead on one large MLP, as ratios against
//! baselines measured in the same run.
//!
//! It starts etcd and moto's S3 (from the test kit, [`shardline_testkit`]), publishes a
//! deterministic MLP of about `--size-mb` MB, and runs the worker in-process (`serve()` on
//! 127.0.0.1:0, 1 GiB budget) on the same tokio runtime as its HTTP client.
//!
//! - Warm: N sequential single-row infer requests over HTTP (keep-alive, JSON encoded and
//!   decoded by the client) against N calls of [`MlpModel::forward`] on a model built from
//!   the same bytes, interleaved one for one so that background load hits both alike.
//!   Ratio: HTTP p50 / in-process p50 (target ≤ 1.3).
//! - Cold: K rounds of unload, then one infer request timed to its answer (fetch, verify,
//!   build, score), each paired with a baseline round: [`ArtifactStore::fetch_model`] of
//!   the same two files plus [`MlpModel::from_safetensors`]. Ratio: median cold / median
//!   baseline (target ≤ 1.2).
//!
//! A missed target is reported, not an error: the numbers are the result.
//!
//! Layout: this module starts the neighbours and the worker and times both sides;
//! `client` is the benchmark's HTTP client for the worker, [`report`] the figures and how
//! they are told.

mod client;
pub mod report;

use std::sync::Arc;
use std::time::Instant;

use anyhow::ensure;
use shardline_artifacts::{ArtifactStore, StoreOptions};
use shardline_control::{ControlPlane, EtcdStore};
use shardline_model::MlpModel;
use shardline_shared::keys::Prefix;
use shardline_shared::manifest::{Manifest, ModelConfig};

use crate::models::MlpArtifact;
use crate::models::publish::publish;
use crate::stats::{Summary, ms};
use client::Client;
pub use report::Report;
use shardline_testkit::fleet::{Launcher, Spec};
use shardline_testkit::{EtcdProcess, S3Process};

/// Target for warm HTTP p50 / in-process p50.
pub const WARM_TARGET: f64 = 1.3;
/// Target for cold first-score median / (fetch + parse) median.
pub const COLD_TARGET: f64 = 1.2;

const TENANT: &str = "bench";
const MODEL: &str = "mlp";
const INPUT_DIM: usize = 64;
const BUDGET: u64 = 1 << 30;

/// This benchmark's section of `docs/benchmarks.md`.
pub const DOCS: super::docs::Section =
    super::docs::Section::fixed("worker", "## Worker (`just bench-worker`)");

/// What to run (the flags of `loadtest bench-worker`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Approximate size of the model's f32 weights, in MB (10⁶ bytes).
    #[arg(long, default_value_t = 50.0)]
    pub size_mb: f64,
    /// Warm iterations (one HTTP request and one in-process call each).
    #[arg(long, default_value_t = 300)]
    pub iterations: usize,
    /// Cold rounds (unload + first score, and fetch + parse, each).
    #[arg(long, default_value_t = 5)]
    pub cold_rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            size_mb: 50.0,
            iterations: 300,
            cold_rounds: 5,
        }
    }
}

impl Options {
    /// The command line that reproduces these options.
    pub fn command(&self) -> String {
        format!(
            "loadtest bench-worker --size-mb {} --iterations {} --cold-rounds {}",
            self.size_mb, self.iterations, self.cold_rounds
        )
    }
}

/// Runs the benchmark. `progress` receives one line per phase.
pub async fn run(options: &Options, progress: impl Fn(&str)) -> anyhow::Result<Report> {
    ensure!(options.iterations > 0, "--iterations must be at least 1");
    ensure!(options.cold_rounds > 0, "--cold-rounds must be at least 1");
    progress("starting etcd and S3 (moto)");
    let (etcd, s3) = tokio::try_join!(EtcdProcess::start(), S3Process::start())?;
    let cp = ControlPlane::new(
        Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await?),
        Prefix::default(),
    );
    let options_for = |s3: &S3Process| StoreOptions::default().with_env(s3.env());
    let store = ArtifactStore::from_url_with(&s3.store_url(), options_for(&s3))?;

    let dims = MlpArtifact::dims_for_size(INPUT_DIM, options.size_mb);
    progress(&format!("building MLP {dims:?}"));
    let m = MlpArtifact::random(&dims, 42);
    progress(&format!(
        "publishing {:.1} MB to S3 and etcd",
        m.weights.len() as f64 / 1e6
    ));
    let manifest = publish(&store, &cp, TENANT, MODEL, "1", &m).await?;

    progress("starting the worker");
    // In this process (the comparison is against in-process scoring), with exactly the
    // flags the binary would get.
    let spec = Spec::worker("bench-worker", &etcd.endpoint(), &s3.store_url())
        .set("--memory-budget", BUDGET.to_string())
        .envs(&s3.env());
    let launcher = Launcher::new(|start| async move {
        let options = StoreOptions::default().with_env(start.env);
        shardline_worker::serve::serve_command_line(
            &start.args,
            options,
            start.listener,
            None,
            start.shutdown,
        )
        .await
    });
    let worker = spec.launch(&launcher).await?;
    let addr = worker.addr;
    let client = Client {
        http: reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(4)
            .build()?,
        base: format!("http://{addr}"),
        name: format!("{TENANT}.{MODEL}"),
    };
    client.wait_ready().await?;

    let result = measure(options, &client, &store, &manifest, &m, &progress).await;

    progress("stopping the worker");
    worker.stop().await;
    drop((etcd, s3));
    result
}

async fn measure(
    options: &Options,
    client: &Client,
    store: &ArtifactStore,
    manifest: &Manifest,
    m: &MlpArtifact,
    progress: &impl Fn(&str),
) -> anyhow::Result<Report> {
    let local = MlpModel::from_safetensors(&m.config, &m.weights)?;
    let input = input_row(INPUT_DIM);

    progress("warm-up (first request loads the model)");
    let first = client.score(&input).await?;
    let want = local.forward(&input, 1)?;
    check_close(&first, &want)?;
    client.health().await?;

    progress(&format!("warm: {} iterations", options.iterations));
    let n = options.iterations;
    let (mut http, mut in_process, mut floor) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for _ in 0..n {
        let t = Instant::now();
        let got = client.score(&input).await?;
        http.push(t.elapsed());
        let t = Instant::now();
        let local_out = std::hint::black_box(local.forward(std::hint::black_box(&input), 1)?);
        in_process.push(t.elapsed());
        let t = Instant::now();
        client.health().await?;
        floor.push(t.elapsed());
        check_close(&got, &local_out)?;
    }
    drop(local);

    progress(&format!("cold: {} rounds", options.cold_rounds));
    let (mut cold, mut baseline) = (Vec::new(), Vec::new());
    for round in 0..options.cold_rounds {
        let t = Instant::now();
        let (config_bytes, weights) = store.fetch_model(manifest).await?;
        let config = ModelConfig::from_json(&config_bytes)?;
        let built = MlpModel::from_safetensors(&config, &weights)?;
        baseline.push(t.elapsed());
        drop((built, weights, config_bytes));

        client.unload().await?;
        let t = Instant::now();
        let got = client.score(&input).await?;
        cold.push(t.elapsed());
        check_close(&got, &want)?;
        progress(&format!(
            "  round {}: first score {:.0} ms, fetch + parse {:.0} ms",
            round + 1,
            ms(cold[round]),
            ms(baseline[round])
        ));
    }

    Ok(Report {
        dims: m.dims.clone(),
        weights_bytes: m.weights.len() as u64,
        http: Summary::of(&http),
        in_process: Summary::of(&in_process),
        http_floor: Summary::of(&floor),
        cold: Summary::of(&cold),
        cold_baseline: Summary::of(&baseline),
        iterations: n,
        cold_rounds: options.cold_rounds,
    })
}

/// A deterministic input row in [-1, 1).
fn input_row(dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|i| ((i * 37 % 64) as f32 / 32.0) - 1.0)
        .collect()
}

fn check_close(got: &[f32], want: &[f32]) -> anyhow::Result<()> {
    ensure!(
        got.len() == want.len(),
        "the worker returned {} values, expected {}",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(want) {
        ensure!(
            (g - w).abs() <= 1e-5 * w.abs().max(1e-3) + 1e-6,
            "the worker scored {g}, in-process {w}"
        );
    }
    Ok(())
}
