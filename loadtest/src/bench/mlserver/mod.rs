//! `loadtest bench-mlserver`: Shardline end to end (router → worker) next to a peer,
//! MLServer (the Apache-2.0 multi-model Open Inference Protocol server) with its
//! scikit-learn runtime, serving the same weights, loaded by the same client at the same
//! concurrency in one run.
//!
//! It generates one tenant's labelled login events (`crate::models`), has
//! `loadtest/peer/train_sklearn.py` (in `./.venv-peer`, see [`peer`]) fit a scikit-learn
//! `MLPRegressor` 64 → 256 → 256 → 1 (relu, identity output) to them and write
//! `model.joblib` and the weights, builds the same network as an [`MlpArtifact`]
//! ([`sklearn`]: `coefs_` transposed to `[out, in]`, f32) and publishes it as tenant
//! `bench`'s model `mlp`. It starts etcd, a `file://` store, ONE release `worker` and ONE
//! release `router` ([`crate::bench::stack`], as `bench-router` does) and MLServer
//! (`mlserver start`, `parallel_workers` as given, default MLServer's own 1). It checks
//! that both answer the same scores for the same rows (within [`TOLERANCE`] of the
//! largest score: scikit-learn computes in float64, Shardline in f32), then for
//! `--rounds` rounds loads each target in turn, which one goes first alternating, with
//! the closed-loop client of [`load`] and the same body bytes (one event, OIP v2 JSON,
//! input `features`):
//!
//! - MLServer: `POST mlserver/v2/models/mlp/infer`;
//! - Shardline: `POST router/v2/models/mlp/infer` with `Authorization: Bearer <key>`;
//! - over gRPC, each: `ModelInfer` with the same event as raw FP32 to MLServer's own gRPC
//!   port and to the router's `--grpc-listen` (8 concurrent calls per HTTP/2
//!   connection), whose answers must agree with the HTTP ones too.
//!
//! During each window it reads CPU time from `/proc` and at its end the resident memory
//! of the Shardline worker and router (VmRSS, PSS) or of MLServer's whole process tree
//! (main process, inference workers, multiprocessing's resource tracker). [`report`]
//! turns the rounds into figures, ratios against the targets and the docs
//! section; a missed target is reported, not an error.

pub mod peer;
pub mod report;
pub mod sklearn;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use bytes::Bytes;

use self::peer::{MODEL, MlServer, Peer};
use self::report::{Agreement, Cpu, ModelInfo, Report, Run};
use super::docs::{Section, machine, today};
use super::load::{self, LoadPlan, RequestSpec};
use super::stack::{
    Control, infer_body, router_spec, sibling, start_router_grpc, start_worker, wait_scores,
};
use crate::models::train::{TEST_STREAM, TRAIN_STREAM};
use crate::models::{Dataset, FEATURES, MlpArtifact, TenantProfile, auc};
use crate::procfs::{Footprint, machine_busy, process_cpu, tree_cpu};
use crate::protocol::Protocol;
use shardline_testkit::fleet::Node;

/// This benchmark's section of `docs/benchmarks.md`.
pub const DOCS: Section = Section::fixed(
    "mlserver",
    "## Peer comparison: MLServer (`just bench-mlserver`)",
);
/// Largest |Shardline − MLServer| allowed, relative to the largest score.
pub const TOLERANCE: f64 = 1e-4;
/// The tenant's event stream the load's request row comes from.
const LOAD_STREAM: u64 = 3;
/// Held-out events the model's AUC is measured on.
const AUC_ROWS: usize = 2000;

/// The ways to a score: each server over OIP REST (JSON) and over OIP gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    MlServer,
    Shardline,
    MlServerGrpc,
    ShardlineGrpc,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::MlServer,
        Target::Shardline,
        Target::MlServerGrpc,
        Target::ShardlineGrpc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::MlServer => "MLServer (direct)",
            Target::Shardline => "Shardline (router → worker)",
            Target::MlServerGrpc => "MLServer gRPC (direct)",
            Target::ShardlineGrpc => "Shardline gRPC (router → worker)",
        }
    }

    /// Whether it is Shardline (its CPU and memory are the worker's and the router's).
    pub fn is_shardline(self) -> bool {
        matches!(self, Target::Shardline | Target::ShardlineGrpc)
    }
}

