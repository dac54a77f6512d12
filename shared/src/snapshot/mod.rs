//! The in-memory view of the whole control plane at one etcd revision.
//!
//! A [`Snapshot`] is built from key/value pairs (a prefix listing) and kept current by
//! applying watch events with [`Snapshot::apply`]. It is pure data: the etcd watcher
//! owns the I/O and publishes each new snapshot as an immutable `Arc<Snapshot>`.
//!
//! Sections are held behind `Arc`s so that publishing a new snapshot after a change
//! copies only the section that changed (a worker's heartbeat does not copy the model
//! registry).
//!
//! A value that does not parse, or a key that does not fit the layout, is *treated as
//! absent* and reported as an [`Invalid`] entry: the view then depends only on what etcd
//! holds, so every router computes the same answer from the same revision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::auth::{self, KeyDigest};
use crate::ids::{ModelKey, TenantId, VersionId, WorkerId};
use crate::keys::{Key, Prefix};
use crate::manifest::Manifest;
use crate::records::{
    AdminState, Assignment, LiveVersion, PlacementConfig, TenantRecord, WorkerAdmin, WorkerRecord,
};

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
    pub versions: BTreeMap<VersionId, Versioned<Manifest>>,
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

#[derive(Debug, Clone, Default)]
struct Tenants {
    records: BTreeMap<TenantId, Versioned<TenantRecord>>,
    /// Digest of each valid API key → tenant: a request's key costs one hash and one lookup.
    by_digest: HashMap<[u8; 32], TenantId>,
}

impl Tenants {
    /// Puts one tenant's record and its key digests: the cost is that tenant's keys, not
    /// every tenant's (a listing of 100,000 tenants applies 100,000 of these).
    fn insert(&mut self, id: TenantId, record: Versioned<TenantRecord>) {
        self.remove(&id);
        for digest in record.value.keys.iter().filter_map(KeyDigest::bytes) {
            self.by_digest.insert(digest, id.clone());
        }
        self.records.insert(id, record);
    }

    /// Removes one tenant's record and the digests that point at it.
    fn remove(&mut self, id: &TenantId) {
        if let Some(old) = self.records.remove(id) {
            for digest in old.value.keys.iter().filter_map(KeyDigest::bytes) {
                if self.by_digest.get(&digest) == Some(id) {
                    self.by_digest.remove(&digest);
                }
            }
        }
    }
}

/// The control plane as of one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    prefix: Prefix,
    revision: i64,
    workers: Arc<BTreeMap<WorkerId, Versioned<WorkerRecord>>>,
    admin: Arc<BTreeMap<WorkerId, Versioned<WorkerAdmin>>>,
    tenants: Arc<Tenants>,
    models: Arc<BTreeMap<ModelKey, ModelEntry>>,
    assignments: Arc<BTreeMap<ModelKey, Versioned<Assignment>>>,
    placement: Option<Versioned<PlacementConfig>>,
    controllers: Arc<BTreeMap<String, Versioned<String>>>,
    invalid: Arc<BTreeMap<String, String>>,
}

impl Snapshot {
    /// An empty view for `prefix`, at revision 0.
    pub fn empty(prefix: Prefix) -> Self {
        Self {
            prefix,
            revision: 0,
            workers: Arc::default(),
            admin: Arc::default(),
            tenants: Arc::default(),
            models: Arc::default(),
            assignments: Arc::default(),
            placement: None,
            controllers: Arc::default(),
            invalid: Arc::default(),
        }
    }

