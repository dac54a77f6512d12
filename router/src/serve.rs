//! Running a router: connect to etcd, watch the snapshot, run the placement controller
//! candidate, serve the public API and `/metrics`, and shut down cleanly (stop
//! accepting, finish in-flight requests, give up the controller lease).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use shardline_control::{ControlMetrics, ControlPlane, EtcdStore, SnapshotWatcher};
use shardline_service::conn::{ConnGate, ConnMetrics, HyperConn};
use shardline_service::metrics::spawn_metrics_server;
use tokio::net::TcpListener;
use tracing::info;

use crate::budget::RetryBudget;
use crate::config::RouterConfig;
use crate::http1::Serving;
use crate::metrics::RouterMetrics;
use crate::routes::app;
use crate::state::{AppState, Limits};
use crate::threads::ServingPool;
use crate::upstream::WorkerClient;
use shardline_controller::{Controller, ControllerConfig, ControllerMetrics};

/// Runs the router until `shutdown` completes. `listener` is already bound (tests bind
/// `127.0.0.1:0`); `metrics_listener` serves `/metrics` when given. Everything runs on
/// the caller's runtime.
pub async fn serve(
    config: RouterConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_on(config, listener, metrics_listener, shutdown, None).await
}

/// [`serve`], with client connections served by the threads of `pool` (the binary's
/// single-threaded runtimes, one per core, as many taking connections as the load
/// needs) while the control plane — snapshot watch, placement controller, `/metrics`,
/// accepting, sizing the pool — stays on the caller's runtime, so a large placement
/// computation never stalls a request.
pub async fn serve_on(
    config: RouterConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    pool: Option<Arc<ServingPool>>,
) -> anyhow::Result<()> {
    let args = &config.args;
    // Bound first: a taken address fails the start before anything else begins.
    let grpc_listener = match args.grpc.grpc_listen {
        Some(addr) => Some(shardline_service::conn::listen(addr)?),
        None => None,
    };
    let registry = Registry::new();
    let metrics = RouterMetrics::register(&registry, args.per_model_metrics)?;
    let control_metrics = ControlMetrics::register(&registry)?;

    let etcd = Arc::new(EtcdStore::connect(&args.etcd).await?);
    let cp = ControlPlane::new(etcd.clone(), config.prefix.clone());
    let watcher = SnapshotWatcher::spawn(etcd, config.prefix.clone(), control_metrics);

    let controller = if args.no_controller {
        None
    } else {
        let controller_metrics = ControllerMetrics::register(&registry)?;
        Some(Controller::spawn(
            cp,
            watcher.subscribe(),
            ControllerConfig {
                id: config.id.clone(),
                internal_token: args.sent_token(),
                lease_ttl: args.controller_lease_ttl,
                prefetch_timeout: Duration::from_secs(30),
                previous_grace: Duration::from_secs(10),
                balance_moves: args.max_balance_moves_per_minute,
                balance_window: Duration::from_secs(60),
            },
            controller_metrics,
        ))
    };

    let limits = Limits {
        max_body: usize::try_from(args.max_body).unwrap_or(usize::MAX),
        max_rows: args.max_batch_rows,
        default_deadline: args.default_deadline,
        max_deadline: args.max_deadline,
        attempt_timeout: args.attempt_timeout,
        max_inflight_bytes: args.max_inflight_bytes,
    };
    let budget = RetryBudget::new(
        args.retry_budget_percent * 10,
        args.retry_min_per_sec,
        args.retry_window,
    );
    let mut serving = serving(&config, &registry)?;
    let mut grpc_tls = None;
    let certificates = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let certificates = crate::tls::Certificates::load(cert, key, &registry)?;
            serving.tls = Some(certificates.acceptor()?);
            grpc_tls = Some(certificates.acceptor_for(b"h2")?);
            Some(tokio::spawn(certificates.watch()))
        }
        _ => None,
    };
    let upstream = WorkerClient::new(&args.sent_token())?.with_idle_limit(serving.gate.max());
    let shadow_limits = crate::shadow::ShadowLimits {
        max_in_flight: args.shadow_max_in_flight,
        rate_per_sec: args.shadow_rate,
    };
    let state = Arc::new(
        AppState::new(watcher.subscribe(), upstream, budget, limits, metrics)
            .with_shadow_limits(shadow_limits),
    );
    let shadows = tokio::spawn(crate::infer::shadow::run(state.clone()));
    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let sizing = match &pool {
        Some(pool) => {
            let active = prometheus::IntGauge::new(
                shardline_shared::metrics::ROUTER_SERVING_THREADS_ACTIVE,
                "Serving threads taking client connections (the rest idle until the load needs them)",
            )?;
            let moves = prometheus::IntCounter::new(
                shardline_shared::metrics::ROUTER_CONNECTION_MOVES_TOTAL,
                "Client connections moved between serving threads as their number changed",
            )?;
            registry.register(Box::new(active.clone()))?;
            registry.register(Box::new(moves.clone()))?;
            Some(tokio::spawn(pool.clone().adapt(active, moves)))
        }
        None => None,
    };

    if let Some(l) = metrics_listener {
        spawn_metrics_server(l, registry.clone());
    }

    // One shutdown signal for both listeners.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let grpc = match grpc_listener {
        Some(listener) => {
            info!(address = %listener.local_addr()?, "gRPC serving");
            let grpc = grpc_serving(&config, serving.gate.clone(), grpc_tls);
            let routes = crate::grpc::listen::routes(state.clone(), state.limits.max_body);
            let mut stopping = stopping.clone();
            let stopped = async move {
                let _ = stopping.wait_for(|s| *s).await;
            };
            Some(tokio::spawn(crate::grpc::serve(
                listener,
                routes,
                grpc,
                stopped,
                pool.clone(),
            )))
        }
        None => None,
    };
    info!(address = %listener.local_addr()?, id = %config.id, "router serving");
    let app = app(state.clone());
    crate::http1::serve(listener, state, app, shutdown, pool, serving).await;
    if let Some(grpc) = grpc {
        let _ = grpc.await;
    }
    info!("stopped accepting; in-flight requests finished");
    housekeeping.abort();
    shadows.abort();
    if let Some(s) = sizing {
        s.abort();
    }
    if let Some(c) = certificates {
        c.abort();
    }
    if let Some(c) = controller {
        c.shutdown().await;
    }
    drop(watcher);
    Ok(())
}

