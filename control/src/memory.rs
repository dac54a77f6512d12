//! An in-memory [`KvStore`] with etcd's semantics, for unit tests of logic built on the
//! control plane.
//!
//! Revisions, `mod_revision`, conditional transactions, prefix watches from a revision,
//! compaction and leases behave as etcd's do (the conformance suite checks both). Leases
//! never expire on their own: tests call [`MemStore::expire_lease`], so nothing sleeps.
//! [`MemStore::set_down`] makes every call fail as if etcd were unreachable.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::store::{
    Event, KeyValue, KvStore, Listing, Op, Position, Precondition, StoreError, Txn, TxnOutcome,
    WatchItem, WatchStream,
};

/// The cluster id a [`MemStore`] reports.
pub const MEM_CLUSTER: u64 = 1;

#[derive(Debug, Default)]
struct State {
    revision: i64,
    data: BTreeMap<String, KeyValue>,
    /// Every change with its revision, from `compacted` on (as etcd keeps it).
    history: Vec<(i64, Event)>,
    compacted: i64,
    leases: HashMap<i64, Duration>,
    next_lease: i64,
}

/// The in-memory store. Clones share state.
#[derive(Debug, Clone)]
pub struct MemStore {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<(i64, Vec<Event>)>,
    down: Arc<AtomicBool>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self {
            state: Arc::default(),
            changes,
            down: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a test panicked elsewhere; the data is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                endpoints: "memory".into(),
                reason: "connection refused".into(),
            });
        }
        Ok(())
    }

    /// Simulates etcd going away (`true`) or coming back (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Expires a lease now, deleting its keys, as etcd does when its TTL runs out.
    pub fn expire_lease(&self, lease: i64) {
        let mut st = self.lock();
        if st.leases.remove(&lease).is_none() {
            return;
        }
        let keys: Vec<String> = st
            .data
            .values()
            .filter(|kv| kv.lease == lease)
            .map(|kv| kv.key.clone())
            .collect();
        let ops = keys.into_iter().map(Op::delete).collect();
        self.apply(&mut st, ops);
    }

    fn apply(&self, st: &mut State, ops: Vec<Op>) -> i64 {
        let rev = st.revision + 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        mod_revision: rev,
                        lease,
                    };
                    st.data.insert(key, kv.clone());
                    events.push(Event::Put(kv));
                }
                Op::Delete { key } => {
                    if st.data.remove(&key).is_some() {
                        events.push(Event::Delete {
                            key,
                            mod_revision: rev,
                        });
                    }
                }
            }
        }
        if events.is_empty() {
            return st.revision;
        }
        st.revision = rev;
        st.history.extend(events.iter().cloned().map(|e| (rev, e)));
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send((rev, events));
        rev
    }
}

#[async_trait]
impl KvStore for MemStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.check_up()?;
        Ok(self.lock().data.get(key).cloned())
    }

    async fn position(&self) -> Result<Position, StoreError> {
        self.check_up()?;
        Ok(Position {
            cluster: MEM_CLUSTER,
            revision: self.lock().revision,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.check_up()?;
        let st = self.lock();
        let kvs = st
            .data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok(Listing {
            revision: st.revision,
            kvs,
        })
    }

    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream, StoreError> {
        self.check_up()?;
        let st = self.lock();
        if start_revision < st.compacted {
            let item = WatchItem::Compacted {
                compact_revision: st.compacted,
            };
            return Ok(futures::stream::iter([Ok(item)]).boxed());
        }
        let prefix = prefix.to_owned();
        let mut backlog: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
        for (rev, e) in st.history.iter().filter(|(r, _)| *r >= start_revision) {
            backlog.entry(*rev).or_default().push(e.clone());
        }
        let rx = self.changes.subscribe();
        drop(st);
        let down = self.down.clone();
        let live = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(item) => Some((Ok(item), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Some((Err(StoreError::Failed("watcher fell behind".into())), rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        let stream = futures::stream::iter(backlog.into_iter().map(Ok))
            .chain(live)
            .take_while(move |_| futures::future::ready(!down.load(Ordering::SeqCst)))
            .filter_map(move |item| {
                let out = item.map(|(revision, events)| {
                    let events: Vec<Event> = events
                        .into_iter()
                        .filter(|e| e.key().starts_with(&prefix))
                        .collect();
                    (!events.is_empty()).then_some(WatchItem::Batch { revision, events })
                });
                futures::future::ready(out.transpose())
            });
        Ok(stream.boxed())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.check_up()?;
        let mut st = self.lock();
        let holds = txn.checks.iter().all(|(key, pre)| match pre {
            Precondition::Any => true,
            Precondition::Absent => !st.data.contains_key(key),
            Precondition::ModRevision(r) => st.data.get(key).map(|kv| kv.mod_revision) == Some(*r),
        });
        if !holds {
            return Ok(TxnOutcome::Refused);
        }
        if let Some(lease) = txn.ops.iter().find_map(|op| match op {
            Op::Put { lease, .. } if *lease != 0 && !st.leases.contains_key(lease) => Some(*lease),
            _ => None,
        }) {
            return Err(StoreError::LeaseNotFound(lease));
        }
        let revision = self.apply(&mut st, txn.ops);
        Ok(TxnOutcome::Applied { revision })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        self.check_up()?;
        let mut st = self.lock();
        st.next_lease += 1;
        let id = st.next_lease;
        st.leases.insert(id, ttl);
        Ok(id)
    }

    async fn keep_alive(&self, lease: i64) -> Result<Duration, StoreError> {
        self.check_up()?;
        self.lock()
            .leases
            .get(&lease)
            .copied()
            .ok_or(StoreError::LeaseNotFound(lease))
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        self.check_up()?;
        self.expire_lease(lease);
        Ok(())
    }

    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.check_up()?;
        let mut st = self.lock();
        if revision > st.revision {
            return Err(StoreError::Failed(
                "mvcc: required revision is a future revision".into(),
            ));
        }
        st.compacted = st.compacted.max(revision);
        let keep_from = st.compacted;
        st.history.retain(|(r, _)| *r >= keep_from);
        Ok(())
    }
}
