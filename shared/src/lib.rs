//! Shardline's pure core, shared by the router, the worker, `shardctl` and the tests.
//!
//! Nothing here does I/O or needs a runtime:
//! - [`ids`]: validated tenant, model, version and worker names;
//! - [`intern`]: one shared copy of each name the snapshot keeps;
//! - [`manifest`]: `config.json`, the registry manifest and their validation;
//! - [`auth`]: API key generation, digests and constant-time checks;
//! - [`compat`]: reading values another release wrote (unknown fields noted, not refused);
//! - [`digest`]: SHA-256 digests as bytes, hex in JSON;
//! - [`echo`]: client-supplied words quoted in errors, bounded;
//! - [`decode`]: Open Inference Protocol v2 infer request decoding and validation
//!   (the worker scores what it decodes; the router validates before forwarding);
//! - [`keys`]: the etcd key layout (build and parse);
//! - [`records`]: the JSON values stored under those keys;
//! - [`snapshot`]: the in-memory view of the whole control plane, built from key/values;
//! - [`placement`]: sticky rendezvous shuffle sharding (`place`, `rebalance`);
//! - [`metrics`]: Prometheus metric names;
//! - [`units`]: sizes and durations on command lines;
//! - [`wire`]: header names of the internal router ↔ worker API.

pub mod auth;
pub mod compat;
pub mod decode;
pub mod digest;
pub mod echo;
pub mod ids;
pub mod intern;
pub mod keys;
pub mod manifest;
pub mod metrics;
pub mod placement;
pub mod records;
pub mod rollout;
pub mod snapshot;
pub mod units;
pub mod wire;

pub use ids::{IdError, ModelKey, ModelName, TenantId, VersionId, WorkerId};