/// What to run (the flags of `loadtest bench-mlserver`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    // The client's connections, windows and rounds (the same for both targets).
    #[command(flatten)]
    pub load: LoadPlan,
    /// The router's `--threads` (default: its own, one per core).
    #[arg(long)]
    pub router_threads: Option<usize>,
    /// MLServer's `parallel_workers`: inference processes beside the HTTP one (MLServer's
    /// default, 1); 0 runs inference in the HTTP process.
    #[arg(long, default_value_t = 1)]
    pub parallel_workers: usize,
    /// Events the scikit-learn model is trained on.
    #[arg(long, default_value_t = 2000)]
    pub train_rows: usize,
    /// scikit-learn's `max_iter` (epochs; a few seconds of training at most).
    #[arg(long, default_value_t = 8)]
    pub max_iter: usize,
    /// Seed of the tenant, its events and the initial weights.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    // Rows whose scores are compared before the load; not a flag.
    #[arg(skip = 16_usize)]
    pub check_rows: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            load: LoadPlan::default(),
            router_threads: None,
            parallel_workers: 1,
            train_rows: 2000,
            max_iter: 8,
            seed: 7,
            check_rows: 16,
        }
    }
}

impl Options {
    /// The command line that reproduces these options.
    pub fn command(&self) -> String {
        let mut s = format!(
            "loadtest bench-mlserver {} --parallel-workers {} --train-rows {} --max-iter {} --seed {}",
            self.load.flags(),
            self.parallel_workers,
            self.train_rows,
            self.max_iter,
            self.seed,
        );
        if let Some(t) = self.router_threads {
            let _ = write!(s, " --router-threads {t}");
        }
        s
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.load.validate()?;
        ensure!(self.train_rows >= 10, "--train-rows must be at least 10");
        ensure!(self.max_iter > 0, "--max-iter must be at least 1");
        Ok(())
    }
}

/// The servers under test.
#[derive(Debug)]
struct Servers {
    worker: Node,
    router: Node,
    router_addr: SocketAddr,
    router_grpc: SocketAddr,
    mlserver: MlServer,
}

/// Runs the benchmark. `progress` receives one line per phase and per measured run.
pub async fn run(options: &Options, progress: impl Fn(&str)) -> anyhow::Result<Report> {
    options.validate()?;
    let worker_bin = sibling("worker")?;
    let router_bin = sibling("router")?;
    let peer = Peer::find()?;
    let scratch = tempfile::Builder::new()
        .prefix("shardline-bench-mlserver-")
        .tempdir()?;

    let tenant = TenantProfile::new(0, options.seed);
    progress(&format!(
        "training scikit-learn's MLPRegressor on {} events of tenant {}",
        options.train_rows, tenant.name
    ));
    let data = Dataset::generate(&tenant, options.train_rows, TRAIN_STREAM);
    let fitted = peer::train(
        &peer,
        scratch.path(),
        &data.rows,
        &data.labels,
        FEATURES,
        options.max_iter,
        options.seed,
    )
    .await?;
    let artifact = MlpArtifact::from_layers(fitted.layers()?)?;
    ensure!(
        artifact.dims.first() == Some(&FEATURES) && artifact.dims.last() == Some(&1),
        "the script trained {:?}, not {FEATURES} → … → 1",
        artifact.dims
    );
    let held_out = Dataset::generate(&tenant, AUC_ROWS, TEST_STREAM);
    let scores: Vec<f32> = artifact
        .reference(&held_out.rows, held_out.len())
        .iter()
        .map(|v| *v as f32)
        .collect();
    let model = ModelInfo {
        tenant: tenant.name.clone(),
        dims: artifact.dims.clone(),
        train: fitted.train.clone(),
        auc: auc(&scores, &held_out.labels),
        auc_rows: held_out.len(),
    };

    progress("starting etcd, creating tenant `bench` and publishing the model");
    let control = Control::start().await?;
    control.publish(MODEL, &artifact).await?;
    progress("starting the worker, the router and MLServer");
    let etcd = control.etcd.endpoint();
    let worker = start_worker(&worker_bin, &etcd, &control.store_url).await?;
    let (router, router_grpc) =
        start_router_grpc(&router_bin, &etcd, options.router_threads).await?;
    let router_addr = router.addr;
    let mlserver = MlServer::start(
        &peer,
        &scratch.path().join("model.joblib"),
        options.parallel_workers,
    )
    .await?;
    let servers = Servers {
        worker,
        router,
        router_addr,
        router_grpc,
        mlserver,
    };
    let result = measure(options, &servers, &tenant, &control.key, &progress).await;
    progress("stopping the servers");
    servers.mlserver.stop(&peer.venv).await;
    servers.router.stop().await;
    servers.worker.stop().await;
    drop(control);
    let (agreement, [mlserver, shardline, mlserver_grpc, shardline_grpc]) = result?;
    Ok(Report {
        options: options.clone(),
        machine: machine(),
        date: today(),
        versions: fitted
            .versions
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect(),
        model,
        agreement,
        mlserver,
        shardline,
        mlserver_grpc,
        shardline_grpc,
    })
}

