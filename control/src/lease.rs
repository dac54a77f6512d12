//! Worker membership: a `workers/<id>` record held under a lease and kept alive.
//!
//! [`Registration::start`] grants a lease, writes the record and spawns a keeper that
//! refreshes the lease every TTL/3. If the lease is lost (etcd was unreachable for longer
//! than the TTL, or someone revoked it) the keeper grants a new one and writes the
//! record again, so a worker reappears on its own once etcd is back.
//!
//! Resident models are published one key each, `resident/<worker>/<tenant>/<model>/
//! <version>`, under the same lease ([`Registration::set_resident`]): the keeper writes
//! only the difference from what it last wrote (puts for loads, deletes for evictions,
//! at most [`TXN_OPS`] per transaction), at most once per `min_update_interval`. A
//! steady worker therefore writes nothing but lease keep-alives, and a load costs every
//! watcher one small event, however large the fleet. Losing the lease loses the keys
//! with it; the keeper then writes the whole set again under the new lease.
//!
//! etcd restored from a backup may still hold the lease (leases are in the backup) while
//! it lost what the keeper wrote after the backup was taken. After each keep-alive the
//! keeper therefore asks where the store is ([`KvStore::position`]): another cluster,
//! or a revision below the keeper's last write, means history went back, and it
//! registers again under a fresh lease (writing the record and every resident key) and
//! revokes the old lease, which takes any stale resident keys with it.
//! [`Registration::shutdown`] revokes the lease so routers stop sending work at once;
//! merely dropping a registration stops the keeper and lets the lease expire.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shardline_shared::ids::{ModelKey, VersionId, WorkerId};
use shardline_shared::keys::{Key, Prefix};
use shardline_shared::records::{ResidentRecord, WorkerRecord};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::metrics::ControlMetrics;
use crate::ops::{ControlPlane, OpError};
use crate::store::{KvStore, Op, StoreError, Txn, TxnOutcome};

/// Most operations in one resident-key transaction (etcd refuses more than
/// `--max-txn-ops`, 128 by default).
pub const TXN_OPS: usize = 64;

/// The model versions a worker has loaded, with the bytes each holds.
pub type ResidentSet = BTreeMap<(ModelKey, VersionId), u64>;

/// Timing of a registration.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    pub ttl: Duration,
    /// At most one round of record and resident-key writes per this interval (besides
    /// re-registrations).
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
    resident: watch::Sender<ResidentSet>,
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
    prefix: Prefix,
    worker: WorkerId,
    config: LeaseConfig,
    metrics: ControlMetrics,
    lease: watch::Sender<i64>,
}

/// Where the keeper's last write landed: a store that went back from here lost it.
#[derive(Debug, Clone, Copy)]
struct Written {
    cluster: u64,
    revision: i64,
}

impl Written {
    fn at(&mut self, outcome: TxnOutcome) {
        if let TxnOutcome::Applied { revision } = outcome {
            self.revision = self.revision.max(revision);
        }
    }
}

impl Keeper {
    async fn register(&self, record: &WorkerRecord) -> Result<(i64, Written), StoreError> {
        let cluster = self.store.position().await?.cluster;
        let lease = self.store.grant_lease(self.config.ttl).await?;
        let mut written = Written {
            cluster,
            revision: 0,
        };
        written.at(self.put(lease, record).await?);
        self.metrics.lease_registrations.inc();
        self.lease.send_replace(lease);
        Ok((lease, written))
    }

    async fn put(&self, lease: i64, record: &WorkerRecord) -> Result<TxnOutcome, StoreError> {
        let value = serde_json::to_vec(record).map_err(|e| StoreError::Failed(e.to_string()))?;
        let op = Op::Put {
            key: self.key.clone(),
            value,
            lease,
        };
        self.store.txn(Txn::new().op(op)).await
    }

    /// Brings the resident keys from `published` to `wanted`, one transaction of at
    /// most [`TXN_OPS`] operations at a time; `published` follows each one that lands.
    async fn sync_resident(
        &self,
        lease: i64,
        published: &mut ResidentSet,
        wanted: &ResidentSet,
        written: &mut Written,
    ) -> Result<(), StoreError> {
        let changes = resident_changes(published, wanted);
        for chunk in changes.chunks(TXN_OPS) {
            let mut txn = Txn::new();
            for ((model, version), bytes) in chunk {
                let key = self.prefix.key(&Key::Resident(
                    self.worker.clone(),
                    model.clone(),
                    version.clone(),
                ));
                txn = txn.op(match bytes {
                    Some(bytes) => Op::Put {
                        key,
                        value: serde_json::to_vec(&ResidentRecord { bytes: *bytes })
                            .map_err(|e| StoreError::Failed(e.to_string()))?,
                        lease,
                    },
                    None => Op::Delete { key },
                });
            }
            written.at(self.store.txn(txn).await?);
            for (entry, bytes) in chunk {
                match bytes {
                    Some(b) => published.insert(entry.clone(), *b),
                    None => published.remove(entry),
                };
            }
        }
        Ok(())
    }
}

