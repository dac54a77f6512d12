//! Open Inference Protocol v2 (REST) on the worker's hot path: decodes an infer request
//! body into a validated [`InferBatch`], and encodes the response. Pure: bytes in, batch
//! or [`DecodeError`] out; every error is the client's fault (HTTP 400).
//!
//! Decoding runs in two passes so that a hostile body costs little:
//! 1. the envelope (`id`, `parameters`, `inputs`, `outputs`) is parsed with the tensor's
//!    `data` kept as a borrowed, unparsed slice of the body; names, datatype, shape and
//!    batch limit are checked there, before any number is parsed;
//! 2. `data` is streamed through a visitor that knows the datatype and shape: it converts
//!    each number straight into `f32`, accepts flat row-major or `[rows][dim]` nesting,
//!    and stops at the first value past what the shape holds. Nothing builds a
//!    `serde_json::Value` for the data, and memory is bounded by the body's length.
//!
//! Binary tensor data (Triton's and KServe's extension): with an
//! `Inference-Header-Content-Length` of `n`, the body's first `n` bytes are the JSON
//! request and the rest the tensor bytes of the input whose `parameters` carry
//! `binary_data_size` — which must be exactly shape × element width, and exactly what
//! follows the JSON; a request's `binary_data_output` or an output's `binary_data` asks
//! for the answer in binary ([`InferBatch::binary_output`]). Elements are little-endian
//! and converted to `f32` under the same rules as JSON numbers (`raw.rs`).
//!
//! Unknown fields are ignored (OIP allows extensions), and so are the contents of
//! `parameters` objects but for the binary tensor data extension's members: they are
//! checked to be JSON and skipped without building a map or a `Value`, so free-form JSON
//! costs no more memory than its nesting depth. Conversions: `FP32`, `FP64`, `FP16` and
//! `BF16` values must be finite in `f32` (`FP64` rounded to nearest, ties to even);
//! `INT*`/`UINT*` values must be integers within their type and within ±2^24, where
//! every integer is exact in `f32`. `BOOL` and `BYTES` tensors are refused.
//!
//! Layout: the two passes of decoding (the envelope, [`decode_infer`] and
//! [`validate_infer`]) are in `request.rs` and the streaming `data` visitor in
//! `data.rs`; the byte-level shortcut of the validate-only pass in `scan.rs`; what a
//! model accepts ([`InputSpec`]) and what decoding yields ([`InferBatch`]) in `spec.rs`;
//! the refusals ([`DecodeError`]) in `error.rs`; the response in `response.rs`.

mod data;
mod error;
mod raw;
mod request;
mod response;
mod scan;
mod spec;

pub use error::DecodeError;
pub use request::{
    decode_infer, decode_request, parse_header_length, validate_infer, validate_request,
};
pub use response::{encode_infer_response, encode_infer_response_binary};
pub use spec::{DEFAULT_MAX_ROWS, InferBatch, InputSpec, check_shape};

/// The header giving the length of a request's or answer's JSON part when binary tensor
/// data follows it (the binary tensor data extension), lowercase as HTTP/2 and hyper
/// write header names.
pub const INFERENCE_HEADER: &str = "inference-header-content-length";
