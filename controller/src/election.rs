//! Leader election among router replicas, after etcd's election recipe.
//!
//! Every router is a *candidate*: it grants a lease and writes
//! `<prefix>/controller/<lease id in hex>` = its router id under that lease. Keys are
//! written once, so a key's `mod_revision` is its creation revision, and the leader is
//! the candidate whose key has the smallest one ([`leader`]). When the leader dies its
//! lease expires, etcd deletes its key, and the next candidate in line leads.
//!
//! A candidate's [`Fence`] (its key and creation revision) is published through a
//! `watch` channel while its lease is believed alive; every controller write checks
//! it, so a deposed leader can never write. The keeper refreshes the lease every
//! TTL/3; when etcd has not confirmed the lease for a whole TTL the fence is withdrawn,
//! and when the lease is gone the keeper grants a new one and registers again (at the
//! back of the line). [`Candidacy::shutdown`] revokes the lease, handing leadership over
//! at once; dropping a candidacy merely stops the keeper and lets the lease expire.

use std::time::Duration;

use shardline_control::store::{Op, Precondition, StoreError, Txn, TxnOutcome};
use shardline_control::{ControlPlane, OpError};
use shardline_shared::keys::Key;
use shardline_shared::snapshot::{Snapshot, Versioned};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::executor::Fence;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The leading candidate of `snap`: the key with the smallest `mod_revision` (then name).
pub fn leader(snap: &Snapshot) -> Option<(&String, &Versioned<String>)> {
    snap.controllers()
        .iter()
        .min_by_key(|(key, v)| (v.mod_revision, key.as_str()))
}

/// Whether the candidate holding `fence` leads in `snap`.
pub fn is_leader(snap: &Snapshot, fence: Option<&Fence>) -> bool {
    let (Some(fence), Some((name, v))) = (fence, leader(snap)) else {
        return false;
    };
    v.mod_revision == fence.mod_revision
        && snap.prefix().key(&Key::Controller(name.clone())) == fence.key
}

/// One router's candidacy; see the module docs.
#[derive(Debug)]
pub struct Candidacy {
    fence: watch::Receiver<Option<Fence>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for Candidacy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Candidacy {
    /// Starts standing for election as `id` with leases of `ttl`; registration is
    /// retried in the background until etcd answers.
    pub fn start(cp: ControlPlane, id: String, ttl: Duration) -> Self {
        let (tx, rx) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(keep(Keeper { cp, id, ttl, tx }, stop_rx));
        Self {
            fence: rx,
            stop: Some(stop_tx),
            task,
        }
    }

    /// The current fence (`None` while not registered or the lease is in doubt).
    pub fn fence(&self) -> watch::Receiver<Option<Fence>> {
        self.fence.clone()
    }

    /// Stops the keeper and revokes the lease, deleting the candidate key.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

struct Keeper {
    cp: ControlPlane,
    id: String,
    ttl: Duration,
    tx: watch::Sender<Option<Fence>>,
}

impl Keeper {
    async fn register(&self) -> Result<(i64, Fence), OpError> {
        let store = self.cp.store();
        let lease = store.grant_lease(self.ttl).await?;
        let key = self.cp.key(&Key::Controller(format!("{lease:x}")));
        let txn = Txn::new()
            .check(key.clone(), Precondition::Absent)
            .op(Op::Put {
                key: key.clone(),
                value: self.id.clone().into_bytes(),
                lease,
            });
        match store.txn(txn).await {
            Ok(TxnOutcome::Applied { revision }) => Ok((
                lease,
                Fence {
                    key,
                    mod_revision: revision,
                },
            )),
            Ok(TxnOutcome::Refused) => {
                let _ = store.revoke_lease(lease).await;
                Err(OpError::Conflict(format!(
                    "candidate key {key} already exists"
                )))
            }
            Err(e) => {
                let _ = store.revoke_lease(lease).await;
                Err(e.into())
            }
        }
    }
}

async fn keep(keeper: Keeper, mut stop: oneshot::Receiver<()>) {
    let refresh = keeper.ttl / 3;
    let mut backoff = BACKOFF_MIN;
    loop {
        let registered = tokio::select! {
            _ = &mut stop => return,
            r = keeper.register() => r,
        };
        let (lease, fence) = match registered {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "controller candidacy registration failed");
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        info!(id = %keeper.id, key = %fence.key, revision = fence.mod_revision,
            "standing for placement controller");
        keeper.tx.send_replace(Some(fence.clone()));
        let mut confirmed = Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop => {
                    keeper.tx.send_replace(None);
                    if let Err(e) = keeper.cp.store().revoke_lease(lease).await {
                        warn!(error = %e, "could not revoke the controller lease; it will expire");
                    }
                    return;
                }
                _ = tokio::time::sleep(refresh) => {}
            }
            match keeper.cp.store().keep_alive(lease).await {
                Ok(_) => {
                    confirmed = Instant::now();
                    keeper.tx.send_if_modified(|f| {
                        let changed = f.is_none();
                        *f = Some(fence.clone());
                        changed
                    });
                }
                Err(StoreError::LeaseNotFound(_)) => {
                    warn!(
                        lease = format_args!("{lease:x}"),
                        "controller lease lost; standing again"
                    );
                    keeper.tx.send_replace(None);
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "controller lease keep-alive failed; will retry");
                    if confirmed.elapsed() + refresh >= keeper.ttl {
                        keeper.tx.send_replace(None);
                    }
                }
            }
        }
    }
}
