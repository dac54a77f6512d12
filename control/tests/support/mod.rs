//! Helpers shared by the control plane's integration tests.
#![allow(dead_code)]

use shardline_control::store::{KvStore, Op, Txn};
use shardline_shared::records::WorkerRecord;

pub fn worker_record() -> WorkerRecord {
    WorkerRecord {
        address: "127.0.0.1:9100".into(),
        capacity_bytes: 1 << 30,
        used_bytes: 0,
        resident: vec![],
        build_version: env!("CARGO_PKG_VERSION").into(),
        started_at: 1,
    }
}

/// Writes raw bytes at `key`, bypassing every typed check (as a careless operator might).
pub async fn put_raw(store: &dyn KvStore, key: &str, value: &[u8]) {
    store
        .txn(Txn::new().op(Op::put(key, value.to_vec())))
        .await
        .expect("raw put");
}

/// A valid manifest for `tenant/model@version` (64 → 8 → 1 MLP).
pub fn manifest(tenant: &str, model: &str, version: &str) -> shardline_shared::manifest::Manifest {
    use shardline_shared::manifest::{FileDigest, Manifest, ModelConfig};
    let config = ModelConfig::from_json(
        br#"{"format":"shardline/v1","architecture":"mlp","input":{"name":"features","dim":64},
             "layers":[{"weight":"layers.0.weight","bias":"layers.0.bias","activation":"relu"},
                       {"weight":"layers.1.weight","bias":"layers.1.bias","activation":"sigmoid"}],
             "output":{"name":"risk","dim":1}}"#,
    )
    .expect("valid config");
    Manifest {
        tenant: tenant.parse().expect("tenant"),
        model: model.parse().expect("model"),
        version: version.parse().expect("version"),
        location: format!("{tenant}/{model}/{version}"),
        config_file: FileDigest {
            sha256: "0".repeat(64),
            size: 300,
        },
        weights_file: FileDigest {
            sha256: "f".repeat(64),
            size: 2_200,
        },
        config,
        dims: vec![64, 8, 1],
        published_at: 1,
    }
}
