//! OIP v2 infer request decoding: round trips, every refusal, and hostile bodies.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};
use shardline_shared::decode::{
    DEFAULT_MAX_ROWS, DecodeError, InputSpec, decode_infer, encode_infer_response, validate_infer,
};

fn spec(dim: usize) -> InputSpec<'static> {
    InputSpec {
        name: "features",
        dim,
        output_name: "score",
        max_rows: DEFAULT_MAX_ROWS,
    }
}

fn decode(body: &Value, dim: usize) -> Result<Vec<f32>, DecodeError> {
    decode_infer(body.to_string().as_bytes(), &spec(dim)).map(|b| b.data)
}

fn request(shape: Value, datatype: &str, data: Value) -> Value {
    json!({"inputs": [{"name": "features", "shape": shape, "datatype": datatype, "data": data}]})
}

fn err(body: Value, dim: usize) -> String {
    decode(&body, dim)
        .expect_err("the request should be refused")
        .to_string()
}

/// How a generated request lays out its data.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Flat,
    Nested,
    /// Shape `[dim]`, a single row.
    OneRow,
}

const INT_TYPES: [(&str, i64, i64); 8] = [
    ("INT8", -128, 127),
    ("INT16", -32_768, 32_767),
    ("INT32", -(1 << 24), 1 << 24),
    ("INT64", -(1 << 24), 1 << 24),
    ("UINT8", 0, 255),
    ("UINT16", 0, 65_535),
    ("UINT32", 0, 1 << 24),
    ("UINT64", 0, 1 << 24),
];

/// A datatype name and `(json value, expected f32)` pairs valid for it.
fn typed_values(n: usize) -> impl Strategy<Value = (String, Vec<(Value, f32)>)> {
    let fp32 = prop::collection::vec(-1.0e6f32..1.0e6, n).prop_map(|v| {
        (
            "FP32".to_owned(),
            v.into_iter().map(|x| (json!(x), x)).collect(),
        )
    });
    let fp64 = (
        prop::sample::select(vec!["FP64", "FP16", "BF16"]),
        prop::collection::vec(-1.0e30f64..1.0e30, n),
    )
        .prop_map(|(t, v)| {
            let pairs = v.into_iter().map(|x| (json!(x), x as f32)).collect();
            (t.to_owned(), pairs)
        });
    let ints = prop::sample::select(&INT_TYPES[..]).prop_flat_map(move |(t, lo, hi)| {
        prop::collection::vec(lo..=hi, n).prop_map(move |v| {
            (
                t.to_owned(),
                v.into_iter().map(|x| (json!(x), x as f32)).collect(),
            )
        })
    });
    prop_oneof![fp32, fp64, ints]
}

/// A valid request: rows, dim, layout, datatype, values; plus the expected data.
fn valid_request() -> impl Strategy<Value = (Value, usize, usize, Vec<f32>)> {
    (1usize..8, 1usize..16, 0..3u8).prop_flat_map(|(rows, dim, layout)| {
        let layout = match layout {
            0 => Layout::Flat,
            1 => Layout::Nested,
            _ if rows == 1 => Layout::OneRow,
            _ => Layout::Flat,
        };
        (
            typed_values(rows * dim),
            any::<Option<String>>(),
            any::<bool>(),
        )
            .prop_map(move |((dtype, values), id, extras)| {
                let expected: Vec<f32> = values.iter().map(|(_, x)| *x).collect();
                let flat: Vec<Value> = values.into_iter().map(|(v, _)| v).collect();
                let (shape, data) = match layout {
                    Layout::Flat => (json!([rows, dim]), Value::Array(flat)),
                    Layout::OneRow => (json!([dim]), Value::Array(flat)),
                    Layout::Nested => {
                        let nested = flat.chunks(dim).map(|r| Value::Array(r.to_vec()));
                        (json!([rows, dim]), Value::Array(nested.collect()))
                    }
                };
                let mut body = request(shape, &dtype, data);
                if let Some(id) = id {
                    body["id"] = json!(id);
                }
                if extras {
                    body["parameters"] = json!({"priority": 1});
                    body["outputs"] = json!([{"name": "score", "parameters": {"x": true}}]);
                    body["extension_field"] = json!({"ignored": [1, 2]});
                    body["inputs"][0]["parameters"] = json!({"content_type": "np"});
                }
                (body, rows, dim, expected)
            })
    })
}

