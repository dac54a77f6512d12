//! The JSON values stored in etcd, one type per key kind of [`crate::keys::Key`].
//!
//! Records are read with [`crate::compat::from_json`]: a field a newer release added is
//! ignored and noted (counted and logged once per key kind by the watcher), never a
//! reason to drop the value, and an enum value this release does not know parses into
//! the enum's `Unknown` variant, whose handling is written beside it. They are written
//! as plain, readable JSON so that `etcdctl get --prefix /shardline` is useful to an
//! operator. The evolution rule is in `docs/etcd-layout.md`.

use serde::{Deserialize, Serialize};

use crate::auth::KeyDigest;
use crate::compat::Evolving;
use crate::ids::{ModelKey, VersionId, WorkerId};
use crate::rollout::{Canary, Shadow};

/// `workers/<id>`: written by a worker under its lease; gone when the lease expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// `host:port` routers use to reach the worker.
    pub address: String,
    /// Memory budget for models, in bytes.
    pub capacity_bytes: u64,
    /// Bytes accounted to resident models, as published by releases that kept the
    /// resident list in this record. Current workers leave it out (0) and publish each
    /// resident model under its own `resident/…` key instead, so that this record is
    /// written once per registration, not on every load.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub used_bytes: u64,
    /// Models loaded, as published by releases before the `resident/…` keys; read so
    /// that a mixed fleet keeps its preference for warm workers. Current workers leave
    /// it empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resident: Vec<ResidentModel>,
    /// The worker's build (crate version and git revision when known).
    pub build_version: String,
    /// Unix seconds when this worker process started.
    #[serde(default)]
    pub started_at: u64,
}

/// A model version resident on a worker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResidentModel {
    #[serde(flatten)]
    pub model: ModelKey,
    pub version: VersionId,
    pub bytes: u64,
}

/// `resident/<worker>/<tenant>/<model>/<version>`: one model version loaded on a
/// worker, under the worker's lease (so it disappears with the worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidentRecord {
    /// Bytes the worker accounts to this model version.
    pub bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `worker-admin/<id>`: operator intent for a worker; absent means active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkerAdmin {
    pub state: AdminState,
}

/// Whether a worker takes new shards and keeps its current ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Keeps its shards and takes new ones.
    #[default]
    Active,
    /// Keeps its shards, takes no new ones.
    Cordoned,
    /// Its shards are being moved away; takes no new ones.
    Draining,
    /// A state written by a newer release. Treated like [`AdminState::Cordoned`], the
    /// one choice that changes nothing by itself: the worker keeps serving its shards
    /// (nothing moves, no tenant loses a member) and takes no new ones until a release
    /// that knows the state reads it. Noted by the watcher like an unknown field.
    #[serde(other)]
    Unknown,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Active => "active",
            AdminState::Cordoned => "cordoned",
            AdminState::Draining => "draining",
            AdminState::Unknown => "unknown",
        }
    }
}

impl Evolving for WorkerRecord {}
impl Evolving for ResidentRecord {}
impl Evolving for TenantRecord {}
impl Evolving for LiveVersion {}
impl Evolving for Assignment {}
impl Evolving for PlacementConfig {}

impl Evolving for WorkerAdmin {
    fn unknown_values(&self, found: &mut Vec<&'static str>) {
        if self.state == AdminState::Unknown {
            found.push("state");
        }
    }
}

/// `tenants/<tenant>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Workers per shard for this tenant's models; `None` uses the placement default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_size: Option<u32>,
    #[serde(default)]
    pub limits: TenantLimits,
    /// Digests of the tenant's API keys; plain keys are never stored.
    #[serde(default)]
    pub keys: Vec<KeyDigest>,
    /// Unix seconds when created.
    #[serde(default)]
    pub created_at: u64,
}

/// Per-tenant admission limits enforced by each router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantLimits {
    /// Concurrent requests per router; `0` means unlimited.
    pub max_in_flight: u32,
    /// Requests per second per router; `0` means unlimited.
    pub rate_per_sec: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            rate_per_sec: 0,
        }
    }
}

