//! Extreme values from a request or a stored manifest never overflow (a panic in debug
//! builds, a wrap in release): exponents of any length, shapes and widths near the
//! integer limits, sizes near `u64::MAX`. The router's validate-only pass (with its
//! byte-level shortcut) and the worker's full decode agree on every one, and what they
//! accept is what `serde_json` parses to a finite `f32`.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use shardline_shared::decode::{
    DEFAULT_MAX_ROWS, DecodeError, InputSpec, decode_infer, validate_infer,
};
use shardline_shared::manifest::{Activation, Architecture, LayerSpec, ModelConfig, TensorSpec};

fn spec(dim: usize) -> InputSpec<'static> {
    InputSpec {
        name: "features",
        dim,
        output_name: "score",
        max_rows: DEFAULT_MAX_ROWS,
    }
}
fn body(dim: usize, datatype: &str, data: &str) -> String {
    format!(
        r#"{{"inputs":[{{"name":"features","shape":[1,{dim}],"datatype":"{datatype}","data":[{data}]}}]}}"#
    )
}

/// A JSON number whose exponent has any number of digits (1 to 60).
fn extreme_number() -> impl Strategy<Value = String> {
    (
        "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,20})?",
        prop::sample::select(vec!["e", "E"]),
        prop::sample::select(vec!["", "+", "-"]),
        "[0-9]{1,60}",
    )
        .prop_map(|(m, e, sign, exp)| format!("{m}{e}{sign}{exp}"))
}

#[test]
fn a_huge_exponent_is_a_clear_400_both_ways() {
    for n in [
        "1e99999999999999999999",
        "12e9223372036854775807",
        "9.5E+00000000000000000000000000000000000000039",
    ] {
        let b = body(1, "FP32", n);
        let decoded = decode_infer(b.as_bytes(), &spec(1)).unwrap_err();
        assert_eq!(validate_infer(b.as_bytes(), &spec(1)), Err(decoded.clone()));
        let message = decoded.to_string();
        assert!(message.contains("range"), "{n}: {message}");
    }
    // Tiny ones are zero, and fine.
    for n in ["1e-99999999999999999999", "0e99999999999999999999"] {
        let b = body(1, "FP32", n);
        assert_eq!(
            decode_infer(b.as_bytes(), &spec(1)).unwrap().data,
            [0.0],
            "{n}"
        );
        assert_eq!(validate_infer(b.as_bytes(), &spec(1)), Ok(()));
    }
}

#[test]
fn shapes_at_the_integer_limits_are_refused_not_multiplied() {
    let wide = InputSpec {
        name: "features",
        dim: usize::MAX,
        output_name: "score",
        max_rows: usize::MAX,
    };
    for shape in [
        format!("[{},{}]", i64::MAX, usize::MAX),
        format!("[{},{}]", u64::MAX, u64::MAX),
        format!("[2,{}]", usize::MAX),
        format!("[{}]", usize::MAX),
        format!("[{},1]", i64::MAX),
    ] {
        let b = format!(
            r#"{{"inputs":[{{"name":"features","shape":{shape},"datatype":"FP32","data":[1,2]}}]}}"#
        );
        for input in [wide, spec(1)] {
            let decoded = decode_infer(b.as_bytes(), &input);
            assert!(decoded.is_err(), "{shape}");
            assert_eq!(
                validate_infer(b.as_bytes(), &input),
                decoded.map(drop),
                "{shape}"
            );
        }
    }
}

