//! Why a request body was refused: [`DecodeError`], worded for the client.

use super::INFERENCE_HEADER;

/// Why a request body was refused. All variants are client errors (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("request body is not valid json: {0}")]
    Json(String),
    #[error("request has no inputs")]
    NoInputs,
    #[error("this model takes exactly one input ({expected:?}), the request has {got}")]
    InputCount { expected: String, got: usize },
    /// `got` is the client's name, quoted and bounded ([`crate::echo`]).
    #[error("unknown input {got} (this model's input is {expected:?})")]
    InputName { got: String, expected: String },
    #[error("datatype {0} is not supported (this model takes numeric tensors, e.g. FP32)")]
    UnsupportedDatatype(String),
    /// Quoted and bounded ([`crate::echo`]).
    #[error("unknown datatype {0}")]
    UnknownDatatype(String),
    #[error("input shape {shape:?} does not fit this model (expected [rows, {dim}] or [{dim}])")]
    Shape { shape: Vec<i64>, dim: usize },
    #[error("empty batch (input shape {0:?} has no rows)")]
    EmptyBatch(Vec<i64>),
    #[error("batch of {rows} rows exceeds the limit of {max} rows per request")]
    TooManyRows { rows: usize, max: usize },
    /// Quoted and bounded ([`crate::echo`]).
    #[error("{INFERENCE_HEADER} {0} is not a number of bytes")]
    HeaderLength(String),
    #[error("{INFERENCE_HEADER} is {header} bytes but the body has only {body}")]
    HeaderBeyondBody { header: usize, body: usize },
    #[error("binary_data_size of input {0:?} must be a non-negative integer")]
    BinaryDataSize(String),
    #[error("{0} must be true or false")]
    Flag(&'static str),
    #[error("input {0:?} has both \"data\" and binary_data_size; send one")]
    BinaryAndData(String),
    #[error("input {0:?} has binary_data_size but the request has no {INFERENCE_HEADER} header")]
    NoInferenceHeader(String),
    #[error(
        "input binary_data_size is {got} bytes but shape {shape:?} of {datatype} needs {expected}"
    )]
    BinarySize {
        got: u64,
        expected: u128,
        datatype: &'static str,
        shape: Vec<i64>,
    },
    #[error(
        "binary data of the inputs ({need} bytes) goes beyond the body ({have} bytes after the \
         inference header)"
    )]
    BinaryBeyondBody { need: u64, have: usize },
    #[error("{0} bytes after the inference header belong to no input")]
    TrailingBytes(usize),
    #[error("input data is {got} bytes of {datatype} data, the shape needs {expected}")]
    RawLength {
        got: usize,
        expected: u128,
        datatype: &'static str,
    },
    #[error("input {0:?} has no data")]
    MissingData(String),
    #[error("input data has {got} values but shape {shape:?} needs {expected}")]
    DataLength {
        got: usize,
        expected: usize,
        shape: Vec<i64>,
    },
    #[error("input data has more values than shape {shape:?} holds ({expected})")]
    TooMuchData { expected: usize, shape: Vec<i64> },
    #[error("input data row {row} has {got} values, expected {dim}")]
    RowLength { row: usize, got: usize, dim: usize },
    #[error("input data nesting does not match shape {0:?} (send it flat or as [rows][dim])")]
    Nesting(Vec<i64>),
    #[error("input value {value} at position {index} is {reason} for datatype {datatype}")]
    Value {
        index: usize,
        value: String,
        datatype: &'static str,
        reason: &'static str,
    },
    #[error("input data is not valid: {0}")]
    Data(String),
    /// `got` is the client's name, quoted and bounded ([`crate::echo`]).
    #[error("unknown output {got} (this model's output is {expected:?})")]
    OutputName { got: String, expected: String },
}

/// Longest library error message quoted to a client: serde's messages quote the
/// offending value whole (`invalid type: string "…64 KiB…"`).
pub(super) const MAX_REASON_BYTES: usize = 200;

/// A serde_json error about the client's body, bounded.
pub(super) fn bounded_reason(e: &serde_json::Error) -> String {
    crate::echo::bounded(&e.to_string(), MAX_REASON_BYTES)
}
