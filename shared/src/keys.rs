//! The etcd key layout: building keys from typed ids and parsing them back.
//!
//! Every key lives under a configurable prefix (default `/shardline`). The layout is
//! documented in `docs/etcd-layout.md`; this module is its single implementation, so
//! writers, watchers and `shardctl` cannot disagree about it.

use std::fmt;

use crate::ids::{ModelKey, ModelName, TenantId, VersionId, WorkerId};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/shardline";

/// A key in the layout, without its prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `workers/<id>`: leased liveness record of a running worker.
    Worker(WorkerId),
    /// `resident/<worker>/<tenant>/<model>/<version>`: one model version loaded on a
    /// worker, under the worker's lease; written when loaded, deleted when evicted.
    Resident(WorkerId, ModelKey, VersionId),
    /// `worker-admin/<id>`: operator state (active, cordoned, draining); not leased.
    WorkerAdmin(WorkerId),
    /// `tenants/<tenant>`: shard size, limits, API key digests.
    Tenant(TenantId),
    /// `models/<tenant>/<model>`: which version is live.
    LiveVersion(ModelKey),
    /// `models/<tenant>/<model>/<version>`: the manifest of one version.
    ModelVersion(ModelKey, VersionId),
    /// `assignments/<tenant>/<model>`: the shard serving a model.
    Assignment(ModelKey),
    /// `placement`: placement parameters (seed, default k, max overlap, epoch).
    Placement,
    /// `controller/<lease>`: election candidates for the placement controller.
    Controller(String),
}

impl Key {
    /// The same key with every name interned (see [`crate::intern`]), for keeping.
    pub fn interned(&self) -> Self {
        match self {
            Key::Worker(w) => Key::Worker(w.interned()),
            Key::Resident(w, m, v) => Key::Resident(w.interned(), m.interned(), v.interned()),
            Key::WorkerAdmin(w) => Key::WorkerAdmin(w.interned()),
            Key::Tenant(t) => Key::Tenant(t.interned()),
            Key::LiveVersion(m) => Key::LiveVersion(m.interned()),
            Key::ModelVersion(m, v) => Key::ModelVersion(m.interned(), v.interned()),
            Key::Assignment(m) => Key::Assignment(m.interned()),
            Key::Placement => Key::Placement,
            Key::Controller(c) => Key::Controller(c.clone()),
        }
    }
}

/// Sections of the layout, for prefix listings and watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Workers,
    Resident,
    WorkerAdmin,
    Tenants,
    Models,
    Assignments,
    Controller,
}

impl Section {
    fn dir(self) -> &'static str {
        match self {
            Section::Workers => "workers/",
            Section::Resident => "resident/",
            Section::WorkerAdmin => "worker-admin/",
            Section::Tenants => "tenants/",
            Section::Models => "models/",
            Section::Assignments => "assignments/",
            Section::Controller => "controller/",
        }
    }
}

/// A validated key prefix such as `/shardline`, stored with a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key prefix {0:?} must start with '/' and contain no empty segments or whitespace")]
pub struct PrefixError(String);

impl Prefix {
    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        let trimmed = prefix.trim_end_matches('/');
        let ok = prefix.starts_with('/')
            && !trimmed.is_empty()
            && !trimmed[1..].split('/').any(str::is_empty)
            && !prefix.chars().any(char::is_whitespace);
        if !ok {
            return Err(PrefixError(prefix.to_owned()));
        }
        Ok(Self(format!("{trimmed}/")))
    }

    /// The prefix with its trailing `/`: list or watch this to see everything.
    pub fn root(&self) -> &str {
        &self.0
    }

    /// The full key for `key`.
    pub fn key(&self, key: &Key) -> String {
        format!("{}{key}", self.0)
    }

    /// The full prefix of a section, for listings.
    pub fn section(&self, section: Section) -> String {
        format!("{}{}", self.0, section.dir())
    }

    /// Every version key of one model starts with this.
    pub fn model_versions(&self, model: &ModelKey) -> String {
        format!("{}models/{}/{}/", self.0, model.tenant, model.model)
    }

    /// Every resident-model key of one worker starts with this.
    pub fn worker_residents(&self, worker: &WorkerId) -> String {
        format!("{}resident/{worker}/", self.0)
    }

    /// Parses a full key. `Ok(None)` means the key is outside this prefix;
    /// `Err` means it is inside but does not fit the layout.
    pub fn parse(&self, full: &str) -> Result<Option<Key>, KeyError> {
        match full.strip_prefix(&self.0) {
            Some(rest) => Key::parse(rest).map(Some),
            None => Ok(None),
        }
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Self(format!("{DEFAULT_PREFIX}/"))
    }
}

/// A key under the prefix that does not fit the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key {key:?} does not fit the layout: {reason}")]
pub struct KeyError {
    pub key: String,
    pub reason: String,
}

