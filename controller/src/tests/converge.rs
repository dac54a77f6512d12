//! How many balancing moves, and how long at the default budget, a fleet needs to come
//! into the band: placement from scratch, then workers joining. A measurement, not a
//! check of behaviour (the property tests in `balance.rs` are that), so it is ignored;
//! run it in release:
//!
//! ```text
//! cargo test --release -p shardline-controller --lib converge -- --ignored --nocapture
//! ```
//!
//! It works on the placement [`Problem`] directly (a snapshot of 100,000 models is slow
//! to build from JSON), with what [`plan_pass`](super::super::balance::plan_pass) does
//! on a settled fleet: [`out_of_balance`] decides, `rebalance` with the tokens the
//! [`MoveBudget`] grants moves, one pass a second (the controller's tick).

use std::time::{Duration, Instant};

use shardline_shared::ids::ModelKey;
use shardline_shared::placement::{Params, Problem, ShardSpec, WorkerSlot, place, rebalance};
use shardline_shared::records::PlacementConfig;

use super::super::balance::out_of_balance;
use super::super::budget::MoveBudget;

fn worker(i: usize) -> WorkerSlot {
    WorkerSlot {
        id: format!("worker-{i:04}").parse().unwrap(),
        keep: true,
        take: true,
    }
}

/// Applies `shards` of a plan as the new current members.
fn adopt(
    problem: &mut Problem,
    shards: &std::collections::BTreeMap<ModelKey, Vec<shardline_shared::ids::WorkerId>>,
) {
    for s in &mut problem.shards {
        s.current.clone_from(&shards[&s.key]);
    }
}

/// Balancing passes until the load is in the band (or no move is left): moves, passes
/// in which the budget allowed a move, simulated time, and the slowest pass.
fn balance(problem: &mut Problem, params: &Params, per_minute: u32) -> (usize, Duration, Duration) {
    let start = Instant::now();
    let mut budget = MoveBudget::new(per_minute, Duration::from_secs(60));
    let (mut moves, mut t, mut slowest) = (0, Duration::ZERO, Duration::ZERO);
    loop {
        let began = Instant::now();
        let placed = place(problem, params);
        assert!(placed.moves.is_empty(), "settled");
        if !out_of_balance(&placed.load) {
            return (moves, t, slowest);
        }
        let tokens = budget.available(start + t);
        if tokens > 0 {
            let plan = rebalance(problem, params, Some(tokens));
            if plan.moves.is_empty() {
                return (moves, t, slowest);
            }
            moves += plan.moves.len();
            budget.spend(start + t, plan.moves.len());
            adopt(problem, &plan.shards);
            slowest = slowest.max(began.elapsed());
        }
        t += Duration::from_secs(1);
    }
}

fn load(problem: &Problem, params: &Params) -> String {
    let l = place(problem, params).load;
    let avg = f64::from(l.total) / f64::from(l.workers);
    format!(
        "load {}..{} avg {avg:.1} (min/avg {:.3}, max/avg {:.3})",
        l.min,
        l.max,
        f64::from(l.min) / avg,
        f64::from(l.max) / avg
    )
}

#[test]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
fn converge() {
    let config = PlacementConfig {
        default_k: 4,
        ..PlacementConfig::default()
    };
    let params = Params::from_config(&config).unwrap();
    for (workers, shards, joins) in [(100, 2_500, 10), (1_000, 100_000, 1)] {
        let mut problem = Problem {
            workers: (0..workers).map(worker).collect(),
            shards: (0..shards)
                .map(|i| ShardSpec {
                    key: ModelKey::parse_shard_key(&format!("tenant-{i}/model")).unwrap(),
                    k: 4,
                    current: vec![],
                })
                .collect(),
        };
        let placed = place(&problem, &params);
        adopt(&mut problem, &placed.shards);
        println!(
            "{workers} workers, {shards} shards (k=4, m=2) placed: {}",
            load(&problem, &params)
        );
        let (moves, took, slowest) = balance(&mut problem, &params, 60);
        println!(
            "  into the band: {moves} moves, {:.1} min at 60/min (slowest pass {slowest:?}): {}",
            took.as_secs_f64() / 60.0,
            load(&problem, &params)
        );
        problem
            .workers
            .extend((workers..workers + joins).map(worker));
        println!("  {joins} worker(s) join: {}", load(&problem, &params));
        let (moves, took, slowest) = balance(&mut problem, &params, 60);
        println!(
            "  into the band: {moves} moves, {:.1} min at 60/min (slowest pass {slowest:?}): {}",
            took.as_secs_f64() / 60.0,
            load(&problem, &params)
        );
    }
}
