//! Byte-level shortcuts for the router's validate-only pass over the common infer body:
//! they answer "certainly valid" or "don't know", never "invalid", so anything unusual
//! (escapes, extra fields, nesting, integer datatypes, huge numbers) takes the full
//! serde decode, which also words every error. Property-tested against that decode
//! (`shared/tests/decode.rs`).

use super::spec::{InputSpec, check_shape};

/// Whether `body` is an infer request that [`super::decode_infer`] certainly accepts for
/// `input`: a JSON object with `inputs` (one tensor with exactly `name`, `shape`,
/// `datatype` and `data`, in any order) and optionally a plain `id`; the name is the
/// model's, the datatype a float one, the shape right for the model, and `data` a flat
/// array of as many plain numbers as the shape holds, each finite in `f32`. Strings must
/// be printable ASCII without escapes. `false` means "decode it to find out".
pub(super) fn plainly_valid(body: &[u8], input: &InputSpec<'_>) -> bool {
    envelope(&mut Cursor { b: body, i: 0 }, input).is_some()
}

fn envelope(c: &mut Cursor<'_>, input: &InputSpec<'_>) -> Option<()> {
    c.ws();
    c.eat(b'{')?;
    let (mut inputs, mut id) = (false, false);
    loop {
        let key = c.member_key()?;
        match key {
            b"inputs" if !inputs => {
                inputs = true;
                c.eat(b'[')?;
                c.ws();
                tensor(c, input)?;
                c.ws();
                c.eat(b']')?;
            }
            b"id" if !id => {
                id = true;
                c.string()?;
            }
            _ => return None,
        }
        if c.member_end()? {
            break;
        }
    }
    c.ws();
    (inputs && c.i == c.b.len()).then_some(())
}

/// One input tensor object; checks it against `input`.
fn tensor(c: &mut Cursor<'_>, input: &InputSpec<'_>) -> Option<()> {
    c.eat(b'{')?;
    let mut shape: Option<([i64; 2], usize)> = None;
    let (mut name, mut float, mut count) = (false, false, None);
    loop {
        let key = c.member_key()?;
        match key {
            b"name" if !name => {
                name = true;
                if c.string()? != input.name.as_bytes() {
                    return None;
                }
            }
            b"datatype" if !float => {
                float = matches!(c.string()?, b"FP32" | b"FP64" | b"FP16" | b"BF16");
                if !float {
                    return None;
                }
            }
            b"shape" if shape.is_none() => shape = Some(dims(c)?),
            b"data" if count.is_none() => {
                // ASCII only is accepted, so no separate UTF-8 check is needed.
                let rest = c.b.get(c.i..)?;
                let (n, after) = flat_finite_prefix(rest)?;
                count = Some(n);
                c.i = c.b.len() - after.len();
            }
            _ => return None,
        }
        if c.member_end()? {
            break;
        }
    }
    let (dims, n) = shape?;
    let rows = check_shape(&dims[..n], input).ok()?;
    (name && float && count? == rows.saturating_mul(input.dim)).then_some(())
}

/// A shape of one or two plain non-negative integers.
fn dims(c: &mut Cursor<'_>) -> Option<([i64; 2], usize)> {
    c.eat(b'[')?;
    let mut dims = [0i64; 2];
    let mut n = 0;
    loop {
        c.ws();
        if n == dims.len() {
            return None;
        }
        dims[n] = c.small_uint()?;
        n += 1;
        c.ws();
        match c.next()? {
            b',' => {}
            b']' => return Some((dims, n)),
            _ => return None,
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn next(&mut self) -> Option<u8> {
        let x = *self.b.get(self.i)?;
        self.i += 1;
        Some(x)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// An object member's key and its colon, with the spacing around them.
    fn member_key(&mut self) -> Option<&'a [u8]> {
        self.ws();
        let key = self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(key)
    }

    /// After a member's value: `true` at the object's closing brace, `false` after a
    /// comma (another member follows).
    fn member_end(&mut self) -> Option<bool> {
        self.ws();
        match self.next()? {
            b',' => Some(false),
            b'}' => Some(true),
            _ => None,
        }
    }

    /// A string of printable ASCII without escapes; its bytes between the quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.next()? {
                b'"' => return Some(&self.b[start..self.i - 1]),
                b'\\' => return None,
                0x20..=0x7e => {}
                _ => return None,
            }
        }
    }

    /// A JSON integer without sign, fraction or exponent, of at most 18 digits.
    fn small_uint(&mut self) -> Option<i64> {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        if digits.is_empty() || digits.len() > 18 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0')),
        )
    }
}

/// How many numbers `b` holds when it is a flat JSON array of well-formed JSON numbers
/// each certainly finite when converted to `f32`, with nothing but blanks around it;
/// `None` for anything else (nested arrays, other values, malformed numbers, numbers too
/// large to tell at a glance).
pub(super) fn flat_finite_count(b: &[u8]) -> Option<usize> {
    let (count, rest) = flat_finite_prefix(skip_ws(b))?;
    skip_ws(rest).is_empty().then_some(count)
}

