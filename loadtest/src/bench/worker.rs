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

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser as _;
use shardline_artifacts::{ArtifactStore, StoreOptions};
use shardline_control::{ControlPlane, EtcdStore};
use shardline_model::MlpModel;
use shardline_shared::keys::Prefix;
use shardline_shared::manifest::{Manifest, ModelConfig};
use shardline_worker::config::WorkerArgs;
use tokio::sync::oneshot;

use crate::models::MlpArtifact;
use crate::models::publish::publish;
use crate::stats::{Summary, ms};
use shardline_testkit::{EtcdProcess, S3Process};

/// Target for warm HTTP p50 / in-process p50.
pub const WARM_TARGET: f64 = 1.3;
/// Target for cold first-score median / (fetch + parse) median.
pub const COLD_TARGET: f64 = 1.2;

const TOKEN: &str = "bench-internal-token-0123";
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

/// The measurements of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub dims: Vec<usize>,
    pub weights_bytes: u64,
    pub http: Summary,
    pub in_process: Summary,
    /// `GET /v2/health/live` over the same client: the HTTP round trip alone.
    pub http_floor: Summary,
    pub cold: Summary,
    pub cold_baseline: Summary,
    pub iterations: usize,
    pub cold_rounds: usize,
}

impl Report {
    /// HTTP p50 / in-process p50.
    pub fn warm_ratio(&self) -> f64 {
        ratio(self.http.p50, self.in_process.p50)
    }

    /// Median cold first score / median fetch + parse.
    pub fn cold_ratio(&self) -> f64 {
        ratio(self.cold.p50, self.cold_baseline.p50)
    }

    /// Lines naming each missed target (empty when both are met).
    pub fn misses(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.warm_ratio() > WARM_TARGET {
            out.push(format!(
                "target missed: warm p50 ratio {:.3} > {WARM_TARGET}",
                self.warm_ratio()
            ));
        }
        if self.cold_ratio() > COLD_TARGET {
            out.push(format!(
                "target missed: cold ratio {:.3} > {COLD_TARGET}",
                self.cold_ratio()
            ));
        }
        out
    }

    /// A readable table (Markdown).
    pub fn table(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(ToString::to_string).collect();
        let mut s = format!(
            "model: MLP {} ({:.1} MB of f32 weights); warm n={}, cold rounds={}\n\n",
            dims.join(" → "),
            self.weights_bytes as f64 / 1e6,
            self.iterations,
            self.cold_rounds,
        );
        s += "| Measure | p50 (ms) | p99 (ms) | min (ms) | max (ms) |\n";
        s += "|---|---|---|---|---|\n";
        for (name, sum) in [
            ("warm infer over HTTP (1 row, JSON)", &self.http),
            (
                "warm in-process `MlpModel::forward` (1 row)",
                &self.in_process,
            ),
            (
                "HTTP round trip alone (`GET /v2/health/live`)",
                &self.http_floor,
            ),
            ("cold first score (unload, then infer)", &self.cold),
            (
                "baseline: `fetch_model` + `from_safetensors`",
                &self.cold_baseline,
            ),
        ] {
            s += &format!(
                "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                ms(sum.p50),
                ms(sum.p99),
                ms(sum.min),
                ms(sum.max)
            );
        }
        s += "\n| Ratio | Target | Measured |\n|---|---|---|\n";
        s += &format!(
            "| warm: HTTP p50 / in-process p50 | ≤ {WARM_TARGET} | {:.3} |\n",
            self.warm_ratio()
        );
        s += &format!(
            "| cold: median first score / median (fetch + parse) | ≤ {COLD_TARGET} | {:.3} |\n",
            self.cold_ratio()
        );
        s
    }

    /// The generated part of the docs section ([`DOCS`]): `header` (machine, command,
    /// date), the tables, and the verdict.
    pub fn docs(&self, header: &str) -> String {
        let verdict = super::docs::verdict(&self.misses(), "Both targets met.");
        format!("{header}\n{}\n{verdict}", self.table())
    }

    /// The report as one JSON object (times in milliseconds).
    pub fn json(&self) -> serde_json::Value {
        let sum = |s: &Summary| {
            serde_json::json!({
                "p50_ms": ms(s.p50), "p99_ms": ms(s.p99),
                "min_ms": ms(s.min), "max_ms": ms(s.max), "count": s.count,
            })
        };
        serde_json::json!({
            "benchmark": "worker",
            "dims": self.dims,
            "weights_bytes": self.weights_bytes,
            "warm": {
                "http": sum(&self.http),
                "in_process": sum(&self.in_process),
                "http_floor": sum(&self.http_floor),
                "ratio_p50": self.warm_ratio(),
                "target": WARM_TARGET,
                "met": self.warm_ratio() <= WARM_TARGET,
            },
            "cold": {
                "first_score": sum(&self.cold),
                "fetch_parse": sum(&self.cold_baseline),
                "ratio_median": self.cold_ratio(),
                "target": COLD_TARGET,
                "met": self.cold_ratio() <= COLD_TARGET,
            },
        })
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    if b.is_zero() {
        f64::INFINITY
    } else {
        a.as_secs_f64() / b.as_secs_f64()
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = WorkerArgs::try_parse_from([
        "worker",
        "--listen",
        &addr.to_string(),
        "--etcd",
        &etcd.endpoint(),
        "--store",
        &s3.store_url(),
        "--memory-budget",
        &BUDGET.to_string(),
        "--id",
        "bench-worker",
        "--internal-token",
        TOKEN,
    ])?
    .validate()
    .map_err(|errors| anyhow::anyhow!("worker config: {errors:?}"))?;
    let worker_store = ArtifactStore::from_url_with(&s3.store_url(), options_for(&s3))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(shardline_worker::serve::serve(
        config,
        worker_store,
        listener,
        None,
        async {
            let _ = stopped.await;
        },
    ));
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
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(Err(e))) => progress(&format!("worker stopped with an error: {e:#}")),
        Ok(Err(e)) => progress(&format!("worker task failed: {e}")),
        Err(_) => progress("worker did not stop within 10 s"),
        Ok(Ok(Ok(()))) => {}
    }
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

/// The benchmark's HTTP client for one worker and model.
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    base: String,
    name: String,
}

impl Client {
    async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            let r = self
                .http
                .get(format!("{}/v2/health/ready", self.base))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the worker never became ready")
    }

    /// One single-row infer request; encodes the body and decodes the scores.
    async fn score(&self, input: &[f32]) -> anyhow::Result<Vec<f32>> {
        let body = serde_json::json!({"inputs": [{
            "name": "features", "shape": [1, input.len()], "datatype": "FP32", "data": input,
        }]});
        let resp = self
            .http
            .post(format!("{}/v2/models/{}/infer", self.base, self.name))
            .header("x-shardline-token", TOKEN)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status != 200 {
            bail!(
                "infer answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        v["outputs"][0]["data"]
            .as_array()
            .context("no outputs[0].data in the response")?
            .iter()
            .map(|x| {
                x.as_f64()
                    .map(|f| f as f32)
                    .context("a score is not a number")
            })
            .collect()
    }

    async fn health(&self) -> anyhow::Result<()> {
        let resp = self
            .http
            .get(format!("{}/v2/health/live", self.base))
            .send()
            .await?;
        ensure!(resp.status() == 200, "health answered {}", resp.status());
        resp.bytes().await?;
        Ok(())
    }

    async fn unload(&self) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!(
                "{}/v2/repository/models/{}/unload",
                self.base, self.name
            ))
            .header("x-shardline-token", TOKEN)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(status == 200, "unload answered {status}: {text}");
        Ok(())
    }
}
