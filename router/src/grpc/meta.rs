//! What the gRPC health and metadata RPCs read from the snapshot: server readiness,
//! whether a model has a live worker, and a model's metadata — the same rules and the
//! same values as the HTTP routes (`router/src/routes.rs`; `router/tests/grpc.rs` holds
//! the two to the same answers). Pure.

use shardline_shared::ids::ModelKey;
use shardline_shared::manifest::Manifest;
use shardline_shared::snapshot::Snapshot;

use crate::grpc::pb::ModelMetadataResponse;
use crate::grpc::pb::model_metadata_response::TensorMetadata;

/// The server's name in its metadata.
pub const SERVER_NAME: &str = "shardline";

/// The protocol extensions the router supports, listed by `GET /v2` and gRPC
/// `ServerMetadata` alike.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];
/// The model platform in model metadata.
pub const PLATFORM: &str = "shardline_mlp";

/// Ready once a snapshot has been read from etcd and at least one worker is live.
pub fn server_ready(snap: &Snapshot) -> bool {
    snap.revision() > 0 && !snap.workers().is_empty()
}

/// Whether a live worker of the model's shard (or, before it is placed, any live worker)
/// exists.
pub fn model_live(snap: &Snapshot, key: &ModelKey) -> bool {
    match snap.assignments().get(key) {
        Some(a) => a
            .value
            .workers
            .iter()
            .chain(&a.value.previous)
            .any(|w| snap.workers().contains_key(w)),
        None => !snap.workers().is_empty(),
    }
}

/// The model's metadata: its versions, one FP32 input `[-1, dim]` and one FP32 output.
pub fn model_metadata(snap: &Snapshot, key: &ModelKey, m: &Manifest) -> ModelMetadataResponse {
    let versions = snap
        .model(key)
        .map(|e| e.versions.keys().map(ToString::to_string).collect())
        .unwrap_or_default();
    let tensor = |name: &str, dim: usize| TensorMetadata {
        name: name.to_owned(),
        datatype: "FP32".into(),
        shape: vec![-1, i64::try_from(dim).unwrap_or(i64::MAX)],
    };
    ModelMetadataResponse {
        name: key.model.as_str().to_owned(),
        versions,
        platform: PLATFORM.into(),
        inputs: vec![tensor(&m.config.input.name, m.config.input.dim)],
        outputs: vec![tensor(&m.config.output.name, m.config.output.dim)],
    }
}
