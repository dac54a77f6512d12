//! Continuous balance against real etcd and real workers: workers that join a placed
//! fleet get their share on the controller's own, within its move limit, and no
//! assignment names a new member before that member holds the model.
#![allow(clippy::unwrap_used)]

mod support_ctl;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use shardline_control::store::{Event, WatchItem};
use shardline_shared::ids::{ModelKey, WorkerId};
use shardline_shared::keys::{Prefix, Section};
use shardline_shared::metrics as names;
use shardline_shared::records::Assignment;
use shardline_testkit::wait::eventually;
use support_ctl::Fleet;

const TTL: Duration = Duration::from_secs(2);
/// The controller's limit in this test: 2 balancing moves in any 3 s.
const LIMIT: usize = 2;
const WINDOW: Duration = Duration::from_secs(3);
/// Most time between a commit and this test seeing it on its watch (loopback, no load):
/// moves seen less than `WINDOW - LAG` apart were committed less than `WINDOW` apart.
const LAG: Duration = Duration::from_millis(500);

/// Slots per worker in `stored` (workers that hold none included).
fn loads<'a>(stored: &'a BTreeMap<ModelKey, Assignment>, ids: &[&'a str]) -> Vec<usize> {
    ids.iter()
        .map(|id| {
            stored
                .values()
                .filter(|a| a.workers.iter().any(|w| w.as_str() == *id))
                .count()
        })
        .collect()
}

/// max/avg ≤ 1.05 and min/avg ≥ 0.95.
fn in_band(loads: &[usize]) -> bool {
    let (n, total) = (loads.len(), loads.iter().sum::<usize>());
    let (max, min) = (loads.iter().max().unwrap(), loads.iter().min().unwrap());
    max * n * 1000 <= 1050 * total && min * n * 1000 >= 950 * total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_join_get_their_share_within_the_move_limit_and_only_warm() {
    let fleet = Fleet::start().await;
    fleet.placement_k(2).await;
    let ids = ["w1", "w2", "w3"];
    let mut workers = BTreeMap::new();
    for id in &ids[..2] {
        workers.insert(*id, fleet.worker(id).await);
    }
    let router = fleet
        .router_with("router-a", TTL, |c| {
            c.balance_moves = LIMIT as u32;
            c.balance_window = WINDOW;
        })
        .await;
    let mut models = Vec::new();
    for i in 0..6 {
        models.push(fleet.publish("acme", &format!("m{i}"), "1").await);
    }
    let (snap, _) = fleet
        .wait_for(Duration::from_secs(5), |s| {
            models.iter().all(|m| s.assignments().contains_key(m))
        })
        .await;
    let mut stored: BTreeMap<ModelKey, Assignment> = snap
        .assignments()
        .iter()
        .map(|(k, a)| (k.clone(), a.value.clone()))
        .collect();
    assert_eq!(loads(&stored, &ids), [6, 6, 0]);

    // A worker joins; from here on every assignment write is checked as it is seen.
    let prefix = Prefix::default().section(Section::Assignments);
    let mut history = fleet
        .cp
        .store()
        .watch(&prefix, snap.revision() + 1)
        .await
        .unwrap();
    for id in &ids[2..] {
        workers.insert(*id, fleet.worker(id).await);
    }
    let joined = Instant::now();
    let mut moves: Vec<(Instant, usize)> = Vec::new();
    while !in_band(&loads(&stored, &ids)) {
        let item = tokio::time::timeout(Duration::from_secs(20), history.next())
            .await
            .unwrap_or_else(|_| panic!("stuck at {:?}", loads(&stored, &ids)))
            .unwrap()
            .unwrap();
        let WatchItem::Batch { events, .. } = item else {
            panic!("history compacted");
        };
        for event in events {
            let Event::Put(kv) = event else { continue };
            let model = ModelKey::parse_shard_key(kv.key.strip_prefix(&prefix).unwrap()).unwrap();
            let after: Assignment = serde_json::from_slice(&kv.value).unwrap();
            let before = stored.insert(model.clone(), after.clone()).unwrap();
            let added: Vec<&WorkerId> = after
                .workers
                .iter()
                .filter(|w| !before.workers.contains(w))
                .collect();
            if added.is_empty() {
                continue; // `previous` cleared
            }
            let seen = Instant::now();
            for w in &added {
                // Nothing scores in this test: only a prefetch can have loaded it.
                let resident = workers[w.as_str()].resident().await;
                let name = format!("{}.{}", model.tenant, model.model);
                assert!(
                    resident.contains(&name),
                    "{w} named in {model} before holding it: {resident:?}"
                );
            }
            for w in &before.workers {
                assert!(
                    after.workers.contains(w) || after.previous.contains(w),
                    "{w} dropped from {model} before its replacement was warm: {after:?}"
                );
            }
            moves.push((seen, added.len()));
        }
    }
    let total: usize = moves.iter().map(|m| m.1).sum();
    eprintln!(
        "in the band after {total} moves, {:?} after the joins: loads {:?}",
        joined.elapsed(),
        loads(&stored, &ids)
    );
    assert!(total > LIMIT, "the limit never bound ({total} moves)");
    for (i, (at, _)) in moves.iter().enumerate() {
        let close: usize = moves[i..]
            .iter()
            .take_while(|(t, _)| *t < *at + (WINDOW - LAG))
            .map(|m| m.1)
            .sum();
        assert!(close <= LIMIT, "{close} moves within {WINDOW:?}: {moves:?}");
    }

    eventually("the metrics show the moves", Duration::from_secs(5), || {
        let r = &router;
        async move {
            r.metric(names::PLACEMENT_BALANCE_MOVES_TOTAL) == total as f64
                && r.metric(names::PLACEMENT_LOAD_MAX_RATIO) <= 1.05
                && r.metric(names::PLACEMENT_LOAD_MIN_RATIO) >= 0.95
        }
    })
    .await;
    assert!(
        router.metric(names::PLACEMENT_PREFETCH_TOTAL) >= total as f64,
        "a prefetch per move"
    );

    // In the band, the controller stops moving (it only clears `previous` now).
    let quiet = Instant::now() + WINDOW;
    while let Ok(item) = tokio::time::timeout_at(quiet.into(), history.next()).await {
        let WatchItem::Batch { events, .. } = item.unwrap().unwrap() else {
            panic!("history compacted");
        };
        for event in events {
            let Event::Put(kv) = event else { continue };
            let a: Assignment = serde_json::from_slice(&kv.value).unwrap();
            let model = ModelKey::parse_shard_key(kv.key.strip_prefix(&prefix).unwrap()).unwrap();
            assert_eq!(a.workers, stored[&model].workers, "moved again: {model}");
        }
    }
}
