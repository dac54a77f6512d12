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
//! Unknown fields are ignored (OIP allows extensions). Conversions: `FP32`, `FP64`,
//! `FP16` and `BF16` values must be finite in `f32`; `INT*`/`UINT*` values must be
//! integers within their type and within ±2^24, where every integer is exact in `f32`.
//! `BOOL` and `BYTES` tensors are refused.

mod scan;

use std::borrow::Cow;
use std::fmt;

use crate::manifest::ModelConfig;
use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A sensible default for [`InputSpec::max_rows`].
pub const DEFAULT_MAX_ROWS: usize = 4096;

/// 2^24: every integer of at most this magnitude is exact in `f32`.
const MAX_EXACT_INT: u64 = 1 << 24;

/// What a request must look like to be scored by one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec<'a> {
    /// The model's input tensor name (`config.input.name`).
    pub name: &'a str,
    /// Width of one row (`config.input.dim`).
    pub dim: usize,
    /// The model's only output (`config.output.name`); requested outputs must name it.
    pub output_name: &'a str,
    /// Largest batch accepted in one request.
    pub max_rows: usize,
}

impl<'a> InputSpec<'a> {
    /// The spec of a model built from `config`.
    pub fn for_model(config: &'a ModelConfig, max_rows: usize) -> Self {
        Self {
            name: &config.input.name,
            dim: config.input.dim,
            output_name: &config.output.name,
            max_rows,
        }
    }
}

/// A decoded, validated infer request: `rows × dim` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct InferBatch {
    /// The request's `id`, echoed in the response.
    pub id: Option<String>,
    pub rows: usize,
    pub data: Vec<f32>,
    /// Names from `outputs`, all equal to the model's output name; `None` when the
    /// request did not say (OIP: return every output).
    pub requested_outputs: Option<Vec<String>>,
    /// The request's top-level `parameters`, uninterpreted.
    pub parameters: Option<Map<String, Value>>,
}

/// Why a request body was refused. All variants are client errors (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("request body is not valid json: {0}")]
    Json(String),
    #[error("request has no inputs")]
    NoInputs,
    #[error("this model takes exactly one input ({expected:?}), the request has {got}")]
    InputCount { expected: String, got: usize },
    #[error("unknown input {got:?} (this model's input is {expected:?})")]
    InputName { got: String, expected: String },
    #[error("datatype {0} is not supported (this model takes numeric tensors, e.g. FP32)")]
    UnsupportedDatatype(String),
    #[error("unknown datatype {0:?}")]
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
    #[error("unknown output {got:?} (this model's output is {expected:?})")]
    OutputName { got: String, expected: String },
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<RawInput<'a>>,
    #[serde(default, borrow)]
    outputs: Option<Vec<RawOutput<'a>>>,
}

#[derive(Deserialize)]
struct RawInput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    shape: Vec<i64>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<InputParameters>,
    /// Left unparsed until the envelope has been checked.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InputParameters {
    /// Set by clients using the binary tensor extension, which we do not implement.
    #[serde(default)]
    binary_data_size: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawOutput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// Decodes and validates an OIP v2 REST infer request body for the model `input`
/// describes.
pub fn decode_infer(body: &[u8], input: &InputSpec<'_>) -> Result<InferBatch, DecodeError> {
    decode(body, input, true)
}

/// Checks an infer request body exactly as [`decode_infer`] does (same refusals, same
/// errors) without keeping the values: for the router, which forwards the bytes as
/// they are.
pub fn validate_infer(body: &[u8], input: &InputSpec<'_>) -> Result<(), DecodeError> {
    if scan::plainly_valid(body, input) {
        return Ok(());
    }
    decode(body, input, false).map(drop)
}

