//! Training one tenant's risk model with candle-nn: a `64 → h → h → 1` MLP (relu) fitted to
//! the tenant's labelled events with AdamW on the binary cross-entropy of its logit.
//!
//! **Output.** The network is trained on logits; the artifact's last layer is declared
//! `sigmoid` in `config.json`, and the worker's runtime applies the activation a config
//! names, so the served score is the probability of an attack, in `(0, 1)`
//! ([`TrainedModel::predict`] is the same function on the training side). AUC is measured
//! on a held-out set drawn from another stream of the tenant's traffic.
//!
//! **Size.** With [`TrainOptions::size_mb`] the published model is `64 → H → H → 1` with
//! `H` chosen for the size, and holds the trained network inside it: the first `h` units
//! of each hidden layer are the trained ones, the other `H − h` get random incoming
//! weights and **zero outgoing weights**. The wide model therefore computes exactly the
//! trained function (same scores up to float summation order, same AUC), costs the worker
//! the full `H × H` of memory and arithmetic, and takes no longer to build than writing
//! its bytes — instead of minutes of training a 50 MB network.

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Linear, Module, Optimizer, ParamsAdamW};

use super::auc::auc;
use super::dataset::Dataset;
use super::features::FEATURES;
use super::mlp::{DenseLayer, MlpArtifact, MlpError, hidden_for_size, init_layer};
use super::rng::Rng;
use super::tenant::TenantProfile;

/// The tenant's event stream the training set is drawn from.
pub const TRAIN_STREAM: u64 = 1;
/// The tenant's event stream the held-out set is drawn from. Load generators should use
/// streams of their own (any other number).
pub const TEST_STREAM: u64 = 2;

/// How to train (and how big to publish) one tenant's model. `loadtest models` takes
/// `--size-mb` and `--seed` from its command line (the seed also picks the tenants'
/// rules there, and defaults to 42); the rest is [`TrainOptions::DEFAULT`].
#[derive(Debug, Clone, clap::Args)]
pub struct TrainOptions {
    #[arg(skip = Self::DEFAULT.train_rows)]
    pub train_rows: usize,
    // Held-out rows the reported AUC is measured on.
    #[arg(skip = Self::DEFAULT.test_rows)]
    pub test_rows: usize,
    // Width `h` of the two trained hidden layers.
    #[arg(skip = Self::DEFAULT.hidden)]
    pub hidden: usize,
    #[arg(skip = Self::DEFAULT.epochs)]
    pub epochs: usize,
    #[arg(skip = Self::DEFAULT.batch_size)]
    pub batch_size: usize,
    #[arg(skip = Self::DEFAULT.learning_rate)]
    pub learning_rate: f64,
    #[arg(skip = Self::DEFAULT.weight_decay)]
    pub weight_decay: f64,
    /// Publish models of about this many MB (10⁶ bytes) holding the trained network.
    // `None` publishes the trained network as is.
    #[arg(long)]
    pub size_mb: Option<f64>,
    /// Seed of the tenants' rules, their data and the training.
    // Here: the initial weights and the batch order (the data come from the tenant).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl TrainOptions {
    /// About a second per tenant in a debug build, a fraction of that in release.
    pub const DEFAULT: Self = Self {
        train_rows: 4000,
        test_rows: 4000,
        hidden: 32,
        epochs: 12,
        batch_size: 128,
        learning_rate: 1e-2,
        weight_decay: 1e-3,
        size_mb: None,
        seed: 0,
    };
}

impl Default for TrainOptions {
    /// [`TrainOptions::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a model could not be trained.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Mlp(#[from] MlpError),
    #[error("the held-out set of {0} has only one class; AUC is undefined")]
    OneClass(String),
}

