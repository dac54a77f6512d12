//! The MLP runtime against a plain-Rust f64 reference, and against broken artifacts.

use proptest::prelude::*;
use safetensors::{Dtype, tensor::TensorView};
use shardline_model::{MlpModel, ModelError, tensor_table};
use shardline_shared::manifest::{
    Activation, Architecture, FORMAT_V1, LayerSpec, ManifestError, ModelConfig, TensorSpec,
};
use shardline_testkit::models::{MlpArtifact, digest};

const ACTIVATIONS: [Activation; 6] = [
    Activation::Relu,
    Activation::Gelu,
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Softmax,
    Activation::None,
];

/// A tensor to put in a test file: name, dtype, shape, little-endian bytes.
struct Raw {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_tensor(name: &str, shape: &[usize], values: &[f32]) -> Raw {
    Raw {
        name: name.into(),
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn safetensors_bytes(tensors: &[Raw]) -> Vec<u8> {
    let views = tensors.iter().map(|t| {
        let view = TensorView::new(t.dtype, t.shape.clone(), &t.bytes).expect("tensor view");
        (t.name.clone(), view)
    });
    safetensors::serialize(views, None).expect("serialize test weights")
}

/// A dense layer in plain Rust: `[out, in]` weights, optional bias, activation.
#[derive(Debug, Clone)]
struct RefLayer {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    fan_in: usize,
    fan_out: usize,
    activation: Activation,
}

fn config_for(layers: &[RefLayer]) -> ModelConfig {
    ModelConfig {
        format: FORMAT_V1.into(),
        architecture: Architecture::Mlp,
        input: TensorSpec {
            name: "features".into(),
            dim: layers[0].fan_in,
        },
        layers: layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerSpec {
                weight: format!("layers.{i}.weight"),
                bias: l.b.as_ref().map(|_| format!("layers.{i}.bias")),
                activation: l.activation,
            })
            .collect(),
        output: TensorSpec {
            name: "score".into(),
            dim: layers[layers.len() - 1].fan_out,
        },
    }
}

fn weights_for(layers: &[RefLayer]) -> Vec<u8> {
    let mut tensors = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        tensors.push(f32_tensor(
            &format!("layers.{i}.weight"),
            &[l.fan_out, l.fan_in],
            &l.w,
        ));
        if let Some(b) = &l.b {
            tensors.push(f32_tensor(&format!("layers.{i}.bias"), &[l.fan_out], b));
        }
    }
    safetensors_bytes(&tensors)
}

/// erf in f64: Maclaurin series near 0, continued fraction for erfc in the tails.
fn erf(x: f64) -> f64 {
    let z = x.abs();
    let r = if z < 3.0 {
        let (mut term, mut sum) = (z, z);
        for n in 1..200 {
            term *= -z * z / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut t = z;
        for n in (1..=80).rev() {
            t = z + (n as f64 / 2.0) / t;
        }
        1.0 - (-z * z).exp() / (std::f64::consts::PI.sqrt() * t)
    };
    r.copysign(x)
}

/// The model written out by hand, in f64.
fn reference(layers: &[RefLayer], input: &[f32], rows: usize) -> Vec<f64> {
    let mut x: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
    for l in layers {
        let mut y = vec![0.0f64; rows * l.fan_out];
        for r in 0..rows {
            for o in 0..l.fan_out {
                let mut acc = l.b.as_ref().map_or(0.0, |b| f64::from(b[o]));
                for i in 0..l.fan_in {
                    acc += x[r * l.fan_in + i] * f64::from(l.w[o * l.fan_in + i]);
                }
                y[r * l.fan_out + o] = acc;
            }
            let row = &mut y[r * l.fan_out..(r + 1) * l.fan_out];
            match l.activation {
                Activation::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
                Activation::Gelu => row
                    .iter_mut()
                    .for_each(|v| *v = 0.5 * *v * (1.0 + erf(*v / std::f64::consts::SQRT_2))),
                Activation::Tanh => row.iter_mut().for_each(|v| *v = v.tanh()),
                Activation::Sigmoid => row.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
                Activation::Softmax => {
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    row.iter_mut().for_each(|v| *v = (*v - max).exp());
                    let sum: f64 = row.iter().sum();
                    row.iter_mut().for_each(|v| *v /= sum);
                }
                Activation::None => {}
                Activation::Unknown => unreachable!("the runtime refuses to build it"),
            }
        }
        x = y;
    }
    x
}

/// splitmix64: deterministic values from one proptest-chosen seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Uniform in [-1, 1).
        ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

fn random_layers(
    widths: &[usize],
    activations: &[Activation],
    biases: &[bool],
    seed: u64,
) -> Vec<RefLayer> {
    let mut rng = Rng(seed);
    widths
        .windows(2)
        .enumerate()
        .map(|(i, io)| {
            let (fan_in, fan_out) = (io[0], io[1]);
            // Scaled like Kaiming init so activations stay O(1) through the stack.
            let scale = 1.5 / (fan_in as f32).sqrt();
            RefLayer {
                w: (0..fan_in * fan_out).map(|_| rng.next() * scale).collect(),
                b: biases[i].then(|| (0..fan_out).map(|_| rng.next() * 0.5).collect()),
                fan_in,
                fan_out,
                activation: activations[i],
            }
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        // 1e-5 relative, with an absolute floor of 1e-5 for values near zero (values are
        // O(1), so f32 accumulation error is ~1e-7 absolute).
        assert!(
            err <= 1e-5 * w.abs() + 1e-5,
            "value {i}: got {g}, want {w}, error {err}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random widths (1..40), depth (1..4), activations, biases and batch sizes score
    /// like the hand-written f64 reference.
    #[test]
    fn scores_match_reference(
        widths in prop::collection::vec(1usize..40, 2..=5),
        activations in prop::collection::vec(prop::sample::select(&ACTIVATIONS[..]), 4),
        biases in prop::collection::vec(any::<bool>(), 4),
        rows in 1usize..8,
        seed in any::<u64>(),
    ) {
        let layers = random_layers(&widths, &activations, &biases, seed);
        let model = MlpModel::from_safetensors(&config_for(&layers), &weights_for(&layers)).unwrap();
        prop_assert_eq!(model.input_dim(), widths[0]);
        prop_assert_eq!(model.output_dim(), *widths.last().unwrap());
        prop_assert_eq!(model.dims(), &widths[..]);

        let mut rng = Rng(seed ^ 0xDEAD_BEEF);
        let input: Vec<f32> = (0..rows * widths[0]).map(|_| rng.next() * 2.0).collect();
        let got = model.forward(&input, rows).unwrap();
        assert_close(&got, &reference(&layers, &input, rows));
    }

    /// Whatever bytes arrive as weights, loading returns an error rather than panicking.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let layers = random_layers(&[3, 2], &[Activation::Relu], &[true], 1);
        prop_assert!(MlpModel::from_safetensors(&config_for(&layers), &bytes).is_err());
        let _ = tensor_table(&bytes);
    }

    /// A valid file with one byte changed or cut short never panics either (this reaches
    /// the header parser far more often than random bytes do).
    #[test]
    fn mutated_files_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        let layers = random_layers(&[3, 2], &[Activation::Relu], &[true], 1);
        let mut bytes = weights_for(&layers);
        let i = at.index(bytes.len());
        if cut { bytes.truncate(i) } else { bytes[i] = byte }
        if let Ok(model) = MlpModel::from_safetensors(&config_for(&layers), &bytes) {
            // A change inside the weights still loads; it must still score.
            let _ = model.forward(&[0.5, -0.5, 1.0], 1);
        }
    }
}

/// A logistic regression worked out by hand.
#[test]
fn logistic_regression_by_hand() {
    let layers = [RefLayer {
        w: vec![1.0, 2.0],
        b: Some(vec![0.5]),
        fan_in: 2,
        fan_out: 1,
        activation: Activation::Sigmoid,
    }];
    let model = MlpModel::from_safetensors(&config_for(&layers), &weights_for(&layers)).unwrap();
    let got = model.forward(&[1.0, 1.0, 0.0, -0.25], 2).unwrap();
    let want = [1.0 / (1.0 + (-3.5f64).exp()), 0.5];
    assert_close(&got, &want);
    assert_eq!(model.resident_bytes(), 3 * 4);
}

#[test]
fn softmax_is_per_row_and_gelu_is_erf_exact() {
    let layers = [RefLayer {
        w: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        b: None,
        fan_in: 2,
        fan_out: 3,
        activation: Activation::Softmax,
    }];
    let model = MlpModel::from_safetensors(&config_for(&layers), &weights_for(&layers)).unwrap();
    let out = model
        .forward(&[1.0, 2.0, -3.0, 0.0, 100.0, 100.0], 3)
        .unwrap();
    for row in out.chunks(3) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "{row:?}");
    }
    assert_eq!(model.resident_bytes(), 6 * 4);

    // gelu(1) = 0.8413447 exactly (erf form); the tanh approximation gives 0.8411920.
    let gelu = [RefLayer {
        w: vec![1.0],
        b: None,
        fan_in: 1,
        fan_out: 1,
        activation: Activation::Gelu,
    }];
    let model = MlpModel::from_safetensors(&config_for(&gelu), &weights_for(&gelu)).unwrap();
    let out = model.forward(&[1.0], 1).unwrap();
    assert!((out[0] - 0.841_344_7).abs() < 1e-6, "{out:?}");
}

#[test]
fn model_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MlpModel>();
}

