//! The binary tensor data extension in `shardline_shared::decode`: binary bodies decode
//! to the batch their JSON twin decodes to (property test, every numeric datatype), the
//! validate-only pass answers exactly as the decoder on any header length and any edit
//! of a binary body (fuzz-style: never a panic), every hostile shape of a binary request
//! is refused with its own message, and binary answers carry their header's length.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use proptest::prelude::*;
use serde_json::{Value, json};
use shardline_shared::decode::{
    DecodeError, decode_infer, decode_request, encode_infer_response, encode_infer_response_binary,
    parse_header_length, validate_request,
};
use support::spec;

/// A binary request: the JSON header (with `binary_data_size` on the input) and the
/// tensor bytes after it; the header's length.
fn binary_body(shape: Value, datatype: &str, bytes: &[u8], extra: Value) -> (Vec<u8>, usize) {
    let mut header = json!({"id": "b-1", "inputs": [{
        "name": "features", "shape": shape, "datatype": datatype,
        "parameters": {"binary_data_size": bytes.len()},
    }]});
    if let (Value::Object(h), Value::Object(e)) = (&mut header, extra) {
        h.extend(e);
    }
    let mut body = header.to_string().into_bytes();
    let n = body.len();
    body.extend_from_slice(bytes);
    (body, n)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes, asserting the validate-only pass agrees.
fn decode(body: &[u8], header: Option<usize>, dim: usize) -> Result<Vec<f32>, DecodeError> {
    let decoded = decode_request(body, header, &spec(dim));
    assert_eq!(
        validate_request(body, header, &spec(dim)),
        decoded.clone().map(drop)
    );
    decoded.map(|b| b.data)
}

/// A numeric datatype, a finite value exact in it, and its bytes.
fn element() -> impl Strategy<Value = (&'static str, f64, Vec<u8>)> {
    prop_oneof![
        any::<f32>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| ("FP32", f64::from(x), x.to_le_bytes().to_vec())),
        any::<f32>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| ("FP64", f64::from(x), f64::from(x).to_le_bytes().to_vec())),
        any::<i8>().prop_map(|x| ("INT8", f64::from(x), x.to_le_bytes().to_vec())),
        any::<u16>().prop_map(|x| ("UINT16", f64::from(x), x.to_le_bytes().to_vec())),
        (-(1i32 << 24)..=1 << 24).prop_map(|x| ("INT32", f64::from(x), x.to_le_bytes().to_vec())),
        (0u64..=1 << 24).prop_map(|x| ("UINT64", x as f64, x.to_le_bytes().to_vec())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A binary body decodes to the batch of its JSON twin (same datatype, same values).
    #[test]
    fn binary_decodes_like_json(
        dtype in prop::sample::select(vec!["FP32", "FP64", "INT8", "UINT16", "INT32", "UINT64"]),
        elements in prop::collection::vec(element(), 1..24),
        nested in any::<bool>(),
    ) {
        let picked: Vec<_> = elements.iter().filter(|e| e.0 == dtype).collect();
        prop_assume!(!picked.is_empty());
        let values: Vec<f64> = picked.iter().map(|e| e.1).collect();
        let bytes: Vec<u8> = picked.iter().flat_map(|e| e.2.clone()).collect();
        let dim = values.len();
        let shape = if nested { json!([1, dim]) } else { json!([dim]) };
        let json_body = json!({"inputs": [{"name": "features", "shape": shape, "datatype": dtype, "data": values}]});
        let expected = decode_infer(json_body.to_string().as_bytes(), &spec(dim)).unwrap();
        let (body, n) = binary_body(shape, dtype, &bytes, json!({}));
        let got = decode_request(&body, Some(n), &spec(dim)).unwrap();
        prop_assert_eq!(got.data, expected.data);
        prop_assert_eq!(got.rows, expected.rows);
        prop_assert_eq!(validate_request(&body, Some(n), &spec(dim)), Ok(()));
    }

    /// Any header length and any edit of a valid binary body: the validate-only pass
    /// answers as the decoder, and nothing panics.
    #[test]
    fn hostile_binary_bodies_are_judged_alike(
        values in prop::collection::vec(-1e3f32..1e3, 6),
        mode in 0u8..3,
        shift in -3i64..=3,
        arbitrary in any::<usize>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        shorten in any::<bool>(),
    ) {
        let (mut body, n) = binary_body(json!([2, 3]), "FP32", &f32_bytes(&values), json!({}));
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        if shorten {
            body.truncate(cut.index(body.len() + 1));
        }
        // No header, one near the JSON's true length, or any length at all.
        let header = match mode {
            0 => None,
            1 => Some((n as i64 + shift).max(0) as usize),
            _ => Some(arbitrary),
        };
        let _ = decode(&body, header, 3);
        let _ = decode(&body, Some(n), 3);
    }

    /// The header length is read exactly: digits only, no sign, no overflow.
    #[test]
    fn header_lengths_are_read_exactly(n in any::<u64>(), pad in "[ \t]{0,2}") {
        let text = format!("{pad}{n}{pad}");
        prop_assert_eq!(parse_header_length(text.as_bytes()).ok(), usize::try_from(n).ok());
        let (minus, plus) = (format!("-{n}"), format!("+{n}"));
        prop_assert!(parse_header_length(minus.as_bytes()).is_err());
        prop_assert!(parse_header_length(plus.as_bytes()).is_err());
    }
}

#[test]
fn hostile_binary_requests_get_their_own_refusal() {
    let good = f32_bytes(&[1.0, 2.0, 3.0]);
    let (body, n) = binary_body(json!([1, 3]), "FP32", &good, json!({}));
    assert_eq!(decode(&body, Some(n), 3), Ok(vec![1.0, 2.0, 3.0]));

    let size = |v: Value| {
        let header = json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
            "parameters": {"binary_data_size": v}}]});
        let mut body = header.to_string().into_bytes();
        let n = body.len();
        body.extend_from_slice(&good);
        (body, n)
    };
    /// A body, its header length, and the words its refusal must hold.
    type Case = ((Vec<u8>, Option<usize>), &'static str);
    let cases: Vec<Case> = vec![
        // The header's length beyond the body.
        (
            (body.clone(), Some(body.len() + 1)),
            "bytes but the body has only",
        ),
        (
            (body.clone(), Some(usize::MAX)),
            "bytes but the body has only",
        ),
        // Sizes that are negative, fractional, overflowing or not numbers.
        (
            (size(json!(-12)).0, Some(size(json!(-12)).1)),
            "must be a non-negative integer",
        ),
        (
            (size(json!(12.5)).0, Some(size(json!(12.5)).1)),
            "must be a non-negative integer",
        ),
        (
            (size(json!(1e30)).0, Some(size(json!(1e30)).1)),
            "must be a non-negative integer",
        ),
        (
            (size(json!("12")).0, Some(size(json!("12")).1)),
            "must be a non-negative integer",
        ),
        (
            (size(json!(u64::MAX)).0, Some(size(json!(u64::MAX)).1)),
            "needs 12",
        ),
        // A size that disagrees with the shape, or with what follows the header.
        (
            (size(json!(8)).0, Some(size(json!(8)).1)),
            "binary_data_size is 8 bytes but shape [1, 3] of FP32 needs 12",
        ),
        ((size(json!(0)).0, Some(size(json!(0)).1)), "needs 12"),
        (
            (body[..body.len() - 1].to_vec(), Some(n)),
            "(12 bytes) goes beyond the body (11 bytes",
        ),
        (
            ([&body[..], b"x"].concat(), Some(n)),
            "1 bytes after the inference header belong to no input",
        ),
        // No header, or a header cut short.
        ((body.clone(), None), "not valid json"),
        ((body.clone(), Some(n - 1)), "not valid json"),
        ((body.clone(), Some(0)), "not valid json"),
    ];
    for ((body, header), want) in cases {
        let e = decode(&body, header, 3).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should say {want:?}");
    }

    // A binary_data_size without the header: nothing locates the bytes.
    let (body, _) = binary_body(json!([1, 3]), "FP32", &[], json!({}));
    let e = decode(&body, None, 3).unwrap_err();
    assert_eq!(e, DecodeError::NoInferenceHeader("features".into()));
    // Zero-byte tensors: no rows is refused before any byte is looked at.
    let (body, n) = binary_body(json!([0, 3]), "FP32", &[], json!({}));
    assert!(matches!(
        decode(&body, Some(n), 3),
        Err(DecodeError::EmptyBatch(_))
    ));
    // Both data and binary_data_size.
    let header = json!({"inputs": [{"name": "features", "shape": [3], "datatype": "FP32",
        "data": [1, 2, 3], "parameters": {"binary_data_size": 12}}]});
    let mut body = header.to_string().into_bytes();
    let n = body.len();
    body.extend_from_slice(&good);
    let e = decode(&body, Some(n), 3).unwrap_err().to_string();
    assert!(e.contains("both \"data\" and binary_data_size"), "{e}");
    // Too many rows, caught by the shape before the size.
    let (body, n) = binary_body(json!([5000, 3]), "FP32", &good, json!({}));
    assert!(matches!(
        decode(&body, Some(n), 3),
        Err(DecodeError::TooManyRows { .. })
    ));
    // A shape whose byte size overflows every integer type is reported, not wrapped.
    let (body, n) = binary_body(json!([1, 3]), "FP64", &good, json!({}));
    let e = decode(&body, Some(n), 3).unwrap_err().to_string();
    assert!(e.contains("of FP64 needs 24"), "{e}");
}

