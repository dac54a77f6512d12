//! [`World`]: a control plane described as plain maps, for tests of the pure parts.

use std::collections::BTreeMap;

use shardline_shared::ids::{ModelKey, WorkerId};
use shardline_shared::keys::Prefix;
use shardline_shared::records::{Assignment, PlacementConfig};
use shardline_shared::snapshot::Snapshot;

use super::super::decide::Action;

/// A control plane described as plain maps, turned into a [`Snapshot`] on demand.
#[derive(Debug, Clone, Default)]
pub(crate) struct World {
    /// Live workers and the models (`tenant/model`, version) they report resident.
    pub workers: BTreeMap<String, Vec<(String, String)>>,
    pub admin: BTreeMap<String, &'static str>,
    /// `tenant/model` → live version.
    pub models: BTreeMap<String, String>,
    pub assignments: BTreeMap<ModelKey, (Assignment, i64)>,
    pub k: u32,
    /// The placement's `max_overlap`.
    pub max_overlap: u32,
    pub rev: i64,
}

pub(crate) fn mk(s: &str) -> ModelKey {
    ModelKey::parse_shard_key(s).unwrap()
}

pub(crate) fn ids(v: &[&str]) -> Vec<WorkerId> {
    v.iter().map(|w| w.parse().unwrap()).collect()
}

pub(crate) fn manifest_json(shard: &str, version: &str) -> String {
    let key = mk(shard);
    let m = shardline_testkit::models::manifest(key.tenant.as_str(), key.model.as_str(), version);
    serde_json::to_string(&m).unwrap()
}

impl World {
    pub fn new(k: u32) -> Self {
        Self {
            k,
            max_overlap: PlacementConfig::default().max_overlap,
            rev: 1,
            ..Self::default()
        }
    }

    pub fn worker(mut self, id: &str) -> Self {
        self.workers.insert(id.into(), vec![]);
        self
    }

    pub fn model(mut self, shard: &str, version: &str) -> Self {
        self.models.insert(shard.into(), version.into());
        self
    }

    pub fn assign(mut self, shard: &str, workers: &[&str], epoch: u64, previous: &[&str]) -> Self {
        let a = Assignment {
            workers: ids(workers),
            epoch,
            previous: ids(previous),
        };
        self.rev += 1;
        self.assignments.insert(mk(shard), (a, self.rev));
        self
    }

    /// The key/value pairs etcd would hold.
    pub fn kvs(&self) -> Vec<(String, String)> {
        let mut kvs = vec![(
            "/shardline/placement".to_owned(),
            serde_json::to_string(&PlacementConfig {
                default_k: self.k,
                max_overlap: self.max_overlap,
                ..PlacementConfig::default()
            })
            .unwrap(),
        )];
        for (w, resident) in &self.workers {
            let resident: Vec<_> = resident
                .iter()
                .map(|(shard, v)| {
                    let key = mk(shard);
                    serde_json::json!({"tenant": key.tenant, "model": key.model, "version": v, "bytes": 1})
                })
                .collect();
            let record = serde_json::json!({"address": format!("{w}.test:1"), "capacity_bytes": 100,
                "build_version": "t", "resident": resident});
            kvs.push((format!("/shardline/workers/{w}"), record.to_string()));
        }
        for (w, state) in &self.admin {
            kvs.push((
                format!("/shardline/worker-admin/{w}"),
                format!(r#"{{"state":"{state}"}}"#),
            ));
        }
        for (shard, v) in &self.models {
            kvs.push((
                format!("/shardline/models/{shard}/{v}"),
                manifest_json(shard, v),
            ));
            kvs.push((
                format!("/shardline/models/{shard}"),
                format!(r#"{{"version":"{v}"}}"#),
            ));
        }
        kvs
    }

    pub fn snap(&self) -> Snapshot {
        let kvs = self.kvs();
        let mut all: Vec<(String, Vec<u8>, i64)> = kvs
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes(), 1))
            .collect();
        for (m, (a, rev)) in &self.assignments {
            all.push((
                format!("/shardline/assignments/{m}"),
                serde_json::to_vec(a).unwrap(),
                *rev,
            ));
        }
        let (snap, invalid) = Snapshot::from_kvs(
            Prefix::default(),
            self.rev,
            all.iter().map(|(k, v, r)| (k.as_str(), v.as_slice(), *r)),
        );
        assert!(invalid.is_empty(), "{invalid:?}");
        snap
    }

    /// Carries out `actions` as a perfect executor would: every prefetch succeeds.
    pub fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            self.rev += 1;
            match a {
                Action::Write {
                    model, assignment, ..
                }
                | Action::ClearPrevious {
                    model, assignment, ..
                } => {
                    self.assignments
                        .insert(model.clone(), (assignment.clone(), self.rev));
                }
                Action::Swap {
                    model,
                    assignment,
                    warm,
                    version,
                    ..
                } => {
                    for w in warm {
                        if let Some(r) = self.workers.get_mut(w.as_str()) {
                            r.push((model.to_string(), version.to_string()));
                        }
                    }
                    self.assignments
                        .insert(model.clone(), (assignment.clone(), self.rev));
                }
                Action::Delete { model, .. } => {
                    self.assignments.remove(model);
                }
            }
        }
    }
}
