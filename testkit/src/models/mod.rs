//! Models for tests and benchmarks: [`MlpArtifact`], the one MLP artifact builder, the
//! seeded generator it draws from, and (feature `fleet`) [`publish`], which uploads one
//! and makes it live as `shardctl publish` does.

pub mod mlp;
#[cfg(feature = "fleet")]
pub mod publish;
pub mod rng;

use shardline_shared::manifest::{FileDigest, Manifest, ModelConfig};

pub use mlp::{DenseLayer, MlpArtifact, MlpError, digest};
#[cfg(feature = "fleet")]
pub use publish::publish;

/// A valid registry manifest (no artifact behind it) for `tenant/model@version` (64 → 8 → 1 MLP).
pub fn manifest(tenant: &str, model: &str, version: &str) -> Manifest {
    let config = ModelConfig::from_json(
        br#"{"format":"shardline/v1","architecture":"mlp","input":{"name":"features","dim":64},
             "layers":[{"weight":"layers.0.weight","bias":"layers.0.bias","activation":"relu"},
                       {"weight":"layers.1.weight","bias":"layers.1.bias","activation":"sigmoid"}],
             "output":{"name":"risk","dim":1}}"#,
    )
    .expect("valid config");
    Manifest {
        tenant: tenant.parse().expect("tenant"),
        model: model.parse().expect("model"),
        version: version.parse().expect("version"),
        location: format!("{tenant}/{model}/{version}").into(),
        config_file: FileDigest {
            sha256: shardline_shared::digest::Sha256Sum::from_bytes([0; 32]),
            size: 300,
        },
        weights_file: FileDigest {
            sha256: shardline_shared::digest::Sha256Sum::from_bytes([0xff; 32]),
            size: 2_200,
        },
        config: config.into(),
        dims: vec![64, 8, 1].into(),
        published_at: 1,
    }
}
