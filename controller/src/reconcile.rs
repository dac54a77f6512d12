//! The leader's loop: on every snapshot change (debounced) and every second, check
//! leadership, plan the pass (`balance::plan_pass`: `place()` and `decide()`, then
//! balancing moves within the budget), execute it and spend the budget.
//!
//! After a pass that wrote something the loop waits (briefly) for the snapshot to
//! reflect its own writes, so the next pass does not act on a view that predates
//! them. A pass of a replica that is not the leader does nothing but update the
//! leader gauge.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardline_control::ControlPlane;
use shardline_control::store::{Op, Precondition, Txn};
use shardline_shared::ids::ModelKey;
use shardline_shared::keys::Key;
use shardline_shared::placement::overlap_stats;
use shardline_shared::records::PlacementConfig;
use shardline_shared::snapshot::Snapshot;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::balance::{load_ratios, plan_pass};
use super::budget::MoveBudget;
use super::decide::Clock;
use super::election::is_leader;
use super::executor::{ApplyError, Fence, execute};
use super::metrics::ControllerMetrics;
use super::prefetch::HttpPrefetcher;

/// Quiet time after a snapshot change before planning (changes come in bursts).
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A pass runs at least this often, to retry deferred swaps and clear `previous`.
const TICK: Duration = Duration::from_secs(1);
/// The overlap statistics walk every assignment: not on every pass.
const OVERLAP_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for the snapshot to show the pass's own writes.
const CATCH_UP: Duration = Duration::from_secs(2);

pub(super) struct Loop {
    pub cp: ControlPlane,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub fence: watch::Receiver<Option<Fence>>,
    pub leader: watch::Sender<bool>,
    pub prefetcher: HttpPrefetcher,
    pub grace: Duration,
    /// Balancing moves granted; kept across leadership changes, so that a replica
    /// that leads, loses and regains the lease does not spend a window twice.
    pub budget: MoveBudget,
    pub metrics: ControllerMetrics,
}

/// What the loop remembers between passes.
#[derive(Default)]
struct Memory {
    leading: bool,
    /// When each assignment with a non-empty `previous` was first seen, at its epoch.
    since: BTreeMap<ModelKey, (u64, Instant)>,
    overlap_at: Option<Instant>,
    /// The snapshot revision at which balancing found no move (it would find none again).
    stuck_at: Option<i64>,
}

pub(super) async fn run(mut l: Loop) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut mem = Memory::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = l.snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
            }
            changed = l.fence.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let snap = l.snapshots.borrow_and_update().clone();
        let fence = l.fence.borrow_and_update().clone();
        let leading = is_leader(&snap, fence.as_ref());
        l.leader
            .send_if_modified(|v| std::mem::replace(v, leading) != leading);
        l.metrics.leader.set(i64::from(leading));
        let Some(fence) = fence.filter(|_| leading) else {
            if mem.leading {
                info!("no longer the placement controller");
            }
            mem = Memory::default();
            continue;
        };
        if !mem.leading {
            info!(key = %fence.key, revision = snap.revision(), "became the placement controller");
            ensure_placement(&l.cp, &snap, &fence).await;
            mem.leading = true;
        }
        pass(&mut l, &mut mem, &snap, &fence).await;
    }
}

/// Writes the default placement parameters when none are stored (first start).
async fn ensure_placement(cp: &ControlPlane, snap: &Snapshot, fence: &Fence) {
    if snap.placement_record().is_some() {
        return;
    }
    let key = cp.key(&Key::Placement);
    let value = match serde_json::to_vec(&PlacementConfig::default()) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "could not encode the default placement parameters");
            return;
        }
    };
    let txn = Txn::new()
        .check(key.clone(), Precondition::Absent)
        .check(
            fence.key.clone(),
            Precondition::ModRevision(fence.mod_revision),
        )
        .op(Op::put(key, value));
    match cp.commit(txn, "placement parameters").await {
        Ok(revision) => info!(revision, "wrote the default placement parameters"),
        Err(e) => debug!(error = %e, "default placement parameters not written"),
    }
}

