//! Continuous balance: examples of [`plan_pass`], and pass after pass on random fleets
//! with time passed in: never more balancing moves in a window than the budget, only
//! prefetched swaps that keep the old member, no new overlap, and convergence into the
//! band wherever integer loads allow it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shardline_shared::placement::{LoadStats, overlap_stats, rebalance};
use shardline_shared::snapshot::Snapshot;

use super::super::balance::{Pass, out_of_balance, plan_pass};
use super::super::budget::MoveBudget;
use super::super::decide::{Action, Clock};
use super::world::{World, ids};

fn pass_at(snap: &Snapshot, now: Instant, tokens: usize) -> Pass {
    let since = BTreeMap::new();
    let clock = Clock {
        now,
        grace: Duration::ZERO,
        since: &since,
    };
    plan_pass(snap, &snap.placement_params().unwrap(), &clock, tokens)
}

fn pass(snap: &Snapshot, tokens: usize) -> Pass {
    pass_at(snap, Instant::now(), tokens)
}

/// Applies passes without balancing until nothing is left to do.
fn settle(w: &mut World) {
    for _ in 0..5 {
        let p = pass(&w.snap(), 0);
        if p.actions.is_empty() {
            return;
        }
        w.apply(&p.actions);
    }
    panic!("not settled after 5 passes");
}

/// `k = 1` shards `t<i>/m`, `per[j]` of them on worker `w<j>`.
fn single_member_fleet(per: &[usize]) -> World {
    let mut w = World::new(1);
    let mut i = 0;
    for (j, n) in per.iter().enumerate() {
        let worker = format!("w{j}");
        w = w.worker(&worker);
        for _ in 0..*n {
            let shard = format!("t{i}/m");
            w = w.model(&shard, "1").assign(&shard, &[&worker], 1, &[]);
            i += 1;
        }
    }
    w
}

fn snap_of(loads: &[usize]) -> Snapshot {
    single_member_fleet(loads).snap()
}

/// Whether integer loads can reach the band at all: ⌈avg⌉ ≤ 1.05·avg and ⌊avg⌋ ≥ 0.95·avg.
fn band_feasible(load: &LoadStats) -> bool {
    let (n, total) = (u64::from(load.workers), u64::from(load.total));
    n == 0 || (total.div_ceil(n) * n * 1000 <= 1050 * total && total / n * n * 1000 >= 950 * total)
}

fn in_band(load: &LoadStats) -> bool {
    let (n, total) = (u64::from(load.workers), u64::from(load.total));
    u64::from(load.max) * n * 1000 <= 1050 * total && u64::from(load.min) * n * 1000 >= 950 * total
}

#[test]
fn a_joining_worker_gets_prefetched_swaps_that_keep_the_old_member_within_the_budget() {
    let mut w = World::new(2).worker("w1").worker("w2").worker("w3");
    for i in 0..12 {
        w = w.model(&format!("t{i}/m"), "1");
    }
    settle(&mut w);
    w = w.worker("w4");
    let snap = w.snap();
    assert!(out_of_balance(&pass(&snap, 0).placed.load));

    let p = pass(&snap, 2);
    assert_eq!((p.balancing, p.actions.len()), (2, 2), "{:?}", p.actions);
    for a in &p.actions {
        let Action::Swap {
            model,
            warm,
            assignment,
            balancing: true,
            ..
        } = a
        else {
            panic!("not a balancing swap: {a:?}");
        };
        assert_eq!(*warm, ids(&["w4"]));
        let before = &snap.assignments()[model].value;
        let replaced: Vec<_> = before
            .workers
            .iter()
            .filter(|m| !assignment.workers.contains(m))
            .cloned()
            .collect();
        assert_eq!(replaced.len(), 1);
        assert_eq!(assignment.previous, replaced, "serves until w4 is warm");
    }

    // Enough tokens: one pass evens the load out (24 slots, 6 each), then nothing.
    let p = pass(&snap, 100);
    assert_eq!(p.balancing, 6);
    w.apply(&p.actions);
    let p = pass(&w.snap(), 100);
    assert_eq!((p.placed.load.min, p.placed.load.max), (6, 6));
    assert_eq!(p.balancing, 0);
    assert!(
        p.actions
            .iter()
            .all(|a| matches!(a, Action::ClearPrevious { .. })),
        "{:?}",
        p.actions
    );
}

