//! Helpers shared by the control plane's integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use shardline_control::store::{KvStore, Op, Txn};
use shardline_shared::records::WorkerRecord;

/// Polls `check` every 50 ms until it returns `Some`, failing the test after 15 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
