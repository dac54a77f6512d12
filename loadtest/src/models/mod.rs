//! Models for tests, benchmarks and demos: the one MLP artifact builder, and sample tenant
//! models that mean something — risk scores of authentication events, trained per tenant.
//!
//! - [`mlp`]: [`MlpArtifact`], an MLP as `f32` layers plus the `config.json` and
//!   `model.safetensors` bytes `shardctl publish` and the worker take (random weights for
//!   tests and benchmarks), with an `f64` reference forward pass;
//!   [`publish`] uploads one and makes it live.
//! - [`features`]: the 64 features of an authentication event (hour, new device,
//!   geo-velocity, failed attempts, ASN reputation, MFA, ...) and a seeded event sampler;
//! - [`tenant`]: [`TenantProfile`], a tenant's traffic and its ground-truth risk rule
//!   (each kind of business weighs the factors its own way, with interactions);
//! - [`dataset`]: labelled events of one tenant, labels sampled from the true risk;
//! - [`auc`]: exact, rank-based ROC AUC;
//! - [`rng`]: the seeded generator all of it draws from, so a seed reproduces everything.
//!
//! Everything but [`publish`] is pure.

pub mod auc;
pub mod dataset;
pub mod features;
pub mod mlp;
pub mod publish;
pub mod rng;
pub mod tenant;

pub use auc::auc;
pub use dataset::Dataset;
pub use features::{EventSampler, FEATURES, Feature, Row};
pub use mlp::{DenseLayer, MlpArtifact, MlpError, digest};
pub use tenant::{TenantKind, TenantProfile};
