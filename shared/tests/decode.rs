//! OIP v2 infer request decoding, property tests: valid requests round trip, the
//! router's validate-only pass answers exactly as the worker's decode does, and hostile
//! bytes never panic. Examples of every refusal, limits and the response are in
//! `decode_examples.rs`.

mod support;

use proptest::prelude::*;
use serde_json::{Value, json};
use shardline_shared::decode::{DecodeError, decode_infer, validate_infer};
use support::{decode, request, spec};

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
        prop_assert_eq!(batch.has_parameters, body.get("parameters").is_some());
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
