//! A running fleet (router and worker processes, S3) through an etcd restored from an
//! `etcdctl snapshot save` backup: etcd 3.4's restore brings the revision back to the
//! backup's, and routers and workers converge on the restored state without restarts
//! (a worker whose lease is not in the backup registers again), serve with the keys of
//! the backup, and follow changes made after the restore.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use shardline_shared::ids::WorkerId;
use shardline_shared::keys::Key;
use shardline_testkit::fleet::{Node, TestFleet, rows};
use shardline_testkit::wait::eventually;

/// How long a router or worker gets to notice the restore.
const CONVERGE: Duration = Duration::from_secs(20);

/// `(tenant.model, version)` of every resident key `worker` has in etcd.
async fn resident_in_etcd(fleet: &TestFleet, worker: &str) -> BTreeSet<(String, String)> {
    let id = WorkerId::new(worker).unwrap();
    let prefix = fleet.cp.prefix().worker_residents(&id);
    let listing = fleet.cp.store().list(&prefix).await.unwrap();
    listing
        .kvs
        .iter()
        .filter_map(|kv| {
            let rest = kv.key.strip_prefix(&prefix)?;
            let [t, m, v] = rest.split('/').collect::<Vec<_>>()[..] else {
                return None;
            };
            Some((format!("{t}.{m}"), v.to_owned()))
        })
        .collect()
}

/// `(tenant.model, version)` of every model `worker` holds, as it reports them.
async fn resident_on(worker: &Node) -> BTreeSet<(String, String)> {
    worker
        .index()
        .await
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap().to_owned();
            (name, m["version"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_and_workers_follow_a_restore_from_backup_without_restarts() {
    let mut fleet = TestFleet::builder()
        .workers(2)
        .routers(2)
        .s3()
        .start()
        .await;
    let key = fleet.placed_model("acme", "risk", 2, 7).await;
    let batch = rows(3, 1);
    let v1 = fleet.infer(0, &key, "risk", &batch).await;
    assert_eq!(v1.status, 200, "{:?}", v1.body);
    let pids = |fleet: &TestFleet| -> Vec<_> {
        let nodes = fleet.workers.iter().chain(&fleet.routers);
        nodes.map(|n| (n.id.clone(), n.pid())).collect()
    };
    let started = pids(&fleet);
    let file = fleet.etcd.dir().join("backup.db");
    fleet.etcd.snapshot_save(&file).await.unwrap();

    // After the backup: a worker (its lease is not in the backup), a tenant, enough other
    // writes that the restored store takes a while to reach the revision everyone has
    // seen, and version 2 live.
    fleet.add_worker().await;
    let late = fleet.tenant("late", None).await;
    for i in 0..20 {
        fleet.tenant(&format!("filler-{i}"), None).await;
    }
    fleet.publish("acme", "risk", "2", 99).await;
    let v2 = fleet.infer(0, &key, "risk", &batch).await;
    assert_eq!(v2.body["model_version"], "2", "{:?}", v2.body);
    assert_ne!(v2.scores(), v1.scores());
    let seen = fleet.cp.store().position().await.unwrap().revision;

    fleet.etcd.restore(&file).await.unwrap();
    assert!(fleet.cp.store().position().await.unwrap().revision < seen);

    // Every router serves the backup's state: version 1 live again, the old key works,
    // the key issued after the backup does not.
    for r in 0..fleet.routers.len() {
        let what = format!("router {r} on the restored state");
        eventually(&what, CONVERGE, || async {
            let reply = fleet.infer(r, &key, "risk", &batch).await;
            let late = fleet.infer(r, &late, "risk", &batch).await;
            (reply.status == 200
                && reply.body["model_version"] == "1"
                && reply.scores() == v1.scores()
                && late.status == 401)
                .then_some(())
        })
        .await;
    }
    // Every worker is registered again, the one started after the backup under a new
    // lease, and its resident keys in etcd are what it holds.
    for w in &fleet.workers {
        let what = format!("{} registered with its resident keys", w.id);
        eventually(&what, CONVERGE, || async {
            let id = WorkerId::new(&w.id).unwrap();
            let record = fleet.cp.store().get(&fleet.cp.key(&Key::Worker(id))).await;
            let held = resident_on(w).await;
            let in_etcd = resident_in_etcd(&fleet, &w.id).await;
            match record {
                Ok(Some(_)) if in_etcd == held => Ok(()),
                other => Err(format!(
                    "record {other:?}; holds {held:?}, etcd has {in_etcd:?}"
                )),
            }
        })
        .await;
    }
    // Changes after the restore reach every router and worker (their revisions are below
    // the ones seen before it): a new tenant's model is placed on all three workers and
    // scored through every router.
    let fresh = fleet.placed_model("fresh", "churn", 3, 5).await;
    for r in 0..fleet.routers.len() {
        let reply = fleet.infer(r, &fresh, "churn", &batch).await;
        assert_eq!(reply.status, 200, "router {r}: {:?}", reply.body);
    }
    let now = pids(&fleet);
    assert!(started.iter().all(|p| now.contains(p)), "nothing restarted");
}
