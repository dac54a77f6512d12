//! `shardctl rebalance [--apply] [--max-moves N]`: the moves that even out slot load,
//! shown as a diff, and their execution.
//!
//! The plan is [`rebalance`] of the snapshot's placement problem (the same pure
//! function and parameters the controller uses). [`plan_rebalance`] turns it into one
//! [`Change`] per shard whose members change (`tenant/model: -old +new`) plus slot-load
//! figures before and after; it is pure. `--apply` hands the plan to the controller's
//! executor: each new member is asked to load the model before the swap is written, and
//! every write is a compare-and-swap on the assignment's `mod_revision` as read, so a
//! concurrent writer (another operator, the controller) makes this run exit 3 instead
//! of being overwritten.

use std::collections::BTreeSet;

use serde::Serialize;
use shardline_shared::ids::{TenantId, WorkerId};
use shardline_shared::placement::{Plan, Violation, rebalance};
use shardline_shared::snapshot::Snapshot;

use super::RebalanceArgs;
use super::context::{Ctx, Output};
use super::error::CliError;
use shardline_controller::{HttpPrefetcher, apply};

/// One shard whose members change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub tenant: TenantId,
    pub model: String,
    pub removed: Vec<WorkerId>,
    pub added: Vec<WorkerId>,
    /// Members after the change.
    pub workers: Vec<WorkerId>,
}

/// Slot load over the workers that may take shards (live and active).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Load {
    pub workers: u32,
    pub min: u32,
    pub avg: f64,
    pub max: u32,
    pub cap: u32,
}

/// The plan as shown and as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebalancePlan {
    /// etcd revision the plan was made from.
    pub revision: i64,
    pub changes: Vec<Change>,
    /// Members added over all changes.
    pub moves: usize,
    pub before: Load,
    pub after: Load,
    pub violations: Vec<Violation>,
}

/// What `--apply` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub writes: usize,
    pub swapped: usize,
    pub moves: usize,
    pub conflicts: usize,
    pub deferred: usize,
    pub failed: usize,
    pub revision: i64,
}

/// The rebalance plan of `snap` (pure).
pub fn plan_rebalance(
    snap: &Snapshot,
    max_moves: Option<usize>,
) -> Result<(Plan, RebalancePlan), CliError> {
    let params = snap
        .placement_params()
        .map_err(|e| CliError::failed(format!("placement parameters: {e}")))?;
    let problem = snap.placement_problem();
    let plan = rebalance(&problem, &params, max_moves);
    let takers: Vec<&WorkerId> = problem
        .workers
        .iter()
        .filter(|w| w.take)
        .map(|w| &w.id)
        .collect();
    let mut changes = Vec::new();
    for (key, planned) in &plan.shards {
        let stored = snap
            .assignments()
            .get(key)
            .map(|a| a.value.workers.clone())
            .unwrap_or_default();
        if planned.is_empty() || *planned == stored {
            continue;
        }
        let before: BTreeSet<&WorkerId> = stored.iter().collect();
        let after: BTreeSet<&WorkerId> = planned.iter().collect();
        changes.push(Change {
            tenant: key.tenant.clone(),
            model: key.model.to_string(),
            removed: stored
                .iter()
                .filter(|w| !after.contains(w))
                .cloned()
                .collect(),
            added: planned
                .iter()
                .filter(|w| !before.contains(w))
                .cloned()
                .collect(),
            workers: planned.clone(),
        });
    }
    let stored_shards = snap.assignments().values().map(|a| &a.value.workers);
    let before = load_of(&takers, stored_shards, plan.load.cap);
    let after = load_of(&takers, plan.shards.values(), plan.load.cap);
    let summary = RebalancePlan {
        revision: snap.revision(),
        moves: changes.iter().map(|c| c.added.len()).sum(),
        changes,
        before,
        after,
        violations: plan.violations.clone(),
    };
    Ok((plan, summary))
}

