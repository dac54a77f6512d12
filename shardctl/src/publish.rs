//! `shardctl publish`: validate a model directory locally, upload it, register it.
//!
//! Order matters, so that a bad model or a clash leaves nothing behind:
//! 1. read `config.json` and `model.safetensors` from the directory and build the model
//!    with the worker's own code ([`ModelConfig::from_json`], then
//!    [`MlpModel::from_safetensors`], which runs `check_tensors` first) — a malformed
//!    model fails here, before etcd or the store is contacted;
//! 2. check in etcd that the tenant exists and the version does not;
//! 3. upload both files (SHA-256 computed locally, a progress bar on a terminal);
//! 4. register the manifest (refused if the version appeared meanwhile) and, unless
//!    `--no-activate`, make it live.

use std::path::Path;

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use shardline_artifacts::ArtifactStore;
use shardline_model::MlpModel;
use shardline_shared::digest::Sha256Sum;
use shardline_shared::ids::{ModelKey, ModelName, TenantId, VersionId};
use shardline_shared::manifest::{CONFIG_FILE, FileDigest, Manifest, ModelConfig, WEIGHTS_FILE};

use super::PublishArgs;
use super::context::{Ctx, Output, parse_id};
use super::error::CliError;

/// A model directory that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: ModelConfig,
    pub config_json: Bytes,
    pub weights: Bytes,
    /// Widths `[input, layer outputs...]`.
    pub dims: Vec<usize>,
}

/// Checks the two files exactly as a worker loading them would.
pub fn validate(config_json: Bytes, weights: Bytes) -> Result<Validated, CliError> {
    let config = ModelConfig::from_json(&config_json).map_err(|e| {
        let msg = e.to_string();
        // Parse errors already name the file.
        CliError::failed(if msg.starts_with(CONFIG_FILE) {
            msg
        } else {
            format!("{CONFIG_FILE}: {msg}")
        })
    })?;
    let model = MlpModel::from_safetensors(&config, &weights)
        .map_err(|e| CliError::failed(format!("{WEIGHTS_FILE}: {e}")))?;
    let dims = model.dims().to_vec();
    Ok(Validated {
        config,
        config_json,
        weights,
        dims,
    })
}

/// SHA-256 and size of `bytes`.
pub fn digest(bytes: &[u8]) -> FileDigest {
    FileDigest {
        sha256: Sha256Sum::of(bytes),
        size: bytes.len() as u64,
    }
}

async fn read(dir: &Path, file: &str) -> Result<Bytes, CliError> {
    let path = dir.join(file);
    tokio::fs::read(&path)
        .await
        .map(Bytes::from)
        .map_err(|e| CliError::failed(format!("cannot read {}: {e}", path.display())))
}

/// Runs `publish`.
pub async fn run(ctx: &Ctx, args: PublishArgs) -> Result<Output, CliError> {
    let tenant: TenantId = parse_id(&args.tenant)?;
    let model: ModelName = parse_id(&args.model)?;
    let version: VersionId = parse_id(&args.version)?;
    let key = ModelKey::new(tenant.clone(), model.clone());
    let (config_json, weights) = (
        read(&args.dir, CONFIG_FILE).await?,
        read(&args.dir, WEIGHTS_FILE).await?,
    );
    let checked = validate(config_json, weights)?;
    let store = ArtifactStore::from_url(&args.store)
        .map_err(|e| CliError::failed(format!("--store {}: {e}", args.store)))?;

    let snap = ctx.snapshot().await?;
    if !snap.tenants().contains_key(&tenant) {
        return Err(CliError::failed(format!(
            "tenant {tenant} does not exist (shardctl tenant create {tenant})"
        )));
    }
    if snap.manifest(&key, &version).is_some() {
        return Err(CliError::failed(format!(
            "version {version} of {key} already exists; publish a new version"
        )));
    }

    let location = Manifest::default_location(&tenant, &model, &version);
    let manifest = Manifest {
        tenant,
        model,
        version: version.clone(),
        location: location.clone().into(),
        config_file: digest(&checked.config_json),
        weights_file: digest(&checked.weights),
        config: checked.config.into(),
        dims: checked.dims.into(),
        published_at: shardline_control::ops::unix_now(),
    };
    upload(ctx, &store, &manifest, checked.config_json, checked.weights).await?;
    let live = !args.no_activate;
    ctx.cp.publish_version(&manifest, live).await?;
    let text = format!(
        "published {key} version {version} ({} weights, sha256 {}) at {}/{location}{}",
        super::inspect::human_bytes(manifest.weights_file.size),
        &manifest.weights_file.sha256.to_hex()[..12],
        store.url().trim_end_matches('/'),
        if live {
            "; it is live"
        } else {
            "; not live (shardctl activate)"
        }
    );
    Output::new(
        text,
        &json!({
            "tenant": manifest.tenant,
            "model": manifest.model,
            "version": manifest.version,
            "location": manifest.location,
            "store": store.url(),
            "config_file": manifest.config_file,
            "weights_file": manifest.weights_file,
            "dims": manifest.dims,
            "live": live,
        }),
    )
}

async fn upload(
    ctx: &Ctx,
    store: &ArtifactStore,
    manifest: &Manifest,
    config_json: Bytes,
    weights: Bytes,
) -> Result<(), CliError> {
    let total = (config_json.len() + weights.len()) as u64;
    let target = if ctx.show_progress() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let style = ProgressStyle::with_template(
        "uploading {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    for (file, bytes) in [(CONFIG_FILE, config_json), (WEIGHTS_FILE, weights)] {
        bar.set_message(file);
        let path = manifest.object_path(file);
        store
            .put_with_progress(&path, bytes, &|n| bar.inc(n))
            .await
            .map_err(|e| {
                bar.abandon();
                CliError::failed(format!("upload of {path} failed: {e}"))
            })?;
    }
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use shardline_testkit::models::MlpArtifact;

    use super::*;

    fn files() -> (String, Bytes) {
        let m = MlpArtifact::random(&[4, 3, 1], 7);
        (
            String::from_utf8(m.config_json).unwrap(),
            Bytes::from(m.weights),
        )
    }

    fn error(config: &str, weights: Bytes) -> String {
        validate(Bytes::from(config.to_owned()), weights)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_good_model_passes_with_its_widths() {
        let (config, weights) = files();
        let v = validate(Bytes::from(config), weights.clone()).unwrap();
        assert_eq!(v.dims, [4, 3, 1]);
        assert_eq!(digest(&weights).size, weights.len() as u64);
        assert_eq!(digest(b"").sha256.to_hex().len(), 64);
    }

    #[test]
    fn malformed_models_fail_with_a_precise_message() {
        let (config, weights) = files();
        let e = error(
            &config.replace("shardline/v1", "shardline/v9"),
            weights.clone(),
        );
        assert!(e.starts_with("config.json: "), "{e}");
        assert!(e.contains("shardline/v9"), "{e}");
        let e = error(
            &config.replace("layers.1.weight", "layers.9.weight"),
            weights.clone(),
        );
        assert!(e.starts_with("model.safetensors: "), "{e}");
        assert!(e.contains("layers.9.weight"), "{e}");
        let e = error(&config.replace("\"dim\": 4", "\"dim\": 5"), weights.clone());
        assert!(e.contains("layers.0.weight"), "{e}");
        assert!(e.contains("shape"), "{e}");
        let e = error(&config, Bytes::from_static(b"not a safetensors file"));
        assert!(e.contains("not a valid safetensors file"), "{e}");
    }
}