impl Key {
    /// Parses a key relative to the prefix.
    pub fn parse(rel: &str) -> Result<Self, KeyError> {
        let err = |reason: String| KeyError {
            key: rel.to_owned(),
            reason,
        };
        let parts: Vec<&str> = rel.split('/').collect();
        let model = |t: &str, m: &str| -> Result<ModelKey, KeyError> {
            Ok(ModelKey::new(
                TenantId::new(t).map_err(|e| err(e.to_string()))?,
                ModelName::new(m).map_err(|e| err(e.to_string()))?,
            ))
        };
        let worker = |w: &str| WorkerId::new(w).map_err(|e| err(e.to_string()));
        match parts[..] {
            ["workers", w] => Ok(Key::Worker(worker(w)?)),
            ["resident", w, t, m, v] => Ok(Key::Resident(
                worker(w)?,
                model(t, m)?,
                VersionId::new(v).map_err(|e| err(e.to_string()))?,
            )),
            ["worker-admin", w] => Ok(Key::WorkerAdmin(worker(w)?)),
            ["tenants", t] => Ok(Key::Tenant(
                TenantId::new(t).map_err(|e| err(e.to_string()))?,
            )),
            ["models", t, m] => Ok(Key::LiveVersion(model(t, m)?)),
            ["models", t, m, v] => Ok(Key::ModelVersion(
                model(t, m)?,
                VersionId::new(v).map_err(|e| err(e.to_string()))?,
            )),
            ["assignments", t, m] => Ok(Key::Assignment(model(t, m)?)),
            ["placement"] => Ok(Key::Placement),
            ["controller", c] if !c.is_empty() => Ok(Key::Controller(c.to_owned())),
            _ => Err(err("unknown key".into())),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Worker(w) => write!(f, "workers/{w}"),
            Key::Resident(w, m, v) => write!(f, "resident/{w}/{}/{}/{v}", m.tenant, m.model),
            Key::WorkerAdmin(w) => write!(f, "worker-admin/{w}"),
            Key::Tenant(t) => write!(f, "tenants/{t}"),
            Key::LiveVersion(m) => write!(f, "models/{}/{}", m.tenant, m.model),
            Key::ModelVersion(m, v) => write!(f, "models/{}/{}/{v}", m.tenant, m.model),
            Key::Assignment(m) => write!(f, "assignments/{}/{}", m.tenant, m.model),
            Key::Placement => f.write_str("placement"),
            Key::Controller(c) => write!(f, "controller/{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mk(t: &str, m: &str) -> ModelKey {
        ModelKey::new(TenantId::new(t).unwrap(), ModelName::new(m).unwrap())
    }

    #[test]
    fn layout_is_as_documented() {
        let p = Prefix::default();
        let w = WorkerId::new("w-1").unwrap();
        let v = VersionId::new("3").unwrap();
        let cases = [
            (Key::Worker(w.clone()), "/shardline/workers/w-1"),
            (
                Key::Resident(w.clone(), mk("acme", "risk"), v.clone()),
                "/shardline/resident/w-1/acme/risk/3",
            ),
            (Key::WorkerAdmin(w), "/shardline/worker-admin/w-1"),
            (
                Key::Tenant(TenantId::new("acme").unwrap()),
                "/shardline/tenants/acme",
            ),
            (
                Key::LiveVersion(mk("acme", "risk")),
                "/shardline/models/acme/risk",
            ),
            (
                Key::ModelVersion(mk("acme", "risk"), v),
                "/shardline/models/acme/risk/3",
            ),
            (
                Key::Assignment(mk("acme", "risk")),
                "/shardline/assignments/acme/risk",
            ),
            (Key::Placement, "/shardline/placement"),
            (Key::Controller("694d".into()), "/shardline/controller/694d"),
        ];
        for (key, full) in cases {
            assert_eq!(p.key(&key), full);
            assert_eq!(p.parse(full).unwrap(), Some(key));
        }
    }

    #[test]
    fn rejects_foreign_and_malformed_keys() {
        let p = Prefix::new("/prod/shardline/").unwrap();
        assert_eq!(p.root(), "/prod/shardline/");
        assert_eq!(p.parse("/shardline/workers/a").unwrap(), None);
        for bad in [
            "/prod/shardline/workers/A",
            "/prod/shardline/workers/a/b",
            "/prod/shardline/models/acme",
            "/prod/shardline/models/acme/risk/1/extra",
            "/prod/shardline/nothing",
            "/prod/shardline/assignments/../x",
            "/prod/shardline/resident/w/acme/risk",
            "/prod/shardline/resident/w/acme/risk/1/x",
        ] {
            assert!(p.parse(bad).is_err(), "{bad}");
        }
        for bad in ["", "shardline", "/", "/a//b", "/a b"] {
            assert!(Prefix::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sections_contain_their_keys() {
        let p = Prefix::default();
        let m = mk("acme", "risk");
        let v = VersionId::new("1").unwrap();
        assert!(
            p.key(&Key::ModelVersion(m.clone(), v))
                .starts_with(&p.model_versions(&m))
        );
        assert!(
            !p.key(&Key::LiveVersion(m.clone()))
                .starts_with(&p.model_versions(&m))
        );
        assert!(
            p.key(&Key::Assignment(m.clone()))
                .starts_with(&p.section(Section::Assignments))
        );
        let w = WorkerId::new("w-1").unwrap();
        let v = VersionId::new("1").unwrap();
        let resident = p.key(&Key::Resident(w.clone(), m, v));
        assert!(resident.starts_with(&p.worker_residents(&w)));
        assert!(resident.starts_with(&p.section(Section::Resident)));
        assert!(!resident.starts_with(&p.worker_residents(&WorkerId::new("w").unwrap())));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = Prefix::default().parse(&s);
        }

        #[test]
        fn round_trip(t in "[a-z0-9][a-z0-9-]{0,10}", m in "[a-z0-9][a-z0-9-]{0,10}", v in "[a-z0-9][a-z0-9-]{0,10}") {
            let p = Prefix::default();
            for key in [
                Key::LiveVersion(mk(&t, &m)),
                Key::ModelVersion(mk(&t, &m), VersionId::new(&v).unwrap()),
                Key::Assignment(mk(&t, &m)),
                Key::Tenant(TenantId::new(&t).unwrap()),
                Key::Worker(WorkerId::new(&m).unwrap()),
            ] {
                prop_assert_eq!(p.parse(&p.key(&key)).unwrap(), Some(key));
            }
        }
    }
}
