//! Property tests: the guarantees listed in `../README.md`, for arbitrary worker sets,
//! shard keys, shard sizes, overlap limits and seeds.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::ids::{ModelKey, ModelName, TenantId, WorkerId};
use crate::placement::rebalance::rebalance_in_rounds;
use crate::placement::*;

/// Small cases: a dozen workers, a score of shards.
#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) problem: Problem,
    pub(super) params: Params,
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("generated worker names are valid")
}

pub(super) fn key(tenant: &str, model: &str) -> ModelKey {
    ModelKey::new(
        TenantId::new(tenant).expect("valid tenant"),
        ModelName::new(model).expect("valid model"),
    )
}

fn arb_params() -> impl Strategy<Value = Params> {
    (any::<u64>(), any::<u64>(), 0u32..5, 0u32..300).prop_map(|(k0, k1, m, eps)| Params {
        k0,
        k1,
        max_overlap: m,
        epsilon_permille: eps,
    })
}

/// Workers with random names and states; shards whose current members mix known,
/// unknown and repeated workers.
fn arb_case() -> impl Strategy<Value = Case> {
    let names = prop::collection::btree_set("[a-z][a-z0-9]{0,4}", 0..12);
    let keys = prop::collection::btree_set(("[a-z][0-9]?", "[a-z0-9]{1,3}"), 0..20);
    (names, keys, arb_params()).prop_flat_map(|(names, keys, params)| {
        let names: Vec<String> = names.into_iter().collect();
        let n = names.len();
        // 0: gone, 1: cordoned (keep only), 2..=5: active.
        let states = prop::collection::vec(0u8..6, n);
        let shard = (0u32..6, prop::collection::vec(0..n + 2, 0..6));
        let shards = prop::collection::vec(shard, keys.len());
        (Just(names), Just(keys), states, shards, Just(params)).prop_map(
            |(names, keys, states, shards, params)| {
                let workers = names
                    .iter()
                    .zip(&states)
                    .map(|(name, &s)| WorkerSlot {
                        id: worker(name),
                        keep: s >= 1,
                        take: s >= 2,
                    })
                    .collect();
                let shards = keys
                    .iter()
                    .zip(shards)
                    .map(|((t, m), (k, current))| ShardSpec {
                        key: key(t, m),
                        k,
                        current: current
                            .into_iter()
                            .map(|i| names.get(i).map_or_else(|| worker("gone"), |s| worker(s)))
                            .collect(),
                    })
                    .collect();
                Case {
                    problem: Problem { workers, shards },
                    params,
                }
            },
        )
    })
}

/// The same case with every shard empty.
fn fresh(case: &Case) -> Problem {
    let mut p = case.problem.clone();
    for s in &mut p.shards {
        s.current.clear();
    }
    p
}

/// `problem` with the plan's members as current members.
pub(super) fn with_plan(problem: &Problem, plan: &Plan) -> Problem {
    let mut p = problem.clone();
    for s in &mut p.shards {
        s.current = plan.shards.get(&s.key).cloned().unwrap_or_default();
    }
    p
}

fn slot<'a>(problem: &'a Problem, id: &WorkerId) -> Option<&'a WorkerSlot> {
    problem.workers.iter().find(|w| &w.id == id)
}

