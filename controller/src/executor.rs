//! The I/O half of reconciling: prefetch on new members, then compare-and-swap writes.
//!
//! [`execute`] carries out the [`Action`]s of [`decide`](super::decide::decide): plain
//! writes, clears and deletes first (they are quick), then swaps, each of which asks
//! its new members to load the model (at most [`PREFETCH_CONCURRENCY`] loads at once)
//! and writes the assignment only after they answered (a balancing swap only once
//! they have the model: a failed prefetch cancels it). Every write is one transaction
//! that checks the assignment's `mod_revision` and, when a [`Fence`] is given, that the
//! writer's election key still exists at the revision it was created with: a deposed
//! controller's writes are refused by etcd itself. [`apply`] is the whole thing for a
//! ready-made plan (`place` or `rebalance`), as `shardctl rebalance --apply` needs it.

use std::time::{Duration, Instant};

use futures::StreamExt;
use shardline_control::ControlPlane;
use shardline_control::OpError;
use shardline_control::store::{Op, Precondition, Txn};
use shardline_shared::ids::{ModelKey, VersionId, WorkerId};
use shardline_shared::keys::Key;
use shardline_shared::placement::Plan;
use shardline_shared::records::Assignment;
use shardline_shared::snapshot::Snapshot;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::decide::{Action, Clock, decide};
use super::metrics::ControllerMetrics;
use super::prefetch::{Prefetch, PrefetchError};

/// Most prefetch requests in flight at once, over all swaps of a pass.
pub const PREFETCH_CONCURRENCY: usize = 16;
/// Most assignment writes in flight at once.
const WRITE_CONCURRENCY: usize = 16;

/// The writer's election key and the revision it was created at. A transaction that
/// carries the fence applies only while that key still exists unchanged, i.e. while
/// the writer's lease (hence its leadership) is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// Full etcd key, `<prefix>/controller/<candidate>`.
    pub key: String,
    pub mod_revision: i64,
}

/// A deposed controller tried to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("no longer the placement controller: election key {0} is gone or changed")]
    Deposed(String),
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub created: usize,
    /// Members only added or only dropped (no prefetch needed).
    pub updated: usize,
    pub swapped: usize,
    pub cleared: usize,
    pub deleted: usize,
    /// Writes refused because the assignment changed (re-planned next round).
    pub conflicts: usize,
    /// Swaps put off because a new member could not load the model yet.
    pub deferred: usize,
    /// Writes that failed for another reason (etcd unreachable).
    pub failed: usize,
    /// Members added by committed writes.
    pub moves: usize,
    /// Of those, members added by balancing swaps.
    pub balanced: usize,
    /// Highest revision committed (0 when nothing was written).
    pub revision: i64,
}

impl Report {
    /// Number of committed writes.
    pub fn writes(&self) -> usize {
        self.created + self.updated + self.swapped + self.cleared + self.deleted
    }
}

enum Outcome {
    Written {
        revision: i64,
        kind: Kind,
        added: usize,
        balancing: bool,
    },
    Conflict,
    Deferred,
    Failed,
}

#[derive(Clone, Copy)]
enum Kind {
    Create,
    Update,
    Swap,
    Clear,
    Delete,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Update => "update",
            Kind::Swap => "swap",
            Kind::Clear => "clear",
            Kind::Delete => "delete",
        }
    }
}

/// Decides and executes `plan` against `snap` (for `shardctl rebalance --apply`): no
/// `previous` is cleared for time, only once the new members are warm.
pub async fn apply<P: Prefetch>(
    cp: &ControlPlane,
    snap: &Snapshot,
    plan: &Plan,
    prefetcher: &P,
    fence: Option<&Fence>,
) -> Result<Report, ApplyError> {
    let since = Default::default();
    let clock = Clock {
        now: Instant::now(),
        grace: Duration::MAX,
        since: &since,
    };
    let actions = decide(snap, plan, &clock);
    execute(cp, snap, actions, prefetcher, fence, None).await
}