    /// Builds a view from a prefix listing taken at `revision`. Returns the keys refused.
    pub fn from_kvs<'a>(
        prefix: Prefix,
        revision: i64,
        kvs: impl IntoIterator<Item = (&'a str, &'a [u8], i64)>,
    ) -> (Self, Vec<Invalid>) {
        let mut snap = Self::empty(prefix);
        let mut invalid = Vec::new();
        for (key, value, mod_revision) in kvs {
            if let Err(e) = snap.apply(Change::Put {
                key,
                value,
                mod_revision,
            }) {
                invalid.push(e);
            }
        }
        snap.revision = revision;
        (snap, invalid)
    }

    /// Applies one change. A refused value removes what the key held before and is
    /// reported; keys outside the prefix are ignored.
    pub fn apply(&mut self, change: Change<'_>) -> Result<(), Invalid> {
        let full = match change {
            Change::Put { key, .. } | Change::Delete { key } => key,
        };
        let key = match self.prefix.parse(full) {
            Ok(Some(k)) => k,
            Ok(None) => return Ok(()),
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
                Ok(())
            }
        };
        match outcome {
            Ok(()) => {
                if self.invalid.contains_key(full) {
                    Arc::make_mut(&mut self.invalid).remove(full);
                }
                Ok(())
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
        Arc::make_mut(&mut self.invalid).insert(key.to_owned(), reason.clone());
        Invalid {
            key: key.to_owned(),
            reason,
        }
    }

    fn put(&mut self, key: &Key, value: &[u8], rev: i64) -> Result<(), String> {
        match key {
            Key::Worker(id) => {
                let v = parse::<WorkerRecord>(value, rev)?;
                Arc::make_mut(&mut self.workers).insert(id.clone(), v);
            }
            Key::WorkerAdmin(id) => {
                let v = parse::<WorkerAdmin>(value, rev)?;
                Arc::make_mut(&mut self.admin).insert(id.clone(), v);
            }
            Key::Tenant(id) => {
                let v = parse::<TenantRecord>(value, rev)?;
                if let Some(bad) = v.value.keys.iter().find(|k| k.bytes().is_none()) {
                    return Err(format!("key digest {:?} is not 64 hex characters", bad.id));
                }
                Arc::make_mut(&mut self.tenants).insert(id.clone(), v);
            }
            Key::LiveVersion(m) => {
                let v = parse::<LiveVersion>(value, rev)?;
                Arc::make_mut(&mut self.models)
                    .entry(m.clone())
                    .or_default()
                    .live = Some(v);
            }
            Key::ModelVersion(m, ver) => {
                let v = parse::<Manifest>(value, rev)?;
                if v.value.key() != *m || v.value.version != *ver {
                    return Err("manifest names a different tenant, model or version".into());
                }
                v.value.validate().map_err(|e| e.to_string())?;
                Arc::make_mut(&mut self.models)
                    .entry(m.clone())
                    .or_default()
                    .versions
                    .insert(ver.clone(), v);
            }
            Key::Assignment(m) => {
                let v = parse::<Assignment>(value, rev)?;
                Arc::make_mut(&mut self.assignments).insert(m.clone(), v);
            }
            Key::Placement => {
                let v = parse::<PlacementConfig>(value, rev)?;
                v.value.validate()?;
                self.placement = Some(v);
            }
            Key::Controller(c) => {
                let text = String::from_utf8(value.to_vec()).map_err(|e| e.to_string())?;
                Arc::make_mut(&mut self.controllers).insert(
                    c.clone(),
                    Versioned {
                        value: text,
                        mod_revision: rev,
                    },
                );
            }
        }
        Ok(())
    }

    fn remove(&mut self, key: &Key) {
        match key {
            Key::Worker(id) => {
                if self.workers.contains_key(id) {
                    Arc::make_mut(&mut self.workers).remove(id);
                }
            }
            Key::WorkerAdmin(id) => {
                if self.admin.contains_key(id) {
                    Arc::make_mut(&mut self.admin).remove(id);
                }
            }
            Key::Tenant(id) => {
                if self.tenants.records.contains_key(id) {
                    Arc::make_mut(&mut self.tenants).remove(id);
                }
            }
            Key::LiveVersion(m) | Key::ModelVersion(m, _) => {
                if let Some(entry) = self.models.get(m) {
                    let has = match key {
                        Key::ModelVersion(_, v) => entry.versions.contains_key(v),
                        _ => entry.live.is_some(),
                    };
                    if !has {
                        return;
                    }
                    let models = Arc::make_mut(&mut self.models);
                    if let Some(entry) = models.get_mut(m) {
                        match key {
                            Key::ModelVersion(_, v) => {
                                entry.versions.remove(v);
                            }
                            _ => entry.live = None,
                        }
                        if entry.is_empty() {
                            models.remove(m);
                        }
                    }
                }
            }
            Key::Assignment(m) => {
                if self.assignments.contains_key(m) {
                    Arc::make_mut(&mut self.assignments).remove(m);
                }
            }
            Key::Placement => self.placement = None,
            Key::Controller(c) => {
                if self.controllers.contains_key(c) {
                    Arc::make_mut(&mut self.controllers).remove(c);
                }
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
    pub fn workers(&self) -> &BTreeMap<WorkerId, Versioned<WorkerRecord>> {
        &self.workers
    }

    /// Operator state of a worker (active when nothing is recorded).
    pub fn admin_state(&self, id: &WorkerId) -> AdminState {
        self.admin
            .get(id)
            .map(|a| a.value.state)
            .unwrap_or_default()
    }

    /// Recorded admin states, including those of workers that are not live.
    pub fn admin(&self) -> &BTreeMap<WorkerId, Versioned<WorkerAdmin>> {
        &self.admin
    }

    /// All tenants.
    pub fn tenants(&self) -> &BTreeMap<TenantId, Versioned<TenantRecord>> {
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
    pub fn models(&self) -> &BTreeMap<ModelKey, ModelEntry> {
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
    pub fn assignments(&self) -> &BTreeMap<ModelKey, Versioned<Assignment>> {
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
    pub fn controllers(&self) -> &BTreeMap<String, Versioned<String>> {
        &self.controllers
    }

    /// Keys currently holding refused values, with the reason.
    pub fn invalid(&self) -> &BTreeMap<String, String> {
        &self.invalid
    }
}

fn parse<T: DeserializeOwned>(value: &[u8], mod_revision: i64) -> Result<Versioned<T>, String> {
    let value = serde_json::from_slice(value).map_err(|e| format!("invalid JSON value: {e}"))?;
    Ok(Versioned {
        value,
        mod_revision,
    })
}

mod problem;
#[cfg(test)]
mod tests;