async fn pass(l: &mut Loop, mem: &mut Memory, snap: &Snapshot, fence: &Fence) {
    let started = Instant::now();
    let params = match snap.placement_params() {
        Ok(p) => p,
        Err(reason) => {
            warn!(%reason, "placement parameters are unusable; not reconciling");
            return;
        }
    };
    let now = Instant::now();
    mem.since.retain(|k, (epoch, _)| {
        snap.assignments()
            .get(k)
            .is_some_and(|a| a.value.epoch == *epoch && !a.value.previous.is_empty())
    });
    for (k, a) in snap.assignments() {
        if !a.value.previous.is_empty() {
            mem.since.entry(k.clone()).or_insert((a.value.epoch, now));
        }
    }
    let clock = Clock {
        now,
        grace: l.grace,
        since: &mem.since,
    };
    let tokens = if mem.stuck_at == Some(snap.revision()) {
        0
    } else {
        l.budget.available(now)
    };
    let pass = plan_pass(snap, &params, &clock, tokens);
    if tokens > 0 {
        mem.stuck_at = pass.stuck.then(|| snap.revision());
    }
    let plan = &pass.placed;
    let m = &l.metrics;
    let (max_ratio, min_ratio) = load_ratios(&plan.load);
    m.load_max_ratio.set(max_ratio);
    m.load_min_ratio.set(min_ratio);
    m.violations.set(plan.violations.len() as i64);
    m.shards.set(plan.shards.len() as i64);
    m.slots_max.set(i64::from(plan.load.max));
    m.slots_min.set(i64::from(plan.load.min));
    let mut slots: BTreeMap<&str, i64> = snap.workers().keys().map(|w| (w.as_str(), 0)).collect();
    for a in snap.assignments().values() {
        for w in &a.value.workers {
            *slots.entry(w.as_str()).or_default() += 1;
        }
    }
    // Rebuilt each pass so that workers that left the fleet drop out of the series.
    m.worker_slots.reset();
    for (worker, n) in slots {
        m.worker_slots.with_label_values(&[worker]).set(n);
    }
    if mem
        .overlap_at
        .is_none_or(|at| at.elapsed() >= OVERLAP_EVERY)
    {
        let stored: BTreeMap<_, _> = snap
            .assignments()
            .iter()
            .map(|(k, a)| (k.clone(), a.value.workers.clone()))
            .collect();
        m.max_overlap
            .set(i64::from(overlap_stats(&stored).max_overlap));
        mem.overlap_at = Some(started);
    }
    let (actions, balancing) = (pass.actions, pass.balancing);
    if actions.is_empty() {
        m.reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        return;
    }
    debug!(
        actions = actions.len(),
        revision = snap.revision(),
        "reconciling"
    );
    let result = execute(&l.cp, snap, actions, &l.prefetcher, Some(fence), Some(m)).await;
    // Spent when the last of them could have been committed, whether it was or not
    // (a failed prefetch is retried against the budget too).
    l.budget.spend(Instant::now(), balancing);
    match result {
        Ok(report) => {
            m.reconcile_duration
                .observe(started.elapsed().as_secs_f64());
            if report.writes() > 0 || report.deferred > 0 || report.conflicts > 0 {
                info!(
                    created = report.created,
                    updated = report.updated,
                    swapped = report.swapped,
                    cleared = report.cleared,
                    deleted = report.deleted,
                    conflicts = report.conflicts,
                    deferred = report.deferred,
                    failed = report.failed,
                    moves = report.moves,
                    balanced = report.balanced,
                    "reconciled"
                );
            }
            if report.revision > 0 {
                let wait = l.snapshots.wait_for(|s| s.revision() >= report.revision);
                let _ = tokio::time::timeout(CATCH_UP, async { wait.await.map(|_| ()) }).await;
            }
        }
        Err(ApplyError::Deposed(key)) => {
            warn!(%key, "deposed while reconciling; writes were refused");
        }
    }
}
