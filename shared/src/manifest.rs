//! Model artifacts: the `config.json` schema, the registry manifest, and their validation.
//!
//! The same checks run in `shardctl publish` (before anything is uploaded) and in the
//! worker (before a model is built), so a model that publishes is a model that loads.
//! [`ModelConfig::check_tensors`] compares a config with the tensor table of a
//! safetensors file without touching the weights themselves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{ModelKey, ModelName, TenantId, VersionId};

/// The only `format` value this release understands.
pub const FORMAT_V1: &str = "shardline/v1";
/// File names inside a model version's directory or object prefix.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Upper bound on any layer width: keeps a hostile config from asking for absurd shapes.
pub const MAX_DIM: usize = 1 << 20;
/// Upper bound on depth.
pub const MAX_LAYERS: usize = 256;

/// Why a config, a tensor table or a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("config.json is not valid: {0}")]
    Json(String),
    #[error("unsupported format {0:?} (expected \"shardline/v1\")")]
    Format(String),
    #[error("{0}")]
    Invalid(String),
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
    #[error("tensor {name:?} has dtype {dtype}, expected F32")]
    Dtype { name: String, dtype: String },
    #[error("tensor {name:?} has shape {actual:?}, expected {expected:?}")]
    Shape {
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
}

fn invalid(msg: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(msg.into())
}

/// Supported network families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// A stack of dense layers (`x · Wᵀ + b`, then an activation).
    Mlp,
}

/// The activation applied after a layer's affine map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
    Softmax,
    None,
}

/// A named input or output with its width.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub dim: usize,
}

/// One dense layer: tensor names in the safetensors file, and the activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// `[out, in]`, as in PyTorch/candle-nn `Linear`.
    pub weight: String,
    /// `[out]`; a layer without bias leaves this out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<String>,
    pub activation: Activation,
}

/// `config.json`: how to build a model from its weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub format: String,
    pub architecture: Architecture,
    pub input: TensorSpec,
    pub layers: Vec<LayerSpec>,
    pub output: TensorSpec,
}

/// What the tensor table of a safetensors file says about one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Upper-case safetensors dtype name (`F32`, `F16`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
}

impl ModelConfig {
    /// Parses and validates `config.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let config: Self =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that can be checked without the weights.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT_V1 {
            return Err(ManifestError::Format(self.format.clone()));
        }
        for (what, spec) in [("input", &self.input), ("output", &self.output)] {
            if spec.name.is_empty() || spec.name.len() > 128 {
                return Err(invalid(format!("{what} name must be 1-128 characters")));
            }
            if spec.dim == 0 || spec.dim > MAX_DIM {
                return Err(invalid(format!(
                    "{what} dim must be between 1 and {MAX_DIM}, got {}",
                    spec.dim
                )));
            }
        }
        if self.layers.is_empty() {
            return Err(invalid("layers must not be empty"));
        }
        if self.layers.len() > MAX_LAYERS {
            return Err(invalid(format!(
                "at most {MAX_LAYERS} layers are supported"
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for name in std::iter::once(&layer.weight).chain(layer.bias.as_ref()) {
                if name.is_empty() {
                    return Err(invalid(format!("layer {i} has an empty tensor name")));
                }
                if !seen.insert(name.as_str()) {
                    return Err(invalid(format!("tensor {name:?} is used twice")));
                }
            }
        }
        Ok(())
    }

    /// Checks the weights' tensor table against the config: every tensor present, F32,
    /// with shapes that chain from `input.dim` through the layers to `output.dim`.
    /// Returns the widths `[input, layer0_out, layer1_out, ...]`.
    pub fn check_tensors(
        &self,
        tensors: &BTreeMap<String, TensorInfo>,
    ) -> Result<Vec<usize>, ManifestError> {
        self.validate()?;
        let mut dims = vec![self.input.dim];
        for layer in &self.layers {
            let fan_in = *dims.last().unwrap_or(&self.input.dim);
            let w = lookup(tensors, &layer.weight)?;
            let [out, inp] = w.shape[..] else {
                return Err(shape_err(&layer.weight, w, vec![0, fan_in]));
            };
            if inp != fan_in || out == 0 || out > MAX_DIM {
                return Err(shape_err(&layer.weight, w, vec![out, fan_in]));
            }
            if let Some(bias) = &layer.bias {
                let b = lookup(tensors, bias)?;
                if b.shape != [out] {
                    return Err(shape_err(bias, b, vec![out]));
                }
            }
            dims.push(out);
        }
        let last = dims.last().copied().unwrap_or(0);
        if last != self.output.dim {
            return Err(invalid(format!(
                "last layer produces {last} values but output dim is {}",
                self.output.dim
            )));
        }
        Ok(dims)
    }

    /// Number of f32 parameters the layers hold, given the widths from `check_tensors`.
    pub fn parameter_count(&self, dims: &[usize]) -> usize {
        dims.windows(2)
            .zip(&self.layers)
            .map(|(w, l)| w[0] * w[1] + if l.bias.is_some() { w[1] } else { 0 })
            .sum()
    }
}

fn lookup<'a>(
    tensors: &'a BTreeMap<String, TensorInfo>,
    name: &str,
) -> Result<&'a TensorInfo, ManifestError> {
    let t = tensors
        .get(name)
        .ok_or_else(|| ManifestError::MissingTensor(name.to_owned()))?;
    if t.dtype != "F32" {
        return Err(ManifestError::Dtype {
            name: name.to_owned(),
            dtype: t.dtype.clone(),
        });
    }
    Ok(t)
}

