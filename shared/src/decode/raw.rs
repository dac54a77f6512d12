//! Binary tensor data (the binary tensor data extension, and gRPC's raw contents):
//! little-endian, row-major elements of the tensor's datatype in their native width,
//! converted to `f32` under the same rules as JSON numbers — floats must be finite in
//! `f32` (`FP64` is rounded to nearest, ties to even; `FP16` and `BF16` widen exactly),
//! integers must be within ±2^24 — and checked to be exactly as many bytes as the shape
//! holds.

use super::data::{DataType, Num};
use super::error::DecodeError;

/// The bytes a tensor of `count` elements of `dtype` takes in binary (in `u128`: no
/// shape can overflow it, so a hostile one gets an exact message, not a wrapped size).
pub(super) fn byte_size(dtype: DataType, count: usize) -> u128 {
    count as u128 * dtype.width() as u128
}

/// Converts `bytes`, which must hold exactly `count` elements of `dtype`, into `f32`
/// values (kept only when `keep`; checked either way).
pub(super) fn decode_raw(
    bytes: &[u8],
    dtype: DataType,
    count: usize,
    keep: bool,
) -> Result<Vec<f32>, DecodeError> {
    let width = dtype.width();
    if byte_size(dtype, count) != bytes.len() as u128 {
        return Err(DecodeError::RawLength {
            got: bytes.len(),
            expected: byte_size(dtype, count),
            datatype: dtype.name(),
        });
    }
    let mut out = Vec::with_capacity(if keep { count } else { 0 });
    for (index, element) in bytes.chunks_exact(width).enumerate() {
        let (value, converted) = element_to_f32(dtype, element);
        match converted {
            Ok(x) if keep => out.push(x),
            Ok(_) => {}
            Err(reason) => {
                return Err(DecodeError::Value {
                    index,
                    value,
                    datatype: dtype.name(),
                    reason,
                });
            }
        }
    }
    Ok(out)
}

/// One element: its value as text (for an error) lazily, and its conversion.
fn element_to_f32(dtype: DataType, b: &[u8]) -> (String, Result<f32, &'static str>) {
    let finite = |x: f32, shown: &dyn Fn() -> String| {
        if x.is_finite() {
            (String::new(), Ok(x))
        } else {
            (shown(), Err("not finite"))
        }
    };
    match dtype {
        DataType::Float { width: 4, .. } => {
            let x = f32::from_le_bytes(array(b));
            finite(x, &|| format!("{x:?}"))
        }
        DataType::Float { width: 8, .. } => {
            let x = f64::from_le_bytes(array(b));
            if !x.is_finite() {
                return (format!("{x:?}"), Err("not finite"));
            }
            match dtype.convert(Num::F(x)) {
                Ok(v) => (String::new(), Ok(v)),
                Err(reason) => (format!("{x:?}"), Err(reason)),
            }
        }
        DataType::Float { name: "BF16", .. } => {
            let x = f32::from_bits(u32::from(u16::from_le_bytes(array(b))) << 16);
            finite(x, &|| format!("{x:?}"))
        }
        DataType::Float { .. } => {
            let x = f16_to_f32(u16::from_le_bytes(array(b)));
            finite(x, &|| format!("{x:?}"))
        }
        DataType::Int { min, .. } => {
            let n = if min < 0 {
                Num::I(sign_extend(b))
            } else {
                Num::U(zero_extend(b))
            };
            match dtype.convert(n) {
                Ok(v) => (String::new(), Ok(v)),
                Err(reason) => (n.to_string(), Err(reason)),
            }
        }
    }
}

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// A little-endian unsigned integer of 1 to 8 bytes.
fn zero_extend(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |n, &byte| (n << 8) | u64::from(byte))
}

/// A little-endian two's-complement integer of 1 to 8 bytes.
fn sign_extend(b: &[u8]) -> i64 {
    let shift = 64 - 8 * b.len() as u32;
    ((zero_extend(b) << shift) as i64) >> shift
}

/// IEEE 754 half precision to single: exact (every half is a single).
pub(super) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exponent = u32::from((h >> 10) & 0x1f);
    let mantissa = u32::from(h & 0x3ff);
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        // Subnormal: mantissa × 2^-24, normal in f32.
        (0, m) => {
            let shift = m.leading_zeros() - 21; // bring the top bit to position 10
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dtype(s: &str) -> DataType {
        DataType::parse(s).unwrap()
    }

    #[test]
    fn every_width_reads_little_endian() {
        let cases: [(&str, Vec<u8>, Vec<f32>); 10] = [
            (
                "FP32",
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                vec![1.5, -2.0],
            ),
            (
                "FP64",
                [0.1f64].iter().flat_map(|x| x.to_le_bytes()).collect(),
                vec![0.1f64 as f32],
            ),
            ("BF16", vec![0x80, 0x3f, 0x00, 0xc0], vec![1.0, -2.0]),
            (
                "FP16",
                vec![0x00, 0x3c, 0x01, 0x00],
                vec![1.0, 2f32.powi(-24)],
            ),
            ("INT8", vec![0xff, 0x7f], vec![-1.0, 127.0]),
            ("UINT8", vec![0xff], vec![255.0]),
            ("INT16", vec![0x00, 0x80], vec![-32768.0]),
            ("INT32", (-5i32).to_le_bytes().to_vec(), vec![-5.0]),
            (
                "INT64",
                (1i64 << 24).to_le_bytes().to_vec(),
                vec![16_777_216.0],
            ),
            ("UINT64", 7u64.to_le_bytes().to_vec(), vec![7.0]),
        ];
        for (name, bytes, want) in cases {
            let got = decode_raw(&bytes, dtype(name), want.len(), true).unwrap();
            assert_eq!(got, want, "{name}");
            assert_eq!(
                decode_raw(&bytes, dtype(name), want.len(), false),
                Ok(vec![])
            );
        }
    }

    #[test]
    fn refusals_name_the_element() {
        let nan: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let e = decode_raw(&nan, dtype("FP32"), 2, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NaN at position 1 is not finite"), "{e}");
        let big = 1e300f64.to_le_bytes();
        let e = decode_raw(&big, dtype("FP64"), 1, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1e300 at position 0 is out of f32 range"), "{e}");
        let inf = [0x00, 0x7c];
        assert!(decode_raw(&inf, dtype("FP16"), 1, true).is_err());
        let wide = (1i64 << 25).to_le_bytes();
        let e = decode_raw(&wide, dtype("INT64"), 1, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("33554432 at position 0 is beyond ±2^24"), "{e}");
        let e = decode_raw(&[0; 7], dtype("FP32"), 2, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("7 bytes of FP32 data, the shape needs 8"), "{e}");
        assert!(decode_raw(&[], dtype("FP64"), usize::MAX, true).is_err());
    }

    #[test]
    fn every_half_widens_like_the_reference() {
        for h in 0..=u16::MAX {
            let got = f16_to_f32(h);
            let want = half::f16::from_bits(h).to_f32();
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{h:#06x}: {got:?} vs {want:?}"
            );
        }
    }
}