/// [`decode_infer`]; with `keep` false the batch's `data` stays empty.
fn decode(body: &[u8], input: &InputSpec<'_>, keep: bool) -> Result<InferBatch, DecodeError> {
    let request: RawRequest<'_> =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    let tensor = match request.inputs.as_slice() {
        [] => return Err(DecodeError::NoInputs),
        [one] => one,
        many => {
            return Err(DecodeError::InputCount {
                expected: input.name.to_owned(),
                got: many.len(),
            });
        }
    };
    if tensor.name != input.name {
        return Err(DecodeError::InputName {
            got: tensor.name.clone().into_owned(),
            expected: input.name.to_owned(),
        });
    }
    let dtype = DataType::parse(&tensor.datatype)?;
    let rows = check_shape(&tensor.shape, input)?;
    if tensor
        .parameters
        .as_ref()
        .is_some_and(|p| p.binary_data_size.is_some())
    {
        return Err(DecodeError::BinaryData);
    }
    let requested_outputs = match request.outputs {
        None => None,
        Some(outputs) => Some(
            outputs
                .into_iter()
                .map(|o| {
                    if o.name == input.output_name {
                        Ok(o.name.into_owned())
                    } else {
                        Err(DecodeError::OutputName {
                            got: o.name.into_owned(),
                            expected: input.output_name.to_owned(),
                        })
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let raw = tensor
        .data
        .ok_or_else(|| DecodeError::MissingData(input.name.to_owned()))?;
    let data = decode_data(raw.get(), dtype, rows, input.dim, &tensor.shape, keep)?;
    Ok(InferBatch {
        id: request.id,
        rows,
        data,
        requested_outputs,
        parameters: request.parameters,
    })
}

/// Accepts `[rows, dim]` and `[dim]` (one row); returns the number of rows.
fn check_shape(shape: &[i64], input: &InputSpec<'_>) -> Result<usize, DecodeError> {
    let dim_ok = |d: i64| usize::try_from(d).is_ok_and(|d| d == input.dim);
    let rows = match *shape {
        [d] if dim_ok(d) => 1,
        [r, d] if dim_ok(d) && r >= 0 => r,
        _ => {
            return Err(DecodeError::Shape {
                shape: shape.to_vec(),
                dim: input.dim,
            });
        }
    };
    let rows = usize::try_from(rows).unwrap_or(usize::MAX);
    if rows == 0 {
        return Err(DecodeError::EmptyBatch(shape.to_vec()));
    }
    if rows > input.max_rows {
        return Err(DecodeError::TooManyRows {
            rows,
            max: input.max_rows,
        });
    }
    Ok(rows)
}

/// The tensor datatypes we can turn into `f32`.
#[derive(Debug, Clone, Copy)]
enum DataType {
    Float(&'static str),
    Int {
        name: &'static str,
        min: i64,
        max: u64,
    },
}

impl DataType {
    fn parse(s: &str) -> Result<Self, DecodeError> {
        let int = |name, min: i64, max: u64| Self::Int { name, min, max };
        Ok(match s {
            "FP32" => Self::Float("FP32"),
            "FP64" => Self::Float("FP64"),
            "FP16" => Self::Float("FP16"),
            "BF16" => Self::Float("BF16"),
            "INT8" => int("INT8", i8::MIN.into(), i8::MAX.unsigned_abs().into()),
            "INT16" => int("INT16", i16::MIN.into(), i16::MAX.unsigned_abs().into()),
            "INT32" => int("INT32", i32::MIN.into(), i32::MAX.unsigned_abs().into()),
            "INT64" => int("INT64", i64::MIN, i64::MAX.unsigned_abs()),
            "UINT8" => int("UINT8", 0, u8::MAX.into()),
            "UINT16" => int("UINT16", 0, u16::MAX.into()),
            "UINT32" => int("UINT32", 0, u32::MAX.into()),
            "UINT64" => int("UINT64", 0, u64::MAX),
            "BOOL" | "BYTES" => return Err(DecodeError::UnsupportedDatatype(s.to_owned())),
            _ => return Err(DecodeError::UnknownDatatype(s.to_owned())),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Float(name) | Self::Int { name, .. } => name,
        }
    }

    /// Converts one JSON number, or says why it does not fit.
    fn convert(self, n: Num) -> Result<f32, &'static str> {
        match (self, n) {
            // Every 64-bit integer is within f32's range (rounded to nearest).
            (Self::Float(_), Num::U(u)) => Ok(u as f32),
            (Self::Float(_), Num::I(i)) => Ok(i as f32),
            (Self::Float(_), Num::F(f)) => {
                let x = f as f32;
                if x.is_finite() {
                    Ok(x)
                } else {
                    Err("out of f32 range")
                }
            }
            (Self::Int { max, .. }, Num::U(u)) => int_to_f32(u > max, u),
            (Self::Int { min, max, .. }, Num::I(i)) => {
                let out = i < min || (i >= 0 && i.unsigned_abs() > max);
                int_to_f32(out, i.unsigned_abs()).map(|x| if i < 0 { -x } else { x })
            }
            (Self::Int { .. }, Num::F(f)) if f.fract() != 0.0 || !f.is_finite() => {
                Err("not an integer")
            }
            (Self::Int { min, max, .. }, Num::F(f)) => {
                // An integral f64: same checks as an integer token (range, then 2^24).
                let out = f < min as f64 || f > max as f64;
                int_to_f32(out, f.abs().min(u64::MAX as f64) as u64).map(|x| x.copysign(f as f32))
            }
        }
    }
}

fn int_to_f32(out_of_type: bool, magnitude: u64) -> Result<f32, &'static str> {
    if out_of_type {
        Err("out of range")
    } else if magnitude > MAX_EXACT_INT {
        Err("beyond ±2^24 (not exact in f32)")
    } else {
        Ok(magnitude as f32)
    }
}

/// One JSON number as serde_json hands it over.
#[derive(Debug, Clone, Copy)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::U(v) => write!(f, "{v}"),
            Self::I(v) => write!(f, "{v}"),
            // Debug keeps 1e300 short (Display would print every digit).
            Self::F(v) => write!(f, "{v:?}"),
        }
    }
}

/// Second pass: parses `data` (flat or `[rows][dim]`) into exactly `rows × dim` values
/// (kept only when `keep`; checked either way).
fn decode_data(
    raw: &str,
    dtype: DataType,
    rows: usize,
    dim: usize,
    shape: &[i64],
    keep: bool,
) -> Result<Vec<f32>, DecodeError> {
    let expected = rows.saturating_mul(dim);
    if !keep
        && matches!(dtype, DataType::Float(_))
        && scan::flat_finite_count(raw.as_bytes()) == Some(expected)
    {
        // The validate-only pass on the common body: a flat array of plain numbers, each
        // certainly finite in f32, as many as the shape holds. The full parse below would
        // accept it too (property-tested); anything else takes that parse, which also
        // words the error.
        return Ok(Vec::new());
    }
    // Each value takes at least two bytes of JSON ("1,"), so a short body cannot make us
    // reserve what its shape merely claims.
    let capacity = if keep {
        expected.min(raw.len() / 2 + 1)
    } else {
        0
    };
    let mut sink = Sink {
        out: Vec::with_capacity(capacity),
        keep,
        seen: 0,
        expected,
        dim,
        nested_ok: shape.len() == 2,
        leaf_depth: None,
        rows_seen: 0,
        dtype,
        shape,
        error: None,
    };
    let mut de = serde_json::Deserializer::from_str(raw);
    let parsed = Level {
        sink: &mut sink,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Err(e) = parsed {
        return Err(sink
            .error
            .take()
            .unwrap_or_else(|| DecodeError::Data(e.to_string())));
    }
    if sink.seen != expected {
        return Err(DecodeError::DataLength {
            got: sink.seen,
            expected,
            shape: shape.to_vec(),
        });
    }
    Ok(sink.out)
}

/// State shared by the visitors of every nesting level.
struct Sink<'s> {
    out: Vec<f32>,
    /// Whether values go into `out` (decoding) or are only checked (validating).
    keep: bool,
    /// Values seen so far.
    seen: usize,
    /// `rows × dim`: the visitor stops at the first value past it.
    expected: usize,
    dim: usize,
    /// Whether `[rows][dim]` nesting is allowed (the shape has two dimensions).
    nested_ok: bool,
    /// Depth of the first number seen; every number must sit at the same depth.
    leaf_depth: Option<usize>,
    rows_seen: usize,
    dtype: DataType,
    shape: &'s [i64],
    /// The precise reason, when the visitor aborted the parse.
    error: Option<DecodeError>,
}

impl Sink<'_> {
    fn fail<E: de::Error>(&mut self, error: DecodeError) -> E {
        self.error = Some(error);
        E::custom("invalid input data")
    }

    fn nesting<E: de::Error>(&mut self) -> E {
        self.fail(DecodeError::Nesting(self.shape.to_vec()))
    }

    fn number<E: de::Error>(&mut self, depth: usize, n: Num) -> Result<(), E> {
        if depth == 0 {
            return Err(self.fail(DecodeError::Data("\"data\" must be an array".into())));
        }
        if *self.leaf_depth.get_or_insert(depth) != depth {
            return Err(self.nesting());
        }
        if self.seen >= self.expected {
            return Err(self.fail(DecodeError::TooMuchData {
                expected: self.expected,
                shape: self.shape.to_vec(),
            }));
        }
        match self.dtype.convert(n) {
            Ok(x) => {
                if self.keep {
                    self.out.push(x);
                }
                self.seen += 1;
                Ok(())
            }
            Err(reason) => Err(self.fail(DecodeError::Value {
                index: self.seen,
                value: n.to_string(),
                datatype: self.dtype.name(),
                reason,
            })),
        }
    }
}

/// Visits one value of `data` at a given nesting depth (0 = `data` itself).
struct Level<'a, 's> {
    sink: &'a mut Sink<'s>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or an array of numbers")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.sink.number(self.depth, Num::U(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.sink.number(self.depth, Num::I(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.sink.number(self.depth, Num::F(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Level { sink, depth } = self;
        // Arrays may appear at depth 0 (`data`) and, for a `[rows, dim]` shape, at depth
        // 1 (rows) provided numbers have not already been seen at depth 1.
        let row = depth == 1;
        if depth > 1 || (row && (!sink.nested_ok || sink.leaf_depth == Some(1))) {
            return Err(sink.nesting());
        }
        let mut count = 0usize;
        while seq
            .next_element_seed(Level {
                sink: &mut *sink,
                depth: depth + 1,
            })?
            .is_some()
        {
            count += 1;
        }
        if row {
            if count != sink.dim {
                let error = DecodeError::RowLength {
                    row: sink.rows_seen,
                    got: count,
                    dim: sink.dim,
                };
                return Err(sink.fail(error));
            }
            sink.rows_seen += 1;
        }
        Ok(())
    }
}

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
