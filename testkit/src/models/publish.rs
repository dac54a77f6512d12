//! Publishing an [`MlpArtifact`]: upload its two files to the artifact store and register
//! the manifest as the live version, as `shardctl publish` does (benchmarks, the worker's
//! and the router's test fleets, the demo).

use bytes::Bytes;
use shardline_artifacts::ArtifactStore;
use shardline_control::ControlPlane;
use shardline_shared::manifest::{CONFIG_FILE, Manifest, WEIGHTS_FILE};

use super::mlp::{MlpArtifact, digest};

/// Uploads `m` under `<tenant>/<model>/<version>` and makes that version live.
pub async fn publish(
    store: &ArtifactStore,
    cp: &ControlPlane,
    tenant: &str,
    model: &str,
    version: &str,
    m: &MlpArtifact,
) -> anyhow::Result<Manifest> {
    let location = format!("{tenant}/{model}/{version}");
    store
        .put(
            &format!("{location}/{CONFIG_FILE}"),
            Bytes::from(m.config_json.clone()),
        )
        .await?;
    store
        .put(
            &format!("{location}/{WEIGHTS_FILE}"),
            Bytes::from(m.weights.clone()),
        )
        .await?;
    let manifest = Manifest {
        tenant: tenant.parse()?,
        model: model.parse()?,
        version: version.parse()?,
        location: location.into(),
        config_file: digest(&m.config_json),
        weights_file: digest(&m.weights),
        config: m.config.clone().into(),
        dims: m.dims.clone().into(),
        published_at: shardline_control::ops::unix_now(),
    };
    cp.publish_version(&manifest, true).await?;
    Ok(manifest)
}
