//! Listings larger than one gRPC message against a real etcd: read whole, page by page,
//! at one revision (a consistent cut while writes go on), a watched snapshot of
//! thousands of tenants that becomes ready, and its re-list after a compaction.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use shardline_control::etcd::LIST_PAGE;
use shardline_control::store::{KvStore, Op, Txn};
use shardline_control::{ControlMetrics, EtcdStore, SnapshotWatcher};
use shardline_shared::keys::Prefix;
use shardline_testkit::wait::eventually;
use support::{Gated, etcd};

/// etcd-client's default gRPC decoding limit, which one unpaginated range used to hit.
const OLD_MESSAGE_LIMIT: usize = 4 << 20;

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
async fn a_page_larger_than_the_message_limit_is_asked_again_with_fewer_keys() {
    let (etcd, store) = etcd().await;
    // Small keys first (they size the following pages), then values 600 times larger.
    let small = 3 * LIST_PAGE as usize;
    put_all(
        &store,
        (0..small).map(|i| (format!("/mixed/a/{i:06}"), vec![b's'; 50])),
    )
    .await;
    let large = 60;
    for i in 0..large {
        let value = vec![b'L'; 30 << 10];
        let txn = Txn::new().op(Op::put(format!("/mixed/b/{i:06}"), value));
        store.txn(txn).await.unwrap();
    }
    // A client that decodes at most 256 KiB: the page after the small keys would hold
    // every large value (1.8 MB) and must be cut down until it fits.
    let limit = 256 << 10;
    let tight = EtcdStore::connect_with_message_limit(&[etcd.endpoint()], limit)
        .await
        .unwrap();
    let mut pages = Vec::new();
    let revision = tight
        .list_pages("/mixed/", &mut |page| pages.push(page))
        .await
        .unwrap();
    let keys: Vec<String> = pages.iter().flatten().map(|kv| kv.key.clone()).collect();
    let whole = store.list("/mixed/").await.unwrap();
    assert_eq!(revision, whole.revision);
    assert_eq!(
        keys,
        whole
            .kvs
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        "every key once, in order"
    );
    assert_eq!(keys.len(), small + large);
    for page in &pages {
        let bytes: usize = page.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
        assert!(
            bytes < limit,
            "a page of {bytes} bytes passed a {limit}-byte limit"
        );
    }
    assert!(
        pages.len() > (large * (30 << 10)) / limit,
        "the large values came in several pages ({} pages)",
        pages.len()
    );
}

/// A tenant record holding the digests of keys `key-{t}-0` … `key-{t}-7` (~1 KiB, as the
/// real writers store them).
fn tenant_record(t: usize, generation: u32) -> Vec<u8> {
    let keys: Vec<_> = (0..8)
        .map(|k| {
            let key = format!("key-{t}-{k}{}", if generation > 0 { "-new" } else { "" });
            let digest = hex::encode(shardline_shared::auth::digest_bytes(&key));
            json!({"id": format!("k{k}"), "sha256": digest, "created_at": 1})
        })
        .collect();
    json!({"keys": keys, "created_at": 1})
        .to_string()
        .into_bytes()
}

/// Writes `n` tenants `t00000…` and returns how many bytes they hold.
async fn write_tenants(store: &EtcdStore, n: usize) -> usize {
    let kvs: Vec<_> = (0..n)
        .map(|t| (format!("/shardline/tenants/t{t:05}"), tenant_record(t, 0)))
        .collect();
    let bytes = kvs.iter().map(|(k, v)| k.len() + v.len()).sum();
    put_all(store, kvs).await;
    bytes
}

#[tokio::test]
async fn a_snapshot_of_thousands_of_tenants_beyond_one_message_becomes_ready() {
    let (_etcd, store) = etcd().await;
    let tenants = 5000;
    let bytes = write_tenants(&store, tenants).await;
    assert!(bytes > OLD_MESSAGE_LIMIT, "{bytes} bytes");

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

#[tokio::test]
async fn a_compaction_at_that_size_is_followed_by_a_full_relist() {
    let (_etcd, store) = etcd().await;
    let tenants = 5000;
    assert!(write_tenants(&store, tenants).await > OLD_MESSAGE_LIMIT);
    let gated = Arc::new(Gated::new(store.clone()));
    let metrics = ControlMetrics::unregistered().unwrap();
    let watcher = SnapshotWatcher::spawn(gated.clone(), Prefix::default(), metrics.clone());
    tokio::time::timeout(Duration::from_secs(30), watcher.ready())
        .await
        .expect("ready");
    assert_eq!(metrics.resyncs.get(), 1);

    // While the watch is cut: one tenant's keys rotated, one tenant deleted, one created,
    // and the history compacted past the watcher's revision.
    gated.open.send_replace(false);
    eventually("watch cut", Duration::from_secs(15), || async {
        metrics.watch_connected.get() == 0
    })
    .await;
    put_all(
        &store,
        [
            ("/shardline/tenants/t00042".to_owned(), tenant_record(42, 1)),
            (
                "/shardline/tenants/t05000".to_owned(),
                tenant_record(5000, 0),
            ),
        ],
    )
    .await;
    let last = match store
        .txn(Txn::new().op(Op::delete("/shardline/tenants/t00043")))
        .await
        .unwrap()
    {
        shardline_control::store::TxnOutcome::Applied { revision } => revision,
        other => panic!("{other:?}"),
    };
    store.compact(last).await.unwrap();
    gated.open.send_replace(true);

    let snap = tokio::time::timeout(Duration::from_secs(30), watcher.wait_for_revision(last))
        .await
        .expect("caught up after the compaction");
    assert_eq!(metrics.resyncs.get(), 2, "re-listed after the compaction");
    assert_eq!(snap.tenants().len(), tenants);
    let owner = |key: &str| snap.tenant_for_key(key).map(ToString::to_string);
    assert_eq!(owner("key-42-3"), None, "the rotated key stops working");
    assert_eq!(owner("key-42-3-new").as_deref(), Some("t00042"));
    assert_eq!(
        owner("key-43-0"),
        None,
        "the deleted tenant's keys stop working"
    );
    assert_eq!(owner("key-5000-7").as_deref(), Some("t05000"));
    assert_eq!(owner("key-4999-7").as_deref(), Some("t04999"));
}
