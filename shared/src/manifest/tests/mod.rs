//! Unit and property tests of configs, tensor tables and locations.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

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
            r#"{"format":"shardline/v1","architecture":"mlp","input":{"name":"x","dim":4,"typo":1},"layers":[{"weight":"w","activation":"relu"}],"output":{"name":"y","dim":1}}"#,
            "unknown field `input.typo`",
        ),
        (
            r#"{"format":"shardline/v1","architecture":"cnn","input":{"name":"x","dim":4},"layers":[{"weight":"w","activation":"relu"}],"output":{"name":"y","dim":1}}"#,
            "unknown architecture",
        ),
        (
            r#"{"format":"shardline/v1","architecture":"mlp","input":{"name":"x","dim":4},"layers":[{"weight":"w","activation":"swish"}],"output":{"name":"y","dim":1}}"#,
            "unknown activation in layer 0",
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
