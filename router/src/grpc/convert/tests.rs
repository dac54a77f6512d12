//! The conversions against the worker's own decoder and encoder: what [`to_json`]
//! writes decodes to the same `f32` bits (property tests, every datatype path), what it
//! accepts the worker accepts, its shape rule answers as the decoder's, and hostile
//! messages (wrong raw lengths, overflowing shapes, non-finite values, too many rows,
//! mixed contents) get INVALID_ARGUMENT's errors, never a panic; [`from_json`] reads the
//! worker's answers back to the same bits.

use bytes::Bytes;
use proptest::prelude::*;
use shardline_shared::decode::{
    DecodeError, InputSpec, decode_infer, encode_infer_response, validate_infer,
};

use super::elements::{bf16_to_f32, f16_to_f32};
use super::*;
use crate::error::RouterError;
use crate::grpc::pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crate::grpc::pb::{InferTensorContents, ModelInferRequest};

const DIM: usize = 4;
const MAX_BODY: usize = 1 << 20;

fn spec() -> InputSpec<'static> {
    InputSpec {
        name: "x",
        dim: DIM,
        output_name: "y",
        max_rows: 16,
    }
}

fn tensor(
    datatype: &str,
    shape: Vec<i64>,
    contents: Option<InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: "x".into(),
        datatype: datatype.into(),
        shape,
        parameters: Default::default(),
        contents,
    }
}

/// A request of one input sent as raw little-endian bytes.
fn raw(datatype: &str, shape: Vec<i64>, bytes: Vec<u8>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![tensor(datatype, shape, None)],
        raw_input_contents: vec![Bytes::from(bytes)],
        ..ModelInferRequest::default()
    }
}

fn typed(datatype: &str, shape: Vec<i64>, contents: InferTensorContents) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![tensor(datatype, shape, Some(contents))],
        ..ModelInferRequest::default()
    }
}

fn le<T: Copy, const N: usize>(values: &[T], bytes: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| bytes(v)).collect()
}

/// What the worker decodes from the converted body.
fn decoded(request: &ModelInferRequest) -> Vec<f32> {
    let converted = to_json(request, &spec(), MAX_BODY).expect("converts");
    decode_infer(&converted.body, &spec())
        .expect("the worker decodes it")
        .data
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn finite_f32() -> impl Strategy<Value = f32> + Clone {
    any::<u32>()
        .prop_map(f32::from_bits)
        .prop_filter("finite", |x| x.is_finite())
}

/// f64 values whose rounding to f32 is finite (any bits, and near f32's own values).
fn f32_range_f64() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        finite_f32().prop_map(f64::from),
        (finite_f32(), -1e-3f64..1e-3).prop_map(|(x, e)| f64::from(x) * (1.0 + e)),
    ]
    .prop_filter("finite in f32", |x| (*x as f32).is_finite())
}

fn rows_of<T: std::fmt::Debug + Clone, S: Strategy<Value = T> + Clone>(
    s: S,
) -> impl Strategy<Value = (usize, Vec<T>)> {
    (1usize..=16)
        .prop_flat_map(move |rows| (Just(rows), prop::collection::vec(s.clone(), rows * DIM)))
}

