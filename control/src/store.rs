//! The small key/value interface the control plane needs from etcd.
//!
//! [`KvStore`] is implemented by [`crate::etcd::EtcdStore`] (the real thing) and by
//! [`crate::memory::MemStore`] (an in-memory double for unit tests of logic built on
//! top). Both pass the same conformance suite (`control/tests/conformance.rs`).
//! The semantics follow etcd's: a global revision, per-key `mod_revision`,
//! all-or-nothing conditional transactions, leases, and prefix watches that start at a
//! revision and fail with [`WatchItem::Compacted`] when that revision is gone.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    /// Lease the key is attached to (0 = none).
    pub lease: i64,
}

/// A prefix listing and the revision it was taken at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete { key: String, mod_revision: i64 },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }

    pub fn mod_revision(&self) -> i64 {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// What a watch stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Events in revision order (possibly none: a progress notification), and the
    /// store revision the stream has reached.
    Batch { revision: i64, events: Vec<Event> },
    /// The requested start revision was compacted away: re-list, then watch again.
    Compacted { compact_revision: i64 },
}

/// A watch: ends (or yields an error) when the connection is lost.
pub type WatchStream = BoxStream<'static, Result<WatchItem, StoreError>>;

/// What must hold for a conditional write to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No condition.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist with exactly this `mod_revision`.
    ModRevision(i64),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        /// Attach the key to this lease (0 = none).
        lease: i64,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }
}

/// A conditional transaction: every check holds and every op applies, or nothing does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub checks: Vec<(String, Precondition)>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check(mut self, key: impl Into<String>, pre: Precondition) -> Self {
        if pre != Precondition::Any {
            self.checks.push((key.into(), pre));
        }
        self
    }

    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

/// A transaction's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Applied; the store is now at this revision.
    Applied { revision: i64 },
    /// A precondition failed; nothing was written.
    Refused,
}

/// Which store history a client is talking to, and how far it has gone: what the
/// watcher and the lease keeper compare to notice that etcd was restored from a backup
/// (the revision went back, or the cluster is another one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// etcd's cluster id: a restore with a new `--initial-cluster-token` changes it.
    pub cluster: u64,
    /// The store's current revision (read linearizably).
    pub revision: i64,
}

impl Position {
    /// Whether a store now at `self` has lost history that a client saw at `cluster` up
    /// to `revision`: another cluster, or a revision below one already seen.
    pub fn went_back_from(&self, cluster: u64, revision: i64) -> bool {
        self.cluster != cluster || self.revision < revision
    }
}

/// Failures talking to the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time.
    #[error("etcd unreachable at {endpoints}: {reason}")]
    Unavailable { endpoints: String, reason: String },
    /// The lease does not exist (expired or revoked).
    #[error("lease {0:x} not found")]
    LeaseNotFound(i64),
    /// etcd raised its NOSPACE alarm (its database reached `--quota-backend-bytes`):
    /// it refuses every write until an operator frees space and disarms the alarm.
    /// Reads, watches and lease keep-alives still work.
    #[error(
        "etcd is out of space (NOSPACE alarm at {endpoints}): nothing was written; compact and \
         defragment etcd or raise --quota-backend-bytes, then run `etcdctl alarm disarm` \
         (docs/operations.md)"
    )]
    NoSpace { endpoints: String },
    /// The store answered with an error.
    #[error("etcd request failed: {0}")]
    Failed(String),
}

/// The operations the control plane uses.
#[async_trait]
pub trait KvStore: Send + Sync + std::fmt::Debug + 'static {
    /// One key, if present.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// The cluster and its current revision, read linearizably (so never behind a
    /// revision any client has seen from this cluster).
    async fn position(&self) -> Result<Position, StoreError>;
    /// Every key under `prefix`, consistently at one revision.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;
    /// The same listing handed to `page` a part at a time (each part dropped before the
    /// next is read, where the store can), so a large prefix is never held whole;
    /// returns the revision. On an error, the pages already handed on are incomplete.
    async fn list_pages(
        &self,
        prefix: &str,
        page: &mut (dyn FnMut(Vec<KeyValue>) + Send),
    ) -> Result<i64, StoreError> {
        let listing = self.list(prefix).await?;
        page(listing.kvs);
        Ok(listing.revision)
    }
    /// Changes under `prefix` from `start_revision` (inclusive) on.
    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream, StoreError>;
    /// A conditional, all-or-nothing transaction.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;
    /// A new lease with the given time to live.
    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError>;
    /// Refreshes a lease; returns its new time to live, or `LeaseNotFound`.
    async fn keep_alive(&self, lease: i64) -> Result<Duration, StoreError>;
    /// Revokes a lease, deleting its keys. Revoking a missing lease is not an error.
    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError>;
    /// Discards history before `revision` (watches from before it then fail).
    async fn compact(&self, revision: i64) -> Result<(), StoreError>;
}
