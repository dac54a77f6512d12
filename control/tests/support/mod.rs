//! Helpers shared by the control plane's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shardline_control::EtcdStore;
use shardline_control::store::{
    KeyValue, KvStore, Listing, Op, Position, StoreError, Txn, TxnOutcome, WatchStream,
};
use shardline_shared::records::WorkerRecord;
use shardline_testkit::EtcdProcess;
use tokio::sync::watch;

/// A fresh single-member etcd and a store connected to it.
pub async fn etcd() -> (EtcdProcess, Arc<EtcdStore>) {
    let etcd = EtcdProcess::start().await.expect("start etcd");
    let store = EtcdStore::connect(&[etcd.endpoint()])
        .await
        .expect("connect");
    (etcd, Arc::new(store))
}

pub fn worker_record() -> WorkerRecord {
    WorkerRecord {
        address: "127.0.0.1:9100".into(),
        capacity_bytes: 1 << 30,
        used_bytes: 0,
        resident: vec![],
        build_version: env!("CARGO_PKG_VERSION").into(),
        started_at: 1,
    }
}

/// Writes raw bytes at `key`, bypassing every typed check (as a careless operator might).
pub async fn put_raw(store: &dyn KvStore, key: &str, value: &[u8]) {
    store
        .txn(Txn::new().op(Op::put(key, value.to_vec())))
        .await
        .expect("raw put");
}

/// A store whose watches can be cut and held off, so a test can compact etcd while the
/// watcher is away. Everything else goes straight to the real etcd.
#[derive(Debug)]
pub struct Gated {
    pub inner: Arc<EtcdStore>,
    pub open: watch::Sender<bool>,
}

impl Gated {
    /// Open: watches go through until `open` is set to `false`.
    pub fn new(inner: Arc<EtcdStore>) -> Self {
        let (open, _) = watch::channel(true);
        Self { inner, open }
    }
}

#[async_trait]
impl KvStore for Gated {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn position(&self) -> Result<Position, StoreError> {
        self.inner.position().await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.list(prefix).await
    }
    async fn list_pages(
        &self,
        prefix: &str,
        page: &mut (dyn FnMut(Vec<KeyValue>) + Send),
    ) -> Result<i64, StoreError> {
        self.inner.list_pages(prefix, page).await
    }
    async fn watch(&self, prefix: &str, start: i64) -> Result<WatchStream, StoreError> {
        if !*self.open.borrow() {
            return Err(StoreError::Unavailable {
                endpoints: "gated".into(),
                reason: "closed by the test".into(),
            });
        }
        let mut rx = self.open.subscribe();
        let inner = self.inner.watch(prefix, start).await?;
        let closed = async move {
            let _ = rx.wait_for(|open| !open).await;
        };
        use futures::StreamExt;
        Ok(inner.take_until(Box::pin(closed)).boxed())
    }
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.inner.txn(txn).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: i64) -> Result<Duration, StoreError> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }
    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}
