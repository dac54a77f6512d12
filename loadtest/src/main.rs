//! `loadtest`: Shardline's benchmarks and load tools, run against real neighbours (etcd
//! and moto's S3 from the harness) on loopback only.
//!
//! `loadtest bench-worker` measures the worker's warm and cold overhead on one large MLP;
//! see `shardline_loadtest::bench::worker`. `loadtest bench-router` measures the router's
//! hop against the worker reached directly and nginx in front of it; see
//! `shardline_loadtest::bench::router`. `loadtest bench-mlserver` compares Shardline end
//! to end with MLServer serving the same scikit-learn weights; see
//! `shardline_loadtest::bench::mlserver`. `loadtest run` loads a running router, open or
//! closed loop; see `shardline_loadtest::loadgen`. `loadtest models` trains one risk
//! model per sample tenant and writes directories `shardctl publish` takes; see
//! `shardline_loadtest::models`. `loadtest fleet up|down` and `loadtest demo` run a local
//! fleet; see `shardline_loadtest::fleet` and `shardline_loadtest::demo`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, Parser, Subcommand};
use shardline_loadtest::bench::churn;
use shardline_loadtest::bench::docs::{self as bench_docs, Section};
use shardline_loadtest::bench::load::LoadPlan;
use shardline_loadtest::bench::mlserver;
use shardline_loadtest::bench::router::{self, NginxWorkers};
use shardline_loadtest::bench::worker::{self, Options};
use shardline_loadtest::loadgen::{self, DEFAULT_ZIPF, Mix, Mode};
use shardline_loadtest::{demo, fleet};
use shardline_shared::units::parse_duration;

use shardline_loadtest::models::{TenantProfile, TrainOptions, train_tenant_model};

/// Exit code for bad flags or config (a missing or malformed keys file included).
const EXIT_CONFIG: i32 = 64;

