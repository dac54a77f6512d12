//! The OIP v2 infer response: one FP32 output, written straight from the scores.

use serde::Serialize;

#[derive(Serialize)]
struct Response<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: [Output<'a>; 1],
}

#[derive(Serialize)]
struct Output<'a> {
    name: &'a str,
    shape: [usize; 2],
    datatype: &'static str,
    data: &'a [f32],
}

/// Encodes an OIP v2 infer response with one FP32 output of shape `[rows, dim]`.
/// `data` holds `rows × dim` values, row-major; non-finite values (which
/// the worker's model never returns) would be written as `null`.
pub fn encode_infer_response(
    model_name: &str,
    version: &str,
    id: Option<&str>,
    output_name: &str,
    rows: usize,
    dim: usize,
    data: &[f32],
) -> Vec<u8> {
    let response = Response {
        model_name,
        model_version: version,
        id,
        outputs: [Output {
            name: output_name,
            shape: [rows, dim],
            datatype: "FP32",
            data,
        }],
    };
    // Strings, integers and floats into a Vec: serde_json has no way to fail here.
    serde_json::to_vec(&response).expect("serialising an infer response cannot fail")
}
