//! The control plane against a real etcd: leases, the watched snapshot through
//! restarts and compaction, corrupt values, and the layout as `etcdctl` shows it.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use shardline_control::store::{KvStore, Txn};
use shardline_control::{
    ControlMetrics, ControlPlane, LeaseConfig, Registration, ResidentSet, SnapshotWatcher, TXN_OPS,
};
use shardline_shared::keys::{Key, Prefix};
use shardline_shared::records::{Assignment, ResidentRecord};
use shardline_shared::{ModelKey, VersionId, WorkerId};
use shardline_testkit::wait::eventually;
use support::{Gated, etcd, worker_record};

/// How long a test waits for etcd to show a change.
const WAIT: Duration = Duration::from_secs(15);

fn model(name: &str) -> ModelKey {
    ModelKey::parse_shard_key(&format!("acme/{name}")).unwrap()
}

fn assignment(epoch: u64) -> Assignment {
    Assignment {
        workers: vec![WorkerId::new("w1").unwrap()],
        epoch,
        previous: vec![],
    }
}

#[tokio::test]
async fn lease_expiry_removes_worker_after_ttl_when_keepalive_stops() {
    let (_etcd, store) = etcd().await;
    let cp = ControlPlane::new(store.clone(), Prefix::default());
    let id = WorkerId::new("w1").unwrap();
    let key = cp.key(&Key::Worker(id.clone()));
    let config = LeaseConfig {
        ttl: Duration::from_secs(2),
        min_update_interval: Duration::from_millis(100),
    };
    let metrics = ControlMetrics::unregistered().unwrap();
    let reg = Registration::start(&cp, &id, worker_record(), config, metrics)
        .await
        .unwrap();
    // Kept alive well past the TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(store.get(&key).await.unwrap().is_some(), "alive while kept");
    // A record update reaches etcd under the same lease.
    reg.modify(|r| r.used_bytes = 77);
    eventually("update published", WAIT, || async {
        let kv = store.get(&key).await.unwrap()?;
        let rec: shardline_shared::records::WorkerRecord =
            serde_json::from_slice(&kv.value).ok()?;
        (rec.used_bytes == 77 && kv.lease == reg.lease()).then_some(())
    })
    .await;
    // The process "crashes": the keeper stops without revoking.
    let stopped_at = std::time::Instant::now();
    drop(reg);
    eventually("key expires", WAIT, || async {
        store.get(&key).await.unwrap().is_none().then_some(())
    })
    .await;
    let gone_after = stopped_at.elapsed();
    assert!(
        gone_after >= Duration::from_millis(1000),
        "expired by TTL, not removed at once ({gone_after:?})"
    );
}

#[tokio::test]
async fn lost_lease_is_re_registered_and_shutdown_revokes() {
    let (_etcd, store) = etcd().await;
    let cp = ControlPlane::new(store.clone(), Prefix::default());
    let id = WorkerId::new("w2").unwrap();
    let key = cp.key(&Key::Worker(id.clone()));
    let config = LeaseConfig {
        ttl: Duration::from_secs(3),
        min_update_interval: Duration::from_millis(100),
    };
    let metrics = ControlMetrics::unregistered().unwrap();
    let reg = Registration::start(&cp, &id, worker_record(), config, metrics.clone())
        .await
        .unwrap();
    let first = reg.lease();
    // Someone revokes the lease (as expiry during an etcd outage would).
    store.revoke_lease(first).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_none());
    eventually("re-registered", WAIT, || async {
        let kv = store.get(&key).await.unwrap()?;
        (kv.lease != first && kv.lease == reg.lease()).then_some(())
    })
    .await;
    assert_eq!(metrics.lease_registrations.get(), 2);
    reg.shutdown().await.unwrap();
    assert!(store.get(&key).await.unwrap().is_none(), "revoked at once");
}

/// `n` resident entries of tenant `t`, `bytes` each.
fn resident_set(n: usize, bytes: u64) -> ResidentSet {
    (0..n)
        .map(|i| {
            (
                (model(&format!("m{i}")), VersionId::new("1").unwrap()),
                bytes,
            )
        })
        .collect()
}

