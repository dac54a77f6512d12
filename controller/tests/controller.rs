//! The placement controller against real etcd and real workers: election and failover,
//! fencing, placing a new model, repair with prefetch, drain, and idempotence.
#![allow(clippy::unwrap_used)]

mod support_ctl;

use std::time::Duration;

use shardline_controller::{
    ApplyError, Candidacy, Fence, HttpPrefetcher, apply, drained, is_leader,
};
use shardline_shared::ids::WorkerId;
use shardline_shared::metrics as names;
use shardline_shared::placement::place;
use shardline_shared::records::AdminState;
use shardline_testkit::TOKEN;
use shardline_testkit::wait::eventually;
use support_ctl::Fleet;

const TTL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_leader_and_a_crashed_one_is_replaced_within_the_ttl() {
    let fleet = Fleet::start().await;
    let a = fleet.router("router-a", TTL).await;
    let b = fleet.router("router-b", TTL).await;
    eventually("exactly one leader", Duration::from_secs(5), || async {
        a.controller.is_leader() != b.controller.is_leader()
    })
    .await;
    // Still exactly one a little later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(a.controller.is_leader() != b.controller.is_leader());
    let (leader, follower) = if a.controller.is_leader() {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(leader.metric(names::PLACEMENT_LEADER), 1.0);
    assert_eq!(follower.metric(names::PLACEMENT_LEADER), 0.0);
    // The leader wrote the default placement parameters.
    assert!(fleet.snapshot().placement_record().is_some());

    // A crash: tasks stop, the lease is left to expire.
    let crashed = std::time::Instant::now();
    drop(leader);
    let mut leadership = follower.controller.leadership();
    tokio::time::timeout(TTL + Duration::from_secs(1), leadership.wait_for(|l| *l))
        .await
        .expect("the follower did not take over within TTL + 1 s")
        .unwrap();
    eprintln!("failover took {:?}", crashed.elapsed());

    // A clean shutdown hands over at once: a new replica leads well within the TTL.
    let c = fleet.router("router-c", TTL).await;
    follower.controller.shutdown().await;
    let mut leadership = c.controller.leadership();
    tokio::time::timeout(Duration::from_secs(1), leadership.wait_for(|l| *l))
        .await
        .expect("no handover after a clean shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_cannot_write() {
    let fleet = Fleet::start().await;
    let _w = fleet.worker("w1").await;
    fleet.publish("acme", "risk", "1").await;
    let old = Candidacy::start(fleet.cp.clone(), "router-old".into(), TTL);
    let fence: Fence = old
        .fence()
        .wait_for(Option::is_some)
        .await
        .unwrap()
        .clone()
        .unwrap();
    let (snap, _) = fleet
        .wait_for(Duration::from_secs(2), |s| is_leader(s, Some(&fence)))
        .await;
    let plan = place(&snap.placement_problem(), &snap.placement_params().unwrap());

    drop(old); // crash; after the TTL its key is gone and someone else may lead
    let new = Candidacy::start(fleet.cp.clone(), "router-new".into(), TTL);
    let new_fence = new
        .fence()
        .wait_for(Option::is_some)
        .await
        .unwrap()
        .clone()
        .unwrap();
    fleet
        .wait_for(TTL + Duration::from_secs(2), |s| {
            is_leader(s, Some(&new_fence))
        })
        .await;

    let prefetcher = HttpPrefetcher::new(TOKEN, Duration::from_secs(5));
    let err = apply(&fleet.cp, &snap, &plan, &prefetcher, Some(&fence))
        .await
        .unwrap_err();
    assert!(matches!(err, ApplyError::Deposed(_)), "{err}");
    assert!(fleet.snapshot().assignments().is_empty());
    // The same plan with the live fence goes through.
    let report = apply(&fleet.cp, &snap, &plan, &prefetcher, Some(&new_fence))
        .await
        .unwrap();
    assert_eq!(report.created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_model_is_placed_within_two_seconds() {
    let fleet = Fleet::start().await;
    let workers = [
        fleet.worker("w1").await,
        fleet.worker("w2").await,
        fleet.worker("w3").await,
    ];
    let router = fleet.router("router-a", TTL).await;
    let mut leadership = router.controller.leadership();
    leadership.wait_for(|l| *l).await.unwrap();

    let model = fleet.publish("acme", "risk", "1").await;
    let (snap, took) = fleet
        .wait_for(Duration::from_secs(2), |s| {
            s.assignments().contains_key(&model)
        })
        .await;
    let a = &snap.assignments()[&model].value;
    eprintln!("placed in {took:?}: {a:?}");
    // default k = 4, n = 3
    assert_eq!(a.workers.len(), 3);
    assert_eq!(a.epoch, 1);
    assert!(a.previous.is_empty());
    // No prefetch for a new model: workers load it on first use.
    for w in &workers {
        assert!(w.resident().await.is_empty());
    }
    assert_eq!(router.metric(names::PLACEMENT_SHARDS), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_member_is_replaced_by_a_worker_that_already_holds_the_model() {
    let fleet = Fleet::start().await;
    fleet.placement_k(2).await;
    let mut workers = vec![
        fleet.worker("w1").await,
        fleet.worker("w2").await,
        fleet.worker("w3").await,
    ];
    let _router = fleet.router("router-a", TTL).await;
    let model = fleet.publish("acme", "risk", "1").await;
    let (snap, _) = fleet
        .wait_for(Duration::from_secs(3), |s| {
            s.assignments().contains_key(&model)
        })
        .await;
    let before = snap.assignments()[&model].value.clone();
    assert_eq!(before.workers.len(), 2);
    let spare = workers
        .iter()
        .position(|w| !before.workers.iter().any(|m| m.as_str() == w.id))
        .unwrap();
    let spare_id: WorkerId = workers[spare].id.parse().unwrap();
    let victim = workers
        .iter()
        .position(|w| w.id == before.workers[0].as_str())
        .unwrap();
    workers.remove(victim).stop().await;
    let spare = workers.iter().find(|w| w.id == spare_id.as_str()).unwrap();

    let (snap, took) = fleet
        .wait_for(TTL + Duration::from_secs(2), |s| {
            s.assignments()
                .get(&model)
                .is_some_and(|a| a.value.workers.contains(&spare_id))
        })
        .await;
    // At the moment the assignment first names the new member it already holds the model.
    let resident = spare.resident().await;
    eprintln!("repaired in {took:?}; resident on the new member: {resident:?}");
    assert_eq!(resident, vec!["acme.risk".to_owned()]);
    let after = &snap.assignments()[&model].value;
    assert_eq!(after.workers.len(), 2);
    assert_eq!(after.epoch, before.epoch + 1);
    assert!(after.previous.is_empty(), "a stopped worker cannot serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_serves_until_its_replacements_are_warm_then_holds_nothing() {
    let fleet = Fleet::start().await;
    fleet.placement_k(2).await;
    let _workers = [
        fleet.worker("w1").await,
        fleet.worker("w2").await,
        fleet.worker("w3").await,
        fleet.worker("w4").await,
    ];
    let _router = fleet.router("router-a", TTL).await;
    let mut models = Vec::new();
    for m in ["risk", "fraud", "churn"] {
        models.push(fleet.publish("acme", m, "1").await);
    }
    let (snap, _) = fleet
        .wait_for(Duration::from_secs(3), |s| {
            models.iter().all(|m| s.assignments().contains_key(m))
        })
        .await;
    let victim = snap.assignments()[&models[0]].value.workers[0].clone();
    let held: Vec<_> = models
        .iter()
        .filter(|m| snap.assignments()[*m].value.workers.contains(&victim))
        .cloned()
        .collect();
    fleet
        .cp
        .set_worker_admin(&victim, AdminState::Draining)
        .await
        .unwrap();

    // Moved away, with the draining worker kept in `previous` meanwhile.
    let (snap, _) = fleet
        .wait_for(Duration::from_secs(5), |s| {
            held.iter().all(|m| {
                let a = &s.assignments()[m].value;
                !a.workers.contains(&victim)
            })
        })
        .await;
    for m in &held {
        let a = &snap.assignments()[m].value;
        assert!(
            a.previous.contains(&victim) || a.previous.is_empty(),
            "{a:?}"
        );
    }
    assert!(
        held.iter()
            .any(|m| snap.assignments()[m].value.previous.contains(&victim)),
        "the draining worker should still serve right after the swap"
    );
    // Then (new members warm, or the 3 s grace over) it holds nothing.
    let (snap, took) = fleet
        .wait_for(Duration::from_secs(8), |s| drained(s).contains(&victim))
        .await;
    eprintln!("drained {victim} in {took:?}");
    for a in snap.assignments().values() {
        assert!(!a.value.workers.contains(&victim) && !a.value.previous.contains(&victim));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converged_fleet_is_left_alone() {
    let fleet = Fleet::start().await;
    fleet.placement_k(2).await;
    let _workers = [
        fleet.worker("w1").await,
        fleet.worker("w2").await,
        fleet.worker("w3").await,
    ];
    let router = fleet.router("router-a", TTL).await;
    let mut models = Vec::new();
    for m in ["risk", "fraud", "churn", "spam"] {
        models.push(fleet.publish("acme", m, "1").await);
    }
    fleet
        .wait_for(Duration::from_secs(3), |s| {
            models.iter().all(|m| s.assignments().contains_key(m))
        })
        .await;
    // Several ticks of the running controller write nothing.
    let revision = fleet.revision().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fleet.revision().await, revision);
    // Nor does an explicit pass over the same state.
    let snap = fleet.watcher.wait_for_revision(revision).await;
    let plan = place(&snap.placement_problem(), &snap.placement_params().unwrap());
    let prefetcher = HttpPrefetcher::new(TOKEN, Duration::from_secs(5));
    let report = apply(&fleet.cp, &snap, &plan, &prefetcher, None)
        .await
        .unwrap();
    assert_eq!(report.writes(), 0, "{report:?}");
    assert_eq!(fleet.revision().await, revision);
    assert_eq!(router.metric(names::PLACEMENT_SHARDS), 4.0);
    assert_eq!(router.metric(names::PLACEMENT_VIOLATIONS), 0.0);
}
