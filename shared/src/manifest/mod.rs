//! Model artifacts: the `config.json` schema, the registry manifest, and their validation.
//!
//! The same checks run in `shardctl publish` (before anything is uploaded) and in the
//! worker (before a model is built), so a model that publishes is a model that loads.
//! [`ModelConfig::check_tensors`] compares a config with the tensor table of a
//! safetensors file without touching the weights themselves.
//!
//! Layout: the `config.json` model ([`ModelConfig`] and its parts, the tensor-table
//! check) is in `config.rs`; the registry entry ([`Manifest`], [`FileDigest`], object
//! locations) in `registry.rs`; the refusals ([`ManifestError`]) in `error.rs`.

mod config;
mod error;
mod registry;
#[cfg(test)]
mod tests;

pub use config::{
    Activation, Architecture, FORMAT_V1, LayerSpec, MAX_DIM, MAX_LAYERS, ModelConfig, TensorInfo,
    TensorSpec,
};
pub use error::ManifestError;
pub use registry::{CONFIG_FILE, FileDigest, Manifest, WEIGHTS_FILE, validate_location};