/// `models/<tenant>/<model>`: the version served when none is named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveVersion {
    pub version: VersionId,
    /// Unix seconds of the last switch.
    #[serde(default)]
    pub updated_at: u64,
    /// A version taking a share of the requests that name none (boxed: most models
    /// have none, and the snapshot keeps one of these per model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Box<Canary>>,
    /// A version scoring a sample of those requests for comparison only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Box<Shadow>>,
}

/// `assignments/<tenant>/<model>`: the shard of workers serving a model.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Assignment {
    /// Current members, in the placement's preference order.
    pub workers: Vec<WorkerId>,
    /// Bumped on every change; lets a reader tell two assignments apart at a glance.
    pub epoch: u64,
    /// Members being replaced: still served from until the new ones are warm.
    #[serde(default)]
    pub previous: Vec<WorkerId>,
}

/// `placement`: parameters every placement run must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementConfig {
    /// Algorithm identifier; a change of algorithm is a deliberate migration.
    pub algorithm: String,
    /// SipHash key, as 32 lowercase hex characters (two little-endian u64).
    pub seed: String,
    /// Shard size for tenants that do not set their own.
    pub default_k: u32,
    /// Maximum number of workers two shards may share.
    pub max_overlap: u32,
    /// Load cap slack ε in thousandths: cap = ⌈(1 + ε)·Σk / n⌉.
    pub epsilon_permille: u32,
    /// Bumped whenever the parameters change.
    pub epoch: u64,
}

/// The placement algorithm this release implements.
pub const PLACEMENT_ALGORITHM: &str = "rendezvous-sticky/v1";

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            algorithm: PLACEMENT_ALGORITHM.into(),
            seed: "73686172646c696e652d706c6163652d".into(),
            default_k: 4,
            max_overlap: 2,
            epsilon_permille: 100,
            epoch: 1,
        }
    }
}

impl PlacementConfig {
    /// The SipHash key halves, or an error naming what is wrong with `seed`.
    pub fn seed_keys(&self) -> Result<(u64, u64), String> {
        let bytes = hex::decode(&self.seed)
            .ok()
            .filter(|b| b.len() == 16)
            .ok_or_else(|| format!("placement seed {:?} must be 32 hex characters", self.seed))?;
        let (a, b) = bytes.split_at(8);
        let k0 = u64::from_le_bytes(a.try_into().map_err(|_| "seed".to_owned())?);
        let k1 = u64::from_le_bytes(b.try_into().map_err(|_| "seed".to_owned())?);
        Ok((k0, k1))
    }

