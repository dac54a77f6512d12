//! Typed operations and the lease keeper against the in-memory double (which the
//! conformance suite holds to etcd's behaviour). No sleeping: time is paused.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use shardline_control::store::KvStore;
use shardline_control::{
    ControlMetrics, ControlPlane, LeaseConfig, MemStore, OpError, Registration, SnapshotWatcher,
};
use shardline_shared::keys::{Key, Prefix};
use shardline_shared::records::{AdminState, Assignment, TenantLimits};
use shardline_shared::{ModelKey, TenantId, VersionId, WorkerId};

fn setup() -> (MemStore, ControlPlane) {
    let mem = MemStore::new();
    let cp = ControlPlane::new(Arc::new(mem.clone()), Prefix::default());
    (mem, cp)
}

#[tokio::test]
async fn tenant_lifecycle_and_key_rotation() {
    let (mem, cp) = setup();
    let watcher = SnapshotWatcher::spawn(
        Arc::new(mem.clone()),
        Prefix::default(),
        ControlMetrics::unregistered().unwrap(),
    );
    let acme = TenantId::new("acme").unwrap();
    let k1 = cp
        .create_tenant(&acme, None, TenantLimits::default())
        .await
        .unwrap();
    let again = cp.create_tenant(&acme, None, TenantLimits::default()).await;
    assert!(matches!(again, Err(OpError::Refused(m)) if m.contains("already exists")));
    let b = TenantId::new("b").unwrap();
    let bad_k = cp.create_tenant(&b, Some(0), TenantLimits::default()).await;
    assert!(matches!(bad_k, Err(OpError::Refused(_))));

    let rev = mem.list("/").await.unwrap().revision;
    let snap = watcher.wait_for_revision(rev).await;
    assert_eq!(snap.tenant_for_key(k1.expose()), Some(&acme));

    let k2 = cp.rotate_key(&acme).await.unwrap();
    let rev = mem.list("/").await.unwrap().revision;
    let snap = watcher.wait_for_revision(rev).await;
    assert_eq!(
        snap.tenant_for_key(k1.expose()),
        None,
        "old key stops working"
    );
    assert_eq!(snap.tenant_for_key(k2.expose()), Some(&acme));

    let missing = cp.rotate_key(&TenantId::new("ghost").unwrap()).await;
    assert!(matches!(missing, Err(OpError::NotFound(_))));

    // Deleting refuses while models exist, unless forced (which removes them too).
    let m = shardline_testkit::models::manifest("acme", "risk", "1");
    cp.publish_version(&m, false).await.unwrap();
    let assignment = Assignment {
        workers: vec![WorkerId::new("w1").unwrap()],
        epoch: 1,
        previous: vec![],
    };
    cp.write_assignment(&m.key(), &assignment, None)
        .await
        .unwrap();
    assert!(matches!(
        cp.delete_tenant(&acme, false).await,
        Err(OpError::Refused(_))
    ));
    cp.delete_tenant(&acme, true).await.unwrap();
    let left = mem.list("/shardline/").await.unwrap();
    assert!(left.kvs.is_empty(), "{:?}", left.kvs);
}

#[tokio::test]
async fn versions_are_immutable_and_live_pointer_is_guarded() {
    let (_mem, cp) = setup();
    let m1 = shardline_testkit::models::manifest("acme", "risk", "1");
    let m2 = shardline_testkit::models::manifest("acme", "risk", "2");
    let key: ModelKey = m1.key();
    cp.publish_version(&m1, false).await.unwrap();
    let dup = cp.publish_version(&m1, false).await;
    assert!(matches!(dup, Err(OpError::Refused(m)) if m.contains("already exists")));

    let v2 = VersionId::new("2").unwrap();
    assert!(matches!(
        cp.set_live(&key, &v2).await,
        Err(OpError::NotFound(_))
    ));
    cp.set_live(&key, &m1.version).await.unwrap();
    cp.publish_version(&m2, false).await.unwrap();
    cp.set_live(&key, &v2).await.unwrap();
    assert!(
        matches!(cp.unpublish(&key, &v2).await, Err(OpError::Refused(m)) if m.contains("is live"))
    );
    cp.unpublish(&key, &m1.version).await.unwrap();
    assert!(matches!(
        cp.unpublish(&key, &m1.version).await,
        Err(OpError::NotFound(_))
    ));

    let mut bad = shardline_testkit::models::manifest("acme", "risk", "3");
    bad.location = "../../etc".into();
    assert!(matches!(
        cp.publish_version(&bad, false).await,
        Err(OpError::Refused(_))
    ));
}

#[tokio::test]
async fn a_publish_writes_the_version_and_the_live_pointer_together_or_not_at_all() {
    let (mem, cp) = setup();
    let m1 = shardline_testkit::models::manifest("acme", "risk", "1");
    let m2 = shardline_testkit::models::manifest("acme", "risk", "2");
    let live_key = cp.key(&Key::LiveVersion(m1.key()));
    let rev = cp.publish_version(&m1, true).await.unwrap();
    let live = mem.get(&live_key).await.unwrap().unwrap();
    assert_eq!(live.mod_revision, rev, "both keys in one revision");

    // A duplicate is refused and touches nothing, the live pointer included.
    let before = mem.list("/").await.unwrap();
    let dup = cp.publish_version(&m1, true).await;
    assert!(matches!(dup, Err(OpError::Refused(m)) if m.contains("already exists")));
    assert_eq!(mem.list("/").await.unwrap(), before);

    // Without activation only the version is written.
    cp.publish_version(&m2, false).await.unwrap();
    let still = mem.get(&live_key).await.unwrap().unwrap();
    assert_eq!(still.mod_revision, rev);

    // An invalid manifest is refused before anything is sent.
    let mut bad = shardline_testkit::models::manifest("acme", "risk", "3");
    bad.location = "../../etc".into();
    let before = mem.list("/").await.unwrap();
    assert!(matches!(
        cp.publish_version(&bad, true).await,
        Err(OpError::Refused(_))
    ));
    assert_eq!(mem.list("/").await.unwrap(), before);
}

