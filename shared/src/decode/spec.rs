//! What a request must look like to be scored by one model ([`InputSpec`]), what a
//! decoded request holds ([`InferBatch`]), and the shape check every pass shares.

use super::error::DecodeError;
use crate::manifest::ModelConfig;

/// A sensible default for [`InputSpec::max_rows`].
pub const DEFAULT_MAX_ROWS: usize = 4096;

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
    /// Whether the request had a top-level `parameters` object; its contents are
    /// checked to be JSON and skipped, never kept (nothing interprets them).
    pub has_parameters: bool,
    /// Whether the output is to be answered as binary tensor data (the request's
    /// `binary_data_output`, overridden by the output's own `binary_data`).
    pub binary_output: bool,
}

/// Accepts `[rows, dim]` and `[dim]` (one row); returns the number of rows. The
/// decoder's rule, also for requests that arrive in other forms (the router's gRPC).
pub fn check_shape(shape: &[i64], input: &InputSpec<'_>) -> Result<usize, DecodeError> {
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