proptest! {
    #[test]
    fn raw_and_typed_fp32_reach_the_worker_bit_for_bit((rows, values) in rows_of(finite_f32())) {
        let shape = vec![rows as i64, DIM as i64];
        let via_raw = decoded(&raw("FP32", shape.clone(), le(&values, f32::to_le_bytes)));
        prop_assert_eq!(bits(&via_raw), bits(&values));
        let contents = InferTensorContents { fp32_contents: values.clone(), ..Default::default() };
        let via_typed = decoded(&typed("FP32", shape, contents));
        prop_assert_eq!(bits(&via_typed), bits(&values));
    }

    #[test]
    fn fp64_is_rounded_to_nearest_f32((rows, values) in rows_of(f32_range_f64())) {
        let expected: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        let shape = vec![rows as i64, DIM as i64];
        let via_raw = decoded(&raw("FP64", shape.clone(), le(&values, f64::to_le_bytes)));
        prop_assert_eq!(bits(&via_raw), bits(&expected));
        let contents = InferTensorContents { fp64_contents: values, ..Default::default() };
        prop_assert_eq!(bits(&decoded(&typed("FP64", shape, contents))), bits(&expected));
    }

    #[test]
    fn integers_keep_their_datatype_and_the_decoders_range_rules(
        (rows, values) in rows_of(any::<i32>()),
    ) {
        let shape = vec![rows as i64, DIM as i64];
        let request = raw("INT32", shape.clone(), le(&values, i32::to_le_bytes));
        let converted = to_json(&request, &spec(), MAX_BODY).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&converted.body).unwrap();
        prop_assert_eq!(&body["inputs"][0]["datatype"], "INT32");
        let in_range = values.iter().all(|v| v.unsigned_abs() <= 1 << 24);
        match decode_infer(&converted.body, &spec()) {
            Ok(batch) => {
                prop_assert!(in_range);
                let expected: Vec<f32> = values.iter().map(|&v| v as f32).collect();
                prop_assert_eq!(bits(&batch.data), bits(&expected));
            }
            Err(e) => prop_assert!(!in_range && matches!(e, DecodeError::Value { .. }), "{e}"),
        }
    }

    /// Arbitrary and nearly valid messages: never a panic; whatever is accepted, the
    /// worker accepts, within the limit and the reserved bound.
    #[test]
    fn hostile_messages_are_refused_or_accepted_by_the_worker_too(
        datatype in prop::sample::select(vec![
            "FP32", "FP64", "FP16", "BF16", "INT8", "UINT16", "INT64", "UINT64", "BOOL", "BYTES", "NOPE",
        ]),
        near in any::<bool>(),
        rows in 0i64..20,
        delta in prop::sample::select(vec![-1i64, 0, 0, 0, 1]),
        shape in prop::collection::vec(prop_oneof![Just(DIM as i64), 0i64..20, any::<i64>()], 0..4),
        noise in prop::collection::vec(any::<u8>(), 0..2400),
        use_raw in any::<bool>(),
        name in prop::sample::select(vec!["x", "x", "other"]),
    ) {
        let size = super::elements::Dtype::parse(datatype).map_or(4, super::elements::Dtype::size);
        let (shape, count) = if near {
            (vec![rows, DIM as i64], (rows * DIM as i64 + delta).max(0) as usize)
        } else {
            (shape, noise.len() / 4)
        };
        let mut request = if use_raw {
            let mut bytes = noise.clone();
            bytes.resize(if near { count * size } else { noise.len() }, 0x3f);
            raw(datatype, shape, bytes)
        } else {
            let fp32 = noise.chunks(4).take(count).map(|c| f32::from(c[0]) - 100.0).collect();
            let contents = InferTensorContents { fp32_contents: fp32, ..Default::default() };
            typed(datatype, shape, contents)
        };
        request.inputs[0].name = name.into();
        if let Ok(converted) = to_json(&request, &spec(), MAX_BODY) {
            prop_assert!(validate_infer(&converted.body, &spec()).is_ok()
                || datatype.starts_with("INT") || datatype.starts_with("UINT"));
            prop_assert!(converted.body.len() as u64 <= json_bound(&request));
            prop_assert_eq!(converted.raw, use_raw);
        }
    }

    #[test]
    fn answers_come_back_bit_for_bit(rows in 1usize..64, seed in any::<u64>()) {
        let scores: Vec<f32> = (0..rows as u64)
            .map(|i| f32::from_bits((seed.wrapping_mul(i + 1) >> 32) as u32))
            .map(|x| if x.is_finite() { x } else { 0.5 })
            .collect();
        let answer = encode_infer_response("m", "3", Some("req"), "y", rows, 1, &scores);
        let raw = from_json(&answer, true).unwrap();
        prop_assert_eq!(raw.outputs[0].shape.clone(), vec![rows as i64, 1]);
        prop_assert!(raw.outputs[0].contents.is_none());
        let back: Vec<u32> = raw.raw_output_contents[0]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        prop_assert_eq!(back, bits(&scores));
        let typed = from_json(&answer, false).unwrap();
        prop_assert!(typed.raw_output_contents.is_empty());
        prop_assert_eq!((typed.model_version.as_str(), typed.id.as_str()), ("3", "req"));
        prop_assert_eq!(bits(&typed.outputs[0].contents.clone().unwrap().fp32_contents), bits(&scores));
    }

    #[test]
    fn halves_widen_exactly(h in any::<u16>()) {
        let (sign, exp, frac) = (h >> 15, i32::from((h >> 10) & 0x1f), f64::from(h & 0x3ff));
        let magnitude = match exp {
            0 => frac * 2f64.powi(-24),
            0x1f => if frac == 0.0 { f64::INFINITY } else { f64::NAN },
            e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
        };
        let expected = if sign == 1 { -magnitude } else { magnitude } as f32;
        let got = f16_to_f32(h);
        prop_assert!(got.to_bits() == expected.to_bits() || (got.is_nan() && expected.is_nan()));
        prop_assert_eq!(bf16_to_f32(h).to_bits(), u32::from(h) << 16);
    }
}

