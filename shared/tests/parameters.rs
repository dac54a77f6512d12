//! Free-form `parameters`, property tests: a request with any `parameters` object — the
//! request's, an input's or an output's, of any depth, with numbers of any magnitude —
//! decodes to the same batch as without it, and the router's validate-only pass agrees;
//! a `parameters` that is not an object (or null) is a clear 400 on both.

mod support;

use proptest::prelude::*;
use serde_json::{Value, json};
use shardline_shared::decode::{DecodeError, decode_infer, validate_infer};
use support::{request, spec};

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A `parameters` object as text: any JSON object, or one serde_json would not build a
/// `Value` of (an exponent past `f64`, nesting past its recursion limit, `{"":0}`
/// repeated, repeated keys).
fn parameters_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::btree_map(".{0,6}", any_json(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect()).to_string()),
        "[0-9]{1,40}".prop_map(|e| format!(r#"{{"huge":1e{e},"tiny":-0.5E-{e}}}"#)),
        (1usize..2000).prop_map(|d| format!(r#"{{"deep":{}0{}}}"#, "[".repeat(d), "]".repeat(d))),
        (0usize..500).prop_map(|n| format!("{{{}}}", vec![r#""":{"":0}"#; n].join(","))),
        Just(r#"{"a":1,"a":{"b":[]}}"#.to_owned()),
    ]
}

/// Where a `parameters` object goes.
#[derive(Debug, Clone, Copy)]
enum Place {
    Request,
    Input,
    Output,
}

/// A valid request for a 3-wide model with `parameters` (text) at `place`, and the same
/// request without it.
fn with_parameters(parameters: &str, place: Place) -> (String, String) {
    let tensor = r#"{"name":"features","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]"#;
    let outputs = r#""outputs":[{"name":"score""#;
    let plain = format!(r#"{{"id":"r",{outputs}}}],"inputs":[{tensor}}}]}}"#);
    let with = match place {
        Place::Request => {
            format!(r#"{{"id":"r","parameters":{parameters},{outputs}}}],"inputs":[{tensor}}}]}}"#)
        }
        Place::Input => {
            format!(r#"{{"id":"r",{outputs}}}],"inputs":[{tensor},"parameters":{parameters}}}]}}"#)
        }
        Place::Output => {
            format!(r#"{{"id":"r",{outputs},"parameters":{parameters}}}],"inputs":[{tensor}}}]}}"#)
        }
    };
    (with, plain)
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        Just(Place::Request),
        Just(Place::Input),
        Just(Place::Output)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_parameters_object_decodes_the_same_batch(
        parameters in parameters_text(),
        place in place(),
    ) {
        // The binary tensor data extension's members are the ones that mean something.
        prop_assume!(!parameters.contains("binary_data"));
        let (with, plain) = with_parameters(&parameters, place);
        let spec = spec(3);
        let expected = decode_infer(plain.as_bytes(), &spec).unwrap();
        let got = decode_infer(with.as_bytes(), &spec);
        let got = got.map_err(|e| TestCaseError::fail(format!("{e}: {with}")))?;
        prop_assert_eq!(&got.data, &expected.data);
        prop_assert_eq!(got.rows, expected.rows);
        prop_assert_eq!(&got.id, &expected.id);
        prop_assert_eq!(&got.requested_outputs, &expected.requested_outputs);
        prop_assert_eq!(got.has_parameters, matches!(place, Place::Request));
        prop_assert_eq!(validate_infer(with.as_bytes(), &spec), Ok(()));
    }

    #[test]
    fn parameters_that_are_not_objects_are_refused_alike(
        value in any_json().prop_filter("not an object", |v| !v.is_object() && !v.is_null()),
        place in prop_oneof![Just(Place::Request), Just(Place::Input)],
    ) {
        let (with, _) = with_parameters(&value.to_string(), place);
        let decoded = decode_infer(with.as_bytes(), &spec(3)).map(drop);
        prop_assert!(matches!(decoded, Err(DecodeError::Json(_))), "{decoded:?}: {with}");
        prop_assert_eq!(validate_infer(with.as_bytes(), &spec(3)), decoded);
    }

    #[test]
    fn broken_json_inside_parameters_is_refused_alike(
        parameters in parameters_text(),
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(b"{}[],:\"\\ 0e-x".to_vec()),
        place in place(),
    ) {
        let mut broken = parameters.into_bytes();
        let i = at.index(broken.len());
        broken[i] = byte;
        let broken = String::from_utf8_lossy(&broken);
        let (with, _) = with_parameters(&broken, place);
        let decoded = decode_infer(with.as_bytes(), &spec(3)).map(drop);
        prop_assert_eq!(validate_infer(with.as_bytes(), &spec(3)), decoded.clone());
        // What serde_json refuses as a document is refused here too.
        if serde_json::from_str::<serde::de::IgnoredAny>(&broken).is_err() {
            prop_assert!(matches!(decoded, Err(DecodeError::Json(_))), "{decoded:?}: {with}");
        }
    }
}

#[test]
fn null_parameters_are_absent() {
    let (with, _) = with_parameters("null", Place::Request);
    let batch = decode_infer(with.as_bytes(), &spec(3)).unwrap();
    assert!(!batch.has_parameters);
    let body = request(json!([1, 3]), "FP32", json!([1, 2, 3]));
    assert!(
        !decode_infer(body.to_string().as_bytes(), &spec(3))
            .unwrap()
            .has_parameters
    );
}

#[test]
fn a_parameters_array_gets_a_clear_message() {
    let (with, _) = with_parameters("[1]", Place::Request);
    let e = decode_infer(with.as_bytes(), &spec(3))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected a parameters object"), "{e}");
}
