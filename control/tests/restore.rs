//! The control plane through an etcd disaster: a restore from `etcdctl snapshot save`
//! (the revision goes back) and a full database (the NOSPACE alarm), on real etcd 3.4.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use shardline_control::store::{KvStore, Op, Txn};
use shardline_control::{
    ControlMetrics, ControlPlane, EtcdStore, LeaseConfig, OpError, Registration, ResidentSet,
    SnapshotWatcher, StoreError,
};
use shardline_shared::keys::{Key, Prefix};
use shardline_shared::records::TenantLimits;
use shardline_shared::{ModelKey, TenantId, VersionId, WorkerId};
use shardline_testkit::EtcdProcess;
use shardline_testkit::wait::eventually;
use support::{etcd, worker_record};

/// Most 256 KiB values written to fill a 2 MiB etcd.
const JUNK_KEYS: usize = 400;

/// How long a test waits for the watcher or the keeper to converge.
const WAIT: Duration = Duration::from_secs(15);

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn resident(models: &[&str]) -> ResidentSet {
    models
        .iter()
        .map(|m| {
            let key = ModelKey::parse_shard_key(&format!("acme/{m}")).unwrap();
            ((key, VersionId::new("1").unwrap()), 10)
        })
        .collect()
}

/// The model names of `worker`'s resident keys in etcd.
async fn resident_in_etcd(store: &EtcdStore, cp: &ControlPlane, worker: &WorkerId) -> Vec<String> {
    let listing = store
        .list(&cp.prefix().worker_residents(worker))
        .await
        .unwrap();
    let mut names: Vec<String> = listing
        .kvs
        .iter()
        .filter_map(|kv| kv.key.split('/').rev().nth(1).map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_watcher_and_the_lease_keeper_follow_a_restore_to_an_older_revision() {
    let (mut etcd, store) = etcd().await;
    let cp = ControlPlane::new(store.clone(), Prefix::default());
    let metrics = ControlMetrics::unregistered().unwrap();
    let watcher = SnapshotWatcher::spawn(store.clone(), Prefix::default(), metrics.clone());
    let id = WorkerId::new("w1").unwrap();
    let config = LeaseConfig {
        ttl: Duration::from_secs(3),
        min_update_interval: Duration::from_millis(100),
    };
    let reg = Registration::start(&cp, &id, worker_record(), config, metrics.clone())
        .await
        .unwrap();
    let limits = TenantLimits::default();
    cp.create_tenant(&tenant("before"), None, limits)
        .await
        .unwrap();
    reg.set_resident(resident(&["m0"]));
    eventually("m0 resident in etcd", WAIT, || async {
        (resident_in_etcd(&store, &cp, &id).await == ["m0"]).then_some(())
    })
    .await;
    // Beside etcd's data directory, which the restore wipes.
    let file = etcd.dir().join("backup.db");
    etcd.snapshot_save(&file).await.unwrap();

    // After the backup: enough writes that the restored store takes a while to reach
    // the revision the watcher has seen, and a model the worker loads.
    for i in 0..20 {
        let t = tenant(&format!("after-{i}"));
        cp.create_tenant(&t, None, limits).await.unwrap();
    }
    reg.set_resident(resident(&["m0", "m1"]));
    eventually("m1 resident in etcd", WAIT, || async {
        (resident_in_etcd(&store, &cp, &id).await == ["m0", "m1"]).then_some(())
    })
    .await;
    let seen = store.position().await.unwrap().revision;
    watcher.wait_for_revision(seen).await;
    let resyncs = metrics.resyncs.get();

    etcd.restore(&file).await.unwrap();
    assert!(store.position().await.unwrap().revision < seen, "went back");

    // The watcher re-lists: what was written after the backup is gone from its snapshot.
    eventually("the watcher re-listed the restored store", WAIT, || async {
        let snap = watcher.current();
        (!snap.tenants().contains_key(&tenant("after-0"))
            && snap.tenants().contains_key(&tenant("before")))
        .then_some(())
    })
    .await;
    assert!(metrics.resyncs.get() > resyncs);
    // Writes after the restore reach it, although their revisions are below `seen`.
    let later = store.position().await.unwrap().revision;
    cp.create_tenant(&tenant("later"), None, limits)
        .await
        .unwrap();
    assert!(later + 1 < seen);
    eventually("a write after the restore arrives", WAIT, || async {
        watcher
            .current()
            .tenants()
            .contains_key(&tenant("later"))
            .then_some(())
    })
    .await;
    // The worker's lease was in the backup, so it is still alive; the keeper notices the
    // store went back and publishes its record and every resident model again.
    eventually("the keeper republished what it holds", WAIT, || async {
        let record = store
            .get(&cp.key(&Key::Worker(id.clone())))
            .await
            .unwrap()?;
        (record.lease == reg.lease() && resident_in_etcd(&store, &cp, &id).await == ["m0", "m1"])
            .then_some(())
    })
    .await;
    eventually(
        "the watcher sees the worker's resident models",
        WAIT,
        || async {
            let snap = watcher.current();
            let v1 = VersionId::new("1").unwrap();
            let held = ["m0", "m1"].iter().all(|m| {
                let key = ModelKey::parse_shard_key(&format!("acme/{m}")).unwrap();
                snap.is_resident(&id, &key, &v1)
            });
            held.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_full_etcd_refuses_writes_with_nospace_and_recovers_after_disarm() {
    let quota = format!("--quota-backend-bytes={}", 2 << 20);
    let etcd = EtcdProcess::start_with(&[quota]).await.unwrap();
    let store = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap());
    let cp = ControlPlane::new(store.clone(), Prefix::default());
    let limits = TenantLimits::default();
    cp.create_tenant(&tenant("acme"), None, limits)
        .await
        .unwrap();

    // Fill etcd until it raises the alarm (it compares the database file with the quota,
    // and the file grows when a write batch commits, every 100 ms).
    let junk = vec![b'x'; 256 << 10];
    let mut refused = None;
    for i in 0..JUNK_KEYS {
        let txn = Txn::new().op(Op::put(format!("/junk/{i}"), junk.clone()));
        if let Err(e) = store.txn(txn).await {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("etcd refused a write before 100 MiB");
    assert!(matches!(refused, StoreError::NoSpace { .. }), "{refused:?}");
    let text = refused.to_string();
    assert!(
        text.contains("out of space") && text.contains("etcdctl alarm disarm"),
        "{text}"
    );
    assert!(
        etcd.etcdctl(&["alarm", "list"])
            .await
            .unwrap()
            .contains("NOSPACE")
    );

    // Typed writes fail with the same error and write nothing; reads still work.
    let before = store.list("/shardline/").await.unwrap();
    let refused = cp.create_tenant(&tenant("beta"), None, limits).await;
    assert!(
        matches!(refused, Err(OpError::Store(StoreError::NoSpace { .. }))),
        "{refused:?}"
    );
    let after = store.list("/shardline/").await.unwrap();
    assert_eq!(after.kvs, before.kvs, "nothing half-written");

    // The documented way back: free space, compact, defragment, disarm.
    for i in 0..JUNK_KEYS {
        let _ = store
            .txn(Txn::new().op(Op::delete(format!("/junk/{i}"))))
            .await;
    }
    let now = store.position().await.unwrap().revision;
    store.compact(now).await.unwrap();
    etcd.etcdctl(&["defrag"]).await.unwrap();
    etcd.etcdctl(&["alarm", "disarm"]).await.unwrap();
    cp.create_tenant(&tenant("beta"), None, limits)
        .await
        .unwrap();
}