fn shape_err(name: &str, t: &TensorInfo, expected: Vec<usize>) -> ManifestError {
    ManifestError::Shape {
        name: name.to_owned(),
        actual: t.shape.clone(),
        expected,
    }
}

/// Size and digest of one stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256: String,
    pub size: u64,
}

impl FileDigest {
    fn validate(&self, file: &str) -> Result<(), ManifestError> {
        let hex_ok = self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(invalid(format!(
                "{file}: sha256 must be 64 lowercase hex characters"
            )));
        }
        Ok(())
    }
}

/// The registry entry for one model version (`models/<tenant>/<model>/<version>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub tenant: TenantId,
    pub model: ModelName,
    pub version: VersionId,
    /// Object prefix relative to the store root (`--store`), e.g. `acme/risk/1`.
    /// Relative so that the same registry works with any store URL a worker is given.
    pub location: String,
    /// Digest of `config.json`.
    pub config_file: FileDigest,
    /// Digest of `model.safetensors`.
    pub weights_file: FileDigest,
    /// The parsed config, so routers can answer metadata without the store.
    pub config: ModelConfig,
    /// Widths `[input, layer outputs...]` as checked at publish time.
    pub dims: Vec<usize>,
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
        (self.config.parameter_count(&self.dims) * 4) as u64
    }

    /// Checks internal consistency (the ids are validated when deserialised).
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.config.validate()?;
        validate_location(&self.location)?;
        self.config_file.validate(CONFIG_FILE)?;
        self.weights_file.validate(WEIGHTS_FILE)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn example_config() -> ModelConfig {
        ModelConfig::from_json(
            br#"{"format": "shardline/v1", "architecture": "mlp",
                 "input": {"name": "features", "dim": 64},
                 "layers": [{"weight": "layers.0.weight", "bias": "layers.0.bias", "activation": "relu"},
                            {"weight": "layers.1.weight", "bias": "layers.1.bias", "activation": "sigmoid"}],
                 "output": {"name": "risk", "dim": 1}}"#,
        )
        .unwrap()
    }

    fn table(entries: &[(&str, &str, &[usize])]) -> BTreeMap<String, TensorInfo> {
        entries
            .iter()
            .map(|(n, d, s)| {
                (
                    n.to_string(),
                    TensorInfo {
                        dtype: d.to_string(),
                        shape: s.to_vec(),
                    },
                )
            })
            .collect()
    }

    fn good_table() -> BTreeMap<String, TensorInfo> {
        table(&[
            ("layers.0.weight", "F32", &[256, 64]),
            ("layers.0.bias", "F32", &[256]),
            ("layers.1.weight", "F32", &[1, 256]),
            ("layers.1.bias", "F32", &[1]),
        ])
    }

    #[test]
    fn example_config_checks_out() {
        let c = example_config();
        let dims = c.check_tensors(&good_table()).unwrap();
        assert_eq!(dims, vec![64, 256, 1]);
        assert_eq!(c.parameter_count(&dims), 64 * 256 + 256 + 256 + 1);
    }

    #[test]
    fn rejects_bad_configs() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"format":"shardline/v1","architecture":"mlp","input":{"name":"x","dim":4},"layers":[{"weight":"w","activation":"relu"}],"output":{"name":"y","dim":1},"extra":1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"format":"shardline/v1","architecture":"cnn","input":{"name":"x","dim":4},"layers":[{"weight":"w","activation":"relu"}],"output":{"name":"y","dim":1}}"#,
                "unknown variant `cnn`",
            ),
            (
                r#"{"format":"shardline/v1","architecture":"mlp","input":{"name":"x","dim":4},"layers":[{"weight":"w","activation":"swish"}],"output":{"name":"y","dim":1}}"#,
                "unknown variant `swish`",
            ),
            (
                r#"{"format":"shardline/v2","architecture":"mlp","input":{"name":"x","dim":4},"layers":[{"weight":"w","activation":"relu"}],"output":{"name":"y","dim":1}}"#,
                "unsupported format",
            ),
            (
                r#"{"format":"shardline/v1","architecture":"mlp","input":{"name":"x","dim":0},"layers":[{"weight":"w","activation":"relu"}],"output":{"name":"y","dim":1}}"#,
                "input dim",
            ),
            (
                r#"{"format":"shardline/v1","architecture":"mlp","input":{"name":"x","dim":4},"layers":[],"output":{"name":"y","dim":1}}"#,
                "layers must not be empty",
            ),
            (
                r#"{"format":"shardline/v1","architecture":"mlp","input":{"name":"x","dim":4},"layers":[{"weight":"w","bias":"w","activation":"relu"}],"output":{"name":"y","dim":1}}"#,
                "used twice",
            ),
            (r#"{"format":"shardline/v1""#, "not valid"),
        ];
        for (json, needle) in cases {
            let err = ModelConfig::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{json}\n=> {err}");
        }
    }

    #[test]
    fn rejects_bad_tensor_tables() {
        let c = example_config();
        let mut missing = good_table();
        missing.remove("layers.1.bias");
        assert_eq!(
            c.check_tensors(&missing),
            Err(ManifestError::MissingTensor("layers.1.bias".into()))
        );

        let mut f16 = good_table();
        f16.get_mut("layers.0.weight").unwrap().dtype = "F16".into();
        assert!(matches!(
            c.check_tensors(&f16),
            Err(ManifestError::Dtype { .. })
        ));

        let mut unchained = good_table();
        unchained.get_mut("layers.1.weight").unwrap().shape = vec![1, 128];
        let err = c.check_tensors(&unchained).unwrap_err().to_string();
        assert!(
            err.contains("layers.1.weight") && err.contains("[1, 256]"),
            "{err}"
        );

        let mut bad_bias = good_table();
        bad_bias.get_mut("layers.0.bias").unwrap().shape = vec![255];
        assert!(matches!(
            c.check_tensors(&bad_bias),
            Err(ManifestError::Shape { .. })
        ));

        let mut wrong_out = good_table();
        wrong_out.get_mut("layers.1.weight").unwrap().shape = vec![2, 256];
        wrong_out.get_mut("layers.1.bias").unwrap().shape = vec![2];
        let err = c.check_tensors(&wrong_out).unwrap_err().to_string();
        assert!(err.contains("output dim is 1"), "{err}");

        let mut rank3 = good_table();
        rank3.get_mut("layers.0.weight").unwrap().shape = vec![256, 64, 1];
        assert!(matches!(
            c.check_tensors(&rank3),
            Err(ManifestError::Shape { .. })
        ));
    }

    #[test]
    fn location_rules() {
        for ok in ["a/b/1", "acme/risk/v1", "x"] {
            assert!(validate_location(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "a/../b", "a//b", "./a", "a/..", "a\\b"] {
            assert!(validate_location(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Whatever bytes arrive, parsing never panics; accepted configs validate.
        #[test]
        fn config_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(c) = ModelConfig::from_json(&bytes) {
                prop_assert!(c.validate().is_ok());
            }
        }

        /// Chained random widths are accepted; breaking any one link is refused.
        #[test]
        fn chaining_is_checked(widths in proptest::collection::vec(1usize..50, 2..6), broken in any::<prop::sample::Index>()) {
            let layers: Vec<LayerSpec> = (0..widths.len() - 1)
                .map(|i| LayerSpec { weight: format!("w{i}"), bias: Some(format!("b{i}")), activation: Activation::Relu })
                .collect();
            let config = ModelConfig {
                format: FORMAT_V1.into(),
                architecture: Architecture::Mlp,
                input: TensorSpec { name: "x".into(), dim: widths[0] },
                layers,
                output: TensorSpec { name: "y".into(), dim: *widths.last().unwrap() },
            };
            let mut t = BTreeMap::new();
            for i in 0..widths.len() - 1 {
                t.insert(format!("w{i}"), TensorInfo { dtype: "F32".into(), shape: vec![widths[i + 1], widths[i]] });
                t.insert(format!("b{i}"), TensorInfo { dtype: "F32".into(), shape: vec![widths[i + 1]] });
            }
            prop_assert_eq!(config.check_tensors(&t).unwrap(), widths.clone());
            let i = broken.index(widths.len() - 1);
            t.get_mut(&format!("w{i}")).unwrap().shape[1] += 1;
            prop_assert!(config.check_tensors(&t).is_err());
        }
    }
}
