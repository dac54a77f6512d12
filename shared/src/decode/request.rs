//! The first pass of decoding: the request envelope (`id`, `parameters`, `inputs`,
//! `outputs`) with the tensor's `data` left as an unparsed slice of the body, checked
//! against the model before any number is parsed; then `data` goes to the second pass
//! (`data.rs`), or, for binary tensor data, the bytes after the JSON header to
//! `raw.rs`. Also the router's validate-only entry points, which try the byte-level
//! shortcut (`scan.rs`) first.

use std::borrow::Cow;
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::data::{DataType, decode_data};
use super::error::DecodeError;
use super::error::bounded_reason;
use super::raw;
use super::scan;
use super::spec::{InferBatch, InputSpec, check_shape};
use crate::echo::echo;

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters<RequestParameter>>,
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
    parameters: Option<Parameters<InputParameter>>,
    /// Left unparsed until the envelope has been checked.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawOutput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<Parameters<OutputParameter>>,
}

/// A `parameters` object (OIP lets clients put anything there): the one member `K`
/// names is read (the binary tensor data extension's), the others are checked to be JSON
/// and skipped member by member, never kept. Parsed into a map they cost ~85 bytes of
/// heap per body byte (`{"":0}` repeated); skipped, at most a byte per nesting level
/// (serde_json's `IgnoredAny` keeps a stack of open brackets, and no recursion).
struct Parameters<K> {
    /// The value of the member `K` names (the last one, if repeated); `None` when absent
    /// or `null`.
    value: Option<Flag>,
    key: std::marker::PhantomData<K>,
}

/// The meaningful member of each kind of `parameters` object.
trait Member: for<'de> Deserialize<'de> {
    /// Whether this key is the meaningful one (the rest are `Other`).
    fn meaningful(&self) -> bool;
}

macro_rules! member {
    ($name:ident, $variant:ident) => {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum $name {
            $variant,
            #[serde(other)]
            Other,
        }

        impl Member for $name {
            fn meaningful(&self) -> bool {
                matches!(self, Self::$variant)
            }
        }
    };
}

member!(RequestParameter, BinaryDataOutput);
member!(InputParameter, BinaryDataSize);
member!(OutputParameter, BinaryData);

impl<'de, K: Member> Deserialize<'de> for Parameters<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ParametersVisitor(std::marker::PhantomData::<K>))
    }
}

struct ParametersVisitor<K>(std::marker::PhantomData<K>);

impl<'de, K: Member> Visitor<'de> for ParametersVisitor<K> {
    type Value = Parameters<K>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a parameters object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parameters<K>, A::Error> {
        let mut value = None;
        while let Some(key) = map.next_key::<K>()? {
            if key.meaningful() {
                value = map.next_value::<Option<Flag>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Parameters {
            value,
            key: std::marker::PhantomData,
        })
    }
}

/// A parameter of the binary tensor data extension as the client wrote it: a boolean
/// (`binary_data`, `binary_data_output`), a byte count (`binary_data_size`), or
/// something else, refused with a clear message by whoever reads it.
#[derive(Debug, Clone, Copy)]
enum Flag {
    Bool(bool),
    Size(u64),
    Other,
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FlagVisitor)
    }
}

struct FlagVisitor;

