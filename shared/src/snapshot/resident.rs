//! Which model versions each worker reports loaded, indexed by model (for routing and
//! for finishing swaps) and totalled by worker (for `shardctl workers`).
//!
//! Each `resident/<worker>/<tenant>/<model>/<version>` key is one entry, so a load or an
//! eviction changes one small list and one total, whatever the size of the fleet.

use imbl::OrdMap;

use crate::ids::{ModelKey, VersionId, WorkerId};

/// One model version loaded on one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    pub worker: WorkerId,
    pub version: VersionId,
    pub bytes: u64,
}

/// What a worker reports loaded, in sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResidentTotals {
    pub models: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Residents {
    /// Per model, its (worker, version) entries: a handful (the shard and its previous
    /// members), so a linear scan beats a nested map.
    /// Boxed slices, exactly as long as the list (a pushed `Vec` would keep spare room).
    pub(super) by_model: OrdMap<ModelKey, Box<[Resident]>>,
    pub(super) by_worker: OrdMap<WorkerId, ResidentTotals>,
}

impl Residents {
    pub(super) fn insert(
        &mut self,
        worker: &WorkerId,
        model: &ModelKey,
        version: &VersionId,
        bytes: u64,
    ) {
        let mut list = self
            .by_model
            .get(model)
            .map(|l| l.to_vec())
            .unwrap_or_default();
        match list
            .iter_mut()
            .find(|r| r.worker == *worker && r.version == *version)
        {
            Some(r) => {
                let mut totals = self.by_worker.get(worker).copied().unwrap_or_default();
                totals.bytes = totals.bytes.saturating_sub(r.bytes).saturating_add(bytes);
                r.bytes = bytes;
                self.by_worker.insert(worker.clone(), totals);
            }
            None => {
                list.push(Resident {
                    worker: worker.clone(),
                    version: version.clone(),
                    bytes,
                });
                self.count(worker, bytes);
            }
        }
        self.by_model.insert(model.clone(), list.into_boxed_slice());
    }

    /// Counts one more resident model version on `worker` (also for a listing, which
    /// collects the per-model lists itself).
    pub(super) fn count(&mut self, worker: &WorkerId, bytes: u64) {
        let mut totals = self.by_worker.get(worker).copied().unwrap_or_default();
        totals.models = totals.models.saturating_add(1);
        totals.bytes = totals.bytes.saturating_add(bytes);
        self.by_worker.insert(worker.clone(), totals);
    }

    pub(super) fn remove(&mut self, worker: &WorkerId, model: &ModelKey, version: &VersionId) {
        let Some(list) = self.by_model.get(model) else {
            return;
        };
        let Some(at) = list
            .iter()
            .position(|r| r.worker == *worker && r.version == *version)
        else {
            return;
        };
        let mut list = list.to_vec();
        let gone = list.swap_remove(at);
        if list.is_empty() {
            self.by_model.remove(model);
        } else {
            self.by_model.insert(model.clone(), list.into_boxed_slice());
        }
        if let Some(t) = self.by_worker.get(worker).copied() {
            let t = ResidentTotals {
                models: t.models.saturating_sub(1),
                bytes: t.bytes.saturating_sub(gone.bytes),
            };
            if t.models == 0 {
                self.by_worker.remove(worker);
            } else {
                self.by_worker.insert(worker.clone(), t);
            }
        }
    }
}