/// Executes `actions` (decided from `snap`); see the module docs.
pub async fn execute<P: Prefetch>(
    cp: &ControlPlane,
    snap: &Snapshot,
    actions: Vec<Action>,
    prefetcher: &P,
    fence: Option<&Fence>,
    metrics: Option<&ControllerMetrics>,
) -> Result<Report, ApplyError> {
    let (swaps, quick): (Vec<Action>, Vec<Action>) = actions
        .into_iter()
        .partition(|a| matches!(a, Action::Swap { .. }));
    let permits = Semaphore::new(PREFETCH_CONCURRENCY);
    let ctx = Ctx {
        cp,
        snap,
        prefetcher,
        fence,
        metrics,
        permits: &permits,
    };
    let mut outcomes: Vec<Outcome> = futures::stream::iter(quick)
        .map(|a| ctx.run(a))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let swapped: Vec<Outcome> = futures::stream::iter(swaps)
        .map(|a| ctx.run(a))
        .buffer_unordered(PREFETCH_CONCURRENCY)
        .collect()
        .await;
    outcomes.extend(swapped);
    let mut report = Report::default();
    for o in outcomes {
        match o {
            Outcome::Written {
                revision,
                kind,
                added,
                balancing,
            } => {
                match kind {
                    Kind::Create => report.created += 1,
                    Kind::Update => report.updated += 1,
                    Kind::Swap => report.swapped += 1,
                    Kind::Clear => report.cleared += 1,
                    Kind::Delete => report.deleted += 1,
                }
                report.moves += added;
                if balancing {
                    report.balanced += added;
                }
                report.revision = report.revision.max(revision);
                if let Some(m) = metrics {
                    m.writes.with_label_values(&[kind.as_str()]).inc();
                    m.moves.inc_by(added as u64);
                    if balancing {
                        m.balance_moves.inc_by(added as u64);
                    }
                }
            }
            Outcome::Conflict => {
                report.conflicts += 1;
                if let Some(m) = metrics {
                    m.writes.with_label_values(&["conflict"]).inc();
                }
            }
            Outcome::Deferred => report.deferred += 1,
            Outcome::Failed => report.failed += 1,
        }
    }
    if report.conflicts > 0
        && let Some(fence) = fence
    {
        check_fence(cp, fence).await?;
    }
    Ok(report)
}

/// Fails when the fence key is gone or changed (reading errors are not proof of that).
async fn check_fence(cp: &ControlPlane, fence: &Fence) -> Result<(), ApplyError> {
    match cp.store().get(&fence.key).await {
        Ok(Some(kv)) if kv.mod_revision == fence.mod_revision => Ok(()),
        Ok(_) => Err(ApplyError::Deposed(fence.key.clone())),
        Err(e) => {
            debug!(error = %e, "could not read the election key after a conflict");
            Ok(())
        }
    }
}

struct Ctx<'a, P> {
    cp: &'a ControlPlane,
    snap: &'a Snapshot,
    prefetcher: &'a P,
    fence: Option<&'a Fence>,
    metrics: Option<&'a ControllerMetrics>,
    permits: &'a Semaphore,
}

