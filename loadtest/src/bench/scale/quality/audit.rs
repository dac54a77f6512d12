//! The move audit of the quality phase: every change under the prefix, in revision order,
//! checked for members named cold.
//!
//! [`Audit`] is plain state (live workers, resident keys, stored assignments) that
//! [`Audit::apply`] advances one event at a time. Each assignment write that adds a member
//! to an existing assignment is a move; the member must already hold a `resident/…` key
//! for the model at that revision — which a simulated worker writes only when the
//! controller's prefetch reaches it, so a move written before its prefetch answered, or
//! without one, is counted `cold`. Moves are told apart by what they replaced: a member
//! whose lease is gone (a repair), a live member (a balancing swap), or nothing (a shard
//! that grew). Writes that create an assignment are counted apart: new shards load lazily
//! and are not moves. [`follow`] feeds a watch into an `Audit`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde::Serialize;
use shardline_control::ControlPlane;
use shardline_control::store::{Event, WatchItem};
use shardline_shared::ids::{ModelKey, WorkerId};
use shardline_shared::keys::{Key, Section};
use shardline_shared::records::Assignment;
use tokio::task::JoinHandle;

/// Cold moves whose details are kept for the report.
const EXAMPLES: usize = 5;

/// What the audited writes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MoveCounts {
    /// Assignments written where there was none (new shards).
    pub creates: u64,
    /// Members added in place of a member whose lease was gone.
    pub repairs: u64,
    /// Members added in place of a live member.
    pub balancing: u64,
    /// Members added without replacing one.
    pub grown: u64,
    /// Of the added members, those without the model resident when named.
    pub cold: u64,
}

impl MoveCounts {
    /// Members added to existing assignments.
    pub fn moves(&self) -> u64 {
        self.repairs + self.balancing + self.grown
    }
}

/// Live workers, resident keys and assignments as of [`Audit::revision`].
#[derive(Debug, Default)]
pub struct Audit {
    live: HashSet<WorkerId>,
    resident: HashSet<(WorkerId, ModelKey)>,
    assignments: BTreeMap<ModelKey, Assignment>,
    pub counts: MoveCounts,
    /// The first few cold moves, `model: worker`.
    pub cold_examples: Vec<String>,
    /// Highest revision applied.
    pub revision: i64,
}

impl Audit {
    /// Starts from the given state (resident keys by worker and model, any version).
    pub fn new(
        live: impl IntoIterator<Item = WorkerId>,
        resident: impl IntoIterator<Item = (WorkerId, ModelKey)>,
        assignments: BTreeMap<ModelKey, Assignment>,
        revision: i64,
    ) -> Self {
        Self {
            live: live.into_iter().collect(),
            resident: resident.into_iter().collect(),
            assignments,
            revision,
            ..Self::default()
        }
    }

    /// Applies one change: `value` is `None` for a delete. Keys the audit does not
    /// follow, and assignments that do not decode, are ignored.
    pub fn apply(&mut self, key: &Key, value: Option<&[u8]>, revision: i64) {
        self.revision = self.revision.max(revision);
        match (key, value) {
            (Key::Worker(w), Some(_)) => {
                self.live.insert(w.clone());
            }
            (Key::Worker(w), None) => {
                self.live.remove(w);
            }
            (Key::Resident(w, m, _), Some(_)) => {
                self.resident.insert((w.clone(), m.clone()));
            }
            (Key::Resident(w, m, _), None) => {
                self.resident.remove(&(w.clone(), m.clone()));
            }
            (Key::Assignment(m), Some(v)) => {
                if let Ok(a) = serde_json::from_slice::<Assignment>(v) {
                    self.assign(m, a);
                }
            }
            (Key::Assignment(m), None) => {
                self.assignments.remove(m);
            }
            _ => {}
        }
    }

