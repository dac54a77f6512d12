//! Unit tests: scores, parameters, edge cases and regressions; the property tests of
//! the guarantees are in `props.rs`.

mod props;

use std::collections::BTreeMap;

use super::overlap::binomial;
use super::score::{ShardScorer, WorkerWords};
use super::state::load_cap;
use super::*;
use crate::ids::WorkerId;
use crate::records::PlacementConfig;
use props::{check_well_formed, key, over_limit, with_plan};

fn params() -> Params {
    Params::from_config(&PlacementConfig::default()).expect("default config is valid")
}

fn w(name: &str) -> WorkerId {
    WorkerId::new(name).expect("valid worker name")
}

fn active(names: &[&str]) -> Vec<WorkerSlot> {
    names
        .iter()
        .map(|n| WorkerSlot {
            id: w(n),
            keep: true,
            take: true,
        })
        .collect()
}

fn spec(model: &str, k: u32, current: &[&str]) -> ShardSpec {
    ShardSpec {
        key: key("acme", model),
        k,
        current: current.iter().map(|n| w(n)).collect(),
    }
}

#[test]
fn score_is_siphash24_of_length_prefixed_bytes() {
    let p = params();
    let mut msg = Vec::new();
    for part in ["acme/risk", "w1"] {
        msg.extend_from_slice(&(part.len() as u64).to_le_bytes());
        msg.extend_from_slice(part.as_bytes());
    }
    let expected = siphasher::sip::SipHasher24::new_with_keys(p.k0, p.k1).hash(&msg);
    assert_eq!(score(&p, "acme/risk", &w("w1")), expected);
    // Pinned: a change here silently reshuffles every deployment's assignments.
    assert_eq!(score(&p, "acme/risk", &w("w1")), 0xeb9a_14bf_db3d_aab6);
}

#[test]
fn fast_scorer_matches_reference() {
    let p = params();
    let keys = [
        "a/b",
        "tenant-1/model-22",
        "abcdefg/h",
        "x/yyyyyyyyyyyyyyyyyyyyy",
    ];
    for key in keys {
        let scorer = ShardScorer::new(&p, key);
        for name in ["w", "worker-0001", "abcdefgh", &"z".repeat(63)] {
            let fast = scorer.score(&WorkerWords::new(name));
            assert_eq!(fast, score(&p, key, &w(name)), "{key} {name}");
        }
    }
}

#[test]
fn params_come_from_a_valid_config_only() {
    let p = params();
    assert_eq!((p.max_overlap, p.epsilon_permille), (2, 100));
    let bad_seed = PlacementConfig {
        seed: "zz".into(),
        ..PlacementConfig::default()
    };
    assert!(
        Params::from_config(&bad_seed)
            .unwrap_err()
            .contains("32 hex")
    );
    let other_algorithm = PlacementConfig {
        algorithm: "ring".into(),
        ..PlacementConfig::default()
    };
    assert!(Params::from_config(&other_algorithm).is_err());
}

#[test]
fn feasibility_limit_of_the_spec_example() {
    // n = 20, k = 4, m = 2: C(20, 3) / C(4, 3) = 1140 / 4 = 285 shards at most.
    assert_eq!(binomial(20, 3) / binomial(4, 3), 285);
    assert_eq!(binomial(64, 32), 1_832_624_140_942_590_534);
    assert_eq!(binomial(200, 100), u64::MAX, "saturates");
    assert_eq!(binomial(3, 4), 0);
}

#[test]
fn cap_is_a_ceiling_and_saturates() {
    assert_eq!(load_cap(400_000, 1000, 100), 440);
    assert_eq!(load_cap(10, 3, 0), 4);
    assert_eq!(load_cap(9, 3, 0), 3);
    assert_eq!(load_cap(5, 0, 100), 0);
    assert_eq!(load_cap(u64::MAX, 1, 10_000), u32::MAX);
}

