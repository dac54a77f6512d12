//! `loadtest`: Shardline's benchmarks and load tools, run against real neighbours (etcd
//! and moto's S3 from the harness) on loopback only.
//!
//! `loadtest bench-worker` measures the worker's warm and cold overhead on one large MLP;
//! see `shardline_loadtest::bench::worker`. `loadtest bench-router` measures the router's
//! hop against the worker reached directly and nginx in front of it; see
//! `shardline_loadtest::bench::router`. `loadtest models` trains one risk model per sample
//! tenant and writes directories `shardctl publish` takes; see
//! `shardline_loadtest::models`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use shardline_loadtest::bench::router::{self, NginxWorkers};
use shardline_loadtest::bench::worker::{self, Options};
use shardline_loadtest::models::{TenantProfile, TrainOptions, train_tenant_model};

#[derive(Debug, Parser)]
#[command(name = "loadtest", about = "Shardline's benchmarks and load tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Worker overhead: warm infer over HTTP vs in-process, cold first score vs fetch + parse.
    BenchWorker {
        /// Approximate size of the model's f32 weights, in MB (10⁶ bytes).
        #[arg(long, default_value_t = 50.0)]
        size_mb: f64,
        /// Warm iterations (one HTTP request and one in-process call each).
        #[arg(long, default_value_t = 300)]
        iterations: usize,
        /// Cold rounds (unload + first score, and fetch + parse, each).
        #[arg(long, default_value_t = 5)]
        cold_rounds: usize,
        /// Print the result as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Router hop: throughput and p50/p99 through the router, through nginx and direct to
    /// the worker (release `router` and `worker` binaries next to this one, and nginx).
    BenchRouter {
        /// Keep-alive connections of the closed-loop client (one request in flight each).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Warm-up before each measured window, in seconds.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Measured window per target, model and round, in seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Rounds of (direct, nginx, router) per model; figures are medians of rounds.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// The router's `--threads` (default: its own, one per core).
        #[arg(long)]
        router_threads: Option<usize>,
        /// nginx's `worker_processes`: `auto` (one per core) or a count.
        #[arg(long, default_value = "auto")]
        nginx_workers: NginxWorkers,
        /// Runtime threads of the load client (1: a current-thread runtime).
        #[arg(long, default_value_t = 1)]
        client_threads: usize,
        /// Models to run, comma-separated (`mlp`, `trivial`; default both).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Print the result as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Write the figures into this Markdown file's "Router hop" section.
        #[arg(long)]
        write_docs: Option<PathBuf>,
    },
    /// Sample tenant models: trains one authentication-risk MLP per tenant on synthetic
    /// events and writes `DIR/<tenant>/{config.json,model.safetensors}`, printing held-out AUC.
    Models {
        /// Number of tenants (kinds take turns: bank, game, saas, shop).
        #[arg(long, default_value_t = 4)]
        tenants: usize,
        /// Directory to write the model directories into.
        #[arg(long)]
        out: PathBuf,
        /// Publish models of about this many MB (10⁶ bytes) holding the trained network.
        #[arg(long)]
        size_mb: Option<f64>,
        /// Seed of the tenants' rules, their data and the training.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BenchWorker {
            size_mb,
            iterations,
            cold_rounds,
            json,
        } => {
            let options = Options {
                size_mb,
                iterations,
                cold_rounds,
            };
            let report = worker::run(&options, |line| eprintln!("bench-worker: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
        }
        Command::BenchRouter {
            concurrency,
            warmup,
            duration,
            rounds,
            router_threads,
            nginx_workers,
            client_threads,
            models,
            json,
            write_docs,
        } => {
            let options = router::Options {
                concurrency,
                warmup: Duration::try_from_secs_f64(warmup)?,
                duration: Duration::try_from_secs_f64(duration)?,
                rounds,
                router_threads,
                nginx_workers,
                client_threads,
                models,
            };
            let report = router::run(&options, |line| eprintln!("bench-router: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
            if let Some(path) = write_docs {
                let doc = std::fs::read_to_string(&path).unwrap_or_default();
                std::fs::write(&path, router::replace_docs_section(&doc, &report.docs()))?;
                eprintln!("bench-router: wrote {}", path.display());
            }
        }
        Command::Models {
            tenants,
            out,
            size_mb,
            seed,
        } => {
            let options = TrainOptions {
                size_mb,
                seed,
                ..TrainOptions::default()
            };
            println!("tenant    AUC    best   attacks  MB      train");
            for tenant in TenantProfile::fleet(tenants, seed) {
                let started = Instant::now();
                let model = train_tenant_model(&tenant, &options)?;
                let took = started.elapsed();
                model.artifact.write_dir(&out.join(&tenant.name))?;
                println!(
                    "{:<9} {:.3}  {:.3}  {:>5.1} %  {:<6.2}  {:.2} s",
                    tenant.name,
                    model.auc,
                    model.oracle_auc,
                    100.0 * model.positive_rate,
                    model.artifact.weights.len() as f64 / 1e6,
                    took.as_secs_f64(),
                );
            }
            eprintln!(
                "models: wrote {}/<tenant>; publish with `shardctl publish --tenant <tenant> --model risk --version 1 DIR`",
                out.display()
            );
        }
    }
    Ok(())
}

/// Prints a benchmark's report: the table, or one JSON object with `--json`; missed
/// targets beside the table on stdout, or on stderr with `--json` so that stdout stays
/// one object.
fn print_report(
    json: bool,
    object: serde_json::Value,
    table: String,
    misses: Vec<String>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&object)?);
    } else {
        print!("{table}");
    }
    for miss in misses {
        if json {
            eprintln!("{miss}");
        } else {
            println!("{miss}");
        }
    }
    Ok(())
}
