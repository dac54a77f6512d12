//! The `worker` binary: parse and validate flags (exit 64 on bad configuration), then
//! serve until SIGINT or SIGTERM.

use shardline_worker::artifacts::ArtifactStore;
use shardline_worker::config::{WorkerArgs, WorkerConfig};

/// Exit status for bad flags or configuration (`EX_USAGE`).
const EXIT_CONFIG: i32 = 64;

/// glibc's malloc raises its mmap threshold after large frees, so the memory of an
/// evicted model mostly stayed in the process (measured: 85 MiB of 66 MiB of models kept
/// after evicting them all; `worker/tests/rss.rs`). A fixed threshold keeps every large
/// allocation (weights, fetched artifacts) in its own mapping, returned on free. glibc
/// reads the setting only at start-up, so the worker re-executes itself once with it.
const MALLOC_TUNABLE: &str = "glibc.malloc.mmap_threshold=131072";

fn ensure_malloc_tunable() {
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains("glibc.malloc.mmap_threshold") || !cfg!(target_env = "gnu") {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let tunables = if current.is_empty() {
        MALLOC_TUNABLE.to_owned()
    } else {
        format!("{current}:{MALLOC_TUNABLE}")
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", tunables)
            .exec();
        // Only reached if exec failed: run as we are.
        eprintln!("worker: could not re-execute with {MALLOC_TUNABLE} ({err}); continuing");
    }
}

fn main() {
    ensure_malloc_tunable();
    let args: WorkerArgs = shardline_control::process::parse_args("worker", EXIT_CONFIG);
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
    let listener = tokio::net::TcpListener::bind(config.args.listen).await?;
    let metrics = match config.args.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    shardline_worker::serve::serve(
        config,
        store,
        listener,
        metrics,
        shardline_control::process::shutdown_signal(),
    )
    .await
}
