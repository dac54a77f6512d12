//! The `loadtest` command tree (clap derive) and its dispatch. Each subcommand takes the
//! library's own options struct, which derives [`clap::Args`] beside its defaults:
//! [`bench::worker::Options`](crate::bench::worker::Options),
//! [`bench::router::Options`](crate::bench::router::Options) (with the shared
//! [`bench::load::LoadPlan`](crate::bench::load::LoadPlan)),
//! [`bench::mlserver::Options`](crate::bench::mlserver::Options),
//! [`bench::churn::Options`](crate::bench::churn::Options),
//! [`bench::scale::Options`](crate::bench::scale::Options), [`loadgen::Flags`],
//! [`fleet::FleetOptions`], [`demo::DemoOptions`] and
//! [`models::TrainOptions`](crate::models::TrainOptions). This module adds only what
//! belongs to the command line: the `--json` and `--write-docs` outputs of the benchmarks,
//! and printing. Flag value parsers live in [`crate::args`].

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use crate::bench::docs::{self as bench_docs, Section};
use crate::bench::{churn, mlserver, router, scale, worker};
use crate::models::{TenantProfile, TrainOptions, train_tenant_model};
use crate::{demo, fleet, loadgen};

/// Exit code for bad flags or config (a missing or malformed keys file included).
pub const EXIT_CONFIG: i32 = 64;

#[derive(Debug, Parser)]
#[command(name = "loadtest", about = "Shardline's benchmarks and load tools")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole system on this machine: trained tenant models, a local fleet, Zipf traffic
    /// through the router, and a summary (the fleet keeps running; `fleet down` stops it).
    Demo(demo::DemoOptions),
    /// Sample tenant models: trains one authentication-risk MLP per tenant on synthetic
    /// events and writes `DIR/<tenant>/{config.json,model.safetensors}`, printing held-out AUC.
    Models(ModelsArgs),
    /// A local fleet: etcd, a model store, workers and routers under one run directory.
    Fleet {
        #[command(subcommand)]
        action: FleetAction,
    },
    /// Model churn: one worker scoring 5× more models than its budget holds, RSS sampled
    /// from /proc (release `router`, `worker` and `shardctl` binaries next to this one).
    BenchChurn {
        #[command(flatten)]
        options: churn::Options,
        /// Print the result as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Write the figures into this Markdown file's churn section.
        #[arg(long)]
        write_docs: Option<PathBuf>,
    },
    /// Scale: 100,000 tenants and 1,000 simulated workers in one etcd, measured through
    /// real routers, a real worker and shardctl (release binaries next to this one).
    BenchScale {
        #[command(flatten)]
        options: scale::Options,
        /// Print the result as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Write the figures into this Markdown file's scale section.
        #[arg(long)]
        write_docs: Option<PathBuf>,
    },
    /// Writes a benchmark's plain-text output (e.g. `cargo bench`'s) into its section of a
    /// Markdown file, under the machine/command/date header.
    WriteDocs(WriteDocsArgs),
    /// Worker overhead: warm infer over HTTP vs in-process, cold first score vs fetch + parse.
    BenchWorker {
        #[command(flatten)]
        options: worker::Options,
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
        options: router::Options,
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
        options: mlserver::Options,
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
    Run(loadgen::Flags),
}

/// `loadtest models`: how many tenants, where to write, and how to train.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Number of tenants (kinds take turns: bank, game, saas, shop).
    #[arg(long, default_value_t = 4)]
    pub tenants: usize,
    /// Directory to write the model directories into.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub train: TrainOptions,
}

/// `loadtest write-docs`: which section, and the output to put in it.
#[derive(Debug, Args)]
pub struct WriteDocsArgs {
    /// The section's marker name (`placement` → `<!-- bench-placement:begin … -->`).
    #[arg(long)]
    pub section: String,
    /// Heading for the section when the file has none yet.
    #[arg(long)]
    pub heading: String,
    /// The command that produced the output.
    #[arg(long)]
    pub command: String,
    /// The output to record.
    #[arg(long)]
    pub from: PathBuf,
    /// The Markdown file.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub docs: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum FleetAction {
    /// Start a fleet; runs until Ctrl-C (then stops it), or returns at once with --detach.
    Up(fleet::FleetOptions),
    /// Stop what `fleet up` started in the run directory (by recorded PID and start time).
    Down {
        #[arg(long, default_value = "shardline-fleet")]
        run_dir: PathBuf,
    },
}

