//! OIP v2 infer request decoding by example: every refusal and its message, accepted
//! variants, the batch limit, 10 MB bodies; and the response encoding, decoded back.
//! The property tests are in `decode.rs`.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardline_shared::decode::{DecodeError, InputSpec, decode_infer, encode_infer_response};
use support::{decode, request, spec};

fn err(body: Value, dim: usize) -> String {
    decode(&body, dim)
        .expect_err("the request should be refused")
        .to_string()
}

#[test]
fn refusals_have_clear_messages() {
    let ok = || request(json!([2, 2]), "FP32", json!([1, 2, 3, 4]));
    let cases: Vec<(Value, &str)> = vec![
        (json!({"inputs": []}), "request has no inputs"),
        (json!({"id": "x"}), "missing field `inputs`"),
        (json!([1, 2]), "not valid json"),
        (
            json!({"inputs": [ok()["inputs"][0], ok()["inputs"][0]]}),
            "exactly one input (\"features\"), the request has 2",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}),
            "unknown input \"x\" (this model's input is \"features\")",
        ),
        (
            request(json!([2]), "BYTES", json!(["a", "b"])),
            "datatype BYTES is not supported",
        ),
        (
            request(json!([2]), "BOOL", json!([true, false])),
            "datatype BOOL is not supported",
        ),
        (
            request(json!([2]), "FLOAT32", json!([1, 2])),
            "unknown datatype \"FLOAT32\"",
        ),
        (
            request(json!([2, 3]), "FP32", json!([1, 2, 3, 4, 5, 6])),
            "expected [rows, 2] or [2]",
        ),
        (
            request(json!([-1, 2]), "FP32", json!([1, 2])),
            "does not fit this model",
        ),
        (
            request(json!([1, 1, 2]), "FP32", json!([1, 2])),
            "does not fit this model",
        ),
        (request(json!([0, 2]), "FP32", json!([])), "empty batch"),
        (
            request(json!([5000, 2]), "FP32", json!([1, 2])),
            "batch of 5000 rows exceeds the limit of 4096",
        ),
        (
            request(json!([2, 2]), "FP32", json!([1, 2, 3])),
            "has 3 values but shape [2, 2] needs 4",
        ),
        (
            request(json!([2, 2]), "FP32", json!([1, 2, 3, 4, 5])),
            "more values than shape [2, 2]",
        ),
        (
            request(json!([2, 2]), "FP32", json!([[1, 2], [3]])),
            "row 1 has 1 values, expected 2",
        ),
        (
            request(json!([2, 2]), "FP32", json!([[1, 2], 3, 4])),
            "nesting does not match",
        ),
        (
            request(json!([2, 2]), "FP32", json!([1, 2, [3, 4]])),
            "nesting does not match",
        ),
        (
            request(json!([2]), "FP32", json!([[1, 2]])),
            "nesting does not match",
        ),
        (
            request(json!([1, 2]), "FP32", json!([[[1, 2]]])),
            "nesting does not match",
        ),
        (
            request(json!([2]), "FP32", json!(3)),
            "\"data\" must be an array",
        ),
        (
            request(json!([2]), "FP32", json!([1, "2"])),
            "invalid type: string",
        ),
        (
            request(json!([2]), "FP32", json!([1, null])),
            "invalid type: null",
        ),
        (
            request(json!([2]), "FP32", json!([1, true])),
            "invalid type: boolean",
        ),
        (
            request(json!([2]), "FP32", json!([1, {}])),
            "invalid type: map",
        ),
        (
            request(json!([2]), "FP64", json!([1, 1e300])),
            "1e300 at position 1 is out of f32 range",
        ),
        (
            request(json!([2]), "INT8", json!([1, 128])),
            "128 at position 1 is out of range for datatype INT8",
        ),
        (
            request(json!([2]), "INT8", json!([-129, 1])),
            "-129 at position 0 is out of range",
        ),
        (
            request(json!([2]), "UINT8", json!([1, -1])),
            "-1 at position 1 is out of range",
        ),
        (
            request(json!([2]), "INT32", json!([1, 16_777_217])),
            "beyond ±2^24",
        ),
        (
            request(json!([2]), "INT64", json!([-16_777_217, 1])),
            "beyond ±2^24",
        ),
        (
            request(json!([2]), "UINT64", json!([1, u64::MAX])),
            "beyond ±2^24",
        ),
        (
            request(json!([2]), "INT32", json!([1, 1.5])),
            "1.5 at position 1 is not an integer",
        ),
        (
            json!({"inputs": [{"name": "features", "shape": [2], "datatype": "FP32"}]}),
            "input \"features\" has no data",
        ),
        (
            json!({"inputs": [{"name": "features", "shape": [2], "datatype": "FP32",
                   "parameters": {"binary_data_size": 8}}]}),
            "has binary_data_size but the request has no inference-header-content-length header",
        ),
        (
            json!({"inputs": ok()["inputs"], "outputs": [{"name": "score"}, {"name": "logits"}]}),
            "unknown output \"logits\" (this model's output is \"score\")",
        ),
        (
            json!({"inputs": ok()["inputs"], "id": 7}),
            "invalid type: integer",
        ),
    ];
    for (body, needle) in cases {
        let msg = err(body.clone(), 2);
        assert!(msg.contains(needle), "{body}\n=> {msg}");
        assert!(
            msg.starts_with(|c: char| c.is_lowercase()) && !msg.ends_with('.'),
            "{msg}"
        );
    }
}

