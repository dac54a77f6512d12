//! Shardline's worker: loads tenants' models on demand and scores inference requests.
//!
//! The model runtime is `shardline-model` and verified reads of model files are
//! `shardline-artifacts`; this crate puts them to work.
//!
//! Pure parts (no I/O, no runtime):
//! - [`decode`]: re-exported from `shardline_shared` (the router validates requests with
//!   the same decoder): OIP v2 infer request decoding and response encoding;
//! - [`cache::policy`]: the memory-budget bookkeeping of resident models.
//!
//! I/O and serving:
//! - [`cache`]: single-flight, memory-budgeted, idle-evicting model cache;
//! - [`activations`]: the inference memory budget forward passes reserve from;
//! - [`blocking`]: model builds and large forward passes on blocking threads, bounded;
//! - [`state`], [`routes`], [`repository`], [`request`], [`error`]: the HTTP API (the
//!   model-repository extension apart; what every handler reads of a request) and its
//!   error mapping;
//! - [`serve`]: etcd membership, resident-list publishing, `/metrics`, graceful shutdown;
//! - [`config`], [`metrics`]: flags and Prometheus metrics.

pub mod activations;
pub mod blocking;
pub mod cache;
pub mod config;
pub use shardline_shared::decode;
pub mod error;
pub mod metrics;
pub mod repository;
pub mod request;
pub mod routes;
pub mod serve;
pub mod state;
