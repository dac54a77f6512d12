//! Running a worker: connect to etcd, watch the snapshot, register under a lease,
//! publish the resident-model list, serve HTTP and `/metrics`, and shut down cleanly
//! (deregister first so routers stop sending, then finish in-flight requests).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::Registry;
use shardline_control::{
    ControlMetrics, ControlPlane, EtcdStore, LeaseConfig, Registration, ResidentSet,
    SnapshotWatcher,
};
use shardline_service::conn::{ConnGate, ConnMetrics, HyperConn, serve_app};
use shardline_shared::records::WorkerRecord;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tracing::{info, warn};

use crate::cache::{CacheConfig, ModelCache};
use crate::config::{WorkerArgs, WorkerConfig};
use crate::metrics::WorkerMetrics;
use crate::routes::app;
use crate::state::{AppState, Events, Limits};
use shardline_artifacts::{ArtifactStore, StoreOptions};

use shardline_service::metrics::spawn_metrics_server;

/// Serves a worker configured by a command line (`argv[0]` first, parsed and validated as
/// the binary does), its store opened with `store_options`: how tests and benchmarks run
/// a worker inside their own process with exactly the flags a process would get.
pub async fn serve_command_line(
    args: &[String],
    store_options: StoreOptions,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use clap::Parser as _;
    let config = WorkerArgs::try_parse_from(args)?
        .validate()
        .map_err(|errors| anyhow::anyhow!("invalid configuration: {}", errors.join("; ")))?;
    let store = ArtifactStore::from_url_with(&config.args.store, store_options)?;
    serve(config, store, listener, metrics_listener, shutdown).await
}

/// Runs the worker until `shutdown` completes. `store` is the opened `--store`;
/// `listener` is already bound (tests bind `127.0.0.1:0`); `metrics_listener` serves
/// `/metrics` when given.
pub async fn serve(
    config: WorkerConfig,
    store: ArtifactStore,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let args = &config.args;
    let registry = Registry::new();
    let metrics = WorkerMetrics::register(&registry, args.per_model_metrics)?;
    let control_metrics = ControlMetrics::register(&registry)?;
    metrics.capacity_bytes.set(args.memory_budget as i64);

    let etcd = Arc::new(EtcdStore::connect(&args.etcd).await?);
    let cp = ControlPlane::new(etcd.clone(), config.prefix.clone());
    let watcher = SnapshotWatcher::spawn(etcd, config.prefix.clone(), control_metrics.clone());

    let resident_changed = Arc::new(Notify::new());
    let events = Arc::new(Events {
        metrics: metrics.clone(),
        resident_changed: resident_changed.clone(),
    });
    let cache = ModelCache::with_events(CacheConfig::new(args.memory_budget), events);
    let _sweeper = cache.spawn_idle_sweeper(args.idle_ttl, sweep_interval(args.idle_ttl));
    let limits = Limits {
        max_body: usize::try_from(args.max_body).unwrap_or(usize::MAX),
        max_rows: args.max_batch_rows,
        max_in_flight_per_model: args.max_in_flight_per_model,
        room_wait: Duration::from_secs(5),
        inference_memory: args.inference_memory,
        max_blocking: args.max_blocking.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        max_blocking_queue: args.max_blocking_queue,
    };
    let state = Arc::new(AppState::new(
        watcher.subscribe(),
        cache,
        store,
        metrics.clone(),
        args.internal_token.clone(),
        limits,
        resident_changed.clone(),
    ));

    if let Some(l) = metrics_listener {
        spawn_metrics_server(l, registry.clone());
    }

    let record = WorkerRecord {
        address: config.advertise.clone(),
        capacity_bytes: args.memory_budget,
        used_bytes: 0,
        resident: vec![],
        build_version: env!("CARGO_PKG_VERSION").into(),
        started_at: shardline_control::ops::unix_now(),
    };
    let lease_config = LeaseConfig {
        ttl: args.lease_ttl,
        ..LeaseConfig::default()
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let membership = tokio::spawn(membership(
        Member {
            cp,
            config: config.clone(),
            record,
            lease: lease_config,
            metrics: control_metrics,
            state: state.clone(),
            watcher,
        },
        stop_rx,
    ));

    let drain_state = state.clone();
    let graceful = async move {
        shutdown.await;
        info!("shutting down: deregistering, then finishing in-flight requests");
        drain_state.ready.store(false, Ordering::Relaxed);
        let _ = stop_tx.send(());
        // Routers stop choosing this worker once the lease is revoked.
        let _ = tokio::time::timeout(Duration::from_secs(5), membership).await;
    };
    let limits = config.conn.fit_to_descriptors(RESERVED_DESCRIPTORS);
    let gate = ConnGate::new(limits.max_connections, ConnMetrics::register(&registry)?);
    info!(address = %config.advertise, id = %config.id, "worker serving");
    serve_app(listener, app(state), HyperConn::new(limits), gate, graceful).await;
    Ok(())
}

/// Descriptors the worker keeps for itself beyond client connections: listeners, etcd,
/// `/metrics`, logs; the other half of the rest is for its store and model files.
const RESERVED_DESCRIPTORS: u64 = 128;

fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

struct Member {
    cp: ControlPlane,
    config: WorkerConfig,
    record: WorkerRecord,
    lease: LeaseConfig,
    metrics: ControlMetrics,
    state: Arc<AppState>,
    watcher: SnapshotWatcher,
}

/// Registers (retrying until etcd answers), keeps the resident list published, and
/// revokes the lease when told to stop.
async fn membership(m: Member, mut stop: oneshot::Receiver<()>) {
    let Member {
        cp,
        config,
        record,
        lease,
        metrics,
        state,
        watcher,
    } = m;
    let mut backoff = Duration::from_millis(200);
    let registration = loop {
        let attempt = Registration::start(&cp, &config.id, record.clone(), lease, metrics.clone());
        tokio::select! {
            _ = &mut stop => return,
            result = attempt => match result {
                Ok(r) => break r,
                Err(e) => warn!(error = %e, retry_in = ?backoff, "worker registration failed"),
            },
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    };
    tokio::select! {
        _ = &mut stop => {
            let _ = registration.shutdown().await;
            return;
        }
        _ = watcher.ready() => {}
    }
    state.ready.store(true, Ordering::Relaxed);
    info!(id = %config.id, "registered and ready");
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = state.resident_changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let usage = state.cache.usage();
        let resident: ResidentSet = state
            .cache
            .resident()
            .into_iter()
            .map(|r| ((r.key.model, r.key.version), r.bytes))
            .collect();
        state.metrics.models_resident.set(resident.len() as i64);
        state
            .metrics
            .resident_bytes
            .set((usage.resident_bytes + usage.reserved_bytes) as i64);
        // Only the difference from what was last written reaches etcd.
        registration.set_resident(resident);
    }
    if let Err(e) = registration.shutdown().await {
        warn!(error = %e, "deregistration failed; the lease will expire");
    }
}
