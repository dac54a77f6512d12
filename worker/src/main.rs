//! The `worker` binary: parse and validate flags (exit 64 on bad configuration), then
//! serve until SIGINT or SIGTERM.

use shardline_artifacts::ArtifactStore;
use shardline_worker::config::{WorkerArgs, WorkerConfig};

/// Exit status for bad flags or configuration (`EX_USAGE`).
const EXIT_CONFIG: i32 = 64;

/// glibc's malloc raises its mmap threshold after large frees, so the memory of an
/// evicted model mostly stayed in the process (docs/worker.md, "Memory goes back to the
/// operating system"; checked by `worker/tests/rss.rs`). A fixed threshold keeps every
/// large allocation (weights, fetched artifacts) in its own mapping, returned on free.
/// glibc reads the setting only at start-up.
const MALLOC_TUNABLE: &str = "glibc.malloc.mmap_threshold=131072";

/// candle 0.11 asks for its thread count on every matmul, and unless this variable is
/// set that means `num_cpus::get_physical()`, which reads and parses `/proc/cpuinfo`
/// each time, a large share of the worker's CPU per request with a small MLP
/// (docs/worker.md, "candle's thread count is set once"). Setting it once, to the value
/// candle would compute, keeps candle's choice and drops the per-call file read.
const THREADS_ENV: &str = "RAYON_NUM_THREADS";

/// What the process environment lacks: `(variable, value)` pairs to re-execute with.
fn missing_env() -> Vec<(&'static str, String)> {
    let mut missing = Vec::new();
    if cfg!(target_env = "gnu") {
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if !current.contains("glibc.malloc.mmap_threshold") {
            let tunables = if current.is_empty() {
                MALLOC_TUNABLE.to_owned()
            } else {
                format!("{current}:{MALLOC_TUNABLE}")
            };
            missing.push(("GLIBC_TUNABLES", tunables));
        }
    }
    if std::env::var_os(THREADS_ENV).is_none() {
        let threads = shardline_model::compute_threads();
        missing.push((THREADS_ENV, threads.to_string()));
    }
    missing
}

/// glibc reads its tunables only at start-up, and changing the environment of a running
/// process takes `unsafe` (forbidden here), so the worker re-executes itself once with
/// what is missing.
fn ensure_process_env() {
    let missing = missing_env();
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .envs(missing.iter().map(|(k, v)| (k, v)))
            .exec();
        // Only reached if exec failed: run as we are.
        eprintln!("worker: could not re-execute with {missing:?} ({err}); continuing");
    }
}

fn main() {
    ensure_process_env();
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
