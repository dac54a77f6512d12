//! Fuzz-style property tests of the body validator: arbitrary bytes, JSON token soup and
//! edited valid requests go through the router's validate-only pass (with its byte-level
//! shortcut, `scan.rs`) and the worker's full decoder — never a panic, never a different
//! answer — and whatever the decoder accepts holds the tensor an independent reading of
//! the same JSON (`serde_json::Value`) finds.
#![allow(clippy::unwrap_used)]

mod support;

use proptest::prelude::*;
use serde_json::Value;
use shardline_shared::decode::{decode_infer, validate_infer};
use support::spec;

const DIM: usize = 3;

/// Checks one body: same answer both ways, and an accepted one read alike by serde_json.
fn agrees(body: &[u8]) -> Result<(), TestCaseError> {
    let shown = || String::from_utf8_lossy(body).into_owned();
    let decoded = decode_infer(body, &spec(DIM));
    prop_assert_eq!(
        validate_infer(body, &spec(DIM)),
        decoded.clone().map(drop),
        "{}",
        shown()
    );
    if let Ok(batch) = decoded {
        let reference = reference(body).ok_or_else(|| {
            TestCaseError::fail(format!("accepted, but not by the reference: {}", shown()))
        })?;
        prop_assert_eq!(batch.rows, reference.0, "{}", shown());
        prop_assert_eq!(batch.data, reference.1, "{}", shown());
    }
    Ok(())
}

/// The tensor of a body that is a JSON object with one float input tensor, read by
/// `serde_json::Value` (the last of repeated keys wins, as in serde_json's maps): its
/// rows and its values, flat, as `f32`. `None` for anything else.
fn reference(body: &[u8]) -> Option<(usize, Vec<f32>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let inputs = v.get("inputs")?.as_array()?;
    let [tensor] = inputs.as_slice() else {
        return None;
    };
    let shape: Vec<u64> = tensor["shape"]
        .as_array()?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<_>>()?;
    let rows = match shape.as_slice() {
        [d] if *d == DIM as u64 => 1,
        [r, d] if *d == DIM as u64 => usize::try_from(*r).ok()?,
        _ => return None,
    };
    let mut values = Vec::new();
    for item in tensor["data"].as_array()? {
        match item {
            Value::Array(row) => {
                for x in row {
                    values.push(x.as_f64()? as f32);
                }
            }
            x => values.push(x.as_f64()? as f32),
        }
    }
    (values.len() == rows * DIM && values.iter().all(|x| x.is_finite())).then_some((rows, values))
}

/// Tokens a JSON infer body is made of, and some that break it.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "{", "}", "[", "]", ",", ":", " ", "\"inputs\"", "\"name\"", "\"features\"",
            "\"shape\"", "\"datatype\"", "\"FP32\"", "\"FP16\"", "\"INT8\"", "\"data\"",
            "\"parameters\"", "\"id\"", "\"outputs\"", "\"score\"", "null", "true", "1", "3",
            "-0", "2.5", "1e39", "1e-999", "\"\\u0000\"", "\"", "\\",
        ])
        .prop_map(str::to_owned),
        1 => "-?[0-9]{1,3}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
    ]
}

/// A valid request for a 3-wide model, in one of the shapes clients send.
fn valid() -> impl Strategy<Value = String> {
    (
        1usize..4,
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(-1.0e3f32..1.0e3, 12),
    )
        .prop_map(|(rows, nested, extras, xs)| {
            let xs = &xs[..rows * DIM];
            let data = if nested {
                let rows: Vec<String> = xs.chunks(DIM).map(|r| format!("{r:?}")).collect();
                format!("[{}]", rows.join(","))
            } else {
                format!("{xs:?}")
            };
            let extra = if extras {
                r#""id":"r","parameters":{"a":[{"":0}]},"outputs":[{"name":"score"}],"#
            } else {
                ""
            };
            format!(
                r#"{{{extra}"inputs":[{{"name":"features","shape":[{rows},{DIM}],"datatype":"FP32","data":{data}}}]}}"#
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_disagree(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        agrees(&bytes)?;
    }

    #[test]
    fn token_soup_never_disagrees(tokens in prop::collection::vec(token(), 0..48)) {
        agrees(tokens.concat().as_bytes())?;
    }

    #[test]
    fn edited_valid_requests_never_disagree(
        body in valid(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, token()), 0..3),
    ) {
        let mut body = body;
        for (at, how, token) in edits {
            let mut i = at.index(body.len() + 1);
            while !body.is_char_boundary(i) {
                i -= 1;
            }
            match how {
                0 => body.insert_str(i, &token),
                1 => {
                    let end = (i + token.len()).min(body.len());
                    let end = (end..=body.len()).find(|&e| body.is_char_boundary(e)).unwrap();
                    body.replace_range(i..end, &token);
                }
                _ => body.truncate(i),
            }
        }
        agrees(body.as_bytes())?;
    }

    #[test]
    fn valid_requests_are_accepted_and_read_alike(body in valid()) {
        prop_assert!(decode_infer(body.as_bytes(), &spec(DIM)).is_ok(), "{}", body);
        agrees(body.as_bytes())?;
    }
}