#[test]
fn non_finite_values_are_refused_in_every_float_width() {
    for (datatype, bytes, want) in [
        (
            "FP32",
            f32_bytes(&[1.0, f32::INFINITY, 0.0]),
            "inf at position 1 is not finite",
        ),
        (
            "FP32",
            f32_bytes(&[f32::NAN, 1.0, 0.0]),
            "NaN at position 0 is not finite",
        ),
        (
            "FP64",
            [0.0, 0.0, 1e39f64]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "1e39 at position 2 is out of f32 range",
        ),
        (
            "BF16",
            vec![0, 0, 0x80, 0x7f, 0, 0],
            "inf at position 1 is not finite",
        ),
        (
            "FP16",
            vec![0, 0, 0, 0, 0x01, 0x7e],
            "NaN at position 2 is not finite",
        ),
    ] {
        let (body, n) = binary_body(json!([3]), datatype, &bytes, json!({}));
        let e = decode(&body, Some(n), 3).unwrap_err().to_string();
        assert!(e.contains(want), "{datatype}: {e:?} should say {want:?}");
    }
}

#[test]
fn fp64_is_rounded_to_the_nearest_f32() {
    // 1 + 2^-24 lies halfway between 1 and the next f32: ties go to even (1.0); a hair
    // above goes up.
    let halfway = 1.0 + 2f64.powi(-24);
    let above = halfway + 2f64.powi(-40);
    let bytes: Vec<u8> = [halfway, above, 0.1]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let (body, n) = binary_body(json!([3]), "FP64", &bytes, json!({}));
    let got = decode(&body, Some(n), 3).unwrap();
    assert_eq!(got, vec![1.0, 1.0 + f32::EPSILON, 0.1f32]);
}

