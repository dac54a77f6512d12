//! Typed control-plane writes: tenants and keys, the model registry, worker admin
//! state, assignments and placement parameters.
//!
//! Every write is a conditional transaction: it names the `mod_revision` it read (or
//! that the key must be absent), so two operators or controllers acting at once never
//! lose an update: the second gets [`OpError::Conflict`] and re-reads.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use shardline_shared::auth::{ApiKey, RandomError};
use shardline_shared::compat::{self, Evolving};
use shardline_shared::ids::{ModelKey, TenantId, VersionId, WorkerId};
use shardline_shared::keys::{Key, Prefix, Section};
use shardline_shared::manifest::Manifest;
use shardline_shared::records::{
    AdminState, Assignment, LiveVersion, PlacementConfig, TenantLimits, TenantRecord, WorkerAdmin,
};
use shardline_shared::rollout::{self, Canary, Shadow};
use shardline_shared::snapshot::Versioned;

use crate::store::{KvStore, Op, Precondition, StoreError, Txn, TxnOutcome};

/// Why a control-plane operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Someone else changed the key since it was read; re-read and retry.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("stored value at {key} is invalid: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The largest value any write through [`ControlPlane`] may store. Far below etcd's own
/// request limit (1.5 MiB by default), and small enough that the first listing page
/// ([`LIST_PAGE`](crate::etcd::LIST_PAGE) keys) of such values fits the client's message
/// limit ([`MAX_MESSAGE`](crate::etcd::MAX_MESSAGE)); later pages are sized from what the
/// earlier ones held. A larger value is refused before anything
/// is written (docs/etcd-layout.md).
pub const MAX_VALUE_BYTES: usize = 64 << 10;

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records serialise infallibly (no maps with non-string keys, no custom impls
    // that fail); an empty object would be refused by every reader, never silently used.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// Typed access to the control plane under one prefix.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    store: Arc<dyn KvStore>,
    prefix: Prefix,
}

impl ControlPlane {
    pub fn new(store: Arc<dyn KvStore>, prefix: Prefix) -> Self {
        Self { store, prefix }
    }

    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// The full etcd key for `key`.
    pub fn key(&self, key: &Key) -> String {
        self.prefix.key(key)
    }

    /// Reads and parses one record straight from etcd, leniently like the snapshot: a
    /// field a newer release added is logged and left out (a rewrite of the value by
    /// this release drops it; see the schema evolution rule in `docs/etcd-layout.md`).
    pub async fn read<T: DeserializeOwned + Evolving>(
        &self,
        key: &Key,
    ) -> Result<Option<Versioned<T>>, OpError> {
        let full = self.key(key);
        let Some(kv) = self.store.get(&full).await? else {
            return Ok(None);
        };
        let (value, ignored) = compat::from_json(&kv.value).map_err(|e| OpError::Corrupt {
            key: full.clone(),
            reason: e.to_string(),
        })?;
        if !ignored.is_empty() {
            tracing::warn!(key = %full, ignored = %ignored, "read a value with fields this release does not know");
        }
        Ok(Some(Versioned {
            value,
            mod_revision: kv.mod_revision,
        }))
    }

    /// Writes `value` at `key` if `pre` holds. `what` names the thing in the conflict error.
    pub async fn write<T: Serialize>(
        &self,
        key: &Key,
        value: &T,
        pre: Precondition,
        what: &str,
    ) -> Result<i64, OpError> {
        let full = self.key(key);
        let txn = Txn::new()
            .check(full.clone(), pre)
            .op(Op::put(full, to_json(value)));
        self.commit(txn, what).await
    }

    /// Commits a transaction, mapping a refusal to [`OpError::Conflict`]. A value over
    /// [`MAX_VALUE_BYTES`] refuses the whole transaction before anything is sent.
    pub async fn commit(&self, txn: Txn, what: &str) -> Result<i64, OpError> {
        for op in &txn.ops {
            if let Op::Put { key, value, .. } = op
                && value.len() > MAX_VALUE_BYTES
            {
                return Err(OpError::Refused(format!(
                    "{what} at {key} would be {} bytes; the largest value allowed is {} KiB",
                    value.len(),
                    MAX_VALUE_BYTES >> 10
                )));
            }
        }
        match self.store.txn(txn).await? {
            TxnOutcome::Applied { revision } => Ok(revision),
            TxnOutcome::Refused => Err(OpError::Conflict(format!(
                "{what} changed concurrently; re-read and try again"
            ))),
        }
    }