/// [`flat_finite_count`] for the array at the start of `b`: its count and what follows
/// its closing bracket.
///
/// A number with `i` digits before its point and exponent `e` is below `10^(i + e)`;
/// with `i + e ≤ 38` that is below `f32::MAX` (≈ 3.4 × 10^38), so it is finite in `f32`
/// whatever the rounding. (Written over slices rather than indices: no bounds checks in
/// the loop, which runs once per byte of every request's data.)
fn flat_finite_prefix(b: &[u8]) -> Option<(usize, &[u8])> {
    let mut s = skip_ws(b.strip_prefix(b"[")?);
    if let Some(rest) = s.strip_prefix(b"]") {
        return Some((0, rest));
    }
    let mut count = 0usize;
    loop {
        s = skip_ws(finite_number(s)?);
        count += 1;
        match s.split_first()? {
            (b',', rest) => s = skip_ws(rest),
            (b']', rest) => return Some((count, rest)),
            _ => return None,
        }
    }
}

/// What follows a well-formed JSON number at the start of `s` that is certainly finite
/// in `f32` (see [`flat_finite_prefix`]).
fn finite_number(s: &[u8]) -> Option<&[u8]> {
    let s = s.strip_prefix(b"-").unwrap_or(s);
    let int = leading_digits(s);
    if int == 0 || (int > 1 && s[0] == b'0') {
        return None; // not a number (an array, a string, null, ...) or a leading zero
    }
    let mut s = &s[int..];
    if let Some(rest) = s.strip_prefix(b".") {
        let frac = leading_digits(rest);
        if frac == 0 {
            return None;
        }
        s = &rest[frac..];
    }
    let mut exponent: i64 = 0;
    if let [b'e' | b'E', rest @ ..] = s {
        let (negative, rest) = match rest {
            [b'-', r @ ..] => (true, r),
            [b'+', r @ ..] => (false, r),
            r => (false, r),
        };
        let n = leading_digits(rest);
        if n == 0 {
            return None;
        }
        exponent = rest[..n].iter().fold(0i64, |e, &d| {
            e.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
        if negative {
            exponent = -exponent;
        }
        s = &rest[n..];
    }
    // Saturating: an exponent of any length saturates above, and `int + i64::MAX` must
    // not wrap to a small number that would pass for finite.
    (i64::try_from(int)
        .unwrap_or(i64::MAX)
        .saturating_add(exponent)
        <= 38)
        .then_some(s)
}

fn leading_digits(s: &[u8]) -> usize {
    s.iter().take_while(|d| d.is_ascii_digit()).count()
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|&&c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InputSpec<'static> {
        InputSpec {
            name: "features",
            dim: 3,
            output_name: "score",
            max_rows: 4,
        }
    }

    #[test]
    fn common_bodies_are_plainly_valid() {
        for body in [
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[0.5,-1,2e3]}]}"#,
            r#" { "id" : "r-1", "inputs" : [ { "data" : [ 1 , 2 , 3 , 4 , 5 , 6 ] , "datatype" : "FP64", "shape" : [ 2 , 3 ], "name" : "features" } ] } "#,
            r#"{"inputs":[{"name":"features","shape":[3],"datatype":"BF16","data":[0,0,0]}]}"#,
        ] {
            assert!(plainly_valid(body.as_bytes(), &spec()), "{body}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_the_decoder() {
        for body in [
            // Wrong name, datatype, shape, count, nesting; integer types; too many rows.
            r#"{"inputs":[{"name":"other","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"INT32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[[1,2,3]]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[5,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[01,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            // Malformed numbers and JSON.
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[01,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1.,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3e]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}x"#,
            // Beyond f32's range at a glance, escapes, extra or repeated fields.
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,4e38]}]}"#,
            r#"{"inputs":[{"name":"feat\u0075res","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3],"parameters":{}}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}],"outputs":[]}"#,
            r#"{"id":"a","id":"b","inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            r#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]},{}]}"#,
            r#"{"id":"x"}"#,
        ] {
            assert!(!plainly_valid(body.as_bytes(), &spec()), "{body}");
        }
    }

    #[test]
    fn flat_counts() {
        assert_eq!(flat_finite_count(b"[]"), Some(0));
        assert_eq!(flat_finite_count(b" [ 1 , -0.5e-3 ,2E+5 ] "), Some(3));
        assert_eq!(flat_finite_count(b"[9e37, 99e36]"), Some(2));
        assert_eq!(
            flat_finite_count(b"[1e-99999999999999999999, -0.0]"),
            Some(2)
        );
        for odd in [
            "[1,]",
            "[,1]",
            "[-]",
            "[1e400]",
            "[[1]]",
            "[\"1\"]",
            "[00]",
            "[1.e2]",
            "[1",
            "[]x",
            "[1] 2",
            "[1e39]",
            "[10e38]",
            "[1E+]",
            "[.5]",
            "[-01]",
            // Exponents past i64: saturated, never wrapped round to a small one.
            "[1e99999999999999999999]",
            "[12e9223372036854775807]",
            "[1e+999999999999999999999999999999999999999]",
        ] {
            assert_eq!(flat_finite_count(odd.as_bytes()), None, "{odd}");
        }
    }
}
