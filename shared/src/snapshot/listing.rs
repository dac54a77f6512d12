//! Building a snapshot from a complete listing (a router or worker starting, or
//! re-listing after a compaction), section by section, with nothing allocated that is
//! freed again before the view is complete.
//!
//! Applying a listing as events would grow each large section one insert at a time: a
//! B-tree fed in key order splits every leaf at its median and leaves it half empty, a
//! model's resident list is reallocated at each worker that reports it, and what the
//! allocator got back meanwhile stays in the process's RSS as holes between the values
//! that remain (a router at 100,000 tenant-models kept about half its heap free).
//! Instead the large sections (tenants and their key index, models, assignments,
//! resident lists) are collected into one vector each and built at the end in full
//! leaves ([`super::pack`]); small sections (workers, admin states, placement,
//! controllers) are applied as events. The result equals applying the same puts one by
//! one (`incremental_equals_relist` in the tests).

use std::sync::Arc;

use super::entry::Entry;
use super::pack::packed;
use super::tenants::Tenants;
use super::{Invalid, ModelEntry, Resident, Snapshot, Versioned};
use crate::compat::Ignored;
use crate::ids::{ModelKey, TenantId};
use crate::keys::Prefix;
use crate::records::{Assignment, TenantRecord};

/// A snapshot under construction from one listing.
#[derive(Debug)]
pub struct Listing {
    snap: Snapshot,
    tenants: Vec<(TenantId, Versioned<TenantRecord>)>,
    /// In arrival order; a model's live pointer and manifests are usually adjacent.
    models: Vec<(ModelKey, ModelEntry)>,
    assignments: Vec<(ModelKey, Versioned<Assignment>)>,
    residents: Vec<(ModelKey, Resident)>,
}

impl Listing {
    /// An empty listing of `prefix`.
    pub fn new(prefix: Prefix) -> Self {
        Self {
            snap: Snapshot::empty(prefix),
            tenants: Vec::new(),
            models: Vec::new(),
            assignments: Vec::new(),
            residents: Vec::new(),
        }
    }

    /// Adds one listed key (each key at most once per listing). As
    /// [`Snapshot::apply_noting`]: a refused value is reported (and left out), keys
    /// outside the prefix are ignored, what a newer release added is returned.
    pub fn put(
        &mut self,
        full: &str,
        value: &[u8],
        mod_revision: i64,
    ) -> Result<Option<Ignored>, Invalid> {
        let key = match self.snap.prefix.parse(full) {
            Ok(Some(k)) => k.interned(),
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.snap.mark_invalid(full, e.to_string())),
        };
        match Entry::parse(&key, value, mod_revision) {
            Ok((entry, ignored)) => {
                self.keep(entry);
                Ok((!ignored.is_empty()).then_some(ignored))
            }
            Err(reason) => Err(self.snap.mark_invalid(full, reason)),
        }
    }

    fn keep(&mut self, entry: Entry) {
        match entry {
            Entry::Tenant(id, v) => self.tenants.push((id, v)),
            Entry::Live(m, v) => self.model(m).live = Some(v),
            Entry::Manifest(m, ver, v) => self.model(m).versions.insert(ver, Arc::new(v)),
            Entry::Assignment(m, v) => self.assignments.push((m, v)),
            Entry::Resident(worker, m, version, bytes) => {
                self.snap.resident.count(&worker, bytes);
                let r = Resident {
                    worker,
                    version,
                    bytes,
                };
                self.residents.push((m, r));
            }
            small => self.snap.insert(small),
        }
    }

    /// The entry of model `m`: the last one collected when it is `m`'s.
    fn model(&mut self, m: ModelKey) -> &mut ModelEntry {
        if self.models.last().is_none_or(|(k, _)| *k != m) {
            self.models.push((m, ModelEntry::default()));
        }
        let last = self.models.len() - 1;
        &mut self.models[last].1
    }

    /// The view at `revision`. Each section is built and its vector freed before the
    /// next, so a section's leaves can take the room the previous vector left.
    pub fn finish(self, revision: i64) -> Snapshot {
        let Self {
            mut snap,
            tenants,
            mut models,
            mut assignments,
            mut residents,
        } = self;
        snap.revision = revision;

        assignments.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        snap.assignments = packed(assignments);

        // Stable, so that merging keeps arrival order (as events would).
        models.sort_by(|a, b| a.0.cmp(&b.0));
        models.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                let later = std::mem::take(&mut later.1);
                if later.live.is_some() {
                    kept.1.live = later.live;
                }
                for (v, m) in later.versions.iter() {
                    kept.1.versions.insert(v.clone(), Arc::clone(m));
                }
            }
            same
        });
        snap.models = packed(models);

        residents.sort_by(|a, b| a.0.cmp(&b.0));
        snap.resident.by_model = packed(group(&residents));
        drop(residents);

        snap.tenants = Tenants::listed(tenants);
        snap
    }
}

/// Each model's residents (`sorted` by model) as one exact slice.
fn group(sorted: &[(ModelKey, Resident)]) -> Vec<(ModelKey, Box<[Resident]>)> {
    let runs = sorted.chunk_by(|a, b| a.0 == b.0);
    let mut out = Vec::with_capacity(runs.clone().count());
    for run in runs {
        let list: Box<[Resident]> = run.iter().map(|(_, r)| r.clone()).collect();
        out.push((run[0].0.clone(), list));
    }
    out
}