/// What to write to turn `published` into `wanted`: `Some(bytes)` to put, `None` to
/// delete.
fn resident_changes(
    published: &ResidentSet,
    wanted: &ResidentSet,
) -> Vec<((ModelKey, VersionId), Option<u64>)> {
    let puts = wanted
        .iter()
        .filter(|(k, b)| published.get(*k) != Some(*b))
        .map(|(k, b)| (k.clone(), Some(*b)));
    let deletes = published
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .map(|k| (k.clone(), None));
    puts.chain(deletes).collect()
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
            prefix: cp.prefix().clone(),
            worker: id.clone(),
            config,
            metrics,
            lease: lease_tx,
        };
        let (lease, written) = keeper.register(&record).await?;
        info!(worker = %id, lease = format_args!("{lease:x}"), "registered");
        let (record_tx, record_rx) = watch::channel(record);
        let (resident_tx, resident_rx) = watch::channel(ResidentSet::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(keep(
            keeper,
            (lease, written),
            record_rx,
            resident_rx,
            stop_rx,
        ));
        Ok(Self {
            record: record_tx,
            resident: resident_tx,
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

    /// Replaces the set of resident models published under `resident/<worker>/…`
    /// (the difference is written within `min_update_interval`).
    pub fn set_resident(&self, resident: ResidentSet) {
        self.resident.send_if_modified(|current| {
            let changed = *current != resident;
            *current = resident;
            changed
        });
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
    (mut lease, mut written): (i64, Written),
    mut record: watch::Receiver<WorkerRecord>,
    mut resident: watch::Receiver<ResidentSet>,
    mut stop: oneshot::Receiver<()>,
) {
    let refresh = keeper.config.ttl / 3;
    let mut next_refresh = tokio::time::Instant::now() + refresh;
    let (mut record_dirty, mut resident_dirty) = (false, false);
    let mut published = ResidentSet::new();
    let mut next_write = tokio::time::Instant::now();
    loop {
        let dirty = record_dirty || resident_dirty;
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
            changed = record.changed(), if !record_dirty => {
                if changed.is_err() {
                    return;
                }
                record_dirty = true;
                continue;
            }
            changed = resident.changed(), if !resident_dirty => {
                if changed.is_err() {
                    return;
                }
                resident_dirty = true;
                continue;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = tokio::time::Instant::now();
        if now >= next_refresh {
            next_refresh = now + refresh;
            let alive = match keeper.store.keep_alive(lease).await {
                Ok(_) => keeper.store.position().await,
                Err(e) => Err(e),
            };
            // Whether to register again (`Some`), and whether the old lease must then be
            // revoked (a restored store kept it, with resident keys it may have wrong) or
            // is gone already, with its keys.
            let again = match alive {
                Ok(at) if at.went_back_from(written.cluster, written.revision) => {
                    warn!(
                        lease = format_args!("{lease:x}"),
                        written = written.revision,
                        store_revision = at.revision,
                        "etcd went back (restored from a backup?); registering again"
                    );
                    Some(true)
                }
                Ok(_) => None,
                Err(StoreError::LeaseNotFound(_)) => {
                    warn!(
                        lease = format_args!("{lease:x}"),
                        "worker lease lost; registering again"
                    );
                    Some(false)
                }
                Err(e) => {
                    warn!(error = %e, "lease keep-alive failed; will retry");
                    continue;
                }
            };
            if let Some(revoke_old) = again {
                let current = record.borrow_and_update().clone();
                match keeper.register(&current).await {
                    Ok((new, w)) => {
                        if revoke_old {
                            if let Err(e) = keeper.store.revoke_lease(lease).await {
                                warn!(error = %e, "could not revoke the old lease; it will expire");
                            }
                            next_write = now;
                        }
                        (lease, written) = (new, w);
                        record_dirty = false;
                        // Every resident key is written again under the new lease.
                        published.clear();
                        resident_dirty = true;
                    }
                    Err(e) => warn!(error = %e, "re-registration failed; will retry"),
                }
                continue;
            }
        }
        if !(dirty && now >= next_write) {
            continue;
        }
        next_write = now + keeper.config.min_update_interval;
        let publish = async {
            if record_dirty {
                let current = record.borrow_and_update().clone();
                written.at(keeper.put(lease, &current).await?);
                record_dirty = false;
            }
            if resident_dirty {
                let wanted = resident.borrow_and_update().clone();
                keeper
                    .sync_resident(lease, &mut published, &wanted, &mut written)
                    .await?;
                resident_dirty = false;
            }
            Ok::<(), StoreError>(())
        };
        match publish.await {
            Ok(()) => {}
            Err(StoreError::LeaseNotFound(_)) => next_refresh = now,
            Err(e) => warn!(error = %e, "publishing the worker record failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_shared::ids::{ModelName, TenantId};

    fn entry(model: &str, version: &str) -> (ModelKey, VersionId) {
        let key = ModelKey::new(TenantId::new("t").unwrap(), ModelName::new(model).unwrap());
        (key, VersionId::new(version).unwrap())
    }

    #[test]
    fn resident_changes_are_the_difference() {
        let published = ResidentSet::from([(entry("a", "1"), 10), (entry("b", "1"), 20)]);
        let wanted = ResidentSet::from([
            (entry("a", "1"), 10),
            (entry("b", "1"), 25),
            (entry("c", "2"), 5),
        ]);
        let changes = resident_changes(&published, &wanted);
        assert_eq!(
            changes,
            vec![(entry("b", "1"), Some(25)), (entry("c", "2"), Some(5))]
        );
        let changes = resident_changes(&wanted, &ResidentSet::new());
        assert_eq!(changes.len(), 3);
        assert!(changes.iter().all(|(_, b)| b.is_none()));
        assert!(resident_changes(&wanted, &wanted).is_empty());
    }
}