    /// Checks the parameters for use.
    pub fn validate(&self) -> Result<(), String> {
        if self.algorithm != PLACEMENT_ALGORITHM {
            return Err(format!(
                "placement algorithm {:?} is not supported (expected {PLACEMENT_ALGORITHM:?})",
                self.algorithm
            ));
        }
        self.seed_keys()?;
        if !(1..=64).contains(&self.default_k) {
            return Err("default_k must be between 1 and 64".into());
        }
        if self.epsilon_permille > 10_000 {
            return Err("epsilon_permille must be at most 10000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat;

    #[test]
    fn records_read_back() {
        let w: WorkerRecord = serde_json::from_str(
            r#"{"address":"127.0.0.1:9000","capacity_bytes":1024,"build_version":"0.1.0",
                "resident":[{"tenant":"acme","model":"risk","version":"1","bytes":10}]}"#,
        )
        .unwrap();
        assert_eq!(w.resident[0].model.tenant.as_str(), "acme");
        let json = serde_json::to_string(&w).unwrap();
        assert!(json.contains(r#""tenant":"acme","model":"risk""#), "{json}");
        let a: Assignment = serde_json::from_str(r#"{"workers":["w1","w2"],"epoch":3}"#).unwrap();
        assert!(a.previous.is_empty());
        // Invalid values stay invalid: a bad id, a missing field, a wrong type.
        assert!(serde_json::from_str::<Assignment>(r#"{"workers":["W1"],"epoch":3}"#).is_err());
        assert!(serde_json::from_str::<Assignment>(r#"{"workers":[]}"#).is_err());
        assert!(serde_json::from_str::<WorkerAdmin>(r#"{"state":3}"#).is_err());
    }

    /// Each record with a field a newer release added, at the top and nested: the same
    /// value as without it, and the note names every path.
    #[test]
    fn records_from_a_newer_release_are_read_without_the_new_fields() {
        fn check<T>(with: &str, without: &str, paths: &[&str])
        where
            T: serde::de::DeserializeOwned + Evolving + PartialEq + std::fmt::Debug,
        {
            let (value, ignored) = compat::from_json::<T>(with.as_bytes()).unwrap();
            let (plain, none) = compat::from_json::<T>(without.as_bytes()).unwrap();
            assert_eq!(value, plain, "{with}");
            assert!(none.is_empty(), "{without}: {none}");
            assert_eq!(ignored.fields, paths, "{with}");
        }
        check::<WorkerRecord>(
            r#"{"address":"a:1","capacity_bytes":1,"build_version":"x","zone":{"name":"eu"}}"#,
            r#"{"address":"a:1","capacity_bytes":1,"build_version":"x"}"#,
            &["zone"],
        );
        check::<ResidentRecord>(
            r#"{"bytes":5,"pinned":true}"#,
            r#"{"bytes":5}"#,
            &["pinned"],
        );
        check::<WorkerAdmin>(
            r#"{"state":"draining","reason":{"ticket":"ops-1"}}"#,
            r#"{"state":"draining"}"#,
            &["reason"],
        );
        let digest = "ab".repeat(32);
        check::<TenantRecord>(
            &format!(
                r#"{{"limits":{{"max_in_flight":2,"rate_per_sec":0,"burst":9}},"tier":"gold",
                    "keys":[{{"id":"abababab","sha256":"{digest}","created_at":1,"scope":"read"}}]}}"#
            ),
            &format!(
                r#"{{"limits":{{"max_in_flight":2,"rate_per_sec":0}},
                    "keys":[{{"id":"abababab","sha256":"{digest}","created_at":1}}]}}"#
            ),
            &["limits.burst", "tier", "keys.0.scope"],
        );
        check::<LiveVersion>(
            r#"{"version":"3","updated_at":1,"rollout":{"percent":10}}"#,
            r#"{"version":"3","updated_at":1}"#,
            &["rollout"],
        );
        check::<Assignment>(
            r#"{"workers":["w1"],"epoch":2,"zones":["a"]}"#,
            r#"{"workers":["w1"],"epoch":2}"#,
            &["zones"],
        );
        let p = serde_json::to_value(PlacementConfig::default()).unwrap();
        let mut extra = p.clone();
        extra["spread"] = serde_json::json!({"by": "zone"});
        check::<PlacementConfig>(&extra.to_string(), &p.to_string(), &["spread"]);
    }

    #[test]
    fn an_unknown_admin_state_is_cordoned_and_noted() {
        let (admin, ignored) =
            compat::from_json::<WorkerAdmin>(br#"{"state":"hibernating"}"#).unwrap();
        assert_eq!(admin.state, AdminState::Unknown);
        assert_eq!(ignored.values, ["state"]);
        // What readers test: it keeps its shards and takes no new ones, like cordoned.
        assert_ne!(admin.state, AdminState::Active);
        assert_ne!(admin.state, AdminState::Draining);
    }

    #[test]
    fn placement_defaults_are_valid() {
        let p = PlacementConfig::default();
        p.validate().unwrap();
        let (k0, k1) = p.seed_keys().unwrap();
        assert_ne!(k0, k1);
        let bad = PlacementConfig {
            seed: "xyz".into(),
            ..p.clone()
        };
        assert!(bad.validate().unwrap_err().contains("32 hex"));
        let bad = PlacementConfig {
            algorithm: "ring".into(),
            ..p
        };
        assert!(bad.validate().is_err());
    }
}