#[test]
fn greedy_fill_stays_within_overlap_well_below_the_limit() {
    // The spec's example allows 285 shards; a greedy fill cannot reach a perfect
    // packing, but a third of the limit is placed without any violation.
    let workers: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let names: Vec<&str> = workers.iter().map(String::as_str).collect();
    let problem = Problem {
        workers: active(&names),
        shards: (0..95).map(|i| spec(&format!("m{i}"), 4, &[])).collect(),
    };
    let plan = place(&problem, &params());
    assert!(plan.violations.is_empty(), "{:?}", plan.violations);
    assert!(over_limit(&plan.shards, 2).is_empty());
    assert!(plan.load.max <= plan.load.cap);
}

#[test]
fn dropped_members_are_replaced_in_order() {
    let mut workers = active(&["a", "b", "c", "d", "e"]);
    workers.push(WorkerSlot {
        id: w("cordoned"),
        keep: true,
        take: false,
    });
    workers.push(WorkerSlot {
        id: w("draining"),
        keep: false,
        take: false,
    });
    let problem = Problem {
        workers,
        shards: vec![spec(
            "m",
            4,
            &["draining", "cordoned", "unknown", "cordoned", "a"],
        )],
    };
    let plan = place(&problem, &params());
    check_well_formed(&problem, &plan).expect("well formed");
    let members = &plan.shards[&key("acme", "m")];
    assert_eq!(&members[..2], &[w("cordoned"), w("a")]);
    let removed: Vec<Option<WorkerId>> = plan.moves.iter().map(|m| m.removed.clone()).collect();
    assert_eq!(removed, vec![Some(w("draining")), Some(w("unknown"))]);
}

#[test]
fn shard_larger_than_the_fleet_gets_every_worker() {
    let problem = Problem {
        workers: active(&["a", "b"]),
        shards: vec![spec("m", 5, &[])],
    };
    let plan = place(&problem, &params());
    assert_eq!(plan.shards[&key("acme", "m")].len(), 2);
    assert!(plan.violations.is_empty());
    let none = place(
        &Problem {
            workers: vec![],
            shards: vec![spec("m", 3, &["a"])],
        },
        &params(),
    );
    assert!(none.shards[&key("acme", "m")].is_empty());
    assert_eq!(none.load, LoadStats::default());
}

#[test]
fn lowering_k_trims_from_the_end() {
    let problem = Problem {
        workers: active(&["a", "b", "c", "d"]),
        shards: vec![spec("m", 2, &["c", "a", "d"])],
    };
    let plan = place(&problem, &params());
    assert_eq!(plan.shards[&key("acme", "m")], vec![w("c"), w("a")]);
    assert!(plan.moves.is_empty());
}

#[test]
fn forced_overlap_and_cap_are_reported() {
    // Three shards of three on three workers: every pair is identical.
    let problem = Problem {
        workers: active(&["a", "b", "c"]),
        shards: (0..3).map(|i| spec(&format!("m{i}"), 3, &[])).collect(),
    };
    let p = Params {
        max_overlap: 1,
        epsilon_permille: 0,
        ..params()
    };
    let plan = place(&problem, &p);
    let kinds: Vec<ViolationKind> = plan.violations.iter().map(|v| v.kind).collect();
    assert_eq!(kinds, vec![ViolationKind::OverlapExceeded; 3]);
    // One worker, two shards, cap 1 → the second goes over the cap.
    let p = Params {
        max_overlap: 5,
        epsilon_permille: 0,
        ..params()
    };
    let problem = Problem {
        workers: active(&["a", "b"]),
        shards: (0..3).map(|i| spec(&format!("m{i}"), 1, &[])).collect(),
    };
    let plan = place(&problem, &p);
    assert_eq!(plan.load.cap, 2);
    assert!(plan.violations.is_empty(), "{:?}", plan.violations);
}

