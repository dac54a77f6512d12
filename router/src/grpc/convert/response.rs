//! [`from_json`]: a worker's OIP JSON answer as a `ModelInferResponse`.

use bytes::{BufMut as _, Bytes, BytesMut};
use serde::Deserialize;

use crate::grpc::pb::model_infer_response::InferOutputTensor;
use crate::grpc::pb::{InferTensorContents, ModelInferResponse};

#[derive(Deserialize)]
struct Answer {
    model_name: String,
    model_version: String,
    #[serde(default)]
    id: Option<String>,
    outputs: Vec<Output>,
}

#[derive(Deserialize)]
struct Output {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    /// Written by the worker in shortest round-trip form: read back to the same bits.
    data: Vec<f32>,
}

/// The response to a request that sent raw contents (`raw`: answered in
/// `raw_output_contents`, little-endian FP32) or typed ones (`fp32_contents`); `Err`
/// says why the worker's answer is not an FP32 infer response.
pub fn from_json(body: &[u8], raw: bool) -> Result<ModelInferResponse, String> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("worker answer unreadable: {e}"))?;
    let mut response = ModelInferResponse {
        model_name: answer.model_name,
        model_version: answer.model_version,
        id: answer.id.unwrap_or_default(),
        ..ModelInferResponse::default()
    };
    for output in answer.outputs {
        if output.datatype != "FP32" {
            return Err(format!(
                "worker answered datatype {:?}, not FP32",
                output.datatype
            ));
        }
        let contents = if raw {
            let mut bytes = BytesMut::with_capacity(output.data.len() * 4);
            for x in &output.data {
                bytes.put_f32_le(*x);
            }
            response.raw_output_contents.push(Bytes::from(bytes));
            None
        } else {
            Some(InferTensorContents {
                fp32_contents: output.data,
                ..InferTensorContents::default()
            })
        };
        response.outputs.push(InferOutputTensor {
            name: output.name,
            datatype: output.datatype,
            shape: output.shape,
            parameters: Default::default(),
            contents,
        });
    }
    Ok(response)
}
