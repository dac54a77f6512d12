//! The executor and the election against the in-memory store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardline_control::store::{KvStore, Op, Txn, TxnOutcome};
use shardline_control::{ControlMetrics, ControlPlane, MemStore, SnapshotWatcher};
use shardline_shared::ids::{ModelKey, VersionId};
use shardline_shared::keys::Prefix;
use shardline_shared::records::Assignment;
use shardline_shared::snapshot::Snapshot;

use super::super::balance::plan_pass;
use super::super::decide::Clock;
use super::super::election::{Candidacy, is_leader};
use super::super::executor::{ApplyError, Fence, apply, execute};
use super::super::metrics::ControllerMetrics;
use super::super::prefetch::{Prefetch, PrefetchError};
use super::plan;
use super::world::{World, ids, mk};

type Calls = Arc<Mutex<Vec<(String, Option<Assignment>)>>>;

/// Records each prefetch with the assignment stored at that moment, and answers `answer`.
#[derive(Debug, Clone)]
struct Recorder {
    store: MemStore,
    answer: Option<PrefetchError>,
    calls: Calls,
}

impl Prefetch for Recorder {
    async fn prefetch(
        &self,
        address: &str,
        model: &ModelKey,
        _version: &VersionId,
    ) -> Result<(), PrefetchError> {
        let stored = self
            .store
            .get(&format!("/shardline/assignments/{model}"))
            .await
            .unwrap()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap());
        self.calls.lock().unwrap().push((address.into(), stored));
        self.answer.clone().map_or(Ok(()), Err)
    }
}

async fn load(world: &World) -> (MemStore, ControlPlane) {
    let store = MemStore::new();
    let mut txn = Txn::new();
    for (k, v) in world.kvs() {
        txn = txn.op(Op::put(k, v));
    }
    for (m, (a, _)) in &world.assignments {
        txn = txn.op(Op::put(
            format!("/shardline/assignments/{m}"),
            serde_json::to_vec(a).unwrap(),
        ));
    }
    store.txn(txn).await.unwrap();
    let cp = ControlPlane::new(Arc::new(store.clone()), Prefix::default());
    (store, cp)
}

async fn snapshot(store: &MemStore) -> Snapshot {
    let listing = store.list("/shardline/").await.unwrap();
    Snapshot::from_kvs(
        Prefix::default(),
        listing.revision,
        listing
            .kvs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision)),
    )
    .0
}

fn repair_world() -> World {
    World::new(2)
        .worker("w1")
        .worker("w3")
        .model("acme/risk", "1")
        .assign("acme/risk", &["w1", "w2"], 1, &[])
}

fn recorder(store: &MemStore, answer: Option<PrefetchError>) -> Recorder {
    Recorder {
        store: store.clone(),
        answer,
        calls: Arc::default(),
    }
}

#[tokio::test]
async fn the_new_member_is_prefetched_before_the_assignment_names_it() {
    let (store, cp) = load(&repair_world()).await;
    let snap = snapshot(&store).await;
    let rec = recorder(&store, None);
    let report = apply(&cp, &snap, &plan(&snap), &rec, None).await.unwrap();
    assert_eq!((report.swapped, report.moves), (1, 1));
    let calls = rec.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "w3.test:1");
    assert_eq!(calls[0].1.as_ref().unwrap().workers, ids(&["w1", "w2"]));
    let after = snapshot(&store).await;
    let stored = &after.assignments()[&mk("acme/risk")].value;
    assert_eq!(
        (stored.workers.clone(), stored.epoch),
        (ids(&["w1", "w3"]), 2)
    );

    // Idempotent: a second pass on the new state writes nothing.
    let revision = after.revision();
    let report = apply(&cp, &after, &plan(&after), &rec, None).await.unwrap();
    assert_eq!(report.writes(), 0);
    assert_eq!(snapshot(&store).await.revision(), revision);
}

#[tokio::test]
async fn a_transient_prefetch_failure_defers_the_swap() {
    let (store, cp) = load(&repair_world()).await;
    let snap = snapshot(&store).await;
    let rec = recorder(&store, Some(PrefetchError::Transient("503".into())));
    let report = apply(&cp, &snap, &plan(&snap), &rec, None).await.unwrap();
    assert_eq!((report.deferred, report.writes()), (1, 0));
    assert_eq!(snapshot(&store).await.revision(), snap.revision());
}

#[tokio::test]
async fn a_permanent_prefetch_failure_swaps_anyway() {
    let (store, cp) = load(&repair_world()).await;
    let snap = snapshot(&store).await;
    let rec = recorder(&store, Some(PrefetchError::Permanent("502".into())));
    let report = apply(&cp, &snap, &plan(&snap), &rec, None).await.unwrap();
    assert_eq!(report.swapped, 1);
}