#[test]
fn rebalance_fills_a_newcomer_to_the_average() {
    // With k = 3 and m = 2 a worker can serve at most one shard per pair of other
    // workers: 20 workers leave room for far more than the average.
    let names: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let problem = Problem {
        workers: active(&refs),
        shards: (0..200).map(|i| spec(&format!("m{i}"), 3, &[])).collect(),
    };
    let p = params();
    let placed = with_plan(&problem, &place(&problem, &p));
    let mut joined = placed.clone();
    joined.workers.extend(active(&["newcomer"]));
    assert!(place(&joined, &p).moves.is_empty());
    let plan = rebalance(&joined, &p, None);
    let load = plan
        .shards
        .values()
        .filter(|m| m.contains(&w("newcomer")))
        .count();
    assert!(load >= 600 / 21, "newcomer got {load}");
    assert!(plan.load.max <= plan.load.cap);
    assert!(plan.violations.is_empty(), "{:?}", plan.violations);
    let limited = rebalance(&joined, &p, Some(5));
    assert_eq!(limited.moves.len(), 5);
    assert!(limited.moves.iter().all(|m| m.added == w("newcomer")));
}

#[test]
fn stats_of_an_empty_assignment() {
    let stats = overlap_stats(&BTreeMap::new());
    assert_eq!(stats.pairs, 0);
    assert_eq!(stats.histogram, vec![0]);
    let json = serde_json::to_string(&stats).expect("serializes");
    assert!(json.contains("\"identical_pairs\":0"), "{json}");
}

#[test]
fn ranking_a_prefix_agrees_with_ranking_all() {
    use super::score::ScoreTable;
    let p = params();
    // Names of several lengths (several groups), some with long common prefixes
    // (words shared within a group).
    let names: Vec<String> = (0..300)
        .map(|i| match i % 4 {
            0 => format!("w{i}"),
            1 => format!("shardline-worker-pool-a-{i:04}"),
            2 => format!("x{}{i}", "y".repeat(i % 7)),
            _ => format!("worker-{i:04}"),
        })
        .collect();
    let words: Vec<WorkerWords> = names.iter().map(|n| WorkerWords::new(n)).collect();
    let takers: Vec<u32> = (0..300).collect();
    let table = ScoreTable::new(&takers, &words);
    for i in 0..40u32 {
        let key = format!("t{}/m{i}", "q".repeat(i as usize % 9));
        let scorer = ShardScorer::new(&p, &key);
        let all = table.rank(&scorer, usize::MAX, |w| w % 3 == i % 3);
        assert!(all.complete);
        assert_eq!(all.items.len(), 200);
        for &(s, worker) in &all.items {
            assert_eq!(s, score(&p, &key, &w(&names[worker as usize])), "{key}");
        }
        assert!(all.items.windows(2).all(|p| p[0].0 >= p[1].0));
        for limit in [1, 5, 12, 40, 99] {
            // A short ranking may fall back to ranking all: compare the prefix.
            let some = table.rank(&scorer, limit, |w| w % 3 == i % 3);
            assert_eq!(some.items[..limit], all.items[..limit]);
        }
        // Skipping nearly everyone leaves fewer than `limit` above the floor.
        let all = table.rank(&scorer, usize::MAX, |w| w % 60 != 0);
        let some = table.rank(&scorer, 3, |w| w % 60 != 0);
        assert_eq!(some.items[..3], all.items[..3], "falls back to ranking all");
    }
}

#[test]
fn newcomer_is_limited_by_the_overlap_limit_not_pushed_past_it() {
    // Regression (of a wrong expectation in an early test): 200 shards of k = 3 on 10
    // workers cannot all differ (C(10, 3) = 120), and with m = 2 a worker can serve
    // at most one shard per pair of the others, C(10, 2) = 45, below the average of
    // 600 / 11. Rebalance stops there: it never adds a pair of shards over the limit.
    let names: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let problem = Problem {
        workers: active(&refs),
        shards: (0..200).map(|i| spec(&format!("m{i}"), 3, &[])).collect(),
    };
    let p = params();
    let placed = place(&problem, &p);
    let mut joined = with_plan(&problem, &placed);
    joined.workers.extend(active(&["newcomer"]));
    let plan = rebalance(&joined, &p, None);
    let load = plan
        .shards
        .values()
        .filter(|m| m.contains(&w("newcomer")))
        .count();
    assert!((40..=45).contains(&load), "newcomer got {load}");
    let before = over_limit(&placed.shards, 2);
    let after = over_limit(&plan.shards, 2);
    assert!(after.is_subset(&before), "{:?}", after.difference(&before));
}
