//! gRPC as the load tools speak it (`--protocol grpc`): a `ModelInfer` call of the Open
//! Inference Protocol's `inference.GRPCInferenceService` with its features as
//! `raw_input_contents` (little-endian FP32), built with the generated messages of
//! `shardline-proto` and framed once ([`frame`]), so that every call sends the same bytes,
//! as the HTTP protocols do; and the answer read back ([`outcome`], [`scores`]). A leaf:
//! pure, no I/O; [`crate::client`] sends the bytes over HTTP/2.

use bytes::{BufMut as _, Bytes, BytesMut};
use http::HeaderMap;
use prost::Message as _;
use shardline_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use shardline_proto::inference::{ModelInferRequest, ModelInferResponse};

/// The length-prefixed message header: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// A `ModelInfer` request without its model name: input `name` of `rows` rows of `data`
/// (row-major, `data.len() / rows` wide) as raw FP32, and output `output` asked back.
pub fn model_infer(
    name: &str,
    output: Option<&str>,
    rows: usize,
    data: &[f32],
) -> ModelInferRequest {
    let features = data.len().checked_div(rows).unwrap_or(0);
    let mut raw = Vec::with_capacity(std::mem::size_of_val(data));
    for x in data {
        raw.extend_from_slice(&x.to_le_bytes());
    }
    ModelInferRequest {
        inputs: vec![InferInputTensor {
            name: name.to_owned(),
            datatype: "FP32".to_owned(),
            shape: vec![rows as i64, features as i64],
            ..InferInputTensor::default()
        }],
        outputs: output
            .map(|o| InferRequestedOutputTensor {
                name: o.to_owned(),
                ..InferRequestedOutputTensor::default()
            })
            .into_iter()
            .collect(),
        raw_input_contents: vec![Bytes::from(raw)],
        ..ModelInferRequest::default()
    }
}

/// `message` (an encoded `ModelInferRequest`, as [`crate::protocol::Protocol::payload`]
/// gives it) for `model`, framed as a gRPC request body.
pub fn call_body(message: &[u8], model: &str) -> Result<Bytes, prost::DecodeError> {
    let mut request = ModelInferRequest::decode(message)?;
    request.model_name = model.to_owned();
    Ok(frame(&request.encode_to_vec()))
}

