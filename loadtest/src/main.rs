//! `loadtest`: Shardline's benchmarks and load tools, run against real neighbours (etcd
//! and moto's S3 from `shardline-testkit`) on loopback only.
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
//! fleet; see `shardline_loadtest::fleet` and `shardline_loadtest::demo`. The command tree
//! and its dispatch are `shardline_loadtest::cli`.

use clap::Parser as _;
use shardline_loadtest::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::run(Cli::parse()).await
}
