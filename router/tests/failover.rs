//! Failures under load, on a real fleet: a worker SIGKILLed, etcd gone for 30 s, the
//! controller's router killed. Clients must not see a single failed request, and the
//! placement controller must repair what the failure broke.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shardline_shared::ids::{ModelKey, WorkerId};
use shardline_shared::keys::{Prefix, Section};
use shardline_shared::records::Assignment;
use shardline_testkit::fleet::{TestFleet, steady_load};
use shardline_testkit::wait::eventually;

/// Every assignment, read straight from etcd.
async fn assignments(fleet: &TestFleet) -> Vec<(ModelKey, Assignment)> {
    let prefix = Prefix::default().section(Section::Assignments);
    let listing = fleet.cp.store().list(&prefix).await.unwrap();
    listing
        .kvs
        .iter()
        .map(|kv| {
            let key = ModelKey::parse_shard_key(&kv.key[prefix.len()..]).unwrap();
            (key, serde_json::from_slice(&kv.value).unwrap())
        })
        .collect()
}

/// Ids of workers currently registered.
async fn live_workers(fleet: &TestFleet) -> BTreeSet<WorkerId> {
    let prefix = Prefix::default().section(Section::Workers);
    let listing = fleet.cp.store().list(&prefix).await.unwrap();
    listing
        .kvs
        .iter()
        .map(|kv| WorkerId::new(&kv.key[prefix.len()..]).unwrap())
        .collect()
}

/// Waits until every model has `k` live members in its assignment and none is `gone`.
async fn wait_repaired(fleet: &TestFleet, k: usize, gone: &WorkerId, within: Duration) {
    eventually("shards repaired", within, || async {
        let live = live_workers(fleet).await;
        let all = assignments(fleet).await;
        let bad: Vec<_> = all
            .iter()
            .filter(|(_, a)| {
                a.workers.len() != k
                    || a.workers.contains(gone)
                    || !a.workers.iter().all(|w| live.contains(w))
            })
            .map(|(m, a)| format!("{m}: {:?}", a.workers))
            .collect();
        if bad.is_empty() && !all.is_empty() {
            Ok(())
        } else {
            Err(bad)
        }
    })
    .await;
}

/// Creates `n` tenants with shard size `k`, one model each; returns (key, model) pairs
/// once every model is placed.
async fn tenants(fleet: &TestFleet, n: usize, k: u32) -> Vec<(String, String)> {
    let mut targets = vec![];
    for t in 0..n {
        let name = format!("tenant-{t}");
        let key = fleet.tenant(&name, Some(k)).await;
        fleet.publish(&name, "risk", "1", t as u64).await;
        targets.push((key, "risk".to_owned()));
    }
    for t in 0..n {
        let model = ModelKey::parse_shard_key(&format!("tenant-{t}/risk")).unwrap();
        fleet
            .wait_assignment(&model, Duration::from_secs(15), |a| {
                a.workers.len() == k as usize
            })
            .await;
    }
    // Warm every model once so the load measures failover, not first loads.
    for (key, model) in &targets {
        let r = fleet
            .infer(0, key, model, &shardline_testkit::fleet::rows(1, 0))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    targets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_under_load_fails_no_request_and_its_shards_are_repaired() {
    let mut fleet = TestFleet::builder().workers(4).start().await;
    let targets = tenants(&fleet, 20, 2).await;
    let load = tokio::spawn(steady_load(
        fleet.http.clone(),
        fleet.routers[0].url.clone(),
        targets,
        200,
        Duration::from_secs(10),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;

    let victim = WorkerId::new(fleet.workers[1].id.clone()).unwrap();
    let affected = assignments(&fleet)
        .await
        .into_iter()
        .filter(|(_, a)| a.workers.contains(&victim))
        .count();
    assert!(affected > 0, "the victim serves some shards");
    let prefetched_before = fleet
        .router_metric(0, "shardline_placement_prefetch_total")
        .await;
    fleet.workers[1].kill().await.unwrap();
    let killed = Instant::now();
    // Lease TTL (3 s) + 2 s.
    wait_repaired(&fleet, 2, &victim, Duration::from_secs(5)).await;
    eprintln!(
        "repaired {affected} shards {:?} after the kill",
        killed.elapsed()
    );
    let prefetched = fleet
        .router_metric(0, "shardline_placement_prefetch_total")
        .await
        - prefetched_before;
    assert!(
        prefetched >= affected as f64,
        "every replacement was prefetched before the swap ({prefetched} prefetches for {affected} shards)"
    );

    let report = load.await.unwrap();
    assert!(report.sent >= 2000);
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed: {:#?}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_away_for_30s_fails_no_request_and_changes_flow_again_after() {
    let mut fleet = TestFleet::builder().workers(3).start().await;
    let targets = tenants(&fleet, 5, 2).await;
    let load = tokio::spawn(steady_load(
        fleet.http.clone(),
        fleet.routers[0].url.clone(),
        targets,
        50,
        Duration::from_secs(34),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.etcd.kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let ready = fleet
        .http
        .get(format!("{}/v2/health/ready", fleet.routers[0].url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "the last snapshot keeps the router ready"
    );
    fleet.etcd.restart().await.unwrap();
    let report = load.await.unwrap();
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed: {:#?}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(10)]
    );

    // A model published after the outage becomes routable without a restart.
    let key = eventually(
        "etcd back: tenant created",
        Duration::from_secs(60),
        || async {
            let late = "late".parse().unwrap();
            let created = fleet.cp.create_tenant(&late, Some(2), Default::default());
            created.await.map(|k| k.expose().to_owned())
        },
    )
    .await;
    fleet.publish("late", "fresh", "1", 77).await;
    eventually("new model routable", Duration::from_secs(20), || async {
        let r = fleet
            .infer(0, &key, "fresh", &shardline_testkit::fleet::rows(1, 0))
            .await;
        if r.status == 200 { Ok(()) } else { Err(r.body) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_router_takes_over_the_controller_and_repairs_shards() {
    let mut fleet = TestFleet::builder().workers(3).routers(2).start().await;
    let targets = tenants(&fleet, 4, 2).await;

    // The leader is the candidate with the oldest key.
    let prefix = Prefix::default().section(Section::Controller);
    let candidates = fleet.cp.store().list(&prefix).await.unwrap();
    let leader = candidates
        .kvs
        .iter()
        .min_by_key(|kv| kv.mod_revision)
        .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
        .unwrap();
    assert_eq!(candidates.kvs.len(), 2, "both routers are candidates");
    let (dead, alive) = if leader == fleet.routers[0].id {
        (0, 1)
    } else {
        (1, 0)
    };
    assert_eq!(
        fleet
            .router_metric(dead, "shardline_placement_leader")
            .await,
        1.0
    );
    fleet.routers[dead].kill().await.unwrap();
    // Controller lease TTL is 3 s.
    eventually(
        "takeover within the lease TTL",
        Duration::from_secs(5),
        || async {
            fleet
                .router_metric(alive, "shardline_placement_leader")
                .await
                == 1.0
        },
    )
    .await;

    let victim = assignments(&fleet).await[0].1.workers[0].clone();
    let w = fleet
        .workers
        .iter()
        .position(|w| w.id == victim.as_str())
        .unwrap();
    fleet.workers[w].kill().await.unwrap();
    wait_repaired(&fleet, 2, &victim, Duration::from_secs(6)).await;
    for (key, model) in &targets {
        let r = fleet
            .infer(alive, key, model, &shardline_testkit::fleet::rows(1, 0))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}
