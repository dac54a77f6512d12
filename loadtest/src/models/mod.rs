//! Models for tests, benchmarks and demos: the one MLP artifact builder, and sample tenant
//! models that mean something — risk scores of authentication events, trained per tenant.
//!
//! - [`mlp`] (from the test kit, re-exported): [`MlpArtifact`], an MLP as `f32` layers plus
//!   the `config.json` and `model.safetensors` bytes `shardctl publish` and the worker take
//!   (random weights for tests and benchmarks, or trained ones), with an `f64` reference
//!   forward pass; [`publish()`] uploads one and makes it live.
//! - [`features`]: the 64 features of an authentication event (hour, new device,
//!   geo-velocity, failed attempts, ASN reputation, MFA, ...) and a seeded event sampler;
//! - [`tenant`]: [`TenantProfile`], a tenant's traffic and its ground-truth risk rule
//!   (each kind of business weighs the factors its own way, with interactions);
//! - [`dataset`]: labelled events of one tenant, labels sampled from the true risk;
//! - [`train`]: [`train_tenant_model`], candle-nn + AdamW, measured by held-out AUC
//!   ([`mod@auc`]: exact, rank-based), optionally embedded in a wide model of a given size;
//! - [`rng`]: the seeded generator all of it draws from, so a seed reproduces everything.
//!
//! Everything but [`publish`] and [`MlpArtifact::write_dir`] is pure.
//!
//! ```no_run
//! use shardline_loadtest::models::{TenantProfile, TrainOptions, train_tenant_model};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! for tenant in TenantProfile::fleet(4, 42) {
//!     let model = train_tenant_model(&tenant, &TrainOptions::default())?;
//!     println!("{}: held-out AUC {:.3}", tenant.name, model.auc);
//!     model.artifact.write_dir(std::path::Path::new(&format!("models/{}", tenant.name)))?;
//!     // Realistic requests for this tenant's model: rows × 64 values, row-major.
//!     let _data = tenant.sample_input(8, 100);
//! }
//! # Ok(())
//! # }
//! ```

pub mod auc;
pub mod dataset;
pub mod features;
pub mod tenant;
pub mod train;

pub use auc::auc;
pub use dataset::Dataset;
pub use features::{EventSampler, FEATURES, Feature, Row};
pub use shardline_testkit::models::{DenseLayer, MlpArtifact, MlpError, digest, mlp, publish, rng};
pub use tenant::{TenantKind, TenantProfile};
pub use train::{TrainError, TrainOptions, TrainedModel, train_tenant_model};
