//! The `router` binary: parse and validate flags (exit 64 on bad configuration), then
//! serve until SIGINT or SIGTERM: client connections on single-threaded runtimes (one
//! per core, as many in use as the load needs), the control plane on the main thread's
//! own runtime.

use shardline_router::config::{RouterArgs, RouterConfig};
use std::sync::Arc;

use shardline_router::threads::{ServingPool, runtime};

/// Exit status for bad flags or configuration (`EX_USAGE`).
const EXIT_CONFIG: i32 = 64;

fn main() {
    let args: RouterArgs = shardline_service::process::parse_args("router", EXIT_CONFIG);
    let config = match args.validate() {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("router: invalid configuration: {}", errors.join("; "));
            std::process::exit(EXIT_CONFIG);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let threads = config.args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let min = config.args.min_threads.unwrap_or(1);
    let result = runtime().and_then(|control| {
        let pool = ServingPool::start(threads, min)?;
        Ok(control.block_on(run(config, pool)))
    });
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("router: {e:#}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("router: cannot start the runtimes: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(config: RouterConfig, pool: Arc<ServingPool>) -> anyhow::Result<()> {
    let listener = shardline_service::conn::listen(config.args.listen)?;
    let metrics = match config.args.metrics_listen {
        Some(addr) => Some(shardline_service::conn::listen(addr)?),
        None => None,
    };
    shardline_router::serve::serve_on(
        config,
        listener,
        metrics,
        shardline_service::process::shutdown_signal(),
        Some(pool),
    )
    .await
}