#[test]
fn the_answer_format_follows_the_request() {
    let good = f32_bytes(&[1.0, 2.0, 3.0]);
    let binary_output = |extra: Value| {
        let (body, n) = binary_body(json!([1, 3]), "FP32", &good, extra);
        decode_request(&body, Some(n), &spec(3)).map(|b| b.binary_output)
    };
    assert_eq!(binary_output(json!({})), Ok(false));
    assert_eq!(
        binary_output(json!({"parameters": {"binary_data_output": true}})),
        Ok(true)
    );
    assert_eq!(
        binary_output(json!({"outputs": [{"name": "score", "parameters": {"binary_data": true}}]})),
        Ok(true)
    );
    // The output's own choice overrides the request's default.
    assert_eq!(
        binary_output(json!({"parameters": {"binary_data_output": true},
            "outputs": [{"name": "score", "parameters": {"binary_data": false}}]})),
        Ok(false)
    );
    let e = binary_output(json!({"parameters": {"binary_data_output": 1}})).unwrap_err();
    assert_eq!(e.to_string(), "binary_data_output must be true or false");
    // JSON data asking for a binary answer (the other mixed form).
    let body = json!({"inputs": [{"name": "features", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}],
        "outputs": [{"name": "score", "parameters": {"binary_data": true}}]});
    let batch = decode_infer(body.to_string().as_bytes(), &spec(3)).unwrap();
    assert!(batch.binary_output);
    assert_eq!(batch.data, vec![1.0, 2.0, 3.0]);
}

#[test]
fn binary_answers_carry_the_scores_after_their_header() {
    let scores = [0.25f32, -1.5, 3e-9];
    let (body, n) = encode_infer_response_binary("risk", "3", Some("r"), "score", 3, 1, &scores);
    let header: Value = serde_json::from_slice(&body[..n]).unwrap();
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 12);
    assert!(header["outputs"][0].get("data").is_none());
    assert_eq!(header["outputs"][0]["shape"], json!([3, 1]));
    assert_eq!(&body[n..], &f32_bytes(&scores)[..]);
    let json_answer: Value = serde_json::from_slice(&encode_infer_response(
        "risk",
        "3",
        Some("r"),
        "score",
        3,
        1,
        &scores,
    ))
    .unwrap();
    let mut expected = json_answer.clone();
    expected["outputs"][0]
        .as_object_mut()
        .unwrap()
        .remove("data");
    expected["outputs"][0]["parameters"] = json!({"binary_data_size": 12});
    assert_eq!(header, expected);
}