fn load_of<'a>(
    takers: &[&WorkerId],
    shards: impl Iterator<Item = &'a Vec<WorkerId>>,
    cap: u32,
) -> Load {
    let mut load = vec![0u32; takers.len()];
    for members in shards {
        for w in members {
            if let Some(i) = takers.iter().position(|t| *t == w) {
                load[i] += 1;
            }
        }
    }
    let total: u64 = load.iter().map(|&l| u64::from(l)).sum();
    Load {
        workers: takers.len() as u32,
        min: load.iter().copied().min().unwrap_or(0),
        avg: if takers.is_empty() {
            0.0
        } else {
            total as f64 / takers.len() as f64
        },
        max: load.iter().copied().max().unwrap_or(0),
        cap,
    }
}

/// The plan as a readable diff.
pub fn render(p: &RebalancePlan) -> String {
    let figures = |l: &Load| format!("min {} / avg {:.1} / max {}", l.min, l.avg, l.max);
    let load = format!(
        "slot load over {} workers (cap {}): before {}, after {}",
        p.after.workers,
        p.after.cap,
        figures(&p.before),
        figures(&p.after)
    );
    if p.changes.is_empty() {
        return format!("nothing to move at revision {}; {load}\n", p.revision);
    }
    let mut out = format!(
        "plan at revision {}: {} shards change, {} moves\n",
        p.revision,
        p.changes.len(),
        p.moves
    );
    for c in &p.changes {
        let mut line = format!("  {}/{}:", c.tenant, c.model);
        for w in &c.removed {
            line.push_str(&format!(" -{w}"));
        }
        for w in &c.added {
            line.push_str(&format!(" +{w}"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    for v in &p.violations {
        out.push_str(&format!("  warning: {} {:?}\n", v.shard, v.kind));
    }
    out.push_str(&load);
    out.push('\n');
    out
}

/// Runs `rebalance`, applying the plan with `--apply`.
pub async fn run(ctx: &Ctx, args: RebalanceArgs) -> Result<Output, CliError> {
    let token = match (&args.internal_token, args.apply) {
        (Some(t), true) if t.len() >= 16 => Some(t.clone()),
        (_, true) => {
            return Err(CliError::Usage(
                "--apply needs --internal-token (or SHARDLINE_INTERNAL_TOKEN), at least 16 characters"
                    .into(),
            ));
        }
        _ => None,
    };
    let snap = ctx.snapshot().await?;
    let (plan, summary) = plan_rebalance(&snap, args.max_moves)?;
    let mut text = render(&summary);
    let Some(token) = token.filter(|_| !summary.changes.is_empty()) else {
        if !args.apply && !summary.changes.is_empty() {
            text.push_str("dry run: re-run with --apply to carry it out\n");
        }
        return Output::new(text, &json_of(&summary, None));
    };
    let prefetcher = HttpPrefetcher::new(token, args.prefetch_timeout);
    let report = apply(&ctx.cp, &snap, &plan, &prefetcher, None)
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let applied = Applied {
        writes: report.writes(),
        swapped: report.swapped,
        moves: report.moves,
        conflicts: report.conflicts,
        deferred: report.deferred,
        failed: report.failed,
        revision: report.revision,
    };
    if applied.conflicts > 0 {
        return Err(CliError::Conflict(format!(
            "conflict: {} assignments changed since revision {} ({} writes committed); \
             re-run shardctl rebalance",
            applied.conflicts, summary.revision, applied.writes
        )));
    }
    if applied.failed > 0 || applied.deferred > 0 {
        return Err(CliError::failed(format!(
            "{} writes failed and {} swaps were put off (a new member could not load the model); \
             {} writes committed; re-run shardctl rebalance",
            applied.failed, applied.deferred, applied.writes
        )));
    }
    text.push_str(&format!(
        "applied: {} writes ({} swaps after prefetch), {} members moved, at revision {}\n",
        applied.writes, applied.swapped, applied.moves, applied.revision
    ));
    Output::new(text, &json_of(&summary, Some(&applied)))
}

fn json_of(summary: &RebalancePlan, applied: Option<&Applied>) -> serde_json::Value {
    let mut v = serde_json::to_value(summary).unwrap_or_default();
    v["applied"] = serde_json::to_value(applied).unwrap_or_default();
    v
}

#[cfg(test)]
mod tests {
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
}