impl<'de> Visitor<'de> for FlagVisitor {
    type Value = Flag;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a parameter value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Flag, E> {
        Ok(Flag::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Flag, E> {
        Ok(Flag::Size(v))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Flag, E> {
        Ok(Flag::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Flag, E> {
        Ok(Flag::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Flag, E> {
        Ok(Flag::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Flag, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Flag::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Flag, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Flag::Other)
    }
}

/// A boolean parameter's value: absent is `None`, anything but a boolean is refused.
fn boolean<K>(
    parameters: Option<&Parameters<K>>,
    name: &'static str,
) -> Result<Option<bool>, DecodeError> {
    match parameters.and_then(|p| p.value) {
        None => Ok(None),
        Some(Flag::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(DecodeError::Flag(name)),
    }
}

/// Decodes and validates an OIP v2 REST infer request body (all JSON: no binary tensor
/// data) for the model `input` describes.
pub fn decode_infer(body: &[u8], input: &InputSpec<'_>) -> Result<InferBatch, DecodeError> {
    decode(body, None, input, true)
}

/// Decodes and validates an infer request body for the model `input` describes; with
/// `header_length` (the `Inference-Header-Content-Length` value), the body is that many
/// bytes of JSON followed by the binary tensor data of the inputs that carry a
/// `binary_data_size` (the binary tensor data extension).
pub fn decode_request(
    body: &[u8],
    header_length: Option<usize>,
    input: &InputSpec<'_>,
) -> Result<InferBatch, DecodeError> {
    decode(body, header_length, input, true)
}

/// Checks an infer request body exactly as [`decode_infer`] does (same refusals, same
/// errors) without keeping the values: for the router, which forwards the bytes as
/// they are.
pub fn validate_infer(body: &[u8], input: &InputSpec<'_>) -> Result<(), DecodeError> {
    validate_request(body, None, input)
}

/// Checks an infer request exactly as [`decode_request`] does (same refusals, same
/// errors) without keeping the values.
pub fn validate_request(
    body: &[u8],
    header_length: Option<usize>,
    input: &InputSpec<'_>,
) -> Result<(), DecodeError> {
    if header_length.is_none() && scan::plainly_valid(body, input) {
        return Ok(());
    }
    decode(body, header_length, input, false).map(drop)
}

/// Reads an `Inference-Header-Content-Length` value: decimal digits (blanks around them
/// allowed), no sign, no overflow.
pub fn parse_header_length(value: &[u8]) -> Result<usize, DecodeError> {
    let digits = value.trim_ascii();
    let refuse = || DecodeError::HeaderLength(echo(&String::from_utf8_lossy(value)));
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(refuse());
    }
    digits
        .iter()
        .try_fold(0usize, |n, &d| {
            n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        })
        .ok_or_else(refuse)
}

/// [`decode_request`]; with `keep` false the batch's `data` stays empty.
fn decode(
    body: &[u8],
    header_length: Option<usize>,
    input: &InputSpec<'_>,
    keep: bool,
) -> Result<InferBatch, DecodeError> {
    let (json, binary) = match header_length {
        None => (body, &[][..]),
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(DecodeError::HeaderBeyondBody {
                header: n,
                body: body.len(),
            });
        }
    };
    let request: RawRequest<'_> =
        serde_json::from_slice(json).map_err(|e| DecodeError::Json(bounded_reason(&e)))?;
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
            got: echo(&tensor.name),
            expected: input.name.to_owned(),
        });
    }
    let dtype = DataType::parse(&tensor.datatype)?;
    let rows = check_shape(&tensor.shape, input)?;
    let all_binary = boolean(request.parameters.as_ref(), "binary_data_output")?;
    let mut binary_output = all_binary.unwrap_or(false);
    let requested_outputs = match request.outputs {
        None => None,
        Some(outputs) => {
            let mut names = Vec::with_capacity(outputs.len());
            for o in outputs {
                if o.name != input.output_name {
                    return Err(DecodeError::OutputName {
                        got: echo(&o.name),
                        expected: input.output_name.to_owned(),
                    });
                }
                // An output's own `binary_data` overrides the request's default.
                if let Some(b) = boolean(o.parameters.as_ref(), "binary_data")? {
                    binary_output = b;
                }
                names.push(o.name.into_owned());
            }
            Some(names)
        }
    };
    let count = rows.saturating_mul(input.dim);
    let size = tensor.parameters.as_ref().and_then(|p| p.value);
    let data = match (tensor.data, size) {
        (Some(_), Some(_)) => return Err(DecodeError::BinaryAndData(input.name.to_owned())),
        (Some(raw), None) => {
            if !binary.is_empty() {
                return Err(DecodeError::TrailingBytes(binary.len()));
            }
            decode_data(raw.get(), dtype, rows, input.dim, &tensor.shape, keep)?
        }
        (None, Some(size)) => {
            let Flag::Size(size) = size else {
                return Err(DecodeError::BinaryDataSize(input.name.to_owned()));
            };
            if header_length.is_none() {
                return Err(DecodeError::NoInferenceHeader(input.name.to_owned()));
            }
            let expected = raw::byte_size(dtype, count);
            if u128::from(size) != expected {
                return Err(DecodeError::BinarySize {
                    got: size,
                    expected,
                    datatype: dtype.name(),
                    shape: tensor.shape.clone(),
                });
            }
            match usize::try_from(size) {
                Ok(n) if n == binary.len() => {}
                Ok(n) if n < binary.len() => {
                    return Err(DecodeError::TrailingBytes(binary.len() - n));
                }
                _ => {
                    return Err(DecodeError::BinaryBeyondBody {
                        need: size,
                        have: binary.len(),
                    });
                }
            }
            raw::decode_raw(binary, dtype, count, keep)?
        }
        (None, None) => return Err(DecodeError::MissingData(input.name.to_owned())),
    };
    Ok(InferBatch {
        id: request.id,
        rows,
        data,
        requested_outputs,
        has_parameters: request.parameters.is_some(),
        binary_output,
    })
}
