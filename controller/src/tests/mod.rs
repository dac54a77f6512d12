//! Examples and invariants of [`decide`], on snapshots built by hand.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shardline_shared::ids::{ModelKey, WorkerId};
use shardline_shared::placement::{Plan, place};
use shardline_shared::snapshot::Snapshot;

use super::decide::{Action, Clock, decide, drained};

mod balance;
mod converge;
mod exec;
mod world;

use world::{World, ids, mk};

fn plan(snap: &Snapshot) -> Plan {
    place(&snap.placement_problem(), &snap.placement_params().unwrap())
}

fn decide_at(
    snap: &Snapshot,
    grace: Duration,
    since: &BTreeMap<ModelKey, (u64, Instant)>,
) -> Vec<Action> {
    let clock = Clock {
        now: Instant::now(),
        grace,
        since,
    };
    decide(snap, &plan(snap), &clock)
}

fn decide_now(snap: &Snapshot) -> Vec<Action> {
    decide_at(snap, Duration::from_secs(10), &BTreeMap::new())
}

#[test]
fn a_new_model_gets_min_k_n_members_at_epoch_1_without_prefetch() {
    let w = World::new(3)
        .worker("w1")
        .worker("w2")
        .model("acme/risk", "1");
    let actions = decide_now(&w.snap());
    let [
        Action::Write {
            model,
            assignment,
            expected: None,
            added: 2,
        },
    ] = actions.as_slice()
    else {
        panic!("{actions:?}");
    };
    assert_eq!(*model, mk("acme/risk"));
    assert_eq!(assignment.epoch, 1);
    assert_eq!(assignment.workers.len(), 2);
    assert!(assignment.previous.is_empty());
}

#[test]
fn a_dead_member_is_replaced_after_a_prefetch_on_the_new_one_only() {
    let w = World::new(2)
        .worker("w1")
        .worker("w3")
        .model("acme/risk", "1")
        .assign("acme/risk", &["w1", "w2"], 4, &[]);
    let actions = decide_now(&w.snap());
    let [
        Action::Swap {
            warm,
            assignment,
            version,
            ..
        },
    ] = actions.as_slice()
    else {
        panic!("{actions:?}");
    };
    assert_eq!(*warm, ids(&["w3"]));
    assert_eq!(version.as_str(), "1");
    assert_eq!(assignment.workers, ids(&["w1", "w3"]));
    assert_eq!(assignment.epoch, 5);
    assert!(assignment.previous.is_empty(), "a dead member cannot serve");
}

#[test]
fn a_draining_member_stays_in_previous_until_its_replacement_is_warm() {
    let mut w = World::new(2)
        .worker("w1")
        .worker("w2")
        .worker("w3")
        .model("acme/risk", "1")
        .assign("acme/risk", &["w1", "w2"], 1, &[]);
    w.admin.insert("w2".into(), "draining");
    let actions = decide_now(&w.snap());
    let [Action::Swap { assignment, .. }] = actions.as_slice() else {
        panic!("{actions:?}");
    };
    assert_eq!(assignment.previous, ids(&["w2"]));
    w.apply(&actions);
    assert!(drained(&w.snap()).is_empty(), "w2 still named in previous");
    // w1 never loaded the model (lazy), so only the grace period clears previous.
    assert_eq!(decide_now(&w.snap()), vec![]);
    let since = BTreeMap::from([(
        mk("acme/risk"),
        (2, Instant::now() - Duration::from_secs(11)),
    )]);
    let actions = decide_at(&w.snap(), Duration::from_secs(10), &since);
    let [Action::ClearPrevious { assignment, .. }] = actions.as_slice() else {
        panic!("{actions:?}");
    };
    assert!(assignment.previous.is_empty());
    assert_eq!(assignment.epoch, 3);
    w.apply(&actions);
    assert_eq!(drained(&w.snap()), ids(&["w2"]));
}

#[test]
fn previous_is_cleared_once_every_member_reports_the_live_version() {
    let mut w = World::new(2)
        .worker("w1")
        .worker("w2")
        .worker("w3")
        .model("acme/risk", "2")
        .assign("acme/risk", &["w1", "w3"], 3, &["w2"]);
    w.workers
        .get_mut("w3")
        .unwrap()
        .push(("acme/risk".into(), "2".into()));
    w.workers
        .get_mut("w1")
        .unwrap()
        .push(("acme/risk".into(), "1".into()));
    assert_eq!(decide_now(&w.snap()), vec![], "w1 holds an old version");
    w.workers
        .get_mut("w1")
        .unwrap()
        .push(("acme/risk".into(), "2".into()));
    let actions = decide_now(&w.snap());
    assert!(
        matches!(&actions[..], [Action::ClearPrevious { assignment, .. }] if assignment.previous.is_empty())
    );
}

#[test]
fn previous_members_that_died_are_dropped_at_once() {
    let w = World::new(2)
        .worker("w1")
        .worker("w3")
        .model("acme/risk", "1")
        .assign("acme/risk", &["w1", "w3"], 3, &["w2"]);
    let actions = decide_now(&w.snap());
    assert!(
        matches!(&actions[..], [Action::ClearPrevious { assignment, expected, .. }]
            if assignment.previous.is_empty() && *expected == w.assignments[&mk("acme/risk")].1)
    );
}