#[tokio::test]
async fn assignment_cas_refuses_stale_writers() {
    let (_mem, cp) = setup();
    let key = ModelKey::parse_shard_key("acme/risk").unwrap();
    let a = |epoch| Assignment {
        workers: vec![WorkerId::new("w1").unwrap()],
        epoch,
        previous: vec![],
    };
    let r1 = cp.write_assignment(&key, &a(1), None).await.unwrap();
    assert!(matches!(
        cp.write_assignment(&key, &a(9), None).await,
        Err(OpError::Conflict(_))
    ));
    let r2 = cp.write_assignment(&key, &a(2), Some(r1)).await.unwrap();
    // A second controller that read r1 loses.
    assert!(matches!(
        cp.write_assignment(&key, &a(3), Some(r1)).await,
        Err(OpError::Conflict(_))
    ));
    let stored = cp
        .read::<Assignment>(&Key::Assignment(key.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.value.epoch, stored.mod_revision), (2, r2));
}

#[tokio::test]
async fn worker_admin_states_round_trip() {
    let (mem, cp) = setup();
    let w = WorkerId::new("w1").unwrap();
    cp.set_worker_admin(&w, AdminState::Draining).await.unwrap();
    let key = cp.key(&Key::WorkerAdmin(w.clone()));
    assert_eq!(
        mem.get(&key).await.unwrap().unwrap().value,
        br#"{"state":"draining"}"#
    );
    cp.set_worker_admin(&w, AdminState::Active).await.unwrap();
    assert_eq!(
        mem.get(&key).await.unwrap(),
        None,
        "active is the absence of a record"
    );
}

#[tokio::test(start_paused = true)]
async fn keeper_re_registers_after_expiry_and_throttles_updates() {
    let (mem, cp) = setup();
    let id = WorkerId::new("w1").unwrap();
    let key = cp.key(&Key::Worker(id.clone()));
    let metrics = ControlMetrics::unregistered().unwrap();
    let config = LeaseConfig {
        ttl: Duration::from_secs(9),
        min_update_interval: Duration::from_secs(1),
    };
    let reg = Registration::start(&cp, &id, support::worker_record(), config, metrics.clone())
        .await
        .unwrap();
    let first = reg.lease();
    let rev_of = |kv: Option<shardline_control::store::KeyValue>| kv.map(|kv| kv.mod_revision);

    // Ten updates within one interval produce at most two writes.
    let before = rev_of(mem.get(&key).await.unwrap()).unwrap();
    for i in 0..10 {
        reg.modify(|r| r.used_bytes = i);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kv = mem.get(&key).await.unwrap().unwrap();
    assert!(
        kv.mod_revision - before <= 2,
        "throttled: {} writes",
        kv.mod_revision - before
    );
    assert!(
        String::from_utf8_lossy(&kv.value).contains("\"used_bytes\":9"),
        "last update wins"
    );

    // The lease expires (etcd was away too long): the keeper registers anew within TTL/3.
    mem.expire_lease(first);
    assert_eq!(mem.get(&key).await.unwrap(), None);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kv = mem.get(&key).await.unwrap().expect("back");
    assert_ne!(kv.lease, first);
    assert_eq!(reg.lease(), kv.lease);
    assert_eq!(metrics.lease_registrations.get(), 2);

    // While etcd is unreachable nothing panics, and it recovers when etcd returns.
    mem.set_down(true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    mem.set_down(false);
    mem.expire_lease(kv.lease);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(mem.get(&key).await.unwrap().is_some());
    reg.shutdown().await.unwrap();
    assert_eq!(mem.get(&key).await.unwrap(), None);
}

#[tokio::test]
async fn a_value_over_the_limit_is_refused_before_anything_is_written() {
    use shardline_control::ops::MAX_VALUE_BYTES;
    use shardline_control::store::Precondition;
    let (mem, cp) = setup();
    let key = Key::Tenant(TenantId::new("big").unwrap());
    let value = |bytes: usize| serde_json::json!({ "pad": "x".repeat(bytes) });
    let err = cp
        .write(&key, &value(MAX_VALUE_BYTES), Precondition::Any, "tenant")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OpError::Refused(m) if m.contains("largest value allowed is 64 KiB")),
        "{err}"
    );
    assert!(
        mem.get(&cp.key(&key)).await.unwrap().is_none(),
        "nothing written"
    );
    // Just under the limit is stored.
    cp.write(
        &key,
        &value(MAX_VALUE_BYTES - 100),
        Precondition::Any,
        "tenant",
    )
    .await
    .unwrap();
    assert!(mem.get(&cp.key(&key)).await.unwrap().is_some());
}