/// What `place` must keep of a shard: known keep-able members, first occurrence each.
fn survivors(problem: &Problem, spec: &ShardSpec) -> Vec<WorkerId> {
    let mut out: Vec<WorkerId> = Vec::new();
    for id in &spec.current {
        if slot(problem, id).is_some_and(|w| w.keep || w.take) && !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

/// `min(k, n)` with n the workers that can hold the shard.
fn target(problem: &Problem, spec: &ShardSpec) -> usize {
    let takers = problem.workers.iter().filter(|w| w.take).count();
    let kept_only = survivors(problem, spec)
        .iter()
        .filter(|id| slot(problem, id).is_some_and(|w| !w.take))
        .count();
    (spec.k as usize).min(takers + kept_only)
}

pub(super) fn shared(a: &[WorkerId], b: &[WorkerId]) -> usize {
    a.iter().filter(|w| b.contains(w)).count()
}

/// The shards that share more than `m` workers with another, by brute force.
pub(super) fn over_limit(shards: &BTreeMap<ModelKey, Vec<WorkerId>>, m: u32) -> BTreeSet<ModelKey> {
    let mut out = BTreeSet::new();
    for (a, wa) in shards {
        for (b, wb) in shards {
            if a != b && shared(wa, wb) > m as usize {
                out.insert(a.clone());
            }
        }
    }
    out
}

fn reported(plan: &Plan, kind: ViolationKind) -> BTreeSet<ModelKey> {
    plan.violations
        .iter()
        .filter(|v| v.kind == kind)
        .map(|v| v.shard.clone())
        .collect()
}

pub(super) fn check_well_formed(problem: &Problem, plan: &Plan) -> Result<(), TestCaseError> {
    prop_assert_eq!(plan.shards.len(), problem.shards.len());
    for spec in &problem.shards {
        let members = &plan.shards[&spec.key];
        let distinct: BTreeSet<&WorkerId> = members.iter().collect();
        prop_assert_eq!(
            distinct.len(),
            members.len(),
            "repeated member in {:?}",
            members
        );
        prop_assert_eq!(members.len(), target(problem, spec), "size of {}", spec.key);
        let kept = survivors(problem, spec);
        for id in members {
            let w = slot(problem, id);
            let ok = w.is_some_and(|w| w.take) || (w.is_some_and(|w| w.keep) && kept.contains(id));
            prop_assert!(ok, "{} may not serve {}", id, spec.key);
        }
    }
    prop_assert!(reported(plan, ViolationKind::Undersized).is_empty());
    Ok(())
}

/// Deterministic Fisher–Yates driven by `seed`.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn plan_is_well_formed_and_keeps_survivors(case in arb_case()) {
        let plan = place(&case.problem, &case.params);
        check_well_formed(&case.problem, &plan)?;
        for spec in &case.problem.shards {
            let kept = survivors(&case.problem, spec);
            let members = &plan.shards[&spec.key];
            let n = kept.len().min(members.len());
            prop_assert_eq!(&members[..n], &kept[..n], "survivors first, in order");
        }
        let added: usize = case.problem.shards.iter()
            .map(|s| plan.shards[&s.key].len() - survivors(&case.problem, s).len().min(plan.shards[&s.key].len()))
            .sum();
        prop_assert_eq!(plan.moves.len(), added);
        for mv in &plan.moves {
            prop_assert!(slot(&case.problem, &mv.added).is_some_and(|w| w.take));
        }
    }

    #[test]
    fn output_is_independent_of_input_order(case in arb_case(), seed in any::<u64>()) {
        let mut shuffled = case.problem.clone();
        shuffle(&mut shuffled.workers, seed);
        shuffle(&mut shuffled.shards, seed ^ 0x5555);
        prop_assert_eq!(place(&case.problem, &case.params), place(&shuffled, &case.params));
        prop_assert_eq!(
            rebalance(&case.problem, &case.params, None),
            rebalance(&shuffled, &case.params, None)
        );
    }

    #[test]
    fn placing_twice_moves_nothing(case in arb_case()) {
        let plan = place(&case.problem, &case.params);
        let again = place(&with_plan(&case.problem, &plan), &case.params);
        prop_assert!(again.moves.is_empty(), "{:?}", again.moves);
        prop_assert_eq!(again.shards, plan.shards);
    }

    #[test]
    fn removing_a_worker_changes_only_its_shards_by_one(case in arb_case(), pick in any::<prop::sample::Index>()) {
        let placed = with_plan(&case.problem, &place(&case.problem, &case.params));
        prop_assume!(!placed.workers.is_empty());
        let gone = placed.workers[pick.index(placed.workers.len())].id.clone();
        let mut after = placed.clone();
        after.workers.retain(|w| w.id != gone);
        let plan = place(&after, &case.params);
        for spec in &placed.shards {
            let before = survivors(&placed, spec);
            let now = &plan.shards[&spec.key];
            if !before.contains(&gone) {
                prop_assert_eq!(now, &before, "{} did not contain {}", spec.key, gone);
                continue;
            }
            let rest: Vec<WorkerId> = before.iter().filter(|w| **w != gone).cloned().collect();
            prop_assert_eq!(&now[..rest.len()], &rest[..]);
            let replaced = usize::from(target(&after, spec) == before.len());
            prop_assert_eq!(now.len(), rest.len() + replaced);
        }
        let mut cordoned = placed.clone();
        for w in &mut cordoned.workers {
            if w.id == gone {
                w.take = false;
            }
        }
        prop_assert!(place(&cordoned, &case.params).moves.is_empty(), "cordoning moves nothing");
    }

    #[test]
    fn adding_a_worker_changes_nothing_until_rebalance(case in arb_case()) {
        let placed = with_plan(&case.problem, &place(&case.problem, &case.params));
        let mut joined = placed.clone();
        joined.workers.push(WorkerSlot { id: worker("newcomer"), keep: true, take: true });
        let plan = place(&joined, &case.params);
        for spec in &placed.shards {
            let before = survivors(&placed, spec);
            let now = &plan.shards[&spec.key];
            if before.len() == spec.k as usize {
                prop_assert_eq!(now, &before);
            } else {
                // A shard smaller than k for want of workers grows onto the newcomer.
                prop_assert_eq!(&now[..before.len()], &before[..]);
                prop_assert!(now.len() <= before.len() + 1);
            }
        }
        for mv in &plan.moves {
            prop_assert_eq!(mv.added.as_str(), "newcomer");
        }
    }

    #[test]
    fn rebalance_moves_one_member_per_shard_per_round(case in arb_case(), budget in prop::option::of(0usize..12)) {
        let placed = with_plan(&case.problem, &place(&case.problem, &case.params));
        let before = place(&placed, &case.params);
        let mut joined = placed.clone();
        joined.workers.push(WorkerSlot { id: worker("newcomer"), keep: true, take: true });
        let (plan, rounds) = rebalance_in_rounds(&joined, &case.params, budget);
        check_well_formed(&joined, &plan)?;
        prop_assert_eq!(rounds.iter().sum::<usize>(), plan.moves.len());
        let mut at = 0;
        for &n in &rounds {
            let shards: BTreeSet<&ModelKey> = plan.moves[at..at + n].iter().map(|m| &m.shard).collect();
            prop_assert_eq!(shards.len(), n, "a shard moved twice in one round");
            at += n;
        }
        let balancing = plan.moves.len() - rounds[0];
        prop_assert!(budget.is_none_or(|b| balancing <= b));
        prop_assert!(place(&with_plan(&joined, &plan), &case.params).moves.is_empty());
        // Balancing respects the overlap limit: it never makes a shard share more than m
        // workers with another, even where the limit is already broken (a shard that
        // grows onto the newcomer for want of workers may have to).
        let grows = placed.shards.iter().any(|s| survivors(&placed, s).len() < s.k as usize);
        if !grows {
            let m = case.params.max_overlap;
            prop_assert!(over_limit(&plan.shards, m).is_subset(&over_limit(&before.shards, m)));
        }
        // Without a binding overlap limit, balancing always gets under the cap.
        let k_max = case.problem.shards.iter().map(|s| s.k).max().unwrap_or(0);
        if budget.is_none() && case.params.max_overlap >= k_max {
            prop_assert!(plan.load.max <= plan.load.cap, "{:?}", plan.load);
            prop_assert!(plan.load.max <= plan.load.min + 1, "{:?}", plan.load);
        }
    }

    #[test]
    fn overlap_violations_are_reported_exactly(case in arb_case()) {
        let plan = place(&case.problem, &case.params);
        let m = case.params.max_overlap;
        prop_assert_eq!(reported(&plan, ViolationKind::OverlapExceeded), over_limit(&plan.shards, m));
        let plan = rebalance(&case.problem, &case.params, None);
        prop_assert_eq!(reported(&plan, ViolationKind::OverlapExceeded), over_limit(&plan.shards, m));
    }

    #[test]
    fn overlap_stays_within_limit_when_greedy_cannot_fail(
        (k, m) in (1u32..6).prop_flat_map(|k| (Just(k), 0..k)),
        t in 0usize..10,
        extra in 0usize..4,
        params in arb_params(),
    ) {
        // Each earlier shard blocks at most k - m workers (it shares at most m with the
        // shard being filled), so n >= k + (t-1)(k-m) always leaves a candidate. Such
        // instances are within t <= C(n, m+1) / C(k, m+1), which any placement needs;
        // nearer that limit the greedy fill may fail and must then report it, which
        // `overlap_violations_are_reported_exactly` checks.
        let n = k as usize + t.saturating_sub(1) * (k - m) as usize + extra;
        let problem = Problem {
            workers: (0..n).map(|i| WorkerSlot { id: worker(&format!("w{i}")), keep: true, take: true }).collect(),
            shards: (0..t).map(|i| ShardSpec { key: key("t", &format!("m{i}")), k, current: vec![] }).collect(),
        };
        let params = Params { max_overlap: m, ..params };
        let plan = place(&problem, &params);
        prop_assert!(plan.violations.iter().all(|v| v.kind != ViolationKind::OverlapExceeded), "{:?}", plan);
        prop_assert!(over_limit(&plan.shards, m).is_empty());
    }

    #[test]
    fn fresh_placement_respects_cap_when_nothing_blocks(case in arb_case()) {
        let problem = fresh(&case);
        let plan = place(&problem, &case.params);
        if plan.violations.iter().all(|v| v.kind != ViolationKind::OverCap) {
            prop_assert!(plan.load.max <= plan.load.cap || plan.load.workers == 0, "{:?}", plan.load);
        }
    }

    #[test]
    fn overlap_stats_match_brute_force(case in arb_case()) {
        let plan = place(&case.problem, &case.params);
        let stats = overlap_stats(&plan.shards);
        let lists: Vec<&Vec<WorkerId>> = plan.shards.values().collect();
        let mut histogram = vec![0u64; stats.histogram.len().max(1)];
        let mut identical = 0;
        for (i, a) in lists.iter().enumerate() {
            for b in &lists[i + 1..] {
                let n = shared(a, b);
                histogram[n] += 1;
                identical += u64::from(!a.is_empty() && n == a.len() && n == b.len());
            }
        }
        let t = lists.len() as u64;
        prop_assert_eq!(stats.pairs, t * t.saturating_sub(1) / 2);
        prop_assert_eq!(&stats.histogram[..], &histogram[..stats.histogram.len()]);
        prop_assert_eq!(stats.identical_pairs, identical);
        let max = histogram.iter().rposition(|&c| c > 0).unwrap_or(0) as u32;
        prop_assert_eq!(stats.max_overlap, if t > 1 { max } else { 0 });
        let mut loads: BTreeMap<&WorkerId, u32> = BTreeMap::new();
        for w in lists.iter().flat_map(|l| l.iter()) {
            *loads.entry(w).or_default() += 1;
        }
        prop_assert_eq!(stats.workers as usize, loads.len());
        prop_assert_eq!(stats.load_total, loads.values().map(|&l| u64::from(l)).sum::<u64>());
        prop_assert_eq!(stats.load_max, loads.values().copied().max().unwrap_or(0));
        prop_assert_eq!(stats.load_min, loads.values().copied().min().unwrap_or(0));
    }
}