#[test]
fn repairs_come_first_and_are_not_limited_by_the_budget() {
    let w = single_member_fleet(&[6, 0, 0]).assign("t0/m", &["gone"], 1, &[]);
    let snap = w.snap();
    let without = pass(&snap, 0);
    let [Action::Swap { balancing, .. }] = without.actions.as_slice() else {
        panic!("{:?}", without.actions);
    };
    assert!(!balancing, "a repair is not a balancing move");
    let with = pass(&snap, 100);
    assert_eq!(
        with.actions, without.actions,
        "no balancing during a repair"
    );
    assert_eq!(with.balancing, 0);
}

#[test]
fn the_band_is_max_over_avg_1_05_and_min_over_avg_0_95() {
    // avg 40: 42/38 are on the edge of the band, 43/37 beyond it.
    for (loads, moves) in [
        (&[41, 40, 40, 39][..], false),
        (&[42, 40, 40, 38], false),
        (&[43, 40, 40, 37], true),
        (&[43, 39, 39, 39], true),
        (&[41, 41, 41, 37], true),
    ] {
        let snap = snap_of(loads);
        let p = pass(&snap, 100);
        assert_eq!(p.balancing > 0, moves, "{loads:?}: {:?}", p.actions);
        assert!(!p.stuck);
        let load =
            |w: &shardline_shared::ids::WorkerId| loads[w.as_str()[1..].parse::<usize>().unwrap()];
        for a in &p.actions {
            // From a worker above the average (40) to one below it.
            let Action::Swap {
                model,
                warm,
                balancing: true,
                ..
            } = a
            else {
                panic!("{a:?}");
            };
            let from = &snap.assignments()[model].value.workers[0];
            assert!(
                load(from) > 40 && warm.iter().all(|w| load(w) < 40),
                "{a:?}"
            );
        }
    }
}

#[test]
fn too_few_slots_for_the_band_stop_within_one_slot() {
    // avg 4/3: no integer loads are within 5 %; 2/1/1 is as good as it gets.
    assert_eq!(
        pass(&single_member_fleet(&[2, 1, 1]).snap(), 100).balancing,
        0
    );
    let mut w = single_member_fleet(&[4, 0, 0]);
    let p = pass(&w.snap(), 100);
    assert!(p.balancing >= 2);
    w.apply(&p.actions);
    let load = pass(&w.snap(), 0).placed.load;
    assert_eq!((load.min, load.max), (1, 2));
    assert_eq!(pass(&w.snap(), 100).balancing, 0);
}

/// Pairs of stored assignments sharing more than `m` workers.
fn over_m(snap: &Snapshot, m: u32) -> u64 {
    let stored: BTreeMap<_, _> = snap
        .assignments()
        .iter()
        .map(|(k, a)| (k.clone(), a.value.workers.clone()))
        .collect();
    let h = overlap_stats(&stored).histogram;
    h.iter().skip(m as usize + 1).sum()
}

#[derive(Debug, Clone)]
struct Case {
    k: u32,
    max_overlap: u32,
    workers: usize,
    models: usize,
    joins: usize,
    cordon: bool,
    kill: bool,
    limit: u32,
    window: Duration,
    step: Duration,
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        (1u32..4, 0u32..2, 1usize..5, 1usize..25),
        (0usize..4, any::<bool>(), any::<bool>()),
        (1u32..12, 1u64..120, 1u32..20),
    )
        .prop_map(
            |((k, slack, workers, models), (joins, cordon, kill), (limit, window_s, parts))| {
                let window = Duration::from_secs(window_s);
                Case {
                    k,
                    max_overlap: k - 1 + slack,
                    workers,
                    models,
                    joins,
                    cordon,
                    kill,
                    limit,
                    window,
                    step: window / parts,
                }
            },
        )
}