#[derive(Debug, Parser)]
#[command(name = "loadtest", about = "Shardline's benchmarks and load tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole system on this machine: trained tenant models, a local fleet, Zipf traffic
    /// through the router, and a summary (the fleet keeps running; `fleet down` stops it).
    Demo {
        /// Run directory of the fleet (a fleet already running there is stopped first).
        #[arg(long, default_value = "target/demo")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        tenants: usize,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 1)]
        routers: usize,
        /// Workers in each tenant's shard.
        #[arg(long, default_value_t = 2)]
        shard_size: u32,
        /// How long to drive traffic (e.g. 30s).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Open loop at this many requests per second (default: a closed loop).
        #[arg(long)]
        rate: Option<f64>,
        /// Connections of the closed loop.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Zipf exponent of the tenant mix (tenant k gets ∝ 1/k^s of the traffic).
        #[arg(long, default_value_t = DEFAULT_ZIPF)]
        zipf: f64,
        /// Publish ~this many MB per model, the trained network inside wide layers (50 is
        /// the real workload's size; 0 publishes the small trained network as is).
        #[arg(long, default_value_t = 1.0)]
        size_mb: f64,
        /// Keep models in moto's S3 server instead of a directory.
        #[arg(long)]
        s3: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory of the router, worker and shardctl binaries (default: beside this one).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
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
    /// A local fleet: etcd, a model store, workers and routers under one run directory.
    Fleet {
        #[command(subcommand)]
        action: FleetAction,
    },
    /// Model churn: one worker scoring 5× more models than its budget holds, RSS sampled
    /// from /proc (release `router`, `worker` and `shardctl` binaries next to this one).
    BenchChurn {
        /// Models the worker's budget holds at once (plus one load in flight).
        #[arg(long, default_value_t = 5)]
        fit: usize,
        /// Models published per model that fits.
        #[arg(long, default_value_t = 5)]
        factor: usize,
        /// Size of each model's f32 weights, in MB (10⁶ bytes).
        #[arg(long, default_value_t = 50.0)]
        size_mb: f64,
        /// Closed-loop connections of the load generator.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Seconds of the warm (baseline) phase.
        #[arg(long, default_value_t = 10.0)]
        warm: f64,
        /// Seconds of the churn phase.
        #[arg(long, default_value_t = 30.0)]
        churn: f64,
        /// Scratch directory for the fleet and its store (emptied first).
        #[arg(long, default_value = "target/bench-churn")]
        run_dir: PathBuf,
        /// Keep the scratch directory afterwards.
        #[arg(long)]
        keep: bool,
        /// Print the result as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Write the figures into this Markdown file's churn section.
        #[arg(long)]
        write_docs: Option<PathBuf>,
    },
    /// Writes a benchmark's plain-text output (e.g. `cargo bench`'s) into its section of a
    /// Markdown file, under the machine/command/date header.
    WriteDocs {
        /// The section's marker name (`placement` → `<!-- bench-placement:begin … -->`).
        #[arg(long)]
        section: String,
        /// Heading for the section when the file has none yet.
        #[arg(long)]
        heading: String,
        /// The command that produced the output.
        #[arg(long)]
        command: String,
        /// The output to record.
        #[arg(long)]
        from: PathBuf,
        /// The Markdown file.
        #[arg(long, default_value = "docs/benchmarks.md")]
        docs: PathBuf,
    },
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
        /// Write the figures into this Markdown file's worker section.
        #[arg(long)]
        write_docs: Option<PathBuf>,
    },
    /// Router hop: throughput and p50/p99 through the router, through nginx and direct to
    /// the worker (release `router` and `worker` binaries next to this one, and nginx).
    BenchRouter {
        #[command(flatten)]
        load: LoadArgs,
        /// The router's `--threads` (default: its own, one per core).
        #[arg(long)]
        router_threads: Option<usize>,
        /// nginx's `worker_processes`: `auto` (one per core) or a count.
        #[arg(long, default_value = "auto")]
        nginx_workers: NginxWorkers,
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
    /// Peer comparison: Shardline through the router vs MLServer (from ./.venv-peer) serving
    /// the same scikit-learn MLP, same client and concurrency: throughput, p50/p99, RSS.
    BenchMlserver {
        #[command(flatten)]
        load: LoadArgs,
        /// The router's `--threads` (default: its own, one per core).
        #[arg(long)]
        router_threads: Option<usize>,
        /// MLServer's `parallel_workers`: inference processes beside the HTTP one (MLServer's
        /// default, 1); 0 runs inference in the HTTP process.
        #[arg(long, default_value_t = 1)]
        parallel_workers: usize,
        /// Events the scikit-learn model is trained on.
        #[arg(long, default_value_t = 2000)]
        train_rows: usize,
        /// scikit-learn's `max_iter` (epochs; a few seconds of training at most).
        #[arg(long, default_value_t = 8)]
        max_iter: usize,
        /// Seed of the tenant, its events and the initial weights.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Print the result as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Write the figures into this Markdown file's "Peer comparison: MLServer" section.
        #[arg(long)]
        write_docs: Option<PathBuf>,
    },
    /// Load a running router with OIP v2 infer requests for the tenants of a keys file:
    /// open loop (`--rate`, latency from each request's intended send time) or closed loop
    /// (`--concurrency`).
    #[command(group(ArgGroup::new("pace").required(true).args(["rate", "concurrency"])))]
    Run {
        /// The router, `http://host:port` (plain HTTP only).
        #[arg(long, env = "SHARDLINE_LOADTEST_ROUTER")]
        router: String,
        /// JSON keys file: `[{"tenant": "t1", "key": "…", "models": ["risk"]}, …]`, busiest
        /// tenant first.
        #[arg(long, env = "SHARDLINE_LOADTEST_KEYS")]
        keys: PathBuf,
        /// Open loop: requests per second, on a fixed schedule.
        #[arg(long, env = "SHARDLINE_LOADTEST_RATE")]
        rate: Option<f64>,
        /// Open loop: at most this many connections; requests due while all are busy wait
        /// (and that wait counts in their latency).
        #[arg(long, env = "SHARDLINE_LOADTEST_CONNECTIONS", default_value_t = 256)]
        connections: usize,
        /// Closed loop: connections, each sending again as soon as it is answered.
        #[arg(long, env = "SHARDLINE_LOADTEST_CONCURRENCY")]
        concurrency: Option<usize>,
        /// Zipf exponent of the tenant mix (rank = position in the keys file).
        #[arg(long, env = "SHARDLINE_LOADTEST_ZIPF", default_value_t = DEFAULT_ZIPF)]
        zipf: f64,
        /// Uniform tenant mix instead of Zipf.
        #[arg(long, env = "SHARDLINE_LOADTEST_UNIFORM", conflicts_with = "zipf")]
        uniform: bool,
        /// Rows per request.
        #[arg(long, env = "SHARDLINE_LOADTEST_BATCH", default_value_t = 1)]
        batch: usize,
        /// Features per row (default: from `GET /v2/models/{model}` of the first tenant's
        /// first model, else 64).
        #[arg(long, env = "SHARDLINE_LOADTEST_FEATURES")]
        features: Option<usize>,
        /// Input name (default: from the same metadata, else `features`).
        #[arg(long, env = "SHARDLINE_LOADTEST_INPUT")]
        input: Option<String>,
        /// How long to start requests for, e.g. `30s`, `5m`.
        #[arg(long, env = "SHARDLINE_LOADTEST_DURATION", default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Per-request deadline (open loop: from the intended send time).
        #[arg(long, env = "SHARDLINE_LOADTEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
        /// Seed of the tenant and model choices and of the feature values.
        #[arg(long, env = "SHARDLINE_LOADTEST_SEED", default_value_t = 1)]
        seed: u64,
        /// Print the result as one JSON object instead of a table.
        #[arg(long, env = "SHARDLINE_LOADTEST_JSON")]
        json: bool,
    },
}