/// The agreement of the scores, and each target's runs (in [`Target::ALL`]'s order).
type Measured = (Agreement, [Vec<Run>; 4]);

async fn measure(
    options: &Options,
    servers: &Servers,
    tenant: &TenantProfile,
    key: &str,
    progress: &impl Fn(&str),
) -> anyhow::Result<Measured> {
    // The same rows as a JSON body (`json`) and as a gRPC message (`message`).
    let spec = |t: Target, json: Bytes, message: &[u8]| -> anyhow::Result<RequestSpec> {
        match t {
            Target::MlServer => RequestSpec::post_json(
                servers.mlserver.addr,
                &format!("/v2/models/{MODEL}/infer"),
                &[],
                json,
            ),
            Target::Shardline => router_spec(servers.router_addr, MODEL, key, json),
            Target::MlServerGrpc => {
                RequestSpec::grpc_infer(servers.mlserver.grpc, MODEL, key, message)
            }
            Target::ShardlineGrpc => {
                RequestSpec::grpc_infer(servers.router_grpc, MODEL, key, message)
            }
        }
    };
    let message = |rows: &[f32], n: usize| Protocol::Grpc.payload("features", n, rows).body;

    progress(&format!(
        "checking that both answer the same scores for {} events",
        options.check_rows
    ));
    let rows = tenant.sample_input(options.check_rows, TEST_STREAM);
    let body = Bytes::from(infer_body(&rows, options.check_rows)?);
    let grpc = message(&rows, options.check_rows);
    let mut scores = Vec::new();
    for t in Target::ALL {
        let data = wait_scores(&spec(t, body.clone(), &grpc)?, Duration::from_secs(60))
            .await
            .with_context(|| t.name())?;
        let values: Option<Vec<f64>> = data
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect());
        scores.push(values.unwrap_or_default());
    }
    let agreement = Agreement::of(&scores[1], &scores[0]).with_context(|| {
        format!(
            "scores not comparable: Shardline {:?}, MLServer {:?}",
            scores[1], scores[0]
        )
    })?;
    ensure!(
        agreement.relative <= TOLERANCE,
        "Shardline and MLServer disagree: max |Δ| {:.3e} ({:.3e} of the largest score); Shardline {:?}, MLServer {:?}",
        agreement.max_abs,
        agreement.relative,
        scores[1],
        scores[0]
    );
    // Over gRPC each server answers what it answers over HTTP.
    for (grpc, http) in [(2, 0), (3, 1)] {
        let same = Agreement::of(&scores[grpc], &scores[http]);
        ensure!(
            same.is_some_and(|a| a.relative <= TOLERANCE),
            "{} scored {:?}, over HTTP {:?}",
            Target::ALL[grpc].name(),
            scores[grpc],
            scores[http]
        );
    }
    progress(&format!(
        "scores agree: max |Δ| {:.2e} ({:.2e} relative)",
        agreement.max_abs, agreement.relative
    ));

    let load_rows = tenant.sample_input(1, LOAD_STREAM);
    let body = Bytes::from(infer_body(&load_rows, 1)?);
    let grpc = message(&load_rows, 1);
    let mut specs = Vec::new();
    for t in Target::ALL {
        specs.push(Arc::new(spec(t, body.clone(), &grpc)?));
    }
    let pids = Pids {
        mlserver: servers.mlserver.pid()?,
        worker: servers.worker.pid().context("the worker is not running")?,
        router: servers.router.pid().context("the router is not running")?,
    };
    let mut runs: [Vec<Run>; 4] = Default::default();
    for round in 1..=options.load.rounds {
        for ti in load::rotation::<4>(round) {
            let t = Target::ALL[ti];
            let run = load_once(options, specs[ti].clone(), t, &pids).await?;
            progress(&format!(
                "round {round}/{}: {:<32} {:>7.0} req/s  p50 {:.3} ms  p99 {:.3} ms  errors {}  RSS {:.1} MiB  other load {:.2} cores",
                options.load.rounds,
                t.name(),
                run.load.throughput,
                crate::stats::ms(run.load.latency.p50),
                crate::stats::ms(run.load.latency.p99),
                run.load.errors,
                run.memory.rss_mib(),
                run.other_cores(),
            ));
            for m in &run.load.error_messages {
                progress(&format!("  error: {m}"));
            }
            runs[ti].push(run);
        }
    }
    Ok((agreement, runs))
}

