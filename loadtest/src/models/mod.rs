//! Models for tests, benchmarks and demos.
//!
//! - [`mlp`]: [`MlpArtifact`], an MLP as `f32` layers plus the `config.json` and
//!   `model.safetensors` bytes `shardctl publish` and the worker take (random weights for
//!   tests and benchmarks), with an `f64` reference forward pass; [`publish`] uploads one
//!   and makes it live;
//! - [`rng`]: the seeded generator it draws from, so a seed reproduces everything.

pub mod mlp;
pub mod publish;
pub mod rng;

pub use mlp::{DenseLayer, MlpArtifact, MlpError, digest};