/// Descriptors the router keeps for itself beyond client connections and their
/// connections to workers: listeners, etcd, `/metrics`, logs, the runtimes' own.
const RESERVED_DESCRIPTORS: u64 = 128;

/// The connection limits, with `--max-connections` lowered to what the descriptor
/// limit allows: each client connection may hold one connection to a worker, and as
/// many again may wait idle in the pool to workers (capped at the same number).
fn serving(config: &RouterConfig, registry: &Registry) -> anyhow::Result<Serving> {
    let limits = config.conn.fit_to_descriptors(RESERVED_DESCRIPTORS);
    let metrics = ConnMetrics::register(registry)?;
    Ok(Serving {
        hyper: HyperConn::new(limits),
        gate: ConnGate::new(limits.max_connections, metrics),
        tls: None,
    })
}

/// How the gRPC listener serves: under the HTTP listener's connection gate and limits,
/// a call cut off once its message could have arrived at `--body-min-rate` (for a
/// `--max-body` message) and the longest deadline passed.
fn grpc_serving(
    config: &RouterConfig,
    gate: Arc<shardline_service::conn::ConnGate>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> crate::grpc::GrpcServing {
    let args = &config.args;
    crate::grpc::GrpcServing {
        gate,
        limits: config.conn,
        args: args.grpc.clone(),
        tls,
        call_limit: config
            .conn
            .body_allowance(args.max_body)
            .saturating_add(args.max_deadline),
    }
}

/// Keeps per-worker and per-tenant maps (and idle connections) bounded as workers and tenants come and go.
async fn housekeeping(state: Arc<AppState>) {
    let mut rx = state.snapshot.clone();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if rx.changed().await.is_err() {
            return;
        }
        let snap = rx.borrow_and_update().clone();
        state.fleet.retain(|w| snap.workers().contains_key(w));
        state
            .upstream
            .retain(|address| snap.workers().values().any(|w| w.value.address == address));
        state.retain_tenants(|t| snap.tenants().contains_key(t));
    }
}