#[tokio::test]
async fn resident_keys_follow_the_set_and_return_after_a_lost_lease() {
    let (_etcd, store) = etcd().await;
    let cp = ControlPlane::new(store.clone(), Prefix::default());
    let id = WorkerId::new("w3").unwrap();
    let record_key = cp.key(&Key::Worker(id.clone()));
    let prefix = cp.prefix().worker_residents(&id);
    let config = LeaseConfig {
        ttl: Duration::from_secs(3),
        min_update_interval: Duration::from_millis(100),
    };
    let metrics = ControlMetrics::unregistered().unwrap();
    let reg = Registration::start(&cp, &id, worker_record(), config, metrics)
        .await
        .unwrap();
    let record_revision = store.get(&record_key).await.unwrap().unwrap().mod_revision;
    // More entries than one transaction takes: written in several, all under the lease.
    let many = TXN_OPS * 2 + 5;
    reg.set_resident(resident_set(many, 10));
    let listed = |want: usize| {
        let (store, prefix) = (store.clone(), prefix.clone());
        async move {
            let l = store.list(&prefix).await.unwrap();
            (l.kvs.len() == want).then_some(l)
        }
    };
    let l = eventually("all resident keys written", WAIT, || listed(many)).await;
    assert!(l.kvs.iter().all(|kv| kv.lease == reg.lease()));
    // Evictions delete exactly their keys; the record is never rewritten.
    reg.set_resident(resident_set(3, 10));
    eventually("evicted keys deleted", WAIT, || listed(3)).await;
    let kv = store.get(&record_key).await.unwrap().unwrap();
    assert_eq!(
        kv.mod_revision, record_revision,
        "loads do not touch the record"
    );
    // A lost lease takes the keys with it; the keeper writes them all again.
    let first = reg.lease();
    store.revoke_lease(first).await.unwrap();
    let l = eventually("resident keys written again", WAIT, || async {
        let l = listed(3).await?;
        l.kvs.iter().all(|kv| kv.lease != first).then_some(l)
    })
    .await;
    let value: ResidentRecord = serde_json::from_slice(&l.kvs[0].value).unwrap();
    assert_eq!(value.bytes, 10);
    reg.shutdown().await.unwrap();
    assert!(
        store.list(&prefix).await.unwrap().kvs.is_empty(),
        "revoked with the lease"
    );
}

