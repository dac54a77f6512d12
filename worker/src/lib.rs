//! Shardline's worker: loads tenants' models on demand and scores inference requests.
//!
//! Pure parts (no I/O, no runtime):
//! - [`model`]: builds an [`model::MlpModel`] from `config.json` and safetensors bytes
//!   (after [`shardline_shared::manifest::ModelConfig::check_tensors`]) and runs it;
//! - [`decode`]: re-exported from `shardline_shared` (the router validates requests with
//!   the same decoder): OIP v2 infer request decoding and response encoding;
//! - [`cache::policy`]: the memory-budget bookkeeping of resident models.
//!
//! I/O and serving:
//! - [`artifacts`]: verified reads of model files from `file://` or `s3://` stores;
//! - [`cache`]: single-flight, memory-budgeted, idle-evicting model cache;
//! - [`state`], [`routes`], [`error`]: the HTTP API and its error mapping;
//! - [`serve`]: etcd membership, resident-list publishing, `/metrics`, graceful shutdown;
//! - [`config`], [`metrics`]: flags and Prometheus metrics.

pub mod artifacts;
pub mod cache;
pub mod config;
pub use shardline_shared::decode;
pub mod error;
pub mod metrics;
pub mod model;
pub mod routes;
pub mod serve;
pub mod state;
