//! Listings larger than one gRPC message against a real etcd: read whole, page by page,
//! at one revision (a consistent cut while writes go on), and a watched snapshot of
//! thousands of tenants that becomes ready.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use shardline_control::etcd::LIST_PAGE;
use shardline_control::store::{KvStore, Op, Txn};
use shardline_control::{ControlMetrics, EtcdStore, SnapshotWatcher};
use shardline_shared::keys::Prefix;
use shardline_testkit::EtcdProcess;

/// etcd-client's default gRPC decoding limit, which one unpaginated range used to hit.
const OLD_MESSAGE_LIMIT: usize = 4 << 20;

async fn etcd() -> (EtcdProcess, Arc<EtcdStore>) {
    let etcd = EtcdProcess::start().await.expect("start etcd");
    let store = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap());
    (etcd, store)
}

/// Writes `(key, value)` pairs in transactions of 100 (etcd allows 128 operations each).
async fn put_all(store: &EtcdStore, kvs: impl IntoIterator<Item = (String, Vec<u8>)>) {
    let kvs: Vec<_> = kvs.into_iter().collect();
    for chunk in kvs.chunks(100) {
        let txn = chunk
            .iter()
            .fold(Txn::new(), |t, (k, v)| t.op(Op::put(k.clone(), v.clone())));
        store.txn(txn).await.unwrap();
    }
}

#[tokio::test]
async fn a_listing_larger_than_one_message_is_read_whole_at_one_revision() {
    let (_etcd, store) = etcd().await;
    let n = 6 * LIST_PAGE as usize + 17;
    let value = vec![b'x'; 1024];
    put_all(
        &store,
        (0..n).map(|i| (format!("/big/a/{i:06}"), value.clone())),
    )
    .await;
    assert!(n * value.len() > OLD_MESSAGE_LIMIT);

    // While the listing pages through the "a" keys, a writer keeps adding keys that sort
    // after them: a page read at a later revision would include some of those.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                store
                    .txn(Txn::new().op(Op::put(format!("/big/z/{i:06}"), b"late".to_vec())))
                    .await
                    .unwrap();
                i += 1;
            }
            i
        })
    };
    for _ in 0..5 {
        let listing = store.list("/big/").await.unwrap();
        let a: Vec<&str> = listing
            .kvs
            .iter()
            .map(|kv| kv.key.as_str())
            .filter(|k| k.starts_with("/big/a/"))
            .collect();
        assert_eq!(a.len(), n, "every key, once");
        assert!(a.windows(2).all(|w| w[0] < w[1]), "in key order");
        for kv in &listing.kvs {
            assert!(
                kv.mod_revision <= listing.revision,
                "{} was written at {} after the listing's revision {}",
                kv.key,
                kv.mod_revision,
                listing.revision
            );
        }
        let late = listing.kvs.len() - n;
        assert_eq!(
            i64::try_from(late).unwrap(),
            listing.revision - (listing.kvs[n - 1].mod_revision),
            "exactly the late keys written up to the listing's revision"
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        writer.await.unwrap() > 0,
        "the writer wrote during the listings"
    );
    // Keys outside the prefix are not listed.
    put_all(&store, [("/bigger".to_owned(), b"no".to_vec())]).await;
    let listing = store.list("/big/").await.unwrap();
    assert!(listing.kvs.iter().all(|kv| kv.key.starts_with("/big/")));
}

#[tokio::test]
async fn a_snapshot_of_thousands_of_tenants_beyond_one_message_becomes_ready() {
    let (_etcd, store) = etcd().await;
    let tenants = 5000;
    // Each tenant holds 8 keys (digests only, as the real writers store them): ~1 KiB.
    let record = |t: usize| {
        let keys: Vec<_> = (0..8)
            .map(|k| {
                let digest = hex::encode(shardline_shared::auth::digest_bytes(&format!(
                    "key-{t}-{k}"
                )));
                json!({"id": format!("k{k}"), "sha256": digest, "created_at": 1})
            })
            .collect();
        json!({"keys": keys, "created_at": 1})
            .to_string()
            .into_bytes()
    };
    let kvs: Vec<_> = (0..tenants)
        .map(|t| (format!("/shardline/tenants/t{t:05}"), record(t)))
        .collect();
    let bytes: usize = kvs.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(bytes > OLD_MESSAGE_LIMIT, "{bytes} bytes");
    put_all(&store, kvs).await;

    let metrics = ControlMetrics::unregistered().unwrap();
    let watcher = SnapshotWatcher::spawn(store.clone(), Prefix::default(), metrics.clone());
    let snap = tokio::time::timeout(Duration::from_secs(30), watcher.ready())
        .await
        .expect("ready");
    assert_eq!(snap.tenants().len(), tenants);
    assert_eq!(metrics.resyncs.get(), 1);
    let tenant = snap.tenant_for_key("key-4321-5").map(ToString::to_string);
    assert_eq!(tenant.as_deref(), Some("t04321"));
}