/// `message` behind the 5-byte gRPC prefix (uncompressed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(PREFIX + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// The one message of a unary answer's body.
pub fn unframe(body: &[u8]) -> Result<&[u8], String> {
    let Some((head, rest)) = body.split_first_chunk::<PREFIX>() else {
        return Err(format!(
            "a gRPC body of {} bytes has no message",
            body.len()
        ));
    };
    if head[0] != 0 {
        return Err("a compressed gRPC message (none was asked for)".to_owned());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    rest.get(..len)
        .filter(|_| rest.len() == len)
        .ok_or_else(|| format!("a gRPC message of {len} bytes in {} bytes", rest.len()))
}

/// How a finished call went, from its `grpc-status` (in the trailers, or in the headers of
/// a trailers-only answer): `Ok` for OK, else the HTTP status the same refusal has on the
/// REST API and `grpc-status N: message`, so that reports count both protocols alike.
pub fn outcome(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Result<(), (u16, String)> {
    let get = |name: &str| {
        trailers
            .and_then(|t| t.get(name))
            .or_else(|| headers.get(name))
            .and_then(|v| v.to_str().ok())
    };
    let Some(code) = get("grpc-status") else {
        return Err((502, "an answer without grpc-status".to_owned()));
    };
    match code.parse::<i32>() {
        Ok(0) => Ok(()),
        Ok(code) => Err((
            http_status(code),
            format!("grpc-status {code}: {}", get("grpc-message").unwrap_or("")),
        )),
        Err(_) => Err((502, format!("grpc-status {code:?} is not a number"))),
    }
}

/// The REST API's status for a gRPC status code (the router's mapping, reversed).
pub fn http_status(code: i32) -> u16 {
    match code {
        3 | 9 | 11 => 400, // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
        16 => 401,         // UNAUTHENTICATED
        7 => 403,          // PERMISSION_DENIED
        5 => 404,          // NOT_FOUND
        8 => 429,          // RESOURCE_EXHAUSTED
        12 => 501,         // UNIMPLEMENTED
        14 => 503,         // UNAVAILABLE
        4 => 504,          // DEADLINE_EXCEEDED
        1 => 499,          // CANCELLED
        _ => 500,
    }
}

/// The scores of a `ModelInfer` answer's body: its first raw output as little-endian
/// FP32 (FP64 when its datatype says so, as MLServer answers), else its first output's
/// `fp32_contents` or `fp64_contents`.
pub fn scores(body: &[u8]) -> Result<Vec<f64>, String> {
    let answer = ModelInferResponse::decode(unframe(body)?).map_err(|e| e.to_string())?;
    let first = answer.outputs.first();
    if let Some(raw) = answer.raw_output_contents.first() {
        return if first.is_some_and(|o| o.datatype == "FP64") {
            if raw.len() % 8 != 0 {
                return Err(format!("a raw FP64 output of {} bytes", raw.len()));
            }
            Ok(raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect())
        } else {
            if raw.len() % 4 != 0 {
                return Err(format!("a raw FP32 output of {} bytes", raw.len()));
            }
            Ok(raw
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect())
        };
    }
    let contents = first
        .and_then(|o| o.contents.as_ref())
        .ok_or_else(|| "an answer without outputs".to_owned())?;
    if contents.fp64_contents.is_empty() {
        Ok(contents
            .fp32_contents
            .iter()
            .map(|&x| f64::from(x))
            .collect())
    } else {
        Ok(contents.fp64_contents.clone())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use shardline_proto::inference::InferTensorContents;
    use shardline_proto::inference::model_infer_response::InferOutputTensor;

    use super::*;

    proptest! {
        /// A framed call carries the model, the shape and every feature bit for bit.
        #[test]
        fn calls_carry_the_batch(rows in 1usize..8, features in 1usize..16, seed in any::<u64>()) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let data: Vec<f32> = (0..rows * features).map(|_| rng.f32() - 0.5).collect();
            let message = model_infer("x", Some("y"), rows, &data).encode_to_vec();
            let body = call_body(&message, "m").unwrap();
            let call = ModelInferRequest::decode(unframe(&body).unwrap()).unwrap();
            prop_assert_eq!(&call.model_name, "m");
            prop_assert_eq!(&call.inputs[0].shape, &vec![rows as i64, features as i64]);
            prop_assert_eq!(&call.outputs[0].name, "y");
            let raw: Vec<f32> = call.raw_input_contents[0]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            prop_assert_eq!(raw, data);
        }

        /// Unframing never panics, and accepts exactly one whole uncompressed message.
        #[test]
        fn unframing_refuses_what_is_not_one_message(body in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(m) = unframe(&body) {
                prop_assert_eq!(body[0], 0);
                prop_assert_eq!(m.len() + PREFIX, body.len());
            }
        }
    }

    #[test]
    fn answers_read_raw_or_typed_scores() {
        let raw = ModelInferResponse {
            raw_output_contents: vec![Bytes::from([0.5f32, -2.0].map(f32::to_le_bytes).concat())],
            ..ModelInferResponse::default()
        };
        assert_eq!(scores(&frame(&raw.encode_to_vec())), Ok(vec![0.5, -2.0]));
        let raw64 = ModelInferResponse {
            outputs: vec![InferOutputTensor {
                datatype: "FP64".into(),
                ..InferOutputTensor::default()
            }],
            raw_output_contents: vec![Bytes::from(0.1f64.to_le_bytes().to_vec())],
            ..ModelInferResponse::default()
        };
        assert_eq!(scores(&frame(&raw64.encode_to_vec())), Ok(vec![0.1]));
        let typed64 = ModelInferResponse {
            outputs: vec![InferOutputTensor {
                contents: Some(InferTensorContents {
                    fp64_contents: vec![0.3],
                    ..InferTensorContents::default()
                }),
                ..InferOutputTensor::default()
            }],
            ..ModelInferResponse::default()
        };
        assert_eq!(scores(&frame(&typed64.encode_to_vec())), Ok(vec![0.3]));
        let typed = ModelInferResponse {
            outputs: vec![InferOutputTensor {
                contents: Some(InferTensorContents {
                    fp32_contents: vec![1.25],
                    ..InferTensorContents::default()
                }),
                ..InferOutputTensor::default()
            }],
            ..ModelInferResponse::default()
        };
        assert_eq!(scores(&frame(&typed.encode_to_vec())), Ok(vec![1.25]));
        assert!(scores(&frame(&ModelInferResponse::default().encode_to_vec())).is_err());
        assert!(scores(&[1, 0, 0, 0, 0]).is_err());
        assert!(scores(&[0, 0, 0, 0, 9, 1]).is_err());
    }

    #[test]
    fn statuses_from_trailers_or_headers() {
        let map = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        let none = HeaderMap::new();
        assert_eq!(outcome(&none, Some(&map(&[("grpc-status", "0")]))), Ok(()));
        assert_eq!(
            outcome(
                &map(&[("grpc-status", "16"), ("grpc-message", "bad key")]),
                None
            ),
            Err((401, "grpc-status 16: bad key".to_owned()))
        );
        assert_eq!(
            outcome(&none, Some(&map(&[("grpc-status", "8")]))),
            Err((429, "grpc-status 8: ".to_owned()))
        );
        assert_eq!(outcome(&none, None).unwrap_err().0, 502);
        assert_eq!(
            outcome(&map(&[("grpc-status", "x")]), None).unwrap_err().0,
            502
        );
        assert_eq!(
            (http_status(3), http_status(14), http_status(4)),
            (400, 503, 504)
        );
    }
}