#[test]
fn manifest_sizes_saturate() {
    let layer = |i: usize| LayerSpec {
        weight: format!("w{i}"),
        bias: Some(format!("b{i}")),
        activation: Activation::Relu,
    };
    let config = ModelConfig {
        format: "shardline/v1".into(),
        architecture: Architecture::Mlp,
        input: TensorSpec {
            name: "x".into(),
            dim: usize::MAX,
        },
        layers: (0..4).map(layer).collect(),
        output: TensorSpec {
            name: "y".into(),
            dim: usize::MAX,
        },
    };
    let dims = [usize::MAX; 5];
    assert_eq!(config.parameter_count(&dims), u64::MAX);
    assert_eq!(
        config.parameter_count(&[1 << 20, 1 << 20]),
        (1 << 40) + (1 << 20)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Whatever the exponent's length, the validate-only pass and the decode agree, and
    /// an accepted value is serde_json's own parse of the number, finite in `f32`.
    #[test]
    fn exponents_of_any_length_agree_with_serde_json(
        numbers in prop::collection::vec(extreme_number(), 1..4),
        datatype in prop::sample::select(vec!["FP32", "FP64"]),
    ) {
        let b = body(numbers.len(), datatype, &numbers.join(","));
        let decoded = decode_infer(b.as_bytes(), &spec(numbers.len()));
        prop_assert_eq!(
            validate_infer(b.as_bytes(), &spec(numbers.len())),
            decoded.clone().map(drop),
            "{}", b
        );
        let reference: Vec<Option<f32>> = numbers
            .iter()
            .map(|n| serde_json::from_str::<f64>(n).ok().map(|f| f as f32).filter(|f| f.is_finite()))
            .collect();
        match decoded {
            Ok(batch) => {
                let want: Vec<f32> = reference.iter().map(|r| r.unwrap()).collect();
                prop_assert_eq!(batch.data, want, "{}", b);
            }
            Err(e) => {
                prop_assert!(reference.iter().any(Option::is_none), "{b}: {e}");
                prop_assert!(
                    matches!(e, DecodeError::Data(_) | DecodeError::Value { .. }),
                    "{b}: {e}"
                );
            }
        }
    }

    /// Any widths, however large: the parameter count is exact when it fits in u64
    /// and saturates otherwise, never wraps.
    #[test]
    fn parameter_counts_saturate(
        dims in prop::collection::vec(
            prop_oneof![Just(usize::MAX), Just(1usize << 32), 1usize..(1 << 21), any::<usize>()],
            2..6,
        ),
        bias in any::<bool>(),
    ) {
        let layers = (0..dims.len() - 1)
            .map(|i| LayerSpec {
                weight: format!("w{i}"),
                bias: bias.then(|| format!("b{i}")),
                activation: Activation::Relu,
            })
            .collect();
        let config = ModelConfig {
            format: "shardline/v1".into(),
            architecture: Architecture::Mlp,
            input: TensorSpec { name: "x".into(), dim: dims[0] },
            layers,
            output: TensorSpec { name: "y".into(), dim: *dims.last().unwrap() },
        };
        let exact: u128 = dims
            .windows(2)
            .map(|w| (w[0] as u128 * w[1] as u128).saturating_add(if bias { w[1] as u128 } else { 0 }))
            .fold(0, u128::saturating_add);
        let want = u64::try_from(exact).unwrap_or(u64::MAX);
        prop_assert_eq!(config.parameter_count(&dims), want);
    }

    /// Shapes and widths anywhere in the integer range never panic, and both passes
    /// give the same answer.
    #[test]
    fn any_shape_and_width_agree(
        rows in prop_oneof![Just(i64::MAX), Just(0i64), 0i64..5, any::<i64>()],
        cols in prop_oneof![Just(u64::MAX), Just(usize::MAX as u64), 0u64..5, any::<u64>()],
        dim in prop_oneof![Just(usize::MAX), Just(usize::MAX / 2 + 1), 1usize..5],
        max_rows in prop_oneof![Just(usize::MAX), 1usize..5],
    ) {
        let input = InputSpec { name: "features", dim, output_name: "score", max_rows };
        let b = format!(
            r#"{{"inputs":[{{"name":"features","shape":[{rows},{cols}],"datatype":"FP32","data":[1,2,3,4]}}]}}"#
        );
        let decoded = decode_infer(b.as_bytes(), &input);
        prop_assert_eq!(validate_infer(b.as_bytes(), &input), decoded.map(drop), "{}", b);
    }
}