impl<P: Prefetch> Ctx<'_, P> {
    async fn run(&self, action: Action) -> Outcome {
        match action {
            Action::Write {
                model,
                assignment,
                expected,
                added,
            } => {
                let pre = expected.map_or(Precondition::Absent, Precondition::ModRevision);
                let kind = if expected.is_none() {
                    Kind::Create
                } else {
                    Kind::Update
                };
                self.put(&model, &assignment, pre, kind, added).await
            }
            Action::ClearPrevious {
                model,
                assignment,
                expected,
            } => {
                let pre = Precondition::ModRevision(expected);
                self.put(&model, &assignment, pre, Kind::Clear, 0).await
            }
            Action::Delete { model, expected } => {
                let key = self.cp.key(&Key::Assignment(model.clone()));
                let txn = Txn::new()
                    .check(key.clone(), Precondition::ModRevision(expected))
                    .op(Op::delete(key));
                self.commit(&model, txn, Kind::Delete, 0).await
            }
            Action::Swap {
                model,
                version,
                warm,
                assignment,
                expected,
                balancing,
            } => {
                if !self.warm_up(&model, &version, &warm, balancing).await {
                    return Outcome::Deferred;
                }
                let pre = Precondition::ModRevision(expected);
                let mut outcome = self
                    .put(&model, &assignment, pre, Kind::Swap, warm.len())
                    .await;
                if let Outcome::Written { balancing: b, .. } = &mut outcome {
                    *b = balancing;
                }
                outcome
            }
        }
    }

    /// Prefetches on every member of `warm`; false when one failed transiently, or at
    /// all for a balancing swap (`optional`), which is never made cold.
    async fn warm_up(
        &self,
        model: &ModelKey,
        version: &VersionId,
        warm: &[WorkerId],
        optional: bool,
    ) -> bool {
        let loads = warm.iter().map(|w| async move {
            let Some(record) = self.snap.workers().get(w) else {
                self.count("skipped");
                return !optional;
            };
            let Ok(_permit) = self.permits.acquire().await else {
                return false;
            };
            let started = Instant::now();
            match self
                .prefetcher
                .prefetch(&record.value.address, model, version)
                .await
            {
                Ok(()) => {
                    self.count("ok");
                    debug!(%model, worker = %w, elapsed = ?started.elapsed(), "prefetched");
                    true
                }
                Err(PrefetchError::Permanent(reason)) if optional => {
                    self.count("failed");
                    warn!(%model, worker = %w, %reason,
                        "prefetch failed for good; balancing move not made");
                    false
                }
                Err(PrefetchError::Permanent(reason)) => {
                    self.count("failed");
                    warn!(%model, worker = %w, %reason,
                        "prefetch failed for good; swapping anyway, the model will cold-start");
                    true
                }
                Err(PrefetchError::Transient(reason)) => {
                    self.count("failed");
                    warn!(%model, worker = %w, %reason, "prefetch failed; retrying next round");
                    false
                }
            }
        });
        futures::future::join_all(loads)
            .await
            .into_iter()
            .all(|ok| ok)
    }

    fn count(&self, result: &str) {
        if let Some(m) = self.metrics {
            m.prefetch.with_label_values(&[result]).inc();
        }
    }

    async fn put(
        &self,
        model: &ModelKey,
        assignment: &Assignment,
        pre: Precondition,
        kind: Kind,
        added: usize,
    ) -> Outcome {
        let key = self.cp.key(&Key::Assignment(model.clone()));
        let value = match serde_json::to_vec(assignment) {
            Ok(v) => v,
            Err(e) => {
                warn!(%model, error = %e, "could not encode an assignment");
                return Outcome::Failed;
            }
        };
        let txn = Txn::new().check(key.clone(), pre).op(Op::put(key, value));
        let outcome = self.commit(model, txn, kind, added).await;
        if matches!(outcome, Outcome::Written { .. }) {
            info!(%model, kind = kind.as_str(), epoch = assignment.epoch,
                workers = ?assignment.workers, previous = ?assignment.previous,
                "assignment written");
        }
        outcome
    }

    async fn commit(&self, model: &ModelKey, mut txn: Txn, kind: Kind, added: usize) -> Outcome {
        if let Some(f) = self.fence {
            txn = txn.check(f.key.clone(), Precondition::ModRevision(f.mod_revision));
        }
        match self.cp.commit(txn, "assignment").await {
            Ok(revision) => Outcome::Written {
                revision,
                kind,
                added,
                balancing: false,
            },
            Err(OpError::Conflict(_)) => {
                debug!(%model, kind = kind.as_str(), "assignment write refused; re-planning");
                Outcome::Conflict
            }
            Err(e) => {
                warn!(%model, kind = kind.as_str(), error = %e, "assignment write failed");
                Outcome::Failed
            }
        }
    }
}
