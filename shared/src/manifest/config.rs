//! `config.json`: how to build a model from its weights. The schema, its validation,
//! and [`ModelConfig::check_tensors`], which compares a config with the tensor table of
//! a safetensors file without touching the weights themselves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{ManifestError, invalid};

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
}

/// A named input or output with its width.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub dim: usize,
}

/// One dense layer: tensor names in the safetensors file, and the activation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
