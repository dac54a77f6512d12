//! An MLP as plain `f32` layers, serialised exactly as `shardctl publish` and the worker
//! expect it: `model.safetensors` plus `config.json` (see `docs/architecture.md`, "Model
//! artifacts"). The one place the tests, the benchmarks and the sample models build
//! artifacts.
//!
//! Layer `i` stores `layers.{i}.weight` (`[out, in]`, as candle-nn / PyTorch `Linear`) and
//! `layers.{i}.bias`; hidden layers use `relu` and the last layer `sigmoid`, so a model's
//! output is a probability. [`MlpArtifact::reference`] recomputes the scores in plain
//! `f64` Rust from the serialised bytes, as an oracle for the worker's candle runtime.

use std::path::Path;

use safetensors::{Dtype, tensor::TensorView};
use shardline_shared::manifest::{
    Activation, Architecture, CONFIG_FILE, FORMAT_V1, FileDigest, LayerSpec, ModelConfig,
    TensorSpec, WEIGHTS_FILE,
};

use super::rng::Rng;

/// Name of the model's input in `config.json` (and in OIP v2 requests).
pub const INPUT_NAME: &str = "features";
/// Name of the model's output.
pub const OUTPUT_NAME: &str = "risk";

/// Why layers do not make an MLP.
#[derive(Debug, thiserror::Error)]
pub enum MlpError {
    #[error("an MLP needs at least one layer")]
    NoLayers,
    #[error("layer {index}: {what}")]
    Shape { index: usize, what: String },
    #[error("serialise safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    #[error("serialise config.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// One dense layer: `y = act(x · Wᵀ + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseLayer {
    /// `fan_out × fan_in` values, row-major (`[out, in]`).
    pub weight: Vec<f32>,
    /// `fan_out` values.
    pub bias: Vec<f32>,
    pub fan_in: usize,
    pub fan_out: usize,
    pub activation: Activation,
}

/// A model's two files and its config, ready to publish, with the layers they came from.
#[derive(Debug, Clone)]
pub struct MlpArtifact {
    pub config: ModelConfig,
    /// The bytes of `config.json`.
    pub config_json: Vec<u8>,
    /// The bytes of `model.safetensors`.
    pub weights: Vec<u8>,
    /// Widths `[input, layer outputs...]`, as the manifest records them.
    pub dims: Vec<usize>,
}

impl MlpArtifact {
    /// Serialises `layers` (which must chain: each `fan_in` is the previous `fan_out`).
    pub fn from_layers(layers: Vec<DenseLayer>) -> Result<Self, MlpError> {
        let first = layers.first().ok_or(MlpError::NoLayers)?;
        let mut dims = vec![first.fan_in];
        for (index, l) in layers.iter().enumerate() {
            let shape_err = |what: String| MlpError::Shape { index, what };
            if Some(&l.fan_in) != dims.last() {
                return Err(shape_err(format!(
                    "fan-in {} after width {dims:?}",
                    l.fan_in
                )));
            }
            if l.weight.len() != l.fan_in * l.fan_out || l.bias.len() != l.fan_out {
                return Err(shape_err(format!(
                    "{} weights and {} biases for {}×{}",
                    l.weight.len(),
                    l.bias.len(),
                    l.fan_out,
                    l.fan_in
                )));
            }
            dims.push(l.fan_out);
        }
        let config = ModelConfig {
            format: FORMAT_V1.into(),
            architecture: Architecture::Mlp,
            input: TensorSpec {
                name: INPUT_NAME.into(),
                dim: dims[0],
            },
            layers: (0..layers.len())
                .map(|i| LayerSpec {
                    weight: format!("layers.{i}.weight"),
                    bias: Some(format!("layers.{i}.bias")),
                    activation: layers[i].activation,
                })
                .collect(),
            output: TensorSpec {
                name: OUTPUT_NAME.into(),
                dim: dims[dims.len() - 1],
            },
        };
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                [
                    (
                        format!("layers.{i}.weight"),
                        vec![l.fan_out, l.fan_in],
                        le(&l.weight),
                    ),
                    (format!("layers.{i}.bias"), vec![l.fan_out], le(&l.bias)),
                ]
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, shape, b)| {
                Ok((name.clone(), TensorView::new(Dtype::F32, shape.clone(), b)?))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        let weights = safetensors::serialize(views, None)?;
        let config_json = serde_json::to_vec_pretty(&config)?;
        Ok(Self {
            config,
            config_json,
            weights,
            dims,
        })
    }