fn two_layer() -> Vec<RefLayer> {
    random_layers(
        &[4, 3, 2],
        &[Activation::Relu, Activation::Sigmoid],
        &[true, true],
        7,
    )
}

fn load_err(config: &ModelConfig, bytes: &[u8]) -> ModelError {
    MlpModel::from_safetensors(config, bytes).expect_err("the model should be refused")
}

/// A config from a newer release (an activation this one does not compute) is refused
/// before any weight is read, with a message that says so.
#[test]
fn unknown_activation_is_refused() {
    let layers = two_layer();
    let mut config = config_for(&layers);
    config.layers[1].activation = Activation::Unknown;
    let err = load_err(&config, &weights_for(&layers)).to_string();
    assert!(err.contains("unknown activation in layer 1"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let layers = two_layer();
    let mut config = config_for(&layers);
    config.layers[1].bias = Some("layers.1.offset".into());
    let err = load_err(&config, &weights_for(&layers));
    assert_eq!(
        err,
        ModelError::Manifest(ManifestError::MissingTensor("layers.1.offset".into()))
    );
    assert_eq!(err.to_string(), "missing tensor \"layers.1.offset\"");
}

#[test]
fn f16_tensor_is_refused() {
    let layers = two_layer();
    let mut tensors = vec![Raw {
        name: "layers.0.weight".into(),
        dtype: Dtype::F16,
        shape: vec![3, 4],
        bytes: vec![0; 3 * 4 * 2],
    }];
    tensors.push(f32_tensor("layers.0.bias", &[3], &[0.0; 3]));
    tensors.push(f32_tensor("layers.1.weight", &[2, 3], &[0.0; 6]));
    tensors.push(f32_tensor("layers.1.bias", &[2], &[0.0; 2]));
    let err = load_err(&config_for(&layers), &safetensors_bytes(&tensors));
    assert_eq!(
        err.to_string(),
        "tensor \"layers.0.weight\" has dtype F16, expected F32"
    );
}

#[test]
fn wrong_shape_is_refused() {
    let layers = two_layer();
    let mut wrong = layers.clone();
    wrong[1].fan_in = 2; // layers.1.weight becomes [2, 2]: does not chain from 3
    wrong[1].w.truncate(4);
    let err = load_err(&config_for(&layers), &weights_for(&wrong));
    let msg = err.to_string();
    assert!(
        matches!(err, ModelError::Manifest(ManifestError::Shape { .. })),
        "{msg}"
    );
    assert!(
        msg.contains("layers.1.weight") && msg.contains("[2, 3]"),
        "{msg}"
    );
}

#[test]
fn garbage_truncated_and_padded_files_are_refused() {
    let layers = two_layer();
    let config = config_for(&layers);
    let good = weights_for(&layers);
    let cases: [(&str, Vec<u8>); 5] = [
        ("empty", Vec::new()),
        ("garbage", b"definitely not a safetensors file".to_vec()),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("header cut", good[..20].to_vec()),
        ("trailing bytes", [good.as_slice(), &[0, 0, 0, 0]].concat()),
    ];
    for (what, bytes) in cases {
        let err = load_err(&config, &bytes);
        assert!(
            matches!(err, ModelError::NotSafetensors(_)),
            "{what}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with("weights are not a valid safetensors file: "),
            "{what}: {err}"
        );
        assert!(tensor_table(&bytes).is_err(), "{what}");
    }
}

#[test]
fn tensor_table_lists_every_tensor() {
    let table = tensor_table(&weights_for(&two_layer())).unwrap();
    let summary: Vec<(&str, &str, &[usize])> = table
        .iter()
        .map(|(n, t)| (n.as_str(), t.dtype.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(
        summary,
        [
            ("layers.0.bias", "F32", &[3][..]),
            ("layers.0.weight", "F32", &[3, 4][..]),
            ("layers.1.bias", "F32", &[2][..]),
            ("layers.1.weight", "F32", &[2, 3][..]),
        ]
    );
    assert!(config_for(&two_layer()).check_tensors(&table).is_ok());
}

#[test]
fn forward_checks_the_input_length() {
    let layers = two_layer();
    let model = MlpModel::from_safetensors(&config_for(&layers), &weights_for(&layers)).unwrap();
    let err = model.forward(&[0.0; 7], 2).unwrap_err();
    assert_eq!(err.to_string(), "input has 7 values, expected 2 rows of 4");
    assert_eq!(model.forward(&[], 0).unwrap(), Vec::<f32>::new());
    assert_eq!(model.forward(&[0.0; 8], 2).unwrap().len(), 4);
}

#[test]
fn overflow_is_an_error_not_a_nan() {
    let layers = [RefLayer {
        w: vec![3.0e38, 3.0e38],
        b: None,
        fan_in: 2,
        fan_out: 1,
        activation: Activation::None,
    }];
    let model = MlpModel::from_safetensors(&config_for(&layers), &weights_for(&layers)).unwrap();
    assert_eq!(model.forward(&[10.0, 10.0], 1), Err(ModelError::NonFinite));
}

/// The test kit's artifact writer and this runtime agree (formerly in the artifact writer's
/// own tests, which cannot depend on the runtime).
#[test]
fn the_worker_loads_it_and_agrees_with_the_reference() {
    let m = MlpArtifact::random(&[8, 16, 4, 1], 7);
    let built = MlpModel::from_safetensors(&m.config, &m.weights).expect("the worker accepts it");
    assert_eq!(built.dims(), [8, 16, 4, 1]);
    assert_eq!(built.resident_bytes(), m.resident_bytes());
    let input: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) / 6.0).collect();
    let got = built.forward(&input, 3).expect("forward");
    for (g, w) in got.iter().zip(m.reference(&input, 3)) {
        assert!((f64::from(*g) - w).abs() < 1e-5, "{g} vs {w}");
        assert!(*g > 0.0 && *g < 1.0);
    }
    assert_eq!(
        m.config,
        ModelConfig::from_json(&m.config_json).expect("json")
    );
    let again = MlpArtifact::from_layers(m.layers()).expect("layers read back");
    assert_eq!(again.weights, m.weights);
    assert_eq!(digest(&m.weights).size, m.weights.len() as u64);
}
