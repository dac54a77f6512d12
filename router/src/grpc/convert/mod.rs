//! Pure conversions between the gRPC messages and the OIP JSON workers take today:
//! [`to_json`] turns a `ModelInferRequest` (typed `contents` or little-endian
//! `raw_input_contents`) into the body a worker decodes, checked the way the HTTP path
//! checks a JSON body — with the same messages — plus what only gRPC can get wrong (raw
//! contents of the wrong length, typed and raw contents mixed); [`from_json`] turns the
//! worker's answer back into a `ModelInferResponse`, with `raw_output_contents` when
//! the request used raw inputs (as Triton does) and typed contents otherwise.
//!
//! Floating-point inputs (FP32, FP64, FP16, BF16) become `f32` here — FP64 rounded to
//! nearest, as the worker's decoder rounds a JSON number — and are written in their
//! shortest round-trip form (serde_json's), which the worker parses back to the same
//! bits: a score over gRPC equals the score of the same `f32` rows over HTTP. Integer
//! inputs are written as the integers they are, under their own datatype, so the
//! worker's decoder applies its own range rules to them.
//!
//! Layout: the request in `request.rs` (with the element readers in `elements.rs`), the
//! answer in `response.rs`, property and hostile-input tests in `tests.rs`.

mod elements;
mod request;
mod response;

#[cfg(test)]
mod tests;

pub use self::request::{Converted, json_bound, to_json};
pub use self::response::from_json;
