//! The registry entry of one model version (`models/<tenant>/<model>/<version>`):
//! where its files are stored, their digests, and its checked config.

use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::config::{MAX_DIM, ModelConfig};
use super::error::{ManifestError, invalid};
use crate::compat::Evolving;
use crate::digest::Sha256Sum;
use crate::ids::{ModelKey, ModelName, TenantId, VersionId};

/// File names inside a model version's directory or object prefix.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Size and digest of one stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// SHA-256 of the whole file (lowercase hex in JSON).
    pub sha256: Sha256Sum,
    pub size: u64,
}

/// The registry entry for one model version (`models/<tenant>/<model>/<version>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub tenant: TenantId,
    pub model: ModelName,
    pub version: VersionId,
    /// Object prefix relative to the store root (`--store`), e.g. `acme/risk/1`. Up to
    /// 24 bytes are held inline (no allocation per model version).
    /// Relative so that the same registry works with any store URL a worker is given.
    pub location: CompactString,
    /// Digest of `config.json`.
    pub config_file: FileDigest,
    /// Digest of `model.safetensors`.
    pub weights_file: FileDigest,
    /// The parsed config, so routers can answer metadata without the store. Shared:
    /// a snapshot keeps one copy of each distinct config however many models use it.
    pub config: Arc<ModelConfig>,
    /// Widths `[input, layer outputs...]` as checked at publish time. Shared: a snapshot
    /// keeps one copy of each distinct list.
    pub dims: Arc<[usize]>,
    /// Unix seconds when published.
    pub published_at: u64,
}

impl Manifest {
    /// The model this version belongs to.
    pub fn key(&self) -> ModelKey {
        ModelKey::new(self.tenant.clone(), self.model.clone())
    }

    /// Default object prefix for a version: `<tenant>/<model>/<version>`.
    pub fn default_location(tenant: &TenantId, model: &ModelName, version: &VersionId) -> String {
        format!("{tenant}/{model}/{version}")
    }

    /// Object path of a file of this version, relative to the store root.
    pub fn object_path(&self, file: &str) -> String {
        format!("{}/{file}", self.location.trim_end_matches('/'))
    }

    /// Resident size of the weights once loaded, in bytes (f32 parameters).
    pub fn weight_bytes(&self) -> u64 {
        self.config.parameter_count(&self.dims).saturating_mul(4)
    }

    /// Checks internal consistency (the ids are validated when deserialised). A config
    /// this release cannot build (see [`ModelConfig::check_supported`]) is still valid.
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.config.validate()?;
        validate_location(&self.location)?;
        let widths_ok = self.dims.len() == self.config.layers.len() + 1
            && self.dims.first() == Some(&self.config.input.dim)
            && self.dims.last() == Some(&self.config.output.dim)
            && self.dims.iter().all(|d| (1..=MAX_DIM).contains(d));
        if !widths_ok {
            return Err(invalid(
                "dims must list the input width and every layer's output width",
            ));
        }
        Ok(())
    }
}

impl Evolving for Manifest {
    fn unknown_values(&self, found: &mut Vec<&'static str>) {
        found.extend(self.config.unknown_paths(true));
    }
}

/// An object prefix: non-empty `/`-separated segments, none of them `.` or `..`.
pub fn validate_location(location: &str) -> Result<(), ManifestError> {
    let bad = location.is_empty()
        || location.starts_with('/')
        || location.len() > 512
        || location
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.contains('\\'));
    if bad {
        return Err(invalid(format!(
            "location {location:?} must be a relative object prefix without '.' or '..' segments"
        )));
    }
    Ok(())
}
