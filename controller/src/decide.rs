//! The pure half of reconciling: from a snapshot and a plan, the writes to make.
//!
//! [`decide`] compares every planned shard with its stored assignment and says what to
//! do about it, without I/O and with time passed in ([`Clock`]):
//!
//! - **create**: no stored assignment; the planned members are written at epoch 1 and
//!   load the model lazily on first use;
//! - **grow/shrink**: members only added (nothing removed) or only dropped are written
//!   at once: the members that stay keep serving, so nobody waits for a cold worker;
//! - **swap**: a member is replaced (its lease expired, or it is draining): the new
//!   members (the swap's `warm` list) are asked to load the model first, and only then
//!   is the assignment written, with the replaced members that are still live kept in
//!   `previous` so that they serve until the new ones are warm;
//! - **clear**: `previous` is emptied once every member is live and reports the live
//!   version resident, or the grace period since the swap was first seen has passed;
//!   members of `previous` that are no longer live are dropped at once;
//! - **delete**: the assignment of a model without a live version is removed.
//!
//! Every action names the `mod_revision` it read, so the executor writes with
//! compare-and-swap and a concurrent change only costs a re-plan.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use shardline_shared::ids::{ModelKey, VersionId, WorkerId};
use shardline_shared::placement::Plan;
use shardline_shared::records::Assignment;
use shardline_shared::snapshot::Snapshot;

/// One write the executor should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `assignment` without prefetching: a new shard (`expected` is `None`) or
    /// one whose members were only added or only dropped.
    Write {
        model: ModelKey,
        assignment: Assignment,
        expected: Option<i64>,
        /// Members added (for the moves counter).
        added: usize,
    },
    /// Ask each of `warm` to load `version`, then write `assignment`.
    Swap {
        model: ModelKey,
        /// The live version to prefetch.
        version: VersionId,
        /// Exactly the members of `assignment.workers` that the stored one lacks.
        warm: Vec<WorkerId>,
        assignment: Assignment,
        expected: i64,
        /// A balancing move (see `balance.rs`): nothing needs it, so a new member that
        /// cannot load the model cancels it instead of being named cold.
        balancing: bool,
    },
    /// Rewrite the stored assignment with a shorter (usually empty) `previous`.
    ClearPrevious {
        model: ModelKey,
        assignment: Assignment,
        expected: i64,
    },
    /// Remove the assignment of a model that has no live version any more.
    Delete { model: ModelKey, expected: i64 },
}

impl Action {
    /// The model the action is about.
    pub fn model(&self) -> &ModelKey {
        match self {
            Action::Write { model, .. }
            | Action::Swap { model, .. }
            | Action::ClearPrevious { model, .. }
            | Action::Delete { model, .. } => model,
        }
    }
}

/// Time as [`decide`] sees it: now, the grace period of `previous`, and when each
/// assignment with a non-empty `previous` was first seen (by model, at its epoch).
#[derive(Debug, Clone)]
pub struct Clock<'a> {
    pub now: Instant,
    pub grace: Duration,
    pub since: &'a BTreeMap<ModelKey, (u64, Instant)>,
}

impl Clock<'_> {
    fn grace_over(&self, model: &ModelKey, epoch: u64) -> bool {
        match self.since.get(model) {
            Some((e, at)) if *e == epoch => self.now.saturating_duration_since(*at) >= self.grace,
            // Never seen at this epoch: the grace period starts now.
            _ => self.grace.is_zero(),
        }
    }
}

/// The actions that bring the stored assignments of `snap` to `plan`. Deterministic:
/// actions come in model order, one per model at most.
pub fn decide(snap: &Snapshot, plan: &Plan, clock: &Clock<'_>) -> Vec<Action> {
    let mut actions = Vec::new();
    for (model, planned) in &plan.shards {
        let Some(live) = live_version(snap, model) else {
            continue;
        };
        let stored = snap.assignments().get(model);
        if let Some(action) = shard_action(snap, model, live, planned, stored, clock) {
            actions.push(action);
        }
    }
    for (model, stored) in snap.assignments() {
        if live_version(snap, model).is_none() {
            actions.push(Action::Delete {
                model: model.clone(),
                expected: stored.mod_revision,
            });
        }
    }
    actions.sort_by(|a, b| a.model().cmp(b.model()));
    actions
}

