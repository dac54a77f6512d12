//! The in-memory view of the whole control plane at one etcd revision.
//!
//! A [`Snapshot`] is built from key/value pairs (a prefix listing) and kept current by
//! applying watch events with [`Snapshot::apply`]. It is pure data: the etcd watcher
//! owns the I/O and publishes each new snapshot as an immutable `Arc<Snapshot>`.
//!
//! Sections are persistent maps ([`imbl::OrdMap`], a B+tree whose nodes are shared
//! between versions): cloning a snapshot is O(1), and applying one event to a clone
//! copies only the path to the changed entry (O(log n) nodes of at most 64 entries),
//! never the unrelated entries, while requests keep reading the previous snapshot.
//! `tests/sharing.rs` beside this crate measures that with a counting allocator.
//!
//! A value that does not parse, or a key that does not fit the layout, is *treated as
//! absent* and reported as an [`Invalid`] entry: the view then depends only on what etcd
//! holds, so every router computes the same answer from the same revision. Values are
//! parsed leniently ([`crate::compat`]): fields and enum values a newer release added
//! are noted ([`Snapshot::apply_noting`]), never a reason to drop the value.

use std::sync::Arc;

pub use imbl::OrdMap;

use crate::auth;
use crate::compat::Ignored;
use crate::ids::{ModelKey, TenantId, VersionId, WorkerId};
use crate::keys::{Key, Prefix};
use crate::manifest::Manifest;
use crate::records::{
    AdminState, Assignment, LiveVersion, PlacementConfig, TenantRecord, WorkerAdmin, WorkerRecord,
};

use entry::Entry;
pub use listing::Listing;
use resident::Residents;
pub use resident::{Resident, ResidentTotals};
use tenants::Tenants;
pub use versions::Versions;

/// A value together with the etcd `mod_revision` it was read at (for compare-and-swap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

/// Everything known about one tenant model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelEntry {
    pub live: Option<Versioned<LiveVersion>>,
    pub versions: Versions,
}

impl ModelEntry {
    /// The manifest of the live version, if the live pointer names a known version.
    pub fn live_manifest(&self) -> Option<&Manifest> {
        let live = self.live.as_ref()?;
        self.versions.get(&live.value.version).map(|v| &v.value)
    }

    fn is_empty(&self) -> bool {
        self.live.is_none() && self.versions.is_empty()
    }
}

/// A key whose value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

/// One change to apply.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Put {
        key: &'a str,
        value: &'a [u8],
        mod_revision: i64,
    },
    Delete {
        key: &'a str,
    },
}

/// The control plane as of one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    prefix: Prefix,
    revision: i64,
    workers: OrdMap<WorkerId, Versioned<WorkerRecord>>,
    resident: Residents,
    admin: OrdMap<WorkerId, Versioned<WorkerAdmin>>,
    tenants: Tenants,
    models: OrdMap<ModelKey, ModelEntry>,
    assignments: OrdMap<ModelKey, Versioned<Assignment>>,
    placement: Option<Versioned<PlacementConfig>>,
    controllers: OrdMap<String, Versioned<String>>,
    invalid: OrdMap<String, String>,
}

impl Snapshot {
    /// An empty view for `prefix`, at revision 0.
    pub fn empty(prefix: Prefix) -> Self {
        Self {
            prefix,
            revision: 0,
            workers: OrdMap::new(),
            resident: Residents::default(),
            admin: OrdMap::new(),
            tenants: Tenants::default(),
            models: OrdMap::new(),
            assignments: OrdMap::new(),
            placement: None,
            controllers: OrdMap::new(),
            invalid: OrdMap::new(),
        }
    }

