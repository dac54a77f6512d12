//! A tensor's elements out of a gRPC message: the datatypes the router converts
//! ([`Dtype`]), little-endian raw bytes or the typed `contents` field of the datatype
//! read into [`Values`], and the `f16`/`bf16` widenings (exact in `f32`).

use shardline_shared::decode::DecodeError;
use shardline_shared::echo::echo;

use crate::grpc::pb::InferTensorContents;

/// An input datatype the router can turn into JSON numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dtype {
    /// FP32, FP64, FP16, BF16: made `f32` (the name, the size of one element).
    Float(&'static str, usize),
    /// INT*, UINT*: kept as integers (the name, the size, whether signed).
    Int(&'static str, usize, bool),
}

impl Dtype {
    /// The datatype named `s`, or the decoder's refusal of it.
    pub(super) fn parse(s: &str) -> Result<Self, DecodeError> {
        Ok(match s {
            "FP32" => Self::Float("FP32", 4),
            "FP64" => Self::Float("FP64", 8),
            "FP16" => Self::Float("FP16", 2),
            "BF16" => Self::Float("BF16", 2),
            "INT8" => Self::Int("INT8", 1, true),
            "INT16" => Self::Int("INT16", 2, true),
            "INT32" => Self::Int("INT32", 4, true),
            "INT64" => Self::Int("INT64", 8, true),
            "UINT8" => Self::Int("UINT8", 1, false),
            "UINT16" => Self::Int("UINT16", 2, false),
            "UINT32" => Self::Int("UINT32", 4, false),
            "UINT64" => Self::Int("UINT64", 8, false),
            "BOOL" | "BYTES" => return Err(DecodeError::UnsupportedDatatype(s.to_owned())),
            _ => return Err(DecodeError::UnknownDatatype(echo(s))),
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Float(name, _) | Self::Int(name, _, _) => name,
        }
    }

    pub(super) fn size(self) -> usize {
        match self {
            Self::Float(_, size) | Self::Int(_, size, _) => size,
        }
    }
}

/// A tensor's elements as they go into the JSON body.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub(super) enum Values {
    F32(Vec<f32>),
    /// FP64 as sent; [`Values::into_f32`] rounds it.
    F64(Vec<f64>),
    I64(Vec<i64>),
    U64(Vec<u64>),
}

impl Values {
    pub(super) fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::U64(v) => v.len(),
        }
    }
}

impl Values {
    /// Floats as `f32` (FP64 rounded to nearest), refusing the first value that is not
    /// finite — or, from FP64, not finite in `f32` — as the worker's decoder would;
    /// integers as they are.
    pub(super) fn into_f32(self, datatype: &'static str) -> Result<Self, DecodeError> {
        let refuse = |index: usize, value: String, reason: &'static str| DecodeError::Value {
            index,
            value,
            datatype,
            reason,
        };
        match self {
            Self::F32(v) => match v.iter().position(|x| !x.is_finite()) {
                Some(i) => Err(refuse(i, format!("{:?}", v[i]), "not finite")),
                None => Ok(Self::F32(v)),
            },
            Self::F64(v) => {
                let narrow: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                match narrow.iter().position(|x| !x.is_finite()) {
                    Some(i) if v[i].is_finite() => {
                        Err(refuse(i, format!("{:?}", v[i]), "out of f32 range"))
                    }
                    Some(i) => Err(refuse(i, format!("{:?}", v[i]), "not finite")),
                    None => Ok(Self::F32(narrow)),
                }
            }
            ints => Ok(ints),
        }
    }
}

/// The elements of `bytes` (little-endian, `dtype.size()` bytes each; the caller checked
/// that the length is a whole number of them).
pub(super) fn from_raw(bytes: &[u8], dtype: Dtype) -> Values {
    let size = dtype.size();
    let words = bytes.chunks_exact(size).map(|c| {
        let mut word = [0u8; 8];
        word[..size].copy_from_slice(c);
        u64::from_le_bytes(word)
    });
    match dtype {
        Dtype::Float("FP64", _) => Values::F64(words.map(f64::from_bits).collect()),
        Dtype::Float("FP16", _) => Values::F32(words.map(|w| f16_to_f32(w as u16)).collect()),
        Dtype::Float("BF16", _) => Values::F32(words.map(|w| bf16_to_f32(w as u16)).collect()),
        Dtype::Float(..) => Values::F32(words.map(|w| f32::from_bits(w as u32)).collect()),
        Dtype::Int(_, _, true) => {
            // Sign-extend from the element's width.
            let shift = 64 - 8 * size as u32;
            Values::I64(words.map(|w| ((w << shift) as i64) >> shift).collect())
        }
        Dtype::Int(_, _, false) => Values::U64(words.collect()),
    }
}

/// The elements of the typed `contents` field of `dtype` (FP16 and BF16 have none: they
/// travel as raw contents only).
pub(super) fn from_typed(contents: &InferTensorContents, dtype: Dtype) -> Option<Values> {
    Some(match dtype.name() {
        "FP32" => Values::F32(contents.fp32_contents.clone()),
        "FP64" => Values::F64(contents.fp64_contents.clone()),
        "INT8" | "INT16" | "INT32" => {
            Values::I64(contents.int_contents.iter().map(|&v| v.into()).collect())
        }
        "INT64" => Values::I64(contents.int64_contents.clone()),
        "UINT8" | "UINT16" | "UINT32" => {
            Values::U64(contents.uint_contents.iter().map(|&v| v.into()).collect())
        }
        "UINT64" => Values::U64(contents.uint64_contents.clone()),
        _ => return None,
    })
}

/// How many elements the typed `contents` field of `dtype` holds.
pub(super) fn typed_len(contents: &InferTensorContents, dtype: Dtype) -> usize {
    match dtype.name() {
        "FP32" => contents.fp32_contents.len(),
        "FP64" => contents.fp64_contents.len(),
        "INT8" | "INT16" | "INT32" => contents.int_contents.len(),
        "INT64" => contents.int64_contents.len(),
        "UINT8" | "UINT16" | "UINT32" => contents.uint_contents.len(),
        "UINT64" => contents.uint64_contents.len(),
        _ => 0,
    }
}

/// An IEEE half-precision value, exactly.
pub(super) fn f16_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exponent = u32::from((h >> 10) & 0x1f);
    let fraction = u32::from(h & 0x3ff);
    let magnitude = match exponent {
        // Zero and subnormals: fraction × 2^-24 (exact in f32).
        0 => fraction as f32 / 16_777_216.0,
        0x1f => f32::from_bits(0x7f80_0000 | (fraction << 13)),
        e => f32::from_bits(((e + 127 - 15) << 23) | (fraction << 13)),
    };
    if negative { -magnitude } else { magnitude }
}

/// A bfloat16 value: the upper half of an `f32`.
pub(super) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}