#[test]
fn assignments_of_models_without_a_live_version_are_deleted() {
    let w = World::new(2)
        .worker("w1")
        .assign("gone/model", &["w1"], 1, &[]);
    let rev = w.assignments[&mk("gone/model")].1;
    assert_eq!(
        decide_now(&w.snap()),
        vec![Action::Delete {
            model: mk("gone/model"),
            expected: rev
        }]
    );
}

#[test]
fn no_worker_at_all_writes_nothing() {
    let w = World::new(2)
        .model("acme/risk", "1")
        .model("acme/fraud", "1")
        .assign("acme/risk", &["w1"], 1, &[]);
    assert_eq!(decide_now(&w.snap()), vec![]);
}

fn arb_world() -> impl Strategy<Value = World> {
    (
        1u32..4,
        prop::collection::vec((any::<bool>(), 0u8..4), 1..7),
        prop::collection::vec(
            (
                any::<bool>(),
                any::<bool>(),
                prop::collection::vec(0usize..8, 0..4),
                prop::collection::vec(0usize..8, 0..2),
            ),
            0..6,
        ),
    )
        .prop_map(|(k, workers, models)| {
            let mut w = World::new(k);
            for (i, (live, admin)) in workers.iter().enumerate() {
                let id = format!("w{i}");
                if *live {
                    w.workers.insert(id.clone(), vec![]);
                }
                match admin {
                    0 => {
                        w.admin.insert(id, "draining");
                    }
                    1 => {
                        w.admin.insert(id, "cordoned");
                    }
                    _ => {}
                }
            }
            for (i, (published, assigned, members, previous)) in models.iter().enumerate() {
                let shard = format!("t{i}/m");
                if *published {
                    w.models.insert(shard.clone(), "1".into());
                }
                if *assigned {
                    let mut m: Vec<String> = members.iter().map(|x| format!("w{x}")).collect();
                    m.dedup();
                    let p: Vec<String> = previous
                        .iter()
                        .map(|x| format!("w{x}"))
                        .filter(|x| !m.contains(x))
                        .collect();
                    let m: Vec<&str> = m.iter().map(String::as_str).collect();
                    let p: Vec<&str> = p.iter().map(String::as_str).collect();
                    w = w.assign(&shard, &m, 1, &p);
                }
            }
            w
        })
}

fn check_invariants(snap: &Snapshot, actions: &[Action]) -> Result<(), TestCaseError> {
    for a in actions {
        let stored = snap.assignments().get(a.model());
        let written = match a {
            Action::Write {
                assignment,
                expected,
                ..
            } => {
                prop_assert_eq!(*expected, stored.map(|s| s.mod_revision));
                Some(assignment)
            }
            Action::Swap {
                assignment,
                warm,
                expected,
                ..
            } => {
                let stored = stored.unwrap();
                prop_assert_eq!(*expected, stored.mod_revision);
                let new: Vec<WorkerId> = assignment
                    .workers
                    .iter()
                    .filter(|w| !stored.value.workers.contains(w))
                    .cloned()
                    .collect();
                prop_assert_eq!(warm, &new, "prefetch targets are exactly the new members");
                prop_assert!(!warm.is_empty());
                Some(assignment)
            }
            Action::ClearPrevious {
                assignment,
                expected,
                ..
            } => {
                prop_assert_eq!(*expected, stored.unwrap().mod_revision);
                Some(assignment)
            }
            Action::Delete { .. } => None,
        };
        if let Some(a) = written {
            prop_assert!(!a.workers.is_empty());
            for p in &a.previous {
                prop_assert!(!a.workers.contains(p), "previous names a member");
                prop_assert!(
                    snap.workers().contains_key(p),
                    "previous names a dead worker"
                );
            }
            prop_assert_eq!(a.epoch, stored.map_or(1, |s| s.value.epoch + 1));
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn decide_keeps_its_invariants_and_converges(world in arb_world()) {
        let mut w = world;
        let none = BTreeMap::new();
        let mut rounds = 0;
        loop {
            let snap = w.snap();
            let actions = decide_at(&snap, Duration::ZERO, &none);
            check_invariants(&snap, &actions)?;
            if actions.is_empty() {
                break;
            }
            rounds += 1;
            prop_assert!(rounds <= 3, "not converged after 3 rounds: {:?}", actions);
            w.apply(&actions);
        }
        // Converged: the stored shards are the plan, and nothing is left to drain.
        let snap = w.snap();
        let plan = plan(&snap);
        for (m, members) in &plan.shards {
            if !members.is_empty() {
                prop_assert_eq!(&snap.assignments()[m].value.workers, members);
            }
        }
        // (A shard nobody can hold keeps its stored members, draining or not.)
        if plan.shards.values().all(|m| !m.is_empty()) {
            for d in w.admin.iter().filter(|(_, s)| **s == "draining").map(|(w, _)| w) {
                prop_assert!(drained(&snap).iter().any(|x| x.as_str() == d));
            }
        }
    }

    #[test]
    fn a_state_that_matches_the_plan_yields_nothing(world in arb_world()) {
        let mut w = world;
        let none = BTreeMap::new();
        for _ in 0..4 {
            let actions = decide_at(&w.snap(), Duration::ZERO, &none);
            w.apply(&actions);
        }
        let snap = w.snap();
        prop_assert_eq!(decide_at(&snap, Duration::ZERO, &none), vec![]);
        prop_assert_eq!(decide_at(&snap, Duration::MAX, &none), vec![]);
    }
}