    /// Builds a view from a prefix listing taken at `revision` (each key once), with
    /// [`Listing`]. Returns the keys refused.
    pub fn from_kvs<'a>(
        prefix: Prefix,
        revision: i64,
        kvs: impl IntoIterator<Item = (&'a str, &'a [u8], i64)>,
    ) -> (Self, Vec<Invalid>) {
        let mut listing = Listing::new(prefix);
        let mut invalid = Vec::new();
        for (key, value, mod_revision) in kvs {
            if let Err(e) = listing.put(key, value, mod_revision) {
                invalid.push(e);
            }
        }
        (listing.finish(revision), invalid)
    }

    /// Applies one change. A refused value removes what the key held before and is
    /// reported; keys outside the prefix are ignored.
    pub fn apply(&mut self, change: Change<'_>) -> Result<(), Invalid> {
        self.apply_noting(change).map(drop)
    }

    /// [`Self::apply`], also returning what a stored value held that this release does
    /// not know (fields and enum values a newer release added): the value is used
    /// without them, and the caller counts and logs the note.
    pub fn apply_noting(&mut self, change: Change<'_>) -> Result<Option<Ignored>, Invalid> {
        let full = match change {
            Change::Put { key, .. } | Change::Delete { key } => key,
        };
        let key = match self.prefix.parse(full) {
            Ok(Some(k)) => k.interned(),
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.mark_invalid(full, e.to_string())),
        };
        let outcome = match change {
            Change::Put {
                value,
                mod_revision,
                ..
            } => self.put(&key, value, mod_revision),
            Change::Delete { .. } => {
                self.remove(&key);
                Ok(None)
            }
        };
        match outcome {
            Ok(ignored) => {
                if self.invalid.contains_key(full) {
                    self.invalid.remove(full);
                }
                Ok(ignored)
            }
            Err(reason) => {
                self.remove(&key);
                Err(self.mark_invalid(full, reason))
            }
        }
    }

    /// Records the revision the view reflects after applying a batch of events.
    pub fn set_revision(&mut self, revision: i64) {
        self.revision = revision;
    }

    fn mark_invalid(&mut self, key: &str, reason: String) -> Invalid {
        self.invalid.insert(key.to_owned(), reason.clone());
        Invalid {
            key: key.to_owned(),
            reason,
        }
    }

    fn put(&mut self, key: &Key, value: &[u8], rev: i64) -> Result<Option<Ignored>, String> {
        let (entry, ignored) = Entry::parse(key, value, rev)?;
        self.insert(entry);
        Ok((!ignored.is_empty()).then_some(ignored))
    }

    fn insert(&mut self, entry: Entry) {
        match entry {
            Entry::Worker(id, v) => {
                self.workers.insert(id, v);
            }
            Entry::Resident(w, m, ver, bytes) => self.resident.insert(&w, &m, &ver, bytes),
            Entry::WorkerAdmin(id, v) => {
                self.admin.insert(id, v);
            }
            Entry::Tenant(id, v) => self.tenants.insert(id, v),
            Entry::Live(m, v) => {
                let mut entry = self.models.get(&m).cloned().unwrap_or_default();
                entry.live = Some(v);
                self.models.insert(m, entry);
            }
            Entry::Manifest(m, ver, v) => {
                let mut entry = self.models.get(&m).cloned().unwrap_or_default();
                entry.versions.insert(ver, Arc::new(v));
                self.models.insert(m, entry);
            }
            Entry::Assignment(m, v) => {
                self.assignments.insert(m, v);
            }
            Entry::Placement(v) => self.placement = Some(v),
            Entry::Controller(c, v) => {
                self.controllers.insert(c, v);
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        match key {
            Key::Worker(id) => {
                self.workers.remove(id);
            }
            Key::Resident(w, m, v) => self.resident.remove(w, m, v),
            Key::WorkerAdmin(id) => {
                self.admin.remove(id);
            }
            Key::Tenant(id) => self.tenants.remove(id),
            Key::LiveVersion(m) | Key::ModelVersion(m, _) => {
                if let Some(entry) = self.models.get(m) {
                    let has = match key {
                        Key::ModelVersion(_, v) => entry.versions.contains_key(v),
                        _ => entry.live.is_some(),
                    };
                    if !has {
                        return;
                    }
                    let mut entry = entry.clone();
                    match key {
                        Key::ModelVersion(_, v) => {
                            entry.versions.remove(v);
                        }
                        _ => entry.live = None,
                    }
                    if entry.is_empty() {
                        self.models.remove(m);
                    } else {
                        self.models.insert(m.clone(), entry);
                    }
                }
            }
            Key::Assignment(m) => {
                self.assignments.remove(m);
            }
            Key::Placement => self.placement = None,
            Key::Controller(c) => {
                self.controllers.remove(c);
            }
        }
    }

    /// The key prefix this view covers.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// The etcd revision this view reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Live workers (those holding a lease), by id.
    pub fn workers(&self) -> &OrdMap<WorkerId, Versioned<WorkerRecord>> {
        &self.workers
    }

    /// The model versions workers report loaded for `model` (current workers'
    /// `resident/…` keys; see [`Snapshot::is_resident`] for older workers too).
    pub fn residents(&self, model: &ModelKey) -> &[Resident] {
        self.resident.by_model.get(model).map_or(&[], |l| &l[..])
    }

    /// Whether `worker` reports `version` of `model` loaded, through its own
    /// `resident/…` key or, for workers of earlier releases, the list in its record.
    pub fn is_resident(&self, worker: &WorkerId, model: &ModelKey, version: &VersionId) -> bool {
        self.residents(model)
            .iter()
            .any(|r| r.worker == *worker && r.version == *version)
            || self.workers.get(worker).is_some_and(|w| {
                w.value
                    .resident
                    .iter()
                    .any(|r| r.model == *model && r.version == *version)
            })
    }

    /// How many models, and how many bytes, a worker reports loaded (both ways of
    /// publishing them, as [`Snapshot::is_resident`]).
    pub fn resident_totals(&self, worker: &WorkerId) -> ResidentTotals {
        let current = self
            .resident
            .by_worker
            .get(worker)
            .copied()
            .unwrap_or_default();
        let legacy = self
            .workers
            .get(worker)
            .map_or(ResidentTotals::default(), |w| ResidentTotals {
                models: w.value.resident.len() as u64,
                bytes: w.value.used_bytes,
            });
        ResidentTotals {
            models: current.models.saturating_add(legacy.models),
            bytes: current.bytes.saturating_add(legacy.bytes),
        }
    }

    /// Operator state of a worker (active when nothing is recorded).
    pub fn admin_state(&self, id: &WorkerId) -> AdminState {
        self.admin
            .get(id)
            .map(|a| a.value.state)
            .unwrap_or_default()
    }

    /// Recorded admin states, including those of workers that are not live.
    pub fn admin(&self) -> &OrdMap<WorkerId, Versioned<WorkerAdmin>> {
        &self.admin
    }

    /// All tenants.
    pub fn tenants(&self) -> &OrdMap<TenantId, Versioned<TenantRecord>> {
        &self.tenants.records
    }

    /// The tenant owning `presented`, if it is a current key. One SHA-256 and one map
    /// lookup; the stored digest is then compared in constant time.
    pub fn tenant_for_key(&self, presented: &str) -> Option<&TenantId> {
        let digest = auth::digest_bytes(presented);
        let (stored, tenant) = self.tenants.by_digest.get_key_value(&digest)?;
        auth::digests_equal(stored, &digest).then_some(tenant)
    }

    /// All models with any version or live pointer.
    pub fn models(&self) -> &OrdMap<ModelKey, ModelEntry> {
        &self.models
    }

    /// One model's registry entry.
    pub fn model(&self, key: &ModelKey) -> Option<&ModelEntry> {
        self.models.get(key)
    }

    /// The manifest of one version.
    pub fn manifest(&self, key: &ModelKey, version: &VersionId) -> Option<&Manifest> {
        self.models
            .get(key)?
            .versions
            .get(version)
            .map(|v| &v.value)
    }

    /// Stored assignments.
    pub fn assignments(&self) -> &OrdMap<ModelKey, Versioned<Assignment>> {
        &self.assignments
    }

    /// The stored placement parameters, if any were written.
    pub fn placement_record(&self) -> Option<&Versioned<PlacementConfig>> {
        self.placement.as_ref()
    }

    /// Placement parameters in force (the defaults until some are written).
    pub fn placement(&self) -> PlacementConfig {
        self.placement
            .as_ref()
            .map(|p| p.value.clone())
            .unwrap_or_default()
    }

    /// Shard size for a tenant's models.
    pub fn shard_size(&self, tenant: &TenantId) -> u32 {
        self.tenants
            .records
            .get(tenant)
            .and_then(|t| t.value.shard_size)
            .unwrap_or_else(|| self.placement().default_k)
    }

    /// Controller election candidates.
    pub fn controllers(&self) -> &OrdMap<String, Versioned<String>> {
        &self.controllers
    }

    /// Keys currently holding refused values, with the reason.
    pub fn invalid(&self) -> &OrdMap<String, String> {
        &self.invalid
    }
}

mod compact;
mod entry;
mod listing;
mod pack;
mod problem;
mod resident;
mod serving;
mod tenants;
#[cfg(test)]
mod tests;
mod versions;