    fn assign(&mut self, model: &ModelKey, new: Assignment) {
        let Some(old) = self.assignments.get(model) else {
            self.counts.creates += 1;
            self.assignments.insert(model.clone(), new);
            return;
        };
        let before: BTreeSet<&WorkerId> = old.workers.iter().collect();
        let after: BTreeSet<&WorkerId> = new.workers.iter().collect();
        let added: Vec<&WorkerId> = after.difference(&before).copied().collect();
        let removed: Vec<&WorkerId> = before.difference(&after).copied().collect();
        let n = added.len() as u64;
        if removed.iter().any(|w| !self.live.contains(*w)) {
            self.counts.repairs += n;
        } else if removed.is_empty() {
            self.counts.grown += n;
        } else {
            self.counts.balancing += n;
        }
        for w in added {
            if !self.resident.contains(&((*w).clone(), model.clone())) {
                self.counts.cold += 1;
                if self.cold_examples.len() < EXAMPLES {
                    self.cold_examples.push(format!("{model}: {w}"));
                }
            }
        }
        self.assignments.insert(model.clone(), new);
    }

    /// What keeps the placement from being finished: assignments with `previous` left,
    /// members whose lease is gone, and models of `wanted` without an assignment.
    pub fn unfinished(&self, wanted: &[ModelKey]) -> Unfinished {
        Unfinished {
            with_previous: self
                .assignments
                .values()
                .filter(|a| !a.previous.is_empty())
                .count(),
            on_lost_workers: self
                .assignments
                .values()
                .flat_map(|a| &a.workers)
                .filter(|w| !self.live.contains(*w))
                .count(),
            unassigned: wanted
                .iter()
                .filter(|m| !self.assignments.contains_key(*m))
                .count(),
        }
    }

    /// The assignments as the audit last saw them.
    pub fn assignments(&self) -> &BTreeMap<ModelKey, Assignment> {
        &self.assignments
    }
}

/// See [`Audit::unfinished`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Unfinished {
    pub with_previous: usize,
    pub on_lost_workers: usize,
    pub unassigned: usize,
}

impl Unfinished {
    pub fn is_done(&self) -> bool {
        *self == Self::default()
    }
}

/// Lists the live workers, resident keys and assignments (nothing may change them
/// meanwhile: the controller is not running yet) into an [`Audit`].
pub async fn baseline(cp: &ControlPlane) -> anyhow::Result<Audit> {
    let prefix = cp.prefix();
    let mut revision = i64::MAX;
    let mut keys = Vec::new();
    for section in [Section::Workers, Section::Resident, Section::Assignments] {
        let listing = cp.store().list(&prefix.section(section)).await?;
        revision = revision.min(listing.revision);
        for kv in listing.kvs {
            if let Ok(Some(key)) = prefix.parse(&kv.key) {
                keys.push((key, kv.value));
            }
        }
    }
    let mut audit = Audit::new([], [], BTreeMap::new(), revision);
    for (key, value) in &keys {
        audit.apply(key, Some(value), revision);
    }
    // The listing's assignments are the starting point, not creations.
    audit.counts = MoveCounts::default();
    Ok(audit)
}