/// Runs one `loadtest` command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Fleet { action } => fleet_command(action).await?,
        Command::Demo(options) => demo_command(options).await?,
        Command::WriteDocs(args) => write_docs(&args)?,
        Command::BenchChurn {
            options,
            json,
            write_docs,
        } => {
            let report = churn::run(&options, |line| eprintln!("bench-churn: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
            write_section(&churn::DOCS, write_docs, "bench-churn", || report.docs())?;
        }
        Command::BenchScale {
            options,
            json,
            write_docs,
        } => {
            let report = scale::run(&options, |line| eprintln!("bench-scale: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
            write_section(&scale::DOCS, write_docs, "bench-scale", || report.docs())?;
        }
        Command::BenchWorker {
            options,
            json,
            write_docs,
        } => {
            let header = bench_docs::header(&options.command());
            let report = worker::run(&options, |line| eprintln!("bench-worker: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
            write_section(&worker::DOCS, write_docs, "bench-worker", || {
                report.docs(&header)
            })?;
        }
        Command::BenchRouter {
            options,
            json,
            write_docs,
        } => {
            let report = router::run(&options, |line| eprintln!("bench-router: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
            let section = options.docs_section();
            write_section(&section, write_docs, "bench-router", || report.docs())?;
        }
        Command::BenchMlserver {
            options,
            json,
            write_docs,
        } => {
            let report =
                mlserver::run(&options, |line| eprintln!("bench-mlserver: {line}")).await?;
            print_report(json, report.json(), report.table(), report.misses())?;
            write_section(&mlserver::DOCS, write_docs, "bench-mlserver", || {
                report.docs()
            })?;
        }
        Command::Run(flags) => run_command(&flags).await?,
        Command::Models(args) => models_command(&args)?,
    }
    Ok(())
}

async fn demo_command(options: demo::DemoOptions) -> anyhow::Result<()> {
    if fleet::FleetState::load(&options.run_dir).is_ok() {
        let stopped = fleet::down(&options.run_dir)?;
        if !stopped.is_empty() {
            eprintln!(
                "demo: stopped the previous demo fleet ({})",
                stopped.join(", ")
            );
        }
    }
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
    Ok(())
}

fn write_docs(args: &WriteDocsArgs) -> anyhow::Result<()> {
    let output = std::fs::read_to_string(&args.from)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", args.from.display()))?;
    let section = Section {
        name: args.section.clone().into(),
        heading: args.heading.clone().into(),
    };
    let generated = format!(
        "{}\n```text\n{}\n```\n",
        bench_docs::header(&args.command),
        output.trim_end()
    );
    section.write(&args.docs, &generated)?;
    eprintln!("loadtest write-docs: wrote {}", args.docs.display());
    Ok(())
}

async fn run_command(flags: &loadgen::Flags) -> anyhow::Result<()> {
    let tenants = loadgen::keys::load(&flags.keys).unwrap_or_else(|e| exit_config(&e));
    let mode = flags
        .mode()
        .unwrap_or_else(|| exit_config(&"one of --rate and --concurrency is required"));
    let options = flags.options(tenants, mode);
    options.validate().unwrap_or_else(|e| exit_config(&e));
    eprintln!(
        "loadtest run: {mode}, {} for {:?}",
        options.mix, options.duration
    );
    let report = loadgen::run(&options)
        .await
        .unwrap_or_else(|e| exit_config(&e));
    print_report(flags.json, report.json(), report.table(), Vec::new())
}

fn models_command(args: &ModelsArgs) -> anyhow::Result<()> {
    println!("tenant    AUC    best   attacks  MB      train");
    for tenant in TenantProfile::fleet(args.tenants, args.train.seed) {
        let started = Instant::now();
        let model = train_tenant_model(&tenant, &args.train)?;
        let took = started.elapsed();
        model.artifact.write_dir(&args.out.join(&tenant.name))?;
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
        args.out.display()
    );
    Ok(())
}

async fn fleet_command(action: FleetAction) -> anyhow::Result<()> {
    match action {
        FleetAction::Up(options) => {
            let state = fleet::up(&options, |line| eprintln!("fleet: {line}")).await?;
            print!("{}", fleet::describe(&state));
            if options.detach {
                println!(
                    "stop it with: loadtest fleet down --run-dir {}",
                    options.run_dir.display()
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
