//! The OIP v2 infer response: one FP32 output, written straight from the scores — as
//! JSON, or as a JSON header followed by the scores' bytes (the binary tensor data
//! extension: little-endian `f32`, row-major, the header's length in the answer's
//! `Inference-Header-Content-Length`).

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
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<OutputParameters>,
}

#[derive(Serialize)]
struct OutputParameters {
    binary_data_size: usize,
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
            data: Some(data),
            parameters: None,
        }],
    };
    // Strings, integers and floats into a Vec: serde_json has no way to fail here.
    serde_json::to_vec(&response).expect("serialising an infer response cannot fail")
}

/// Encodes an OIP v2 infer response with one FP32 output of shape `[rows, dim]` in
/// binary: returns the body (a JSON header whose output carries
/// `"parameters":{"binary_data_size":…}` and no `data`, then `data` as little-endian
/// `f32`) and the header's length, for `Inference-Header-Content-Length`.
pub fn encode_infer_response_binary(
    model_name: &str,
    version: &str,
    id: Option<&str>,
    output_name: &str,
    rows: usize,
    dim: usize,
    data: &[f32],
) -> (Vec<u8>, usize) {
    let response = Response {
        model_name,
        model_version: version,
        id,
        outputs: [Output {
            name: output_name,
            shape: [rows, dim],
            datatype: "FP32",
            data: None,
            parameters: Some(OutputParameters {
                binary_data_size: std::mem::size_of_val(data),
            }),
        }],
    };
    let mut body =
        serde_json::to_vec(&response).expect("serialising an infer response cannot fail");
    let header_length = body.len();
    body.reserve(std::mem::size_of_val(data));
    for x in data {
        body.extend_from_slice(&x.to_le_bytes());
    }
    (body, header_length)
}