/// Feeds every change after `audit`'s revision into it until aborted; fails when the
/// watch ends or its history was compacted.
pub fn follow(cp: &ControlPlane, audit: Arc<Mutex<Audit>>) -> JoinHandle<anyhow::Result<()>> {
    let cp = cp.clone();
    tokio::spawn(async move {
        let start = audit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .revision
            + 1;
        let mut stream = cp.store().watch(cp.prefix().root(), start).await?;
        while let Some(item) = stream.next().await {
            match item.context("the audit's watch")? {
                WatchItem::Compacted { compact_revision } => {
                    bail!("the audit's watch was compacted at {compact_revision}")
                }
                WatchItem::Batch { events, .. } => {
                    let mut a = audit.lock().unwrap_or_else(PoisonError::into_inner);
                    for event in &events {
                        let Ok(Some(key)) = cp.prefix().parse(event.key()) else {
                            continue;
                        };
                        match event {
                            Event::Put(kv) => a.apply(&key, Some(&kv.value), kv.mod_revision),
                            Event::Delete { mod_revision, .. } => {
                                a.apply(&key, None, *mod_revision);
                            }
                        }
                    }
                }
            }
        }
        bail!("the audit's watch ended")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use shardline_shared::ids::{ModelName, TenantId, VersionId};

    fn w(i: usize) -> WorkerId {
        WorkerId::new(format!("w{i}")).unwrap()
    }

    fn model() -> ModelKey {
        ModelKey::new(TenantId::new("t").unwrap(), ModelName::new("m").unwrap())
    }

    fn put(a: &mut Audit, members: &[usize], previous: &[usize], rev: i64) {
        let value = serde_json::to_vec(&Assignment {
            workers: members.iter().map(|&x| w(x)).collect(),
            epoch: rev as u64,
            previous: previous.iter().map(|&x| w(x)).collect(),
        })
        .unwrap();
        a.apply(&Key::Assignment(model()), Some(&value), rev);
    }

    fn resident(a: &mut Audit, worker: usize, rev: i64) {
        let key = Key::Resident(w(worker), model(), VersionId::new("1").unwrap());
        a.apply(&key, Some(b"{\"bytes\":1}"), rev);
    }

    #[test]
    fn a_swap_is_warm_only_if_the_resident_key_came_first() {
        let mut a = Audit::new((0..6).map(w), [], BTreeMap::new(), 0);
        put(&mut a, &[0, 1], &[], 1);
        assert_eq!(a.counts.creates, 1);
        // Balancing 1 → 2, prefetched: warm.
        resident(&mut a, 2, 2);
        put(&mut a, &[0, 2], &[1], 3);
        // Balancing 2 → 3 with the key written only afterwards: cold.
        put(&mut a, &[0, 3], &[2], 4);
        resident(&mut a, 3, 5);
        assert_eq!((a.counts.balancing, a.counts.cold), (2, 1));
        assert_eq!(a.cold_examples, vec![format!("{}: w3", model())]);
        assert_eq!(a.unfinished(&[model()]).with_previous, 1);
    }

    #[test]
    fn repairs_replace_lost_members_and_growth_replaces_none() {
        let mut a = Audit::new((0..6).map(w), [], BTreeMap::new(), 0);
        put(&mut a, &[0, 1], &[], 1);
        a.apply(&Key::Worker(w(1)), None, 2);
        assert_eq!(a.unfinished(&[]).on_lost_workers, 1);
        resident(&mut a, 4, 3);
        put(&mut a, &[0, 4], &[], 4);
        put(&mut a, &[0, 4, 5], &[], 5);
        assert_eq!((a.counts.repairs, a.counts.grown, a.counts.cold), (1, 1, 1));
        assert!(a.unfinished(&[model()]).is_done());
        assert_eq!(a.revision, 5);
    }

    #[test]
    fn an_evicted_model_is_cold_again_and_rewrites_are_not_moves() {
        let mut a = Audit::new((0..4).map(w), [(w(2), model())], BTreeMap::new(), 0);
        put(&mut a, &[0, 1], &[], 1);
        put(&mut a, &[1, 0], &[], 2);
        assert_eq!(a.counts.moves(), 0);
        let key = Key::Resident(w(2), model(), VersionId::new("1").unwrap());
        a.apply(&key, None, 3);
        put(&mut a, &[0, 2], &[1], 4);
        assert_eq!((a.counts.balancing, a.counts.cold), (1, 1));
        assert_eq!(a.unfinished(&[model()]).unassigned, 0);
        let other = ModelKey::new(TenantId::new("u").unwrap(), ModelName::new("m").unwrap());
        assert_eq!(a.unfinished(&[other]).unassigned, 1);
    }
}