/// The closed-loop client of the HTTP benchmarks, the same for every target.
#[derive(Debug, Args)]
struct LoadArgs {
    /// Keep-alive connections of the closed-loop client (one request in flight each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Warm-up before each measured window, in seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measured window per target (and model) and round, in seconds.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Rounds of every target, the order rotated each round; ratios are medians of the
    /// rounds' ratios between targets measured in the same round.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Runtime threads of the load client (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

impl LoadArgs {
    fn plan(&self) -> anyhow::Result<LoadPlan> {
        Ok(LoadPlan {
            concurrency: self.concurrency,
            warmup: Duration::try_from_secs_f64(self.warmup)?,
            duration: Duration::try_from_secs_f64(self.duration)?,
            rounds: self.rounds,
            client_threads: self.client_threads,
        })
    }
}

#[derive(Debug, Subcommand)]
enum FleetAction {
    /// Start a fleet; runs until Ctrl-C (then stops it), or returns at once with --detach.
    Up {
        /// Run directory: fleet.json, keys.json, logs/, etcd/, store/.
        #[arg(long, default_value = "shardline-fleet")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 1)]
        routers: usize,
        /// Each worker's memory budget for models (e.g. 256MiB).
        #[arg(long, default_value = "256MiB", value_parser = shardline_shared::units::parse_bytes)]
        memory_budget: u64,
        /// Workers evict models unused for this long.
        #[arg(long, default_value = "10m")]
        idle_ttl: String,
        /// Store models in moto's S3 server (from ./.venv) instead of a directory.
        #[arg(long)]
        s3: bool,
        /// Leave the fleet running and return (stop it with `loadtest fleet down`).
        #[arg(long)]
        detach: bool,
        /// Directory of the router, worker and shardctl binaries (default: beside this one).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Stop what `fleet up` started in the run directory (by recorded PID and start time).
    Down {
        #[arg(long, default_value = "shardline-fleet")]
        run_dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Fleet { action } => fleet_command(action).await?,
        Command::Demo {
            run_dir,
            tenants,
            workers,
            routers,
            shard_size,
            duration,
            rate,
            concurrency,
            zipf,
            size_mb,
            s3,
            seed,
            bin_dir,
        } => {
            if fleet::FleetState::load(&run_dir).is_ok() {
                let stopped = fleet::down(&run_dir)?;
                if !stopped.is_empty() {
                    eprintln!(
                        "demo: stopped the previous demo fleet ({})",
                        stopped.join(", ")
                    );
                }
            }
            let options = demo::DemoOptions {
                run_dir,
                bin_dir: bin_dir.unwrap_or_else(fleet::default_bin_dir),
                tenants,
                workers,
                routers,
                shard_size,
                duration,
                rate,
                concurrency,
                zipf,
                size_mb: (size_mb > 0.0).then_some(size_mb),
                s3,
                seed,
            };
            let summary = demo::run(&options, |line| eprintln!("demo: {line}")).await?;
            print!("{}", summary.text());
            let r = &summary.report;
            if r.ok == 0 || r.error_count() > 0 {
                anyhow::bail!(
                    "the demo's traffic was not all answered: {} ok, {} errors {:?}",
                    r.ok,
                    r.error_count(),
                    r.errors
                );
            }
        }
        Command::WriteDocs {
            section,
            heading,
            command,
            from,
            docs,
        } => {
            let output = std::fs::read_to_string(&from)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", from.display()))?;
            let section = Section {
                name: section.into(),
                heading: heading.into(),
            };
            let generated = format!(
                "{}\n```text\n{}\n```\n",
                bench_docs::header(&command),
                output.trim_end()
            );
            section.write(&docs, &generated)?;
            eprintln!("loadtest write-docs: wrote {}", docs.display());
        }
        Command::BenchChurn {
            fit,
            factor,
            size_mb,
            concurrency,
            warm,
            churn,
            run_dir,
            keep,
            json,
            write_docs,
        } => {
            let options = churn::Options {
                fit,
                factor,
                size_mb,
                concurrency,
                warm: Duration::try_from_secs_f64(warm)?,
                churn: Duration::try_from_secs_f64(churn)?,
                run_dir,
                keep,
                seed: churn::Options::default().seed,
            };
            let report = churn::run(&options, |line| eprintln!("bench-churn: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
            write_section(&churn::DOCS, write_docs, "bench-churn", || report.docs())?;
        }
        Command::BenchWorker {
            size_mb,
            iterations,
            cold_rounds,
            json,
            write_docs,
        } => {
            let options = Options {
                size_mb,
                iterations,
                cold_rounds,
            };
            let header = bench_docs::header(&options.command());
            let report = worker::run(&options, |line| eprintln!("bench-worker: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
            write_section(&worker::DOCS, write_docs, "bench-worker", || {
                report.docs(&header)
            })?;
        }
        Command::BenchRouter {
            load,
            router_threads,
            nginx_workers,
            models,
            json,
            write_docs,
        } => {
            let options = router::Options {
                load: load.plan()?,
                router_threads,
                nginx_workers,
                models,
            };
            let report = router::run(&options, |line| eprintln!("bench-router: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
            write_section(&router::DOCS, write_docs, "bench-router", || report.docs())?;
        }
        Command::BenchMlserver {
            load,
            router_threads,
            parallel_workers,
            train_rows,
            max_iter,
            seed,
            json,
            write_docs,
        } => {
            let options = mlserver::Options {
                load: load.plan()?,
                router_threads,
                parallel_workers,
                train_rows,
                max_iter,
                seed,
                ..mlserver::Options::default()
            };
            let report =
                mlserver::run(&options, |line| eprintln!("bench-mlserver: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
            write_section(&mlserver::DOCS, write_docs, "bench-mlserver", || {
                report.docs()
            })?;
        }
        Command::Run {
            router,
            keys,
            rate,
            connections,
            concurrency,
            zipf,
            uniform,
            batch,
            features,
            input,
            duration,
            timeout,
            seed,
            json,
        } => {
            let tenants = loadgen::keys::load(&keys).unwrap_or_else(|e| exit_config(&e));
            let mode = match (rate, concurrency) {
                (Some(rate), _) => Mode::Open { rate, connections },
                (None, Some(concurrency)) => Mode::Closed { concurrency },
                (None, None) => exit_config(&"one of --rate and --concurrency is required"),
            };
            let mut options = loadgen::Options::new(router, tenants, mode);
            options.mix = if uniform {
                Mix::Uniform
            } else {
                Mix::Zipf(zipf)
            };
            options.duration = duration;
            options.batch = batch;
            options.features = features;
            options.input = input;
            options.timeout = timeout;
            options.seed = seed;
            options.validate().unwrap_or_else(|e| exit_config(&e));
            eprintln!("loadtest run: {mode}, {} for {duration:?}", options.mix);
            let report = loadgen::run(&options)
                .await
                .unwrap_or_else(|e| exit_config(&e));
            print_report(json, report.json(), report.table(), Vec::new())?;
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

/// Exits with [`EXIT_CONFIG`] and a one-line reason.
fn exit_config(reason: &dyn std::fmt::Display) -> ! {
    eprintln!("loadtest run: {reason}");
    std::process::exit(EXIT_CONFIG)
}

/// Writes a benchmark's section of the Markdown file at `path`, when one was given.
fn write_section(
    section: &Section,
    path: Option<PathBuf>,
    bench: &str,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if let Some(path) = path {
        section.write(&path, &text())?;
        eprintln!("{bench}: wrote {}", path.display());
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

async fn fleet_command(action: FleetAction) -> anyhow::Result<()> {
    match action {
        FleetAction::Up {
            run_dir,
            workers,
            routers,
            memory_budget,
            idle_ttl,
            s3,
            detach,
            bin_dir,
        } => {
            let options = fleet::FleetOptions {
                run_dir: run_dir.clone(),
                workers,
                routers,
                memory_budget,
                idle_ttl,
                s3,
                bin_dir: bin_dir.unwrap_or_else(fleet::default_bin_dir),
                router_args: Vec::new(),
                worker_args: Vec::new(),
            };
            let state = fleet::up(&options, |line| eprintln!("fleet: {line}")).await?;
            print!("{}", fleet::describe(&state));
            if detach {
                println!(
                    "stop it with: loadtest fleet down --run-dir {}",
                    run_dir.display()
                );
                return Ok(());
            }
            println!("Ctrl-C stops the fleet");
            tokio::signal::ctrl_c().await?;
            let stopped = fleet::down(&state.run_dir)?;
            eprintln!("fleet: stopped {}", stopped.join(", "));
        }
        FleetAction::Down { run_dir } => {
            let stopped = fleet::down(&run_dir)?;
            if stopped.is_empty() {
                println!("nothing of that fleet was still running");
            } else {
                println!("stopped {}", stopped.join(", "));
            }
        }
    }
    Ok(())
}