    /// An MLP with these widths and pseudo-random weights from `seed`: relu between layers,
    /// sigmoid at the end. For tests and benchmarks, where only the shape matters.
    ///
    /// # Panics
    /// When `dims` has fewer than two widths.
    pub fn random(dims: &[usize], seed: u64) -> Self {
        assert!(dims.len() >= 2, "an MLP needs at least two widths");
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        // xorshift64, uniform in [-0.5, 0.5): kept as it was so that benchmark models keep
        // their weights.
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
        };
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let (fan_in, fan_out) = (w[0], w[1]);
                let scale = 2.0 / (fan_in as f32).sqrt();
                let weight = (0..fan_in * fan_out).map(|_| next() * scale).collect();
                let bias = (0..fan_out).map(|_| next() * 0.1).collect();
                DenseLayer {
                    weight,
                    bias,
                    fan_in,
                    fan_out,
                    activation: hidden_or_last(i + 2 == dims.len()),
                }
            })
            .collect();
        Self::from_layers(layers).expect("random layers chain by construction")
    }

    /// The layers, read back from the safetensors bytes (the artifact keeps no second
    /// copy of a 50 MB model).
    pub fn layers(&self) -> Vec<DenseLayer> {
        let st = safetensors::SafeTensors::deserialize(&self.weights)
            .expect("from_layers wrote a valid safetensors file");
        let values = |name: &str| -> Vec<f32> {
            let view = st.tensor(name).expect("from_layers wrote every tensor");
            view.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        self.config
            .layers
            .iter()
            .zip(self.dims.windows(2))
            .map(|(spec, io)| DenseLayer {
                weight: values(spec.weight.as_str()),
                bias: spec.bias.as_deref().map(&values).unwrap_or_default(),
                fan_in: io[0],
                fan_out: io[1],
                activation: spec.activation,
            })
            .collect()
    }

    /// Bytes of weights and biases once loaded (4 per `f32`): what a worker's memory
    /// budget counts for this model.
    pub fn resident_bytes(&self) -> u64 {
        self.config.parameter_count(&self.dims).saturating_mul(4)
    }

    /// Scores `rows` row-major input rows in plain `f64`: the oracle for the runtime.
    pub fn reference(&self, input: &[f32], rows: usize) -> Vec<f64> {
        let mut x: Vec<f64> = input.iter().map(|v| f64::from(*v)).collect();
        for l in &self.layers() {
            let mut y = vec![0.0; rows * l.fan_out];
            for r in 0..rows {
                let xr = &x[r * l.fan_in..(r + 1) * l.fan_in];
                for o in 0..l.fan_out {
                    let w = &l.weight[o * l.fan_in..(o + 1) * l.fan_in];
                    let acc = f64::from(l.bias[o])
                        + xr.iter()
                            .zip(w)
                            .map(|(a, b)| a * f64::from(*b))
                            .sum::<f64>();
                    y[r * l.fan_out + o] = activate(acc, l.activation);
                }
            }
            if l.activation == Activation::Softmax {
                for row in y.chunks_mut(l.fan_out) {
                    let max = row.iter().copied().fold(f64::MIN, f64::max);
                    let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
                    row.iter_mut().for_each(|v| *v = (*v - max).exp() / sum);
                }
            }
            x = y;
        }
        x
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if missing): a
    /// directory `shardctl publish` takes.
    pub fn write_dir(&self, dir: &Path) -> Result<(), MlpError> {
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, bytes))
                .map_err(|source| MlpError::Write {
                    path: path.display().to_string(),
                    source,
                })
        };
        write(CONFIG_FILE, &self.config_json)?;
        write(WEIGHTS_FILE, &self.weights)
    }

    /// Widths for an MLP `input → h → h → 1` whose weights take about `size_mb` MB
    /// (10⁶ bytes) of f32: `h ≈ √(size / 4)`.
    pub fn dims_for_size(input: usize, size_mb: f64) -> Vec<usize> {
        let hidden = hidden_for_size(input, size_mb);
        vec![input, hidden, hidden, 1]
    }
}

