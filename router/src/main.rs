//! The `router` binary: parse and validate flags (exit 64 on bad configuration), then
//! serve until SIGINT or SIGTERM on one runtime thread per core.

use shardline_router::config::{RouterArgs, RouterConfig};

/// Exit status for bad flags or configuration (`EX_USAGE`).
const EXIT_CONFIG: i32 = 64;

fn main() {
    let args: RouterArgs = shardline_control::process::parse_args("router", EXIT_CONFIG);
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
    // One thread: a current-thread runtime (no work stealing, no cross-thread wake-ups).
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("router: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(config)) {
        eprintln!("router: {e:#}");
        std::process::exit(1);
    }
}

async fn run(config: RouterConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.args.listen).await?;
    let metrics = match config.args.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    shardline_router::serve::serve(
        config,
        listener,
        metrics,
        shardline_control::process::shutdown_signal(),
    )
    .await
}