fn refusal(request: &ModelInferRequest) -> RouterError {
    to_json(request, &spec(), MAX_BODY).expect_err("refused")
}

#[test]
fn raw_contents_of_the_wrong_length_are_refused() {
    let e = refusal(&raw("FP32", vec![2, DIM as i64], vec![0; 31]));
    assert_eq!(
        e.to_string(),
        "raw_input_contents[0] has 31 bytes but shape [2, 4] of FP32 needs 32"
    );
    assert!(matches!(e, RouterError::BadRequest(_)));
    let e = refusal(&raw("FP64", vec![1, DIM as i64], vec![0; 16]));
    assert!(e.to_string().contains("needs 32"), "{e}");
}

#[test]
fn overflowing_and_negative_shapes_are_refused_before_any_data_is_read() {
    for shape in [
        vec![i64::MAX, DIM as i64],
        vec![i64::MIN, DIM as i64],
        vec![-1, DIM as i64],
        vec![1 << 62, 1 << 62],
        vec![2, DIM as i64, 1 << 40],
        vec![],
    ] {
        let e = refusal(&raw("FP32", shape.clone(), vec![0; 16]));
        assert!(
            matches!(
                e,
                RouterError::Decode(DecodeError::Shape { .. } | DecodeError::TooManyRows { .. })
            ),
            "{shape:?}: {e:?}"
        );
    }
    assert!(matches!(
        refusal(&raw("FP32", vec![17, DIM as i64], vec![0; 17 * 16])),
        RouterError::Decode(DecodeError::TooManyRows { rows: 17, max: 16 })
    ));
    assert!(matches!(
        refusal(&raw("FP32", vec![0, DIM as i64], vec![])),
        RouterError::Decode(DecodeError::EmptyBatch(_))
    ));
}

#[test]
fn non_finite_values_are_refused_with_their_position() {
    let mut values = vec![1.0f32; 8];
    values[5] = f32::NAN;
    let e = refusal(&raw("FP32", vec![2, 4], le(&values, f32::to_le_bytes)));
    assert_eq!(
        e.to_string(),
        "input value NaN at position 5 is not finite for datatype FP32"
    );
    let e = refusal(&typed(
        "FP64",
        vec![4],
        InferTensorContents {
            fp64_contents: vec![0.0, 1e300, 0.0, 0.0],
            ..Default::default()
        },
    ));
    assert_eq!(
        e.to_string(),
        "input value 1e300 at position 1 is out of f32 range for datatype FP64"
    );
    let e = refusal(&raw(
        "FP16",
        vec![4],
        le(&[0u16, 0, 0x7c00, 0], u16::to_le_bytes),
    ));
    assert!(
        e.to_string().contains("inf at position 2 is not finite"),
        "{e}"
    );
}