/// Width `h` of the two hidden layers of `input → h → h → 1` for about `size_mb` MB.
pub fn hidden_for_size(input: usize, size_mb: f64) -> usize {
    let params = size_mb * 1e6 / 4.0;
    // h² + (input + 3)·h + 1 ≈ params.
    let b = (input + 3) as f64;
    ((-b + (b * b + 4.0 * params).sqrt()) / 2.0)
        .round()
        .max(1.0) as usize
}

/// `relu` for hidden layers, `sigmoid` for the last.
pub fn hidden_or_last(last: bool) -> Activation {
    if last {
        Activation::Sigmoid
    } else {
        Activation::Relu
    }
}

fn activate(v: f64, activation: Activation) -> f64 {
    match activation {
        Activation::Relu => v.max(0.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Activation::Tanh => v.tanh(),
        Activation::Gelu => v * 0.5 * (1.0 + erf(v / std::f64::consts::SQRT_2)),
        // Softmax is normalised per row once the whole row is known.
        Activation::Softmax | Activation::None => v,
        // The runtime refuses to build such a model; the oracle has nothing to match.
        Activation::Unknown => f64::NAN,
    }
}

/// erf, Abramowitz–Stegun 7.1.26 (|error| < 1.5·10⁻⁷): enough for an oracle in f32 tests.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (1.0 - poly * (-x * x).exp()).copysign(x)
}

fn le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Size and sha256 of a file, as a manifest records them.
pub fn digest(bytes: &[u8]) -> FileDigest {
    FileDigest {
        sha256: shardline_shared::digest::Sha256Sum::of(bytes),
        size: bytes.len() as u64,
    }
}

/// Uniform fan-in initialisation (`±1/√fan_in`, as PyTorch's `Linear`), from `rng`.
pub fn init_layer(rng: &mut Rng, fan_in: usize, fan_out: usize, last: bool) -> DenseLayer {
    let bound = 1.0 / (fan_in as f64).sqrt();
    DenseLayer {
        weight: (0..fan_in * fan_out)
            .map(|_| rng.uniform(-bound, bound) as f32)
            .collect(),
        bias: (0..fan_out)
            .map(|_| rng.uniform(-bound, bound) as f32)
            .collect(),
        fan_in,
        fan_out,
        activation: hidden_or_last(last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_shape() {
        let dims = MlpArtifact::dims_for_size(64, 50.0);
        assert_eq!((dims[0], dims[1], dims[3]), (64, dims[2], 1));
        let params = 64 * dims[1] + dims[1] + dims[1] * dims[2] + dims[2] + dims[2] + 1;
        let mb = (params * 4) as f64 / 1e6;
        assert!((49.5..50.5).contains(&mb), "{mb} MB");
    }

    #[test]
    fn refuses_layers_that_do_not_chain() {
        let mut rng = Rng::new(1);
        let a = init_layer(&mut rng, 4, 3, false);
        let b = init_layer(&mut rng, 2, 1, true);
        let err = MlpArtifact::from_layers(vec![a.clone(), b])
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer 1"), "{err}");
        let mut short = a;
        short.bias.pop();
        assert!(MlpArtifact::from_layers(vec![short]).is_err());
        assert!(matches!(
            MlpArtifact::from_layers(vec![]),
            Err(MlpError::NoLayers)
        ));
    }
}
