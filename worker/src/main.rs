//! The `worker` binary: parse and validate flags (exit 64 on bad configuration), then
//! serve until SIGINT or SIGTERM.

use shardline_artifacts::ArtifactStore;
use shardline_worker::config::{WorkerArgs, WorkerConfig};

/// Exit status for bad flags or configuration (`EX_USAGE`).
const EXIT_CONFIG: i32 = 64;

/// candle 0.11 asks for its thread count on every matmul, and unless this variable is
/// set that means `num_cpus::get_physical()`, which reads and parses `/proc/cpuinfo`
/// each time, a large share of the worker's CPU per request with a small MLP
/// (docs/worker.md, "candle's thread count is set once"). Setting it once, to the value
/// candle would compute, keeps candle's choice and drops the per-call file read.
const THREADS_ENV: &str = "RAYON_NUM_THREADS";

/// What the process environment lacks: `(variable, value)` pairs to re-execute with
/// (`shardline_service::process::reexec_with`).
fn missing_env() -> Vec<(&'static str, String)> {
    let mut missing: Vec<_> = shardline_service::process::missing_malloc_tunable()
        .into_iter()
        .collect();
    if std::env::var_os(THREADS_ENV).is_none() {
        let threads = shardline_model::compute_threads();
        missing.push((THREADS_ENV, threads.to_string()));
    }
    missing
}

fn main() {
    shardline_service::process::reexec_with("worker", &missing_env());
    let args: WorkerArgs = shardline_service::process::parse_args("worker", EXIT_CONFIG);
    let config = match args.validate() {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("worker: invalid configuration: {}", errors.join("; "));
            std::process::exit(EXIT_CONFIG);
        }
    };
    let store = match ArtifactStore::from_url(&config.args.store) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("worker: invalid configuration: --store: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("worker: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(config, store)) {
        eprintln!("worker: {e:#}");
        std::process::exit(1);
    }
}

async fn run(config: WorkerConfig, store: ArtifactStore) -> anyhow::Result<()> {
    let listener = shardline_service::conn::listen(config.args.listen)?;
    let metrics = match config.args.metrics_listen {
        Some(addr) => Some(shardline_service::conn::listen(addr)?),
        None => None,
    };
    shardline_worker::serve::serve(
        config,
        store,
        listener,
        metrics,
        shardline_service::process::shutdown_signal(),
    )
    .await
}
