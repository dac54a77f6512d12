//! Models for tests and benchmarks: [`MlpArtifact`], the one MLP artifact builder, the
//! seeded generator it draws from, and (feature `fleet`) [`publish`], which uploads one
//! and makes it live as `shardctl publish` does.

pub mod mlp;
#[cfg(feature = "fleet")]
pub mod publish;
pub mod rng;

pub use mlp::{DenseLayer, MlpArtifact, MlpError, digest};
#[cfg(feature = "fleet")]
pub use publish::publish;
