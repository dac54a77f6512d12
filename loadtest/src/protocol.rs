//! How the load tools talk to a server ([`Protocol`], `--protocol`): OIP v2 REST with
//! JSON tensors, or with binary tensor data both ways (the binary tensor data extension,
//! `tritonclient`'s default), or OIP gRPC (`ModelInfer` with `raw_input_contents`, see
//! [`crate::grpc`]); [`Protocol::payload`] turns a batch of features into what is sent.
//! Pure: no I/O.

use bytes::Bytes;

/// The request encoding a load run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Protocol {
    /// JSON tensors in the body (`"data": [...]`), JSON answers.
    #[default]
    HttpJson,
    /// The features as little-endian FP32 after a JSON header
    /// (`Inference-Header-Content-Length`), and the scores asked back in binary.
    HttpBinary,
    /// `inference.GRPCInferenceService/ModelInfer` over HTTP/2, the features as raw FP32
    /// (`raw_input_contents`), many concurrent calls per connection.
    Grpc,
}

/// What one request carries: its body and the headers that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub body: Bytes,
    pub content_type: &'static str,
    /// The JSON header's length, when binary tensor data follows it.
    pub header_length: Option<usize>,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::HttpJson, Protocol::HttpBinary, Protocol::Grpc];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::HttpJson => "http-json",
            Protocol::HttpBinary => "http-binary",
            Protocol::Grpc => "grpc",
        }
    }

    /// An infer request for input `name` of `rows` rows of `data` (row-major,
    /// `data.len() / rows` wide). For gRPC: the encoded `ModelInferRequest` without its
    /// model name ([`crate::client::RequestSpec::grpc_infer`] adds it and frames it).
    pub fn payload(self, name: &str, rows: usize, data: &[f32]) -> Payload {
        let features = data.len().checked_div(rows).unwrap_or(0);
        match self {
            Protocol::Grpc => Payload {
                body: Bytes::from(prost::Message::encode_to_vec(&crate::grpc::model_infer(
                    name, None, rows, data,
                ))),
                content_type: "application/grpc",
                header_length: None,
            },
            Protocol::HttpJson => {
                let body = serde_json::json!({"inputs": [{
                    "name": name, "shape": [rows, features], "datatype": "FP32", "data": data,
                }]});
                Payload {
                    body: Bytes::from(body.to_string()),
                    content_type: "application/json",
                    header_length: None,
                }
            }
            Protocol::HttpBinary => {
                let header = serde_json::json!({
                    "inputs": [{
                        "name": name, "shape": [rows, features], "datatype": "FP32",
                        "parameters": {"binary_data_size": std::mem::size_of_val(data)},
                    }],
                    "parameters": {"binary_data_output": true},
                });
                let mut body = header.to_string().into_bytes();
                let header_length = body.len();
                body.reserve(std::mem::size_of_val(data));
                for x in data {
                    body.extend_from_slice(&x.to_le_bytes());
                }
                Payload {
                    body: Bytes::from(body),
                    content_type: "application/octet-stream",
                    header_length: Some(header_length),
                }
            }
        }
    }

    /// The headers [`Protocol::payload`]'s body needs besides its length.
    pub fn headers(payload: &Payload) -> Vec<(&'static str, String)> {
        let mut headers = vec![("content-type", payload.content_type.to_owned())];
        if let Some(n) = payload.header_length {
            headers.push(("inference-header-content-length", n.to_string()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use shardline_shared::decode::{InputSpec, decode_request};

    use super::*;

    proptest! {
        /// Every protocol's body decodes, with the worker's own decoder, to the same batch.
        #[test]
        fn every_protocol_carries_the_same_batch(
            rows in 1usize..8,
            features in 1usize..16,
            seed in any::<u64>(),
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let data: Vec<f32> = (0..rows * features).map(|_| rng.f32() - 0.5).collect();
            let spec = InputSpec { name: "x", dim: features, output_name: "y", max_rows: 8 };
            for protocol in [Protocol::HttpJson, Protocol::HttpBinary] {
                let p = protocol.payload("x", rows, &data);
                let batch = decode_request(&p.body, p.header_length, &spec).unwrap();
                prop_assert_eq!(&batch.data, &data, "{}", protocol.name());
                prop_assert_eq!(batch.binary_output, protocol == Protocol::HttpBinary);
            }
        }
    }

    #[test]
    fn binary_is_the_smaller_body() {
        let data = vec![0.123_456_79f32; 64 * 64];
        let json = Protocol::HttpJson.payload("x", 64, &data);
        let binary = Protocol::HttpBinary.payload("x", 64, &data);
        assert!(binary.body.len() < json.body.len() / 2);
        assert_eq!(
            Protocol::headers(&binary),
            [
                ("content-type", "application/octet-stream".to_owned()),
                (
                    "inference-header-content-length",
                    binary.header_length.unwrap().to_string()
                )
            ]
        );
    }
}
