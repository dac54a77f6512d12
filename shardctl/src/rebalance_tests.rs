#![allow(clippy::unwrap_used)]

use super::*;
use crate::fixture::World;

const PAIRS: [(&str, &str); 6] = [
    ("w-0", "w-1"),
    ("w-2", "w-3"),
    ("w-0", "w-2"),
    ("w-1", "w-3"),
    ("w-0", "w-3"),
    ("w-1", "w-2"),
];

/// Twelve k=2 shards spread evenly over w-0..w-3 (six slots each), plus `extra` workers.
fn fleet(extra: &[&str]) -> World {
    let mut w = World::new().tenant("acme", Some(2));
    for id in ["w-0", "w-1", "w-2", "w-3"].iter().chain(extra) {
        w = w.worker(id);
    }
    for i in 0..12 {
        let (a, b) = PAIRS[i % PAIRS.len()];
        let m = format!("m{i:02}");
        w = w.model("acme", &m).assignment("acme", &m, &[a, b], &[]);
    }
    w
}

#[test]
fn a_balanced_fleet_plans_nothing() {
    let (_, p) = plan_rebalance(&fleet(&[]).snapshot(), None).unwrap();
    assert!(p.changes.is_empty(), "{p:?}");
    assert_eq!(p.moves, 0);
    assert_eq!((p.before.min, p.before.max), (6, 6));
    assert!(render(&p).starts_with("nothing to move at revision 42"));
}

#[test]
fn a_new_worker_receives_shards_and_only_it() {
    let (plan, p) = plan_rebalance(&fleet(&["w-4"]).snapshot(), None).unwrap();
    assert!(!p.changes.is_empty());
    for c in &p.changes {
        assert_eq!(c.added, [WorkerId::new("w-4").unwrap()], "{c:?}");
        assert_eq!(c.removed.len(), 1, "{c:?}");
        assert!(c.workers.contains(&c.added[0]));
    }
    assert_eq!(p.moves, p.changes.len());
    assert_eq!((p.before.min, p.before.max, p.before.workers), (0, 6, 5));
    assert!(p.after.max <= p.after.cap, "{:?}", p.after);
    assert!(p.after.min >= 4, "{:?}", p.after);
    assert!(plan.violations.is_empty());
    let text = render(&p);
    assert!(text.contains(" +w-4\n"), "{text}");
    assert!(text.contains("acme/m"), "{text}");
    assert!(text.contains("before min 0 / avg 4.8 / max 6"), "{text}");
}

#[test]
fn max_moves_limits_the_churn() {
    let (_, p) = plan_rebalance(&fleet(&["w-4"]).snapshot(), Some(2)).unwrap();
    assert_eq!(p.moves, 2);
}

#[test]
fn cordoned_and_draining_workers_receive_nothing() {
    let snap = fleet(&["w-4", "w-5"])
        .admin("w-4", "cordoned")
        .admin("w-5", "draining")
        .snapshot();
    let (_, p) = plan_rebalance(&snap, None).unwrap();
    assert!(p.changes.is_empty(), "{p:?}");
    assert_eq!(p.before.workers, 4);
}

#[test]
fn applied_json_has_the_plan_and_the_outcome() {
    let (_, p) = plan_rebalance(&fleet(&["w-4"]).snapshot(), None).unwrap();
    let v = json_of(&p, None);
    assert!(v["applied"].is_null());
    assert_eq!(v["changes"][0]["added"][0], "w-4");
    assert_eq!(v["revision"], 42);
    let applied = Applied {
        writes: 3,
        swapped: 3,
        moves: 3,
        conflicts: 0,
        deferred: 0,
        failed: 0,
        revision: 50,
    };
    assert_eq!(json_of(&p, Some(&applied))["applied"]["swapped"], 3);
}
