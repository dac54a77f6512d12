//! Why a request body was refused: [`DecodeError`], worded for the client.

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
    #[error("binary tensor data is not supported: send \"data\" as json")]
    BinaryData,
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