/// Four single-member shards on w0, none on w1: one balancing swap onto w1.
async fn balancing_swap(answer: Option<PrefetchError>) -> (MemStore, Snapshot, Recorder) {
    let mut world = World::new(1).worker("w0").worker("w1");
    for i in 0..4 {
        let shard = format!("t{i}/m");
        world = world.model(&shard, "1").assign(&shard, &["w0"], 1, &[]);
    }
    let (store, cp) = load(&world).await;
    let snap = snapshot(&store).await;
    let since = Default::default();
    let clock = Clock {
        now: std::time::Instant::now(),
        grace: Duration::ZERO,
        since: &since,
    };
    let pass = plan_pass(&snap, &snap.placement_params().unwrap(), &clock, 1);
    assert_eq!(pass.balancing, 1, "{:?}", pass.actions);
    let rec = recorder(&store, answer);
    let metrics = ControllerMetrics::unregistered().unwrap();
    let report = execute(&cp, &snap, pass.actions, &rec, None, Some(&metrics))
        .await
        .unwrap();
    assert_eq!(report.balanced as u64, metrics.balance_moves.get());
    (store, snap, rec)
}

#[tokio::test]
async fn a_balancing_swap_names_the_new_member_only_once_it_holds_the_model() {
    let (store, snap, rec) = balancing_swap(None).await;
    let calls = rec.calls.lock().unwrap().clone();
    let [(address, Some(stored))] = calls.as_slice() else {
        panic!("{calls:?}");
    };
    assert_eq!(address, "w1.test:1");
    assert_eq!(stored.workers, ids(&["w0"]), "prefetched before the write");
    let after = snapshot(&store).await;
    let moved: Vec<_> = after
        .assignments()
        .values()
        .filter(|a| a.value.workers == ids(&["w1"]))
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        moved[0].value.previous,
        ids(&["w0"]),
        "w0 serves until w1 is warm"
    );
    assert_eq!(after.revision(), snap.revision() + 1);
}

#[tokio::test]
async fn a_balancing_swap_whose_prefetch_fails_for_good_is_not_made() {
    for answer in [
        PrefetchError::Permanent("507".into()),
        PrefetchError::Transient("503".into()),
    ] {
        let (store, snap, rec) = balancing_swap(Some(answer)).await;
        assert_eq!(rec.calls.lock().unwrap().len(), 1);
        assert_eq!(
            snapshot(&store).await.revision(),
            snap.revision(),
            "never cold"
        );
    }
}

#[tokio::test]
async fn a_stale_fence_refuses_every_write() {
    let world = World::new(2).worker("w1").model("acme/risk", "1");
    let (store, cp) = load(&world).await;
    let key = "/shardline/controller/1".to_owned();
    let TxnOutcome::Applied { revision } = store
        .txn(Txn::new().op(Op::put(key.clone(), "r1")))
        .await
        .unwrap()
    else {
        panic!("refused");
    };
    let fence = Fence {
        key: key.clone(),
        mod_revision: revision,
    };
    store
        .txn(Txn::new().op(Op::put(key.clone(), "r2")))
        .await
        .unwrap();
    let snap = snapshot(&store).await;
    let rec = recorder(&store, None);
    let err = apply(&cp, &snap, &plan(&snap), &rec, Some(&fence))
        .await
        .unwrap_err();
    assert_eq!(err, ApplyError::Deposed(key));
    assert!(snapshot(&store).await.assignments().is_empty());

    let current = Fence {
        mod_revision: snap.controllers()["1"].mod_revision,
        ..fence
    };
    let report = apply(&cp, &snap, &plan(&snap), &rec, Some(&current))
        .await
        .unwrap();
    assert_eq!(report.created, 1);
}

#[tokio::test]
async fn the_oldest_candidate_leads_and_a_lost_lease_hands_over() {
    let store = MemStore::new();
    let arc: Arc<dyn KvStore> = Arc::new(store.clone());
    let cp = ControlPlane::new(arc.clone(), Prefix::default());
    let watcher = SnapshotWatcher::spawn(
        arc,
        Prefix::default(),
        ControlMetrics::unregistered().unwrap(),
    );
    let a = Candidacy::start(cp.clone(), "router-a".into(), Duration::from_secs(5));
    let mut fa = a.fence();
    let fence_a = fa.wait_for(Option::is_some).await.unwrap().clone().unwrap();
    let b = Candidacy::start(cp.clone(), "router-b".into(), Duration::from_secs(5));
    let mut fb = b.fence();
    let fence_b = fb.wait_for(Option::is_some).await.unwrap().clone().unwrap();
    let snap = watcher.wait_for_revision(fence_b.mod_revision).await;
    assert!(is_leader(&snap, Some(&fence_a)));
    assert!(!is_leader(&snap, Some(&fence_b)));
    assert_eq!(snap.controllers().len(), 2);

    let lease = i64::from_str_radix(fence_a.key.rsplit('/').next().unwrap(), 16).unwrap();
    store.expire_lease(lease);
    let snap = watcher.wait_for_revision(fence_b.mod_revision + 1).await;
    assert!(is_leader(&snap, Some(&fence_b)));
    assert!(
        !is_leader(&snap, Some(&fence_a)),
        "a deposed leader does not lead"
    );

    b.shutdown().await;
    let snap = watcher.wait_for_revision(fence_b.mod_revision + 2).await;
    assert!(snap.controllers().is_empty() || !is_leader(&snap, Some(&fence_b)));
    drop(a);
}