/// A JSON number token of any magnitude, or now and then a value that is not a number.
fn data_token() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "-?(0|[1-9][0-9]{0,45})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,4})?",
        1 => prop::sample::select(vec!["[1]", "\"1\"", "null", "true", "[]", "{}"])
            .prop_map(str::to_owned),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The validate-only pass has a byte-level shortcut for the common body (any key
    /// order and spacing, an optional id); on such bodies, whole or with one byte
    /// changed or cut short, it answers exactly as the full decode does.
    #[test]
    fn validation_shortcut_matches_decoding_on_plain_bodies(
        rows in 1usize..4,
        dim in 1usize..6,
        values in prop::collection::vec(-1.0e6f32..1.0e6, 24),
        order in Just([0usize, 1, 2, 3]).prop_shuffle(),
        id in prop::option::of("[a-z0-9-]{0,8}"),
        dtype in prop::sample::select(vec!["FP32", "FP64", "FP16", "BF16", "INT8"]),
        space in prop::sample::select(vec!["", " ", "\n\t "]),
        mutate in prop::option::of((any::<prop::sample::Index>(), any::<u8>(), any::<bool>())),
    ) {
        let data: Vec<String> = values[..rows * dim].iter().map(|v| format!("{v:?}")).collect();
        let fields = [
            format!(r#""name"{space}:{space}"features""#),
            format!(r#""shape":[{rows},{space}{dim}]"#),
            format!(r#""datatype":"{dtype}""#),
            format!(r#""data":{space}[{}]"#, data.join(&format!(",{space}"))),
        ];
        let tensor: Vec<&str> = order.iter().map(|&i| fields[i].as_str()).collect();
        let id = id.map(|id| format!(r#""id":"{id}",{space}"#)).unwrap_or_default();
        let body = format!(
            r#"{space}{{{id}"inputs":{space}[{{{}}}]}}{space}"#,
            tensor.join(&format!(",{space}"))
        );
        let mut bytes = body.into_bytes();
        if let Some((at, byte, cut)) = mutate {
            let i = at.index(bytes.len());
            if cut { bytes.truncate(i) } else { bytes[i] = byte }
        }
        let decoded = decode_infer(&bytes, &spec(dim));
        prop_assert_eq!(
            validate_infer(&bytes, &spec(dim)),
            decoded.map(drop),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }

    /// The validate-only pass has a shortcut for flat arrays of plain numbers; whatever
    /// the numbers (huge, tiny, exponents near f32's range) and whatever else sits in
    /// the array, it answers exactly as the full decode does.
    #[test]
    fn validation_of_any_numbers_matches_decoding(
        tokens in prop::collection::vec(data_token(), 0..10),
        dtype in prop::sample::select(vec!["FP32", "FP64", "FP16", "INT32"]),
        extra in 0usize..2,
        spaced in any::<bool>(),
    ) {
        let dim = tokens.len().saturating_sub(extra).max(1);
        let sep = if spaced { " ,\n " } else { "," };
        let body = format!(
            r#"{{"inputs":[{{"name":"features","shape":[1,{dim}],"datatype":"{dtype}","data":[{}]}}]}}"#,
            tokens.join(sep)
        );
        let decoded = decode_infer(body.as_bytes(), &spec(dim));
        prop_assert_eq!(validate_infer(body.as_bytes(), &spec(dim)), decoded.map(drop), "{}", body);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_infer(&bytes, &spec(3));
    }

    /// Valid requests with one byte changed or cut short never panic.
    #[test]
    fn mutated_requests_never_panic(
        (body, _rows, dim, _) in valid_request(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let mut bytes = body.to_string().into_bytes();
        let i = at.index(bytes.len());
        if cut { bytes.truncate(i) } else { bytes[i] = byte }
        let decoded = decode_infer(&bytes, &spec(dim));
        // The router's validate-only pass refuses exactly what the worker's decoder
        // refuses, with the same error.
        prop_assert_eq!(validate_infer(&bytes, &spec(dim)), decoded.map(drop));
    }

    #[test]
    fn valid_requests_round_trip((body, rows, dim, expected) in valid_request()) {
        let batch = decode_infer(body.to_string().as_bytes(), &spec(dim)).unwrap();
        prop_assert_eq!(validate_infer(body.to_string().as_bytes(), &spec(dim)), Ok(()));
        prop_assert_eq!(batch.rows, rows);
        prop_assert_eq!(&batch.data, &expected);
        prop_assert_eq!(batch.id.as_deref(), body["id"].as_str());
        prop_assert_eq!(batch.parameters.is_some(), body.get("parameters").is_some());
        let outputs = batch.requested_outputs.map(|o| o.join(","));
        prop_assert_eq!(outputs.as_deref(), body.get("outputs").map(|_| "score"));
    }

    #[test]
    fn dropping_or_adding_a_value_is_refused(
        (mut body, _rows, dim, _) in valid_request(),
        at in any::<prop::sample::Index>(),
        add in any::<bool>(),
    ) {
        let data = &mut body["inputs"][0]["data"];
        // Nested: change one row; flat: change the array itself.
        let target = match data.as_array().map(|a| a[0].is_array()) {
            Some(true) => {
                let rows = data.as_array_mut().unwrap();
                let i = at.index(rows.len());
                &mut rows[i]
            }
            _ => data,
        };
        let values = target.as_array_mut().unwrap();
        if add {
            values.push(json!(1));
        } else {
            values.remove(at.index(values.len()));
        }
        let e = decode(&body, dim).unwrap_err();
        prop_assert!(matches!(
            e,
            DecodeError::DataLength { .. } | DecodeError::TooMuchData { .. } | DecodeError::RowLength { .. }
        ), "{e}");
    }

    #[test]
    fn wrong_datatype_name_or_dim_is_refused(
        (body, _rows, dim, _) in valid_request(),
        which in 0..5u8,
    ) {
        let mut body = body;
        let mut dim_seen = dim;
        match which {
            0 => body["inputs"][0]["datatype"] = json!("BYTES"),
            1 => body["inputs"][0]["datatype"] = json!("BOOL"),
            2 => body["inputs"][0]["name"] = json!("input0"),
            3 => body["outputs"] = json!([{"name": "probabilities"}]),
            _ => dim_seen = dim + 1,
        }
        prop_assert!(decode(&body, dim_seen).is_err());
    }
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
            "binary tensor data is not supported",
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
