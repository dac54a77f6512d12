//! scikit-learn's `MLPRegressor` weights, as `loadtest/peer/train_sklearn.py` writes them
//! (`weights.json`), turned into Shardline layers: scikit-learn keeps each layer's
//! `coefs_` as `[in, out]` and computes `x · W + b`; [`DenseLayer`] wants `[out, in]`
//! row-major, so each matrix is transposed, and its float64 values become f32. Pure: the
//! caller reads the file.

use std::collections::BTreeMap;

use shardline_shared::manifest::Activation;

use crate::models::DenseLayer;

/// Why a `weights.json` does not make an MLP.
#[derive(Debug, thiserror::Error)]
pub enum SklearnError {
    #[error("weights.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("layer {layer}: {what}")]
    Shape { layer: usize, what: String },
    #[error("activation {0:?} has no Shardline counterpart")]
    Activation(String),
}

/// What the training script reports about its run.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct TrainInfo {
    pub rows: usize,
    pub epochs: usize,
    pub loss: f64,
    /// R² on the training rows.
    pub r2: f64,
    pub seconds: f64,
}

/// A fitted `MLPRegressor`'s parameters.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SklearnMlp {
    /// Per layer, `fan_in` rows of `fan_out` weights (`coefs_[i]`).
    pub coefs: Vec<Vec<Vec<f64>>>,
    /// Per layer, `fan_out` biases (`intercepts_[i]`).
    pub intercepts: Vec<Vec<f64>>,
    /// The hidden layers' activation (`relu`).
    pub activation: String,
    /// The last layer's (`identity` for a regressor).
    pub out_activation: String,
    #[serde(default)]
    pub train: TrainInfo,
    /// Package → version (`null` when not installed), for the report.
    #[serde(default)]
    pub versions: BTreeMap<String, Option<String>>,
}

impl SklearnMlp {
    pub fn from_json(bytes: &[u8]) -> Result<Self, SklearnError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The version of `package` the script saw, or `?`.
    pub fn version(&self, package: &str) -> &str {
        self.versions
            .get(package)
            .and_then(|v| v.as_deref())
            .unwrap_or("?")
    }

    /// The layers in Shardline's layout: weights transposed to `[out, in]`, hidden layers
    /// with [`activation`](Self::activation), the last with
    /// [`out_activation`](Self::out_activation).
    pub fn layers(&self) -> Result<Vec<DenseLayer>, SklearnError> {
        if self.coefs.is_empty() || self.coefs.len() != self.intercepts.len() {
            return Err(SklearnError::Shape {
                layer: 0,
                what: format!(
                    "{} weight matrices and {} bias vectors",
                    self.coefs.len(),
                    self.intercepts.len()
                ),
            });
        }
        let hidden = activation(&self.activation)?;
        let last = activation(&self.out_activation)?;
        let n = self.coefs.len();
        self.coefs
            .iter()
            .zip(&self.intercepts)
            .enumerate()
            .map(|(layer, (w, b))| {
                let shape = |what: String| SklearnError::Shape { layer, what };
                let fan_in = w.len();
                let fan_out = w.first().map_or(0, Vec::len);
                if fan_in == 0 || fan_out == 0 {
                    return Err(shape(format!("empty weight matrix ({fan_in} rows)")));
                }
                if let Some(row) = w.iter().position(|r| r.len() != fan_out) {
                    return Err(shape(format!(
                        "row {row} has {} weights, row 0 has {fan_out}",
                        w[row].len()
                    )));
                }
                if b.len() != fan_out {
                    return Err(shape(format!("{} biases for {fan_out} outputs", b.len())));
                }
                let weight = (0..fan_out)
                    .flat_map(|o| w.iter().map(move |row| row[o] as f32))
                    .collect();
                Ok(DenseLayer {
                    weight,
                    bias: b.iter().map(|v| *v as f32).collect(),
                    fan_in,
                    fan_out,
                    activation: if layer + 1 == n { last } else { hidden },
                })
            })
            .collect()
    }
}

