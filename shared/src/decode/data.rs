//! The second pass of decoding: streams a tensor's `data` (flat or `[rows][dim]`)
//! through a serde visitor that knows the datatype and shape, converting each number
//! straight into `f32` and stopping at the first value past what the shape holds.
//! Nothing builds a `serde_json::Value`, and memory is bounded by the body's length.

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

use super::error::DecodeError;
use super::scan;
use crate::echo::echo;

/// 2^24: every integer of at most this magnitude is exact in `f32`.
const MAX_EXACT_INT: u64 = 1 << 24;

/// The tensor datatypes we can turn into `f32`, with their width in binary tensor data
/// (bytes per element).
#[derive(Debug, Clone, Copy)]
pub(super) enum DataType {
    Float {
        name: &'static str,
        width: usize,
    },
    Int {
        name: &'static str,
        min: i64,
        max: u64,
        width: usize,
    },
}

impl DataType {
    pub(super) fn parse(s: &str) -> Result<Self, DecodeError> {
        let float = |name, width| Self::Float { name, width };
        let int = |name, min: i64, max: u64, width| Self::Int {
            name,
            min,
            max,
            width,
        };
        Ok(match s {
            "FP32" => float("FP32", 4),
            "FP64" => float("FP64", 8),
            "FP16" => float("FP16", 2),
            "BF16" => float("BF16", 2),
            "INT8" => int("INT8", i8::MIN.into(), i8::MAX.unsigned_abs().into(), 1),
            "INT16" => int("INT16", i16::MIN.into(), i16::MAX.unsigned_abs().into(), 2),
            "INT32" => int("INT32", i32::MIN.into(), i32::MAX.unsigned_abs().into(), 4),
            "INT64" => int("INT64", i64::MIN, i64::MAX.unsigned_abs(), 8),
            "UINT8" => int("UINT8", 0, u8::MAX.into(), 1),
            "UINT16" => int("UINT16", 0, u16::MAX.into(), 2),
            "UINT32" => int("UINT32", 0, u32::MAX.into(), 4),
            "UINT64" => int("UINT64", 0, u64::MAX, 8),
            "BOOL" | "BYTES" => return Err(DecodeError::UnsupportedDatatype(s.to_owned())),
            _ => return Err(DecodeError::UnknownDatatype(echo(s))),
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Float { name, .. } | Self::Int { name, .. } => name,
        }
    }

    /// Bytes per element in binary tensor data.
    pub(super) fn width(self) -> usize {
        match self {
            Self::Float { width, .. } | Self::Int { width, .. } => width,
        }
    }

    /// Converts one number, or says why it does not fit.
    pub(super) fn convert(self, n: Num) -> Result<f32, &'static str> {
        match (self, n) {
            // Every 64-bit integer is within f32's range (rounded to nearest).
            (Self::Float { .. }, Num::U(u)) => Ok(u as f32),
            (Self::Float { .. }, Num::I(i)) => Ok(i as f32),
            (Self::Float { .. }, Num::F(f)) => {
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

/// One number as serde_json hands it over (or as read from binary tensor data).
#[derive(Debug, Clone, Copy)]
pub(super) enum Num {
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
pub(super) fn decode_data(
    raw: &str,
    dtype: DataType,
    rows: usize,
    dim: usize,
    shape: &[i64],
    keep: bool,
) -> Result<Vec<f32>, DecodeError> {
    let expected = rows.saturating_mul(dim);
    if !keep
        && matches!(dtype, DataType::Float { .. })
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
            .unwrap_or_else(|| DecodeError::Data(super::error::bounded_reason(&e))));
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