    // ----- tenants -----

    /// Creates a tenant with one fresh API key, returned (the only time it is visible).
    pub async fn create_tenant(
        &self,
        tenant: &TenantId,
        shard_size: Option<u32>,
        limits: TenantLimits,
    ) -> Result<ApiKey, OpError> {
        if let Some(k) = shard_size.filter(|k| !(1..=64).contains(k)) {
            return Err(OpError::Refused(format!(
                "shard size must be between 1 and 64, got {k}"
            )));
        }
        let now = unix_now();
        let key = ApiKey::generate()?;
        let record = TenantRecord {
            shard_size,
            limits,
            keys: vec![key.digest(now)],
            created_at: now,
        };
        let k = Key::Tenant(tenant.clone());
        match self
            .write(&k, &record, Precondition::Absent, "tenant")
            .await
        {
            Ok(_) => Ok(key),
            Err(OpError::Conflict(_)) => {
                Err(OpError::Refused(format!("tenant {tenant} already exists")))
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces every key of `tenant` by one fresh key.
    pub async fn rotate_key(&self, tenant: &TenantId) -> Result<ApiKey, OpError> {
        let k = Key::Tenant(tenant.clone());
        let Some(mut current) = self.read::<TenantRecord>(&k).await? else {
            return Err(OpError::NotFound(format!("tenant {tenant} does not exist")));
        };
        let key = ApiKey::generate()?;
        current.value.keys = vec![key.digest(unix_now())];
        let pre = Precondition::ModRevision(current.mod_revision);
        self.write(&k, &current.value, pre, "tenant").await?;
        Ok(key)
    }

    /// Deletes a tenant. Refuses while it has models unless `force`, which also deletes
    /// its models and assignments.
    pub async fn delete_tenant(&self, tenant: &TenantId, force: bool) -> Result<(), OpError> {
        let k = Key::Tenant(tenant.clone());
        let Some(current) = self.read::<TenantRecord>(&k).await? else {
            return Err(OpError::NotFound(format!("tenant {tenant} does not exist")));
        };
        let models_prefix = format!("{}{tenant}/", self.prefix.section(Section::Models));
        let assignments_prefix = format!("{}{tenant}/", self.prefix.section(Section::Assignments));
        let owned = self.store.list(&models_prefix).await?;
        if !owned.kvs.is_empty() && !force {
            return Err(OpError::Refused(format!(
                "tenant {tenant} still has models; unpublish them or pass --force"
            )));
        }
        let assigned = self.store.list(&assignments_prefix).await?;
        let mut txn = Txn::new().check(
            self.key(&k),
            Precondition::ModRevision(current.mod_revision),
        );
        for kv in owned.kvs.iter().chain(&assigned.kvs) {
            txn = txn
                .check(kv.key.clone(), Precondition::ModRevision(kv.mod_revision))
                .op(Op::delete(kv.key.clone()));
        }
        txn = txn.op(Op::delete(self.key(&k)));
        self.commit(txn, "tenant").await.map(|_| ())
    }

    // ----- models -----

    /// Registers a new version's manifest and, with `activate`, makes it live, in one
    /// transaction: both keys are written or neither is (an error after an upload leaves
    /// no version half-published in etcd). Versions are immutable: an existing one is
    /// refused.
    pub async fn publish_version(
        &self,
        manifest: &Manifest,
        activate: bool,
    ) -> Result<i64, OpError> {
        manifest
            .validate()
            .map_err(|e| OpError::Refused(e.to_string()))?;
        let model = manifest.key();
        let vkey = self.key(&Key::ModelVersion(model.clone(), manifest.version.clone()));
        let mut txn = Txn::new()
            .check(vkey.clone(), Precondition::Absent)
            .op(Op::put(vkey.clone(), to_json(manifest)));
        if activate {
            let lkey = Key::LiveVersion(model.clone());
            let old = self.read::<LiveVersion>(&lkey).await?;
            let live_pre = match &old {
                Some(l) => Precondition::ModRevision(l.mod_revision),
                None => Precondition::Absent,
            };
            let live = LiveVersion {
                version: manifest.version.clone(),
                updated_at: unix_now(),
                canary: old.as_ref().and_then(|l| l.value.canary.clone()),
                shadow: old.and_then(|l| l.value.shadow),
            };
            let lkey = self.key(&lkey);
            txn = txn
                .check(lkey.clone(), live_pre)
                .op(Op::put(lkey, to_json(&live)));
        }
        match self.commit(txn, "live version").await {
            Err(OpError::Conflict(_)) if self.store.get(&vkey).await?.is_some() => {
                Err(OpError::Refused(format!(
                    "version {} of {model} already exists; publish a new version",
                    manifest.version
                )))
            }
            other => other,
        }
    }

    /// Makes `version` the live version of `model`. The version must exist at commit time.
    pub async fn set_live(&self, model: &ModelKey, version: &VersionId) -> Result<i64, OpError> {
        let vkey = self.key(&Key::ModelVersion(model.clone(), version.clone()));
        let Some(vkv) = self.store.get(&vkey).await? else {
            return Err(OpError::NotFound(format!(
                "model {model} has no version {version}"
            )));
        };
        let lkey = Key::LiveVersion(model.clone());
        let old = self.read::<LiveVersion>(&lkey).await?;
        let live_pre = match &old {
            Some(l) => Precondition::ModRevision(l.mod_revision),
            None => Precondition::Absent,
        };
        // Activating the canary's version promotes it: the canary ends in the same write
        // (and so does a shadow of that version, which would only compare it with itself).
        let (canary, shadow) = match old {
            Some(l) => (l.value.canary, l.value.shadow),
            None => (None, None),
        };
        let live = LiveVersion {
            version: version.clone(),
            updated_at: unix_now(),
            canary: canary.filter(|c| c.version != *version),
            shadow: shadow.filter(|s| s.version != *version),
        };
        let txn = Txn::new()
            .check(vkey, Precondition::ModRevision(vkv.mod_revision))
            .check(self.key(&lkey), live_pre)
            .op(Op::put(self.key(&lkey), to_json(&live)));
        self.commit(txn, "live version").await
    }

    /// Sets (`Some`) or clears (`None`) `model`'s canary in one compare-and-swap of its
    /// live pointer. The canary's version must exist and must not be the live one; the
    /// model must have a live version.
    pub async fn set_canary(
        &self,
        model: &ModelKey,
        canary: Option<Canary>,
    ) -> Result<i64, OpError> {
        if canary
            .as_ref()
            .is_some_and(|c| c.basis_points > rollout::FULL)
        {
            return Err(OpError::Refused("a canary's share is at most 100 %".into()));
        }
        let version = canary.as_ref().map(|c| c.version.clone());
        self.edit_rollout(model, "canary", version, |live| {
            live.canary = canary.map(Box::new);
        })
        .await
    }

    /// Sets (`Some`) or clears (`None`) `model`'s shadow, as [`ControlPlane::set_canary`].
    pub async fn set_shadow(
        &self,
        model: &ModelKey,
        shadow: Option<Shadow>,
    ) -> Result<i64, OpError> {
        if shadow
            .as_ref()
            .is_some_and(|s| s.basis_points > rollout::FULL)
        {
            return Err(OpError::Refused("a shadow's share is at most 100 %".into()));
        }
        let version = shadow.as_ref().map(|s| s.version.clone());
        self.edit_rollout(model, "shadow", version, |live| {
            live.shadow = shadow.map(Box::new);
        })
        .await
    }

    /// One compare-and-swap of `model`'s live pointer changed by `edit`; `version`, the
    /// version a `role` (canary, shadow) names, must exist (checked in the same
    /// transaction) and must not be the live one.
    async fn edit_rollout(
        &self,
        model: &ModelKey,
        role: &str,
        version: Option<VersionId>,
        edit: impl FnOnce(&mut LiveVersion),
    ) -> Result<i64, OpError> {
        let lkey = Key::LiveVersion(model.clone());
        let Some(old) = self.read::<LiveVersion>(&lkey).await? else {
            return Err(OpError::Refused(format!(
                "model {model} has no live version; activate one before a {role}"
            )));
        };
        let mut txn =
            Txn::new().check(self.key(&lkey), Precondition::ModRevision(old.mod_revision));
        if let Some(v) = version {
            if v == old.value.version {
                return Err(OpError::Refused(format!(
                    "version {v} of {model} is already live; a {role} must be another version"
                )));
            }
            let vkey = self.key(&Key::ModelVersion(model.clone(), v.clone()));
            let Some(vkv) = self.store.get(&vkey).await? else {
                return Err(OpError::NotFound(format!(
                    "model {model} has no version {v}"
                )));
            };
            txn = txn.check(vkey, Precondition::ModRevision(vkv.mod_revision));
        }
        let mut live = old.value;
        edit(&mut live);
        let txn = txn.op(Op::put(self.key(&lkey), to_json(&live)));
        self.commit(txn, "live version").await
    }

    /// Removes a version that is not live.
    pub async fn unpublish(&self, model: &ModelKey, version: &VersionId) -> Result<(), OpError> {
        let vkey = self.key(&Key::ModelVersion(model.clone(), version.clone()));
        let Some(vkv) = self.store.get(&vkey).await? else {
            return Err(OpError::NotFound(format!(
                "model {model} has no version {version}"
            )));
        };
        let lkey = Key::LiveVersion(model.clone());
        let live = self.read::<LiveVersion>(&lkey).await?;
        let live_pre = match &live {
            Some(l) if l.value.version == *version => {
                return Err(OpError::Refused(format!(
                    "version {version} of {model} is live; activate another version first"
                )));
            }
            Some(l)
                if l.value
                    .canary
                    .as_ref()
                    .is_some_and(|c| c.version == *version) =>
            {
                return Err(OpError::Refused(format!(
                    "version {version} of {model} is its canary; clear the canary first"
                )));
            }
            Some(l)
                if l.value
                    .shadow
                    .as_ref()
                    .is_some_and(|s| s.version == *version) =>
            {
                return Err(OpError::Refused(format!(
                    "version {version} of {model} is its shadow; clear the shadow first"
                )));
            }
            Some(l) => Precondition::ModRevision(l.mod_revision),
            None => Precondition::Absent,
        };
        let txn = Txn::new()
            .check(vkey.clone(), Precondition::ModRevision(vkv.mod_revision))
            .check(self.key(&lkey), live_pre)
            .op(Op::delete(vkey));
        self.commit(txn, "live version").await.map(|_| ())
    }

    // ----- workers -----

    /// Sets a worker's admin state (active deletes the record: absent means active).
    pub async fn set_worker_admin(
        &self,
        worker: &WorkerId,
        state: AdminState,
    ) -> Result<i64, OpError> {
        let k = Key::WorkerAdmin(worker.clone());
        let current = self.store.get(&self.key(&k)).await?;
        let pre = current.as_ref().map_or(Precondition::Absent, |kv| {
            Precondition::ModRevision(kv.mod_revision)
        });
        let op = match state {
            AdminState::Active => Op::delete(self.key(&k)),
            other => Op::put(self.key(&k), to_json(&WorkerAdmin { state: other })),
        };
        self.commit(
            Txn::new().check(self.key(&k), pre).op(op),
            "worker admin state",
        )
        .await
    }

    // ----- assignments and placement -----

    /// Writes an assignment if the stored one is still at `expected` (`None`: absent).
    pub async fn write_assignment(
        &self,
        model: &ModelKey,
        assignment: &Assignment,
        expected: Option<i64>,
    ) -> Result<i64, OpError> {
        let pre = expected.map_or(Precondition::Absent, Precondition::ModRevision);
        self.write(
            &Key::Assignment(model.clone()),
            assignment,
            pre,
            "assignment",
        )
        .await
    }

    /// Writes placement parameters if the stored ones are still at `expected`.
    pub async fn write_placement(
        &self,
        config: &PlacementConfig,
        expected: Option<i64>,
    ) -> Result<i64, OpError> {
        config.validate().map_err(OpError::Refused)?;
        let pre = expected.map_or(Precondition::Absent, Precondition::ModRevision);
        self.write(&Key::Placement, config, pre, "placement parameters")
            .await
    }
}
