//! `loadtest`: Shardline's benchmarks and load tools, run against real neighbours (etcd
//! and moto's S3 from the harness) on loopback only.
//!
//! `loadtest bench-worker` measures the worker's warm and cold overhead on one large MLP;
//! see `shardline_loadtest::bench::worker`.

use clap::{Parser, Subcommand};
use shardline_loadtest::bench::worker::{self, Options};

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
            if json {
                println!("{}", serde_json::to_string_pretty(&report.json())?);
            } else {
                print!("{}", report.table());
            }
            // Beside the table on stdout; on stderr with --json, so stdout stays one object.
            for miss in report.misses() {
                if json {
                    eprintln!("{miss}");
                } else {
                    println!("{miss}");
                }
            }
        }
    }
    Ok(())
}