#[tokio::test]
async fn watcher_sees_changes_in_order_and_survives_etcd_restart() {
    let (mut etcd, store) = etcd().await;
    let cp = ControlPlane::new(store.clone(), Prefix::default());
    let metrics = ControlMetrics::unregistered().unwrap();
    let watcher = SnapshotWatcher::spawn(store.clone(), Prefix::default(), metrics.clone());
    watcher.ready().await;
    let mut rx = watcher.subscribe();
    // Only snapshots published from here on: the listing's may still be the latest when
    // the writes below are done, if the watch is not established by then.
    rx.borrow_and_update();
    let m = model("risk");
    let mut expected = None;
    for epoch in 1..=30 {
        expected = Some(
            cp.write_assignment(&m, &assignment(epoch), expected)
                .await
                .unwrap(),
        );
    }
    // Every published snapshot is at a later revision with a later epoch than the last.
    let mut last = (0, 0);
    while last.1 < 30 {
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("progress")
            .unwrap();
        let snap = rx.borrow_and_update().clone();
        let epoch = snap.assignments().get(&m).map_or(0, |a| a.value.epoch);
        assert!(
            snap.revision() > last.0 && epoch > last.1,
            "{last:?} -> {epoch}"
        );
        last = (snap.revision(), epoch);
    }

    // etcd crashes: the last snapshot keeps being served, and the metrics say so.
    etcd.kill().await.unwrap();
    let before = watcher.current();
    eventually("watch marked down", WAIT, || async {
        (metrics.watch_connected.get() == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(watcher.current().revision(), before.revision());
    assert!(metrics.snapshot_age_seconds.get() >= 1.0);

    etcd.restart().await.unwrap();
    let rev = cp
        .write_assignment(&model("fraud"), &assignment(1), None)
        .await
        .unwrap();
    let snap = tokio::time::timeout(Duration::from_secs(15), watcher.wait_for_revision(rev))
        .await
        .expect("watcher caught up after restart");
    assert_eq!(snap.assignments()[&model("fraud")].value.epoch, 1);
    assert_eq!(snap.assignments()[&m].value.epoch, 30);
    assert_eq!(metrics.watch_connected.get(), 1);
}

#[tokio::test]
async fn watcher_whose_revision_was_compacted_relists_to_the_correct_snapshot() {
    let (_etcd, store) = etcd().await;
    let cp = ControlPlane::new(store.clone(), Prefix::default());
    let gated = Arc::new(Gated::new(store.clone()));
    let metrics = ControlMetrics::unregistered().unwrap();
    let watcher = SnapshotWatcher::spawn(gated.clone(), Prefix::default(), metrics.clone());
    let rev = cp
        .write_assignment(&model("a"), &assignment(1), None)
        .await
        .unwrap();
    let rev_b = cp
        .write_assignment(&model("b"), &assignment(1), None)
        .await
        .unwrap();
    watcher.wait_for_revision(rev_b).await;
    assert_eq!(metrics.resyncs.get(), 1);

    // The watcher is cut off; meanwhile a is updated, b deleted, c created, history compacted.
    gated.open.send_replace(false);
    eventually("watch cut", WAIT, || async {
        (metrics.watch_connected.get() == 0).then_some(())
    })
    .await;
    cp.write_assignment(&model("a"), &assignment(2), Some(rev))
        .await
        .unwrap();
    let b_key = cp.key(&Key::Assignment(model("b")));
    store
        .txn(Txn::new().op(shardline_control::store::Op::delete(b_key)))
        .await
        .unwrap();
    let last = cp
        .write_assignment(&model("c"), &assignment(7), None)
        .await
        .unwrap();
    store.compact(last).await.unwrap();
    gated.open.send_replace(true);

    let snap = tokio::time::timeout(Duration::from_secs(15), watcher.wait_for_revision(last))
        .await
        .expect("caught up");
    assert_eq!(metrics.resyncs.get(), 2, "re-listed after compaction");
    let epochs: Vec<(String, u64)> = snap
        .assignments()
        .iter()
        .map(|(k, v)| (k.model.to_string(), v.value.epoch))
        .collect();
    assert_eq!(epochs, [("a".to_string(), 2), ("c".to_string(), 7)]);
}

#[tokio::test]
async fn corrupt_values_are_skipped_counted_and_do_not_stop_the_watcher() {
    let (_etcd, store) = etcd().await;
    let cp = ControlPlane::new(store.clone(), Prefix::default());
    let metrics = ControlMetrics::unregistered().unwrap();
    support::put_raw(&*store, "/shardline/tenants/bad", b"{not json").await;
    let watcher = SnapshotWatcher::spawn(store.clone(), Prefix::default(), metrics.clone());
    watcher.ready().await;
    assert_eq!(
        metrics.invalid_values.with_label_values(&["tenant"]).get(),
        1
    );
    support::put_raw(
        &*store,
        "/shardline/assignments/acme/x",
        br#"{"workers":"w1"}"#,
    )
    .await;
    support::put_raw(&*store, "/shardline/no-such-section", b"{}").await;
    let rev = cp
        .write_assignment(&model("good"), &assignment(1), None)
        .await
        .unwrap();
    let snap = watcher.wait_for_revision(rev).await;
    assert_eq!(
        metrics
            .invalid_values
            .with_label_values(&["assignment"])
            .get(),
        1
    );
    assert_eq!(
        metrics.invalid_values.with_label_values(&["unknown"]).get(),
        1
    );
    assert!(snap.assignments().contains_key(&model("good")));
    assert!(!snap.assignments().contains_key(&model("x")));
    assert_eq!(snap.invalid().len(), 3, "{:?}", snap.invalid());
}