#[test]
fn numbers_beyond_f64_are_refused() {
    for data in ["[1, 1e400]", "[1, -1e400]", "[1e39, 1]"] {
        let body = format!(
            r#"{{"inputs":[{{"name":"features","shape":[2],"datatype":"FP32","data":{data}}}]}}"#
        );
        let e = decode_infer(body.as_bytes(), &spec(2)).unwrap_err();
        assert!(
            matches!(e, DecodeError::Data(_) | DecodeError::Value { .. }),
            "{data}: {e}"
        );
    }
}

#[test]
fn accepts_oip_variants() {
    // One row as `[dim]`, integers for FP32, escaped names, null optionals, tiny values.
    let body = br#"{"id": null, "parameters": null, "outputs": null,
        "inputs": [{"name": "feat\u0075res", "shape": [3], "datatype": "FP32",
                    "data": [1, -2, 3.5e-3], "parameters": {"content_type": "np"}}]}"#;
    let batch = decode_infer(body, &spec(3)).unwrap();
    assert_eq!(batch.rows, 1);
    assert_eq!(batch.data, vec![1.0, -2.0, 0.0035]);
    assert_eq!(batch.id, None);
    assert_eq!(batch.requested_outputs, None);

    let body = request(json!([2, 2]), "FP32", json!([[1, 2], [3, 4]]));
    assert_eq!(decode(&body, 2).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    let body = request(json!([2]), "INT32", json!([16_777_216, -16_777_216]));
    assert_eq!(decode(&body, 2).unwrap(), vec![16_777_216.0, -16_777_216.0]);
    let body = request(json!([2]), "INT16", json!([3.0, -0.0]));
    assert_eq!(decode(&body, 2).unwrap(), vec![3.0, 0.0]);
    let body = request(json!([1]), "FP64", json!([3.4e38]));
    assert_eq!(decode(&body, 1).unwrap(), vec![3.4e38f32]);
}

#[test]
fn max_rows_is_a_parameter() {
    let body = request(json!([3, 1]), "FP32", json!([1, 2, 3])).to_string();
    let small = InputSpec {
        max_rows: 2,
        ..spec(1)
    };
    let e = decode_infer(body.as_bytes(), &small).unwrap_err();
    assert_eq!(e, DecodeError::TooManyRows { rows: 3, max: 2 });
    assert_eq!(decode_infer(body.as_bytes(), &spec(1)).unwrap().rows, 3);
}

/// ~10 MB of numbers: a body a client may legitimately send up to the size limit.
fn big_body(shape: &str, values: usize) -> String {
    let mut data = String::with_capacity(values * 4 + 2);
    data.push('[');
    for i in 0..values {
        data.push_str(if i == 0 { "1.5" } else { ",1.5" });
    }
    data.push(']');
    format!(
        r#"{{"inputs":[{{"name":"features","shape":{shape},"datatype":"FP32","data":{data}}}]}}"#
    )
}

fn timed(body: &str, dim: usize) -> (Result<usize, DecodeError>, Duration) {
    let start = Instant::now();
    let out = decode_infer(body.as_bytes(), &spec(dim)).map(|b| b.data.len());
    (out, start.elapsed())
}

#[test]
fn big_bodies_are_refused_quickly() {
    let values = 2_500_000; // 10 MB
    let body = big_body("[100000, 25]", values);
    assert!(body.len() >= 10_000_000);
    let (out, took) = timed(&body, 25);
    assert_eq!(
        out,
        Err(DecodeError::TooManyRows {
            rows: 100_000,
            max: 4096
        })
    );
    assert!(took < Duration::from_secs(2), "too many rows took {took:?}");

    let body = big_body("[4096, 64]", values);
    let (out, took) = timed(&body, 64);
    assert!(
        matches!(
            out,
            Err(DecodeError::TooMuchData {
                expected: 262_144,
                ..
            })
        ),
        "{out:?}"
    );
    assert!(took < Duration::from_secs(2), "too much data took {took:?}");

    let body = big_body("[4096, 64]", values);
    let (out, _) = timed(&body, 63);
    assert!(matches!(out, Err(DecodeError::Shape { .. })), "{out:?}");

    // And the same size, valid, decodes (in well under a second in release builds).
    let body = big_body("[4000, 625]", values);
    let (out, took) = timed(&body, 625);
    assert_eq!(out, Ok(values));
    eprintln!("valid 10 MB body ({values} values) decoded in {took:?}");
    assert!(took < Duration::from_secs(5), "valid 10 MB took {took:?}");
}

#[test]
fn response_encodes_oip_v2() {
    let bytes = encode_infer_response(
        "risk",
        "3",
        Some("req-\"1\""),
        "score",
        2,
        2,
        &[0.25, 1.0, -3.5, 1e-7],
    );
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        v,
        json!({"model_name": "risk", "model_version": "3", "id": "req-\"1\"",
               "outputs": [{"name": "score", "shape": [2, 2], "datatype": "FP32",
                            "data": [0.25, 1.0, -3.5, 1e-7]}]})
    );
    let bytes = encode_infer_response("risk", "3", None, "score", 1, 1, &[0.1]);
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        r#"{"model_name":"risk","model_version":"3","outputs":[{"name":"score","shape":[1,1],"datatype":"FP32","data":[0.1]}]}"#
    );
}

#[test]
fn response_data_decodes_back_exactly() {
    let data: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.731).sin() * 1e3).collect();
    let bytes = encode_infer_response("m", "1", None, "features", 10, 100, &data);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let mut req = v["outputs"][0].clone();
    req["name"] = json!("features");
    let body = json!({"inputs": [req]});
    assert_eq!(decode(&body, 100).unwrap(), data);
}
