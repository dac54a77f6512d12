//! [`to_json`]: a `ModelInferRequest` as the OIP JSON body a worker decodes, checked in
//! the decoder's order with its messages (inputs, name, datatype, shape, data), then
//! what only gRPC has (raw contents: one per input, of exactly shape × element size).

use std::io::{self, Write};

use bytes::Bytes;
use serde::Serialize;
use shardline_shared::decode::{DecodeError, InputSpec, check_shape};
use shardline_shared::echo::echo;

use super::elements::{Dtype, Values, from_raw, from_typed, typed_len};
use crate::error::RouterError;
use crate::grpc::pb::{InferTensorContents, ModelInferRequest};

/// A request converted for a worker.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The OIP JSON body.
    pub body: Bytes,
    /// Whether the request sent raw contents (its answer then uses raw contents too).
    pub raw: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    inputs: [Input<'a>; 1],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<Output<'a>>,
}

#[derive(Serialize)]
struct Input<'a> {
    name: &'a str,
    shape: &'a [i64],
    datatype: &'static str,
    data: Values,
}

#[derive(Serialize)]
struct Output<'a> {
    name: &'a str,
}

/// The JSON body of `request` for a model taking `spec`, at most `max_body` bytes long
/// (past it: 413's refusal, as an HTTP body that long gets).
pub fn to_json(
    request: &ModelInferRequest,
    spec: &InputSpec<'_>,
    max_body: usize,
) -> Result<Converted, RouterError> {
    let raw = !request.raw_input_contents.is_empty();
    if raw && request.raw_input_contents.len() != request.inputs.len() {
        return Err(RouterError::BadRequest(format!(
            "raw_input_contents has {} entries for {} inputs (one per input)",
            request.raw_input_contents.len(),
            request.inputs.len()
        )));
    }
    if raw && request.inputs.iter().any(|i| i.contents.is_some()) {
        return Err(RouterError::BadRequest(
            "an input has typed contents beside raw_input_contents: send one or the other".into(),
        ));
    }
    let tensor = match request.inputs.as_slice() {
        [] => return Err(DecodeError::NoInputs.into()),
        [one] => one,
        many => {
            return Err(DecodeError::InputCount {
                expected: spec.name.to_owned(),
                got: many.len(),
            }
            .into());
        }
    };
    if tensor.name != spec.name {
        return Err(DecodeError::InputName {
            got: echo(&tensor.name),
            expected: spec.name.to_owned(),
        }
        .into());
    }
    let dtype = Dtype::parse(&tensor.datatype)?;
    let rows = check_shape(&tensor.shape, spec)?;
    // Bounded: rows ≤ max_rows and dim is the model's.
    let expected = rows.saturating_mul(spec.dim);
    let values = match request.raw_input_contents.first() {
        Some(bytes) => {
            let need = expected.saturating_mul(dtype.size());
            if bytes.len() != need {
                return Err(RouterError::BadRequest(format!(
                    "raw_input_contents[0] has {} bytes but shape {:?} of {} needs {need}",
                    bytes.len(),
                    tensor.shape,
                    dtype.name()
                )));
            }
            from_raw(bytes, dtype)
        }
        None => {
            let empty = InferTensorContents::default();
            let contents = tensor.contents.as_ref().unwrap_or(&empty);
            let got = typed_len(contents, dtype);
            if got != expected {
                if got == 0 {
                    return Err(DecodeError::MissingData(tensor.name.clone()).into());
                }
                return Err(DecodeError::DataLength {
                    got,
                    expected,
                    shape: tensor.shape.clone(),
                }
                .into());
            }
            from_typed(contents, dtype).ok_or_else(|| {
                RouterError::BadRequest(format!(
                    "{} data has no typed contents field: send it in raw_input_contents",
                    dtype.name()
                ))
            })?
        }
    };
    debug_assert_eq!(values.len(), expected);
    let (datatype, data) = match values.into_f32(dtype.name())? {
        floats @ Values::F32(_) => ("FP32", floats),
        ints => (dtype.name(), ints),
    };
    let body = Body {
        id: Some(request.id.as_str()).filter(|id| !id.is_empty()),
        inputs: [Input {
            name: &tensor.name,
            shape: &tensor.shape,
            datatype,
            data,
        }],
        outputs: request
            .outputs
            .iter()
            .map(|o| Output { name: &o.name })
            .collect(),
    };
    let mut out = Limited {
        buf: Vec::new(),
        max: max_body,
    };
    serde_json::to_writer(&mut out, &body).map_err(|_| RouterError::TooLarge(max_body))?;
    Ok(Converted {
        body: Bytes::from(out.buf),
        raw,
    })
}

/// A buffer that refuses to grow past `max` bytes (the body is never built beyond the
/// limit, however large the message's tensor).
struct Limited {
    buf: Vec<u8>,
    max: usize,
}

impl Write for Limited {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.max {
            return Err(io::Error::other("body limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Longest JSON one element becomes: `-9223372036854775808,` (an `f32` takes at most 16).
const MAX_ELEMENT_JSON: u64 = 21;

/// An upper bound of the length of [`to_json`]'s body for `request` (what it reserves of
/// the router's in-flight byte budget before it is converted): the names and the
/// elements at their longest, whatever the request claims.
pub fn json_bound(request: &ModelInferRequest) -> u64 {
    let len = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let mut bound = 1024 + len(request.id.len());
    for o in &request.outputs {
        bound = bound.saturating_add(len(o.name.len()) + 16);
    }
    for (i, input) in request.inputs.iter().enumerate() {
        let size = Dtype::parse(&input.datatype).map_or(1, Dtype::size);
        let elements = match (request.raw_input_contents.get(i), &input.contents) {
            (Some(raw), _) => raw.len() / size,
            (None, Some(c)) => {
                c.fp32_contents.len()
                    + c.fp64_contents.len()
                    + c.int_contents.len()
                    + c.int64_contents.len()
                    + c.uint_contents.len()
                    + c.uint64_contents.len()
            }
            (None, None) => 0,
        };
        bound = bound
            .saturating_add(len(input.name.len()) + 32 * len(input.shape.len()))
            .saturating_add(len(elements).saturating_mul(MAX_ELEMENT_JSON));
    }
    bound
}
