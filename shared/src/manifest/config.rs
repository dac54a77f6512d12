//! `config.json`: how to build a model from its weights. The schema, its validation,
//! and [`ModelConfig::check_tensors`], which compares a config with the tensor table of
//! a safetensors file without touching the weights themselves.
//!
//! Two readings: the copy inside a stored manifest is read leniently (a field or an enum
//! value a newer release added is noted, and the model stays known: metadata and
//! validation work, only building it is refused), while a `config.json` file is read
//! strictly by [`ModelConfig::from_json`] (`shardctl publish`, and the worker before it
//! builds): an unknown field there is either an operator's typo or something a newer
//! release computes with, and serving the model without it would give wrong scores.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{ManifestError, invalid};
use crate::compat::{self, Evolving};

/// The only `format` value this release understands.
pub const FORMAT_V1: &str = "shardline/v1";
/// Upper bound on any layer width: keeps a hostile config from asking for absurd shapes.
pub const MAX_DIM: usize = 1 << 20;
/// Upper bound on depth.
pub const MAX_LAYERS: usize = 256;

/// Supported network families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// A stack of dense layers (`x · Wᵀ + b`, then an activation).
    Mlp,
    /// One a newer release added: such a model is known but not built here.
    #[serde(other)]
    Unknown,
}

/// The activation applied after a layer's affine map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
    Softmax,
    None,
    /// One a newer release added: such a model is known but not built here.
    #[serde(other)]
    Unknown,
}

/// The activations this release computes, for error messages.
const ACTIVATIONS: &str = "relu, gelu, tanh, sigmoid, softmax, none";

/// A named input or output with its width.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dim: usize,
}

/// One dense layer: tensor names in the safetensors file, and the activation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerSpec {
    /// `[out, in]`, as in PyTorch/candle-nn `Linear`.
    pub weight: String,
    /// `[out]`; a layer without bias leaves this out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<String>,
    pub activation: Activation,
}

/// `config.json`: how to build a model from its weights.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Parses and validates `config.json` bytes strictly: unknown fields and values
    /// are refused (see the module's introduction).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let (config, ignored) =
            compat::from_json::<Self>(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        config.check_supported()?;
        if let Some(field) = ignored.fields.first() {
            return Err(ManifestError::Json(format!("unknown field `{field}`")));
        }
        config.validate()?;
        Ok(config)
    }

    /// Whether this release can build the model: the format, the architecture and every
    /// activation are ones it knows. A stored manifest may fail this (written by a
    /// newer release) and still be valid.
    pub fn check_supported(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT_V1 {
            return Err(ManifestError::Format(self.format.clone()));
        }
        if self.architecture == Architecture::Unknown {
            return Err(ManifestError::Unsupported(
                "unknown architecture (this release supports: mlp)".into(),
            ));
        }
        if let Some(i) = self
            .layers
            .iter()
            .position(|l| l.activation == Activation::Unknown)
        {
            return Err(ManifestError::Unsupported(format!(
                "unknown activation in layer {i} (this release supports: {ACTIVATIONS})"
            )));
        }
        Ok(())
    }

    /// Checks the structure: everything that can be checked without the weights and
    /// without knowing every enum value ([`Self::check_supported`] does that).
    pub fn validate(&self) -> Result<(), ManifestError> {
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
        self.check_supported()?;
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
    /// Saturates rather than wraps: widths come from stored manifests.
    pub fn parameter_count(&self, dims: &[usize]) -> u64 {
        dims.windows(2)
            .zip(&self.layers)
            .map(|(w, l)| {
                let (fan_in, out) = (w[0] as u64, w[1] as u64);
                let bias = if l.bias.is_some() { out } else { 0 };
                fan_in.saturating_mul(out).saturating_add(bias)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Paths of the enum values in this config a newer release added, under `prefix`
    /// (`""` for a `config.json`, `"config."` inside a manifest).
    pub(super) fn unknown_paths(&self, inside_manifest: bool) -> Vec<&'static str> {
        let mut found = Vec::new();
        let pick = |bare, nested| if inside_manifest { nested } else { bare };
        if self.architecture == Architecture::Unknown {
            found.push(pick("architecture", "config.architecture"));
        }
        if self
            .layers
            .iter()
            .any(|l| l.activation == Activation::Unknown)
        {
            found.push(pick("layers.activation", "config.layers.activation"));
        }
        if self.format != FORMAT_V1 {
            found.push(pick("format", "config.format"));
        }
        found
    }
}

impl Evolving for ModelConfig {
    fn unknown_values(&self, found: &mut Vec<&'static str>) {
        found.extend(self.unknown_paths(false));
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
