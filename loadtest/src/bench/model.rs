//! A deterministic MLP for benchmarks: widths chosen by the caller, pseudo-random weights
//! (xorshift, fixed seed), relu between layers and sigmoid at the end, serialised as a
//! safetensors file plus its `config.json`, exactly as `shardctl publish` expects them.

use anyhow::Context as _;
use safetensors::{Dtype, tensor::TensorView};
use sha2::{Digest, Sha256};
use shardline_shared::manifest::{
    Activation, Architecture, FORMAT_V1, FileDigest, LayerSpec, ModelConfig, TensorSpec,
};

/// A model's two files and its config, ready to publish.
#[derive(Debug, Clone)]
pub struct BenchModel {
    pub config: ModelConfig,
    pub config_json: Vec<u8>,
    pub weights: Vec<u8>,
    /// Widths `[input, layer outputs...]`.
    pub dims: Vec<usize>,
}

impl BenchModel {
    /// An MLP with these widths (at least two) and seed.
    pub fn mlp(dims: &[usize], seed: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(dims.len() >= 2, "an MLP needs at least two widths");
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
        };
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut layers = Vec::new();
        for (i, w) in dims.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            let scale = 2.0 / (fan_in as f32).sqrt();
            let weight: Vec<u8> = (0..fan_in * fan_out)
                .flat_map(|_| (next() * scale).to_le_bytes())
                .collect();
            let bias: Vec<u8> = (0..fan_out)
                .flat_map(|_| (next() * 0.1).to_le_bytes())
                .collect();
            tensors.push((format!("layers.{i}.weight"), vec![fan_out, fan_in], weight));
            tensors.push((format!("layers.{i}.bias"), vec![fan_out], bias));
            let last = i + 2 == dims.len();
            layers.push(LayerSpec {
                weight: format!("layers.{i}.weight"),
                bias: Some(format!("layers.{i}.bias")),
                activation: if last {
                    Activation::Sigmoid
                } else {
                    Activation::Relu
                },
            });
        }
        let config = ModelConfig {
            format: FORMAT_V1.into(),
            architecture: Architecture::Mlp,
            input: TensorSpec {
                name: "features".into(),
                dim: dims[0],
            },
            layers,
            output: TensorSpec {
                name: "score".into(),
                dim: dims[dims.len() - 1],
            },
        };
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .with_context(|| format!("tensor {name}"))?;
                Ok((name.clone(), view))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let weights = safetensors::serialize(views, None).context("serialise safetensors")?;
        let config_json = serde_json::to_vec_pretty(&config)?;
        Ok(Self {
            config,
            config_json,
            weights,
            dims: dims.to_vec(),
        })
    }

    /// Widths for an MLP `input → h → h → 1` whose weights take about `size_mb` MB
    /// (10⁶ bytes) of f32: `h ≈ √(size / 4)`.
    pub fn dims_for_size(input: usize, size_mb: f64) -> Vec<usize> {
        let params = size_mb * 1e6 / 4.0;
        // h² + (input + 3)·h ≈ params.
        let b = (input + 3) as f64;
        let hidden = ((-b + (b * b + 4.0 * params).sqrt()) / 2.0)
            .round()
            .max(1.0) as usize;
        vec![input, hidden, hidden, 1]
    }
}

/// Size and sha256 of a file, as a manifest records them.
pub fn digest(bytes: &[u8]) -> FileDigest {
    FileDigest {
        sha256: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_shape() {
        let dims = BenchModel::dims_for_size(64, 50.0);
        assert_eq!((dims[0], dims[1], dims[3]), (64, dims[2], 1));
        let params = 64 * dims[1] + dims[1] + dims[1] * dims[2] + dims[2] + dims[2] + 1;
        let mb = (params * 4) as f64 / 1e6;
        assert!((49.5..50.5).contains(&mb), "{mb} MB");

        let m = BenchModel::mlp(&[8, 16, 1], 7).expect("build");
        let built = shardline_worker::model::MlpModel::from_safetensors(&m.config, &m.weights)
            .expect("the worker accepts it");
        assert_eq!(built.dims(), [8, 16, 1]);
        let out = built.forward(&[0.5; 8], 1).expect("forward");
        assert!(out[0] > 0.0 && out[0] < 1.0);
        assert_eq!(
            m.config,
            ModelConfig::from_json(&m.config_json).expect("json")
        );
        assert_eq!(digest(&m.weights).size, m.weights.len() as u64);
    }
}
