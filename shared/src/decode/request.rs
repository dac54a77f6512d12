//! The first pass of decoding: the request envelope (`id`, `parameters`, `inputs`,
//! `outputs`) with the tensor's `data` left as an unparsed slice of the body, checked
//! against the model before any number is parsed; then `data` goes to the second pass
//! (`data.rs`). Also the router's validate-only entry point, which tries the byte-level
//! shortcut (`scan.rs`) first.

use std::borrow::Cow;
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::data::{DataType, decode_data};
use super::error::DecodeError;
use super::error::bounded_reason;
use super::scan;
use super::spec::{InferBatch, InputSpec, check_shape};
use crate::echo::echo;

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<FreeForm>,
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

/// A free-form `parameters` object (OIP lets clients put anything there, and nothing
/// here reads the request's): checked to be an object and skipped member by member,
/// never kept. Parsed into a map it cost ~85 bytes of heap per body byte (`{"":0}`
/// repeated); skipped, at most a byte per nesting level (serde_json's `IgnoredAny` keeps
/// a stack of open brackets, and no recursion).
struct FreeForm;

impl<'de> Deserialize<'de> for FreeForm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FreeFormVisitor)
    }
}

struct FreeFormVisitor;

impl<'de> Visitor<'de> for FreeFormVisitor {
    type Value = FreeForm;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a parameters object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FreeForm, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(FreeForm)
    }
}

/// An input's `parameters` object: only `binary_data_size` is looked at; the other
/// members are skipped like [`FreeForm`]'s.
struct InputParameters {
    /// Set (not null) by clients using the binary tensor extension, which we do not
    /// implement.
    binary_data: bool,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum InputParameter {
    BinaryDataSize,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for InputParameters {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(InputParametersVisitor)
    }
}

struct InputParametersVisitor;

impl<'de> Visitor<'de> for InputParametersVisitor {
    type Value = InputParameters;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a parameters object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InputParameters, A::Error> {
        let mut binary_data = false;
        while let Some(key) = map.next_key::<InputParameter>()? {
            match key {
                InputParameter::BinaryDataSize => {
                    binary_data |= map.next_value::<Option<IgnoredAny>>()?.is_some();
                }
                InputParameter::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(InputParameters { binary_data })
    }
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
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(bounded_reason(&e)))?;
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
    if tensor.parameters.as_ref().is_some_and(|p| p.binary_data) {
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
                            got: echo(&o.name),
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
        has_parameters: request.parameters.is_some(),
    })
}
