//! One conformance suite for every `KvStore`: the in-memory double must behave like
//! real etcd (started per test by the harness), or unit tests built on it prove nothing.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shardline_control::store::{
    Event, KvStore, Op, Precondition, StoreError, Txn, TxnOutcome, WatchItem, WatchStream,
};
use shardline_control::{EtcdStore, MemStore};
use shardline_testkit::EtcdProcess;

/// Keeps the etcd process alive for as long as the store is used.
struct Backend {
    store: Arc<dyn KvStore>,
    _etcd: Option<EtcdProcess>,
}

async fn memory() -> Backend {
    Backend {
        store: Arc::new(MemStore::new()),
        _etcd: None,
    }
}

async fn etcd() -> Backend {
    let etcd = EtcdProcess::start().await.expect("start etcd");
    let store = EtcdStore::connect(&[etcd.endpoint()])
        .await
        .expect("connect");
    Backend {
        store: Arc::new(store),
        _etcd: Some(etcd),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $(#[tokio::test] async fn $name() { super::$name(super::memory().await).await })*
        }
        mod etcd {
            $(#[tokio::test] async fn $name() { super::$name(super::etcd().await).await })*
        }
    };
}

conformance!(
    put_get_list_and_revisions,
    absent_precondition_refuses_existing_key,
    stale_mod_revision_is_refused_and_nothing_applies,
    watch_sees_every_change_in_order,
    watch_from_compacted_revision_reports_compaction,
    revoking_a_lease_deletes_its_keys,
);

async fn put(s: &dyn KvStore, key: &str, value: &str) -> i64 {
    match s
        .txn(Txn::new().op(Op::put(key, value)))
        .await
        .expect("txn")
    {
        TxnOutcome::Applied { revision } => revision,
        TxnOutcome::Refused => panic!("unconditional put refused"),
    }
}

async fn next_batch(stream: &mut WatchStream) -> (i64, Vec<Event>) {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("watch event within 5 s")
            .expect("stream open")
            .expect("no error");
        match item {
            WatchItem::Batch { events, .. } if events.is_empty() => continue,
            WatchItem::Batch { revision, events } => return (revision, events),
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn put_get_list_and_revisions(b: Backend) {
    let s = &*b.store;
    let r1 = put(s, "/t/a", "1").await;
    let r2 = put(s, "/t/b", "2").await;
    put(s, "/u/c", "3").await;
    assert!(r2 > r1);
    let a = s.get("/t/a").await.unwrap().expect("present");
    assert_eq!((a.value.as_slice(), a.mod_revision), (&b"1"[..], r1));
    assert_eq!(s.get("/t/zz").await.unwrap(), None);
    let listing = s.list("/t/").await.unwrap();
    let keys: Vec<_> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/t/a", "/t/b"]);
    assert!(
        listing.revision > r2,
        "listing revision covers the later /u/c write"
    );
}

async fn absent_precondition_refuses_existing_key(b: Backend) {
    let s = &*b.store;
    let create = || {
        Txn::new()
            .check("/k", Precondition::Absent)
            .op(Op::put("/k", "v"))
    };
    assert!(matches!(
        s.txn(create()).await.unwrap(),
        TxnOutcome::Applied { .. }
    ));
    assert_eq!(s.txn(create()).await.unwrap(), TxnOutcome::Refused);
}

async fn stale_mod_revision_is_refused_and_nothing_applies(b: Backend) {
    let s = &*b.store;
    let r1 = put(s, "/k", "v1").await;
    let r2 = put(s, "/k", "v2").await;
    // A writer that read at r1 loses, and its other op is not applied either.
    let stale = Txn::new()
        .check("/k", Precondition::ModRevision(r1))
        .op(Op::put("/k", "lost"))
        .op(Op::put("/other", "lost"));
    assert_eq!(s.txn(stale).await.unwrap(), TxnOutcome::Refused);
    assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"v2");
    assert_eq!(s.get("/other").await.unwrap(), None);
    let fresh = Txn::new()
        .check("/k", Precondition::ModRevision(r2))
        .op(Op::delete("/k"));
    assert!(matches!(
        s.txn(fresh).await.unwrap(),
        TxnOutcome::Applied { .. }
    ));
    assert_eq!(s.get("/k").await.unwrap(), None);
}

async fn watch_sees_every_change_in_order(b: Backend) {
    let s = &*b.store;
    let start = put(s, "/w/0", "x").await;
    // Events written before the watch starts are replayed from the start revision.
    put(s, "/w/1", "a").await;
    let mut stream = s.watch("/w/", start + 1).await.unwrap();
    put(s, "/elsewhere", "ignored").await;
    for i in 2..20 {
        put(s, &format!("/w/{i}"), "b").await;
    }
    s.txn(Txn::new().op(Op::delete("/w/1"))).await.unwrap();
    let mut seen = Vec::new();
    let mut last_rev = start;
    while seen.len() < 20 {
        let (_, events) = next_batch(&mut stream).await;
        for e in events {
            assert!(e.mod_revision() > last_rev, "revisions increase");
            last_rev = e.mod_revision();
            seen.push(match e {
                Event::Put(kv) => format!("put {}", kv.key),
                Event::Delete { key, .. } => format!("del {key}"),
            });
        }
    }
    let mut expected: Vec<String> = (1..20).map(|i| format!("put /w/{i}")).collect();
    expected.push("del /w/1".into());
    assert_eq!(seen, expected);
}

async fn watch_from_compacted_revision_reports_compaction(b: Backend) {
    let s = &*b.store;
    let r1 = put(s, "/c/a", "1").await;
    put(s, "/c/a", "2").await;
    let r3 = put(s, "/c/a", "3").await;
    s.compact(r3).await.unwrap();
    let mut stream = s.watch("/c/", r1).await.unwrap();
    let item = loop {
        let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("answer")
            .expect("item")
            .expect("ok");
        // etcd first confirms the watch's creation with an empty batch.
        if !matches!(&item, WatchItem::Batch { events, .. } if events.is_empty()) {
            break item;
        }
    };
    assert_eq!(
        item,
        WatchItem::Compacted {
            compact_revision: r3
        }
    );
    // Watching from the compaction revision itself still works.
    let mut stream = s.watch("/c/", r3).await.unwrap();
    let (_, events) = next_batch(&mut stream).await;
    assert!(matches!(&events[..], [Event::Put(kv)] if kv.value == b"3"));
}

async fn revoking_a_lease_deletes_its_keys(b: Backend) {
    let s = &*b.store;
    let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    let put = Op::Put {
        key: "/l/w1".into(),
        value: b"alive".to_vec(),
        lease,
    };
    s.txn(Txn::new().op(put)).await.unwrap();
    assert!(s.keep_alive(lease).await.unwrap() > Duration::ZERO);
    assert_eq!(s.get("/l/w1").await.unwrap().unwrap().lease, lease);
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(s.get("/l/w1").await.unwrap(), None);
    assert!(matches!(
        s.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    // Revoking twice is not an error; writing under a dead lease is refused.
    s.revoke_lease(lease).await.unwrap();
    let again = Op::Put {
        key: "/l/w1".into(),
        value: b"zombie".to_vec(),
        lease,
    };
    assert!(matches!(
        s.txn(Txn::new().op(again)).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}