/// A trained tenant model: the artifact to publish and how well it ranks held-out events.
#[derive(Debug)]
pub struct TrainedModel {
    /// The tenant's name (a valid tenant id).
    pub tenant: String,
    /// What to publish (the wide embedding when `size_mb` was given).
    pub artifact: MlpArtifact,
    /// ROC AUC of [`TrainedModel::predict`] on the held-out set.
    pub auc: f64,
    /// AUC of the true risk on the same set: the best any model could do.
    pub oracle_auc: f64,
    /// Share of attacks in the held-out set.
    pub positive_rate: f64,
    /// Mean binary cross-entropy over the last epoch.
    pub final_loss: f64,
    /// Width of an input row.
    pub features: usize,
    /// The trained network as candle layers, for [`TrainedModel::predict`].
    net: Net,
}

impl TrainedModel {
    /// The training side's forward pass: attack probabilities for `rows` row-major rows.
    pub fn predict(&self, input: &[f32], rows: usize) -> Result<Vec<f32>, TrainError> {
        let x = Tensor::from_slice(input, (rows, FEATURES), &Device::Cpu)?;
        let p = candle_nn::ops::sigmoid(&self.net.logits(&x)?)?;
        Ok(p.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// Dense relu layers ending in one logit.
#[derive(Debug)]
struct Net {
    layers: Vec<Linear>,
}

impl Net {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

/// Binary cross-entropy of logits, in the stable form
/// `mean(max(x, 0) − x·y + ln(1 + e^(−|x|)))` (candle-nn's version takes the log of a
/// sigmoid, which is −∞ once a logit saturates).
fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let softplus_tail = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    (logits.relu()? - (logits * targets)?)?
        .add(&softplus_tail)?
        .mean_all()
}

/// Trains `tenant`'s model on its own events and measures it on held-out ones.
pub fn train_tenant_model(
    tenant: &TenantProfile,
    opts: &TrainOptions,
) -> Result<TrainedModel, TrainError> {
    let dev = Device::Cpu;
    let train = Dataset::generate(tenant, opts.train_rows, TRAIN_STREAM);
    let test = Dataset::generate(tenant, opts.test_rows, TEST_STREAM);
    let mut rng = Rng::stream(opts.seed, tenant.seed);
    let h = opts.hidden.max(1);
    let init = [
        init_layer(&mut rng, FEATURES, h, false),
        init_layer(&mut rng, h, h, false),
        init_layer(&mut rng, h, 1, true),
    ];
    let mut vars = Vec::new();
    let mut layers = Vec::new();
    for l in &init {
        let w = Var::from_tensor(&Tensor::from_slice(&l.weight, (l.fan_out, l.fan_in), &dev)?)?;
        let b = Var::from_tensor(&Tensor::from_slice(&l.bias, l.fan_out, &dev)?)?;
        layers.push(Linear::new(
            w.as_tensor().clone(),
            Some(b.as_tensor().clone()),
        ));
        vars.extend([w, b]);
    }
    let net = Net { layers };
    let params = ParamsAdamW {
        lr: opts.learning_rate,
        weight_decay: opts.weight_decay,
        ..ParamsAdamW::default()
    };
    let mut optimizer = AdamW::new(vars.clone(), params)?;

    let n = train.len();
    let x_train = Tensor::from_slice(&train.rows, (n, FEATURES), &dev)?;
    let y_train = Tensor::from_slice(&train.labels, (n, 1), &dev)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut final_loss = f64::NAN;
    for _ in 0..opts.epochs {
        rng.shuffle(&mut order);
        let (mut total, mut batches) = (0.0, 0);
        for batch in order.chunks(opts.batch_size.max(1)) {
            let idx = Tensor::from_slice(batch, batch.len(), &dev)?;
            let logits = net.logits(&x_train.index_select(&idx, 0)?)?;
            let loss = bce_with_logits(&logits, &y_train.index_select(&idx, 0)?)?;
            optimizer.backward_step(&loss)?;
            total += f64::from(loss.to_scalar::<f32>()?);
            batches += 1;
        }
        final_loss = total / f64::from(batches.max(1));
    }

    let trained: Vec<DenseLayer> = init
        .iter()
        .zip(vars.chunks(2))
        .map(|(l, wb)| {
            Ok(DenseLayer {
                weight: wb[0].as_tensor().flatten_all()?.to_vec1::<f32>()?,
                bias: wb[1].as_tensor().to_vec1::<f32>()?,
                ..l.clone()
            })
        })
        .collect::<candle_core::Result<_>>()?;
    let layers = match opts.size_mb {
        Some(mb) => widen(&trained, hidden_for_size(FEATURES, mb).max(h), &mut rng),
        None => trained,
    };
    let artifact = MlpArtifact::from_layers(layers)?;

    let mut model = TrainedModel {
        tenant: tenant.name.clone(),
        artifact,
        auc: f64::NAN,
        oracle_auc: f64::NAN,
        positive_rate: test.positive_rate(),
        final_loss,
        features: FEATURES,
        net,
    };
    let scores = model.predict(&test.rows, test.len())?;
    let risk: Vec<f32> = test.risk.iter().map(|p| *p as f32).collect();
    let one_class = || TrainError::OneClass(tenant.name.clone());
    model.auc = auc(&scores, &test.labels).ok_or_else(one_class)?;
    model.oracle_auc = auc(&risk, &test.labels).ok_or_else(one_class)?;
    Ok(model)
}

/// Embeds a trained `in → h → h → 1` network into `in → wide → wide → 1` computing the
/// same function: extra units have random incoming weights and zero outgoing weights.
fn widen(small: &[DenseLayer], wide: usize, rng: &mut Rng) -> Vec<DenseLayer> {
    let [l0, l1, l2] = small else {
        return small.to_vec();
    };
    let h = l0.fan_out;
    let fan_in = l0.fan_in;
    // Layer 0: the trained rows, then random rows for the extra units.
    let extra0 = init_layer(rng, fan_in, wide - h, false);
    let layer0 = DenseLayer {
        weight: [l0.weight.as_slice(), &extra0.weight].concat(),
        bias: [l0.bias.as_slice(), &extra0.bias].concat(),
        fan_in,
        fan_out: wide,
        activation: l0.activation,
    };
    // Layer 1: trained units read only trained units (zeros for the extra columns); extra
    // units read everything.
    let mut weight1 = Vec::with_capacity(wide * wide);
    for row in l1.weight.chunks(h) {
        weight1.extend_from_slice(row);
        weight1.extend(std::iter::repeat_n(0.0, wide - h));
    }
    let extra1 = init_layer(rng, wide, wide - h, false);
    weight1.extend_from_slice(&extra1.weight);
    let layer1 = DenseLayer {
        weight: weight1,
        bias: [l1.bias.as_slice(), &extra1.bias].concat(),
        fan_in: wide,
        fan_out: wide,
        activation: l1.activation,
    };
    // Output: the trained weights, zeros for the extra units.
    let mut weight2 = l2.weight.clone();
    weight2.extend(std::iter::repeat_n(0.0, wide - h));
    let layer2 = DenseLayer {
        weight: weight2,
        bias: l2.bias.clone(),
        fan_in: wide,
        fan_out: 1,
        activation: l2.activation,
    };
    vec![layer0, layer1, layer2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    // Explicit, to win over proptest's `Rng` trait from the glob.
    use crate::models::rng::Rng;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The widened network scores exactly like the small one (plain f64 reference on
        /// both sides), whatever the weights and input.
        #[test]
        fn widening_keeps_the_function(seed in any::<u64>(), h in 1usize..6, extra in 0usize..6) {
            let mut rng = Rng::new(seed);
            let small = vec![
                init_layer(&mut rng, 5, h, false),
                init_layer(&mut rng, h, h, false),
                init_layer(&mut rng, h, 1, true),
            ];
            let wide = widen(&small, h + extra, &mut rng);
            let small = MlpArtifact::from_layers(small).expect("small");
            let wide = MlpArtifact::from_layers(wide).expect("wide");
            prop_assert_eq!(&wide.dims, &vec![5, h + extra, h + extra, 1]);
            let input: Vec<f32> = (0..15).map(|_| rng.normal() as f32).collect();
            let (a, b) = (small.reference(&input, 3), wide.reference(&input, 3));
            for (x, y) in a.iter().zip(&b) {
                prop_assert!((x - y).abs() < 1e-12, "{} vs {}", x, y);
            }
        }
    }
}