fn live_version<'a>(snap: &'a Snapshot, model: &ModelKey) -> Option<&'a VersionId> {
    let entry = snap.model(model)?;
    entry.live_manifest().map(|m| &m.version)
}

fn shard_action(
    snap: &Snapshot,
    model: &ModelKey,
    live: &VersionId,
    planned: &[WorkerId],
    stored: Option<&shardline_shared::snapshot::Versioned<Assignment>>,
    clock: &Clock<'_>,
) -> Option<Action> {
    let Some(stored) = stored else {
        // Nothing to serve from yet; an empty shard is not worth writing.
        return (!planned.is_empty()).then(|| Action::Write {
            model: model.clone(),
            assignment: Assignment {
                workers: planned.to_vec(),
                epoch: 1,
                previous: vec![],
            },
            expected: None,
            added: planned.len(),
        });
    };
    let current = &stored.value;
    if planned.is_empty() {
        // No worker can hold the shard: keep what is stored rather than erase it.
        return None;
    }
    let live_workers = snap.workers();
    if current.workers.as_slice() != planned {
        let before: BTreeSet<&WorkerId> = current.workers.iter().collect();
        let after: BTreeSet<&WorkerId> = planned.iter().collect();
        let warm: Vec<WorkerId> = planned
            .iter()
            .filter(|w| !before.contains(w))
            .cloned()
            .collect();
        let removed: Vec<&WorkerId> = current
            .workers
            .iter()
            .filter(|w| !after.contains(w))
            .collect();
        // Replaced members that can still serve, and earlier ones still draining.
        let mut previous: Vec<WorkerId> = Vec::new();
        for w in current.previous.iter().chain(removed.iter().copied()) {
            if live_workers.contains_key(w) && !after.contains(w) && !previous.contains(w) {
                previous.push(w.clone());
            }
        }
        let assignment = Assignment {
            workers: planned.to_vec(),
            epoch: current.epoch + 1,
            previous,
        };
        return Some(if warm.is_empty() || removed.is_empty() {
            Action::Write {
                model: model.clone(),
                assignment,
                expected: Some(stored.mod_revision),
                added: warm.len(),
            }
        } else {
            Action::Swap {
                model: model.clone(),
                version: live.clone(),
                warm,
                assignment,
                expected: stored.mod_revision,
                balancing: false,
            }
        });
    }
    if current.previous.is_empty() {
        return None;
    }
    let warm = current
        .workers
        .iter()
        .all(|w| live_workers.contains_key(w) && snap.is_resident(w, model, live));
    let keep: Vec<WorkerId> = if warm || clock.grace_over(model, current.epoch) {
        vec![]
    } else {
        let mut keep: Vec<WorkerId> = Vec::new();
        for w in &current.previous {
            if live_workers.contains_key(w) && !current.workers.contains(w) && !keep.contains(w) {
                keep.push(w.clone());
            }
        }
        keep
    };
    (keep != current.previous).then(|| Action::ClearPrevious {
        model: model.clone(),
        assignment: Assignment {
            workers: current.workers.clone(),
            epoch: current.epoch + 1,
            previous: keep,
        },
        expected: stored.mod_revision,
    })
}

/// Draining workers that no assignment names any more (in `workers` or `previous`).
pub fn drained(snap: &Snapshot) -> Vec<WorkerId> {
    let named: BTreeSet<&WorkerId> = snap
        .assignments()
        .values()
        .flat_map(|a| a.value.workers.iter().chain(&a.value.previous))
        .collect();
    snap.admin()
        .iter()
        .filter(|(w, a)| {
            a.value.state == shardline_shared::records::AdminState::Draining && !named.contains(w)
        })
        .map(|(w, _)| w.clone())
        .collect()
}
