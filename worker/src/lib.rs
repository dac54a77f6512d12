//! Shardline's worker: loads tenants' models on demand and scores inference requests.
//!
//! The pure model runtime lives here, with no I/O and no runtime:
//! - [`model`]: builds an [`model::MlpModel`] from `config.json` and safetensors bytes
//!   (after [`shardline_shared::manifest::ModelConfig::check_tensors`]) and runs it;
//! - [`decode`]: decodes and validates an Open Inference Protocol v2 REST infer request
//!   body into a batch, and encodes the response.
//!
//! Fetching artifacts, caching, eviction and HTTP live in other modules.

pub mod cache;
pub mod config;
pub mod decode;
pub mod model;