/// Shardline's activation for a scikit-learn activation name.
pub fn activation(name: &str) -> Result<Activation, SklearnError> {
    Ok(match name {
        "relu" => Activation::Relu,
        "identity" => Activation::None,
        "logistic" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        "softmax" => Activation::Softmax,
        other => return Err(SklearnError::Activation(other.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::MlpArtifact;

    /// 2 → 3 → 1: `coefs_[0]` is 2 rows (inputs) of 3 (hidden units).
    const TINY: &str = r#"{
        "coefs": [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[0.5], [-1.0], [2.0]]],
        "intercepts": [[0.1, -10.0, 0.3], [0.25]],
        "activation": "relu",
        "out_activation": "identity",
        "train": {"rows": 10, "epochs": 2, "loss": 0.5, "r2": 0.1, "seconds": 0.2},
        "versions": {"scikit-learn": "1.9.1", "uvloop": null}
    }"#;

    #[test]
    fn weights_are_transposed_to_out_by_in() {
        let m = SklearnMlp::from_json(TINY.as_bytes()).expect("parses");
        let layers = m.layers().expect("chains");
        assert_eq!((layers[0].fan_in, layers[0].fan_out), (2, 3));
        // Row o of Shardline's matrix is column o of scikit-learn's.
        assert_eq!(layers[0].weight, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(layers[0].bias, [0.1, -10.0, 0.3]);
        assert_eq!(layers[0].activation, Activation::Relu);
        assert_eq!((layers[1].fan_in, layers[1].fan_out), (3, 1));
        assert_eq!(layers[1].weight, [0.5, -1.0, 2.0]);
        assert_eq!(layers[1].activation, Activation::None);
        assert_eq!(m.train.epochs, 2);
        assert_eq!(
            (m.version("scikit-learn"), m.version("uvloop")),
            ("1.9.1", "?")
        );
    }

    #[test]
    fn the_artifact_scores_what_sklearn_would() {
        // x = [1, 2]: hidden = relu([1+8+0.1, 2+10-10, 3+12+0.3]) = [9.1, 2, 15.3];
        // out = 0.5·9.1 − 2 + 2·15.3 + 0.25 = 33.4 (identity).
        let layers = SklearnMlp::from_json(TINY.as_bytes())
            .and_then(|m| m.layers())
            .expect("layers");
        let artifact = MlpArtifact::from_layers(layers).expect("artifact");
        let got = artifact.reference(&[1.0, 2.0], 1);
        assert!((got[0] - 33.4).abs() < 1e-5, "{got:?}");
        // x = [0, 0]: hidden = relu([0.1, −10, 0.3]) = [0.1, 0, 0.3]; out = 0.05 + 0.6 + 0.25.
        let zero = artifact.reference(&[0.0, 0.0], 1);
        assert!((zero[0] - 0.9).abs() < 1e-6, "{zero:?}");
    }

    #[test]
    fn malformed_weights_are_refused() {
        let parse = |s: &str| SklearnMlp::from_json(s.as_bytes()).and_then(|m| m.layers());
        let ragged = TINY.replace("[4.0, 5.0, 6.0]", "[4.0, 5.0]");
        assert!(parse(&ragged).unwrap_err().to_string().contains("row 1"));
        let short_bias = TINY.replace("[0.1, -10.0, 0.3]", "[0.1]");
        assert!(
            parse(&short_bias)
                .unwrap_err()
                .to_string()
                .contains("layer 0")
        );
        let odd = TINY.replace("\"identity\"", "\"swish\"");
        assert!(matches!(parse(&odd), Err(SklearnError::Activation(a)) if a == "swish"));
        let unpaired = TINY.replace("[[0.1, -10.0, 0.3], [0.25]]", "[[0.1, -10.0, 0.3]]");
        assert!(parse(&unpaired).is_err());
        assert!(parse("{").is_err());
    }
}
