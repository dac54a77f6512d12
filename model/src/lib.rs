//! Shardline's model runtime, the MLP: builds a model from `config.json` plus safetensors bytes, and scores
//! batches. Pure: the caller fetches and verifies the bytes, this module only reads them.
//!
//! Loading checks the weights' tensor table with
//! [`ModelConfig::check_tensors`] (the same check `shardctl publish` runs through
//! [`tensor_table`]) before any weight is copied, so a hostile or broken artifact is
//! refused with a clear message and never panics. Each layer computes `x · Wᵀ + b` with
//! `W` stored `[out, in]` (PyTorch / candle-nn `Linear`), then its activation, on the CPU
//! in `f32`.
//!
//! `gelu` is the exact, erf-based GELU, `x · ½ · (1 + erf(x / √2))`: PyTorch's default
//! `nn.GELU()` (`approximate="none"`), so models exported from PyTorch score the same
//! here. The tanh approximation is not offered.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module};
use safetensors::SafeTensors;
use shardline_shared::manifest::{Activation, ManifestError, ModelConfig, TensorInfo};

/// Why a model could not be built or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The bytes are not a safetensors file (bad header, truncated, trailing bytes...).
    #[error("weights are not a valid safetensors file: {0}")]
    NotSafetensors(String),
    /// The tensor table does not fit the config (missing tensor, dtype, shape...).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The caller passed a buffer that is not `rows × input_dim` values.
    #[error("input has {got} values, expected {rows} rows of {dim}")]
    InputLength { got: usize, rows: usize, dim: usize },
    /// The computation overflowed `f32` (inputs or weights far out of range).
    #[error("model produced a non-finite output (inputs or weights out of range)")]
    NonFinite,
    /// candle refused an operation; not expected once the shapes are checked.
    #[error("model computation failed: {0}")]
    Compute(String),
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        Self::Compute(e.to_string())
    }
}

/// Reads the tensor table (names, dtypes, shapes) of a safetensors file without copying
/// any weight. Also verifies that the header's offsets exactly cover the file.
pub fn tensor_table(weights: &[u8]) -> Result<BTreeMap<String, TensorInfo>, ModelError> {
    let st = parse(weights)?;
    Ok(table_of(&st))
}

fn parse(weights: &[u8]) -> Result<SafeTensors<'_>, ModelError> {
    SafeTensors::deserialize(weights).map_err(|e| ModelError::NotSafetensors(e.to_string()))
}

fn table_of(st: &SafeTensors<'_>) -> BTreeMap<String, TensorInfo> {
    st.iter()
        .map(|(name, view)| {
            let info = TensorInfo {
                dtype: view.dtype().to_string(),
                shape: view.shape().to_vec(),
            };
            (name.to_owned(), info)
        })
        .collect()
}

/// One dense layer and the activation that follows it.
#[derive(Debug)]
struct Layer {
    linear: Linear,
    activation: Activation,
}

/// A stack of dense layers, ready to score. Cheap to share: candle tensors are
/// reference-counted and immutable, so `&MlpModel` can be used from many threads.
#[derive(Debug)]
pub struct MlpModel {
    layers: Vec<Layer>,
    /// Widths `[input, layer0_out, ...]`, as returned by `check_tensors`.
    dims: Vec<usize>,
    /// Number of `f32` parameters held (weights and biases).
    parameters: u64,
}

impl MlpModel {
    /// Builds the model described by `config` from the bytes of `model.safetensors`.
    ///
    /// The tensor table is validated against the config before any weight is read.
    pub fn from_safetensors(config: &ModelConfig, weights: &[u8]) -> Result<Self, ModelError> {
        let st = parse(weights)?;
        let dims = config.check_tensors(&table_of(&st))?;
        let mut layers = Vec::with_capacity(config.layers.len());
        for (spec, io) in config.layers.iter().zip(dims.windows(2)) {
            let (fan_in, fan_out) = (io[0], io[1]);
            let weight = load_f32(&st, &spec.weight, &[fan_out, fan_in])?;
            let bias = match &spec.bias {
                Some(name) => Some(load_f32(&st, name, &[fan_out])?),
                None => None,
            };
            layers.push(Layer {
                linear: Linear::new(weight, bias),
                activation: spec.activation,
            });
        }
        let parameters = config.parameter_count(&dims);
        Ok(Self {
            layers,
            dims,
            parameters,
        })
    }

    /// Width of one input row.
    pub fn input_dim(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Width of one output row.
    pub fn output_dim(&self) -> usize {
        self.dims.last().copied().unwrap_or(0)
    }

    /// Widths `[input, layer0_out, layer1_out, ...]`.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Bytes of weights and biases held in memory (4 per `f32` parameter); what the
    /// worker's memory budget counts.
    pub fn resident_bytes(&self) -> u64 {
        self.parameters.saturating_mul(4)
    }

    /// Scores `rows` input rows laid out row-major in `input` (`rows × input_dim`
    /// values) and returns `rows × output_dim` values, row-major.
    pub fn forward(&self, input: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        let dim = self.input_dim();
        if rows.checked_mul(dim) != Some(input.len()) {
            return Err(ModelError::InputLength {
                got: input.len(),
                rows,
                dim,
            });
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut x = Tensor::from_slice(input, (rows, dim), &Device::Cpu)?;
        for layer in &self.layers {
            x = activate(&layer.linear.forward(&x)?, layer.activation)?;
        }
        let out = x.flatten_all()?.to_vec1::<f32>()?;
        if out.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite);
        }
        Ok(out)
    }
}

fn activate(x: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    match activation {
        Activation::Relu => x.relu(),
        Activation::Gelu => x.gelu_erf(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
        Activation::Softmax => candle_nn::ops::softmax_last_dim(x),
        Activation::None => Ok(x.clone()),
        // `check_tensors` refuses a config with one before any layer is built.
        Activation::Unknown => Err(candle_core::Error::Msg(
            "unknown activation (written by a newer release)".into(),
        )),
    }
}

/// Copies one F32 tensor (already checked by `check_tensors`) out of the file.
fn load_f32(st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
    let view = st
        .tensor(name)
        .map_err(|_| ManifestError::MissingTensor(name.to_owned()))?;
    // Safetensors data is little-endian and not necessarily 4-byte aligned in the buffer.
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// The number of threads candle computes with (what it would read from the machine on
/// every matmul unless `RAYON_NUM_THREADS` says so; see docs/worker.md).
pub fn compute_threads() -> usize {
    candle_core::utils::get_num_threads()
}
