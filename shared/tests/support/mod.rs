//! Helpers shared by the decode test binaries (`shared/tests/decode.rs` and
//! `shared/tests/decode_examples.rs`): the model's input spec and requests built as JSON
//! values.
#![allow(dead_code)] // each test binary uses some of these

use serde_json::{Value, json};
use shardline_shared::decode::{DEFAULT_MAX_ROWS, DecodeError, InputSpec, decode_infer};

/// The spec of a model whose input is `features` (`dim` wide) and output `score`.
pub fn spec(dim: usize) -> InputSpec<'static> {
    InputSpec {
        name: "features",
        dim,
        output_name: "score",
        max_rows: DEFAULT_MAX_ROWS,
    }
}

/// Decodes `body` for [`spec`]`(dim)`; the batch's data.
pub fn decode(body: &Value, dim: usize) -> Result<Vec<f32>, DecodeError> {
    decode_infer(body.to_string().as_bytes(), &spec(dim)).map(|b| b.data)
}

/// A request with one input tensor named `features`.
pub fn request(shape: Value, datatype: &str, data: Value) -> Value {
    json!({"inputs": [{"name": "features", "shape": shape, "datatype": datatype, "data": data}]})
}