#[derive(Debug, Clone, Copy)]
struct Pids {
    mlserver: u32,
    worker: u32,
    router: u32,
}

/// CPU seconds so far of `target`'s server side (and of its router), the client and the
/// machine.
fn cpu_now(target: Target, pids: &Pids) -> Cpu {
    let (server, router) = if target.is_shardline() {
        let router = process_cpu(pids.router);
        (process_cpu(pids.worker) + router, router)
    } else {
        (tree_cpu(pids.mlserver), 0.0)
    };
    Cpu {
        server,
        router,
        client: process_cpu(std::process::id()),
        machine: machine_busy(),
    }
}

/// One load run ([`LoadPlan::window`]), with CPU read at the window's edges and memory
/// at its end.
async fn load_once(
    options: &Options,
    spec: Arc<RequestSpec>,
    target: Target,
    pids: &Pids,
) -> anyhow::Result<Run> {
    let (load, before, (after, memory, router_memory)) = options
        .load
        .window(spec, || {
            let cpu = cpu_now(target, pids);
            if target.is_shardline() {
                (
                    cpu,
                    Footprint::of(pids.worker).unwrap_or_default(),
                    Footprint::of(pids.router),
                )
            } else {
                (cpu, Footprint::of_tree(pids.mlserver), None)
            }
        })
        .await?;
    let before = before.0;
    Ok(Run {
        load: load.into(),
        cpu: Cpu {
            server: after.server - before.server,
            router: after.router - before.router,
            client: after.client - before.client,
            machine: after.machine - before.machine,
        },
        memory,
        router_memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_turns_going_first() {
        assert_eq!(load::rotation::<4>(1), [0, 1, 2, 3]);
        assert_eq!(load::rotation::<4>(2), [1, 2, 3, 0]);
        assert_eq!(load::rotation::<4>(5), [0, 1, 2, 3]);
        assert!(Target::ShardlineGrpc.is_shardline() && !Target::MlServerGrpc.is_shardline());
    }

    #[test]
    fn the_command_reproduces_the_options() {
        let o = Options {
            router_threads: Some(1),
            ..Options::default()
        };
        assert_eq!(
            o.command(),
            "loadtest bench-mlserver --concurrency 32 --warmup 1 --duration 3 --rounds 9 --client-threads 1 --parallel-workers 1 --train-rows 2000 --max-iter 8 --seed 7 --router-threads 1"
        );
        assert!(o.validate().is_ok());
        let zero = Options {
            max_iter: 0,
            ..Options::default()
        };
        assert!(zero.validate().is_err());
    }
}