#[test]
fn mixed_missing_and_miscounted_contents_are_refused() {
    let mut mixed = raw("FP32", vec![4], vec![0; 16]);
    mixed.inputs[0].contents = Some(InferTensorContents::default());
    assert!(refusal(&mixed).to_string().contains("one or the other"));
    let mut two = raw("FP32", vec![4], vec![0; 16]);
    two.raw_input_contents.push(Bytes::new());
    assert!(refusal(&two).to_string().contains("2 entries for 1 inputs"));
    let short = InferTensorContents {
        fp32_contents: vec![1.0; 3],
        ..Default::default()
    };
    assert!(matches!(
        refusal(&typed("FP32", vec![4], short)),
        RouterError::Decode(DecodeError::DataLength {
            got: 3,
            expected: 4,
            ..
        })
    ));
    assert!(matches!(
        refusal(&typed("FP32", vec![4], InferTensorContents::default())),
        RouterError::Decode(DecodeError::MissingData(_))
    ));
    // FP16 has no typed field; BYTES is not numeric; no inputs; another name.
    let e = refusal(&typed(
        "FP16",
        vec![4],
        InferTensorContents {
            fp32_contents: vec![0.0; 4],
            ..Default::default()
        },
    ));
    assert!(
        matches!(
            e,
            RouterError::Decode(DecodeError::DataLength { got: 0, .. })
                | RouterError::Decode(DecodeError::MissingData(_))
        ),
        "{e:?}"
    );
    assert!(matches!(
        refusal(&raw("BYTES", vec![4], vec![0; 16])),
        RouterError::Decode(DecodeError::UnsupportedDatatype(_))
    ));
    let mut none = raw("FP32", vec![4], vec![0; 16]);
    none.inputs.clear();
    none.raw_input_contents.clear();
    assert!(matches!(
        refusal(&none),
        RouterError::Decode(DecodeError::NoInputs)
    ));
    let mut other = raw("FP32", vec![4], vec![0; 16]);
    other.inputs[0].name = "z".into();
    assert_eq!(
        refusal(&other).to_string(),
        "unknown input \"z\" (this model's input is \"x\")"
    );
}

#[test]
fn a_body_past_the_limit_is_too_large_and_outputs_and_id_pass_through() {
    let request = raw(
        "FP32",
        vec![16, DIM as i64],
        le(&[0.123_456_79f32; 64], f32::to_le_bytes),
    );
    assert!(matches!(
        to_json(&request, &spec(), 200),
        Err(RouterError::TooLarge(200))
    ));
    let mut request = raw("FP32", vec![DIM as i64], vec![0; 16]);
    request.id = "req-7".into();
    request.outputs.push(InferRequestedOutputTensor {
        name: "y".into(),
        parameters: Default::default(),
    });
    let batch = decode_infer(&to_json(&request, &spec(), MAX_BODY).unwrap().body, &spec()).unwrap();
    assert_eq!(batch.id.as_deref(), Some("req-7"));
    assert_eq!(batch.requested_outputs, Some(vec!["y".to_owned()]));
    request.outputs[0].name = "q".into();
    let body = to_json(&request, &spec(), MAX_BODY).unwrap().body;
    assert!(matches!(
        validate_infer(&body, &spec()),
        Err(DecodeError::OutputName { .. })
    ));
}

#[test]
fn a_worker_answer_that_is_not_fp32_json_is_an_error() {
    assert!(from_json(b"not json", true).is_err());
    let int = br#"{"model_name":"m","model_version":"1","outputs":[{"name":"y","shape":[1,1],"datatype":"INT8","data":[1]}]}"#;
    assert!(from_json(int, false).unwrap_err().contains("INT8"));
}