/// Places the models on the first workers, then joins, cordons and kills.
fn fleet(c: &Case) -> World {
    let mut w = World::new(c.k);
    w.max_overlap = c.max_overlap;
    for i in 0..c.workers {
        w = w.worker(&format!("w{i}"));
    }
    for i in 0..c.models {
        w = w.model(&format!("t{i}/m"), "1");
    }
    settle(&mut w);
    for i in 0..c.joins {
        w = w.worker(&format!("w{}", c.workers + i));
    }
    if c.cordon {
        w.admin.insert("w0".into(), "cordoned");
    }
    if c.kill && c.workers > 1 {
        w.workers.remove("w1");
    }
    w
}

/// One pass's invariants: a pass that balances only makes balancing swaps (every new
/// member prefetched, every replaced member kept in `previous`) within its tokens.
fn check_pass(snap: &Snapshot, p: &Pass, tokens: usize) -> Result<(), TestCaseError> {
    prop_assert!(p.balancing <= tokens);
    if p.balancing == 0 {
        return Ok(());
    }
    for a in &p.actions {
        match a {
            Action::Swap {
                model,
                warm,
                assignment,
                balancing: true,
                ..
            } => {
                let before = &snap.assignments()[model].value;
                prop_assert!(!warm.is_empty());
                for m in before.workers.iter() {
                    prop_assert!(
                        assignment.workers.contains(m) || assignment.previous.contains(m),
                        "{} dropped from {} without serving on",
                        m,
                        model
                    );
                }
            }
            Action::ClearPrevious { .. } | Action::Delete { .. } => {}
            other => prop_assert!(false, "not a balancing swap: {:?}", other),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn passes_keep_the_budget_and_the_overlap_and_converge_into_the_band(c in arb_case()) {
        let mut w = fleet(&c);
        let params = w.snap().placement_params().unwrap();
        let start = Instant::now();
        let mut budget = MoveBudget::new(c.limit, c.window);
        let mut t = Duration::ZERO;
        let mut log: Vec<(Duration, usize)> = Vec::new();
        let mut done = false;
        for _ in 0..2000 {
            let snap = w.snap();
            let tokens = budget.available(start + t);
            let p = pass_at(&snap, start + t, tokens);
            check_pass(&snap, &p, tokens)?;
            if p.stuck {
                prop_assert!(rebalance(&snap.placement_problem(), &params, None).moves.is_empty());
            }
            if p.actions.is_empty() && (tokens > 0 || !out_of_balance(&p.placed.load)) {
                done = true;
                break;
            }
            let over = over_m(&snap, c.max_overlap);
            w.apply(&p.actions);
            if p.balancing > 0 {
                prop_assert!(over_m(&w.snap(), c.max_overlap) <= over, "a balancing move broke the overlap limit");
                log.push((t, p.balancing));
            }
            budget.spend(start + t, p.balancing);
            t += c.step;
        }
        prop_assert!(done, "no fixed point after 2000 passes");
        for (a, _) in &log {
            let in_window: usize = log.iter().filter(|(x, _)| x >= a && *x < *a + c.window).map(|l| l.1).sum();
            prop_assert!(in_window <= c.limit as usize, "{} moves in the window from {:?}", in_window, a);
        }
        let snap = w.snap();
        let load = pass(&snap, 0).placed.load;
        let fixed = rebalance(&snap.placement_problem(), &params, Some(1)).moves.is_empty();
        prop_assert!(!out_of_balance(&load) || fixed, "{:?}", load);
        if c.max_overlap >= c.k && load.workers >= 2 {
            // The overlap limit cannot bind: within one slot, and in the band if possible.
            prop_assert!(load.max <= load.min + 1, "{:?}", load);
            prop_assert!(!band_feasible(&load) || in_band(&load), "{:?}", load);
        }
    }
}
