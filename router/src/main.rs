//! The `router` binary: parse and validate flags (exit 64 on bad configuration), then
//! serve until SIGINT or SIGTERM: client connections on one single-threaded runtime per
//! core, the control plane on the main thread's own runtime.

use shardline_router::config::{RouterArgs, RouterConfig};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

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
    let result = current_thread().and_then(|control| {
        let serving = (0..threads)
            .map(ServingThread::start)
            .collect::<std::io::Result<Vec<_>>>()?;
        let handles: Vec<Handle> = serving.iter().map(|s| s.handle.clone()).collect();
        Ok(control.block_on(run(config, handles)))
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

fn current_thread() -> std::io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

/// A thread running a single-threaded runtime that serves the connections handed to it
/// until the process ends (the accept loop's graceful shutdown has drained them by then).
struct ServingThread {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl ServingThread {
    fn start(index: usize) -> std::io::Result<Self> {
        let runtime = current_thread()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("serve-{index}"))
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }
}

async fn run(config: RouterConfig, runtimes: Vec<Handle>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.args.listen).await?;
    let metrics = match config.args.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    shardline_router::serve::serve_on(
        config,
        listener,
        metrics,
        shardline_control::process::shutdown_signal(),
        &runtimes,
    )
    .await
}
