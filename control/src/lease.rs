//! Worker membership: a `workers/<id>` record held under a lease and kept alive.
//!
//! [`Registration::start`] grants a lease, writes the record and spawns a keeper that
//! refreshes the lease every TTL/3. If the lease is lost (etcd was unreachable for longer
//! than the TTL, or someone revoked it) the keeper grants a new one and writes the
//! record again, so a worker reappears on its own once etcd is back. Record updates
//! (the resident-model list) are throttled to one write per `min_update_interval`.
//! [`Registration::shutdown`] revokes the lease so routers stop sending work at once;
//! merely dropping a registration stops the keeper and lets the lease expire.

use std::sync::Arc;
use std::time::Duration;

use shardline_shared::ids::WorkerId;
use shardline_shared::keys::Key;
use shardline_shared::records::WorkerRecord;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::metrics::ControlMetrics;
use crate::ops::{ControlPlane, OpError};
use crate::store::{KvStore, Op, StoreError, Txn};

/// Timing of a registration.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    pub ttl: Duration,
    /// At most one record write per this interval (besides re-registrations).
    pub min_update_interval: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_update_interval: Duration::from_secs(1),
        }
    }
}

/// A live registration; see the module docs.
#[derive(Debug)]
pub struct Registration {
    record: watch::Sender<WorkerRecord>,
    lease: watch::Receiver<i64>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Keeper {
    store: Arc<dyn KvStore>,
    key: String,
    config: LeaseConfig,
    metrics: ControlMetrics,
    lease: watch::Sender<i64>,
}

impl Keeper {
    async fn register(&self, record: &WorkerRecord) -> Result<i64, StoreError> {
        let lease = self.store.grant_lease(self.config.ttl).await?;
        self.put(lease, record).await?;
        self.metrics.lease_registrations.inc();
        self.lease.send_replace(lease);
        Ok(lease)
    }

    async fn put(&self, lease: i64, record: &WorkerRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record).map_err(|e| StoreError::Failed(e.to_string()))?;
        let op = Op::Put {
            key: self.key.clone(),
            value,
            lease,
        };
        self.store.txn(Txn::new().op(op)).await.map(|_| ())
    }
}

impl Registration {
    /// Registers worker `id` and starts keeping it alive. Fails if etcd cannot be
    /// reached now (a worker should not report ready before it is registered).
    pub async fn start(
        cp: &ControlPlane,
        id: &WorkerId,
        record: WorkerRecord,
        config: LeaseConfig,
        metrics: ControlMetrics,
    ) -> Result<Self, OpError> {
        let (lease_tx, lease_rx) = watch::channel(0);
        let keeper = Keeper {
            store: cp.store().clone(),
            key: cp.key(&Key::Worker(id.clone())),
            config,
            metrics,
            lease: lease_tx,
        };
        let lease = keeper.register(&record).await?;
        info!(worker = %id, lease = format_args!("{lease:x}"), "registered");
        let (record_tx, record_rx) = watch::channel(record);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(keep(keeper, lease, record_rx, stop_rx));
        Ok(Self {
            record: record_tx,
            lease: lease_rx,
            stop: Some(stop_tx),
            task,
        })
    }

    /// Replaces the published record (written within `min_update_interval`).
    pub fn update(&self, record: WorkerRecord) {
        self.record.send_replace(record);
    }

    /// Changes part of the published record.
    pub fn modify(&self, f: impl FnOnce(&mut WorkerRecord)) {
        self.record.send_modify(f);
    }

    /// The lease currently held (changes after a re-registration).
    pub fn lease(&self) -> i64 {
        *self.lease.borrow()
    }

    /// Stops the keeper and revokes the lease, removing the record immediately.
    pub async fn shutdown(mut self) -> Result<(), OpError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        Ok(())
    }
}

async fn keep(
    keeper: Keeper,
    mut lease: i64,
    mut record: watch::Receiver<WorkerRecord>,
    mut stop: oneshot::Receiver<()>,
) {
    let refresh = keeper.config.ttl / 3;
    let mut next_refresh = tokio::time::Instant::now() + refresh;
    let mut dirty = false;
    let mut next_write = tokio::time::Instant::now();
    loop {
        let wake = if dirty {
            next_refresh.min(next_write)
        } else {
            next_refresh
        };
        tokio::select! {
            _ = &mut stop => {
                if let Err(e) = keeper.store.revoke_lease(lease).await {
                    warn!(error = %e, "could not revoke the worker lease; it will expire");
                }
                return;
            }
            changed = record.changed(), if !dirty => {
                if changed.is_err() {
                    return;
                }
                dirty = true;
                continue;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = tokio::time::Instant::now();
        if now >= next_refresh {
            next_refresh = now + refresh;
            match keeper.store.keep_alive(lease).await {
                Ok(_) => {}
                Err(StoreError::LeaseNotFound(_)) => {
                    warn!(
                        lease = format_args!("{lease:x}"),
                        "worker lease lost; registering again"
                    );
                    let current = record.borrow_and_update().clone();
                    match keeper.register(&current).await {
                        Ok(new) => {
                            lease = new;
                            dirty = false;
                        }
                        Err(e) => warn!(error = %e, "re-registration failed; will retry"),
                    }
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "lease keep-alive failed; will retry");
                    continue;
                }
            }
        }
        if dirty && now >= next_write {
            let current = record.borrow_and_update().clone();
            match keeper.put(lease, &current).await {
                Ok(()) => {
                    dirty = false;
                    next_write = now + keeper.config.min_update_interval;
                }
                Err(StoreError::LeaseNotFound(_)) => next_refresh = now,
                Err(e) => {
                    warn!(error = %e, "publishing the worker record failed; will retry");
                    next_write = now + keeper.config.min_update_interval;
                }
            }
        }
    }
}
