//! A snapshot built from readable pieces for the admin module's unit tests.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use shardline_shared::keys::Prefix;
use shardline_shared::snapshot::Snapshot;

/// Key/value pairs under `/shardline/`, turned into a [`Snapshot`].
#[derive(Debug, Default)]
pub struct World {
    kvs: Vec<(String, String)>,
}

impl World {
    pub fn new() -> Self {
        Self::default()
    }

    fn put(mut self, key: String, value: serde_json::Value) -> Self {
        self.kvs
            .push((format!("/shardline/{key}"), value.to_string()));
        self
    }

    /// A live worker with a 1 GiB budget, reporting `acme/risk` version 1 loaded.
    pub fn worker(self, id: &str) -> Self {
        self.put(
            format!("workers/{id}"),
            json!({"address": format!("{id}.local:9000"), "capacity_bytes": 1u64 << 30,
                   "build_version": "t"}),
        )
        .put(format!("resident/{id}/acme/risk/1"), json!({"bytes": 1024}))
    }

    pub fn admin(self, id: &str, state: &str) -> Self {
        self.put(format!("worker-admin/{id}"), json!({"state": state}))
    }

    pub fn tenant(self, id: &str, k: Option<u32>) -> Self {
        let digest = "ab".repeat(32);
        let mut record = json!({"limits": {"max_in_flight": 8, "rate_per_sec": 0},
                                "keys": [{"id": "k1", "sha256": digest, "created_at": 1}],
                                "created_at": 1});
        if let Some(k) = k {
            record["shard_size"] = json!(k);
        }
        self.put(format!("tenants/{id}"), record)
    }

    /// A version published at `at` (4 → 1 MLP).
    pub fn version(self, t: &str, m: &str, v: &str, at: u64) -> Self {
        let digest = json!({"sha256": "cd".repeat(32), "size": 20});
        self.put(
            format!("models/{t}/{m}/{v}"),
            json!({"tenant": t, "model": m, "version": v, "location": format!("{t}/{m}/{v}"),
                   "config_file": digest, "weights_file": digest,
                   "config": {"format": "shardline/v1", "architecture": "mlp",
                              "input": {"name": "features", "dim": 4},
                              "layers": [{"weight": "w", "bias": "b", "activation": "sigmoid"}],
                              "output": {"name": "risk", "dim": 1}},
                   "dims": [4, 1], "published_at": at}),
        )
    }

    pub fn live(self, t: &str, m: &str, v: &str) -> Self {
        self.put(format!("models/{t}/{m}"), json!({"version": v}))
    }

    /// A published, live model (version 1).
    pub fn model(self, t: &str, m: &str) -> Self {
        self.version(t, m, "1", 1).live(t, m, "1")
    }

    pub fn assignment(self, t: &str, m: &str, workers: &[&str], previous: &[&str]) -> Self {
        self.put(
            format!("assignments/{t}/{m}"),
            json!({"workers": workers, "epoch": 1, "previous": previous}),
        )
    }

    pub fn snapshot(&self) -> Snapshot {
        let (snap, invalid) = Snapshot::from_kvs(
            Prefix::default(),
            42,
            self.kvs
                .iter()
                .enumerate()
                .map(|(i, (k, v))| (k.as_str(), v.as_bytes(), i as i64 + 1)),
        );
        assert!(invalid.is_empty(), "{invalid:?}");
        snap
    }
}
